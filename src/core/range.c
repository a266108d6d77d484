/*
 * range.c - the range index: which allocation covers an address.
 *
 * Owns: for every domain, the ordered set of [address, address + size) ranges
 * of the blocks that are live, or dying with their free not yet returned, as
 * a B+tree of host-memory nodes (layouts in internal.h). Domains are spread
 * over BH__RANGE_STRIPES stripes, each with its own mutex; all ranges of one
 * domain live in one stripe, so "does this range overlap anything?" and
 * "insert it" are one step under one lock, whichever intern-table shards the
 * keys hash to. Each domain of a stripe has its own tree, so keys are bare
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
 * bytes) and one leaf, and reads one block, the candidate's, for its size.
 *
 * Invariants (tests/test_internals.c checks them all after every change):
 * starts ascend within a node and across leaves; sep[i] of an inner node
 * equals the smallest start under child[i + 1]; every leaf is at depth
 * height; a non-root node holds at least a quarter of its maximum (leaf
 * entries, inner separators) unless it is on the tree's rightmost path,
 * where an append split may leave it with one. The exact separators are what
 * make the leaf a search for q ends in hold the greatest start <= q (if the
 * tree has one): every start in a leaf other than the leftmost is >= its
 * first, which equals the separator the search passed to get there.
 */
#include <string.h>

#include "internal.h"

/* Key fields of an indexed block were written before it was published and
 * stay unchanged until it is retired, which happens only after it left the
 * index under the stripe lock that the caller holds: relaxed loads suffice. */
static uint32_t dev_of(const bh__block *b) { return bh__block_device(b); }
static uint64_t addr_of(const bh__block *b) { return (uint64_t)AO_load(&b->address); }
static uint64_t size_of(const bh__block *b) { return (uint64_t)AO_load(&b->size); }

static bh__block *block_at(const bh__ranges *r, uint32_t slot) { return bh__slab_at(r->slab, slot); }

typedef bh__range_leaf leaf;
typedef bh__range_inner inner;
typedef bh__range_tree tree;

void bh__ranges_set_fanout(bh__ranges *r, uint32_t leaf_max, uint32_t inner_max) {
    r->leaf_max = leaf_max < 8 ? 8 : leaf_max > BH__RANGE_LEAF_CAP ? BH__RANGE_LEAF_CAP : leaf_max;
    r->inner_max = inner_max < 4 ? 4 : inner_max > BH__RANGE_INNER_CAP ? BH__RANGE_INNER_CAP : inner_max;
}

bh__range_stripe *bh__range_stripe_of(bh__ranges *r, uint32_t device) {
    return &r->stripes[(bh__key_hash(device, 0) >> 60) & (BH__RANGE_STRIPES - 1)];
}

/* A stripe holds the domains that hash to it, usually one or two: a list. */
static tree *tree_of(const bh__range_stripe *s, uint32_t device) {
    tree *t = s->trees;
    while (t != NULL && t->device != device)
        t = t->next;
    return t;
}

/* ======================== Searches ======================== */

/* How many of the n ascending keys are <= q. Branch-free: with random keys
 * each step of a branching binary search is a coin toss the predictor
 * loses about half the time, and those mispredictions were most of an
 * insertion's or removal's cost in a cached tree (1K live). */
static uint32_t count_at_or_below(const uint64_t *keys, uint32_t n, uint64_t q) {
    if (n == 0)
        return 0;
    const uint64_t *base = keys;
    while (n > 1) {
        uint32_t half = n / 2;
        /* A conditional move (gcc makes one of this form): the answer stays
         * in [base, base + n]. */
        base = base[half] <= q ? base + half : base;
        n -= half;
    }
    return (uint32_t)(base - keys) + (base[0] <= q);
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
static leaf *descend(const tree *t, uint64_t q, path *p) {
    void *node = t->root;
    for (uint32_t d = 0; d < t->height; d++) {
        inner *in = node;
        uint32_t i = count_at_or_below(in->sep, in->n, q);
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

/* Does the range starting at start, of block c, meet [address, address +
 * size)? Only asked of the greatest start below address + size, so it does
 * unless it ends at or before address. Subtraction, not start + size: a
 * range may end exactly at 2^64. */
static int meets(const bh__block *c, uint64_t start, uint64_t address) {
    return start >= address || address - start < size_of(c);
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
    uint32_t pos = count_at_or_below(l->start, l->n, last);
    if (pos == 0)
        return NULL; /* nothing in the domain starts at or below last */
    bh__block *c = block_at(r, l->slot[pos - 1]);
    return meets(c, l->start[pos - 1], address) ? c : NULL;
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

/* The nodes an insertion may need, allocated before anything changes. */
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

/* Allocates what inserting into leaf l (at the end of p) will need: a leaf
 * if l is full, an inner node per full ancestor it splits into, a root if
 * all of them are full. 0, or -1 with nothing kept. */
static int spare_for(const bh__ranges *r, bh__range_stripe *s, const tree *t, const leaf *l, const path *p,
                     spare *sp) {
    memset(sp, 0, sizeof(*sp));
    if (l->n < r->leaf_max)
        return 0;
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

/* Puts (start, slot) at pos of a full leaf l, moving the upper part to the
 * spare leaf nl. An append to the tree's last leaf keeps l full and starts
 * nl with the new entry alone: an allocator bumping addresses then leaves
 * full leaves behind it, not half-empty ones. */
static void split_leaf(leaf *l, leaf *nl, uint32_t pos, uint64_t start, uint32_t slot, int append) {
    uint64_t keys[BH__RANGE_LEAF_CAP + 1];
    uint32_t slots[BH__RANGE_LEAF_CAP + 1];
    uint32_t n = l->n;
    memcpy(keys, l->start, pos * sizeof(keys[0]));
    memcpy(slots, l->slot, pos * sizeof(slots[0]));
    keys[pos] = start;
    slots[pos] = slot;
    memcpy(keys + pos + 1, l->start + pos, (n - pos) * sizeof(keys[0]));
    memcpy(slots + pos + 1, l->slot + pos, (n - pos) * sizeof(slots[0]));
    uint32_t m = append ? n : (n + 1) / 2;
    memcpy(l->start, keys, m * sizeof(keys[0]));
    memcpy(l->slot, slots, m * sizeof(slots[0]));
    l->n = m;
    memcpy(nl->start, keys + m, (n + 1 - m) * sizeof(keys[0]));
    memcpy(nl->slot, slots + m, (n + 1 - m) * sizeof(slots[0]));
    nl->n = n + 1 - m;
}

/* Puts separator sep with child c right of it at separator position pos of
 * a full inner node in, moving the upper part to the spare ni. Returns the
 * separator that goes up (the smallest start under ni). An append on the
 * rightmost path keeps in nearly full, as split_leaf does. */
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
    return keys[m];
}

static void leaf_put(leaf *l, uint32_t pos, uint64_t start, uint32_t slot) {
    memmove(l->start + pos + 1, l->start + pos, (l->n - pos) * sizeof(l->start[0]));
    memmove(l->slot + pos + 1, l->slot + pos, (l->n - pos) * sizeof(l->slot[0]));
    l->start[pos] = start;
    l->slot[pos] = slot;
    l->n++;
}

static void inner_put(inner *in, uint32_t pos, uint64_t sep, void *c) {
    memmove(in->sep + pos + 1, in->sep + pos, (in->n - pos) * sizeof(in->sep[0]));
    memmove(in->child + pos + 2, in->child + pos + 1, (in->n - pos) * sizeof(in->child[0]));
    in->sep[pos] = sep;
    in->child[pos + 1] = c;
    in->n++;
}

/* Moves k entries between adjacent leaves a (left) and b (right) of one
 * parent; toward b if to_right. */
static void leaf_shift(leaf *a, leaf *b, uint32_t k, int to_right) {
    if (to_right) {
        memmove(b->start + k, b->start, b->n * sizeof(b->start[0]));
        memmove(b->slot + k, b->slot, b->n * sizeof(b->slot[0]));
        memcpy(b->start, a->start + a->n - k, k * sizeof(b->start[0]));
        memcpy(b->slot, a->slot + a->n - k, k * sizeof(b->slot[0]));
        a->n -= k;
        b->n += k;
    } else {
        memcpy(a->start + a->n, b->start, k * sizeof(a->start[0]));
        memcpy(a->slot + a->n, b->slot, k * sizeof(a->slot[0]));
        memmove(b->start, b->start + k, (b->n - k) * sizeof(b->start[0]));
        memmove(b->slot, b->slot + k, (b->n - k) * sizeof(b->slot[0]));
        a->n += k;
        b->n -= k;
    }
}

/* A full leaf that is not the tree's last (which splits to stay full)
 * first tries to pass entries to a sibling under the same parent that has
 * room for at least two, and then takes (start, slot) at pos itself or
 * gives it to that sibling. Without this, random churn leaves leaves about
 * half full (25 host bytes per range at 1M live, measured); with it about
 * three quarters. Returns 0 if both siblings are (nearly) full. */
static int insert_via_sibling(const bh__ranges *r, const path *p, uint32_t height, leaf *l, uint32_t pos,
                              uint64_t start, uint32_t slot) {
    inner *par = p->node[height - 1];
    uint32_t i = p->idx[height - 1];
    if (i > 0) {
        leaf *left = par->child[i - 1];
        if (left->n + 1 < r->leaf_max) {
            uint32_t k = (r->leaf_max - left->n) / 2; /* >= 1, and left keeps room for the new entry */
            leaf_shift(left, l, k, 0);
            if (pos <= k) /* before l's new first entry: into left */
                leaf_put(left, left->n - k + pos, start, slot);
            else
                leaf_put(l, pos - k, start, slot);
            par->sep[i - 1] = l->start[0];
            return 1;
        }
    }
    if (i < par->n) {
        leaf *right = par->child[i + 1];
        if (right->n + 1 < r->leaf_max) {
            uint32_t k = (r->leaf_max - right->n) / 2, keep = l->n - k;
            leaf_shift(l, right, k, 1);
            if (pos <= keep)
                leaf_put(l, pos, start, slot);
            else /* never right's first: the separator stays right's old first moved entry */
                leaf_put(right, pos - keep, start, slot);
            par->sep[i] = right->start[0];
            return 1;
        }
    }
    return 0;
}

/* A new domain: a tree of one leaf holding one entry, from the spares. */
static int plant(const bh__ranges *r, bh__range_stripe *s, uint32_t device, uint64_t start, uint32_t slot) {
    spare sp;
    memset(&sp, 0, sizeof(sp));
    sp.t = bh__calloc(1, sizeof(tree));
    sp.l = sp.t != NULL ? bh__range_leaf_new(r, s) : NULL;
    if (sp.l == NULL) {
        spare_free(s, &sp);
        return -1;
    }
    leaf_put(sp.l, 0, start, slot);
    sp.t->root = sp.l;
    sp.t->device = device;
    sp.t->height = 0;
    sp.t->next = s->trees;
    s->trees = sp.t;
    return 0;
}

/* Check and insert are one descent: the leaf where the candidate (the
 * greatest start below address + size) lives is also where address goes,
 * right after it, when it does not meet the new range. */
bh__block *bh__range_insert(const bh__ranges *r, bh__range_stripe *s, bh__block *b, bh_status *st) {
    uint32_t device = dev_of(b);
    uint64_t start = addr_of(b), last = start + (size_of(b) - 1);
    *st = BH_OK;
    tree *t = tree_of(s, device);
    if (t == NULL) {
        if (plant(r, s, device, start, bh__block_slot(b)) != 0)
            *st = BH_ENOMEM;
        return NULL;
    }
    path p;
    leaf *l = descend(t, last, &p);
    uint32_t pos = count_at_or_below(l->start, l->n, last);
    if (pos > 0) {
        bh__block *c = block_at(r, l->slot[pos - 1]);
        if (meets(c, l->start[pos - 1], start))
            return c;
    }
    /* Every start left of pos is below start, every one right of it above
     * last; pos is 0 only in the leftmost leaf, which has no separator. */
    if (l->n < r->leaf_max) {
        leaf_put(l, pos, start, bh__block_slot(b));
        return NULL;
    }
    int append = pos == l->n && rightmost(&p, t->height);
    if (!append && t->height > 0 && insert_via_sibling(r, &p, t->height, l, pos, start, bh__block_slot(b)))
        return NULL;
    spare sp;
    if (spare_for(r, s, t, l, &p, &sp) != 0) {
        *st = BH_ENOMEM;
        return NULL;
    }
    split_leaf(l, sp.l, pos, start, bh__block_slot(b), append);
    uint64_t up = sp.l->start[0];
    void *right = sp.l;
    uint32_t used = 0;
    for (int32_t d = (int32_t)t->height - 1; d >= 0; d--) {
        inner *in = p.node[d];
        if (in->n < r->inner_max) {
            inner_put(in, p.idx[d], up, right);
            return NULL;
        }
        inner *ni = sp.in[used++];
        up = split_inner(in, ni, p.idx[d], up, right, append);
        right = ni;
    }
    /* The root split: a new root above the two halves. */
    inner *root = sp.in[used];
    root->n = 1;
    root->level = t->height + 1;
    root->sep[0] = up;
    root->child[0] = t->root;
    root->child[1] = right;
    t->root = root;
    t->height++;
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
    } else {
        a->sep[a->n] = par->sep[k];
        a->child[a->n + 1] = b->child[0];
        par->sep[k] = b->sep[0];
        memmove(b->sep, b->sep + 1, (b->n - 1) * sizeof(b->sep[0]));
        memmove(b->child, b->child + 1, b->n * sizeof(b->child[0]));
        a->n++;
        b->n--;
    }
}

/* Drops separator k and child k + 1 of in (a merge emptied that child). */
static void inner_drop(inner *in, uint32_t k) {
    memmove(in->sep + k, in->sep + k + 1, (in->n - k - 1) * sizeof(in->sep[0]));
    memmove(in->child + k + 1, in->child + k + 2, (in->n - k - 1) * sizeof(in->child[0]));
    in->n--;
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
        leaf *la = a, *lb = b;
        if (la->n + lb->n <= r->leaf_max) {
            leaf_shift(la, lb, lb->n, 0);
            bh__range_leaf_free(s, lb);
            inner_drop(par, k);
            return 1;
        }
        int to_right = la->n > lb->n;
        leaf_shift(la, lb, (to_right ? la->n - lb->n : lb->n - la->n) / 2, to_right);
        par->sep[k] = lb->start[0];
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

/* Never allocates: merges and moves only, so a removal cannot fail. */
void bh__range_remove(const bh__ranges *r, bh__range_stripe *s, const bh__block *b) {
    tree *t = tree_of(s, dev_of(b));
    if (t == NULL)
        return;
    uint64_t start = addr_of(b);
    path p;
    leaf *l = descend(t, start, &p);
    uint32_t pos = count_at_or_below(l->start, l->n, start);
    if (pos == 0 || l->start[pos - 1] != start || l->slot[pos - 1] != bh__block_slot(b))
        return; /* not indexed (a takeover took it out; another block has the start) */
    pos--;
    memmove(l->start + pos, l->start + pos + 1, (l->n - pos - 1) * sizeof(l->start[0]));
    memmove(l->slot + pos, l->slot + pos + 1, (l->n - pos - 1) * sizeof(l->slot[0]));
    l->n--;
    if (t->height == 0) {
        if (l->n == 0)
            drop_tree(s, t);
        return;
    }
    if (pos == 0 && l->n > 0)
        fix_separator(&p, t->height, l->start[0]);
    /* Bottom up: each level refills its short node; a merge takes a
     * separator from the level above, which may then be short in turn. A
     * short leaf other than the rightmost still has an entry (a quarter of
     * at least 8 is 2), so its separator was fixed above. */
    if (l->n >= r->leaf_max / 4)
        return;
    int d = (int)t->height - 1;
    if (!refill(r, s, &p, (uint32_t)d, 1))
        return;
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
