/*
 * test_range_index.c - white-box tests of what the range index
 * (src/core/range.c) answers: every insertion, containing and overlap query
 * against a brute-force scan while random ranges come and go (starts close
 * together, and 2^32 and more apart), the edges of the address space, the
 * size classes at every power of two, a tree grown to five levels and shrunk
 * to none, and overlapping interns racing on different shards (one owner).
 *
 * After every change the trees are checked whole against the fixture's
 * reference (support/range_fixture.h). Must never depend on the index's own
 * answers for the truth, nor on timing (the race is counted per round).
 * How the index uses host memory: test_range_nodes.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <cmocka.h>

#include "core/internal.h"
#include "support/range_fixture.h"

#define BASE 0x40000000ull

/* Random ranges on three domains of one stripe, inserted and removed in
 * random order with narrow nodes (several levels from a few hundred
 * ranges): the tree stays a valid B+tree holding exactly the reference's
 * ranges, and every insert, containing and overlap answer agrees with a
 * brute-force scan. Starts are region_start(rng) + up to region bytes;
 * queries range over the same. */
static void agree_with_brute_force(uint64_t seed, int far, uint64_t (*region_start)(uint64_t *rng),
                                   uint64_t region) {
    enum { N = 240, QUERIES = 8 };
    range_fixture f;
    range_fixture_init(&f, N, 8, 4);
    f.far = far;
    uint64_t rng = seed;
    uint32_t height = 0;
    for (int step = 0; step < 3000; step++) {
        int i = (int)(range_lcg(&rng) % N);
        if (f.in[i]) {
            bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
            f.in[i] = 0;
        } else {
            uint32_t dev = (uint32_t)(range_lcg(&rng) % 3);
            uint64_t a = region_start(&rng) + range_lcg(&rng) % region;
            range_insert_checked(&f, i, dev, a, 1 + range_lcg(&rng) % 8192);
        }
        uint32_t h = range_check_index(&f, NULL);
        height = h > height ? h : height;
        for (int q = 0; q < QUERIES; q++) {
            uint32_t qdev = (uint32_t)(range_lcg(&rng) % 4);
            uint64_t qa = region_start(&rng) - 8192 + range_lcg(&rng) % (region + 16384);
            const bh__block *c = bh__range_containing(&f.ranges, f.rs, qdev, qa);
            assert_int_equal(c != NULL, range_brute_overlaps(&f, qdev, qa, 1));
            if (c != NULL)
                assert_true(range_brute_meets(&f, f.of_slot[bh__block_slot(c)], qdev, qa, 1));
            assert_ptr_equal(bh__range_overlap(&f.ranges, f.rs, qdev, qa, 1), c);
            uint64_t wsize = 1 + range_lcg(&rng) % 20000;
            const bh__block *o = bh__range_overlap(&f.ranges, f.rs, qdev, qa, wsize);
            assert_int_equal(o != NULL, range_brute_overlaps(&f, qdev, qa, wsize));
            if (o != NULL)
                assert_true(range_brute_meets(&f, f.of_slot[bh__block_slot(o)], qdev, qa, wsize));
        }
    }
    assert_true(height >= 2);
    range_fixture_fini(&f);
}

static uint64_t one_region(uint64_t *rng) {
    (void)rng;
    return 0x100000ull;
}

static void range_index_agrees_with_a_brute_force_scan(void **state) {
    (void)state;
    agree_with_brute_force(42, 0, one_region, 240 / 3 * 8192);
}

/* Five clusters of starts 2^32 and more apart (one a little below 2^64 -
 * 2^20, so ranges end near 2^64): a leaf's starts are 32-bit offsets from
 * its base, so starts of two clusters never share a leaf, and a new start
 * that a leaf cannot take goes into a leaf of its own at either end. */
static uint64_t far_region(uint64_t *rng) {
    static const uint64_t at[] = {0x10000, 0x100000000ull, 0x200001000ull, 0x7f0000000000ull,
                                  UINT64_MAX - (1u << 20)};
    return at[range_lcg(rng) % 5];
}

static void far_apart_starts_take_leaves_of_their_own(void **state) {
    (void)state;
    agree_with_brute_force(43, 1, far_region, 1u << 19);
    agree_with_brute_force(44, 1, far_region, 1u << 19);
}

/* One domain grown to a few thousand ranges and shrunk to none, twice, with
 * narrow nodes: splits up to five or more levels, then borrowing, merging
 * and root collapses all the way down; the tree is checked as it goes and
 * is gone (host memory and all) when its last range leaves. */
static void range_index_grows_and_shrinks_through_every_level(void **state) {
    (void)state;
    enum { N = 3000 };
    range_fixture f;
    range_fixture_init(&f, N, 8, 4);
    uint64_t rng = 7;
    uint32_t height = 0;
    for (int round = 0; round < 2; round++) {
        int live = 0;
        for (int step = 0; live > 0 || step < N; step++) {
            int i = (int)(range_lcg(&rng) % N);
            /* Grow while step < N (3 inserts to 1 removal), then shrink. */
            int grow = step < N ? range_lcg(&rng) % 4 != 0 : 0;
            if (f.in[i] && !grow) {
                bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
                f.in[i] = 0;
                live--;
            } else if (!f.in[i] && grow) {
                /* Block i's own 4 KiB cell: never a clash. */
                uint64_t off = range_lcg(&rng) % 4096;
                range_insert_checked(&f, i, 5, 0x10000000ull + (uint64_t)i * 4096 + off,
                                     1 + range_lcg(&rng) % (4096 - off));
                live++;
            }
            if (step % 64 == 0) {
                uint32_t h = range_check_index(&f, NULL);
                height = h > height ? h : height;
            }
        }
        range_check_index(&f, NULL);
        assert_null(f.rs->trees);
    }
    assert_true(height >= 4);
    range_fixture_fini(&f);
}

/* Queries and insertions at the edges: a range ending at 2^64, one of a
 * single byte at 0, one covering all of [1, 2^64), adjacent ranges, and the
 * removal of a block that is not the indexed owner of its start. */
static void range_index_answers_at_range_edges(void **state) {
    (void)state;
    range_fixture f;
    range_fixture_init(&f, 16, BH__RANGE_LEAF_CAP, BH__RANGE_INNER_CAP);
    f.far = 1; /* 0 and 2^64 - 4096 share no leaf */
    bh__ranges *r = &f.ranges;
    bh__range_stripe *s = f.rs;
    bh__block **b = f.blocks;
    range_insert_checked(&f, 0, 7, UINT64_MAX - 4095, 4096); /* ends at 2^64 */
    assert_true(f.in[0]);
    assert_ptr_equal(bh__range_containing(r, s, 7, UINT64_MAX), b[0]);
    assert_ptr_equal(bh__range_containing(r, s, 7, UINT64_MAX - 4095), b[0]);
    assert_null(bh__range_containing(r, s, 7, UINT64_MAX - 4096));
    assert_ptr_equal(bh__range_overlap(r, s, 7, UINT64_MAX - 8191, 4097), b[0]);
    assert_null(bh__range_overlap(r, s, 7, UINT64_MAX - 8191, 4096));
    range_insert_checked(&f, 1, 7, UINT64_MAX - 8191, 4097); /* meets it by one byte */
    assert_false(f.in[1]);
    range_insert_checked(&f, 1, 7, UINT64_MAX - 4095 + 100, 1); /* inside it */
    assert_false(f.in[1]);
    range_insert_checked(&f, 1, 7, UINT64_MAX - 8191, 4096); /* adjacent below */
    assert_true(f.in[1]);
    assert_ptr_equal(bh__range_containing(r, s, 7, UINT64_MAX - 4096), b[1]);
    assert_ptr_equal(bh__range_overlap(r, s, 7, UINT64_MAX - 4096, 2), b[0]); /* the greater start */

    range_insert_checked(&f, 2, 7, 0, 1); /* one byte at 0 */
    assert_true(f.in[2]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 0), b[2]);
    assert_null(bh__range_containing(r, s, 7, 1));
    range_insert_checked(&f, 3, 7, 1, 1); /* adjacent above */
    assert_true(f.in[3]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 1), b[3]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 0), b[2]);
    range_insert_checked(&f, 4, 7, 0, 2);
    assert_false(f.in[4]);

    range_insert_checked(&f, 5, 8, 1, UINT64_MAX); /* [1, 2^64): everything but 0 */
    assert_true(f.in[5]);
    assert_ptr_equal(bh__range_containing(r, s, 8, 1), b[5]);
    assert_ptr_equal(bh__range_containing(r, s, 8, UINT64_MAX), b[5]);
    assert_null(bh__range_containing(r, s, 8, 0));
    range_insert_checked(&f, 6, 8, 5, 1);
    assert_false(f.in[6]);
    range_insert_checked(&f, 6, 8, 0, 1);
    assert_true(f.in[6]);
    assert_null(bh__range_containing(r, s, 9, 5)); /* another domain */
    range_check_index(&f, NULL);

    /* A block with an indexed block's start but not indexed itself (a
     * takeover took it out and another block has its start now): its
     * removal must leave the indexed one alone. */
    range_set_key(b[7], 7, 0, 1);
    bh__range_remove(r, s, b[7]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 0), b[2]);
    range_set_key(b[7], 7, 50, 1); /* a start nothing has */
    bh__range_remove(r, s, b[7]);
    range_check_index(&f, NULL);
    range_fixture_fini(&f);
}

/* The size class in a leaf entry (the least e with size <= 2^e) decides
 * most overlap checks without the candidate's block: at every power of two
 * and one either side of it, a range right after the candidate is free and
 * one a byte earlier meets it, whether the class or the block decides. */
static void size_classes_decide_at_their_edges(void **state) {
    (void)state;
    range_fixture f;
    range_fixture_init(&f, 4, BH__RANGE_LEAF_CAP, BH__RANGE_INNER_CAP);
    f.far = 1;
    bh__ranges *r = &f.ranges;
    const uint64_t at = 0x1000;
    for (uint32_t k = 0; k < 64; k++) {
        for (int d = -1; d <= 1; d++) {
            uint64_t size = ((uint64_t)1 << k) + (uint64_t)(int64_t)d;
            if (size == 0 || size > UINT64_MAX - at - 2)
                continue;
            range_insert_checked(&f, 0, 3, at, size);
            assert_true(f.in[0]);
            uint64_t end = at + size;
            assert_ptr_equal(bh__range_containing(r, f.rs, 3, end - 1), f.blocks[0]);
            assert_null(bh__range_containing(r, f.rs, 3, end));
            range_insert_checked(&f, 1, 3, end - 1, 2); /* its last byte */
            assert_false(f.in[1]);
            range_insert_checked(&f, 1, 3, end, 2); /* right after it */
            assert_true(f.in[1]);
            range_check_index(&f, NULL);
            for (int i = 0; i < 2; i++) {
                bh__range_remove(r, f.rs, f.blocks[i]);
                f.in[i] = 0;
            }
            assert_null(f.rs->trees);
        }
    }
    /* Above 2^63 (class 64): the block decides. */
    range_insert_checked(&f, 0, 3, 1, ((uint64_t)1 << 63) + 5);
    range_insert_checked(&f, 1, 3, ((uint64_t)1 << 63) + 5, 1);
    assert_false(f.in[1]);
    range_insert_checked(&f, 1, 3, ((uint64_t)1 << 63) + 6, 1);
    assert_true(f.in[1]);
    range_check_index(&f, NULL);
    range_fixture_fini(&f);
}

/* Overlapping keys interned at once by several threads, keys that hash to
 * different table shards: the overlap check and the insertion must be one
 * step, so exactly one of them becomes the owner in every round. */
enum { RACERS = 4, RACE_ROUNDS = 100 };

typedef struct race {
    bh_registry *reg;
    pthread_barrier_t *start;
    int t;
    bh_status st[RACE_ROUNDS];
    bh_handle h[RACE_ROUNDS];
} race;

static uint64_t race_key(int round, int t) { return BASE + (uint64_t)round * 0x100000 + (uint64_t)t * 64; }

static void *racer(void *arg) {
    race *r = arg;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(r->start);
        r->st[round] = bh_intern(r->reg, 5, race_key(round, r->t), 4096, &r->h[round]);
    }
    return NULL;
}

static void overlapping_interns_racing_on_different_shards_make_one_owner(void **state) {
    (void)state;
    bh_config cfg = {.flags = BH_CONFIG_NO_ENV};
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    static race r[RACERS];
    pthread_t tid[RACERS];
    unsigned shards_seen = 0;
    for (int t = 0; t < RACERS; t++) {
        r[t] = (race){.reg = reg, .start = &start, .t = t};
        shards_seen |= 1u << (bh__shard_of(bh__key_hash(5, race_key(0, t))) % 32);
    }
    assert_true(__builtin_popcount(shards_seen) >= 2); /* the keys do not share one shard lock */
    for (int t = 0; t < RACERS; t++)
        assert_int_equal(pthread_create(&tid[t], NULL, racer, &r[t]), 0);
    for (int t = 0; t < RACERS; t++)
        pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&start);
    for (int round = 0; round < RACE_ROUNDS; round++) {
        int owners = 0;
        for (int t = 0; t < RACERS; t++) {
            if (r[t].st[round] == BH_OK) {
                owners++;
                assert_int_equal(bh_release(reg, r[t].h[round]), BH_OK);
            } else {
                assert_int_equal(r[t].st[round], BH_EOVERLAP);
            }
        }
        assert_int_equal(owners, 1);
    }
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.interns_new, RACE_ROUNDS);
    assert_int_equal(s.overlaps, RACE_ROUNDS * (RACERS - 1));
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(range_index_agrees_with_a_brute_force_scan),
        cmocka_unit_test(far_apart_starts_take_leaves_of_their_own),
        cmocka_unit_test(size_classes_decide_at_their_edges),
        cmocka_unit_test(range_index_grows_and_shrinks_through_every_level),
        cmocka_unit_test(range_index_answers_at_range_edges),
        cmocka_unit_test(overlapping_interns_racing_on_different_shards_make_one_owner),
    };
    return cmocka_run_group_tests_name("range_index", tests, NULL, NULL);
}
