/*
 * range_stripes.c - which range stripes hold a range, and taking their locks.
 *
 * Owns: the partition of every domain's range index by address. A domain's
 * address space is cut into regions of 2^region_shift bytes; each region
 * hashes, with the domain, to one of BH__RANGE_STRIPES stripes, and each
 * stripe keeps one tree per domain (range.c) holding every range that
 * touches one of its regions. A range inside one region (nearly all) is in
 * one stripe; a range that crosses regions is in the tree of each stripe
 * it touches, and one that spans more than SPAN_ALL regions in every
 * stripe. Two threads whose ranges lie in different regions then take
 * different stripe locks (unless the regions hash to one stripe: one
 * chance in BH__RANGE_STRIPES), where one lock per domain made every
 * creation and last release of a domain wait for each other.
 * Must never: take stripe locks out of ascending order (lock order: a table
 * shard, then stripes in ascending index, then the slab), let an overlap
 * check see one stripe's tree without the others a range touches, or give
 * one range two different stripe sets (the set is a function of device,
 * address and size alone, which are fixed while the block is indexed).
 *
 * Why exact: each stripe's tree holds a subset of the domain's ranges, so
 * they are disjoint and range.c's search (the greatest start below the
 * range's end) is exact within it. Two ranges that meet share an address,
 * whose region's stripe is in both sets; holding every stripe of a new
 * range, its check therefore meets any indexed range that it overlaps, in
 * that shared stripe's tree, and no overlapping insertion can run at the
 * same time (it needs that stripe too).
 */
#define _DEFAULT_SOURCE /* syscall() */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* ======================== The stripe lock ======================== */

/* The word's old value, v now in it. Acquire: as a take's (range_lock.h). */
static unsigned exchange_acquire(volatile unsigned *w, unsigned v) {
    unsigned old = AO_int_load(w); /* relaxed: a guess the swap checks */
    for (unsigned seen; (seen = AO_int_fetch_compare_and_swap_acquire(w, old, v)) != old;)
        old = seen;
    return old;
}

void bh__stripe_lock_init(bh__stripe_lock *l) {
    l->word = 0;
    /* helgrind and drd would see the word's atomics as races; the lock
     * annotations of range_lock.h order the holders. */
    BH__ATOMIC_RANGE(&l->word, sizeof(l->word));
    BH__LOCK_CREATED(l);
}

void bh__stripe_lock_fini(bh__stripe_lock *l) {
    BH__LOCK_DESTROYED(l);
    BH__ATOMIC_RANGE_END(&l->word, sizeof(l->word));
}

/* Held (seen 1 or 2): the word says 2 from here, so the holder's letting go
 * wakes someone, and the thread sleeps while it stays 2. A take after a
 * wake takes it as 2, not 1: others may still sleep (one wake, one taker). */
void bh__stripe_lock_wait(bh__stripe_lock *l, unsigned seen) {
    if (seen != 2)
        seen = exchange_acquire(&l->word, 2);
    while (seen != 0) {
        (void)syscall(SYS_futex, &l->word, FUTEX_WAIT_PRIVATE, 2u, NULL, NULL, 0);
        seen = exchange_acquire(&l->word, 2);
    }
}

/* The letting go found 2 (and left 1): free it, then wake one sleeper.
 * Release: pairs with the acquire of the next take, as the decrement. */
void bh__stripe_lock_wake(bh__stripe_lock *l) {
    AO_int_store_release(&l->word, 0);
    (void)syscall(SYS_futex, &l->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

int bh__ranges_unlocked(bh__ranges *r) {
    unsigned got = 0;
    while (got < BH__RANGE_STRIPES && bh__stripe_lock_try(&r->stripes[got].lock))
        got++;
    for (unsigned i = 0; i < got; i++)
        bh__stripe_lock_give(&r->stripes[i].lock);
    return got == BH__RANGE_STRIPES;
}

/* ======================== Stripes of a range ======================== */

/* A range spanning more regions than this is in every stripe: the loop
 * below stays bounded, and such a range's set would be (nearly) full
 * anyway. */
#define SPAN_ALL (4u * BH__RANGE_STRIPES)
#define ALL_STRIPES ((bh__stripe_set)((1ull << BH__RANGE_STRIPES) - 1))
_Static_assert(BH__RANGE_STRIPES <= 32 && (BH__RANGE_STRIPES & (BH__RANGE_STRIPES - 1)) == 0,
               "a stripe set is a 32-bit mask of a power of two stripes");
_Static_assert(BH__RANGE_STRIPES == 1 << BH__RANGE_STRIPE_BITS, "bh__region_stripe takes that many bits");

/* The lowest stripe of a non-empty set: the loops below walk a set from its
 * lowest bit up, the locks' order. */
static inline bh__range_stripe *first_stripe(bh__ranges *r, bh__stripe_set set) {
    return &r->stripes[__builtin_ctz(set)];
}

bh__range_stripe *bh__range_stripe_of(bh__ranges *r, uint32_t device, uint64_t address) {
    return &r->stripes[bh__region_stripe(device, address >> r->region_shift)];
}

bh__stripe_set bh__range_stripes_crossing(const bh__ranges *r, uint32_t device, uint64_t address,
                                          uint64_t size) {
    uint64_t region = address >> r->region_shift;
    uint64_t last = (address + (size - 1)) >> r->region_shift; /* ranges end at or below 2^64 */
    if (last - region >= SPAN_ALL)
        return ALL_STRIPES;
    bh__stripe_set set = 0;
    for (;; region++) {
        set |= (bh__stripe_set)1 << bh__region_stripe(device, region);
        if (region == last)
            return set;
    }
}

bh__stripe_set bh__ranges_stripes_of(const bh__ranges *r, const bh__block *b) {
    /* Relaxed: an indexed block's key and size were published before it was
     * indexed and do not change until it has left the index, which takes
     * one of the stripe locks the caller holds. */
    return bh__range_stripes(r, bh__block_device(b), (uint64_t)AO_load(&b->address),
                             (uint64_t)AO_load(&b->size));
}

/* Of the blocks each stripe's search found, the one with the greatest
 * start: what one tree of the whole domain would have answered (that range
 * is the greatest start of every stripe it shares with the query). */
static bh__block *later(bh__block *a, bh__block *b) {
    if (a == NULL)
        return b;
    if (b == NULL)
        return a;
    return (uint64_t)AO_load(&b->address) > (uint64_t)AO_load(&a->address) ? b : a; /* relaxed: as above */
}

bh__block *bh__ranges_overlap(bh__ranges *r, uint32_t device, uint64_t address, uint64_t size) {
    bh__block *found = NULL;
    for (bh__stripe_set set = bh__range_stripes(r, device, address, size); set != 0; set &= set - 1)
        found = later(found, bh__range_overlap(r, first_stripe(r, set), device, address, size));
    return found;
}

bh__block *bh__ranges_containing(bh__ranges *r, uint32_t device, uint64_t address) {
    return bh__range_containing(r, bh__range_stripe_of(r, device, address), device, address);
}

/* Several stripes (one: bh__ranges_insert, inline). */
bh__block *bh__ranges_insert_crossing(bh__ranges *r, bh__block *b, bh__stripe_set set, bh_status *st) {
    uint32_t device = bh__block_device(b);
    uint64_t address = (uint64_t)AO_load(&b->address), size = (uint64_t)AO_load(&b->size); /* relaxed: ours */
    /* Several: check them all before changing any, so that a range that
     * meets something is in none of them. */
    bh__block *o = bh__ranges_overlap(r, device, address, size);
    *st = BH_OK;
    if (o != NULL)
        return o;
    for (bh__stripe_set left = set; left != 0; left &= left - 1) {
        (void)bh__range_insert(r, first_stripe(r, left), b, st); /* NULL: checked above */
        if (*st != BH_OK) {
            /* Host memory: out of the stripes it went into, as if never in. */
            for (bh__stripe_set done = set & ~left; done != 0; done &= done - 1)
                bh__range_remove(r, first_stripe(r, done), b);
            return NULL;
        }
    }
    return NULL;
}

void bh__ranges_set_region_shift(bh__ranges *r, uint32_t shift) { r->region_shift = shift < 63 ? shift : 63; }
