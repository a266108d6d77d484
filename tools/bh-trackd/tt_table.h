/*
 * tt_table.h - TT-Metal's allocation server's bookkeeping, as its documented
 * semantics say (docs/protocol.md, "TT-Metal compat records"), so that
 * --compat-tt answers QUERY, counts unknown FREEs and leaked bytes the way
 * TT's server does on the same traffic.
 *
 * One table for all processes, keyed by (device_id, space, id): space is a
 * buffer (buffer_id: its device address; FREE names no buffer_type, so DRAM
 * and L1 at one address are one entry, as in TT's server), a circular buffer
 * (cb_id) or a kernel (kernel_id). An ALLOC of a live key is one more
 * reference (ref_count), a FREE releases one; the bytes leave the device's
 * sums at the last. The process whose ALLOC made an entry owns it: when that
 * process is gone, what it still owns counts as leaked (it stays in the
 * table, as in TT's server, until something frees it or a full table needs
 * its room).
 *
 * Full (max_entries): a new entry takes the place of an entry of the process
 * gone longest; with none, of the process holding the most entries, if the
 * allocating process holds less than an equal share (max_entries over the
 * processes holding entries), that process's least useful entry (zero-byte
 * first, then oldest); else it is refused. So short-lived processes cannot
 * fill the table for later ones, nor one live process for the others.
 *
 * Owns: the entries, per-device sums per memory kind, per-process ownership
 * counts, and the TT figures (td_tt_counts).
 * Must never: walk the entries on a record (every call is O(1) but
 * td_tt_each and a full table's look at the owners), or grow past its bound
 * (td_tt_new's max_entries). Not
 * thread-safe: bh-trackd's event loop owns it.
 */
#ifndef BH_TRACKD_TT_TABLE_H
#define BH_TRACKD_TT_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum td_tt_space { TD_TT_BUFFER = 0, TD_TT_CB = 1, TD_TT_KERNEL = 2 };

/* What TT's server would show, and what it counted. */
typedef struct td_tt_counts {
    uint64_t allocs;              /* ALLOC, CB_ALLOC, KERNEL_LOAD records applied */
    uint64_t frees;               /* FREE, CB_FREE, KERNEL_UNLOAD records that found their entry */
    uint64_t unknown_frees;       /* ... that did not ("Deallocation for unknown buffer") */
    uint64_t references;          /* ALLOCs of a live key: one more reference, no bytes added */
    uint64_t live, live_bytes;    /* entries in the table (DUMP_REMAINING lists them) */
    uint64_t leaks, leaked_bytes; /* of those, owned by a process that is gone */
    uint64_t refused;             /* ALLOCs not kept: table full (max_entries) or out of memory */
    uint64_t evicted_departed;    /* entries of gone processes dropped to make room */
    uint64_t evicted_over_share;  /* entries of a process over its share dropped to make room */
} td_tt_counts;

typedef struct td_tt_entry {
    int32_t device;
    uint32_t space, kind, refs;
    uint64_t id, size, since_ms;
    pid_t owner;
    int owner_gone;
} td_tt_entry;

typedef struct td_tt_table td_tt_table;

td_tt_table *td_tt_new(uint64_t max_entries);
void td_tt_free(td_tt_table *t);

enum {
    TD_TT_NEW = 0,
    TD_TT_REFERENCE = 1,
    TD_TT_FULL = 2,
    TD_TT_EVICTED_DEPARTED = 3,
    TD_TT_EVICTED_SHARE = 4,
    TD_TT_TOO_LARGE = 5
};
/* An ALLOC by pid of size bytes of memory kind (a BH_MEM_* or the CB/kernel
 * kinds of wire.h); TD_TT_NEW, TD_TT_REFERENCE (the key was live: one more
 * reference, its size and kind stay those of the first), TD_TT_FULL (not
 * kept), TD_TT_EVICTED_* (kept in the place of an entry of a gone process,
 * or of one over its share) or TD_TT_TOO_LARGE (size over
 * BH_TRACK_MAX_SIZE, or the device's bytes of kind would pass
 * BH_TRACK_MAX_GROUP_BYTES: nothing counted, not even a reference). O(1), but a full table with no gone
 * process's entries looks at each owner. */
int td_tt_alloc(td_tt_table *t, int32_t device, uint32_t space, uint64_t id, uint64_t size, uint32_t kind,
                pid_t pid, uint64_t now_ms);
/* A FREE: 0 (one reference released; *last set when it was the last), or
 * -1 (no such entry: an unknown FREE). */
int td_tt_release(td_tt_table *t, int32_t device, uint32_t space, uint64_t id, int *last);
/* Live bytes of device per memory kind (kinds 0..15). O(1). */
void td_tt_device_bytes(const td_tt_table *t, int32_t device, uint64_t bytes[16]);
/* The compat clients' share of the per-process tracker's device sums (what
 * their records put there), so that QUERY can add what native clients hold
 * without counting the compat clients twice: delta bytes of kind on device. */
void td_tt_view_add(td_tt_table *t, int32_t device, uint32_t kind, int64_t delta);
void td_tt_view_bytes(const td_tt_table *t, int32_t device, uint64_t bytes[16]);
/* pid is gone: what it owns counts as leaked from now on. O(its entries' count), no walk. */
void td_tt_process_gone(td_tt_table *t, pid_t pid);
void td_tt_counts_get(const td_tt_table *t, td_tt_counts *out);
/* Calls fn for each entry (of one space, or every space for space < 0)
 * until it returns nonzero. Costs the table. */
void td_tt_each(const td_tt_table *t, int space, int (*fn)(void *ctx, const td_tt_entry *e), void *ctx);

#endif
