/*
 * range_leaf.h - a range-index leaf's contents, for range.c and range_leaf.c
 * only.
 *
 * Owns: how a leaf stores its starts (32-bit offsets from a per-leaf base)
 * and the operations on one or two leaves' entries: the inline ones on
 * every insertion, the rest (splits, moves between siblings) in range_leaf.c.
 * Must never: change a tree's shape (range.c's), or be called without the
 * stripe lock.
 */
#ifndef BH_RANGE_LEAF_H
#define BH_RANGE_LEAF_H

#include <string.h>

#include "internal.h"

typedef bh__range_leaf leaf;
typedef bh__range_inner inner;
typedef bh__range_tree tree;

/* The most a leaf's starts may differ by: its offsets are 32 bits. */
#define SPAN_MAX ((uint64_t)UINT32_MAX)

static inline uint64_t key_at(const leaf *l, uint32_t i) { return l->base + l->e[i].off; }

/* Past its n keys, every node's key array holds the greatest value, so a
 * search may run over all of it (range.c, inner_rank / offsets_rank):
 * fresh nodes and ones whose n fell get it here; a put moves it up by one
 * and a take writes one. */
static inline void leaf_pad(leaf *l) {
    for (uint32_t i = l->n; i < BH__RANGE_LEAF_CAP; i++)
        l->e[i].off = UINT32_MAX;
}
static inline void inner_pad(inner *in) {
    for (uint32_t i = in->n; i < BH__RANGE_INNER_CAP; i++)
        in->sep[i] = UINT64_MAX;
}

/* Can leaf l take start as well? */
static inline int leaf_fits(const leaf *l, uint64_t start) {
    if (l->n == 0)
        return 1;
    uint64_t lo = key_at(l, 0), hi = key_at(l, l->n - 1);
    return (start < lo ? hi - start : start > hi ? start - lo : 0) <= SPAN_MAX;
}

/* Puts (start, ref) at pos of leaf l, which has room and fits it. */
static inline void leaf_put(leaf *l, uint32_t pos, uint64_t start, uint32_t ref) {
    if (l->n == 0) {
        l->base = start;
        leaf_pad(l); /* a fresh leaf */
    } else if (start < l->base || start - l->base > SPAN_MAX) {
        /* A new base: the lower of start and the first start (a removal
         * may have left the old base further below). */
        uint64_t first = key_at(l, 0), base = start < first ? start : first;
        for (uint32_t i = 0; i < l->n; i++)
            l->e[i].off = (uint32_t)(key_at(l, i) - base);
        l->base = base;
    }
    memmove(l->e + pos + 1, l->e + pos, (l->n - pos) * sizeof(l->e[0]));
    l->e[pos].off = (uint32_t)(start - l->base);
    l->e[pos].ref = ref;
    l->n++;
}

/* Leaf l (full, or unable to take start) keeps its first m entries with
 * (start, ref) put at pos, and the rest go to the empty leaf nl; each side
 * fits in one leaf. */
void bh__range_leaf_split(leaf *l, leaf *nl, uint32_t pos, uint64_t start, uint32_t ref, uint32_t m);
#define leaf_split bh__range_leaf_split
/* Shares out adjacent leaves a (left) and b of one parent, and the new
 * entry (start, ref) at position *at of their entries in order if at is
 * not NULL: everything into a if it fits in one leaf and merge is set, else
 * the lower half into a. 1: done (b empty after a merge); 0: the starts do
 * not fit that way (they span 2^32 or more), nothing changed. */
int bh__range_leaf_share(const bh__ranges *r, leaf *a, leaf *b, int merge, const uint32_t *at, uint64_t start,
                         uint32_t ref);
#define leaf_share bh__range_leaf_share

#endif /* BH_RANGE_LEAF_H */
