/*
 * track_impl.h - the tracker's state, shared by track.c (events, resyncs,
 * clients leaving), track_history.c (the bounded per-address history) and
 * track_report.c (reports); private to tools/track/.
 * Must never: be included outside tools/track/ (callers use track.h).
 */
#ifndef BH_TRACK_IMPL_H
#define BH_TRACK_IMPL_H

#include "otab.h"
#include "track.h"

#include "sat.h" /* loss_add */

typedef struct entry { /* a live allocation: a address, b device */
    okey k;
    uint64_t size, since;
    uint32_t type;
    uint32_t mark; /* the stream's epoch when it was last made live or restored */
} entry;

typedef struct group { /* a device */
    okey k;
    bh_track_counts c;
} group;

typedef struct stream {
    uint32_t id;
    otab entries, groups;
    bh_track_loss loss;
    uint64_t next_seq; /* after the highest seq seen; 0: no numbered event yet */
    uint32_t epoch;    /* a resync restores entries under a new epoch and drops the older ones */
    int resyncing;     /* between resync_begin and resync_end */
    int covered;       /* a resync ended since the last event: a gap before the next one is repaired */
    int saw_frame;     /* anything of it was seen (the first event's gap counts only after that) */
    /* Its process went (bh_track_process_going): the live set it had then,
     * dropped as leaks in slices. Slots before doomed_at are dropped (the
     * table is never changed, only walked, then freed); the others are
     * still live for every count and report, but no event finds them. */
    otab doomed;
    size_t doomed_at;
    uint64_t doomed_left;
    int doomed_verified; /* the stream was synced when its process went: they count as leaks */
} stream;

/* A process or stream by its id: the object lives apart, so that pointers
 * to it survive the table's growth. */
typedef struct obj_ref {
    okey k;
    void *obj;
} obj_ref;

typedef struct proc {
    uint32_t pid;
    uint64_t live;   /* over all streams: the limit's count */
    size_t ngroups;  /* over all streams: the group limit's count */
    uint64_t doomed; /* over all streams: live entries of a process gone, still to drop (in live) */
    size_t drop_at;  /* the slot of streams the next slice of the drop starts at */
    otab streams;
    struct proc *prev, *next; /* first-seen order */
} proc;

typedef struct devsum { /* a device with live entries (removed with its last one) */
    okey k;
    uint64_t live, bytes;
} devsum;

typedef struct hist { /* a address, b device, c client */
    okey k;
    uint64_t allocs, frees;
    uint64_t unknown, dups, leaks; /* findings: FREEs while not live, duplicate ALLOCs, leaks */
    uint32_t inexact;              /* BH_TRACK_AT_LEAST: its client lost events while it was kept */
} hist;

struct bh_track {
    otab procs;
    proc *first, *last;
    otab devices;
    otab history, findings; /* clean records, records with findings (track_history.c) */
    size_t history_cap, max_groups;
    size_t hand, fhand;                    /* where the next eviction looks first (clean, findings) */
    uint64_t evicted_clean, evicted_found; /* history evictions */
    uint64_t max_live;
    bh_track_counts gone;  /* counts that could not be retired into a group (ENOMEM) */
    bh_track_loss retired; /* the losses of retired processes */
};

static inline void *ref_find(const otab *refs, uint64_t id) {
    const obj_ref *r = ot_find(refs, id, 0, 0);
    return r != NULL ? r->obj : NULL;
}

/* The stream of client, or NULL. */
static inline stream *stream_find(const bh_track *t, uint64_t client) {
    const proc *p = ref_find(&t->procs, BH_TRACK_PROCESS(client));
    return p != NULL ? ref_find(&p->streams, BH_TRACK_STREAM(client)) : NULL;
}

/* The entry of (device, address) s's process left to drop, or NULL (none,
 * or dropped already). */
static inline const entry *doomed_entry(const stream *s, uint32_t device, uint64_t address) {
    const entry *e = s->doomed_left > 0 ? ot_find(&s->doomed, address, device, 0) : NULL;
    size_t slot = e != NULL ? (size_t)((const unsigned char *)e - s->doomed.s) / s->doomed.esize : 0;
    return e != NULL && slot >= s->doomed_at ? e : NULL;
}

/* The live entry of (client, device, address), or NULL: one of its process
 * still to drop when the stream has none of its own there. */
static inline const entry *live_entry(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    const stream *s = stream_find(t, client);
    const entry *e = s != NULL ? ot_find(&s->entries, address, device, 0) : NULL;
    return e != NULL || s == NULL ? e : doomed_entry(s, device, address);
}

/* Flags of a stream's counts beyond what its groups recorded. */
static inline uint32_t stream_inexact(const stream *s) {
    return (s->loss.lost > 0 ? BH_TRACK_AT_LEAST : 0u) |
           (s->loss.unsynced > 0 || s->resyncing ? BH_TRACK_UNSYNCED : 0u);
}

/* ======================== track_history.c ======================== */

void history_init(bh_track *t);
void history_fini(bh_track *t);
/* The record of (client, device, address), or NULL. */
const hist *history_find(const bh_track *t, uint64_t client, uint32_t device, uint64_t address);
/* The record of (client, device, address), created (evicting if need be)
 * when create is set and the history is on; NULL if none. Invalidates
 * pointers into the history tables when it creates. */
hist *history_of(bh_track *t, uint64_t client, uint32_t device, uint64_t address, int create);
/* h got a finding: it moves to the findings table (evicting a finding if it
 * is full). Returns where it is now (NULL: ENOMEM, the finding is lost). */
hist *history_found(bh_track *t, hist *h);
/* Every record (clean ones, then findings), until fn returns nonzero. */
void history_each(const bh_track *t, int (*fn)(void *ctx, const hist *h), void *ctx);

/* track.c's, shared with track_leave.c (what leaving clients need of the
 * state): the process and stream of an id (created when made is not NULL
 * and they are new), a process freed with its streams, a device's live
 * bytes moved by size (sign +1 or -1), a history record's finding counted,
 * and a process taken off the tracker's table and list. */
proc *proc_of(bh_track *t, uint32_t pid, int *made);
stream *stream_of(proc *p, uint32_t id, int *made);
void free_proc(proc *p);
void device_add(bh_track *t, uint32_t device, uint64_t size, int sign);
void history_finding(bh_track *t, hist *h, uint64_t *count);
void unlink_proc(bh_track *t, proc *p); /* track_leave.c's */
/* Loss counters saturate: a client's numbers may jump almost 2^64 ahead, and
 * its loss is summed with others' (totals, the "(departed)" group): a wrap
 * there would hide theirs. UINT64_MAX reads "at least that many". */
static inline void loss_add(uint64_t *to, uint64_t n) { *to = bh__sat_add(*to, n); }

#endif
