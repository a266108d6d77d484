/*
 * table.c - the intern table: (device, address) -> control block.
 *
 * Owns: the key hash and the sharded chained hash table. Each of BH__SHARDS
 * shards has its own mutex and its own power-of-two bucket array that doubles
 * when the shard holds more blocks than buckets. The top hash bits pick the
 * shard and the low bits the bucket, so the two choices are independent.
 * Must never: touch a block's reference count or generation (that is the
 * registry's protocol), or fail an insert because growing failed: a shard that
 * cannot grow keeps working with longer chains.
 */
#include <string.h>

#include "internal.h"

#define INITIAL_BUCKETS 16u

/* Device addresses are aligned and close together, so their low bits carry
 * almost no information. The murmur3 finaliser spreads every input bit over
 * the whole word; the device is folded in first with an odd multiplier so
 * that DRAM and L1 at one numeric address land far apart. */
uint64_t bh__key_hash(uint32_t device, uint64_t address) {
    uint64_t h = address ^ ((uint64_t)device * 0x9e3779b97f4a7c15ull);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

bh_status bh__shard_init(bh__shard *shard) {
    memset(shard, 0, sizeof(*shard));
    shard->buckets = bh__calloc(INITIAL_BUCKETS, sizeof(bh__block *));
    if (shard->buckets == NULL)
        return BH_ENOMEM;
    shard->mask = INITIAL_BUCKETS - 1;
    pthread_mutex_init(&shard->lock, NULL);
    return BH_OK;
}

void bh__shard_fini(bh__shard *shard) {
    bh__free(shard->buckets);
    pthread_mutex_destroy(&shard->lock);
}

/* Key fields are only written before a block is linked, under this lock, so
 * relaxed loads are enough here. */
static int key_equal(const bh__block *b, uint32_t device, uint64_t address) {
    return (uint32_t)AO_load(&b->device) == device && (uint64_t)AO_load(&b->address) == address;
}

bh__block *bh__shard_find(const bh__shard *shard, uint64_t hash, uint32_t device, uint64_t address) {
    for (bh__block *b = shard->buckets[hash & shard->mask]; b != NULL; b = b->next)
        if (key_equal(b, device, address))
            return b;
    return NULL;
}

/* Doubles the bucket array; on host-memory failure leaves the shard as it was. */
static void grow(bh__shard *shard) {
    uint32_t n = (shard->mask + 1) * 2;
    bh__block **nb = bh__calloc(n, sizeof(bh__block *));
    if (nb == NULL)
        return;
    for (uint32_t i = 0; i <= shard->mask; i++) {
        bh__block *b = shard->buckets[i];
        while (b != NULL) {
            bh__block *next = b->next;
            /* Relaxed: keys of linked blocks are fixed under our lock (see key_equal). */
            uint64_t h = bh__key_hash((uint32_t)AO_load(&b->device), (uint64_t)AO_load(&b->address));
            b->next = nb[h & (n - 1)];
            nb[h & (n - 1)] = b;
            b = next;
        }
    }
    bh__free(shard->buckets);
    shard->buckets = nb;
    shard->mask = n - 1;
}

void bh__shard_link(bh__shard *shard, uint64_t hash, bh__block *b) {
    if (shard->count > shard->mask && shard->mask < (1u << 30))
        grow(shard);
    bh__block **head = &shard->buckets[hash & shard->mask];
    b->next = *head;
    *head = b;
    b->linked = 1;
    shard->count++;
}

void bh__shard_unlink(bh__shard *shard, uint64_t hash, bh__block *b) {
    for (bh__block **p = &shard->buckets[hash & shard->mask]; *p != NULL; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            b->next = NULL;
            b->linked = 0;
            shard->count--;
            return;
        }
    }
}
