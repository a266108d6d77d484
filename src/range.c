/*
 * range.c - the range index: which allocation covers an address.
 *
 * Owns: for every domain, the ordered set of [address, address + size) ranges
 * of the blocks that are live, or dying with their free not yet returned. The
 * set is a treap threaded through the control blocks themselves (rlink: the
 * children's slot numbers, so a block still fits one cache line), so indexing
 * needs no host memory and cannot fail. Domains are
 * spread over BH__RANGE_STRIPES stripes, each with its own mutex; all ranges
 * of one domain live in one stripe, so "does this range overlap anything?"
 * and "insert it" are one step under one lock, whichever intern-table shards
 * the keys hash to.
 * Must never: hold two ranges of one domain that overlap (callers check with
 * bh__range_overlap under the same lock before inserting), touch a block's
 * reference count or generation (the registry's protocol), or allocate.
 *
 * Keys are (device, address), compared device first. Priorities are a seeded
 * hash of the key, recomputed when needed rather than stored: a treap is then
 * as balanced as a random one (expected depth about 2 ln n), and the seed,
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

/* Slot links: 0 is no child (slot 0 is never handed out). */
static bh__block *child(const bh__ranges *r, const bh__block *t, int dir) {
    return t->rlink[dir] != 0 ? bh__slab_at(r->slab, t->rlink[dir]) : NULL;
}
/* Writes a link only if it changes: the blocks on a search path are other
 * allocations' control blocks, whose reference words share their line, so an
 * update must not dirty every line it passes on its way back up. */
static void set_child(bh__block *t, int dir, const bh__block *c) {
    uint32_t slot = c != NULL ? c->slot : 0;
    if (t->rlink[dir] != slot)
        t->rlink[dir] = slot;
}

uint32_t bh__range_prio(const bh__ranges *r, const bh__block *b) {
    return (uint32_t)(bh__key_hash(dev_of(b) ^ r->seed, addr_of(b)) >> 32);
}
static uint32_t prio(const bh__ranges *r, const bh__block *b) { return bh__range_prio(r, b); }

void bh__ranges_init(bh__ranges *r, const struct bh__slab *slab, uint32_t seed) {
    for (unsigned i = 0; i < BH__RANGE_STRIPES; i++) {
        pthread_mutex_init(&r->stripes[i].lock, NULL);
        r->stripes[i].root = NULL;
    }
    r->slab = slab;
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
static bh__block *at_or_below(const bh__ranges *r, bh__block *t, uint32_t device, uint64_t address) {
    bh__block *best = NULL;
    while (t != NULL) {
        if (key_less(device, address, dev_of(t), addr_of(t))) {
            t = child(r, t, 0);
        } else {
            best = t;
            t = child(r, t, 1);
        }
    }
    return best;
}

/* Does b's range, in domain device, contain address? (Subtraction, not
 * address + size: a range may end exactly at 2^64.) */
static int covers(const bh__block *b, uint32_t device, uint64_t address) {
    return b != NULL && dev_of(b) == device && address - addr_of(b) < size_of(b);
}

bh__block *bh__range_containing(const bh__ranges *r, const bh__range_stripe *s, uint32_t device,
                                uint64_t address) {
    bh__block *b = at_or_below(r, s->root, device, address);
    return covers(b, device, address) ? b : NULL;
}

bh__block *bh__range_overlap(const bh__ranges *r, const bh__range_stripe *s, uint32_t device,
                             uint64_t address, uint64_t size) {
    /* Indexed ranges of one domain are disjoint, so only two can meet the new
     * one: the last that starts at or below it (does it reach address?) and
     * the first that starts above it (does it start before address + size?).
     * One descent finds both: each step leaves one of them behind. */
    bh__block *below = NULL, *above = NULL;
    for (bh__block *t = s->root; t != NULL;) {
        if (key_less(device, address, dev_of(t), addr_of(t))) {
            above = t;
            t = child(r, t, 0);
        } else {
            below = t;
            t = child(r, t, 1);
        }
    }
    if (covers(below, device, address))
        return below;
    if (above != NULL && dev_of(above) == device && addr_of(above) - address < size)
        return above;
    return NULL;
}

/* ======================== Updates ======================== */

/* Lifts t's child on side dir above t; returns the new subtree root. */
static bh__block *rotate(const bh__ranges *r, bh__block *t, int dir) {
    bh__block *c = child(r, t, dir);
    t->rlink[dir] = c->rlink[!dir];
    set_child(c, !dir, t);
    return c;
}

/* An insertion that gives up if the new range meets an indexed one. The
 * descent to b's place passes its neighbours: the last node where it turned
 * right is b's predecessor, the last where it turned left its successor, and
 * (indexed ranges being disjoint) only they can meet b's range. So checking
 * and inserting cost one walk down the tree. */
typedef struct insertion {
    bh__block *b;
    uint32_t bprio;
    bh__block *pred, *succ; /* neighbours met on the way down */
    bh__block *clash;       /* set: b met it, nothing was changed */
} insertion;

static bh__block *insert_at(const bh__ranges *r, bh__block *t, insertion *in) {
    bh__block *b = in->b;
    if (t == NULL) {
        uint32_t dev = dev_of(b);
        uint64_t a = addr_of(b);
        if (covers(in->pred, dev, a))
            in->clash = in->pred;
        else if (in->succ != NULL && dev_of(in->succ) == dev && addr_of(in->succ) - a < size_of(b))
            in->clash = in->succ;
        return in->clash != NULL ? NULL : b;
    }
    int dir = key_less(dev_of(t), addr_of(t), dev_of(b), addr_of(b)); /* b above t: right */
    if (dir)
        in->pred = t;
    else
        in->succ = t;
    bh__block *c = insert_at(r, child(r, t, dir), in);
    if (in->clash != NULL)
        return t; /* nothing below changed */
    set_child(t, dir, c);
    /* Only the path to b changed, so only b can now outrank its parent. */
    if (c == b && in->bprio > prio(r, t))
        t = rotate(r, t, dir);
    return t;
}

bh__block *bh__range_insert(const bh__ranges *r, bh__range_stripe *s, bh__block *b) {
    b->rlink[0] = b->rlink[1] = 0;
    insertion in = {b, prio(r, b), NULL, NULL, NULL};
    bh__block *root = insert_at(r, s->root, &in);
    if (in.clash != NULL)
        return in.clash;
    s->root = root;
    b->ranged = 1;
    return NULL;
}

void bh__range_remove(const bh__ranges *r, bh__range_stripe *s, bh__block *b) {
    if (!b->ranged)
        return;
    /* Down to b, remembering the link it hangs from (the root: parent NULL). */
    uint32_t device = dev_of(b);
    uint64_t address = addr_of(b);
    bh__block *parent = NULL;
    int dir = 0;
    for (bh__block *t = s->root; t != b; t = child(r, t, dir)) {
        if (t == NULL)
            return; /* not in this stripe's index: nothing to do */
        parent = t;
        dir = key_less(dev_of(t), addr_of(t), device, address);
    }
    /* Merge b's two subtrees into its place, the higher priority on top:
     * iterative, and only links that change are written (no rotations). */
    bh__block *lo = child(r, b, 0), *hi = child(r, b, 1);
    for (;;) {
        bh__block *top = lo == NULL ? hi : hi == NULL ? lo : prio(r, lo) > prio(r, hi) ? lo : hi;
        if (parent == NULL)
            s->root = top;
        else
            set_child(parent, dir, top);
        if (lo == NULL || hi == NULL)
            break;
        parent = top;
        if (top == lo) { /* lo's right subtree merges with hi */
            dir = 1;
            lo = child(r, lo, 1);
        } else { /* lo merges with hi's left subtree */
            dir = 0;
            hi = child(r, hi, 0);
        }
    }
    b->rlink[0] = b->rlink[1] = 0;
    b->ranged = 0;
}
