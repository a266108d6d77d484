/*
 * fair.c - which stats rows a reply shows (stats, /api/stats, --summary),
 * and in what order. Chosen in the fair order: every process's biggest
 * (stream, device) group before any process's second, and so on; within a
 * round, biggest first (live bytes, then peak bytes; ties in (client,
 * device) order, so one state always shows alike). So the rows a full reply
 * leaves out are the least useful ones of processes with many, never all of
 * a process that came later or holds little. Shown biggest first, as
 * docs/protocol.md says (the fair order read as grouped by device and kind,
 * not by size): the rows chosen are put in that order once rendered.
 *
 * Owns: the copy of the groups a walk hands out, one heap per process and
 * one per round (of their sort keys), and the rows shown with their text,
 * kept from one walk to the next.
 * Must never: change the tracker; order every group for a reply that shows
 * a few thousand of them (a 1 MiB reply at 32,768 groups sorted them all,
 * twice: heaps cost O(groups) to build and O(log groups) per row handed
 * out); or take fresh memory for each walk (megabytes at tens of thousands
 * of groups, given back to the system after each reply and faulted in again
 * by the next: it cost more than the walk). The scratch follows the groups:
 * cut back when a walk needs a quarter of it.
 */
#include <stdlib.h>
#include <string.h>

#include "trackd.h"

typedef struct fair_group {
    uint64_t key;
    uint32_t device;
    bh_track_counts c;
} fair_group;

/* What the order reads of a group, apart from its counts: the heaps move
 * and compare these 32 bytes in arrays of their own (comparisons reaching
 * into the scattered copies missed the cache on every step). */
typedef struct fair_key {
    uint64_t live_bytes, peak_bytes, key;
    uint32_t device, at; /* at: the group's place in the copy */
} fair_key;

/* One process's groups: a heap at h[start], n of them left. */
typedef struct fair_run {
    size_t start, n;
} fair_run;

/* A row a walk showed: where its text is in the reply, and its sort key. */
typedef struct fair_row {
    size_t start, len; /* with its separator, for every row but the first shown */
    fair_key k;
} fair_row;

struct td_fair {
    fair_group *v; /* the groups, in the tracker's order */
    size_t n, cap;
    fair_key *h; /* their keys: one heap per process */
    size_t hcap;
    fair_run *runs; /* the processes, in the tracker's order */
    size_t nruns, runcap;
    fair_key *round; /* a round: one key of each process */
    size_t rcap;
    fair_row *rows; /* the rows shown, in the order they were chosen */
    size_t nrows, rowcap;
    char *text; /* the rows' text, put in their shown order */
    size_t tcap;
    int failed, unsorted; /* unsorted: no memory to note a row; the reply keeps the chosen order */
};

/* p with room for need items of size (at most 4 times as many), cap set;
 * NULL without memory when p had too little (p is kept). */
static void *fit(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap && *cap / 4 <= need + 64)
        return p;
    size_t want = need + need / 2 + 64;
    void *np = realloc(p, want * size);
    if (np == NULL)
        return need <= *cap ? p : NULL;
    *cap = want;
    return np;
}

/* p with room for one more item than *n holds; NULL without memory. */
static void *room(void *p, size_t n, size_t *cap, size_t size) {
    return n < *cap ? p : fit(p, cap, 2 * *cap + 1, size);
}

static void collect(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c) {
    struct td_fair *f = ctx;
    fair_group *v = f->failed ? NULL : room(f->v, f->n, &f->cap, sizeof(*v));
    f->v = v != NULL ? v : f->v;
    fair_key *h = v != NULL ? room(f->h, f->n, &f->hcap, sizeof(*h)) : NULL;
    f->h = h != NULL ? h : f->h;
    int first = f->n == 0 || BH_TRACK_PROCESS(key) != BH_TRACK_PROCESS(f->v[f->n - 1].key);
    fair_run *runs = h != NULL && first ? room(f->runs, f->nruns, &f->runcap, sizeof(*runs)) : f->runs;
    f->runs = runs != NULL ? runs : f->runs;
    if (h == NULL || runs == NULL || f->n >= UINT32_MAX) {
        f->failed = 1;
        return;
    }
    if (first)
        runs[f->nruns++] = (fair_run){f->n, 0};
    runs[f->nruns - 1].n++;
    h[f->n] = (fair_key){c->live_bytes, c->peak_bytes, key, device, (uint32_t)f->n};
    v[f->n++] = (fair_group){key, device, *c};
}

/* x is shown before y: more live bytes, then more peak bytes, then the
 * lower (client, device). */
static int before(const fair_key *x, const fair_key *y) {
    if (x->live_bytes != y->live_bytes)
        return x->live_bytes > y->live_bytes;
    if (x->peak_bytes != y->peak_bytes)
        return x->peak_bytes > y->peak_bytes;
    if (x->key != y->key)
        return x->key < y->key;
    return x->device < y->device;
}

/* Binary heaps, the first shown at [0]. */
static void sift_down(fair_key *h, size_t n, size_t i) {
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &h[i]))
            return;
        fair_key t = h[i];
        h[i] = h[c];
        h[c] = t;
    }
}

static void heapify(fair_key *h, size_t n) {
    for (size_t i = n / 2; i-- > 0;)
        sift_down(h, n, i);
}

static fair_key pop(fair_key *h, size_t *n) {
    fair_key top = h[0];
    h[0] = h[--*n];
    sift_down(h, *n, 0);
    return top;
}

/* Hands the groups out round by round: each process's next biggest into
 * the round's heap, then the round biggest first. Returns the groups left
 * when fn stopped. Relies on bh_track_each_group listing a process's
 * groups together (it walks process by process). */
static uint64_t hand_out(struct td_fair *f, td_group_fn fn, void *ctx) {
    fair_key *h = f->h, *round = f->round;
    fair_run *runs = f->runs;
    size_t nruns = f->nruns;
    for (size_t i = 0; i < nruns; i++)
        heapify(h + runs[i].start, runs[i].n);
    uint64_t left = f->n;
    while (nruns > 0) {
        size_t m = 0, kept = 0;
        for (size_t i = 0; i < nruns; i++) { /* processes with none left drop out: a round costs its rows */
            round[m++] = pop(h + runs[i].start, &runs[i].n);
            if (runs[i].n > 0)
                runs[kept++] = runs[i];
        }
        nruns = kept;
        heapify(round, m);
        while (m > 0) {
            const fair_group *g = &f->v[pop(round, &m).at];
            left--;
            if (fn(ctx, g->key, g->device, &g->c) != 0)
                return left;
        }
    }
    return 0;
}

typedef struct plain_walk {
    td_group_fn fn;
    void *ctx;
    int stopped;
    uint64_t left;
} plain_walk;

static void plain(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c) {
    plain_walk *w = ctx;
    if (w->stopped)
        w->left++;
    else
        w->stopped = w->fn(w->ctx, key, device, c) != 0;
}

uint64_t td_each_group_fair(td_server *s, td_group_fn fn, void *ctx) {
    struct td_fair *f = s->fair != NULL ? s->fair : (s->fair = calloc(1, sizeof(*f)));
    if (f != NULL) {
        f->n = f->nruns = 0;
        f->failed = 0;
        bh_track_each_group(s->track, collect, f);
    }
    fair_key *round = f != NULL && !f->failed ? fit(f->round, &f->rcap, f->nruns, sizeof(*round)) : NULL;
    if (round != NULL) {
        f->round = round;
        f->v = fit(f->v, &f->cap, f->n, sizeof(*f->v)); /* cut back only: never NULL */
        f->h = fit(f->h, &f->hcap, f->n, sizeof(*f->h));
        f->runs = fit(f->runs, &f->runcap, f->nruns, sizeof(*f->runs));
        return hand_out(f, fn, ctx);
    }
    plain_walk w = {fn, ctx, 0, 0}; /* without memory for the copy: the tracker's order */
    bh_track_each_group(s->track, plain, &w);
    return w.left;
}

/* ------------------------------------------------------------ shown order */

typedef struct note_walk {
    struct td_fair *f;
    td_strbuf *b;
    td_group_fn fn;
    void *ctx;
} note_walk;

/* fn renders the row; one it kept (b grew) is noted with its key. */
static int note(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c) {
    note_walk *w = ctx;
    struct td_fair *f = w->f;
    size_t start = w->b->len;
    int stop = w->fn(w->ctx, key, device, c);
    if (w->b->len == start || f->unsorted)
        return stop;
    fair_row *rows = room(f->rows, f->nrows, &f->rowcap, sizeof(*rows));
    if (rows == NULL) {
        f->unsorted = 1;
        return stop;
    }
    f->rows = rows;
    rows[f->nrows++] = (fair_row){start, w->b->len - start, {c->live_bytes, c->peak_bytes, key, device, 0}};
    return stop;
}

static int shown_first(const void *x, const void *y) {
    const fair_row *a = x, *b = y;
    return before(&a->k, &b->k) ? -1 : before(&b->k, &a->k) ? 1 : 0;
}

/* Puts the noted rows of b biggest first: every row but the first chosen
 * starts with sep, which goes with the place, not the row. O(rows log rows)
 * and one copy of their text, in scratch kept like the walk's. */
static void sort_shown(struct td_fair *f, td_strbuf *b, const char *sep) {
    size_t n = f->nrows, seplen = strlen(sep);
    if (n < 2 || f->unsorted)
        return;
    size_t from = f->rows[0].start, len = b->len - from;
    char *text = fit(f->text, &f->tcap, len, 1);
    if (text == NULL)
        return; /* no memory: the chosen order stays, every row still there */
    f->text = text;
    for (size_t i = 1; i < n; i++) { /* the rows' own text, without the place's separator */
        f->rows[i].start += seplen;
        f->rows[i].len -= seplen;
    }
    qsort(f->rows, n, sizeof(*f->rows), shown_first);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(text + at, i > 0 ? sep : "", i > 0 ? seplen : 0);
        at += i > 0 ? seplen : 0;
        memcpy(text + at, b->p + f->rows[i].start, f->rows[i].len);
        at += f->rows[i].len;
    }
    memcpy(b->p + from, text, at); /* at == len: the same rows and separators */
}

uint64_t td_each_group_shown(td_server *s, td_strbuf *b, const char *sep, td_group_fn fn, void *ctx) {
    struct td_fair *f = s->fair != NULL ? s->fair : (s->fair = calloc(1, sizeof(*f)));
    if (f == NULL)
        return td_each_group_fair(s, fn, ctx);
    f->nrows = 0;
    f->unsorted = 0;
    note_walk w = {f, b, fn, ctx};
    uint64_t left = td_each_group_fair(s, note, &w);
    sort_shown(f, b, sep);
    f->rows = fit(f->rows, &f->rowcap, f->nrows, sizeof(*f->rows)); /* cut back only: never NULL */
    return left;
}

void td_fair_free(td_server *s) {
    if (s->fair == NULL)
        return;
    free(s->fair->rows);
    free(s->fair->text);
    free(s->fair->v);
    free(s->fair->h);
    free(s->fair->runs);
    free(s->fair->round);
    free(s->fair);
    s->fair = NULL;
}
