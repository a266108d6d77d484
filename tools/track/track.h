/*
 * track.h - the allocation tracker's bookkeeping (used by bh-trackd, bh-demo
 * and the tests).
 *
 * Keeps, per client (a process) and device, the live set address -> size, live
 * and peak bytes, and counts what the runtime's original tracker complained
 * about: FREE of an unknown allocation, ALLOC of an address already live, and
 * allocations still live when a client goes away (leaks). It also remembers,
 * per address, how often it was allocated and freed, to answer "which
 * addresses were freed more often than allocated".
 * Not thread-safe: callers serialise (bh-trackd is one event loop).
 */
#ifndef BH_TRACK_H
#define BH_TRACK_H

#include <stddef.h>
#include <stdint.h>

typedef enum bh_track_result {
    BH_TRACK_OK = 0,
    BH_TRACK_UNKNOWN_FREE = 1,    /* FREE of an address not live */
    BH_TRACK_DUPLICATE_ALLOC = 2, /* ALLOC of an address already live */
    BH_TRACK_LIMIT = 3,           /* client over its live-allocation limit */
    BH_TRACK_NOMEM = 4
} bh_track_result;

typedef struct bh_track_counts {
    uint64_t allocs, frees, unknown_frees, duplicate_allocs, leaks, leaked_bytes;
    uint64_t live, live_bytes, peak_bytes;
} bh_track_counts;

/* One address's history, for the "freed most often" table and dumps. */
typedef struct bh_track_entry {
    uint64_t client;
    uint64_t address;
    uint64_t size;  /* of the live (or last) allocation */
    uint64_t since; /* caller's clock at ALLOC */
    uint32_t device;
    uint32_t live;
    uint32_t type; /* caller's tag of the live allocation (TT buffer_type), else 0 */
    uint64_t allocs, frees;
} bh_track_entry;

typedef struct bh_track bh_track;

/* max_live_per_client: BH_TRACK_LIMIT past it (0: no limit). NULL on ENOMEM. */
bh_track *bh_track_new(uint64_t max_live_per_client);
void bh_track_free(bh_track *t);

bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now);
/* Marks an allocation live as part of a resync: not counted as an ALLOC,
 * never a duplicate. */
bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t now);
bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address);
/* Drops every live allocation of a client as a leak; calls on_leak for each
 * (may be NULL). Returns the number of leaks. */
uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx);
/* Moves a client's counts into client into's groups (same devices) and drops
 * its groups; its address history stays. For clients with nothing live. */
void bh_track_retire(bh_track *t, uint64_t client, uint64_t into);
/* Forgets a client's live set without counting leaks (a resync replaces it). */
void bh_track_client_reset(bh_track *t, uint64_t client);

/* 1 if client holds address on device live. */
int bh_track_is_live(const bh_track *t, uint64_t client, uint32_t device, uint64_t address);

/* Totals over everything, or for one client/device (client or device
 * UINT64_MAX / UINT32_MAX: any). */
void bh_track_totals(const bh_track *t, uint64_t client, uint32_t device, bh_track_counts *out);

/* sum += c, field by field (peak_bytes too: a sum of peaks is an upper bound). */
void bh_track_counts_add(bh_track_counts *sum, const bh_track_counts *c);

/* Calls fn for each (client, device) group with its counts, in first-seen order. */
void bh_track_each_group(const bh_track *t,
                         void (*fn)(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c),
                         void *ctx);
/* Calls fn for every entry (live ones only if live_only). */
void bh_track_each_entry(const bh_track *t, int live_only, void (*fn)(void *ctx, const bh_track_entry *e),
                         void *ctx);
/* The n entries with the largest frees - allocs (ties: most frees), worst first.
 * Returns how many were written to out. */
size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n);

#endif
