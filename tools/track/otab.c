/*
 * otab.c - see otab.h. Owns the table's probing, growth, shrinking and
 * backward-shift deletion, and where each table's hash secret comes from.
 * Must never: know what an element holds beyond its okey.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "otab.h"
#include "fmix.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

#define OT_MIN_CAP 16u

/* Keys come from the wire: with a hash anyone can compute (and invert), a
 * client picks addresses that share one home slot and every insert probes
 * past all the earlier ones (60,000 such ALLOCs cost 7.7 s of the event
 * loop). Each table hashes with its own secret, and each part of the key
 * goes through its own round, so no choice of (a, b, c) collides without the
 * secret. */
static size_t ot_hash(const otab *t, uint64_t a, uint32_t b, uint64_t c) {
    uint64_t h = bh__fmix64(a ^ t->secret);
    h = bh__fmix64(h ^ c);
    return (size_t)bh__fmix64(h ^ b);
}

static size_t ot_home(const otab *t, const okey *k) { return ot_hash(t, k->a, k->b, k->c) & (t->cap - 1); }

void *ot_find(const otab *t, uint64_t a, uint32_t b, uint64_t c) {
    if (t->cap == 0)
        return NULL;
    for (size_t i = ot_hash(t, a, b, c) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        okey *k = ot_slot(t, i);
        if (!k->used)
            return NULL;
        if (k->a == a && k->b == b && k->c == c)
            return k;
    }
}

/* The per-block counts of a table of cap slots (NULL below OT_BLOCKED, or
 * out of memory: ot_nth then scans the slots). */
static uint16_t *blocks_for(size_t cap) {
    return cap >= OT_BLOCKED ? calloc(cap / OT_BLOCK, sizeof(uint16_t)) : NULL;
}

static void block_count(otab *t, size_t i, int delta) {
    if (t->blocks != NULL)
        t->blocks[i / OT_BLOCK] = (uint16_t)(t->blocks[i / OT_BLOCK] + delta);
}

static int ot_resize(otab *t, size_t cap) {
    unsigned char *ns = calloc(cap, t->esize);
    if (ns == NULL)
        return -1;
    otab old = *t;
    t->s = ns;
    t->cap = cap;
    t->blocks = blocks_for(cap);
    for (size_t i = 0; i < old.cap; i++) {
        okey *k = ot_slot(&old, i);
        if (!k->used)
            continue;
        size_t j = ot_home(t, k);
        while (ot_slot(t, j)->used)
            j = (j + 1) & (cap - 1);
        memcpy(ot_slot(t, j), k, t->esize);
        block_count(t, j, 1);
    }
    free(old.s);
    free(old.blocks);
    return 0;
}

/* A new zeroed element with key (a, b, c), which must be absent. NULL: ENOMEM.
 * Invalidates pointers into t. */
void *ot_insert(otab *t, uint64_t a, uint32_t b, uint64_t c) {
    if ((t->n + 1) * 2 > t->cap && ot_resize(t, t->cap ? t->cap * 2 : OT_MIN_CAP) != 0)
        return NULL;
    size_t i = ot_hash(t, a, b, c) & (t->cap - 1);
    while (ot_slot(t, i)->used)
        i = (i + 1) & (t->cap - 1);
    okey *k = ot_slot(t, i);
    memset(k, 0, t->esize);
    k->a = a;
    k->b = b;
    k->c = c;
    k->used = 1;
    t->n++;
    block_count(t, i, 1);
    return k;
}

/* Removes the element at slot i without shrinking; later elements of its
 * probe run move back so that lookups never need tombstones. */
static void remove_at(otab *t, size_t i) {
    size_t mask = t->cap - 1;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        okey *k = ot_slot(t, j);
        if (!k->used)
            break;
        size_t home = ot_home(t, k);
        /* k may fill the hole at i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            memcpy(ot_slot(t, i), k, t->esize);
            i = j;
        }
    }
    /* Each move above filled the hole at i and opened one at j: the counts
     * change only where the last hole stays. */
    ot_slot(t, i)->used = 0;
    block_count(t, i, -1);
    t->n--;
}

/* After removals: frees an empty table, halves a sparse one. */
static void shrink(otab *t) {
    if (t->n == 0) {
        ot_free(t);
        return;
    }
    while (t->cap > OT_MIN_CAP && t->n * 8 < t->cap)
        if (ot_resize(t, t->cap / 2) != 0) /* on ENOMEM the table just stays larger */
            return;
}

void ot_remove(otab *t, void *elem) {
    remove_at(t, (size_t)((unsigned char *)elem - t->s) / t->esize);
    shrink(t);
}

void ot_sweep(otab *t, int (*drop)(void *ctx, void *elem), void *ctx) {
    for (size_t i = 0; i < t->cap;) {
        okey *k = ot_slot(t, i);
        /* A removal moves a later element of the run into slot i (look at
         * it again), or one from the run's wrapped start, already kept. */
        if (k->used && drop(ctx, k))
            remove_at(t, i);
        else
            i++;
    }
    shrink(t);
}

size_t ot_nth(const otab *t, size_t n) {
    size_t i = 0;
    for (size_t b = 0; t->blocks != NULL && n >= t->blocks[b]; b++, i += OT_BLOCK)
        n -= t->blocks[b]; /* n < t->n: the loop ends inside the table */
    for (;; i++)
        if (ot_slot(t, i)->used && n-- == 0)
            return i;
}

void ot_free(otab *t) {
    free(t->s);
    free(t->blocks);
    t->blocks = NULL;
    t->s = NULL;
    t->cap = t->n = 0;
}

/* A fresh secret per table (a syscall per process or stream created, none
 * per event). Without getrandom (an old kernel, a seccomp filter) the clock
 * and the table's address still differ between runs and tables; they are not
 * secret, but nothing else breaks. */
static uint64_t table_secret(const otab *t) {
    uint64_t k;
    if (getrandom(&k, sizeof(k), GRND_NONBLOCK) == (ssize_t)sizeof(k))
        return k;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return bh__fmix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)t);
}

void ot_init(otab *t, size_t esize) {
    memset(t, 0, sizeof(*t));
    t->esize = esize;
    t->secret = table_secret(t);
}
