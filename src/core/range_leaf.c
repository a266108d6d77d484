/*
 * range_leaf.c - moving a range-index leaf's entries between leaves.
 *
 * Owns: splits of a leaf and sharing between two siblings, done by moving
 * entries across the boundary between them in place (only the entries that
 * move are rewritten, and a leaf's base changes only when its offsets need
 * it); whether starts fit one leaf.
 * Must never: change inner nodes or a tree's shape (range.c's), or leave a
 * leaf whose starts span 2^32 or more.
 */
#include "range_leaf.h"

/* Leaf l's offsets from base instead of l->base: every start stays. */
static void leaf_rebase(leaf *l, uint64_t base) {
    for (uint32_t i = 0; i < l->n; i++)
        l->e[i].off = (uint32_t)(key_at(l, i) - base);
    l->base = base;
}

/* Pads entries [l->n, to) of leaf l: those past to are padding already. */
static void pad_from(leaf *l, uint32_t to) {
    for (uint32_t i = l->n; i < to; i++)
        l->e[i].off = UINT32_MAX;
}

/* Moves entries between adjacent leaves a (left) and b whose starts fit
 * one leaf after it (the callers check): the first k of b to the end of a
 * (k > 0), or the last -k of a to the front of b (k < 0). A leaf's base
 * changes only when the starts coming in need it: a's goes up to its first
 * start when theirs are too far above it, b's down to the first that comes
 * in. The other leaf keeps its base and its padding grows. Before 0.4's
 * later leaves, every move went through both leaves' entries as 64-bit
 * starts and back (about 900 instructions per share, 260 per split). */
static void leaf_move(leaf *a, leaf *b, int32_t k) {
    if (k > 0) {
        uint32_t m = (uint32_t)k;
        uint64_t last = key_at(b, m - 1);
        if (a->n == 0)
            a->base = key_at(b, 0);
        else if (last - a->base > SPAN_MAX)
            leaf_rebase(a, key_at(a, 0));
        for (uint32_t i = 0; i < m; i++) {
            a->e[a->n + i].off = (uint32_t)(key_at(b, i) - a->base);
            a->e[a->n + i].ref = b->e[i].ref;
        }
        a->n += m;
        memmove(b->e, b->e + m, (b->n - m) * sizeof(b->e[0]));
        b->n -= m;
        pad_from(b, b->n + m);
    } else if (k < 0) {
        uint32_t m = (uint32_t)-k, from = a->n - m;
        uint64_t base = key_at(a, from), old = b->base;
        memmove(b->e + m, b->e, b->n * sizeof(b->e[0]));
        for (uint32_t i = m; i < m + b->n; i++)
            b->e[i].off = (uint32_t)(old + b->e[i].off - base);
        for (uint32_t i = 0; i < m; i++) {
            b->e[i].off = (uint32_t)(key_at(a, from + i) - base);
            b->e[i].ref = a->e[from + i].ref;
        }
        b->base = base;
        b->n += m;
        a->n = from;
        pad_from(a, from + m);
    }
}

/* The i-th start of a's and b's entries in order, with start put in at
 * position *at if at is not NULL. */
static uint64_t nth_start(const leaf *a, const leaf *b, const uint32_t *at, uint64_t start, uint32_t i) {
    if (at != NULL) {
        if (i == *at)
            return start;
        if (i > *at)
            i--;
    }
    return i < a->n ? key_at(a, i) : key_at(b, i - a->n);
}

/* Can starts [from, to) of that order share a leaf? */
static int fit(const leaf *a, const leaf *b, const uint32_t *at, uint64_t start, uint32_t from, uint32_t to) {
    return to <= from || nth_start(a, b, at, start, to - 1) - nth_start(a, b, at, start, from) <= SPAN_MAX;
}

/* a and b hold [0, m) and [m, n) of that order once the new entry (if any)
 * is in: entries move across, then the new one goes where it belongs. */
static void leaf_deal(leaf *a, leaf *b, const uint32_t *at, uint64_t start, uint32_t ref, uint32_t m) {
    uint32_t old_in_a = at != NULL && *at < m ? m - 1 : m; /* a's entries that are not the new one */
    leaf_move(a, b, (int32_t)old_in_a - (int32_t)a->n);
    if (at != NULL) {
        if (*at < m)
            leaf_put(a, *at, start, ref);
        else
            leaf_put(b, *at - m, start, ref);
    }
}

void bh__range_leaf_split(leaf *l, leaf *nl, uint32_t pos, uint64_t start, uint32_t ref, uint32_t m) {
    nl->n = 0;
    leaf_pad(nl);
    leaf_deal(l, nl, &pos, start, ref, m);
}

int bh__range_leaf_share(const bh__ranges *r, leaf *a, leaf *b, int merge, const uint32_t *at, uint64_t start,
                         uint32_t ref) {
    uint32_t n = a->n + b->n + (at != NULL);
    uint32_t m = merge && n <= r->leaf_max && fit(a, b, at, start, 0, n) ? n : n / 2;
    if (!fit(a, b, at, start, 0, m) || !fit(a, b, at, start, m, n))
        return 0;
    leaf_deal(a, b, at, start, ref, m);
    return 1;
}
