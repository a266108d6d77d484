/*
 * range_fixture.h - what the white-box tests of the range index
 * (src/core/range.c) share: a stripe of the index over blocks fresh from a
 * slab of its own, a reference of which blocks are indexed, and a full check
 * of every tree against that reference after any change.
 *
 * Owns: the fixture, the tree check, the brute-force overlap scan and the
 * checked insertions. Must never: hide a failure (every check asserts,
 * through cmocka, in the calling test), or trust the index for what it
 * checks (the reference and the brute-force scan are the truth).
 */
#ifndef BH_TEST_RANGE_FIXTURE_H
#define BH_TEST_RANGE_FIXTURE_H

#include <stdint.h>

#include "core/internal.h"

/* A test's blocks: fresh from a slab of their own, so slot s is index
 * of_slot[s] of blocks[]. */
typedef struct range_fixture {
    bh__slab slab;
    bh__ranges ranges;
    bh__range_stripe *rs;
    int n;
    bh__block **blocks;
    int *of_slot;
    int *in; /* reference: 1 while blocks[i] is indexed */
    int far; /* starts 2^32 or more apart: leaves may hold fewer than a quarter */
} range_fixture;

/* n blocks, nodes of at most leaf_max entries and inner_max separators,
 * arenas of one to ten nodes (trees of a few hundred nodes then cross many
 * arena boundaries, and node allocations can fail at many points). */
void range_fixture_init(range_fixture *f, int n, uint32_t leaf_max, uint32_t inner_max);
void range_fixture_fini(range_fixture *f);

/* The tests' random numbers: a 64-bit LCG's high bits. */
uint64_t range_lcg(uint64_t *rng);
/* Gives block b the key (dev, address) and size. */
void range_set_key(bh__block *b, uint32_t dev, uint64_t address, uint64_t size);

/* Checks every tree of the fixture's stripe against the reference: one tree
 * per domain with indexed ranges, none for an empty one; sorted starts,
 * separators equal to the smallest start right of them, every leaf at the
 * tree's height, fill bounds, size classes. Returns the greatest height;
 * *leaves (if not NULL) gets the number of leaves. */
uint32_t range_check_index(const range_fixture *f, long *leaves);

/* Whether blocks[k] is indexed and meets [a, a + size) in dev. */
int range_brute_meets(const range_fixture *f, int k, uint32_t dev, uint64_t a, uint64_t size);
/* Whether any indexed block meets [a, a + size) in dev. */
int range_brute_overlaps(const range_fixture *f, uint32_t dev, uint64_t a, uint64_t size);

/* Inserts blocks[i] as [a, a + size) in dev, expecting what a brute-force
 * scan says: indexed, or refused with a block it meets and nothing changed. */
void range_insert_checked(range_fixture *f, int i, uint32_t dev, uint64_t a, uint64_t size);
/* Inserts block i as the 4 KiB cell i of domain 4, which nothing else can
 * meet (no brute-force scan: cheap enough for thousands of ranges under
 * valgrind). */
void range_insert_own_cell(range_fixture *f, int i);

#endif
