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

/* A block's fields that are only ever accessed with atomic operations: the
 * word, the key, the size and the phase. Lock-free readers (resolve, the
 * table's fast hit in registry.c, bh_info_get) read them while their owner
 * may be changing them, and find out from the word whether what they read
 * counts: a seqlock-style race that the C11 model allows between atomics and
 * that no happens-before edge can describe (a reader whose check fails has
 * raced the writer by design). ThreadSanitizer sees these accesses as the
 * atomics they are; helgrind and drd cannot tell an atomic load from a plain
 * one, so they are told not to check these bytes (BH__ATOMIC_RANGE), and only
 * these: the lock-protected fields stay checked. */
#define ATOMIC_PART (offsetof(bh__block, phase) + sizeof(AO_t))

static void atomic_fields(bh__block *chunk, size_t n, int on) {
    for (size_t i = 0; i < n; i++) {
        if (on)
            BH__ATOMIC_RANGE(&chunk[i], ATOMIC_PART);
        else
            BH__ATOMIC_RANGE_END(&chunk[i], ATOMIC_PART);
    }
}

void bh__slab_init(bh__slab *slab) {
    memset(slab, 0, sizeof(*slab));
    /* The directory is read without the lock (acquire) by every handle check
     * and lock-free hit: atomic only, like the blocks' atomic fields. */
    BH__ATOMIC_RANGE(slab->chunks, sizeof(slab->chunks));
    pthread_mutex_init(&slab->lock, NULL);
    slab->next_fresh = 1; /* slot 0 is reserved */
}

void bh__slab_fini(bh__slab *slab) {
    for (uint32_t c = 0; c < BH__SLAB_CHUNKS; c++) {
        if (slab->raw[c] == NULL)
            continue;
        atomic_fields(bh__slab_at(slab, bh__slab_chunk_first(c)), (size_t)BH__SLAB_BASE << c, 0);
        bh__free(slab->raw[c]);
    }
    BH__ATOMIC_RANGE_END(slab->chunks, sizeof(slab->chunks));
    pthread_mutex_destroy(&slab->lock);
}

/* A zeroed chunk of n blocks starting on a cache line. One block more than
 * needed absorbs the alignment: calloc (unlike an aligned allocation plus
 * memset) leaves large chunks as untouched zero pages, so a chunk costs
 * resident memory only as its blocks are used. */
static bh__block *chunk_new(bh__slab *slab, uint32_t c) {
    size_t n = (size_t)BH__SLAB_BASE << c;
    void *raw = bh__calloc(n + 1, sizeof(bh__block));
    if (raw == NULL)
        return NULL;
    slab->raw[c] = raw;
    uintptr_t line = BH__CACHE_LINE;
    bh__block *chunk = (bh__block *)(((uintptr_t)raw + line - 1) & ~(line - 1));
    atomic_fields(chunk, n, 1);
    return chunk;
}

uint32_t bh__slab_take_fresh(bh__slab *slab, uint32_t want, bh__block **head) {
    uint32_t got = 0;
    *head = NULL;
    pthread_mutex_lock(&slab->lock);
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
        bh__block *b = bh__slab_at(slab, slot);
        b->slot = slot;
        b->next = *head;
        *head = b;
        slab->next_fresh++;
        got++;
    }
    pthread_mutex_unlock(&slab->lock);
    return got;
}
