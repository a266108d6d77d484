/*
 * track.c - see track.h. Owns the tracker's state and its changes: processes
 * by pid (also on a list in first-seen order), each process's streams by id,
 * each stream's (device) groups and live entries by (device, address), the
 * per-device live bytes for TT QUERY, and the bounded per-address history,
 * each an otab (otab.h); the reports that read them are in track_report.c.
 * Must never: trust a size from its caller for anything but accounting, keep
 * an entry for an allocation that is not live, or walk another process's
 * data to answer for one process.
 */
#include "track_impl.h"

#include <stdlib.h>
#include <string.h>

/* ======================== State ======================== */

bh_track *bh_track_new(uint64_t max_live_per_process) {
    bh_track *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    ot_init(&t->procs, sizeof(obj_ref));
    ot_init(&t->devices, sizeof(devsum));
    ot_init(&t->history, sizeof(hist));
    t->history_cap = BH_TRACK_DEFAULT_HISTORY;
    t->max_groups = BH_TRACK_DEFAULT_MAX_GROUPS;
    t->max_live = max_live_per_process;
    return t;
}

void bh_track_set_history(bh_track *t, size_t addresses) {
    t->history_cap = addresses;
    if (t->history.n > addresses)
        ot_free(&t->history);
}

void bh_track_set_max_groups(bh_track *t, size_t groups) { t->max_groups = groups; }

static void free_stream(stream *s) {
    ot_free(&s->entries);
    ot_free(&s->groups);
    free(s);
}

static void free_proc(proc *p) {
    for (size_t i = 0; i < p->streams.cap; i++) {
        obj_ref *r = (obj_ref *)ot_slot(&p->streams, i);
        if (r->k.used)
            free_stream(r->obj);
    }
    ot_free(&p->streams);
    free(p);
}

void bh_track_free(bh_track *t) {
    if (t == NULL)
        return;
    while (t->first != NULL) {
        proc *p = t->first;
        t->first = p->next;
        free_proc(p);
    }
    ot_free(&t->procs);
    ot_free(&t->devices);
    ot_free(&t->history);
    free(t);
}
/* ======================== Lookups ======================== */

/* A new zeroed object of size bytes under id (which must be absent); NULL on ENOMEM. */
static void *ref_new(otab *refs, uint64_t id, size_t size) {
    void *o = calloc(1, size);
    obj_ref *r = o != NULL ? ot_insert(refs, id, 0, 0) : NULL;
    if (r == NULL) {
        free(o);
        return NULL;
    }
    r->obj = o;
    return o;
}

static proc *proc_of(bh_track *t, uint32_t pid, int create) {
    proc *p = ref_find(&t->procs, pid);
    if (p != NULL || !create || (p = ref_new(&t->procs, pid, sizeof(*p))) == NULL)
        return p;
    p->pid = pid;
    ot_init(&p->streams, sizeof(obj_ref));
    p->prev = t->last;
    if (t->last != NULL)
        t->last->next = p;
    else
        t->first = p;
    t->last = p;
    return p;
}

static stream *stream_of(proc *p, uint32_t id, int create) {
    stream *s = ref_find(&p->streams, id);
    if (s != NULL || !create || (s = ref_new(&p->streams, id, sizeof(*s))) == NULL)
        return s;
    s->id = id;
    ot_init(&s->entries, sizeof(entry));
    ot_init(&s->groups, sizeof(group));
    return s;
}

/* The group of (stream, device), created under the process's group limit.
 * NULL with *why set: BH_TRACK_GROUP_LIMIT or BH_TRACK_NOMEM. */
static group *group_of(bh_track *t, proc *p, stream *s, uint32_t device, bh_track_result *why) {
    group *g = ot_find(&s->groups, device, 0, 0);
    if (g != NULL)
        return g;
    if (t->max_groups != 0 && p->ngroups >= t->max_groups) {
        *why = BH_TRACK_GROUP_LIMIT;
        return NULL;
    }
    g = ot_insert(&s->groups, device, 0, 0);
    if (g == NULL) {
        *why = BH_TRACK_NOMEM;
        return NULL;
    }
    p->ngroups++;
    return g;
}

typedef struct place {
    proc *p;
    stream *s;
    group *g;
} place;

/* Finds (or creates) the process, stream and group of an event. */
static bh_track_result place_of(bh_track *t, uint64_t client, uint32_t device, place *out) {
    bh_track_result why = BH_TRACK_NOMEM;
    out->p = proc_of(t, BH_TRACK_PROCESS(client), 1);
    out->s = out->p != NULL ? stream_of(out->p, BH_TRACK_STREAM(client), 1) : NULL;
    out->g = out->s != NULL ? group_of(t, out->p, out->s, device, &why) : NULL;
    return out->g != NULL ? BH_TRACK_OK : why;
}

/* The history record of an address, created while there is room; NULL if none. */
static hist *history_of(bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    if (t->history_cap == 0)
        return NULL;
    hist *h = ot_find(&t->history, address, device, client);
    if (h == NULL && t->history.n < t->history_cap)
        h = ot_insert(&t->history, address, device, client);
    return h;
}

/* ======================== Live set ======================== */

static void device_add(bh_track *t, uint32_t device, uint64_t size, int sign) {
    devsum *d = ot_find(&t->devices, device, 0, 0);
    if (d == NULL && sign > 0 && t->devices.n < BH_TRACK_MAX_DEVICES)
        d = ot_insert(&t->devices, device, 0, 0);
    if (d == NULL)
        return; /* past the bound or ENOMEM: TT QUERY answers low, nothing else depends on it */
    d->live += sign > 0 ? 1 : (uint64_t)-1;
    d->bytes += sign > 0 ? size : (uint64_t)0 - size;
}

static bh_track_result make_live(bh_track *t, place *pl, uint32_t device, uint64_t address, uint64_t size,
                                 uint32_t type, uint64_t now) {
    if (t->max_live != 0 && pl->p->live >= t->max_live)
        return BH_TRACK_LIMIT;
    entry *e = ot_insert(&pl->s->entries, address, device, 0);
    if (e == NULL)
        return BH_TRACK_NOMEM;
    e->size = size;
    e->type = type;
    e->since = now;
    pl->p->live++;
    bh_track_counts *g = &pl->g->c;
    g->live++;
    g->live_bytes += size;
    if (g->live_bytes > g->peak_bytes)
        g->peak_bytes = g->live_bytes;
    device_add(t, device, size, 1);
    return BH_TRACK_OK;
}

/* Ends a live entry of stream s. */
static void end_live(bh_track *t, proc *p, stream *s, group *g, entry *e) {
    g->c.live--;
    g->c.live_bytes -= e->size;
    p->live--;
    device_add(t, (uint32_t)e->k.b, e->size, -1);
    ot_remove(&s->entries, e);
}

bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    hist *h = history_of(t, client, device, address);
    if (h != NULL)
        h->allocs++;
    pl.g->c.allocs++;
    if (ot_find(&pl.s->entries, address, device, 0) != NULL) {
        /* Keep the first allocation's record: the duplicate is the error. */
        pl.g->c.duplicate_allocs++;
        return BH_TRACK_DUPLICATE_ALLOC;
    }
    return make_live(t, &pl, device, address, size, type, now);
}

bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t now) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    if (ot_find(&pl.s->entries, address, device, 0) != NULL)
        return BH_TRACK_OK;
    return make_live(t, &pl, device, address, size, 0, now);
}

bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    /* An unknown FREE is counted (and kept in the bounded history: that is
     * the address people ask about), but creates no entry. */
    hist *h = history_of(t, client, device, address);
    if (h != NULL)
        h->frees++;
    pl.g->c.frees++;
    entry *e = ot_find(&pl.s->entries, address, device, 0);
    if (e == NULL) {
        pl.g->c.unknown_frees++;
        return BH_TRACK_UNKNOWN_FREE;
    }
    end_live(t, pl.p, pl.s, pl.g, e);
    return BH_TRACK_OK;
}

/* ======================== Clients leaving ======================== */

/* Ends every live entry of one stream (as leaks if as_leaks) and frees its table. */
static uint64_t drop_stream(bh_track *t, proc *p, stream *s, int as_leaks,
                            void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    uint64_t n = 0;
    for (size_t i = 0; i < s->entries.cap; i++) {
        entry *e = (entry *)ot_slot(&s->entries, i);
        if (!e->k.used)
            continue;
        group *g = ot_find(&s->groups, e->k.b, 0, 0);
        if (as_leaks && on_leak != NULL) {
            bh_track_entry pub = {BH_TRACK_CLIENT(p->pid, s->id),
                                  e->k.a,
                                  e->size,
                                  e->since,
                                  (uint32_t)e->k.b,
                                  1,
                                  e->type,
                                  0,
                                  0};
            on_leak(ctx, &pub);
        }
        /* end_live without the table removal: the whole table goes below. */
        g->c.live--;
        g->c.live_bytes -= e->size;
        if (as_leaks) {
            g->c.leaks++;
            g->c.leaked_bytes += e->size;
            n++;
        }
        p->live--;
        device_add(t, (uint32_t)e->k.b, e->size, -1);
    }
    ot_free(&s->entries);
    return n;
}

uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), 0);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), 0) : NULL;
    return s != NULL ? drop_stream(t, p, s, 1, on_leak, ctx) : 0;
}

void bh_track_client_reset(bh_track *t, uint64_t client) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), 0);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), 0) : NULL;
    if (s != NULL)
        drop_stream(t, p, s, 0, NULL, NULL);
}

void bh_track_counts_add(bh_track_counts *sum, const bh_track_counts *c) {
    sum->allocs += c->allocs;
    sum->frees += c->frees;
    sum->unknown_frees += c->unknown_frees;
    sum->duplicate_allocs += c->duplicate_allocs;
    sum->leaks += c->leaks;
    sum->leaked_bytes += c->leaked_bytes;
    sum->live += c->live;
    sum->live_bytes += c->live_bytes;
    sum->peak_bytes += c->peak_bytes; /* sum of group peaks: an upper bound */
}

static void unlink_proc(bh_track *t, proc *p) {
    ot_remove(&t->procs, ot_find(&t->procs, p->pid, 0, 0));
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        t->first = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        t->last = p->prev;
}

uint64_t bh_track_process_gone(bh_track *t, uint32_t process,
                               void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    proc *p = proc_of(t, process, 0);
    uint64_t n = 0;
    for (size_t i = 0; p != NULL && i < p->streams.cap; i++) {
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, i);
        if (sr->k.used)
            n += drop_stream(t, p, sr->obj, 1, on_leak, ctx);
    }
    return n;
}

void bh_track_retire_process(bh_track *t, uint32_t process, uint64_t into) {
    proc *p = proc_of(t, process, 0);
    if (p == NULL || process == BH_TRACK_PROCESS(into))
        return;
    (void)bh_track_process_gone(t, process, NULL, NULL); /* nothing should be live: nothing to report */
    proc *dp = proc_of(t, BH_TRACK_PROCESS(into), 1);
    stream *ds = dp != NULL ? stream_of(dp, BH_TRACK_STREAM(into), 1) : NULL;
    for (size_t i = 0; i < p->streams.cap; i++) {
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, i);
        const stream *st = sr->obj;
        for (size_t j = 0; sr->k.used && j < st->groups.cap; j++) {
            group *g = (group *)ot_slot(&st->groups, j);
            if (!g->k.used)
                continue;
            /* One group per device, under the group limit like any process:
             * devices come from the wire, and each gone process could add
             * thousands that stay forever. Past it, only the totals count. */
            group *d = ds != NULL ? ot_find(&ds->groups, g->k.a, 0, 0) : NULL;
            if (d == NULL && ds != NULL && (t->max_groups == 0 || dp->ngroups < t->max_groups) &&
                (d = ot_insert(&ds->groups, g->k.a, 0, 0)) != NULL)
                dp->ngroups++;
            bh_track_counts_add(d != NULL ? &d->c : &t->gone, &g->c);
        }
    }
    unlink_proc(t, p);
    free_proc(p);
}

int bh_track_is_live(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    return live_entry(t, client, device, address) != NULL;
}
