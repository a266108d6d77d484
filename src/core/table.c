/*
 * table.c - the intern table: (device, address) -> control block.
 *
 * Owns: the key hash and the per-shard open-addressing arrays. Each of
 * BH__SHARDS shards has its own mutex and its own power-of-two array of 32-bit
 * entries, slot (24 bits) | tag (4 bits of the hash used neither for the shard
 * nor for the index) | distance from the home place (4 bits, capped), 0 =
 * empty. Linear probing, backward-shift deletion (no tombstones), doubling
 * when more than 3/4 full. The top hash bits pick the shard, bits 50..53 the
 * tag and the low bits the index, so the three are independent.
 * Must never: touch a block's reference count or generation (that is the
 * registry's protocol), free an array a lock-free reader may still probe
 * before bh__shard_fini, or store an entry a reader could not survive: every
 * entry a reader sees names a slot that exists, and the reader trusts nothing
 * else about it (hot.h checks the block itself).
 *
 * Inserts can fail. With chains, a shard that could not grow kept working with
 * longer chains; an open-addressing array has a fixed number of entries, so a
 * shard that cannot grow (host memory) keeps working while it has room and
 * then refuses: bh__shard_reserve answers BH_ENOMEM, before anything else has
 * changed, and the callers turn that into their BH_ENOMEM (for bh_alloc and
 * bh_adopt still "the address was free": the exact-key and range checks come
 * first).
 */
#include <string.h>

#include "internal.h"

#define INITIAL_ENTRIES 16u
/* 2^25 entries: more than every slot at once (2^24), so growth never needs
 * to stop for a reason other than host memory. */
#define MAX_ENTRIES (1u << 25)

/* A zeroed array of n entries (a power of two), mask and entries in one
 * allocation, so one pointer publishes a consistent pair. */
static bh__table *table_new(uint32_t n) {
    bh__table *t = bh__calloc(1, sizeof(bh__table) + (size_t)n * sizeof(unsigned));
    if (t == NULL)
        return NULL;
    t->mask = n - 1;
    /* Entries are only ever accessed with atomic loads and stores (which
     * ThreadSanitizer sees as such); helgrind and drd cannot tell those from
     * plain accesses, so they are told not to report the lock-free readers'
     * probes, which no lock or happens-before edge orders (a reader may read
     * an entry while the lock holder rewrites it, and trusts nothing it
     * reads). Only the entries: the rest of the shard is checked as usual. */
    BH__ATOMIC_RANGE(t->e, (size_t)n * sizeof(unsigned));
    /* Probed at random, like the slab's chunks (only arrays past 2 MiB,
     * i.e. shards of millions of keys, have anything to advise). */
    bh__advise_huge(t, sizeof(bh__table) + (size_t)n * sizeof(unsigned));
    return t;
}

static void table_free(bh__table *t) {
    BH__ATOMIC_RANGE_END(t->e, (size_t)(t->mask + 1) * sizeof(unsigned));
    bh__free(t);
}

bh_status bh__shard_init(bh__shard *shard, const bh__slab *slab) {
    memset(shard, 0, sizeof(*shard));
    bh__table *t = table_new(INITIAL_ENTRIES);
    if (t == NULL)
        return BH_ENOMEM;
    shard->slab = slab;
    /* The pointer is only ever accessed atomically (acquire loads by the
     * lock-free probes, release stores by grow under the lock): for helgrind
     * and drd, a probe that loads it while a grow replaces it is reported
     * otherwise (the happens-before annotation covers what the pointer
     * publishes, not the pointer itself). Found by the concurrency audit;
     * test_table_race's growth case shows it. */
    BH__ATOMIC_RANGE(&shard->table, sizeof(shard->table));
    /* The live count is read without the lock by bh_stats_get (relaxed, a
     * statistic) while births and deaths store it under the lock. */
    BH__ATOMIC_RANGE(&shard->live, sizeof(shard->live));
    /* Relaxed: the registry is published to other threads by whatever hands
     * them its pointer. */
    AO_store(&shard->table, (AO_t)t);
    bh__stripe_lock_init(&shard->lock);
    return BH_OK;
}

void bh__shard_fini(bh__shard *shard) {
    /* No reader is left (bh_registry_destroy's caller guarantees it): the
     * replaced arrays can go with the live one. */
    while (shard->retired != NULL) {
        bh__table *t = shard->retired;
        shard->retired = t->retired_next;
        table_free(t);
    }
    table_free(bh__shard_table(shard));
    BH__ATOMIC_RANGE_END(&shard->table, sizeof(shard->table));
    BH__ATOMIC_RANGE_END(&shard->live, sizeof(shard->live));
    bh__stripe_lock_fini(&shard->lock);
}

/* The block an entry names. Under the lock every entry names a linked block,
 * whose slot exists. */
static bh__block *entry_block(const bh__shard *shard, unsigned e) {
    return bh__slab_at(shard->slab, bh__entry_slot(e));
}

/* The hash of a linked block's key. Relaxed: keys of linked blocks are
 * fixed under the shard lock, which the caller holds. */
static uint64_t block_hash(const bh__block *b) {
    return bh__key_hash(bh__block_device(b), (uint64_t)AO_load(&b->address));
}

/* Under the lock, so the entries are ours to read: relaxed loads. */
static unsigned entry_at(const bh__table *t, uint32_t i) { return AO_int_load(&t->e[i]); }

/* Relaxed stores: a lock-free reader that sees an entry validates the block
 * it names by itself (hot.h); there is nothing to publish with it. A
 * new array is published by the release store in grow(). */
static void entry_set(bh__table *t, uint32_t i, unsigned e) { AO_int_store(&t->e[i], e); }

/* The entry of slot for a key with tag, n places from its home. Under the
 * lock every entry's distance is exact up to the cap (BH__ENTRY_FAR): the
 * locked probes skip by it, so an entry stored with a wrong one would be
 * missed for good. */
static unsigned entry_make(unsigned tag, uint32_t n, uint32_t slot) {
    return slot | bh__entry_want(tag, n) << 24;
}

/* The distance of the entry e at place j from its home: from the entry, or
 * past the cap from its block's key (the one read of a block an unlink
 * needs: 1.6% of entries at load 3/4, 0.3% at 0.6, in a simulation of
 * linear probing). */
static uint32_t entry_distance(const bh__shard *shard, const bh__table *t, uint32_t j, unsigned e) {
    uint32_t d = bh__entry_top(e) >> 4;
    if (d < BH__ENTRY_FAR)
        return d;
    return (j - (uint32_t)block_hash(entry_block(shard, e))) & t->mask;
}

bh__block *bh__shard_find(const bh__shard *shard, uint64_t hash, uint32_t device, uint64_t address) {
    const bh__table *t = bh__shard_table(shard);
    unsigned want = bh__entry_want(bh__entry_tag(hash), 0);
    for (uint32_t i = (uint32_t)hash & t->mask;; i = (i + 1) & t->mask, want = bh__entry_want_next(want)) {
        unsigned e = entry_at(t, i);
        if (e == 0)
            return NULL;
        if (bh__entry_top(e) != want)
            continue; /* another home's entry, or another tag's */
        bh__block *b = entry_block(shard, e);
        /* Relaxed: keys of linked blocks are written before they are linked,
         * under this lock. */
        if (bh__block_device(b) == device && (uint64_t)AO_load(&b->address) == address)
            return b;
    }
}

/* Puts the entry of slot (a block whose key hashes to hash) in the first
 * empty place of its probe run. There is one: the load stays at most 3/4, or
 * the caller made room with bh__shard_reserve. */
static void place(bh__table *t, uint64_t hash, uint32_t slot) {
    uint32_t i = (uint32_t)hash & t->mask, n = 0;
    for (; entry_at(t, i) != 0; n++)
        i = (i + 1) & t->mask;
    entry_set(t, i, entry_make(bh__entry_tag(hash), n, slot));
}

/* Doubles the array. The old one is kept on the retired list, not freed: a
 * lock-free reader may have loaded its pointer and still be probing it. The
 * replaced arrays of a shard add up to less than its live one (they halve),
 * and all go at bh__shard_fini. BH_ENOMEM leaves the shard as it was. */
static bh_status grow(bh__shard *shard) {
    bh__table *old = bh__shard_table(shard);
    uint32_t n = (old->mask + 1) * 2;
    if (n > MAX_ENTRIES)
        return BH_ENOMEM;
    bh__table *t = table_new(n);
    if (t == NULL)
        return BH_ENOMEM;
    for (uint32_t i = 0; i <= old->mask; i++) {
        unsigned e = entry_at(old, i);
        if (e != 0)
            place(t, block_hash(entry_block(shard, e)), bh__entry_slot(e));
    }
    old->retired_next = shard->retired;
    shard->retired = old;
    /* Release: pairs with the acquire in bh__shard_table() of a lock-free
     * reader; the mask and the entries stored above are visible to whoever
     * sees this pointer. The annotation says the same to helgrind and drd
     * (for the mask: the entries are not checked, see table_new). */
    BH__HAPPENS_BEFORE(&shard->table);
    AO_store_release(&shard->table, (AO_t)t);
    return BH_OK;
}

/* bh__shard_reserve's slow path: the array is 3/4 full. */
bh_status bh__shard_make_room(bh__shard *shard) {
    uint32_t cap = bh__shard_table(shard)->mask + 1;
    if (grow(shard) == BH_OK)
        return BH_OK;
    /* Could not grow: a fuller array still works while one entry stays
     * empty after the insert (it ends every probe run). */
    return shard->count + 2 <= cap ? BH_OK : BH_ENOMEM;
}

void bh__shard_link(bh__shard *shard, uint64_t hash, bh__block *b) {
    place(bh__shard_table(shard), hash, bh__block_slot(b));
    shard->count++;
}

void bh__shard_unlink(bh__shard *shard, uint64_t hash, uint32_t slot) {
    bh__table *t = bh__shard_table(shard);
    uint32_t i = (uint32_t)hash & t->mask;
    for (;; i = (i + 1) & t->mask) {
        unsigned e = entry_at(t, i);
        if (e == 0)
            return; /* not linked (a takeover unlinked it already) */
        if (bh__entry_slot(e) == slot)
            break;
    }
    /* Backward shift: every later entry of the run that sits at least as
     * far from its home as from the hole (its home is not in (i, j]) moves
     * into the hole, which moves on to where it was; the entry's distance
     * shrinks by as much. The distances say where the homes are, so no
     * block is read but for an entry past the cap (without them the key of
     * every later entry's block was: one cache miss each in a large shard).
     * A reader probing meanwhile may miss an entry that moves behind it; it
     * then falls back to this lock (lifecycle.c), so a miss is never final. */
    for (uint32_t j = (i + 1) & t->mask;; j = (j + 1) & t->mask) {
        unsigned e = entry_at(t, j);
        if (e == 0)
            break;
        uint32_t d = entry_distance(shard, t, j, e), gap = (j - i) & t->mask;
        if (d >= gap) {
            entry_set(t, i, entry_make(bh__entry_top(e) & 0xfu, d - gap, bh__entry_slot(e)));
            i = j;
        }
    }
    entry_set(t, i, 0);
    shard->count--;
}
