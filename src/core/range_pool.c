/*
 * range_pool.c - where the range index's nodes come from, and the index's
 * set-up and tear-down.
 *
 * Owns: the index's arenas of host memory, cut into chunks that each
 * stripe's pools carve in order into leaves and inner nodes, and the free
 * lists of nodes the trees gave back; the stripes' locks and the trees'
 * memory from bh__ranges_init to bh__ranges_fini.
 * Must never: hand out a node that is not zeroed, give an arena back before
 * bh__ranges_fini, or be called without the stripe lock (nodes have no
 * atomics). What the trees mean is range.c's.
 */
#include <string.h>

#include "internal.h"

typedef bh__range_leaf leaf;
typedef bh__range_inner inner;
typedef bh__range_tree tree;

/* Where nodes come from. At 1M live ranges every churn descends a tree
 * twice; nodes calloc'd one by one lie scattered over the heap's 4 KiB
 * pages, so each level of a descent may miss the TLB as well as the cache
 * (under virtualisation a page walk costs about what the miss does). Carved
 * in order from arenas, nodes share pages, and an arena of BH__HUGE_PAGE
 * bytes is aligned to it and advised, so the ~33,000 leaves of 1M ranges
 * sit on seven huge pages. Arenas double from 64 KiB, so a registry with a
 * few ranges keeps a few small ones, and are not zeroed: a page of an arena
 * becomes resident when its first node is handed out (which zeroes the
 * node). A freed node goes on its pool's list; arenas go back only at
 * bh__ranges_fini. Nodes are never touched without their stripe's lock, so
 * no atomics.
 *
 * The arenas are the whole index's, not a stripe's: a stripe's pools take
 * CHUNK bytes at a time from them (under the arenas' own lock, nested in
 * the stripe's, once per 64 leaves). Per-stripe arenas, once the index was
 * partitioned (range_stripes.c), left each stripe's nodes at 1M live in
 * arenas under 2 MiB, so on 4 KiB pages: the churn's index work at 1M live
 * cost about 13% more (bh-bench, overlap check on minus off, 1 thread). */
#define ARENA_HEAD BH__CACHE_LINE /* an arena's first line links the one before */
#define ARENA_FIRST ((size_t)64 << 10)
#define CHUNK ((size_t)16 << 10)

/* The count-th arena, for a chunk of size bytes: at least one chunk. */
static size_t arena_bytes(const bh__ranges *r, uint32_t count, size_t size) {
    size_t least = ARENA_HEAD + size, bytes = r->arena_first > least ? r->arena_first : least;
    for (uint32_t i = 0; i < count && bytes < r->arena_max; i++)
        bytes *= 2;
    return bytes < r->arena_max ? bytes : r->arena_max > least ? r->arena_max : least;
}

/* A chunk of size bytes from the index's arenas, or NULL (host memory: a
 * new arena is the allocation that can fail). */
static char *chunk_take(const bh__ranges *r, size_t size) {
    bh__range_arenas *a = r->arenas;
    pthread_mutex_lock(&a->lock);
    if ((size_t)(a->end - a->carve) < size) { /* the rest of the old arena is lost: less than a chunk */
        size_t bytes = arena_bytes(r, a->count, size);
        char *fresh = bh__alloc_aligned(bytes >= BH__HUGE_PAGE ? BH__HUGE_PAGE : BH__CACHE_LINE, bytes);
        if (fresh == NULL) {
            pthread_mutex_unlock(&a->lock);
            return NULL;
        }
        bh__advise_huge(fresh, bytes);
        *(void **)fresh = a->newest;
        a->newest = fresh;
        a->count++;
        a->carve = fresh + ARENA_HEAD;
        a->end = fresh + bytes;
        bh__mem_noaccess(a->carve, bytes - ARENA_HEAD); /* not carved yet */
    }
    char *chunk = a->carve;
    a->carve += size;
    pthread_mutex_unlock(&a->lock);
    return chunk;
}

/* A zeroed node of size bytes from pool p, or NULL (host memory). */
static void *node_take(const bh__ranges *r, bh__range_pool *p, size_t size) {
    void *node = p->free;
    if (node != NULL) {
        p->free = *(void **)node; /* the link stays readable (node_give) */
        bh__mem_usable(node, size);
        return memset(node, 0, size);
    }
    if ((size_t)(p->end - p->carve) < size) { /* the rest of the old chunk is lost: less than a node */
        /* A node a chunk when tests make arenas smaller than one. */
        size_t bytes = r->arena_max >= ARENA_HEAD + CHUNK && CHUNK >= size ? CHUNK : size;
        char *chunk = chunk_take(r, bytes);
        if (chunk == NULL)
            return NULL;
        p->count++;
        p->carve = chunk;
        p->end = chunk + bytes;
    }
    node = p->carve;
    p->carve += size;
    bh__mem_usable(node, size);
    return memset(node, 0, size);
}

/* A node of size bytes back to its pool. Under ASan and memcheck everything
 * but the free-list link becomes inaccessible, as a freed malloc block would
 * (the arenas would otherwise hide a use of a freed node from them). */
static void node_give(bh__range_pool *p, void *node, size_t size) {
    *(void **)node = p->free;
    p->free = node;
    bh__mem_noaccess((char *)node + sizeof(void *), size - sizeof(void *));
}

static void arenas_fini(bh__range_arenas *a) {
    for (void *arena = a->newest, *prev; arena != NULL; arena = prev) {
        prev = *(void **)arena;
        bh__free(arena);
    }
    pthread_mutex_destroy(&a->lock);
    memset(a, 0, sizeof(*a));
}

bh__range_leaf *bh__range_leaf_new(const bh__ranges *r, bh__range_stripe *s) {
    return node_take(r, &s->leaves, sizeof(leaf));
}
bh__range_inner *bh__range_inner_new(const bh__ranges *r, bh__range_stripe *s) {
    return node_take(r, &s->inners, sizeof(inner));
}
void bh__range_leaf_free(bh__range_stripe *s, leaf *l) { node_give(&s->leaves, l, sizeof(leaf)); }
void bh__range_inner_free(bh__range_stripe *s, inner *in) { node_give(&s->inners, in, sizeof(inner)); }

void bh__ranges_init(bh__ranges *r, const struct bh__slab *slab) {
    memset(r->stripes, 0, sizeof(r->stripes));
    for (unsigned i = 0; i < BH__RANGE_STRIPES; i++)
        bh__stripe_lock_init(&r->stripes[i].lock);
    r->slab = slab;
    r->leaf_max = BH__RANGE_LEAF_CAP;
    r->inner_max = BH__RANGE_INNER_CAP;
    r->arena_first = ARENA_FIRST;
    r->arena_max = BH__HUGE_PAGE;
    r->region_shift = BH__RANGE_REGION_SHIFT;
    memset(&r->arena_state, 0, sizeof(r->arena_state));
    pthread_mutex_init(&r->arena_state.lock, NULL);
    r->arenas = &r->arena_state;
}

void bh__ranges_set_arenas(bh__ranges *r, size_t first, size_t max) {
    r->arena_first = first; /* each pool's arenas hold at least one of its nodes (arena_bytes) */
    r->arena_max = max < first ? first : max;
}

void bh__ranges_fini(bh__ranges *r) {
    for (unsigned i = 0; i < BH__RANGE_STRIPES; i++) {
        for (tree *t = r->stripes[i].trees, *next; t != NULL; t = next) {
            next = t->next;
            bh__free(t); /* its nodes go with the arenas */
        }
        r->stripes[i].trees = NULL;
        memset(&r->stripes[i].leaves, 0, sizeof(r->stripes[i].leaves)); /* their nodes go with the arenas */
        memset(&r->stripes[i].inners, 0, sizeof(r->stripes[i].inners));
        bh__stripe_lock_fini(&r->stripes[i].lock);
    }
    arenas_fini(r->arenas);
}
