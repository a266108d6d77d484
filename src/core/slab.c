/*
 * slab.c - type-stable memory for control blocks.
 *
 * Owns: the chunk directory and the never-used slots. A chunk, once published,
 * lives until the registry is destroyed and never moves, so a stale or forged
 * handle can always be checked by reading the block it names.
 * Must never: free or move a chunk while the registry lives, hand out slot 0
 * (it makes the null handle invalid by construction), or hand a slot out twice
 * (reuse of retired blocks is the table shards' business, not the slab's).
 *
 * Chunk c holds BH__SLAB_BASE << c blocks and starts at slot
 * BH__SLAB_BASE * (2^c - 1): the first chunk is small, each next one doubles.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* A block's fields are only ever accessed with atomic operations. Lock-free
 * readers (resolve, the table's fast hit in hot.h, bh_info_get) read
 * them while their owner may be changing them, and find out from the word
 * whether what they read counts: a seqlock-style race that the C11 model
 * allows between atomics and that no happens-before edge can describe (a
 * reader whose check fails has raced the writer by design).
 * ThreadSanitizer sees these accesses as the atomics they are; helgrind and
 * drd cannot tell an atomic load from a plain one, so they are told not to
 * check chunks (BH__ATOMIC_RANGE). Everything lock-protected lives elsewhere
 * (shards, range nodes, the slab's own fields) and stays checked. */
_Static_assert(offsetof(bh__block, meta) + sizeof(unsigned) == sizeof(bh__block),
               "every field of a control block is atomic");

static size_t chunk_bytes(uint32_t c) { return ((size_t)BH__SLAB_BASE << c) * sizeof(bh__block); }

void bh__slab_init(bh__slab *slab) {
    memset(slab, 0, sizeof(*slab));
    /* The directory is read without the lock (acquire) by every handle check
     * and lock-free hit: atomic only, like the blocks' atomic fields. */
    BH__ATOMIC_RANGE(slab->chunks, sizeof(slab->chunks));
    pthread_mutex_init(&slab->lock, NULL);
    /* Slot 0 is reserved (the null handle), and with it the rest of its pair
     * of lines: refills of a multiple of BH__BLOCKS_PER_PAIR (the registry's)
     * then start and end on pairs of lines, so two refills (for two shards,
     * maybe) never share one. */
    slab->next_fresh = BH__BLOCKS_PER_PAIR;
}

void bh__slab_fini(bh__slab *slab) {
    for (uint32_t c = 0; c < BH__SLAB_CHUNKS; c++) {
        if (slab->raw[c] == NULL)
            continue;
        BH__ATOMIC_RANGE_END(bh__slab_at(slab, bh__slab_chunk_first(c)), chunk_bytes(c));
        bh__free(slab->raw[c]);
    }
    BH__ATOMIC_RANGE_END(slab->chunks, sizeof(slab->chunks));
    pthread_mutex_destroy(&slab->lock);
}

/* A zeroed chunk of n blocks starting on a pair of cache lines (see
 * bh__slab_take_fresh). Two lines more than needed absorb the alignment: calloc (unlike an aligned allocation
 * plus memset) leaves large chunks as untouched zero pages, so a chunk costs resident memory only as its
 * blocks are used. */
static bh__block *chunk_new(bh__slab *slab, uint32_t c) {
    void *raw = bh__calloc(1, chunk_bytes(c) + 2 * BH__CACHE_LINE);
    if (raw == NULL)
        return NULL;
    slab->raw[c] = raw;
    uintptr_t pair = 2 * BH__CACHE_LINE;
    bh__block *chunk = (bh__block *)(((uintptr_t)raw + pair - 1) & ~(pair - 1));
    BH__ATOMIC_RANGE(chunk, chunk_bytes(c));
    bh__advise_huge(raw, chunk_bytes(c) + 2 * BH__CACHE_LINE);
    return chunk;
}

/* The block of a slot just handed out (under slab->lock): its chunk exists. */
static bh__block *fresh_at(const bh__slab *slab, uint32_t slot) {
    bh__block *b = bh__slab_at(slab, slot);
    if (b == NULL)
        __builtin_unreachable();
    return b;
}

/* Chains the got consecutive slots from first so that the list visits them
 * in strides of BH__BLOCKS_PER_PAIR: first, first + 4, first + 8, ..., first
 * + 1, first + 5, ... with 32-byte blocks, so consecutive takes are 128 bytes
 * apart. Under slab->lock (the chunks exist). */
static bh__block *chain_strided(const bh__slab *slab, uint32_t first, uint32_t got) {
    bh__block *head = NULL;
    /* Pushed last to first, so the list reads first to last. */
    for (uint32_t r = BH__BLOCKS_PER_PAIR; r-- > 0;) {
        if (r >= got)
            continue;
        for (uint32_t k = r + (got - 1 - r) / BH__BLOCKS_PER_PAIR * BH__BLOCKS_PER_PAIR;;
             k -= BH__BLOCKS_PER_PAIR) {
            bh__block *b = fresh_at(slab, first + k);
            /* Relaxed: no other thread can reach the block yet. */
            AO_store(&b->address, (AO_t)head);
            head = b;
            if (k < BH__BLOCKS_PER_PAIR)
                break;
        }
    }
    return head;
}

uint32_t bh__slab_take_fresh(bh__slab *slab, uint32_t want, bh__block **head) {
    uint32_t got = 0;
    pthread_mutex_lock(&slab->lock);
    uint32_t first = slab->next_fresh;
    while (got < want && slab->next_fresh <= BH__SLOT_MASK) {
        uint32_t slot = slab->next_fresh;
        uint32_t c = bh__slab_chunk_of(slot);
        if (AO_load(&slab->chunks[c]) == 0) { /* relaxed: under lock, the only writer */
            bh__block *chunk = chunk_new(slab, c);
            if (chunk == NULL)
                break;
            /* Release: a handle check that finds this entry must also see the
             * zeroed blocks (generation 0, refs 0: every guess is stale). */
            AO_store_release(&slab->chunks[c], bh__slab_entry(chunk, c));
        }
        /* Relaxed: published to other threads with the block itself (the
         * shard lock, then go_live's release). */
        AO_int_store(&fresh_at(slab, slot)->meta, slot);
        slab->next_fresh++;
        got++;
    }
    *head = chain_strided(slab, first, got);
    pthread_mutex_unlock(&slab->lock);
    return got;
}

uint32_t bh__slab_fresh_end(bh__slab *slab) {
    pthread_mutex_lock(&slab->lock);
    uint32_t end = slab->next_fresh;
    pthread_mutex_unlock(&slab->lock);
    return end;
}
