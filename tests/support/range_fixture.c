/* range_fixture.c - see range_fixture.h. */
#include "range_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

void range_set_key(bh__block *b, uint32_t dev, uint64_t address, uint64_t size) {
    AO_int_store(&b->device, dev);
    AO_store(&b->address, address);
    AO_store(&b->size, size);
}

uint64_t range_lcg(uint64_t *rng) {
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    return *rng >> 16;
}

void range_fixture_init(range_fixture *f, int n, uint32_t leaf_max, uint32_t inner_max) {
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
    bh__ranges_set_arenas(&f->ranges, 0, 4096);
    f->rs = bh__range_stripe_of(&f->ranges, 0, 0);
}

void range_fixture_fini(range_fixture *f) {
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

uint32_t range_check_index(const range_fixture *f, long *leaves) {
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

int range_brute_meets(const range_fixture *f, int k, uint32_t dev, uint64_t a, uint64_t size) {
    const bh__block *b = f->blocks[k];
    if (!f->in[k] || bh__block_device(b) != dev)
        return 0;
    uint64_t s = AO_load(&b->address);
    return s >= a ? s - a < size : a - s < AO_load(&b->size);
}

int range_brute_overlaps(const range_fixture *f, uint32_t dev, uint64_t a, uint64_t size) {
    for (int k = 0; k < f->n; k++)
        if (range_brute_meets(f, k, dev, a, size))
            return 1;
    return 0;
}

void range_insert_checked(range_fixture *f, int i, uint32_t dev, uint64_t a, uint64_t size) {
    int clash = range_brute_overlaps(f, dev, a, size);
    range_set_key(f->blocks[i], dev, a, size);
    bh_status st = BH_EINVAL;
    bh__block *o = bh__range_insert(&f->ranges, f->rs, f->blocks[i], &st);
    if (clash) {
        assert_non_null(o);
        assert_true(range_brute_meets(f, f->of_slot[bh__block_slot(o)], dev, a, size));
    } else {
        assert_null(o);
        assert_int_equal(st, BH_OK);
        f->in[i] = 1;
    }
}

void range_insert_own_cell(range_fixture *f, int i) {
    range_set_key(f->blocks[i], 4, 0x10000000ull + (uint64_t)i * 4096, 4096);
    bh_status st = BH_EINVAL;
    assert_null(bh__range_insert(&f->ranges, f->rs, f->blocks[i], &st));
    assert_int_equal(st, BH_OK);
    f->in[i] = 1;
}
