/*
 * track.c - see track.h. Owns the tracker's state and its changes: processes
 * by pid (also on a list in first-seen order), each process's streams by id,
 * each stream's (device) groups and live entries by (device, address), the
 * per-device live bytes for TT QUERY, each an otab (otab.h); what each
 * stream's transport lost and how its resyncs repair the live set. What leaving
 * clients drop is track_leave.c's, the per-address history
 * track_history.c's, the reports track_report.c's.
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
    history_init(t);
    t->max_groups = BH_TRACK_DEFAULT_MAX_GROUPS;
    t->max_live = max_live_per_process;
    return t;
}

void bh_track_set_max_groups(bh_track *t, size_t groups) { t->max_groups = groups; }

static void free_stream(stream *s) {
    ot_free(&s->entries);
    ot_free(&s->doomed);
    ot_free(&s->groups);
    free(s);
}

void free_proc(proc *p) {
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
    history_fini(t);
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

/* The process pid, or NULL. With made, one is created if need be (NULL:
 * ENOMEM) and *made says whether it was: an event that is then refused
 * frees what it created (place_of) without a second lookup. */
proc *proc_of(bh_track *t, uint32_t pid, int *made) {
    proc *p = ref_find(&t->procs, pid);
    if (p != NULL || made == NULL || (p = ref_new(&t->procs, pid, sizeof(*p))) == NULL)
        return p;
    *made = 1;
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

/* The stream id of p, or NULL; made as for proc_of. */
stream *stream_of(proc *p, uint32_t id, int *made) {
    stream *s = ref_find(&p->streams, id);
    if (s != NULL || made == NULL || (s = ref_new(&p->streams, id, sizeof(*s))) == NULL)
        return s;
    *made = 1;
    s->id = id;
    ot_init(&s->entries, sizeof(entry));
    ot_init(&s->groups, sizeof(group));
    ot_init(&s->doomed, sizeof(entry));
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

/* Finds (or creates) the process, stream and group of an event. A stream
 * (and process) created for an event that is then refused is freed again: a
 * client over its group limit that reconnects with a new stream each time
 * (115,567 times in 20 s) otherwise left one behind per connection, for as
 * long as its process lived, and every group walk passed over them. */
static bh_track_result place_of(bh_track *t, uint64_t client, uint32_t device, place *out) {
    bh_track_result why = BH_TRACK_NOMEM;
    int new_proc = 0, new_stream = 0;
    out->p = proc_of(t, BH_TRACK_PROCESS(client), &new_proc);
    out->s = out->p != NULL ? stream_of(out->p, BH_TRACK_STREAM(client), &new_stream) : NULL;
    out->g = out->s != NULL ? group_of(t, out->p, out->s, device, &why) : NULL;
    if (out->g != NULL)
        return BH_TRACK_OK;
    if (out->s != NULL && new_stream) {
        ot_remove(&out->p->streams, ot_find(&out->p->streams, BH_TRACK_STREAM(client), 0, 0));
        free_stream(out->s);
    }
    if (out->p != NULL && new_proc) {
        unlink_proc(t, out->p);
        free_proc(out->p);
    }
    return why;
}

/* An allocation of size may join group g: no single size or group total
 * large enough that sums over groups, devices and processes could wrap
 * (one ALLOC of 2^64 - 8 GiB took another process's 8 GiB device to 0). */
static int size_fits(const group *g, uint64_t size) {
    return size <= BH_TRACK_MAX_SIZE && g->c.live_bytes <= BH_TRACK_MAX_GROUP_BYTES - size;
}

/* a + b, or UINT64_MAX where it would wrap. */

/* ======================== Live set ======================== */

/* A device's sum lives exactly as long as the device has live entries: it
 * goes with its last one. It has no bound of its own (each sum stands for at
 * least one live entry, which the live and group limits bound); 0.3.1 kept
 * every device ever seen and stopped at 65,536, so 16 short-lived processes
 * at their group limit left every later device out of TT QUERY. */
void device_add(bh_track *t, uint32_t device, uint64_t size, int sign) {
    devsum *d = ot_find(&t->devices, device, 0, 0);
    if (d == NULL && sign > 0)
        d = ot_insert(&t->devices, device, 0, 0);
    if (d == NULL)
        return; /* ENOMEM: TT QUERY answers low, nothing else depends on it */
    d->live += sign > 0 ? 1 : (uint64_t)-1;
    /* Sizes are bounded (size_fits), so this never saturates in practice;
     * if it ever did, the sum stays at the top instead of wrapping to 0. */
    d->bytes = sign > 0 ? bh__sat_add(d->bytes, size) : d->bytes > size ? d->bytes - size : 0;
    if (d->live == 0)
        ot_remove(&t->devices, d);
}

static bh_track_result make_live(bh_track *t, place *pl, uint32_t device, uint64_t address, uint64_t size,
                                 uint32_t type, uint64_t now) {
    /* What a gone process still has to drop is not this one's (a reused pid). */
    if (t->max_live != 0 && pl->p->live - pl->p->doomed >= t->max_live)
        return BH_TRACK_LIMIT;
    entry *e = ot_insert(&pl->s->entries, address, device, 0);
    if (e == NULL)
        return BH_TRACK_NOMEM;
    e->size = size;
    e->type = type;
    e->since = now;
    e->mark = pl->s->epoch;
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

/* A finding at (client, device, address): counted in its history record,
 * which then moves among the findings. */
void history_finding(bh_track *t, hist *h, uint64_t *count) {
    if (h != NULL) {
        (*count)++;
        (void)history_found(t, h);
    }
}

/* Loss from sequence numbers: a gap is lost events, a late event (below the
 * highest seen) fills one back. A gap right after a resync was repaired by
 * it; any other leaves the stream unsynced until the next resync ends. */
static void note_seq(stream *s, uint64_t seq) {
    int covered = s->covered, seen = s->saw_frame;
    s->covered = 0;
    s->saw_frame = 1;
    if (seq == 0)
        return;
    if (s->next_seq == 0) /* first numbered event: after a resync nothing earlier was missed */
        s->next_seq = seen ? seq : 1;
    if (seq < s->next_seq) {
        s->loss.lost -= s->loss.lost > 0;
        s->loss.unsynced -= s->loss.unsynced > 0;
        return;
    }
    uint64_t gap = seq - s->next_seq;
    loss_add(&s->loss.lost, gap);
    if (!covered)
        loss_add(&s->loss.unsynced, gap);
    s->next_seq = seq + 1;
}

bh_track_result bh_track_on_event(bh_track *t, const bh_track_event *ev) {
    place pl;
    bh_track_result r = place_of(t, ev->client, ev->device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    note_seq(pl.s, ev->seq);
    /* Unsynced, a FREE of an address not live or an ALLOC of a live one may
     * be the other half of a lost event: neither is a finding. */
    int unsynced = pl.s->loss.unsynced > 0 || pl.s->resyncing;
    hist *h = history_of(t, ev->client, ev->device, ev->address, 1);
    if (h != NULL && pl.s->loss.lost > 0)
        h->inexact |= BH_TRACK_AT_LEAST;
    entry *e = ot_find(&pl.s->entries, ev->address, ev->device, 0);
    if (ev->kind == BH_TRACK_ALLOC) {
        if (!size_fits(pl.g, ev->size))
            return BH_TRACK_SIZE;
        if (h != NULL)
            h->allocs++;
        pl.g->c.allocs++;
        if (e != NULL && !unsynced) {
            /* Keep the first allocation's record: the duplicate is the error. */
            pl.g->c.duplicate_allocs++;
            history_finding(t, h, h != NULL ? &h->dups : NULL);
            return BH_TRACK_DUPLICATE_ALLOC;
        }
        if (e != NULL)
            end_live(t, pl.p, pl.s, pl.g, e); /* its FREE was lost */
        return make_live(t, &pl, ev->device, ev->address, ev->size, ev->type, ev->now);
    }
    if (h != NULL)
        h->frees++;
    pl.g->c.frees++;
    if (e == NULL) {
        if (unsynced)
            return BH_TRACK_OK;
        /* Counted (and kept in the history: that is the address people ask
         * about), but creates no entry. */
        pl.g->c.unknown_frees++;
        history_finding(t, h, h != NULL ? &h->unknown : NULL);
        return BH_TRACK_UNKNOWN_FREE;
    }
    end_live(t, pl.p, pl.s, pl.g, e);
    return BH_TRACK_OK;
}

bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now) {
    bh_track_event ev = {client, address, size, 0, now, device, type, BH_TRACK_ALLOC};
    return bh_track_on_event(t, &ev);
}

bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    bh_track_event ev = {client, address, 0, 0, 0, device, 0, BH_TRACK_FREE};
    return bh_track_on_event(t, &ev);
}

/* ======================== Loss and resync ======================== */

static stream *stream_make(bh_track *t, uint64_t client) {
    int made = 0;
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), &made);
    return p != NULL ? stream_of(p, BH_TRACK_STREAM(client), &made) : NULL;
}

void bh_track_lost(bh_track *t, uint64_t client, uint64_t n) {
    stream *s = stream_make(t, client);
    if (s != NULL && n > 0) {
        loss_add(&s->loss.lost, n);
        loss_add(&s->loss.unsynced, n);
    }
}

void bh_track_resync_begin(bh_track *t, uint64_t client) {
    stream *s = stream_make(t, client);
    if (s == NULL)
        return;
    s->saw_frame = 1;
    s->resyncing = 1;
    s->epoch++; /* what is live now is dropped at the end unless restored */
}

void bh_track_resync_covers(bh_track *t, uint64_t client, uint64_t last_seq) {
    stream *s = stream_make(t, client);
    if (s == NULL || last_seq == 0)
        return;
    if (s->next_seq == 0)
        s->next_seq = 1;
    if (last_seq >= s->next_seq) {
        loss_add(&s->loss.lost, last_seq + 1 - s->next_seq);
        s->next_seq = last_seq + 1;
    }
}

bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t since) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    pl.s->saw_frame = 1;
    entry *e = ot_find(&pl.s->entries, address, device, 0);
    uint64_t grows = e == NULL ? size : size > e->size ? size - e->size : 0;
    if (size > BH_TRACK_MAX_SIZE || !size_fits(pl.g, grows))
        return BH_TRACK_SIZE;
    if (e == NULL)
        return make_live(t, &pl, device, address, size, 0, since);
    /* Live already: the tracker saw its ALLOC, so its time stands unless
     * the resync knows an earlier one. */
    e->mark = pl.s->epoch;
    if (since < e->since)
        e->since = since;
    if (e->size != size) { /* the reporter's view wins */
        pl.g->c.live_bytes += size - e->size;
        device_add(t, device, e->size, -1);
        device_add(t, device, size, 1);
        e->size = size;
        if (pl.g->c.live_bytes > pl.g->c.peak_bytes)
            pl.g->c.peak_bytes = pl.g->c.live_bytes;
    }
    return BH_TRACK_OK;
}

typedef struct sweep_ctx {
    bh_track *t;
    proc *p;
    stream *s;
} sweep_ctx;

/* An entry the resync did not restore: its FREE was lost. */
static int not_restored(void *ctx, void *elem) {
    sweep_ctx *x = ctx;
    entry *e = elem;
    if (e->mark == x->s->epoch)
        return 0;
    group *g = ot_find(&x->s->groups, e->k.b, 0, 0);
    g->c.live--;
    g->c.live_bytes -= e->size;
    x->p->live--;
    device_add(x->t, (uint32_t)e->k.b, e->size, -1);
    return 1;
}

void bh_track_resync_end(bh_track *t, uint64_t client) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), NULL);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), NULL) : NULL;
    if (s == NULL || !s->resyncing)
        return;
    sweep_ctx x = {t, p, s};
    ot_sweep(&s->entries, not_restored, &x);
    s->resyncing = 0;
    s->loss.unsynced = 0;
    s->loss.resyncs++;
    s->covered = 1;
}

int bh_track_resync_cut(bh_track *t, uint64_t client) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), NULL);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), NULL) : NULL;
    if (s == NULL || !s->resyncing)
        return 0;
    /* Entries it did not restore keep their older mark: harmless, the next
     * resync's begin moves the epoch past both. */
    s->resyncing = 0;
    return 1;
}
