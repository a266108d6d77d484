/*
 * diag_history.c - per-address history: how often each (device, address)
 * was allocated, aliased, released, freed, and refused as stale.
 *
 * Owns: one table per registry, keyed like the intern table but never
 * emptied (an address keeps its history after its allocation is freed),
 * plus the latest birth and last-release stacks of each address.
 * Must never: fail or slow down the caller's operation beyond its own lock
 * (a note that cannot get memory is counted as lost, not returned), or hold
 * its lock while calling anything outside this file.
 */
#include <string.h>
#include <time.h>

#include "diag.h"
#include "core/internal.h"

#define NONE UINT32_MAX

struct bh__history {
    pthread_mutex_t lock; /* guards everything below */
    bh__hist_entry *entries;
    uint32_t *next; /* hash chain per entry */
    uint32_t count, cap;
    uint32_t *buckets; /* cap buckets (a power of two), NONE if empty */
    uint64_t births;   /* births noted so far: the born_seq source */
    uint64_t lost;     /* events not recorded (no host memory) */
};

static uint32_t bucket_of(const bh__history *h, uint32_t device, uint64_t address) {
    return (uint32_t)(bh__key_hash(device, address) >> 20) & (h->cap - 1);
}

bh_status bh__history_create(bh__history **out) {
    bh__history *h = bh__calloc(1, sizeof(*h));
    if (h == NULL)
        return BH_ENOMEM;
    pthread_mutex_init(&h->lock, NULL);
    *out = h;
    return BH_OK;
}

void bh__history_destroy(bh__history *h) {
    if (h == NULL)
        return;
    pthread_mutex_destroy(&h->lock);
    bh__free(h->entries);
    bh__free(h->next);
    bh__free(h->buckets);
    bh__free(h);
}

/* Doubles the table. Under lock. */
static int grow(bh__history *h) {
    uint32_t cap = h->cap != 0 ? h->cap * 2 : 256;
    bh__hist_entry *entries = bh__calloc(cap, sizeof(*entries));
    uint32_t *next = bh__calloc(cap, sizeof(*next));
    uint32_t *buckets = bh__calloc(cap, sizeof(*buckets));
    if (entries == NULL || next == NULL || buckets == NULL || cap == 0) {
        bh__free(entries);
        bh__free(next);
        bh__free(buckets);
        return 0;
    }
    if (h->count != 0)
        memcpy(entries, h->entries, h->count * sizeof(*entries));
    bh__free(h->entries);
    bh__free(h->next);
    bh__free(h->buckets);
    h->entries = entries;
    h->next = next;
    h->buckets = buckets;
    h->cap = cap;
    for (uint32_t b = 0; b < cap; b++)
        buckets[b] = NONE;
    for (uint32_t i = 0; i < h->count; i++) {
        uint32_t b = bucket_of(h, entries[i].device, entries[i].address);
        next[i] = buckets[b];
        buckets[b] = i;
    }
    return 1;
}

/* The entry of (device, address), created if asked. Under lock. */
static bh__hist_entry *entry(bh__history *h, uint32_t device, uint64_t address, int create) {
    if (h->cap != 0) {
        for (uint32_t i = h->buckets[bucket_of(h, device, address)]; i != NONE; i = h->next[i])
            if (h->entries[i].device == device && h->entries[i].address == address)
                return &h->entries[i];
    }
    if (!create || (h->count == h->cap && !grow(h)))
        return NULL;
    uint32_t i = h->count++;
    bh__hist_entry *e = &h->entries[i];
    memset(e, 0, sizeof(*e));
    e->device = device;
    e->address = address;
    uint32_t b = bucket_of(h, device, address);
    h->next[i] = h->buckets[b];
    h->buckets[b] = i;
    return e;
}

void bh__history_note(bh__history *h, enum bh__hist_event ev, uint32_t device, uint64_t address,
                      const bh__stack *at) {
    pthread_mutex_lock(&h->lock);
    bh__hist_entry *e = entry(h, device, address, 1);
    if (e == NULL) {
        h->lost++;
        pthread_mutex_unlock(&h->lock);
        return;
    }
    e->n[ev]++;
    if (ev == BH__HIST_ALLOC) {
        e->born_seq = ++h->births;
        e->born_ns = bh__now_ns();
        if (at != NULL)
            e->created = *at;
        else
            e->created.depth = 0;
    } else if (ev == BH__HIST_FREE && at != NULL) {
        e->freed = *at;
    }
    pthread_mutex_unlock(&h->lock);
}

int bh__history_get(bh__history *h, uint32_t device, uint64_t address, bh__hist_entry *out) {
    pthread_mutex_lock(&h->lock);
    bh__hist_entry *e = entry(h, device, address, 0);
    if (e != NULL)
        *out = *e;
    pthread_mutex_unlock(&h->lock);
    return e != NULL;
}

int bh__history_has_findings(const bh__hist_entry *e) {
    return e->n[BH__HIST_STALE] != 0 || e->n[BH__HIST_ALLOC] != e->n[BH__HIST_FREE];
}

static uint64_t events(const bh__hist_entry *e) {
    uint64_t s = 0;
    for (int i = 0; i < BH__HIST_COUNT; i++)
        s += e->n[i];
    return s;
}

/* Worse first: more stale releases, then findings (a leak before a busy
 * but balanced address), then more events, then lower address. */
static int worse(const bh__hist_entry *a, const bh__hist_entry *b) {
    if (a->n[BH__HIST_STALE] != b->n[BH__HIST_STALE])
        return a->n[BH__HIST_STALE] > b->n[BH__HIST_STALE];
    if (bh__history_has_findings(a) != bh__history_has_findings(b))
        return bh__history_has_findings(a);
    if (events(a) != events(b))
        return events(a) > events(b);
    return a->device != b->device ? a->device < b->device : a->address < b->address;
}

size_t bh__history_top(bh__history *h, bh__hist_entry *out, size_t max, int findings_only,
                       uint64_t *findings) {
    size_t n = 0;
    uint64_t with = 0;
    pthread_mutex_lock(&h->lock);
    /* Insertion into a sorted array of at most max: the dump asks for a
     * handful, the table may hold millions. */
    for (uint32_t i = 0; i < h->count; i++) {
        const bh__hist_entry *e = &h->entries[i];
        int found = bh__history_has_findings(e);
        with += (uint64_t)found;
        if (max == 0 || (findings_only && !found))
            continue;
        if (n == max && !worse(e, &out[n - 1]))
            continue;
        size_t j = n < max ? n++ : n - 1;
        while (j > 0 && worse(e, &out[j - 1])) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = *e;
    }
    pthread_mutex_unlock(&h->lock);
    if (findings != NULL)
        *findings = with;
    return n;
}

uint64_t bh__history_addresses(bh__history *h) {
    pthread_mutex_lock(&h->lock);
    uint64_t n = h->count;
    pthread_mutex_unlock(&h->lock);
    return n;
}
