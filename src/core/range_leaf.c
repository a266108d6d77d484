/*
 * range_leaf.c - moving a range-index leaf's entries between leaves.
 *
 * Owns: splits of a leaf and sharing between two siblings, done through a
 * run (the entries in order as full 64-bit starts), so each leaf's base is
 * chosen again from its new first start; whether starts fit one leaf.
 * Must never: change inner nodes or a tree's shape (range.c's), or leave a
 * leaf whose starts span 2^32 or more.
 */
#include "range_leaf.h"

/* Entries of up to two leaves and one new entry in order, as full 64-bit
 * starts: splits and moves between leaves go through one, so a leaf's base
 * is chosen again whenever its entries change beyond one put or take. */
typedef struct run {
    uint32_t n;
    uint64_t key[2 * BH__RANGE_LEAF_CAP + 1];
    uint32_t ref[2 * BH__RANGE_LEAF_CAP + 1];
} run;

static void run_add(run *u, const leaf *l) {
    for (uint32_t i = 0; i < l->n; i++, u->n++) {
        u->key[u->n] = key_at(l, i);
        u->ref[u->n] = l->e[i].ref;
    }
}

static void run_put(run *u, uint32_t pos, uint64_t start, uint32_t ref) {
    memmove(u->key + pos + 1, u->key + pos, (u->n - pos) * sizeof(u->key[0]));
    memmove(u->ref + pos + 1, u->ref + pos, (u->n - pos) * sizeof(u->ref[0]));
    u->key[pos] = start;
    u->ref[pos] = ref;
    u->n++;
}

/* Can entries [from, to) of u share a leaf? */
static int run_fits(const run *u, uint32_t from, uint32_t to) {
    return to <= from || u->key[to - 1] - u->key[from] <= SPAN_MAX;
}

/* Leaf l holds entries [from, to) of u (which fit), based at the first. */
static void leaf_fill(leaf *l, const run *u, uint32_t from, uint32_t to) {
    l->n = to - from;
    l->base = to > from ? u->key[from] : 0;
    for (uint32_t i = 0; i < l->n; i++) {
        l->e[i].off = (uint32_t)(u->key[from + i] - l->base);
        l->e[i].ref = u->ref[from + i];
    }
    leaf_pad(l);
}

void bh__range_leaf_split(leaf *l, leaf *nl, uint32_t pos, uint64_t start, uint32_t ref, uint32_t m) {
    run u;
    u.n = 0;
    run_add(&u, l);
    run_put(&u, pos, start, ref);
    leaf_fill(l, &u, 0, m);
    leaf_fill(nl, &u, m, u.n);
}

int bh__range_leaf_share(const bh__ranges *r, leaf *a, leaf *b, int merge, const uint32_t *at, uint64_t start,
                         uint32_t ref) {
    run u;
    u.n = 0;
    run_add(&u, a);
    run_add(&u, b);
    if (at != NULL)
        run_put(&u, *at, start, ref);
    uint32_t m = merge && u.n <= r->leaf_max && run_fits(&u, 0, u.n) ? u.n : u.n / 2;
    if (!run_fits(&u, 0, m) || !run_fits(&u, m, u.n))
        return 0;
    leaf_fill(a, &u, 0, m);
    leaf_fill(b, &u, m, u.n);
    return 1;
}
