/*
 * track_leave.c - see track.h. Owns what happens when clients and
 * processes leave the tracker: a stream's or a process's live entries
 * dropped (at once, or a slice at a time while the process is "going"),
 * counted as leaks into the history and the gone or departed sums, and the
 * process's records retired. track.c owns the state they leave.
 * Must never: drop an entry of another process than the one leaving, or
 * count a leak twice (an entry leaves its live set as it is counted).
 */
#include "track_impl.h"

#include <stdlib.h>
#include <string.h>

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

void unlink_proc(bh_track *t, proc *p) {
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
