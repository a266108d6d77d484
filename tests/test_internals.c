/*
 * test_internals.c - white-box tests of the slab, the range index, and the
 * error paths that need a test hook to reach (host memory failure, reference
 * overflow, generation wrap). The hash and the table: test_table.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/internal.h"
#include "support/fixed_alloc.h"
#include "support/checker.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

/* ------------------------------------------------------------ slab */

static void slab_slots_map_to_distinct_stable_blocks(void **state) {
    (void)state;
    bh__slab slab;
    bh__slab_init(&slab);
    assert_null(bh__slab_at(&slab, 1));
    enum { N = 5000 };
    static bh__block *seen[N + 1];
    uint32_t total = 0;
    while (total < N) {
        bh__block *head;
        uint32_t got = bh__slab_take_fresh(&slab, 100, &head);
        assert_true(got > 0);
        for (bh__block *b = head; b != NULL; b = bh__block_next_free(b)) {
            uint32_t slot = bh__block_slot(b);
            /* Slot 0 and the rest of its pair of lines are never handed out. */
            assert_true(slot >= BH__BLOCKS_PER_PAIR && slot <= N + 100);
            assert_ptr_equal(bh__slab_at(&slab, slot), b);
            /* No block spans two cache lines (one miss per block). */
            assert_int_equal((uintptr_t)b % sizeof(bh__block), 0);
            /* Consecutive fresh blocks never share a line, nor a pair of
             * lines (the adjacent-line prefetcher's unit). */
            const bh__block *next = bh__block_next_free(b);
            if (next != NULL)
                assert_int_not_equal((uintptr_t)b / (2 * BH__CACHE_LINE),
                                     (uintptr_t)next / (2 * BH__CACHE_LINE));
            if (slot <= N) {
                assert_null(seen[slot]);
                seen[slot] = b;
            }
            total++;
        }
    }
    /* Earlier blocks did not move while later chunks were added. */
    for (uint32_t s = BH__BLOCKS_PER_PAIR; s <= N; s++)
        assert_ptr_equal(bh__slab_at(&slab, s), seen[s]);
    /* Every slot of every chunk so far decodes (the directory holds a base,
     * not the chunk's address) to a block inside that chunk's allocation,
     * and a chunk's blocks are consecutive. */
    for (uint32_t c = 0; c < BH__SLAB_CHUNKS && slab.raw[c] != NULL; c++) {
        uint32_t first = bh__slab_chunk_first(c), n = BH__SLAB_BASE << c;
        const char *lo = slab.raw[c], *hi = lo + (size_t)n * sizeof(bh__block) + 2 * BH__CACHE_LINE;
        for (uint32_t s = c == 0 ? 1 : first; s < first + n; s++) {
            const bh__block *b = bh__slab_at(&slab, s);
            assert_non_null(b);
            assert_true((const char *)b >= lo && (const char *)(b + 1) <= hi);
            if (s > first)
                assert_ptr_equal(b, bh__slab_at(&slab, s - 1) + 1);
        }
    }
    /* Slots far beyond anything handed out have no memory, nor do the first
     * and last slots of the first chunk not made yet. */
    assert_null(bh__slab_at(&slab, BH__SLOT_MASK));
    uint32_t absent = bh__slab_chunk_of(slab.next_fresh - 1) + 1;
    assert_null(bh__slab_at(&slab, bh__slab_chunk_first(absent)));
    assert_null(bh__slab_at(&slab, bh__slab_chunk_first(absent + 1) - 1));
    bh__slab_fini(&slab);
}

static void slab_reports_host_memory_exhaustion(void **state) {
    (void)state;
    bh__slab slab;
    bh__slab_init(&slab);
    bh__hostmem_fail_at(1);
    bh__block *head;
    assert_int_equal(bh__slab_take_fresh(&slab, 4, &head), 0);
    assert_null(head);
    assert_int_equal(bh__slab_take_fresh(&slab, 4, &head), 4);
    bh__slab_fini(&slab);
}

/* The VmFlags line of the mapping that contains p, from /proc/self/smaps
 * (empty if not found). */
static void vm_flags_of(const void *p, char *out, size_t len) {
    out[0] = '\0';
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL)
        return;
    char line[512];
    int inside = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, len, "%s", line);
            break;
        }
    }
    fclose(f);
}

/* Chunks of 2 MiB and more are touched at random: the slab asks for
 * transparent huge pages over their aligned part (one TLB entry per 2 MiB).
 * The kernel marks advised mappings "hg" in smaps; without THP support the
 * advice cannot be given, and there is nothing to check. */
static void large_slab_chunks_are_advised_to_use_huge_pages(void **state) {
    (void)state;
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK) != 0)
        skip();
    bh__slab slab;
    bh__slab_init(&slab);
    /* Up to chunk 11 (4 MiB of blocks): it holds a whole aligned 2 MiB. */
    const uint32_t c = 11;
    while (slab.raw[c] == NULL) {
        bh__block *head;
        assert_true(bh__slab_take_fresh(&slab, 4096, &head) > 0);
    }
    const uintptr_t huge = BH__HUGE_PAGE;
    uintptr_t aligned = ((uintptr_t)slab.raw[c] + huge - 1) & ~(huge - 1);
    char flags[512];
    vm_flags_of((const void *)aligned, flags, sizeof(flags));
    assert_non_null(strstr(flags, " hg"));
    /* Small chunks are left alone: chunk 0 shares the heap with everything. */
    vm_flags_of(slab.raw[0], flags, sizeof(flags));
    assert_null(strstr(flags, " hg"));
    bh__slab_fini(&slab);
}

/* ------------------------------------------------------------ range index */

static void set_key(bh__block *b, uint32_t dev, uint64_t address, uint64_t size) {
    AO_int_store(&b->device, dev);
    AO_store(&b->address, address);
    AO_store(&b->size, size);
}

static uint64_t lcg(uint64_t *rng) {
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    return *rng >> 16;
}

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

static void range_fixture_init(range_fixture *f, int n, uint32_t leaf_max, uint32_t inner_max) {
    bh__slab_init(&f->slab);
    f->n = n;
    f->far = 0;
    f->blocks = test_malloc((size_t)n * sizeof(*f->blocks));
    f->of_slot =
        test_calloc((size_t)n + BH__BLOCKS_PER_PAIR, sizeof(*f->of_slot)); /* slots 0.. pair reserved */
    f->in = test_calloc((size_t)n, sizeof(*f->in));
    bh__block *head;
    assert_int_equal(bh__slab_take_fresh(&f->slab, (uint32_t)n, &head), (uint32_t)n);
    for (int i = 0; head != NULL; i++, head = bh__block_next_free(head)) {
        assert_true(bh__block_slot(head) < (uint32_t)n + BH__BLOCKS_PER_PAIR);
        f->blocks[i] = head;
        f->of_slot[bh__block_slot(head)] = i;
    }
    bh__ranges_init(&f->ranges, &f->slab);
    bh__ranges_set_fanout(&f->ranges, leaf_max, inner_max);
    /* Arenas of one to ten nodes: trees of a few hundred nodes then cross
     * many arena boundaries, and node allocations can fail at many points. */
    bh__ranges_set_arenas(&f->ranges, 0, 4096);
    f->rs = bh__range_stripe_of(&f->ranges, 0, 0);
}

static void range_fixture_fini(range_fixture *f) {
    bh__ranges_fini(&f->ranges);
    bh__slab_fini(&f->slab);
    test_free(f->blocks);
    test_free(f->of_slot);
    test_free(f->in);
}

/* What a walk of one tree found. */
typedef struct tree_walk {
    const range_fixture *f;
    const bh__range_tree *t;
    long entries, leaves;
    int have_prev;
    uint64_t prev;
} tree_walk;

/* Checks the subtree at node (depth below the root, on the tree's rightmost
 * path or not) and returns its smallest start: sorted starts across the
 * whole tree, every entry an indexed block of this domain with that start,
 * separators equal to the smallest start right of them, every leaf at the
 * tree's height, fill bounds (a quarter, or one on the rightmost path). */
static uint64_t check_node(tree_walk *w, const void *node, uint32_t depth, int spine) {
    const bh__ranges *r = &w->f->ranges;
    int root = depth == 0;
    if (depth == w->t->height) {
        const bh__range_leaf *l = node;
        assert_int_equal(l->level, 0);
        assert_true(l->n >= 1 && l->n <= r->leaf_max);
        if (!root && !spine && !w->f->far)
            assert_true(l->n >= r->leaf_max / 4);
        for (uint32_t i = 0; i < l->n; i++) {
            uint64_t start = l->base + l->e[i].off;
            assert_true(i == 0 || l->e[i - 1].off < l->e[i].off);
            if (w->have_prev)
                assert_true(w->prev < start);
            w->have_prev = 1;
            w->prev = start;
            uint32_t slot = bh__range_ref_slot(l->e[i].ref);
            assert_true(slot >= 1 && slot < (uint32_t)w->f->n + BH__BLOCKS_PER_PAIR);
            int b = w->f->of_slot[slot];
            assert_true(w->f->in[b]);
            assert_int_equal(bh__block_device(w->f->blocks[b]), w->t->device);
            assert_int_equal(AO_load(&w->f->blocks[b]->address), start);
            /* The size class: the least e with size <= 2^e. */
            uint64_t size = AO_load(&w->f->blocks[b]->size);
            uint32_t e = l->e[i].ref >> BH__RANGE_CLASS_SHIFT;
            assert_true(e <= 64 && (e == 64 || size <= (uint64_t)1 << e));
            assert_true(e == 0 || size > (uint64_t)1 << (e - 1));
        }
        for (uint32_t i = l->n; i < BH__RANGE_LEAF_CAP; i++)
            assert_int_equal(l->e[i].off, UINT32_MAX); /* the searches' padding */
        w->entries += l->n;
        w->leaves++;
        return l->base + l->e[0].off;
    }
    const bh__range_inner *in = node;
    assert_int_equal(in->level, w->t->height - depth);
    assert_true(in->n >= 1 && in->n <= r->inner_max);
    if (!root && !spine)
        assert_true(in->n >= r->inner_max / 4);
    for (uint32_t i = in->n; i < BH__RANGE_INNER_CAP; i++)
        assert_true(in->sep[i] == UINT64_MAX);
    uint64_t first = 0;
    for (uint32_t i = 0; i <= in->n; i++) {
        uint64_t low = check_node(w, in->child[i], depth + 1, spine && i == in->n);
        if (i == 0)
            first = low;
        else
            assert_true(in->sep[i - 1] == low);
    }
    return first;
}

/* Checks every tree of the fixture's stripe against the reference: one tree
 * per domain with indexed ranges, none for an empty one. Returns the
 * greatest height. */
static uint32_t check_index(const range_fixture *f, long *leaves) {
    long entries = 0, nleaves = 0, want = 0;
    uint32_t height = 0;
    for (int i = 0; i < f->n; i++)
        want += f->in[i];
    for (const bh__range_tree *t = f->rs->trees; t != NULL; t = t->next) {
        for (const bh__range_tree *u = t->next; u != NULL; u = u->next)
            assert_int_not_equal(u->device, t->device);
        tree_walk w = {f, t, 0, 0, 0, 0};
        check_node(&w, t->root, 0, 1);
        assert_true(w.entries > 0);
        entries += w.entries;
        nleaves += w.leaves;
        if (t->height > height)
            height = t->height;
    }
    assert_int_equal(entries, want);
    if (leaves != NULL)
        *leaves = nleaves;
    return height;
}

static int brute_meets(const range_fixture *f, int k, uint32_t dev, uint64_t a, uint64_t size) {
    const bh__block *b = f->blocks[k];
    if (!f->in[k] || bh__block_device(b) != dev)
        return 0;
    uint64_t s = AO_load(&b->address);
    return s >= a ? s - a < size : a - s < AO_load(&b->size);
}

static int brute_overlaps(const range_fixture *f, uint32_t dev, uint64_t a, uint64_t size) {
    for (int k = 0; k < f->n; k++)
        if (brute_meets(f, k, dev, a, size))
            return 1;
    return 0;
}

/* Inserts blocks[i] as [a, a + size) in dev, expecting what a brute-force
 * scan says: indexed, or refused with a block it meets and nothing changed. */
static void insert_checked(range_fixture *f, int i, uint32_t dev, uint64_t a, uint64_t size) {
    int clash = brute_overlaps(f, dev, a, size);
    set_key(f->blocks[i], dev, a, size);
    bh_status st = BH_EINVAL;
    bh__block *o = bh__range_insert(&f->ranges, f->rs, f->blocks[i], &st);
    if (clash) {
        assert_non_null(o);
        assert_true(brute_meets(f, f->of_slot[bh__block_slot(o)], dev, a, size));
    } else {
        assert_null(o);
        assert_int_equal(st, BH_OK);
        f->in[i] = 1;
    }
}

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
        int i = (int)(lcg(&rng) % N);
        if (f.in[i]) {
            bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
            f.in[i] = 0;
        } else {
            uint32_t dev = (uint32_t)(lcg(&rng) % 3);
            uint64_t a = region_start(&rng) + lcg(&rng) % region;
            insert_checked(&f, i, dev, a, 1 + lcg(&rng) % 8192);
        }
        uint32_t h = check_index(&f, NULL);
        height = h > height ? h : height;
        for (int q = 0; q < QUERIES; q++) {
            uint32_t qdev = (uint32_t)(lcg(&rng) % 4);
            uint64_t qa = region_start(&rng) - 8192 + lcg(&rng) % (region + 16384);
            const bh__block *c = bh__range_containing(&f.ranges, f.rs, qdev, qa);
            assert_int_equal(c != NULL, brute_overlaps(&f, qdev, qa, 1));
            if (c != NULL)
                assert_true(brute_meets(&f, f.of_slot[bh__block_slot(c)], qdev, qa, 1));
            assert_ptr_equal(bh__range_overlap(&f.ranges, f.rs, qdev, qa, 1), c);
            uint64_t wsize = 1 + lcg(&rng) % 20000;
            const bh__block *o = bh__range_overlap(&f.ranges, f.rs, qdev, qa, wsize);
            assert_int_equal(o != NULL, brute_overlaps(&f, qdev, qa, wsize));
            if (o != NULL)
                assert_true(brute_meets(&f, f.of_slot[bh__block_slot(o)], qdev, qa, wsize));
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
    return at[lcg(rng) % 5];
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
            int i = (int)(lcg(&rng) % N);
            /* Grow while step < N (3 inserts to 1 removal), then shrink. */
            int grow = step < N ? lcg(&rng) % 4 != 0 : 0;
            if (f.in[i] && !grow) {
                bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
                f.in[i] = 0;
                live--;
            } else if (!f.in[i] && grow) {
                /* Block i's own 4 KiB cell: never a clash. */
                uint64_t off = lcg(&rng) % 4096;
                insert_checked(&f, i, 5, 0x10000000ull + (uint64_t)i * 4096 + off,
                               1 + lcg(&rng) % (4096 - off));
                live++;
            }
            if (step % 64 == 0) {
                uint32_t h = check_index(&f, NULL);
                height = h > height ? h : height;
            }
        }
        check_index(&f, NULL);
        assert_null(f.rs->trees);
    }
    assert_true(height >= 4);
    range_fixture_fini(&f);
}

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
        insert_checked(&f, i, 2, 0x40000000ull + (uint64_t)i * 256, 256);
    long leaves;
    assert_int_equal(check_index(&f, &leaves), 2);
    assert_int_equal(leaves, FULL + 1);
    /* Removing every range in random order frees every node. */
    uint64_t rng = 3;
    for (int left = N; left > 0;) {
        int i = (int)(lcg(&rng) % N);
        if (!f.in[i])
            continue;
        bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
        f.in[i] = 0;
        left--;
        if (left % 97 == 0)
            check_index(&f, NULL);
    }
    assert_null(f.rs->trees);
    range_fixture_fini(&f); /* memcheck: no node left behind */
}

/* Random churn (a live range leaves, a random free address comes in) at
 * the default fan-out: full leaves pass entries to a sibling with room
 * before they split, so leaves stay about three quarters full (plain
 * splits settle near half: twice the host memory per range). */
/* Block i as the 4 KiB cell i of domain 4, which nothing else can meet (no
 * brute-force scan: cheap enough for thousands of ranges under valgrind). */
static void insert_own_cell(range_fixture *f, int i) {
    set_key(f->blocks[i], 4, 0x10000000ull + (uint64_t)i * 4096, 4096);
    bh_status st = BH_EINVAL;
    assert_null(bh__range_insert(&f->ranges, f->rs, f->blocks[i], &st));
    assert_int_equal(st, BH_OK);
    f->in[i] = 1;
}

static void random_churn_keeps_leaves_three_quarters_full(void **state) {
    (void)state;
    enum { N = 8000 };
    range_fixture f;
    range_fixture_init(&f, N, BH__RANGE_LEAF_CAP, BH__RANGE_INNER_CAP);
    long live = 0;
    for (int i = 0; i < N; i += 2, live++)
        insert_own_cell(&f, i);
    check_index(&f, NULL);
    uint64_t rng = 11;
    for (int op = 0; op < 4 * N; op++) {
        int i = (int)(lcg(&rng) % N), j;
        if (!f.in[i])
            continue;
        bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
        f.in[i] = 0;
        do
            j = (int)(lcg(&rng) % N);
        while (f.in[j]);
        insert_own_cell(&f, j);
    }
    long leaves;
    check_index(&f, &leaves);
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
            int i = (int)(lcg(&rng) % N);
            int grow = step < N ? lcg(&rng) % 4 != 0 : 0; /* 3 inserts to 1 removal, then shrink */
            if (f.in[i] && !grow) {
                bh__range_remove(&f.ranges, f.rs, f.blocks[i]);
                f.in[i] = 0;
                live--;
            } else if (!f.in[i] && grow) {
                insert_own_cell(&f, i);
                live++;
            }
        }
        check_index(&f, NULL);
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
            set_key(f.blocks[i], dev, a, 4096);
            assert_null(bh__range_insert(&f.ranges, f.rs, f.blocks[i], &st));
            if (st == BH_ENOMEM) {
                failed++;
            } else {
                assert_int_equal(st, BH_OK);
                f.in[i] = 1;
            }
            if (i % 10 == 0 || st == BH_ENOMEM)
                check_index(&f, NULL);
        }
        bh__hostmem_fail_at(0);
        if (k == 0)
            total = bh__hostmem_attempts() - before;
        assert_int_equal(failed, k == 0 ? 0 : 1);
        check_index(&f, NULL);
        range_fixture_fini(&f);
    }
    assert_true(total > 20); /* the sequence did split nodes at several levels */
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
    insert_checked(&f, 0, 7, UINT64_MAX - 4095, 4096); /* ends at 2^64 */
    assert_true(f.in[0]);
    assert_ptr_equal(bh__range_containing(r, s, 7, UINT64_MAX), b[0]);
    assert_ptr_equal(bh__range_containing(r, s, 7, UINT64_MAX - 4095), b[0]);
    assert_null(bh__range_containing(r, s, 7, UINT64_MAX - 4096));
    assert_ptr_equal(bh__range_overlap(r, s, 7, UINT64_MAX - 8191, 4097), b[0]);
    assert_null(bh__range_overlap(r, s, 7, UINT64_MAX - 8191, 4096));
    insert_checked(&f, 1, 7, UINT64_MAX - 8191, 4097); /* meets it by one byte */
    assert_false(f.in[1]);
    insert_checked(&f, 1, 7, UINT64_MAX - 4095 + 100, 1); /* inside it */
    assert_false(f.in[1]);
    insert_checked(&f, 1, 7, UINT64_MAX - 8191, 4096); /* adjacent below */
    assert_true(f.in[1]);
    assert_ptr_equal(bh__range_containing(r, s, 7, UINT64_MAX - 4096), b[1]);
    assert_ptr_equal(bh__range_overlap(r, s, 7, UINT64_MAX - 4096, 2), b[0]); /* the greater start */

    insert_checked(&f, 2, 7, 0, 1); /* one byte at 0 */
    assert_true(f.in[2]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 0), b[2]);
    assert_null(bh__range_containing(r, s, 7, 1));
    insert_checked(&f, 3, 7, 1, 1); /* adjacent above */
    assert_true(f.in[3]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 1), b[3]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 0), b[2]);
    insert_checked(&f, 4, 7, 0, 2);
    assert_false(f.in[4]);

    insert_checked(&f, 5, 8, 1, UINT64_MAX); /* [1, 2^64): everything but 0 */
    assert_true(f.in[5]);
    assert_ptr_equal(bh__range_containing(r, s, 8, 1), b[5]);
    assert_ptr_equal(bh__range_containing(r, s, 8, UINT64_MAX), b[5]);
    assert_null(bh__range_containing(r, s, 8, 0));
    insert_checked(&f, 6, 8, 5, 1);
    assert_false(f.in[6]);
    insert_checked(&f, 6, 8, 0, 1);
    assert_true(f.in[6]);
    assert_null(bh__range_containing(r, s, 9, 5)); /* another domain */
    check_index(&f, NULL);

    /* A block with an indexed block's start but not indexed itself (a
     * takeover took it out and another block has its start now): its
     * removal must leave the indexed one alone. */
    set_key(b[7], 7, 0, 1);
    bh__range_remove(r, s, b[7]);
    assert_ptr_equal(bh__range_containing(r, s, 7, 0), b[2]);
    set_key(b[7], 7, 50, 1); /* a start nothing has */
    bh__range_remove(r, s, b[7]);
    check_index(&f, NULL);
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
            insert_checked(&f, 0, 3, at, size);
            assert_true(f.in[0]);
            uint64_t end = at + size;
            assert_ptr_equal(bh__range_containing(r, f.rs, 3, end - 1), f.blocks[0]);
            assert_null(bh__range_containing(r, f.rs, 3, end));
            insert_checked(&f, 1, 3, end - 1, 2); /* its last byte */
            assert_false(f.in[1]);
            insert_checked(&f, 1, 3, end, 2); /* right after it */
            assert_true(f.in[1]);
            check_index(&f, NULL);
            for (int i = 0; i < 2; i++) {
                bh__range_remove(r, f.rs, f.blocks[i]);
                f.in[i] = 0;
            }
            assert_null(f.rs->trees);
        }
    }
    /* Above 2^63 (class 64): the block decides. */
    insert_checked(&f, 0, 3, 1, ((uint64_t)1 << 63) + 5);
    insert_checked(&f, 1, 3, ((uint64_t)1 << 63) + 5, 1);
    assert_false(f.in[1]);
    insert_checked(&f, 1, 3, ((uint64_t)1 << 63) + 6, 1);
    assert_true(f.in[1]);
    check_index(&f, NULL);
    range_fixture_fini(&f);
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
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
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

/* ------------------------------------------------------------ host memory faults */

/* One scenario touching every path that allocates host memory: registry
 * creation, slab chunks for new blocks, shard growth. */
static bh_status scenario(checker *chk, int *stage) {
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    *stage = 0;
    bh_status st = bh_registry_create(&cfg, &reg);
    if (st != BH_OK)
        return st;
    enum { N = 200 };
    bh_handle h[N];
    int n = 0;
    for (; n < N; n++) {
        *stage = 1;
        st = n % 2 ? bh_alloc(reg, 0, 64, &h[n]) : bh_intern(reg, 1, BASE + (uint64_t)n * ALIGN, 64, &h[n]);
        if (st != BH_OK)
            break;
    }
    /* Whatever failed, the registry is consistent: release all, destroy. */
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, (uint64_t)n);
    for (int i = 0; i < n; i++)
        assert_int_equal(bh_release(reg, h[i]), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    return st;
}

static void every_host_allocation_failure_is_a_clean_enomem(void **state) {
    (void)state;
    /* Count the scenario's host allocations in a clean run, then fail each. */
    checker *chk = checker_new(2, 1, 256, BASE, ALIGN);
    int stage;
    long before = bh__hostmem_attempts();
    assert_int_equal(scenario(chk, &stage), BH_OK);
    long total = bh__hostmem_attempts() - before;
    checker_free(chk);
    assert_true(total >= BH__SHARDS + 2); /* registry, shard tables, slab chunks */

    int enomem = 0;
    for (long k = 1; k <= total; k++) {
        chk = checker_new(2, 1, 256, BASE, ALIGN);
        bh__hostmem_fail_at(k);
        bh_status st = scenario(chk, &stage);
        bh__hostmem_fail_at(0);
        /* A failed table growth is absorbed (longer chains); all else is ENOMEM. */
        assert_true(st == BH_OK || st == BH_ENOMEM);
        enomem += st == BH_ENOMEM;
        assert_int_equal(checker_errors(chk), 0);
        assert_int_equal(checker_leaks(chk), 0); /* ENOMEM in bh_alloc gave the address back */
        checker_free(chk);
    }
    assert_true(enomem >= BH__SHARDS + 2);
}

/* Allocator failing on the k-th call, for every k across a scenario: each
 * bh_alloc answers BH_EALLOC cleanly, nothing is reported for it, and the
 * registry goes on. */
static void every_allocator_failure_is_a_clean_ealloc(void **state) {
    (void)state;
    enum { CALLS = 40 };
    for (long k = 1; k <= CALLS; k++) {
        checker *chk = checker_new(2, 2, 64, BASE, ALIGN);
        bh_config cfg = checker_config(chk);
        bh_registry *reg;
        assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
        checker_fail_alloc_at(chk, k);
        bh_handle h[CALLS];
        int n = 0, failed = 0;
        for (int i = 0; i < CALLS; i++) {
            bh_status st = bh_alloc(reg, (uint32_t)(i % 2), 64, &h[n]);
            if (st == BH_OK)
                n++;
            else {
                assert_int_equal(st, BH_EALLOC);
                failed++;
            }
            if (i % 3 == 2 && n > 0) /* free some on the way: reuse after a failure */
                assert_int_equal(bh_release(reg, h[--n]), BH_OK);
        }
        assert_int_equal(failed, 1);
        assert_int_equal(checker_alloc_reports(chk), (uint64_t)(CALLS - 1));
        while (n > 0)
            assert_int_equal(bh_release(reg, h[--n]), BH_OK);
        assert_int_equal(checker_finish(chk, reg), 0);
    }
}

/* The socket reporter's host allocations failing in turn: open answers
 * BH_ENOMEM or works; reporting and closing never crash or leak. */
static void socket_reporter_survives_every_host_allocation_failure(void **state) {
    (void)state;
    for (long k = 1; k <= 12; k++) {
        bh_reporter rep;
        bh_socket_options opt = {.queue_capacity = 64, .flush_timeout_ms = 10};
        bh__hostmem_fail_at(k);
        bh_status st = bh_socket_reporter_open("/tmp/bh-no-such-server.sock", &opt, &rep);
        assert_true(st == BH_OK || st == BH_ENOMEM);
        if (st == BH_OK) {
            for (uint64_t i = 1; i <= 200; i++) { /* the shadow set grows and may fail */
                bh_event ev = {i % 3 ? BH_EVENT_ALLOC : BH_EVENT_FREE, 0, 0x1000 * (i / 3 + 1), 64, i};
                rep.report(rep.ctx, &ev);
            }
            bh_reporter_stats rs;
            assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
            assert_int_equal(rs.reported, 200);
            bh_socket_reporter_close(&rep);
        }
        bh__hostmem_fail_at(0);
    }
}

/* ------------------------------------------------------------ limits */

static void reference_count_overflow_is_eoverflow_and_changes_nothing(void **state) {
    (void)state;
    checker *chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh__registry_set_refs_max(reg, 3);
    bh_handle h, x;
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh_retain(reg, h), BH_OK);
    assert_int_equal(bh_lookup(reg, 0, BASE, &x), BH_OK);
    assert_int_equal(bh_retain(reg, h), BH_EOVERFLOW);
    assert_int_equal(bh_lookup(reg, 0, BASE, &x), BH_EOVERFLOW);
    assert_int_equal(bh_intern(reg, 0, BASE, 64, &x), BH_EOVERFLOW);
    bh_info info;
    assert_int_equal(bh_info_get(reg, h, &info), BH_OK);
    assert_int_equal(info.refs, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(checker_free_calls(chk), 1);
    assert_int_equal(checker_finish(chk, reg), 0);
}

static void a_slot_whose_generation_would_wrap_is_retired_for_good(void **state) {
    (void)state;
    checker *chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh_handle h, last;
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh__registry_set_gen(reg, h, UINT32_MAX, &last), BH_OK);
    assert_int_equal(bh_retain(reg, h), BH_ESTALE); /* the old generation is gone */
    assert_int_equal(bh_release(reg, last), BH_OK);
    assert_int_equal(bh_release(reg, last), BH_ESTALE);

    /* The slot is never handed out again: many allocations later, no handle
     * uses it, and the wrapped-around generation 0 is not valid there. */
    for (int i = 0; i < 100; i++) {
        bh_handle n;
        assert_int_equal(bh_alloc(reg, 0, 64, &n), BH_OK);
        assert_int_not_equal(bh__handle_slot(n), bh__handle_slot(last));
        assert_int_equal(bh_release(reg, n), BH_OK);
    }
    bh_handle wrapped = bh__handle_of(reg, bh__handle_slot(last), 0);
    assert_int_equal(bh_retain(reg, wrapped), BH_ESTALE);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.slots_retired, 1);
    assert_int_equal(checker_finish(chk, reg), 0);
}

/* 0.2's bh_alloc took a control block before it looked the allocator's
 * address up: out of blocks (host memory or slot space), it answered
 * BH_ENOMEM and "gave back" the address through allocator.free, even when the
 * buggy allocator had returned a live address. The lookup comes first now. */
static void a_live_address_is_never_freed_when_blocks_run_out(void **state) {
    (void)state;
    checker *chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh_handle live, h = BH_HANDLE_NULL;
    assert_int_equal(bh_alloc(reg, 0, 64, &live), BH_OK); /* BASE */

    /* No block left anywhere: the shard's free list is empty and the slab's
     * slot space exhausted (taking a block would fail like host memory does). */
    bh__shard *sh = &reg->shards[bh__shard_of(bh__key_hash(0, BASE))];
    bh__block *saved_list = sh->free_list;
    uint32_t saved_fresh = reg->slab.next_fresh;
    sh->free_list = NULL;
    reg->slab.next_fresh = BH__SLOT_MASK + 1;

    checker_force_next(chk, BASE);
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_EEXIST);
    assert_int_equal(bh_adopt(reg, 0, BASE, 64, &h), BH_EEXIST);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_free_calls(chk), 0);
    /* An address that is not live is given back on BH_ENOMEM. */
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_ENOMEM);
    assert_int_equal(checker_free_calls(chk), 1);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.conflicts, 2);
    assert_int_equal(s.live_handles, 1);
    assert_int_equal(s.live_bytes, 64);

    sh->free_list = saved_list;
    reg->slab.next_fresh = saved_fresh;
    bh_info info;
    assert_int_equal(bh_info_get(reg, live, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(reg, live), BH_OK);
    assert_int_equal(checker_finish(chk, reg), 0);
}

/* An open-addressing shard that cannot grow runs full; bh_alloc must then
 * answer BH_ENOMEM with its documented meaning: the address was free, and it
 * went back to the allocator (nothing counted live). */
static void a_full_shard_is_a_clean_enomem_for_bh_alloc(void **state) {
    (void)state;
    fixed_alloc ca = {0};
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = fixed_allocator(&ca);
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    uint32_t target = bh__shard_of(bh__key_hash(0, BASE));
    bh__shard *sh = &reg->shards[target];
    uint32_t cap = bh__shard_table(sh)->mask + 1;
    enum { MAX = 64 };
    bh_handle h[MAX];
    int n = 0;
    uint64_t i = 0;
    bh_status st = BH_OK;
    while (st == BH_OK) {
        while (bh__shard_of(bh__key_hash(0, BASE + i * ALIGN)) != target)
            i++;
        ca.next = BASE + i++ * ALIGN;
        if (sh->count + 1 > cap / 4 * 3)
            bh__hostmem_fail_at(1); /* the table's growth is the call's first host allocation */
        assert_true(n < MAX);
        st = bh_alloc(reg, 0, 64, &h[n]);
        bh__hostmem_fail_at(0);
        if (st == BH_OK)
            n++;
    }
    assert_int_equal(st, BH_ENOMEM);
    assert_int_equal(n, (int)cap - 1); /* it kept working while it could */
    assert_int_equal(ca.frees, 1);     /* the refused address went back */
    assert_int_equal(ca.last_freed, ca.next);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, (uint64_t)n);
    /* Memory is back: the shard grows and takes the same key. */
    assert_int_equal(bh_alloc(reg, 0, 64, &h[n]), BH_OK);
    n++;
    for (int k = 0; k < n; k++)
        assert_int_equal(bh_release(reg, h[k]), BH_OK);
    assert_int_equal(ca.frees, 1 + n);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slab_slots_map_to_distinct_stable_blocks),
        cmocka_unit_test(slab_reports_host_memory_exhaustion),
        cmocka_unit_test(large_slab_chunks_are_advised_to_use_huge_pages),
        cmocka_unit_test(range_index_agrees_with_a_brute_force_scan),
        cmocka_unit_test(far_apart_starts_take_leaves_of_their_own),
        cmocka_unit_test(size_classes_decide_at_their_edges),
        cmocka_unit_test(range_index_grows_and_shrinks_through_every_level),
        cmocka_unit_test(appended_ranges_leave_full_leaves),
        cmocka_unit_test(random_churn_keeps_leaves_three_quarters_full),
        cmocka_unit_test(freed_index_nodes_are_reused_before_any_new_arena),
        cmocka_unit_test(a_failed_node_allocation_leaves_the_index_unchanged),
        cmocka_unit_test(range_index_answers_at_range_edges),
        cmocka_unit_test(an_index_node_that_cannot_be_had_is_enomem),
        cmocka_unit_test(overlapping_interns_racing_on_different_shards_make_one_owner),
        cmocka_unit_test(every_host_allocation_failure_is_a_clean_enomem),
        cmocka_unit_test(every_allocator_failure_is_a_clean_ealloc),
        cmocka_unit_test(socket_reporter_survives_every_host_allocation_failure),
        cmocka_unit_test(reference_count_overflow_is_eoverflow_and_changes_nothing),
        cmocka_unit_test(a_slot_whose_generation_would_wrap_is_retired_for_good),
        cmocka_unit_test(a_live_address_is_never_freed_when_blocks_run_out),
        cmocka_unit_test(a_full_shard_is_a_clean_enomem_for_bh_alloc),
    };
    return cmocka_run_group_tests_name("internals", tests, NULL, NULL);
}
