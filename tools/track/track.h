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
 * that goes gives everything back (bh_track_process_gone at once, or
 * bh_track_process_going then bh_track_drop_some in slices).
 *
 * Loss. A transport may lose events (a full ring, a reconnection). Events
 * carry a per-stream sequence number (1, 2, 3, ...): a gap is counted as lost
 * (a late event that fills it is taken back), and until a resync of that
 * stream ends the stream is "unsynced": a FREE of an address not live or an
 * ALLOC of one already live may be the other half of a lost event, so
 * neither is counted as a finding. A resync marks the entries it restores and
 * drops, at its end, those it did not (their FREEs were lost); an entry the
 * tracker had already keeps its original time. Counters a loss made lower
 * bounds say so (bh_track_counts.inexact), and leaks of a stream that was
 * unsynced when it went are counted apart (unverified_leaks).
 *
 * History. The per-address history keeps two bounded tables: clean records
 * and records with findings (FREEs of the address while not live, duplicate
 * ALLOCs, leaks). A full clean table evicts a clean record (not one of a live
 * allocation when it can find one); a record that gets a finding moves to the
 * findings table, which evicts only findings, and only when it is full.
 * Evictions are counted, per client and in total.
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
    BH_TRACK_GROUP_LIMIT = 5, /* process over its (stream, device) group limit */
    BH_TRACK_SIZE = 6 /* size over BH_TRACK_MAX_SIZE, or the group's bytes over BH_TRACK_MAX_GROUP_BYTES */
} bh_track_result;

/* Bytes the tracker accepts, so that no sum of them wraps: one allocation at
 * most 2^48 (256 TiB), one (stream, device) group's live bytes at most 2^50
 * (a process's 4096 groups then stay under 2^62); device and total sums
 * saturate past 2^64 - 1 instead of wrapping. */
#define BH_TRACK_MAX_SIZE (1ull << 48)
#define BH_TRACK_MAX_GROUP_BYTES (1ull << 50)

/* bh_track_counts.inexact: which figures a loss made uncertain. */
#define BH_TRACK_AT_LEAST                                                                                    \
    0x1u /* events were lost: allocs, frees, unknown_frees, duplicate_allocs and                             \
            peak_bytes are lower bounds */
#define BH_TRACK_UNSYNCED                                                                                    \
    0x2u /* events are missing that no resync covered yet: live and live_bytes                               \
            may be off until the next resync ends */

typedef struct bh_track_counts {
    uint64_t allocs, frees, unknown_frees, duplicate_allocs, leaks, leaked_bytes;
    uint64_t live, live_bytes, peak_bytes;
    uint64_t unverified_leaks; /* live when their stream went while unsynced: perhaps freed */
    uint32_t inexact;          /* BH_TRACK_AT_LEAST | BH_TRACK_UNSYNCED */
} bh_track_counts;

/* What a stream's transport lost, and what the history evicted of it. */
typedef struct bh_track_loss {
    uint64_t lost;     /* events lost (sequence gaps not filled, and what bh_track_lost was told) */
    uint64_t resyncs;  /* resyncs that ended */
    uint64_t evicted;  /* history records of this client evicted (clean ones) */
    uint64_t unsynced; /* events missing that no resync covered yet (0: the live set is exact) */
} bh_track_loss;

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
    uint64_t unknown_frees; /* history: FREEs of it while it was not live */
    uint32_t inexact;       /* history: BH_TRACK_AT_LEAST when its client lost events */
} bh_track_entry;

typedef struct bh_track bh_track;

#define BH_TRACK_CLIENT(process, stream) (((uint64_t)(uint32_t)(process) << 32) | (uint32_t)(stream))
#define BH_TRACK_PROCESS(client) ((uint32_t)((uint64_t)(client) >> 32))
#define BH_TRACK_STREAM(client) ((uint32_t)(client))

#define BH_TRACK_DEFAULT_HISTORY                                                                             \
    32767u /* addresses with counts: a table of at most 64K slots (and as many                               \
              again with findings) */
#define BH_TRACK_DEFAULT_MAX_GROUPS 4096u

/* max_live_per_process: BH_TRACK_LIMIT past it (0: no limit). NULL on ENOMEM. */
bh_track *bh_track_new(uint64_t max_live_per_process);
void bh_track_free(bh_track *t);
/* How many addresses the history keeps, clean and with findings each (0:
 * none; the default BH_TRACK_DEFAULT_HISTORY). Past it, clean records are
 * evicted first (see History above). */
void bh_track_set_history(bh_track *t, size_t addresses);
/* (stream, device) groups per process (default BH_TRACK_DEFAULT_MAX_GROUPS;
 * 0: no limit). */
void bh_track_set_max_groups(bh_track *t, size_t groups);

enum { BH_TRACK_ALLOC = 1, BH_TRACK_FREE = 2 };

/* One event. seq: its number in its stream (1, 2, 3, ...), 0 if the
 * transport numbers nothing (no loss is then seen from it). */
typedef struct bh_track_event {
    uint64_t client, address, size, seq, now;
    uint32_t device, type, kind; /* kind: BH_TRACK_ALLOC or BH_TRACK_FREE */
} bh_track_event;

bh_track_result bh_track_on_event(bh_track *t, const bh_track_event *ev);
/* Unnumbered events (seq 0). */
bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now);
bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address);

/* The transport knows client lost n events (it counted them itself): the
 * stream is unsynced until its next resync ends. */
void bh_track_lost(bh_track *t, uint64_t client, uint64_t n);
/* A resync of client begins: what it restores until bh_track_resync_end is
 * its live set; the rest is dropped then (not leaks, not frees). */
void bh_track_resync_begin(bh_track *t, uint64_t client);
/* The resync under way covers every event of client numbered up to
 * last_seq (a ring's mark says so): those not seen are lost, repaired by
 * this resync, and a gap at the end of a stream (nothing numbered follows)
 * is counted too. Costs O(1). */
void bh_track_resync_covers(bh_track *t, uint64_t client, uint64_t last_seq);
/* Marks an allocation live as part of a resync: not counted as an ALLOC,
 * never a duplicate. since: when it was allocated, in the caller's clock
 * (the caller's now if it does not know); an entry the tracker holds keeps
 * the earlier of its time and since. */
bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t since);
/* The resync ends: entries it did not restore are dropped, the stream is
 * synced. Costs that stream's live set. */
void bh_track_resync_end(bh_track *t, uint64_t client);
/* The resync under way will not end (its transport is gone): it is given up
 * without its sweep. What it restored stays (each entry was live at its
 * snapshot point), nothing is dropped, and the stream is as synced as its
 * numbers say: events after the snapshot point apply on top, and findings
 * count again unless a gap left it unsynced. Returns 1 if a resync was under
 * way. O(1). */
int bh_track_resync_cut(bh_track *t, uint64_t client);
/* What client lost (zeros if unknown). O(1). */
void bh_track_stream_loss(const bh_track *t, uint64_t client, bh_track_loss *out);
/* The same summed over a process's streams (0: the gone processes retired
 * so far), and over everything (process UINT32_MAX: present and retired). */
void bh_track_process_loss(const bh_track *t, uint32_t process, bh_track_loss *out);
/* Calls fn for each stream of the processes present, in first-seen order. */
void bh_track_each_stream(const bh_track *t, void (*fn)(void *ctx, uint64_t client, const bh_track_loss *l),
                          void *ctx);
/* History evictions in total: clean records, and records with findings
 * (only when the findings table was full). */
void bh_track_history_evictions(const bh_track *t, uint64_t *clean, uint64_t *findings);
/* Drops every live allocation of one client (stream) as a leak; calls on_leak
 * for each (may be NULL). Returns the number of leaks. Costs that stream's
 * live set. */
uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx);
/* The same for every stream of a process; frees its live sets (its counters
 * stay until bh_track_retire_process). Costs that process's live set:
 * bh_track_process_going and bh_track_drop_some, all at once. */
uint64_t bh_track_process_gone(bh_track *t, uint32_t process,
                               void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx);
/* The process went: its live allocations are to be dropped as leaks, in
 * slices (bh_track_drop_some), so that a caller serving others between
 * slices never spends its live set at once (1M live: 1.47 s in one call).
 * Its streams' live sets move aside now, whole (O(streams)): events from
 * then on (a process that reuses its pid) meet none of them and are never
 * mixed with them (no duplicate ALLOC, no FREE of one of them, not counted
 * against the live limit). Until dropped, each still counts as live in the
 * groups, totals and device sums, and each_entry and each_at show it (a
 * consistent state after every slice: live + leaks + unverified leaks is
 * what it was). Whether they count as leaks or unverified leaks is decided
 * now (the stream's state as it went). A previous drop of the process not
 * finished is finished first (on_leak). Returns the allocations to drop. */
uint64_t bh_track_process_going(bh_track *t, uint32_t process,
                                void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx);
/* Drops at most budget of what bh_track_process_going left to drop (on_leak
 * for each leak), passing over at most 16 table slots per allocation;
 * *left: how many are still to drop (0: the drop is over). Returns the
 * leaks among those dropped. */
uint64_t bh_track_drop_some(bh_track *t, uint32_t process, uint64_t budget,
                            void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx, uint64_t *left);
/* What a process gone has still to drop. O(1). */
uint64_t bh_track_process_doomed(const bh_track *t, uint32_t process);
/* Adds a process's counters into client into's groups (same devices; past
 * the group limit, into the totals only), then frees everything of it (its
 * address history stays). */
void bh_track_retire_process(bh_track *t, uint32_t process, uint64_t into);
/* 1 if client holds address on device live. O(1). */
int bh_track_is_live(const bh_track *t, uint64_t client, uint32_t device, uint64_t address);
/* 1 if the history keeps a record of client's address on device (it was
 * allocated or freed there, and the record was not evicted). O(1). */
int bh_track_has_history(const bh_track *t, uint64_t client, uint32_t device, uint64_t address);

/* Totals for one client/device (client or device UINT64_MAX / UINT32_MAX:
 * any), over the processes present; both any: gone processes included. */
void bh_track_totals(const bh_track *t, uint64_t client, uint32_t device, bh_track_counts *out);
/* Live bytes of one device, over every client; *seen (may be NULL): it has
 * live allocations. O(1). */
uint64_t bh_track_device_bytes(const bh_track *t, uint32_t device, int *seen);
/* (stream, device) groups of one process (kept after it is gone, until it is
 * retired). O(1). */
size_t bh_track_process_groups(const bh_track *t, uint32_t process);

/* sum += l, field by field. */
void bh_track_loss_add(bh_track_loss *sum, const bh_track_loss *l);
/* sum += c, field by field (peak_bytes too: a sum of peaks is an upper
 * bound; inexact: either's flags). */
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
/* The n addresses of the history with the most FREEs while not live (ties:
 * frees - allocs, then most frees), worst first; only addresses with such
 * FREEs. Returns how many were written to out. */
size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n);

#endif
