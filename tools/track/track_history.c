/*
 * track_history.c - the tracker's bounded per-address history (see track.h,
 * "History").
 *
 * Owns: the two history tables (clean records, records with findings), which
 * record goes when one is full, and the eviction counts (per client, in
 * total). A full table used to refuse new addresses: once earlier, correct
 * clients had filled it, a later client's double free was in no list.
 * Must never: evict a record with findings while a clean one could go, grow
 * either table past history_cap, or cost an event more than a few lookups.
 */
#include "track_impl.h"

#include <string.h>

/* Used slots an eviction looks at for a better victim than the first. */
#define EVICT_LOOK 4

void history_init(bh_track *t) {
    ot_init(&t->history, sizeof(hist));
    ot_init(&t->findings, sizeof(hist));
    t->history_cap = BH_TRACK_DEFAULT_HISTORY;
}

void history_fini(bh_track *t) {
    ot_free(&t->history);
    ot_free(&t->findings);
}

void bh_track_set_history(bh_track *t, size_t addresses) {
    t->history_cap = addresses;
    if (t->history.n > addresses)
        ot_free(&t->history);
    if (t->findings.n > addresses)
        ot_free(&t->findings);
}

/* Clean records: one of an allocation that is not live is the better
 * victim (a live one's FREE would find its counts gone). */
static uint64_t clean_cost(const bh_track *t, const hist *h) {
    return live_entry(t, h->k.c, (uint32_t)h->k.b, h->k.a) != NULL;
}

/* Records with findings: the one with the fewest goes. */
static uint64_t found_cost(const bh_track *t, const hist *h) {
    (void)t;
    return 1 + h->unknown + h->dups + h->leaks;
}

/* Removes one record of tab to make room: the cheapest of the first
 * EVICT_LOOK used slots from *hand on (a clock hand, so evictions spread
 * over the table), counted against the client it belonged to. */
static void evict(bh_track *t, otab *tab, size_t *hand, uint64_t (*cost)(const bh_track *t, const hist *h)) {
    hist *victim = NULL;
    uint64_t best = UINT64_MAX;
    size_t looked = 0, at = 0;
    for (size_t n = 0; n < tab->cap && looked < EVICT_LOOK && best != 0; n++) {
        size_t i = (*hand + n) & (tab->cap - 1);
        hist *h = (hist *)ot_slot(tab, i);
        if (!h->k.used)
            continue;
        looked++;
        uint64_t c = cost(t, h);
        if (c < best) {
            best = c;
            victim = h;
            at = i;
        }
    }
    if (victim == NULL)
        return;
    *hand = at + 1;
    stream *s = stream_find(t, victim->k.c);
    if (s != NULL)
        s->loss.evicted++;
    else
        t->retired.evicted++;
    if (tab == &t->findings)
        t->evicted_found++;
    else
        t->evicted_clean++;
    ot_remove(tab, victim);
}

static int in_table(const otab *tab, const hist *h) {
    const unsigned char *p = (const unsigned char *)h;
    return tab->s != NULL && p >= tab->s && p < tab->s + tab->cap * tab->esize;
}

const hist *history_find(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    const hist *h = t->findings.n > 0 ? ot_find(&t->findings, address, device, client) : NULL;
    return h != NULL ? h : ot_find(&t->history, address, device, client);
}

int bh_track_has_history(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    return history_find(t, client, device, address) != NULL;
}

hist *history_of(bh_track *t, uint64_t client, uint32_t device, uint64_t address, int create) {
    if (t->history_cap == 0)
        return NULL;
    /* The tables are t's own: the const is only history_find's promise. */
    hist *h = (hist *)(uintptr_t)history_find(t, client, device, address);
    if (h != NULL || !create)
        return h;
    if (t->history.n >= t->history_cap)
        evict(t, &t->history, &t->hand, clean_cost);
    return ot_insert(&t->history, address, device, client);
}

hist *history_found(bh_track *t, hist *h) {
    if (in_table(&t->findings, h))
        return h;
    hist copy = *h;
    if (t->findings.n >= t->history_cap)
        evict(t, &t->findings, &t->fhand, found_cost);
    hist *f = ot_insert(&t->findings, copy.k.a, (uint32_t)copy.k.b, copy.k.c);
    if (f == NULL)
        return h; /* ENOMEM: it stays with the clean ones, counts and all */
    memcpy(f, &copy, sizeof(copy));
    ot_remove(&t->history, h);
    return f;
}

static int each_in(const otab *tab, int (*fn)(void *ctx, const hist *h), void *ctx) {
    for (size_t i = 0; i < tab->cap; i++) {
        const hist *h = (const hist *)ot_slot(tab, i);
        if (h->k.used && fn(ctx, h) != 0)
            return 1;
    }
    return 0;
}

void history_each(const bh_track *t, int (*fn)(void *ctx, const hist *h), void *ctx) {
    if (each_in(&t->history, fn, ctx) == 0)
        (void)each_in(&t->findings, fn, ctx);
}

void bh_track_history_evictions(const bh_track *t, uint64_t *clean, uint64_t *findings) {
    *clean = t->evicted_clean;
    *findings = t->evicted_found;
}
