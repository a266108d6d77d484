/*
 * track_report.c - see track.h. Owns the reports on the tracker's state:
 * totals, groups, streams and their losses, live entries, one address, most
 * over-freed.
 * Must never: change the state, or cost more than each call's comment in
 * track.h says.
 */
#include "track_impl.h"

#include <string.h>

/* ======================== Reports ======================== */

/* Calls fn for each stream of the processes present, processes in
 * first-seen order, until fn returns nonzero; returns that. */
static int each_stream(const bh_track *t, int (*fn)(void *ctx, const proc *p, const stream *s), void *ctx) {
    for (const proc *p = t->first; p != NULL; p = p->next)
        for (size_t i = 0; i < p->streams.cap; i++) {
            const obj_ref *sr = (const obj_ref *)ot_slot(&p->streams, i);
            if (sr->k.used && fn(ctx, p, sr->obj) != 0)
                return 1;
        }
    return 0;
}

typedef struct group_walk {
    bh_track_group_fn fn;
    void *ctx;
} group_walk;

static int groups_of(void *ctx, const proc *p, const stream *s) {
    const group_walk *w = ctx;
    uint32_t flags = stream_inexact(s);
    for (size_t j = 0; j < s->groups.cap; j++) {
        const group *g = (const group *)ot_slot(&s->groups, j);
        if (!g->k.used)
            continue;
        bh_track_counts c = g->c;
        c.inexact |= flags;
        w->fn(w->ctx, BH_TRACK_CLIENT(p->pid, s->id), (uint32_t)g->k.a, &c);
    }
    return 0;
}

void bh_track_each_group(const bh_track *t, bh_track_group_fn fn, void *ctx) {
    group_walk w = {fn, ctx};
    (void)each_stream(t, groups_of, &w);
}

typedef struct loss_walk {
    void (*fn)(void *ctx, uint64_t client, const bh_track_loss *l);
    void *ctx;
} loss_walk;

static int loss_of(void *ctx, const proc *p, const stream *s) {
    const loss_walk *w = ctx;
    w->fn(w->ctx, BH_TRACK_CLIENT(p->pid, s->id), &s->loss);
    return 0;
}

void bh_track_each_stream(const bh_track *t, void (*fn)(void *ctx, uint64_t client, const bh_track_loss *l),
                          void *ctx) {
    loss_walk w = {fn, ctx};
    (void)each_stream(t, loss_of, &w);
}

void bh_track_stream_loss(const bh_track *t, uint64_t client, bh_track_loss *out) {
    const stream *s = stream_find(t, client);
    memset(out, 0, sizeof(*out));
    if (s != NULL)
        *out = s->loss;
}

static void sum_loss(void *ctx, uint64_t client, const bh_track_loss *l) {
    (void)client;
    bh_track_loss_add(ctx, l);
}

void bh_track_process_loss(const bh_track *t, uint32_t process, bh_track_loss *out) {
    memset(out, 0, sizeof(*out));
    if (process == UINT32_MAX) {
        bh_track_each_stream(t, sum_loss, out);
        bh_track_loss_add(out, &t->retired);
        return;
    }
    const proc *p = ref_find(&t->procs, process);
    for (size_t i = 0; p != NULL && i < p->streams.cap; i++) {
        const obj_ref *sr = (const obj_ref *)ot_slot(&p->streams, i);
        if (sr->k.used)
            bh_track_loss_add(out, &((const stream *)sr->obj)->loss);
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

size_t bh_track_process_groups(const bh_track *t, uint32_t process) {
    const proc *p = ref_find(&t->procs, process);
    return p != NULL ? p->ngroups : 0;
}

/* The public view of a history record (not live: size 0). */
static void hist_pub(const hist *h, bh_track_entry *pub) {
    *pub = (bh_track_entry){h->k.c, h->k.a,    0,        0,          (uint32_t)h->k.b, 0,
                            0,      h->allocs, h->frees, h->unknown, h->inexact};
}

/* The public view of a live entry of client. */
static void live_pub(const bh_track *t, uint64_t client, const entry *e, bh_track_entry *pub) {
    const hist *h = history_find(t, client, (uint32_t)e->k.b, e->k.a);
    bh_track_entry none = {0};
    if (h != NULL)
        hist_pub(h, pub);
    else
        *pub = none;
    pub->client = client;
    pub->address = e->k.a;
    pub->size = e->size;
    pub->since = e->since;
    pub->device = (uint32_t)e->k.b;
    pub->live = 1;
    pub->type = e->type;
}

typedef struct entry_walk {
    const bh_track *t;
    uint64_t skip;
    int (*fn)(void *ctx, const bh_track_entry *e);
    void *ctx;
} entry_walk;

/* The used slots of table from slot from on, until fn returns nonzero. */
static int entries_from(entry_walk *w, uint64_t client, const otab *table, size_t from) {
    for (size_t j = from; j < table->cap; j++) {
        const entry *e = (const entry *)ot_slot(table, j);
        if (!e->k.used)
            continue;
        bh_track_entry pub;
        live_pub(w->t, client, e, &pub);
        if (w->fn(w->ctx, &pub) != 0)
            return 1;
    }
    return 0;
}

static int entries_of(void *ctx, const proc *p, const stream *s) {
    entry_walk *w = ctx;
    uint64_t client = BH_TRACK_CLIENT(p->pid, s->id);
    if (w->skip < s->entries.n) {
        /* The page starts inside this stream: its slot found by the table's
         * block counts, not by passing over the slots before it. */
        size_t from = ot_nth(&s->entries, (size_t)w->skip);
        w->skip = 0;
        if (entries_from(w, client, &s->entries, from) != 0)
            return 1;
    } else {
        w->skip -= s->entries.n; /* the whole live set is before the page */
    }
    /* Then what its process left to drop: the used slots from doomed_at on
     * (those before it are dropped, doomed.n - doomed_left of them). */
    if (w->skip >= s->doomed_left) {
        w->skip -= s->doomed_left;
        return 0;
    }
    size_t from = ot_nth(&s->doomed, (size_t)(s->doomed.n - s->doomed_left + w->skip));
    w->skip = 0;
    return entries_from(w, client, &s->doomed, from);
}

void bh_track_each_entry(const bh_track *t, uint64_t skip, int (*fn)(void *ctx, const bh_track_entry *e),
                         void *ctx) {
    entry_walk w = {t, skip, fn, ctx};
    (void)each_stream(t, entries_of, &w);
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

static int history_at(void *ctx, const hist *h) {
    const at_ctx *x = ctx;
    if (h->k.a == x->address && live_entry(x->t, h->k.c, (uint32_t)h->k.b, h->k.a) == NULL) {
        bh_track_entry pub;
        hist_pub(h, &pub);
        x->fn(x->ctx, &pub);
    }
    return 0;
}

void bh_track_each_at(const bh_track *t, uint64_t address, void (*fn)(void *ctx, const bh_track_entry *e),
                      void *ctx) {
    at_ctx x = {t, address, fn, ctx};
    bh_track_each_group(t, live_at, &x);
    history_each(t, history_at, &x);
}

static int worse(const bh_track_entry *a, const bh_track_entry *b) {
    if (a->unknown_frees != b->unknown_frees)
        return a->unknown_frees > b->unknown_frees;
    int64_t ea = (int64_t)(a->frees - a->allocs), eb = (int64_t)(b->frees - b->allocs);
    return ea != eb ? ea > eb : a->frees > b->frees;
}

typedef struct top_ctx {
    bh_track_entry *out;
    size_t n, k;
} top_ctx;

/* Insertion into a sorted top-n list. */
static int top_add(void *ctx, const hist *h) {
    top_ctx *x = ctx;
    if (h->unknown == 0)
        return 0;
    bh_track_entry e;
    hist_pub(h, &e);
    size_t pos = x->k < x->n ? x->k++ : x->n;
    while (pos > 0 && worse(&e, &x->out[pos - 1])) {
        if (pos < x->n)
            x->out[pos] = x->out[pos - 1];
        pos--;
    }
    if (pos < x->n)
        x->out[pos] = e;
    return 0;
}

size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n) {
    top_ctx x = {out, n, 0};
    if (n > 0)
        history_each(t, top_add, &x);
    return x.k;
}
