/*
 * baseline.c - the hand-written alternatives (see baseline.h).
 *
 * Owns: a counter pair, a global-mutex open-addressing hash and a
 * global-mutex tsearch tree, each with intern / lookup / release semantics.
 * Must never: exit or print; a failed host allocation in a baseline is a
 * benchmark setup failure that bench.c reports.
 */
#define _GNU_SOURCE
#include "baseline.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

/* ======================== Counter pair ======================== */

/* acq_rel on both, as a refcount needs (the decrement publishes the holder's
 * writes to whoever frees; the increment is the get-unless-zero check). */
__attribute__((noinline)) void base_cas_pair(base_counter *c) {
    uint64_t w = __atomic_load_n(&c->word, __ATOMIC_RELAXED);
    while (w != 0 &&
           !__atomic_compare_exchange_n(&c->word, &w, w + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    }
    w = __atomic_load_n(&c->word, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&c->word, &w, w - 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    }
}

__attribute__((noinline)) void base_xadd_pair(base_counter *c) {
    (void)__atomic_fetch_add(&c->word, 1, __ATOMIC_RELAXED);
    (void)__atomic_fetch_sub(&c->word, 1, __ATOMIC_ACQ_REL);
}

/* ======================== Global mutex + open addressing ======================== */

typedef struct hash_entry {
    uint64_t address;
    uint32_t device;
    uint32_t refs; /* 0: empty slot */
} hash_entry;

struct base_hash {
    pthread_mutex_t lock;
    hash_entry *e;
    size_t mask, count;
};

/* The splitmix64 finaliser (a strong mixer, independent of bufhandle's), low
 * bits index the table. */
static size_t slot_of(const base_hash *m, uint32_t device, uint64_t address) {
    uint64_t x = address + ((uint64_t)device << 40);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (size_t)(x ^ (x >> 31)) & m->mask;
}

base_hash *base_hash_create(size_t expect) {
    base_hash *m = calloc(1, sizeof(*m));
    size_t cap = 16;
    while (cap < 2 * expect)
        cap *= 2;
    if (m == NULL || (m->e = calloc(cap, sizeof(hash_entry))) == NULL) {
        free(m);
        return NULL;
    }
    m->mask = cap - 1;
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void base_hash_destroy(base_hash *m) {
    pthread_mutex_destroy(&m->lock);
    free(m->e);
    free(m);
}

/* The key's slot, or the empty slot where it would go. */
static size_t hash_find(const base_hash *m, uint32_t device, uint64_t address) {
    size_t i = slot_of(m, device, address);
    while (m->e[i].refs != 0 && !(m->e[i].address == address && m->e[i].device == device))
        i = (i + 1) & m->mask;
    return i;
}

/* Doubles the table; keeps the old one if host memory ran out (it is at most
 * half full plus one, so probing still terminates). */
static void hash_grow(base_hash *m) {
    size_t old_cap = m->mask + 1;
    hash_entry *old = m->e, *e = calloc(2 * old_cap, sizeof(hash_entry));
    if (e == NULL)
        return;
    m->e = e;
    m->mask = 2 * old_cap - 1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].refs != 0)
            m->e[hash_find(m, old[i].device, old[i].address)] = old[i];
    free(old);
}

void base_hash_intern(base_hash *m, uint32_t device, uint64_t address) {
    pthread_mutex_lock(&m->lock);
    size_t i = hash_find(m, device, address);
    if (m->e[i].refs == 0) {
        if (2 * (m->count + 1) > m->mask + 1) {
            hash_grow(m);
            i = hash_find(m, device, address);
        }
        m->e[i] = (hash_entry){address, device, 0};
        m->count++;
    }
    m->e[i].refs++;
    pthread_mutex_unlock(&m->lock);
}

int base_hash_lookup(base_hash *m, uint32_t device, uint64_t address) {
    pthread_mutex_lock(&m->lock);
    size_t i = hash_find(m, device, address);
    int found = m->e[i].refs != 0;
    if (found)
        m->e[i].refs++;
    pthread_mutex_unlock(&m->lock);
    return found;
}

/* Backward-shift deletion: later entries of the probe run move into the hole
 * when their home slot allows it, so no tombstones accumulate under churn. */
static void hash_remove(base_hash *m, size_t hole) {
    for (size_t j = hole;;) {
        j = (j + 1) & m->mask;
        if (m->e[j].refs == 0)
            break;
        size_t home = slot_of(m, m->e[j].device, m->e[j].address);
        /* Move e[j] back unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            m->e[hole] = m->e[j];
            hole = j;
        }
    }
    m->e[hole].refs = 0;
    m->count--;
}

void base_hash_release(base_hash *m, uint32_t device, uint64_t address) {
    pthread_mutex_lock(&m->lock);
    size_t i = hash_find(m, device, address);
    if (m->e[i].refs != 0 && --m->e[i].refs == 0)
        hash_remove(m, i);
    pthread_mutex_unlock(&m->lock);
}

/* ======================== Global mutex + tsearch ======================== */

typedef struct tree_entry {
    uint64_t address;
    uint32_t device;
    uint32_t refs;
} tree_entry;

struct base_tree {
    pthread_mutex_t lock;
    void *root;
};

static int tree_cmp(const void *a, const void *b) {
    const tree_entry *x = a, *y = b;
    if (x->device != y->device)
        return x->device < y->device ? -1 : 1;
    return (x->address > y->address) - (x->address < y->address);
}

base_tree *base_tree_create(void) {
    base_tree *t = calloc(1, sizeof(*t));
    if (t != NULL)
        pthread_mutex_init(&t->lock, NULL);
    return t;
}

void base_tree_destroy(base_tree *t) {
    tdestroy(t->root, free);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void *base_tree_intern(base_tree *t, uint32_t device, uint64_t address) {
    tree_entry key = {address, device, 0}, *e = NULL;
    pthread_mutex_lock(&t->lock);
    tree_entry **found = tfind(&key, &t->root, tree_cmp);
    if (found != NULL) {
        e = *found;
    } else if ((e = malloc(sizeof(*e))) != NULL) {
        *e = key;
        if (tsearch(e, &t->root, tree_cmp) == NULL) {
            free(e);
            e = NULL;
        }
    }
    if (e != NULL)
        e->refs++;
    pthread_mutex_unlock(&t->lock);
    return e;
}

void *base_tree_lookup(base_tree *t, uint32_t device, uint64_t address) {
    tree_entry key = {address, device, 0}, *e = NULL;
    pthread_mutex_lock(&t->lock);
    tree_entry **found = tfind(&key, &t->root, tree_cmp);
    if (found != NULL) {
        e = *found;
        e->refs++;
    }
    pthread_mutex_unlock(&t->lock);
    return e;
}

void base_tree_release(base_tree *t, void *entry) {
    tree_entry *e = entry;
    pthread_mutex_lock(&t->lock);
    if (--e->refs == 0) {
        tdelete(e, &t->root, tree_cmp);
        free(e);
    }
    pthread_mutex_unlock(&t->lock);
}
