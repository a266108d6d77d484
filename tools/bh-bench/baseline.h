/*
 * baseline.h - the hand-written alternatives bh-bench measures bufhandle against.
 *
 * Owns: the baselines' data structures. Each is the obvious, correct way a
 * runtime would write the same thing by hand, tuned as well as such code
 * usually is (a good hash, load factor <= 1/2, no tombstones), so a speedup
 * over it means something.
 * Must never: call into bufhandle, or cut a corner bufhandle cannot cut
 * (every baseline keeps a reference count per key and forgets the key when
 * it drops to zero).
 */
#ifndef BH_BENCH_BASELINE_H
#define BH_BENCH_BASELINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* The floor of a reference-counted handle: one shared counter, an increment
 * and a decrement. Out of line, like a call into the library. */
typedef struct base_counter {
    uint64_t word;
} base_counter;
/* Get-unless-zero increment and release decrement, each a CAS loop. */
void base_cas_pair(base_counter *c);
/* Plain lock xadd increment and decrement. */
void base_xadd_pair(base_counter *c);

/* Global mutex + open-addressing hash (linear probing, backward-shift
 * deletion) of (device, address) -> refs, 16 bytes an entry. */
typedef struct base_hash base_hash;
base_hash *base_hash_create(size_t expect);
void base_hash_destroy(base_hash *m);
/* Takes a reference, creating the entry if absent. */
void base_hash_intern(base_hash *m, uint32_t device, uint64_t address);
/* Takes a reference if the entry exists; returns 1 if it did. */
int base_hash_lookup(base_hash *m, uint32_t device, uint64_t address);
/* Drops a reference; the last one removes the entry. */
void base_hash_release(base_hash *m, uint32_t device, uint64_t address);

/* Global mutex + tsearch(3) binary tree of malloc'ed entries. A reference
 * is the entry pointer. */
typedef struct base_tree base_tree;
base_tree *base_tree_create(void);
void base_tree_destroy(base_tree *t);
void *base_tree_intern(base_tree *t, uint32_t device, uint64_t address);
void *base_tree_lookup(base_tree *t, uint32_t device, uint64_t address); /* NULL: absent */
void base_tree_release(base_tree *t, void *entry);

#endif /* BH_BENCH_BASELINE_H */
