/*
 * track_impl.h - the tracker's state, shared by track.c (events, clients
 * leaving) and track_report.c (reports); private to tools/track/.
 * Must never: be included outside tools/track/ (callers use track.h).
 */
#ifndef BH_TRACK_IMPL_H
#define BH_TRACK_IMPL_H

#include "otab.h"
#include "track.h"

typedef struct entry { /* a live allocation: a address, b device */
    okey k;
    uint64_t size, since;
    uint32_t type;
} entry;

typedef struct group { /* a device */
    okey k;
    bh_track_counts c;
} group;

typedef struct stream {
    uint32_t id;
    otab entries, groups;
} stream;

/* A process or stream by its id: the object lives apart, so that pointers
 * to it survive the table's growth. */
typedef struct obj_ref {
    okey k;
    void *obj;
} obj_ref;

typedef struct proc {
    uint32_t pid;
    uint64_t live;  /* over all streams: the limit's count */
    size_t ngroups; /* over all streams: the group limit's count */
    otab streams;
    struct proc *prev, *next; /* first-seen order */
} proc;

typedef struct devsum { /* a device; kept once seen (bounded by BH_TRACK_MAX_DEVICES) */
    okey k;
    uint64_t live, bytes;
} devsum;

typedef struct hist { /* a address, b device, c client */
    okey k;
    uint64_t allocs, frees;
} hist;

struct bh_track {
    otab procs;
    proc *first, *last;
    otab devices, history;
    size_t history_cap, max_groups;
    uint64_t max_live;
    bh_track_counts gone; /* counts that could not be retired into a group (ENOMEM) */
};

static inline void *ref_find(const otab *refs, uint64_t id) {
    const obj_ref *r = ot_find(refs, id, 0, 0);
    return r != NULL ? r->obj : NULL;
}

/* The live entry of (client, device, address), or NULL. */
static inline const entry *live_entry(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    const proc *p = ref_find(&t->procs, BH_TRACK_PROCESS(client));
    const stream *s = p != NULL ? ref_find(&p->streams, BH_TRACK_STREAM(client)) : NULL;
    return s != NULL ? ot_find(&s->entries, address, device, 0) : NULL;
}

#endif
