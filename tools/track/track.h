/*
 * track.h - the allocation tracker's bookkeeping (used by bh-trackd, bh-demo
 * and the tests).
 *
 * Keeps, per client and device, the live set address -> size, live and peak
 * bytes, and counts what the runtime's original tracker complained about:
 * FREE of an unknown allocation, ALLOC of an address already live, and
 * allocations still live when a client goes away (leaks). It also remembers,
 * per address, how often it was allocated and freed (a bounded history), to
 * answer "which addresses were freed more often than allocated".
 *
 * A client key is (process << 32) | stream: a process (its pid for
 * bh-trackd) has one or more streams (its reporters). The live-allocation
 * limit and the (stream, device) group limit hold per process, and a process
 * that goes gives everything back at once (bh_track_process_gone).
 *
 * Memory follows what is live: an entry exists only while its allocation is
 * live (a FREE deletes it, a FREE of an unknown address creates nothing), a
 * process's tables are freed when it goes, and what stays is bounded: the
 * per-address history (bh_track_set_history), the counters of gone processes
 * (until the caller retires them into one summary client,
 * bh_track_retire_process) and the per-device live bytes.
 * No call walks other processes' data, except the ones that report on
 * everything (totals, each_group, each_entry, each_at, most_overfreed).
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
    BH_TRACK_LIMIT = 3,           /* process over its live-allocation limit */
    BH_TRACK_NOMEM = 4,
    BH_TRACK_GROUP_LIMIT = 5 /* process over its (stream, device) group limit */
} bh_track_result;

typedef struct bh_track_counts {
    uint64_t allocs, frees, unknown_frees, duplicate_allocs, leaks, leaked_bytes;
    uint64_t live, live_bytes, peak_bytes;
} bh_track_counts;

/* A live allocation (each_entry, on_leak), or one address's history
 * (most_overfreed: allocs and frees set, size 0 unless live). */
typedef struct bh_track_entry {
    uint64_t client;
    uint64_t address;
    uint64_t size;
    uint64_t since; /* caller's clock at ALLOC */
    uint32_t device;
    uint32_t live;
    uint32_t type; /* caller's tag of the live allocation (TT buffer_type), else 0 */
    uint64_t allocs, frees;
} bh_track_entry;

typedef struct bh_track bh_track;

#define BH_TRACK_CLIENT(process, stream) (((uint64_t)(uint32_t)(process) << 32) | (uint32_t)(stream))
#define BH_TRACK_PROCESS(client) ((uint32_t)((uint64_t)(client) >> 32))
#define BH_TRACK_STREAM(client) ((uint32_t)(client))

#define BH_TRACK_DEFAULT_HISTORY 32767u /* addresses with counts: a table of at most 64K slots */
#define BH_TRACK_DEFAULT_MAX_GROUPS 4096u
#define BH_TRACK_MAX_DEVICES 65536u /* devices whose live bytes are kept (TT QUERY) */

/* max_live_per_process: BH_TRACK_LIMIT past it (0: no limit). NULL on ENOMEM. */
bh_track *bh_track_new(uint64_t max_live_per_process);
void bh_track_free(bh_track *t);
/* How many addresses the history keeps (0: none; the default
 * BH_TRACK_DEFAULT_HISTORY). Addresses past it are not counted. */
void bh_track_set_history(bh_track *t, size_t addresses);
/* (stream, device) groups per process (default BH_TRACK_DEFAULT_MAX_GROUPS;
 * 0: no limit). */
void bh_track_set_max_groups(bh_track *t, size_t groups);

bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now);
/* Marks an allocation live as part of a resync: not counted as an ALLOC,
 * never a duplicate. */
bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t now);
bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address);
/* Drops every live allocation of one client (stream) as a leak; calls on_leak
 * for each (may be NULL). Returns the number of leaks. Costs that stream's
 * live set. */
uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx);
/* The same for every stream of a process; frees its live sets (its counters
 * stay until bh_track_retire_process). Costs that process's live set. */
uint64_t bh_track_process_gone(bh_track *t, uint32_t process,
                               void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx);
/* Adds a process's counters into client into's groups (same devices; past
 * the group limit, into the totals only), then frees everything of it (its
 * address history stays). */
void bh_track_retire_process(bh_track *t, uint32_t process, uint64_t into);
/* 1 if client holds address on device live. O(1). */
int bh_track_is_live(const bh_track *t, uint64_t client, uint32_t device, uint64_t address);
/* Forgets a client's live set without counting leaks (a resync replaces it).
 * Costs that stream's live set. */
void bh_track_client_reset(bh_track *t, uint64_t client);

/* Totals for one client/device (client or device UINT64_MAX / UINT32_MAX:
 * any), over the processes present; both any: gone processes included. */
void bh_track_totals(const bh_track *t, uint64_t client, uint32_t device, bh_track_counts *out);
/* Live bytes of one device, over every client; *seen (may be NULL): it ever
 * had an allocation. O(1). */
uint64_t bh_track_device_bytes(const bh_track *t, uint32_t device, int *seen);
/* Live allocations of one process. O(1). */
uint64_t bh_track_process_live(const bh_track *t, uint32_t process);
/* (stream, device) groups of one process (kept after it is gone, until it is
 * retired). O(1). */
size_t bh_track_process_groups(const bh_track *t, uint32_t process);

/* sum += c, field by field (peak_bytes too: a sum of peaks is an upper bound). */
void bh_track_counts_add(bh_track_counts *sum, const bh_track_counts *c);

typedef void (*bh_track_group_fn)(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c);
/* Calls fn for each (client, device) group of the processes present, with
 * its counts, processes in first-seen order. */
void bh_track_each_group(const bh_track *t, bh_track_group_fn fn, void *ctx);
/* Calls fn for the live allocations (with their history counts, if any),
 * from the skip-th on, until fn returns nonzero. Skipping costs the table
 * slots passed over (whole streams at once), not a lookup per entry, and the
 * walk ends when fn says: a page of a dump costs what it shows plus where it
 * starts, not the whole live set. */
void bh_track_each_entry(const bh_track *t, uint64_t skip, int (*fn)(void *ctx, const bh_track_entry *e),
                         void *ctx);
/* Calls fn for every entry of one address: each live allocation there (any
 * client, any device), then each history record of it that is not live
 * (live 0, size 0). Costs the groups of the processes present plus the
 * bounded history table, whatever the live set holds. */
void bh_track_each_at(const bh_track *t, uint64_t address, void (*fn)(void *ctx, const bh_track_entry *e),
                      void *ctx);
/* The n addresses of the history with the largest frees - allocs (ties: most
 * frees), worst first. Returns how many were written to out. */
size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n);

#endif
