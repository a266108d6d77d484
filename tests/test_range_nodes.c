/*
 * test_range_nodes.c - white-box tests of the range index's nodes and their
 * host memory (src/core/range.c, range_leaf.c, range_pool.c): appended
 * ranges leave full leaves, random churn keeps leaves three quarters full,
 * freed nodes are reused before any new arena, and a node that cannot be
 * had (every host allocation of an insertion sequence failing in turn, and
 * under bh_intern) is BH_ENOMEM with the index unchanged.
 *
 * After every change the trees are checked whole against the fixture's
 * reference (support/range_fixture.h). Must never depend on the machine's
 * memory running out (failures are injected through the host memory hook).
 * What the index answers: test_range_index.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"
#include "support/range_fixture.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

/* An allocator bumping addresses appends at the tree's end: every leaf but
 * the last is left full (not half-empty, as plain halving splits would),
 * which is what keeps the index near 12 host bytes per range. */
static void appended_ranges_leave_full_leaves(void **state) {
    (void)state;
    /* More leaves than one inner node holds: FULL full ones and one holding
     * the last range. */
    enum { FULL = BH__RANGE_INNER_CAP + 9, N = BH__RANGE_LEAF_CAP * FULL + 1 };
    range_fixture f;
    range_fixture_init(&f, N, BH__RANGE_LEAF_CAP, BH__RANGE_INNER_CAP);
    for (int i = 0; i < N; i++)
        range_insert_checked(&f, i, 2, 0x40000000ull + (uint64_t)i * 256, 256);
    long leaves;
    assert_int_equal(range_check_index(&f, &leaves), 2);
    assert_int_equal(leaves, FULL + 1);
    /* Removing every range in random order frees every node. */
    uint64_t rng = 3;
    for (int left = N; left > 0;) {
        int i = (int)(range_lcg(&rng) % N);
        if (!f.in[i])
            continue;
        bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
        f.in[i] = 0;
        left--;
        if (left % 97 == 0)
            range_check_index(&f, NULL);
    }
    assert_null(f.rs->trees);
    range_fixture_fini(&f); /* memcheck: no node left behind */
}

/* Random churn (a live range leaves, a random free address comes in) at
 * the default fan-out: full leaves pass entries to a sibling with room
 * before they split, so leaves stay about three quarters full (plain
 * splits settle near half: twice the host memory per range). */

static void random_churn_keeps_leaves_three_quarters_full(void **state) {
    (void)state;
    enum { N = 8000 };
    range_fixture f;
    range_fixture_init(&f, N, BH__RANGE_LEAF_CAP, BH__RANGE_INNER_CAP);
    long live = 0;
    for (int i = 0; i < N; i += 2, live++)
        range_insert_own_cell(&f, i);
    range_check_index(&f, NULL);
    uint64_t rng = 11;
    for (int op = 0; op < 4 * N; op++) {
        int i = (int)(range_lcg(&rng) % N), j;
        if (!f.in[i])
            continue;
        bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
        f.in[i] = 0;
        do
            j = (int)(range_lcg(&rng) % N);
        while (f.in[j]);
        range_insert_own_cell(&f, j);
    }
    long leaves;
    range_check_index(&f, &leaves);
    /* 0.73 measured; 0.52 without passing to siblings */
    assert_true(live * 100 >= leaves * BH__RANGE_LEAF_CAP * 65);
    range_fixture_fini(&f);
}

/* Nodes that removals freed are what later insertions get: a domain grown
 * to a few thousand ranges and shrunk to none, three times the same way,
 * needs no arena after the first time (no round has more nodes at once than
 * the first had at its peak, and the free lists hold them all). */
static void freed_index_nodes_are_reused_before_any_new_arena(void **state) {
    (void)state;
    enum { N = 3000 };
    range_fixture f;
    range_fixture_init(&f, N, 8, 4);
    uint32_t leaf_arenas = 0, inner_arenas = 0;
    for (int round = 0; round < 3; round++) {
        uint64_t rng = 5; /* every round the same operations */
        int live = 0;
        for (int step = 0; live > 0 || step < N; step++) {
            int i = (int)(range_lcg(&rng) % N);
            int grow = step < N ? range_lcg(&rng) % 4 != 0 : 0; /* 3 inserts to 1 removal, then shrink */
            if (f.in[i] && !grow) {
                bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
                f.in[i] = 0;
                live--;
            } else if (!f.in[i] && grow) {
                range_insert_own_cell(&f, i);
                live++;
            }
        }
        range_check_index(&f, NULL);
        assert_null(f.rs->trees);
#if BH__ASAN
        /* A freed node is off limits to ASan beyond its free-list link, as a
         * freed malloc block would be (the arena hides it otherwise). */
        assert_non_null(f.rs->leaves.free);
        assert_false(__asan_address_is_poisoned(f.rs->leaves.free));
        assert_true(__asan_address_is_poisoned((char *)f.rs->leaves.free + sizeof(void *)));
#endif
        if (round == 0) {
            leaf_arenas = f.rs->leaves.count;
            inner_arenas = f.rs->inners.count;
            assert_true(leaf_arenas > 10 && inner_arenas > 10); /* the arenas were small */
        } else {
            assert_int_equal(f.rs->leaves.count, leaf_arenas);
            assert_int_equal(f.rs->inners.count, inner_arenas);
        }
    }
    range_fixture_fini(&f);
}

/* The k-th host allocation failing, for every k an insertion sequence makes
 * (first leaves, leaf splits, inner splits, new roots, new domains): that
 * one insertion answers BH_ENOMEM and changes nothing, the tree stays valid
 * and holds every other range. */
static void a_failed_node_allocation_leaves_the_index_unchanged(void **state) {
    (void)state;
    enum { N = 150 };
    long total = 0;
    for (long k = 0; k == 0 || k <= total; k++) {
        range_fixture f;
        range_fixture_init(&f, N, 8, 4);
        bh__ranges_set_arenas(&f.ranges, 0, 0); /* one node each: every node is an arena refill */
        long before = bh__hostmem_attempts();
        bh__hostmem_fail_at(k);
        int failed = 0;
        for (int i = 0; i < N; i++) {
            uint32_t dev = (uint32_t)(i % 2) * 9;
            /* Mostly appends, every third one into the middle. */
            uint64_t a = 0x1000000ull + (uint64_t)(i % 3 == 2 ? N - i : N + i) * 8192;
            bh_status st = BH_EINVAL;
            range_set_key(f.blocks[i], dev, a, 4096);
            assert_null(bh__range_insert(&f.ranges, f.rs, f.blocks[i], &st));
            if (st == BH_ENOMEM) {
                failed++;
            } else {
                assert_int_equal(st, BH_OK);
                f.in[i] = 1;
            }
            if (i % 10 == 0 || st == BH_ENOMEM)
                range_check_index(&f, NULL);
        }
        bh__hostmem_fail_at(0);
        if (k == 0)
            total = bh__hostmem_attempts() - before;
        assert_int_equal(failed, k == 0 ? 0 : 1);
        range_check_index(&f, NULL);
        range_fixture_fini(&f);
    }
    assert_true(total > 20); /* the sequence did split nodes at several levels */
}

/* No host memory for an index node while bh_intern creates a block: the
 * call is BH_ENOMEM, the range stays unindexed and free, and the next try
 * indexes it. Failed at every allocation of forty interns into one domain
 * (the first leaf, a slab chunk, a leaf split with a new root). */
static void an_index_node_that_cannot_be_had_is_enomem(void **state) {
    (void)state;
    enum { N = BH__RANGE_LEAF_CAP + 8 };
    bh_registry *reg;
    assert_int_equal(bh_registry_create(NULL, &reg), BH_OK);
    /* Arenas of a few nodes, taken a node at a time: each new node may be
     * the allocation that fails (default chunks hold 64 leaves). */
    bh__ranges_set_arenas(&reg->ranges, 0, 4096);
    bh_handle h[N];
    int enomem = 0;
    for (int j = 0; j < N; j++) {
        uint64_t a = BASE + (uint64_t)j * ALIGN;
        bh_status st;
        for (long k = 1;; k++) {
            bh__hostmem_fail_at(k);
            st = bh_intern(reg, 3, a, ALIGN, &h[j]);
            bh__hostmem_fail_at(0);
            if (st == BH_OK)
                break;
            assert_int_equal(st, BH_ENOMEM);
            enomem++;
            bh_handle x;
            assert_int_equal(bh_lookup_containing(reg, 3, a + 8, &x), BH_ENOTFOUND);
            bh_stats s;
            assert_int_equal(bh_stats_get(reg, &s), BH_OK);
            assert_int_equal(s.live_handles, (uint64_t)j);
        }
        bh_handle x;
        assert_int_equal(bh_intern(reg, 3, a + 8, 8, &x), BH_EOVERLAP); /* indexed */
    }
    assert_true(enomem >= 4); /* first leaf and tree, split leaf and new root */
    for (int j = 0; j < N; j++)
        assert_int_equal(bh_release(reg, h[j]), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(appended_ranges_leave_full_leaves),
        cmocka_unit_test(random_churn_keeps_leaves_three_quarters_full),
        cmocka_unit_test(freed_index_nodes_are_reused_before_any_new_arena),
        cmocka_unit_test(a_failed_node_allocation_leaves_the_index_unchanged),
        cmocka_unit_test(an_index_node_that_cannot_be_had_is_enomem),
    };
    return cmocka_run_group_tests_name("range_nodes", tests, NULL, NULL);
}
