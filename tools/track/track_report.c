/*
 * track_report.c - see track.h. Owns the reports on the tracker's state:
 * totals, groups, live entries, one address, most over-freed.
 * Must never: change the state, or cost more than each call's comment in
 * track.h says.
 */
#include "track_impl.h"

#include <string.h>

/* ======================== Reports ======================== */

void bh_track_each_group(const bh_track *t, bh_track_group_fn fn, void *ctx) {
    for (const proc *p = t->first; p != NULL; p = p->next) {
        for (size_t i = 0; i < p->streams.cap; i++) {
            const obj_ref *sr = (const obj_ref *)ot_slot(&p->streams, i);
            if (!sr->k.used)
                continue;
            const stream *s = sr->obj;
            for (size_t j = 0; j < s->groups.cap; j++) {
                const group *g = (const group *)ot_slot(&s->groups, j);
                if (g->k.used)
                    fn(ctx, BH_TRACK_CLIENT(p->pid, s->id), (uint32_t)g->k.a, &g->c);
            }
        }
    }
}

typedef struct totals_ctx {
    uint64_t client;
    uint32_t device;
    bh_track_counts *out;
} totals_ctx;

static void add_if_match(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c) {
    totals_ctx *tc = ctx;
    if ((tc->client == UINT64_MAX || tc->client == client) &&
        (tc->device == UINT32_MAX || tc->device == device))
        bh_track_counts_add(tc->out, c);
}

void bh_track_totals(const bh_track *t, uint64_t client, uint32_t device, bh_track_counts *out) {
    memset(out, 0, sizeof(*out));
    totals_ctx tc = {client, device, out};
    bh_track_each_group(t, add_if_match, &tc);
    if (client == UINT64_MAX && device == UINT32_MAX)
        bh_track_counts_add(out, &t->gone); /* retired without a group to go to */
}

uint64_t bh_track_device_bytes(const bh_track *t, uint32_t device, int *seen) {
    const devsum *d = ot_find(&t->devices, device, 0, 0);
    if (seen != NULL)
        *seen = d != NULL;
    return d != NULL ? d->bytes : 0;
}

uint64_t bh_track_process_live(const bh_track *t, uint32_t process) {
    const proc *p = ref_find(&t->procs, process);
    return p != NULL ? p->live : 0;
}

size_t bh_track_process_groups(const bh_track *t, uint32_t process) {
    const proc *p = ref_find(&t->procs, process);
    return p != NULL ? p->ngroups : 0;
}

/* The public view of a live entry of client. */
static void live_pub(const bh_track *t, uint64_t client, const entry *e, bh_track_entry *pub) {
    const hist *h = ot_find(&t->history, e->k.a, (uint32_t)e->k.b, client);
    *pub = (bh_track_entry){client, e->k.a,  e->size,           e->since,        (uint32_t)e->k.b,
                            1,      e->type, h ? h->allocs : 0, h ? h->frees : 0};
}

void bh_track_each_entry(const bh_track *t, uint64_t skip, int (*fn)(void *ctx, const bh_track_entry *e),
                         void *ctx) {
    for (const proc *p = t->first; p != NULL; p = p->next) {
        for (size_t i = 0; i < p->streams.cap; i++) {
            const obj_ref *sr = (const obj_ref *)ot_slot(&p->streams, i);
            if (!sr->k.used)
                continue;
            const stream *s = sr->obj;
            if (skip >= s->entries.n) { /* the whole stream is before the page */
                skip -= s->entries.n;
                continue;
            }
            for (size_t j = 0; j < s->entries.cap; j++) {
                const entry *e = (const entry *)ot_slot(&s->entries, j);
                if (!e->k.used)
                    continue;
                if (skip > 0) {
                    skip--;
                    continue;
                }
                bh_track_entry pub;
                live_pub(t, BH_TRACK_CLIENT(p->pid, s->id), e, &pub);
                if (fn(ctx, &pub) != 0)
                    return;
            }
        }
    }
}

typedef struct at_ctx {
    const bh_track *t;
    uint64_t address;
    void (*fn)(void *ctx, const bh_track_entry *e);
    void *ctx;
} at_ctx;

/* An address is live at most once per (stream, device): one lookup per
 * group instead of a walk of the entries. */
static void live_at(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c) {
    const at_ctx *x = ctx;
    (void)c;
    const entry *e = live_entry(x->t, client, device, x->address);
    if (e == NULL)
        return;
    bh_track_entry pub;
    live_pub(x->t, client, e, &pub);
    x->fn(x->ctx, &pub);
}

void bh_track_each_at(const bh_track *t, uint64_t address, void (*fn)(void *ctx, const bh_track_entry *e),
                      void *ctx) {
    at_ctx x = {t, address, fn, ctx};
    bh_track_each_group(t, live_at, &x);
    for (size_t i = 0; i < t->history.cap; i++) {
        const hist *h = (const hist *)ot_slot(&t->history, i);
        if (!h->k.used || h->k.a != address || live_entry(t, h->k.c, h->k.b, h->k.a) != NULL)
            continue;
        bh_track_entry pub = {h->k.c, h->k.a, 0, 0, h->k.b, 0, 0, h->allocs, h->frees};
        fn(ctx, &pub);
    }
}

static int worse(const bh_track_entry *a, const bh_track_entry *b) {
    int64_t ea = (int64_t)(a->frees - a->allocs), eb = (int64_t)(b->frees - b->allocs);
    return ea != eb ? ea > eb : a->frees > b->frees;
}

size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < t->history.cap && n > 0; i++) {
        const hist *h = (const hist *)ot_slot(&t->history, i);
        if (!h->k.used || h->frees <= h->allocs)
            continue;
        bh_track_entry e = {h->k.c, h->k.a, 0, 0, h->k.b, 0, 0, h->allocs, h->frees};
        /* Insertion into a sorted top-n list. */
        size_t pos = k < n ? k++ : n;
        while (pos > 0 && worse(&e, &out[pos - 1])) {
            if (pos < n)
                out[pos] = out[pos - 1];
            pos--;
        }
        if (pos < n)
            out[pos] = e;
    }
    return k;
}
