/*
 * range_index.h - the range index's layouts and the bh__range functions
 * (range.c, range_leaf.c, range_pool.c, range_stripes.c), shared by the
 * library's files through internal.h.
 *
 * Owns: the stripes, trees, nodes and arenas of every domain's index of
 * live ranges, and what the rest of the library may ask of it.
 * Must never: be included on its own (internal.h includes it where the
 * block, the slab and host memory it builds on are declared), be
 * installed, or be included outside src/ and the white-box tests.
 */
#ifndef BH_RANGE_INDEX_H
#define BH_RANGE_INDEX_H

/* Ranges of live blocks (and of dying ones whose free has not returned), per
 * domain, for overlap checks and bh_lookup_containing. Lock order: a table
 * shard's lock, then range stripes' locks in ascending stripe index (then
 * their arenas' lock), then the slab's; never the other way round. A
 * domain's addresses are cut into regions of 2^region_shift bytes, each
 * hashed (with the domain) to a stripe; a range is in the tree of every
 * stripe whose region it touches (range_stripes.c).
 *
 * Each domain's ranges are a B+tree of host-memory nodes keyed by start
 * address: leaves hold the starts (as 32-bit offsets from a per-leaf base)
 * beside the blocks' 32-bit refs (slot, and a bound on the size), so a
 * search compares keys without touching a block. A separator
 * in an inner node equals the smallest start in the subtree to its right
 * ("exact" separators): the leaf a search for q ends in then holds the
 * greatest start <= q, unless there is none in the whole tree. */
#define BH__RANGE_STRIPES 16      /* power of two, at most 32 (a stripe set is a 32-bit mask) */
#define BH__RANGE_REGION_SHIFT 22 /* 4 MiB regions: a range of 4 MiB or less crosses at most one edge */
#define BH__RANGE_LEAF_CAP 30     /* entries per leaf: 256 bytes, four lines */
#define BH__RANGE_INNER_CAP 63    /* separators per inner node (64 children): 16 lines */
#define BH__RANGE_MAX_HEIGHT 40   /* inner levels; a tree never gets near it (see range.c) */
/* A leaf entry's ref: the block's slot, and above it the size's class e
 * (size <= 2^e; 0..64), which often proves without reading the block that a
 * range ends before a given address. */
#define BH__RANGE_CLASS_SHIFT BH__SLOT_BITS
static inline uint32_t bh__range_ref_slot(uint32_t ref) { return ref & BH__SLOT_MASK; }

/* A leaf entry: a start's offset from the leaf's base and the block's ref
 * side by side, so an insertion or removal shifts one array (one memmove)
 * and the entry a search ends on carries its ref in the same line. */
typedef struct bh__range_entry {
    uint32_t off; /* start - base: ascending, so a leaf's starts span < 2^32 */
    uint32_t ref; /* the block whose range starts at base + off */
} bh__range_entry;

typedef struct bh__range_leaf {
    uint32_t n;                            /* entries in use */
    uint32_t level;                        /* 0 (a leaf); fills what would be padding */
    uint64_t base;                         /* <= every start in the leaf; each is base + e[i].off */
    bh__range_entry e[BH__RANGE_LEAF_CAP]; /* in start order */
} bh__range_leaf;
_Static_assert(sizeof(bh__range_leaf) == 4 * BH__CACHE_LINE, "a leaf is four lines");

typedef struct bh__range_inner {
    uint32_t n;                           /* separators in use; n + 1 children */
    uint32_t level;                       /* 1 + the children's: lets a checker tell the kinds apart */
    uint64_t sep[BH__RANGE_INNER_CAP];    /* sep[i]: smallest start under child[i + 1] */
    void *child[BH__RANGE_INNER_CAP + 1]; /* inner nodes, or leaves at the last level */
} bh__range_inner;

/* One domain's tree; freed when its last range leaves. */
typedef struct bh__range_tree {
    struct bh__range_tree *next; /* the stripe's next domain */
    void *root;                  /* a leaf when height is 0, else an inner node; never NULL */
    uint32_t device;
    uint32_t height; /* inner levels above the leaves */
} bh__range_tree;

/* Nodes of one kind (leaves, or inner nodes) for one stripe, under its
 * lock: carved in order from chunks of the index's arenas (below); a freed
 * node waits on a list for the next taker. */
typedef struct bh__range_pool {
    void *free;     /* freed nodes, each holding the next one's address */
    char *carve;    /* the current chunk's first node never handed out */
    char *end;      /* the current chunk's end */
    uint32_t count; /* chunks taken so far (a test hook reads it) */
} bh__range_pool;

/* The arenas every stripe's pools take chunks from, under lock (nested in a
 * stripe's): doubling up to BH__HUGE_PAGE, given back only at fini. */
typedef struct bh__range_arenas {
    pthread_mutex_t lock;
    void *newest;      /* each arena begins with the previous one's address */
    char *carve, *end; /* under lock: the newest arena's part not handed out */
    uint32_t count;    /* under lock */
} bh__range_arenas;

typedef struct bh__range_stripe {
    _Alignas(BH__CACHE_LINE) bh__stripe_lock lock;
    bh__range_tree *trees; /* under lock: one per domain with indexed ranges */
    bh__range_pool leaves; /* under lock */
    bh__range_pool inners; /* under lock */
} bh__range_stripe;

typedef struct bh__ranges {
    bh__range_stripe stripes[BH__RANGE_STRIPES];
    const struct bh__slab *slab; /* immutable: maps the leaves' slots to blocks */
    uint32_t leaf_max;           /* immutable after init: BH__RANGE_LEAF_CAP but in tests */
    uint32_t inner_max;          /* immutable after init: BH__RANGE_INNER_CAP but in tests */
    size_t arena_first;          /* immutable after init: bytes of a pool's first arena */
    size_t arena_max;            /* immutable after init: BH__HUGE_PAGE but in tests */
    uint32_t region_shift;       /* immutable after init: BH__RANGE_REGION_SHIFT but in tests */
    bh__range_arenas *arenas;    /* immutable after init: &arena_state (changed under its own lock) */
    bh__range_arenas arena_state;
} bh__ranges;

void bh__ranges_init(bh__ranges *r, const struct bh__slab *slab);
/* Frees every node (the registry is going away). */
void bh__ranges_fini(bh__ranges *r);
/* Test hook, on an empty index only: narrower nodes (leaf_max >= 8,
 * inner_max >= 4, each at most its cap) so a few hundred ranges make a
 * tree of several levels. */
void bh__ranges_set_fanout(bh__ranges *r, uint32_t leaf_max, uint32_t inner_max);
/* Test hook, on an empty index only: arenas of first bytes, doubling up
 * to max (each at least one node), so a few nodes need a new arena. */
void bh__ranges_set_arenas(bh__ranges *r, size_t first, size_t max);
/* Test hook, on an empty index only: regions of 2^shift bytes (shift <= 63),
 * so that small ranges cross regions and stripes. */
void bh__ranges_set_region_shift(bh__ranges *r, uint32_t shift);

/* range_stripes.c: the stripes of a range, and the whole domain's index on
 * top of range.c's per-stripe trees. A set has bit i for stripe i. */
typedef uint32_t bh__stripe_set;
/* The stripe of a domain's region: hashed, not the region modulo the
 * stripe count, so that allocators' power-of-two spacing (arenas of 2^k
 * regions) does not put every thread's region j on one stripe. A multiply,
 * a fold and a multiply, not the key hash's finaliser (two more steps): a
 * churn computes two of these, and the finaliser's were 36 of the index's
 * 597 instructions per churn at 1K live (callgrind). The fold is needed: a
 * bare multiply's top bits put 16 regions spaced 2^k apart on two or three
 * stripes for some k (test_range_race, regions_spread_over_the_stripes). */
#define BH__RANGE_STRIPE_BITS 4 /* log2(BH__RANGE_STRIPES) */
static inline uint32_t bh__region_stripe(uint32_t device, uint64_t region) {
    uint64_t x = (region ^ (uint64_t)device * 0xc4ceb9fe1a85ec53ull) * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(((x ^ x >> 32) * 0xff51afd7ed558ccdull) >> (64 - BH__RANGE_STRIPE_BITS));
}
/* The stripes whose trees hold [address, address + size): the same range,
 * the same set. Inline for the common case, a range inside one region (one
 * hash); crossing ranges take the call. */
bh__stripe_set bh__range_stripes_crossing(const bh__ranges *r, uint32_t device, uint64_t address,
                                          uint64_t size);
static inline bh__stripe_set bh__range_stripes(const bh__ranges *r, uint32_t device, uint64_t address,
                                               uint64_t size) {
    uint64_t region = address >> r->region_shift;
    if (((address + (size - 1)) >> r->region_shift) != region) /* ranges end at or below 2^64 */
        return bh__range_stripes_crossing(r, device, address, size);
    return (bh__stripe_set)1 << bh__region_stripe(device, region);
}
/* The stripe of the region that holds address. */
bh__range_stripe *bh__range_stripe_of(bh__ranges *r, uint32_t device, uint64_t address);
/* Locks (ascending) or unlocks every stripe of set. A holder that needs more
 * stripes unlocks all it holds and locks the union: never one more on top.
 * Inline: as calls, with the set's loop, they were a fifth of what the two
 * pairs of a churn cost at 1K live (callgrind). */
static inline void bh__ranges_lock(bh__ranges *r, bh__stripe_set set) {
    for (; set != 0; set &= set - 1) /* ascending, as every thread that holds more than one: no cycle */
        bh__stripe_lock_take(&r->stripes[__builtin_ctz(set)].lock);
}
static inline void bh__ranges_unlock(bh__ranges *r, bh__stripe_set set) {
    for (; set != 0; set &= set - 1)
        bh__stripe_lock_give(&r->stripes[__builtin_ctz(set)].lock);
}
/* The stripe of a range's set when it has one (nearly every range: one
 * region), else NULL; set is never empty. Its callers then take and let go
 * of that one lock, and go to its tree, with the stripe found once: the set
 * loops above, each finding it again, were 45 instructions of a churn's 566
 * at 1K live (callgrind). */
static inline bh__range_stripe *bh__ranges_one(bh__ranges *r, bh__stripe_set set) {
    return (set & (set - 1)) == 0 ? &r->stripes[__builtin_ctz(set)] : NULL;
}
/* In a fork child: 1 if no stripe lock was held at the fork (each is
 * tried, never waited for, and left as it was). */
int bh__ranges_unlocked(bh__ranges *r);
bh__stripe_set bh__ranges_stripes_of(const bh__ranges *r, const bh__block *b); /* an indexed block's */
/* The same answers as the per-stripe functions below, for the whole domain,
 * under the locks of the range's stripes (bh__range_stripes; for
 * containing, address's stripe; for remove, b's): overlap and insert name
 * the block with the greatest start that meets the range, as one tree
 * would; an insertion is in all of its stripes or none. */
bh__block *bh__ranges_overlap(bh__ranges *r, uint32_t device, uint64_t address, uint64_t size);
bh__block *bh__ranges_containing(bh__ranges *r, uint32_t device, uint64_t address);
/* Insert and remove (below, inline) take set, the block's range's stripes
 * (bh__range_stripes of its key, or bh__ranges_stripes_of), which the
 * caller has at hand: a second hash otherwise. insert_crossing: several. */
bh__block *bh__ranges_insert_crossing(bh__ranges *r, bh__block *b, bh__stripe_set set, bh_status *st);

/* range.c, per stripe. All under stripe->lock. The block whose range
 * contains address, or NULL. */
bh__block *bh__range_containing(const bh__ranges *r, const bh__range_stripe *s, uint32_t device,
                                uint64_t address);
/* An indexed block whose range meets [address, address + size), or NULL. */
bh__block *bh__range_overlap(const bh__ranges *r, const bh__range_stripe *s, uint32_t device,
                             uint64_t address, uint64_t size);
/* Indexes a block whose key and size are set, unless its range meets an
 * indexed one: then returns that block and changes nothing. NULL and *st
 * BH_OK: indexed. NULL and *st BH_ENOMEM: the range meets nothing but host
 * memory for a node ran out; nothing was changed. Removal of a block that is
 * not indexed (no entry with its start and slot) does nothing. Blocks must
 * come from r's slab. */
bh__block *bh__range_insert(const bh__ranges *r, bh__range_stripe *s, bh__block *b, bh_status *st);
void bh__range_remove(const bh__ranges *r, bh__range_stripe *s, const bh__block *b);
/* Inline for a range in one stripe (nearly all): as calls, these wrappers
 * cost about 50 instructions per churn (callgrind, 1K live). */
static inline bh__block *bh__ranges_insert(bh__ranges *r, bh__block *b, bh__stripe_set set, bh_status *st) {
    if ((set & (set - 1)) == 0) /* one stripe: check and insertion are one descent */
        return bh__range_insert(r, &r->stripes[__builtin_ctz(set)], b, st);
    return bh__ranges_insert_crossing(r, b, set, st);
}
static inline void bh__ranges_remove(bh__ranges *r, const bh__block *b, bh__stripe_set set) {
    for (; set != 0; set &= set - 1)
        bh__range_remove(r, &r->stripes[__builtin_ctz(set)], b);
}
/* Removal under the locks of set (b's stripes), taken here: a last release's. */
static inline void bh__ranges_take_out(bh__ranges *r, const bh__block *b, bh__stripe_set set) {
    bh__range_stripe *one = bh__ranges_one(r, set);
    if (one != NULL) {
        bh__stripe_lock_take(&one->lock);
        bh__range_remove(r, one, b);
        bh__stripe_lock_give(&one->lock);
        return;
    }
    bh__ranges_lock(r, set);
    bh__ranges_remove(r, b, set);
    bh__ranges_unlock(r, set);
}
/* range_pool.c, under s->lock: a zeroed node from the stripe's pool, or NULL
 * when host memory runs out (an arena refill is the allocation that can
 * fail); and a node back to the pool, for the stripe's next taker. */
bh__range_leaf *bh__range_leaf_new(const bh__ranges *r, bh__range_stripe *s);
bh__range_inner *bh__range_inner_new(const bh__ranges *r, bh__range_stripe *s);
void bh__range_leaf_free(bh__range_stripe *s, bh__range_leaf *l);
void bh__range_inner_free(bh__range_stripe *s, bh__range_inner *in);

#endif /* BH_RANGE_INDEX_H */
