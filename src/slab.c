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
#include <string.h>

#include "internal.h"

static uint32_t chunk_of(uint32_t slot) {
    uint64_t q = (uint64_t)slot / BH__SLAB_BASE + 1; /* >= 1 */
    return 63u - (uint32_t)__builtin_clzll(q);
}

static uint32_t chunk_first_slot(uint32_t c) { return BH__SLAB_BASE * ((1u << c) - 1u); }

void bh__slab_init(bh__slab *slab) {
    memset(slab, 0, sizeof(*slab));
    pthread_mutex_init(&slab->lock, NULL);
    slab->next_fresh = 1; /* slot 0 is reserved */
}

void bh__slab_fini(bh__slab *slab) {
    for (uint32_t c = 0; c < BH__SLAB_CHUNKS; c++)
        bh__free((void *)AO_load(&slab->chunks[c]));
    pthread_mutex_destroy(&slab->lock);
}

bh__block *bh__slab_at(const bh__slab *slab, uint32_t slot) {
    uint32_t c = chunk_of(slot & BH__SLOT_MASK);
    /* Acquire pairs with the release store that published the chunk: the
     * calloc'ed (zeroed) contents are visible before we read a block. */
    bh__block *chunk = (bh__block *)AO_load_acquire(&slab->chunks[c]);
    if (chunk == NULL)
        return NULL;
    return &chunk[(slot & BH__SLOT_MASK) - chunk_first_slot(c)];
}

uint32_t bh__slab_take_fresh(bh__slab *slab, uint32_t want, bh__block **head) {
    uint32_t got = 0;
    *head = NULL;
    pthread_mutex_lock(&slab->lock);
    while (got < want && slab->next_fresh <= BH__SLOT_MASK) {
        uint32_t slot = slab->next_fresh;
        uint32_t c = chunk_of(slot);
        bh__block *chunk = (bh__block *)AO_load(&slab->chunks[c]); /* under lock */
        if (chunk == NULL) {
            chunk = bh__calloc((size_t)BH__SLAB_BASE << c, sizeof(bh__block));
            if (chunk == NULL)
                break;
            /* Release: a handle check that finds this pointer must also see the
             * zeroed blocks (generation 0, refs 0: every guess is stale). */
            AO_store_release(&slab->chunks[c], (AO_t)chunk);
        }
        bh__block *b = &chunk[slot - chunk_first_slot(c)];
        b->slot = slot;
        b->next = *head;
        *head = b;
        slab->next_fresh++;
        got++;
    }
    pthread_mutex_unlock(&slab->lock);
    return got;
}
