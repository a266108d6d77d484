/*
 * range_lock.h - the range stripes' lock: a futex word, taken and let go
 * inline.
 *
 * Owns: the lock word's states and its uncontended paths (one
 * compare-and-swap to take it, one atomic decrement to let it go); the
 * waits and wakes are range_stripes.c's. What a stripe lock guards, and
 * the order stripe locks are taken in, are range_stripes.c's too.
 * Must never: spin (two cores shared with busy loops: a waiter sleeps in
 * the kernel at once), be taken recursively, or be used without telling
 * helgrind and drd (they cannot see a futex: under valgrind every take and
 * letting go is announced as a lock's, BH__LOCK_TAKEN and BH__LOCK_GIVING,
 * so they order its holders and helgrind checks the order it is taken in:
 * a table shard's (this lock too), then stripes', then the arenas' and the
 * slab's mutexes).
 *
 * Why not a pthread mutex: a churn takes two stripe lock pairs, and
 * glibc's cost 57 instructions a pair in calls (type checks, the owner
 * and count fields): 104 of the index's 728 per churn at 1K live
 * (callgrind, docs/benchmarks.md). The locked instructions are the same
 * here, one per take and one per letting go. Linux only, as the rest of
 * the library (futex(2)).
 */
#ifndef BH_RANGE_LOCK_H
#define BH_RANGE_LOCK_H

#include "atomics.h"

/* 0: free; 1: held, nobody waits; 2: held, someone may wait in the kernel
 * (Drepper, "Futexes are tricky", mutex 3). */
typedef struct bh__stripe_lock {
    volatile unsigned word; /* ATOMIC */
} bh__stripe_lock;

void bh__stripe_lock_init(bh__stripe_lock *l);
void bh__stripe_lock_fini(bh__stripe_lock *l);
/* range_stripes.c: a take that found the word held; the wake of a waiter. */
void bh__stripe_lock_wait(bh__stripe_lock *l, unsigned seen);
void bh__stripe_lock_wake(bh__stripe_lock *l);

static inline void bh__stripe_lock_take(bh__stripe_lock *l) {
    /* Acquire: pairs with the release decrement (or store) of the last
     * holder's letting go, so its changes to the stripe are seen. */
    unsigned seen = AO_int_fetch_compare_and_swap_acquire(&l->word, 0, 1);
    if (__builtin_expect(seen != 0, 0))
        bh__stripe_lock_wait(l, seen);
    BH__LOCK_TAKEN(l);
}

/* 1 if taken (never waits): the fork child's check that no parent thread
 * held the lock. */
static inline int bh__stripe_lock_try(bh__stripe_lock *l) {
    if (AO_int_fetch_compare_and_swap_acquire(&l->word, 0, 1) != 0) /* acquire: as in take */
        return 0;
    BH__LOCK_TAKEN(l);
    return 1;
}

static inline void bh__stripe_lock_give(bh__stripe_lock *l) {
    BH__LOCK_GIVING(l);
    /* Release: pairs with the acquire of the next take. 1 -> 0: nobody
     * waited. 2 -> 1: someone may sleep; the word goes to 0 and one waiter
     * is woken (range_stripes.c). */
    if (__builtin_expect(AO_int_fetch_and_sub1_release(&l->word) != 1, 0))
        bh__stripe_lock_wake(l);
}

#endif /* BH_RANGE_LOCK_H */
