/*
 * track.c - see track.h.
 *
 * Owns: an open-addressing hash map of address entries (linear probing,
 * power-of-two capacity, grows at 50% load; entries are never deleted, a freed
 * address keeps its history) and a small array of (client, device) groups.
 * Must never: trust a size from its caller for anything but accounting.
 */
#include "track.h"

#include <stdlib.h>
#include <string.h>

typedef struct group {
    uint64_t client;
    uint32_t device;
    bh_track_counts c;
} group;

typedef struct slot {
    bh_track_entry e;
    int used;
} slot;

struct bh_track {
    slot *slots;
    size_t cap, used;
    group *groups;
    size_t ngroups, groups_cap;
    size_t last_group; /* cache: events come in runs for one group */
    uint64_t max_live_per_client;
};

static uint64_t mix(uint64_t client, uint32_t device, uint64_t address) {
    uint64_t h = address ^ (client * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)device << 48);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

bh_track *bh_track_new(uint64_t max_live_per_client) {
    bh_track *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cap = 1024;
    t->slots = calloc(t->cap, sizeof(slot));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    t->max_live_per_client = max_live_per_client;
    return t;
}

void bh_track_free(bh_track *t) {
    if (t == NULL)
        return;
    free(t->slots);
    free(t->groups);
    free(t);
}

static slot *probe(slot *slots, size_t cap, uint64_t client, uint32_t device, uint64_t address) {
    size_t i = mix(client, device, address) & (cap - 1);
    while (slots[i].used &&
           !(slots[i].e.client == client && slots[i].e.device == device && slots[i].e.address == address))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int grow(bh_track *t) {
    size_t cap = t->cap * 2;
    slot *ns = calloc(cap, sizeof(slot));
    if (ns == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].used)
            *probe(ns, cap, t->slots[i].e.client, t->slots[i].e.device, t->slots[i].e.address) = t->slots[i];
    free(t->slots);
    t->slots = ns;
    t->cap = cap;
    return 0;
}

/* The entry for a key, created (not live) if create is set. NULL: absent or ENOMEM. */
static bh_track_entry *entry(bh_track *t, uint64_t client, uint32_t device, uint64_t address, int create) {
    slot *s = probe(t->slots, t->cap, client, device, address);
    if (s->used)
        return &s->e;
    if (!create)
        return NULL;
    if ((t->used + 1) * 2 > t->cap) {
        if (grow(t) != 0)
            return NULL;
        s = probe(t->slots, t->cap, client, device, address);
    }
    memset(s, 0, sizeof(*s));
    s->used = 1;
    s->e.client = client;
    s->e.device = device;
    s->e.address = address;
    t->used++;
    return &s->e;
}

static bh_track_counts *group_of(bh_track *t, uint64_t client, uint32_t device) {
    if (t->last_group < t->ngroups && t->groups[t->last_group].client == client &&
        t->groups[t->last_group].device == device)
        return &t->groups[t->last_group].c;
    for (size_t i = 0; i < t->ngroups; i++) {
        if (t->groups[i].client == client && t->groups[i].device == device) {
            t->last_group = i;
            return &t->groups[i].c;
        }
    }
    if (t->ngroups == t->groups_cap) {
        size_t cap = t->groups_cap ? t->groups_cap * 2 : 16;
        group *g = realloc(t->groups, cap * sizeof(group));
        if (g == NULL)
            return NULL;
        t->groups = g;
        t->groups_cap = cap;
    }
    group *g = &t->groups[t->ngroups];
    memset(g, 0, sizeof(*g));
    g->client = client;
    g->device = device;
    t->last_group = t->ngroups++;
    return &g->c;
}

static uint64_t client_live(const bh_track *t, uint64_t client) {
    uint64_t n = 0;
    for (size_t i = 0; i < t->ngroups; i++)
        if (t->groups[i].client == client)
            n += t->groups[i].c.live;
    return n;
}

/* Makes e live; the caller has checked it was not. */
static bh_track_result make_live(bh_track *t, bh_track_counts *g, bh_track_entry *e, uint64_t client,
                                 uint64_t size, uint32_t type, uint64_t now) {
    if (t->max_live_per_client != 0 && client_live(t, client) >= t->max_live_per_client)
        return BH_TRACK_LIMIT;
    e->live = 1;
    e->size = size;
    e->type = type;
    e->since = now;
    g->live++;
    g->live_bytes += size;
    if (g->live_bytes > g->peak_bytes)
        g->peak_bytes = g->live_bytes;
    return BH_TRACK_OK;
}

bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now) {
    bh_track_counts *g = group_of(t, client, device);
    if (g == NULL)
        return BH_TRACK_NOMEM;
    bh_track_entry *e = entry(t, client, device, address, 1);
    if (e == NULL)
        return BH_TRACK_NOMEM;
    g->allocs++;
    e->allocs++;
    if (e->live) {
        /* Keep the first allocation's record: the duplicate is the error. */
        g->duplicate_allocs++;
        return BH_TRACK_DUPLICATE_ALLOC;
    }
    return make_live(t, g, e, client, size, type, now);
}

bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t now) {
    bh_track_counts *g = group_of(t, client, device);
    bh_track_entry *e = g != NULL ? entry(t, client, device, address, 1) : NULL;
    if (e == NULL)
        return BH_TRACK_NOMEM;
    if (e->live)
        return BH_TRACK_OK;
    return make_live(t, g, e, client, size, 0, now);
}

bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    bh_track_counts *g = group_of(t, client, device);
    if (g == NULL)
        return BH_TRACK_NOMEM;
    /* An unknown FREE still gets a history entry: that is the address people
     * ask about. */
    bh_track_entry *e = entry(t, client, device, address, 1);
    g->frees++;
    if (e != NULL)
        e->frees++;
    if (e == NULL || !e->live) {
        g->unknown_frees++;
        return BH_TRACK_UNKNOWN_FREE;
    }
    e->live = 0;
    g->live--;
    g->live_bytes -= e->size;
    return BH_TRACK_OK;
}

static void drop_client(bh_track *t, uint64_t client, int as_leaks,
                        void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx, uint64_t *count) {
    for (size_t i = 0; i < t->cap; i++) {
        bh_track_entry *e = &t->slots[i].e;
        if (!t->slots[i].used || e->client != client || !e->live)
            continue;
        bh_track_counts *g = group_of(t, client, e->device);
        if (as_leaks) {
            if (on_leak != NULL)
                on_leak(ctx, e);
            g->leaks++;
            g->leaked_bytes += e->size;
            (*count)++;
        }
        e->live = 0;
        g->live--;
        g->live_bytes -= e->size;
    }
}

uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    uint64_t n = 0;
    drop_client(t, client, 1, on_leak, ctx, &n);
    return n;
}

void bh_track_retire(bh_track *t, uint64_t client, uint64_t into) {
    for (size_t i = 0; i < t->ngroups;) {
        if (t->groups[i].client != client) {
            i++;
            continue;
        }
        group g = t->groups[i];
        bh_track_counts *dst = group_of(t, into, g.device); /* may move t->groups */
        if (dst == NULL)
            return; /* out of memory: the client stays as it is */
        bh_track_counts_add(dst, &g.c);
        for (i = 0; t->groups[i].client != client || t->groups[i].device != g.device; i++)
            ;
        memmove(&t->groups[i], &t->groups[i + 1], (t->ngroups - i - 1) * sizeof(group));
        t->ngroups--;
        t->last_group = 0;
    }
}

void bh_track_client_reset(bh_track *t, uint64_t client) {
    uint64_t n = 0;
    drop_client(t, client, 0, NULL, NULL, &n);
}

int bh_track_is_live(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    const slot *s = probe(t->slots, t->cap, client, device, address);
    return s->used && s->e.live;
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

void bh_track_totals(const bh_track *t, uint64_t client, uint32_t device, bh_track_counts *out) {
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < t->ngroups; i++) {
        const group *g = &t->groups[i];
        if ((client == UINT64_MAX || g->client == client) && (device == UINT32_MAX || g->device == device))
            bh_track_counts_add(out, &g->c);
    }
}

void bh_track_each_group(const bh_track *t,
                         void (*fn)(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c),
                         void *ctx) {
    for (size_t i = 0; i < t->ngroups; i++)
        fn(ctx, t->groups[i].client, t->groups[i].device, &t->groups[i].c);
}

void bh_track_each_entry(const bh_track *t, int live_only, void (*fn)(void *ctx, const bh_track_entry *e),
                         void *ctx) {
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].used && (!live_only || t->slots[i].e.live))
            fn(ctx, &t->slots[i].e);
}

static int worse(const bh_track_entry *a, const bh_track_entry *b) {
    int64_t ea = (int64_t)(a->frees - a->allocs), eb = (int64_t)(b->frees - b->allocs);
    return ea != eb ? ea > eb : a->frees > b->frees;
}

size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < t->cap && n > 0; i++) {
        const bh_track_entry *e = &t->slots[i].e;
        if (!t->slots[i].used || e->frees <= e->allocs)
            continue;
        /* Insertion into a sorted top-n list. */
        size_t pos = k < n ? k++ : n;
        while (pos > 0 && worse(e, &out[pos - 1])) {
            if (pos < n)
                out[pos] = out[pos - 1];
            pos--;
        }
        if (pos < n)
            out[pos] = *e;
    }
    return k;
}
