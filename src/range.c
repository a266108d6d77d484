/*
 * range.c - the range index: which allocation covers an address.
 *
 * Owns: for every domain, the ordered set of [address, address + size) ranges
 * of the blocks that are live, or dying with their free not yet started. The
 * set is a treap threaded through the control blocks themselves (rlink,
 * rprio), so indexing needs no host memory and cannot fail. Domains are
 * spread over BH__RANGE_STRIPES stripes, each with its own mutex; all ranges
 * of one domain live in one stripe, so "does this range overlap anything?"
 * and "insert it" are one step under one lock, whichever intern-table shards
 * the keys hash to.
 * Must never: hold two ranges of one domain that overlap (callers check with
 * bh__range_overlap under the same lock before inserting), touch a block's
 * reference count or generation (the registry's protocol), or allocate.
 *
 * Keys are (device, address), compared device first. Priorities come from a
 * seeded hash of the key: a treap is then as balanced as a random one
 * (expected depth about 2 ln n) without storing random numbers, and the seed,
 * random per registry, keeps chosen addresses from building a deep one.
 */
#include "internal.h"

/* Key fields of an indexed block were written before it was published and
 * stay unchanged until it is retired, which happens only after it left the
 * index under the stripe lock that the caller holds: relaxed loads suffice. */
static uint32_t dev_of(const bh__block *b) { return (uint32_t)AO_load(&b->device); }
static uint64_t addr_of(const bh__block *b) { return (uint64_t)AO_load(&b->address); }
static uint64_t size_of(const bh__block *b) { return (uint64_t)AO_load(&b->size); }

/* (d1, a1) < (d2, a2) */
static int key_less(uint32_t d1, uint64_t a1, uint32_t d2, uint64_t a2) {
    return d1 < d2 || (d1 == d2 && a1 < a2);
}

void bh__ranges_init(bh__ranges *r, uint32_t seed) {
    for (unsigned i = 0; i < BH__RANGE_STRIPES; i++) {
        pthread_mutex_init(&r->stripes[i].lock, NULL);
        r->stripes[i].root = NULL;
    }
    r->seed = seed;
}

void bh__ranges_fini(bh__ranges *r) {
    for (unsigned i = 0; i < BH__RANGE_STRIPES; i++)
        pthread_mutex_destroy(&r->stripes[i].lock);
}

bh__range_stripe *bh__range_stripe_of(bh__ranges *r, uint32_t device) {
    return &r->stripes[(bh__key_hash(device, 0) >> 60) & (BH__RANGE_STRIPES - 1)];
}

/* ======================== Searches ======================== */

/* The indexed block with the greatest key <= (device, address), or NULL. */
static bh__block *at_or_below(bh__block *t, uint32_t device, uint64_t address) {
    bh__block *best = NULL;
    while (t != NULL) {
        if (key_less(device, address, dev_of(t), addr_of(t))) {
            t = t->rlink[0];
        } else {
            best = t;
            t = t->rlink[1];
        }
    }
    return best;
}

/* The indexed block with the smallest key > (device, address), or NULL. */
static bh__block *above(bh__block *t, uint32_t device, uint64_t address) {
    bh__block *best = NULL;
    while (t != NULL) {
        if (key_less(device, address, dev_of(t), addr_of(t))) {
            best = t;
            t = t->rlink[0];
        } else {
            t = t->rlink[1];
        }
    }
    return best;
}

/* Does b's range, in domain device, contain address? (Subtraction, not
 * address + size: a range may end exactly at 2^64.) */
static int covers(const bh__block *b, uint32_t device, uint64_t address) {
    return b != NULL && dev_of(b) == device && address - addr_of(b) < size_of(b);
}

bh__block *bh__range_containing(const bh__range_stripe *s, uint32_t device, uint64_t address) {
    bh__block *b = at_or_below(s->root, device, address);
    return covers(b, device, address) ? b : NULL;
}

bh__block *bh__range_overlap(const bh__range_stripe *s, uint32_t device, uint64_t address, uint64_t size) {
    /* Indexed ranges of one domain are disjoint, so only two can meet the new
     * one: the last that starts at or below it (does it reach address?) and
     * the first that starts above it (does it start before address + size?). */
    bh__block *b = at_or_below(s->root, device, address);
    if (covers(b, device, address))
        return b;
    b = above(s->root, device, address);
    if (b != NULL && dev_of(b) == device && addr_of(b) - address < size)
        return b;
    return NULL;
}

/* ======================== Updates ======================== */

/* Lifts t's child on side dir above t; returns the new subtree root. */
static bh__block *rotate(bh__block *t, int dir) {
    bh__block *c = t->rlink[dir];
    t->rlink[dir] = c->rlink[!dir];
    c->rlink[!dir] = t;
    return c;
}

static bh__block *insert_at(bh__block *t, bh__block *b) {
    if (t == NULL)
        return b;
    int dir = key_less(dev_of(t), addr_of(t), dev_of(b), addr_of(b)); /* b above t: right */
    t->rlink[dir] = insert_at(t->rlink[dir], b);
    if (t->rlink[dir]->rprio > t->rprio)
        t = rotate(t, dir);
    return t;
}

static bh__block *remove_at(bh__block *t, bh__block *b) {
    if (t == NULL)
        return NULL; /* not indexed: nothing to do (callers check ranged) */
    if (t != b) {
        int dir = key_less(dev_of(t), addr_of(t), dev_of(b), addr_of(b));
        t->rlink[dir] = remove_at(t->rlink[dir], b);
        return t;
    }
    if (t->rlink[0] == NULL)
        return t->rlink[1];
    if (t->rlink[1] == NULL)
        return t->rlink[0];
    /* Rotate the child with the higher priority up, then remove b from
     * below it, until b is a leaf. */
    int dir = t->rlink[1]->rprio > t->rlink[0]->rprio;
    bh__block *c = rotate(t, dir);
    c->rlink[!dir] = remove_at(t, b);
    return c;
}

void bh__range_insert(bh__ranges *r, bh__range_stripe *s, bh__block *b) {
    b->rlink[0] = b->rlink[1] = NULL;
    b->rprio = (uint32_t)(bh__key_hash(dev_of(b) ^ r->seed, addr_of(b)) >> 32);
    s->root = insert_at(s->root, b);
    b->ranged = 1;
}

void bh__range_remove(bh__range_stripe *s, bh__block *b) {
    if (!b->ranged)
        return;
    s->root = remove_at(s->root, b);
    b->rlink[0] = b->rlink[1] = NULL;
    b->ranged = 0;
}
