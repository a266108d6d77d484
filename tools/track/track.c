/*
 * track.c - see track.h. Owns the tracker's state and its changes: processes
 * by pid (also on a list in first-seen order), each process's streams by id,
 * each stream's (device) groups and live entries by (device, address), the
 * per-device live bytes for TT QUERY, each an otab (otab.h); what each
 * stream's transport lost and how its resyncs repair the live set. The
 * per-address history is track_history.c's, the reports track_report.c's.
 * Must never: trust a size from its caller for anything but accounting, keep
 * an entry for an allocation that is not live, or walk another process's
 * data to answer for one process.
 */
#include "track_impl.h"

#include <stdlib.h>
#include <string.h>

#include "sat.h"

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
static proc *proc_of(bh_track *t, uint32_t pid, int *made) {
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
static stream *stream_of(proc *p, uint32_t id, int *made) {
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

static void unlink_proc(bh_track *t, proc *p);

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
static void device_add(bh_track *t, uint32_t device, uint64_t size, int sign) {
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
static void history_finding(bh_track *t, hist *h, uint64_t *count) {
    if (h != NULL) {
        (*count)++;
        (void)history_found(t, h);
    }
}

/* Loss counters saturate: a client's numbers may jump almost 2^64 ahead, and
 * its loss is summed with others' (totals, the "(departed)" group): a wrap
 * there would hide theirs. UINT64_MAX reads "at least that many". */
static void loss_add(uint64_t *to, uint64_t n) { *to = bh__sat_add(*to, n); }

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

/* ======================== Clients leaving ======================== */

/* A leak into the history's findings (its record is created if need be). */
static void history_leak(bh_track *t, uint64_t client, const entry *e) {
    hist *h = history_of(t, client, (uint32_t)e->k.b, e->k.a, 1);
    history_finding(t, h, h != NULL ? &h->leaks : NULL);
}

/* A live entry of stream s ends as its client went: a leak (listed, counted,
 * into the history's findings) if verified, else an unverified leak (the
 * stream went unsynced: it may have been freed). The caller takes it out of
 * its table. Returns 1 for a leak. */
static uint64_t drop_entry(bh_track *t, proc *p, stream *s, const entry *e, int verified,
                           void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    uint64_t client = BH_TRACK_CLIENT(p->pid, s->id);
    group *g = ot_find(&s->groups, e->k.b, 0, 0);
    if (verified && on_leak != NULL) {
        bh_track_entry pub = {client, e->k.a, e->size, e->since, (uint32_t)e->k.b, 1, e->type, 0, 0, 0, 0};
        on_leak(ctx, &pub);
    }
    /* end_live without the table removal: the whole table goes at once. */
    g->c.live--;
    g->c.live_bytes -= e->size;
    p->live--;
    device_add(t, (uint32_t)e->k.b, e->size, -1);
    if (!verified) {
        g->c.unverified_leaks++;
        return 0;
    }
    g->c.leaks++;
    g->c.leaked_bytes = bh__sat_add(g->c.leaked_bytes, e->size);
    history_leak(t, client, e);
    return 1;
}

/* Ends every live entry of one stream as a leak and frees its table. */
static uint64_t drop_stream(bh_track *t, proc *p, stream *s,
                            void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    uint64_t n = 0;
    int verified = (stream_inexact(s) & BH_TRACK_UNSYNCED) == 0;
    for (size_t i = 0; i < s->entries.cap; i++) {
        const entry *e = (const entry *)ot_slot(&s->entries, i);
        if (e->k.used)
            n += drop_entry(t, p, s, e, verified, on_leak, ctx);
    }
    ot_free(&s->entries);
    return n;
}

uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), NULL);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), NULL) : NULL;
    return s != NULL ? drop_stream(t, p, s, on_leak, ctx) : 0;
}

void bh_track_counts_add(bh_track_counts *sum, const bh_track_counts *c) {
    sum->allocs += c->allocs;
    sum->frees += c->frees;
    sum->unknown_frees += c->unknown_frees;
    sum->duplicate_allocs += c->duplicate_allocs;
    sum->leaks += c->leaks;
    sum->leaked_bytes = bh__sat_add(sum->leaked_bytes, c->leaked_bytes); /* grows for ever: saturates */
    sum->live += c->live;
    sum->live_bytes = bh__sat_add(sum->live_bytes, c->live_bytes);
    sum->peak_bytes = bh__sat_add(sum->peak_bytes, c->peak_bytes); /* sum of group peaks: an upper bound */
    sum->unverified_leaks += c->unverified_leaks;
    sum->inexact |= c->inexact;
}

void bh_track_loss_add(bh_track_loss *sum, const bh_track_loss *l) {
    loss_add(&sum->lost, l->lost);
    sum->resyncs += l->resyncs;
    sum->evicted += l->evicted;
    loss_add(&sum->unsynced, l->unsynced);
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

uint64_t bh_track_process_going(bh_track *t, uint32_t process,
                                void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    proc *p = proc_of(t, process, NULL);
    if (p == NULL)
        return 0;
    uint64_t left;
    if (p->doomed > 0) /* went twice (a reused pid): the first one's drop ends first, never mixed */
        (void)bh_track_drop_some(t, process, UINT64_MAX, on_leak, ctx, &left);
    for (size_t i = 0; i < p->streams.cap; i++) {
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, i);
        stream *s = sr->k.used ? sr->obj : NULL;
        if (s == NULL || s->entries.n == 0)
            continue;
        /* The table moves aside whole: O(1), however many are live. */
        ot_free(&s->doomed);
        s->doomed = s->entries;
        ot_init(&s->entries, sizeof(entry));
        s->doomed_at = 0;
        s->doomed_left = s->doomed.n;
        s->doomed_verified = (stream_inexact(s) & BH_TRACK_UNSYNCED) == 0;
        p->doomed += s->doomed_left;
    }
    p->drop_at = 0;
    return p->doomed;
}

/* Slots a slice may pass over per entry it drops: a table is at least 1/8
 * full (otab.h) but its used slots may bunch. */
#define DROP_SLOTS_PER_ENTRY 16u

uint64_t bh_track_drop_some(bh_track *t, uint32_t process, uint64_t budget,
                            void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx, uint64_t *left) {
    proc *p = proc_of(t, process, NULL);
    uint64_t leaks = 0, dropped = 0, slots = 0;
    uint64_t slot_budget =
        budget > UINT64_MAX / DROP_SLOTS_PER_ENTRY ? UINT64_MAX : budget * DROP_SLOTS_PER_ENTRY;
    while (p != NULL && p->doomed > 0 && dropped < budget && slots < slot_budget) {
        if (p->drop_at >= p->streams.cap) /* the table may have changed size since the last slice */
            p->drop_at = 0;
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, p->drop_at);
        stream *s = sr->k.used ? sr->obj : NULL;
        slots++;
        if (s == NULL || s->doomed_left == 0) {
            p->drop_at++;
            continue;
        }
        const entry *e = (const entry *)ot_slot(&s->doomed, s->doomed_at++);
        if (!e->k.used)
            continue;
        leaks += drop_entry(t, p, s, e, s->doomed_verified, on_leak, ctx);
        dropped++;
        p->doomed--;
        if (--s->doomed_left == 0) { /* memory follows what is live */
            ot_free(&s->doomed);
            s->doomed_at = 0;
        }
    }
    *left = p != NULL ? p->doomed : 0;
    return leaks;
}

uint64_t bh_track_process_gone(bh_track *t, uint32_t process,
                               void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    uint64_t left;
    (void)bh_track_process_going(t, process, on_leak, ctx);
    return bh_track_drop_some(t, process, UINT64_MAX, on_leak, ctx, &left);
}

uint64_t bh_track_process_doomed(const bh_track *t, uint32_t process) {
    const proc *p = ref_find(&t->procs, process);
    return p != NULL ? p->doomed : 0;
}

void bh_track_retire_process(bh_track *t, uint32_t process, uint64_t into) {
    proc *p = proc_of(t, process, NULL);
    if (p == NULL || process == BH_TRACK_PROCESS(into))
        return;
    (void)bh_track_process_gone(t, process, NULL, NULL); /* nothing should be live: nothing to report */
    int made = 0;
    proc *dp = proc_of(t, BH_TRACK_PROCESS(into), &made);
    stream *ds = dp != NULL ? stream_of(dp, BH_TRACK_STREAM(into), &made) : NULL;
    for (size_t i = 0; i < p->streams.cap; i++) {
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, i);
        const stream *st = sr->obj;
        if (sr->k.used) { /* its losses stay with the client it is retired into */
            bh_track_loss l = st->loss;
            l.unsynced = 0;
            bh_track_loss_add(ds != NULL ? &ds->loss : &t->retired, &l);
        }
        for (size_t j = 0; sr->k.used && j < st->groups.cap; j++) {
            group *g = (group *)ot_slot(&st->groups, j);
            if (!g->k.used)
                continue;
            g->c.inexact |= stream_inexact(st);
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
