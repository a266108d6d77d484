/*
 * range.c - the range index: which allocation covers an address.
 *
 * Owns: for every domain, the ordered set of [address, address + size) ranges
 * of the blocks that are live, or dying with their free not yet returned, as
 * a B+tree of host-memory nodes (layouts in internal.h), one per domain
 * and stripe: a stripe's tree holds the domain's ranges that touch the
 * stripe's regions (range_stripes.c says which, and takes the locks), so
 * "does this range overlap anything in this stripe?" and "insert it" are
 * one step under that stripe's lock, whichever intern-table shards the keys
 * hash to. Each domain of a stripe has its own tree, so keys are bare
 * 64-bit starts and an allocator bumping addresses appends at one tree's end.
 * Must never: hold two ranges of one domain that overlap, touch a block's
 * reference count or generation (the registry's protocol), or leave a tree
 * half-changed when host memory runs out (an insertion allocates every node
 * it needs before it changes anything).
 *
 * Nodes come from per-stripe arenas (range_pool.c), never one by one from
 * the heap.
 *
 * Why a B+tree: the treap this replaces was threaded through the control
 * blocks, so at 1M live ranges a walk touched ~20 blocks on ~20 lines. Here a
 * search reads a few inner nodes (they stay cached: 4-7% of the leaves'
 * bytes) and one leaf of four lines; it reads the candidate's block for its
 * size only when the size class in the leaf cannot decide.
 *
 * Invariants (tests/support/range_fixture.c checks them all after every change):
 * starts ascend within a node and across leaves; sep[i] of an inner node
 * equals the smallest start under child[i + 1]; every leaf is at depth
 * height; a non-root node holds at least a quarter of its maximum (leaf
 * entries, inner separators) unless it is on the tree's rightmost path,
 * where an append split may leave it with one, or unless its starts and its
 * neighbours' span 2^32 or more (a leaf's starts are 32-bit offsets from its
 * base, so far-apart starts may need leaves of their own). The exact
 * separators are what make the leaf a search for q ends in hold the greatest
 * start <= q (if the tree has one): every start in a leaf other than the
 * leftmost is >= its first, which equals the separator the search passed to
 * get there.
 */
#include <string.h>

#include "range_leaf.h"

/* Key fields of an indexed block were written before it was published and
 * stay unchanged until it is retired, which happens only after it left the
 * index under the stripe lock that the caller holds: relaxed loads suffice. */
static uint32_t dev_of(const bh__block *b) { return bh__block_device(b); }
static uint64_t addr_of(const bh__block *b) { return (uint64_t)AO_load(&b->address); }
static uint64_t size_of(const bh__block *b) { return (uint64_t)AO_load(&b->size); }

static bh__block *block_at(const bh__ranges *r, uint32_t ref) {
    return bh__slab_at(r->slab, bh__range_ref_slot(ref));
}

/* A block's leaf entry ref: its slot, and e with size <= 2^e above it. */
static uint32_t ref_of(const bh__block *b) {
    uint64_t size = size_of(b);
    uint32_t e = size <= 1 ? 0 : 64 - (uint32_t)__builtin_clzll(size - 1);
    return bh__block_slot(b) | e << BH__RANGE_CLASS_SHIFT;
}

void bh__ranges_set_fanout(bh__ranges *r, uint32_t leaf_max, uint32_t inner_max) {
    r->leaf_max = leaf_max < 8 ? 8 : leaf_max > BH__RANGE_LEAF_CAP ? BH__RANGE_LEAF_CAP : leaf_max;
    r->inner_max = inner_max < 4 ? 4 : inner_max > BH__RANGE_INNER_CAP ? BH__RANGE_INNER_CAP : inner_max;
}

/* A stripe holds a tree per domain with ranges in its regions: a list. */
static tree *tree_of(const bh__range_stripe *s, uint32_t device) {
    tree *t = s->trees;
    while (t != NULL && t->device != device)
        t = t->next;
    return t;
}

/* ======================== Searches ======================== */

/* The searches are inlined into each of their three callers (overlap,
 * insertion, removal): as calls they cost about 20 instructions per
 * insertion or removal in a cached tree, a tenth of it. */
#define INLINE inline __attribute__((always_inline))

/* How many of a node's keys are <= q. Every node's key array is padded
 * past its n keys with the greatest value (range_leaf.h), so the search
 * runs over the whole array, a constant size that the compiler unrolls
 * into a row of compares and conditional moves, and only the answer is
 * clamped to n: a loop over n keys cost three times the instructions (the
 * searches were about a third of the index's work at 1K live). Branch-free:
 * with random keys each step of a branching binary search is a coin toss
 * the predictor loses about half the time, and those mispredictions were
 * most of an insertion's or removal's cost in a cached tree. */
/* A step without a branch: gcc turned the conditional form into one once the
 * steps were written out. */
#define STEP(h, key) base += (size_t)(h) & -(size_t)(base[h] key <= q)
#define RANK(keys, n, key) (at = (uint32_t)(base - (keys)) + (base[0] key <= q), at < (n) ? at : (n))
/* The halving steps for 63 keys (63 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1 left)
 * and for 30 (30 -> 15 -> 8 -> 4 -> 2 -> 1), written out: gcc did not
 * unroll the loop over a constant count. */
_Static_assert(BH__RANGE_INNER_CAP == 63 && BH__RANGE_LEAF_CAP == 30, "the steps below are for these sizes");
static INLINE uint32_t inner_rank(const inner *in, uint64_t q) {
    const uint64_t *base = in->sep;
    uint32_t at;
    STEP(31, );
    STEP(16, );
    STEP(8, );
    STEP(4, );
    STEP(2, );
    STEP(1, );
    return RANK(in->sep, in->n, );
}
static INLINE uint32_t offsets_rank(const leaf *l, uint32_t q) {
    const bh__range_entry *base = l->e;
    uint32_t at;
    STEP(15, .off);
    STEP(7, .off);
    STEP(4, .off);
    STEP(2, .off);
    STEP(1, .off);
    return RANK(l->e, l->n, .off);
}
#undef STEP
#undef RANK

/* How many starts of leaf l are <= q. */
static INLINE uint32_t leaf_rank(const leaf *l, uint64_t q) {
    if (q < l->base)
        return 0;
    return q - l->base > SPAN_MAX ? l->n : offsets_rank(l, (uint32_t)(q - l->base));
}

/* The way down to a leaf: node[d] is the inner node at depth d (0 the
 * root), idx[d] the child taken there. */
typedef struct path {
    inner *node[BH__RANGE_MAX_HEIGHT];
    uint32_t idx[BH__RANGE_MAX_HEIGHT];
} path;

/* Asks for every line of a node at once: a binary search would otherwise
 * wait for its lines one after the other, each a miss in a large tree.
 * Constant sizes, so each is a row of prefetch instructions (a loop over a
 * variable size cost more instructions than the search it served). */
static void prefetch_inner(const void *node) {
    for (size_t off = 0; off < sizeof(inner); off += BH__CACHE_LINE)
        __builtin_prefetch((const char *)node + off);
}
static void prefetch_leaf(const void *node) {
    for (size_t off = 0; off < sizeof(leaf); off += BH__CACHE_LINE)
        __builtin_prefetch((const char *)node + off);
}

/* The leaf where start q belongs, and the way there if p is not NULL. */
static INLINE leaf *descend(const tree *t, uint64_t q, path *p) {
    void *node = t->root;
    for (uint32_t d = 0; d < t->height; d++) {
        inner *in = node;
        uint32_t i = inner_rank(in, q);
        if (p != NULL) {
            p->node[d] = in;
            p->idx[d] = i;
        }
        node = in->child[i];
        if (d + 1 < t->height)
            prefetch_inner(node);
        else
            prefetch_leaf(node);
    }
    return node;
}

/* Does the range starting at start, with entry ref, meet [address, address
 * + size)? Only asked of the greatest start below address + size, so it
 * does unless it ends at or before address. Subtraction, not start + size:
 * a range may end exactly at 2^64. The size class decides without the
 * block when the gap is at least 2^e (>= the size); only then is the block
 * read, a miss in a large index. */
static int meets(const bh__ranges *r, uint64_t start, uint32_t ref, uint64_t address) {
    if (start >= address)
        return 1;
    uint64_t gap = address - start;
    uint32_t e = ref >> BH__RANGE_CLASS_SHIFT;
    if (e < 64 && (gap >> e) != 0)
        return 0;
    return gap < size_of(block_at(r, ref));
}

/* Indexed ranges of a domain are disjoint, so the only one that can meet
 * [address, address + size) is the one with the greatest start below
 * address + size: any other starting there ends before it starts. */
bh__block *bh__range_overlap(const bh__ranges *r, const bh__range_stripe *s, uint32_t device,
                             uint64_t address, uint64_t size) {
    const tree *t = tree_of(s, device);
    if (t == NULL)
        return NULL;
    uint64_t last = address + (size - 1); /* callers' ranges end at or below 2^64 */
    const leaf *l = descend(t, last, NULL);
    uint32_t pos = leaf_rank(l, last);
    if (pos == 0)
        return NULL; /* nothing in the domain starts at or below last */
    uint32_t ref = l->e[pos - 1].ref;
    return meets(r, key_at(l, pos - 1), ref, address) ? block_at(r, ref) : NULL;
}

bh__block *bh__range_containing(const bh__ranges *r, const bh__range_stripe *s, uint32_t device,
                                uint64_t address) {
    return bh__range_overlap(r, s, device, address, 1);
}

/* ======================== Insertion ======================== */

/* Is the leaf at the end of p (height levels) the tree's last one? */
static int rightmost(const path *p, uint32_t depth) {
    for (uint32_t d = 0; d < depth; d++)
        if (p->idx[d] != p->node[d]->n)
            return 0;
    return 1;
}

/* The nodes a leaf split may need, allocated before anything changes. */
typedef struct spare {
    tree *t;
    leaf *l;
    inner *in[BH__RANGE_MAX_HEIGHT + 1];
    uint32_t n_in;
} spare;

static void spare_free(bh__range_stripe *s, spare *sp) {
    bh__free(sp->t);
    if (sp->l != NULL)
        bh__range_leaf_free(s, sp->l);
    for (uint32_t i = 0; i < sp->n_in; i++)
        bh__range_inner_free(s, sp->in[i]);
}

/* Allocates what splitting the leaf at the end of p will need: a leaf, an
 * inner node per full ancestor it splits into, a root if all of them are
 * full. 0, or -1 with nothing kept. */
static int spare_for(const bh__ranges *r, bh__range_stripe *s, const tree *t, const path *p, spare *sp) {
    memset(sp, 0, sizeof(*sp));
    uint32_t need = 0;
    int32_t d = (int32_t)t->height - 1;
    while (d >= 0 && p->node[d]->n >= r->inner_max) {
        need++;
        d--;
    }
    if (d < 0)
        need++; /* the root splits too: a new root above it */
    if (t->height + (d < 0) > BH__RANGE_MAX_HEIGHT)
        return -1; /* unreachable below 2^40 ranges even with test fan-outs */
    sp->l = bh__range_leaf_new(r, s);
    if (sp->l == NULL)
        return -1;
    for (; sp->n_in < need; sp->n_in++) {
        sp->in[sp->n_in] = bh__range_inner_new(r, s);
        if (sp->in[sp->n_in] == NULL) {
            spare_free(s, sp);
            return -1;
        }
    }
    return 0;
}

/* Puts separator sep with child c right of it at separator position pos of
 * a full inner node in, moving the upper part to the spare ni. Returns the
 * separator that goes up (the smallest start under ni). An append on the
 * rightmost path keeps in nearly full, as an append split of a leaf keeps
 * the leaf full. */
static uint64_t split_inner(inner *in, inner *ni, uint32_t pos, uint64_t sep, void *c, int append) {
    uint64_t keys[BH__RANGE_INNER_CAP + 1];
    void *kids[BH__RANGE_INNER_CAP + 2];
    uint32_t n = in->n;
    memcpy(keys, in->sep, pos * sizeof(keys[0]));
    keys[pos] = sep;
    memcpy(keys + pos + 1, in->sep + pos, (n - pos) * sizeof(keys[0]));
    memcpy(kids, in->child, (pos + 1) * sizeof(kids[0]));
    kids[pos + 1] = c;
    memcpy(kids + pos + 2, in->child + pos + 1, (n - pos) * sizeof(kids[0]));
    uint32_t m = append ? n - 1 : (n + 1) / 2; /* keys[m] goes up */
    memcpy(in->sep, keys, m * sizeof(keys[0]));
    memcpy(in->child, kids, (m + 1) * sizeof(kids[0]));
    in->n = m;
    ni->level = in->level;
    memcpy(ni->sep, keys + m + 1, (n - m) * sizeof(keys[0]));
    memcpy(ni->child, kids + m + 1, (n + 1 - m) * sizeof(kids[0]));
    ni->n = n - m;
    inner_pad(in);
    inner_pad(ni);
    return keys[m];
}

static void inner_put(inner *in, uint32_t pos, uint64_t sep, void *c) {
    memmove(in->sep + pos + 1, in->sep + pos, (in->n - pos) * sizeof(in->sep[0]));
    memmove(in->child + pos + 2, in->child + pos + 1, (in->n - pos) * sizeof(in->child[0]));
    in->sep[pos] = sep;
    in->child[pos + 1] = c;
    in->n++;
}

/* A full leaf that is not the tree's last (which splits to stay full)
 * first tries to share with a sibling under the same parent that has room
 * for at least two, the new entry included. Without this, random churn
 * leaves leaves about half full (25 host bytes per range at 1M live with
 * 12-byte entries, measured); with it about three quarters. Returns 0 if
 * both siblings are (nearly) full or their starts lie too far away. */
static int insert_via_sibling(const bh__ranges *r, const path *p, uint32_t height, leaf *l, uint32_t pos,
                              uint64_t start, uint32_t ref) {
    inner *par = p->node[height - 1];
    uint32_t i = p->idx[height - 1];
    if (i > 0) {
        leaf *left = par->child[i - 1];
        uint32_t at = left->n + pos;
        if (left->n + 1 < r->leaf_max && leaf_share(r, left, l, 0, &at, start, ref)) {
            par->sep[i - 1] = key_at(l, 0);
            return 1;
        }
    }
    if (i < par->n) {
        leaf *right = par->child[i + 1];
        if (right->n + 1 < r->leaf_max && leaf_share(r, l, right, 0, &pos, start, ref)) {
            par->sep[i] = key_at(right, 0);
            return 1;
        }
    }
    return 0;
}

/* A new domain: a tree of one leaf holding one entry, from the spares. */
static int plant(const bh__ranges *r, bh__range_stripe *s, uint32_t device, uint64_t start, uint32_t ref) {
    spare sp;
    memset(&sp, 0, sizeof(sp));
    sp.t = bh__calloc(1, sizeof(tree));
    sp.l = sp.t != NULL ? bh__range_leaf_new(r, s) : NULL;
    if (sp.l == NULL) {
        spare_free(s, &sp);
        return -1;
    }
    leaf_put(sp.l, 0, start, ref);
    sp.t->root = sp.l;
    sp.t->device = device;
    sp.t->height = 0;
    sp.t->next = s->trees;
    s->trees = sp.t;
    return 0;
}

/* The leaf at the end of p got a new right sibling nl (from sp): its first
 * start goes up as a separator, splitting full ancestors (from sp too). */
static void grow(const bh__ranges *r, tree *t, const path *p, spare *sp, int append) {
    uint64_t up = key_at(sp->l, 0);
    void *right = sp->l;
    uint32_t used = 0;
    for (int32_t d = (int32_t)t->height - 1; d >= 0; d--) {
        inner *in = p->node[d];
        if (in->n < r->inner_max) {
            inner_put(in, p->idx[d], up, right);
            return;
        }
        inner *ni = sp->in[used++];
        up = split_inner(in, ni, p->idx[d], up, right, append);
        right = ni;
    }
    /* The root split: a new root above the two halves. */
    inner *root = sp->in[used];
    root->n = 1;
    root->level = t->height + 1;
    root->sep[0] = up;
    root->child[0] = t->root;
    root->child[1] = right;
    inner_pad(root);
    t->root = root;
    t->height++;
}

/* Where a leaf l that cannot simply take start (at pos) splits: entries
 * [0, m) of l with start put in stay, the rest go to a new right sibling.
 * Full and start fits: halves, or an append to the tree's last leaf keeps
 * l full and starts the sibling with the new entry alone (an allocator
 * bumping addresses then leaves full leaves behind it). Start 2^32 or more
 * away from l's other end: it is alone. That happens only at either end
 * (pos 0, in the leftmost leaf, or pos n): l's starts span less than 2^32,
 * so a start between two of them is nearer than that to both. */
static uint32_t split_point(const leaf *l, uint32_t pos, uint64_t start, int append) {
    if (leaf_fits(l, start))
        return append ? l->n : (l->n + 1) / 2;
    return pos == 0 ? 1 : l->n;
}

/* Check and insert are one descent: the leaf where the candidate (the
 * greatest start below address + size) lives is also where address goes,
 * right after it, when it does not meet the new range. */
bh__block *bh__range_insert(const bh__ranges *r, bh__range_stripe *s, bh__block *b, bh_status *st) {
    uint32_t device = dev_of(b), ref = ref_of(b);
    uint64_t start = addr_of(b), last = start + (size_of(b) - 1);
    *st = BH_OK;
    tree *t = tree_of(s, device);
    if (t == NULL) {
        if (plant(r, s, device, start, ref) != 0)
            *st = BH_ENOMEM;
        return NULL;
    }
    path p;
    leaf *l = descend(t, last, &p);
    uint32_t pos = leaf_rank(l, last);
    if (pos > 0 && meets(r, key_at(l, pos - 1), l->e[pos - 1].ref, start))
        return block_at(r, l->e[pos - 1].ref);
    /* Every start left of pos is below start, every one right of it above
     * last; pos is 0 only in the leftmost leaf, which has no separator. */
    int fits = leaf_fits(l, start);
    if (l->n < r->leaf_max && fits) {
        leaf_put(l, pos, start, ref);
        return NULL;
    }
    int append = pos == l->n && rightmost(&p, t->height);
    if (!append && fits && t->height > 0 && insert_via_sibling(r, &p, t->height, l, pos, start, ref))
        return NULL;
    spare sp;
    if (spare_for(r, s, t, &p, &sp) != 0) {
        *st = BH_ENOMEM;
        return NULL;
    }
    leaf_split(l, sp.l, pos, start, ref, split_point(l, pos, start, append));
    grow(r, t, &p, &sp, append);
    return NULL;
}

/* ======================== Removal ======================== */

/* The leaf at the end of p lost its first start: the separator that equals
 * it is in the deepest ancestor where the way down did not take child 0
 * (none: the leaf is the leftmost, which no separator bounds). */
static void fix_separator(const path *p, uint32_t height, uint64_t first) {
    for (int32_t d = (int32_t)height - 1; d >= 0; d--) {
        if (p->idx[d] > 0) {
            p->node[d]->sep[p->idx[d] - 1] = first;
            return;
        }
    }
}

/* One separator of parent par (position k, between a and b) rotates: b's
 * first child moves to a's end, or (to_right) a's last to b's front. */
static void inner_rotate(inner *par, uint32_t k, inner *a, inner *b, int to_right) {
    if (to_right) {
        memmove(b->sep + 1, b->sep, b->n * sizeof(b->sep[0]));
        memmove(b->child + 1, b->child, (b->n + 1) * sizeof(b->child[0]));
        b->sep[0] = par->sep[k];
        b->child[0] = a->child[a->n];
        par->sep[k] = a->sep[a->n - 1];
        a->n--;
        b->n++;
        a->sep[a->n] = UINT64_MAX; /* the padding */
    } else {
        a->sep[a->n] = par->sep[k];
        a->child[a->n + 1] = b->child[0];
        par->sep[k] = b->sep[0];
        memmove(b->sep, b->sep + 1, (b->n - 1) * sizeof(b->sep[0]));
        memmove(b->child, b->child + 1, b->n * sizeof(b->child[0]));
        a->n++;
        b->n--;
        b->sep[b->n] = UINT64_MAX;
    }
}

/* Drops separator k and child k + 1 of in (a merge emptied that child). */
static void inner_drop(inner *in, uint32_t k) {
    memmove(in->sep + k, in->sep + k + 1, (in->n - k - 1) * sizeof(in->sep[0]));
    memmove(in->child + k + 1, in->child + k + 2, (in->n - k - 1) * sizeof(in->child[0]));
    in->n--;
    in->sep[in->n] = UINT64_MAX;
}

/* Node node at depth d + 1 (a leaf when d + 1 is the height) fell below a
 * quarter full: it merges with a sibling if both fit in one node, else
 * takes from it until they are even. Returns 1 if the parent lost a
 * separator (and may now be short itself). */
static int refill(const bh__ranges *r, bh__range_stripe *s, const path *p, uint32_t d, int is_leaf) {
    inner *par = p->node[d];
    uint32_t i = p->idx[d];
    uint32_t k = i > 0 ? i - 1 : 0; /* the separator between the pair */
    void *a = par->child[k], *b = par->child[k + 1];
    if (is_leaf) {
        /* Far-apart starts may not share (leaf_share 0): the short leaf
         * stays as it is, which only such starts cause. */
        leaf *la = a, *lb = b;
        if (!leaf_share(r, la, lb, 1, NULL, 0, 0))
            return 0;
        if (lb->n == 0) {
            bh__range_leaf_free(s, lb);
            inner_drop(par, k);
            return 1;
        }
        par->sep[k] = key_at(lb, 0);
        return 0;
    }
    inner *ia = a, *ib = b;
    if (ia->n + ib->n + 1 <= r->inner_max) {
        ia->sep[ia->n] = par->sep[k];
        memcpy(ia->sep + ia->n + 1, ib->sep, ib->n * sizeof(ib->sep[0]));
        memcpy(ia->child + ia->n + 1, ib->child, (ib->n + 1) * sizeof(ib->child[0]));
        ia->n += ib->n + 1;
        bh__range_inner_free(s, ib);
        inner_drop(par, k);
        return 1;
    }
    int to_right = ia->n > ib->n;
    for (uint32_t moves = (to_right ? ia->n - ib->n : ib->n - ia->n) / 2; moves > 0; moves--)
        inner_rotate(par, k, ia, ib, to_right);
    return 0;
}

static void drop_tree(bh__range_stripe *s, tree *t) {
    tree **link = &s->trees;
    while (*link != t)
        link = &(*link)->next;
    *link = t->next;
    bh__range_leaf_free(s, t->root); /* at height 0 */
    bh__free(t);
}

/* Takes entry pos out of leaf l. The base stays: it is still <= every
 * start left. */
static INLINE void leaf_take(leaf *l, uint32_t pos) {
    memmove(l->e + pos, l->e + pos + 1, (l->n - pos - 1) * sizeof(l->e[0]));
    l->n--;
    l->e[l->n].off = UINT32_MAX; /* the padding */
}

/* A removal from a leaf under inner nodes that changes more than the leaf:
 * its first start (a separator names it) or its fill (below a quarter).
 * The entry at start is in the tree (bh__range_remove found it, under the
 * same lock); the way down is found again, with the path this time. */
static __attribute__((noinline)) void remove_reshaping(const bh__ranges *r, bh__range_stripe *s, tree *t,
                                                       uint64_t start) {
    path p;
    leaf *l = descend(t, start, &p);
    uint32_t pos = leaf_rank(l, start) - 1;
    leaf_take(l, pos);
    if (pos == 0 && l->n > 0)
        fix_separator(&p, t->height, key_at(l, 0));
    /* Bottom up: each level refills its short node; a merge takes a
     * separator from the level above, which may then be short in turn. A
     * short leaf usually still has an entry, so its separator was fixed
     * above; one that far-apart starts left alone may now be empty: it
     * merges with its sibling, and if it is its parent's first child, what
     * it holds then starts with that sibling's first start, which the
     * separator naming it must say (before a level above changes). */
    if (l->n >= r->leaf_max / 4)
        return;
    int d = (int)t->height - 1, emptied = l->n == 0;
    if (!refill(r, s, &p, (uint32_t)d, 1))
        return;
    if (emptied && p.idx[d] == 0)
        fix_separator(&p, t->height, key_at(l, 0));
    for (d--; d >= 0; d--) {
        if (p.node[d + 1]->n >= r->inner_max / 4)
            return;
        if (!refill(r, s, &p, (uint32_t)d, 0))
            return;
    }
    inner *root = t->root;
    if (root->n == 0) { /* the root's last two children merged: collapse it */
        t->root = root->child[0];
        t->height--;
        bh__range_inner_free(s, root);
    }
}

/* Never allocates: merges and moves only, so a removal cannot fail. Nearly
 * every removal changes its leaf alone and needs no path down to it; the
 * rest (a leaf's first start, or a leaf falling below a quarter: about one
 * removal in twenty at 1K live) descends again in remove_reshaping. Without
 * the path's stores and its frame a removal is 188 -> 182 instructions at
 * 1K live (callgrind), the second descents included. */
void bh__range_remove(const bh__ranges *r, bh__range_stripe *s, const bh__block *b) {
    tree *t = tree_of(s, dev_of(b));
    if (t == NULL)
        return;
    uint64_t start = addr_of(b);
    leaf *l = descend(t, start, NULL);
    uint32_t pos = leaf_rank(l, start);
    if (pos == 0 || key_at(l, pos - 1) != start || bh__range_ref_slot(l->e[pos - 1].ref) != bh__block_slot(b))
        return; /* not indexed (a takeover took it out; another block has the start) */
    pos--;
    if (t->height == 0) {
        leaf_take(l, pos);
        if (l->n == 0)
            drop_tree(s, t);
        return;
    }
    if (pos == 0 || l->n - 1 < r->leaf_max / 4) {
        remove_reshaping(r, s, t, start);
        return;
    }
    leaf_take(l, pos);
}
