/*
 * lifecycle.h - what the hot path (hot.h) and the lifecycle (lifecycle.c)
 * share: the small inline helpers both use, and the lifecycle's entry points.
 *
 * Owns: get-unless-zero (bh__ref_get), the key's shard, a linked block's
 * generation and handle, and the declarations of lifecycle.c's out-of-line
 * paths (block birth under the locks, the locked lookups, the last release).
 * Must never: be included outside src/core/ (diagnostics reach the core
 * through core.h only), or declare a hot-path function: the hot path calls
 * into the lifecycle only through the noinline functions below.
 */
#ifndef BH_LIFECYCLE_H
#define BH_LIFECYCLE_H

#include "internal.h"

static inline bh__shard *bh__shard_for(bh_registry *reg, uint64_t hash) {
    return &reg->shards[bh__shard_of(hash)];
}

/* Gen of a linked (or range-indexed) block. Stable while the caller holds the
 * key's shard lock (or the domain's range stripe lock): retirement takes both
 * in turn. Relaxed: the caller's lock orders it. */
static inline uint32_t bh__linked_gen(const bh__block *b) { return bh__word_gen(AO_load(&b->word)); }

static inline bh_handle bh__block_handle(const bh_registry *reg, const bh__block *b, uint32_t gen) {
    return bh__handle_of(reg, bh__block_slot(b), gen);
}

/* [address, address + size) must be a non-empty range below 2^64 (it may end
 * exactly at 2^64). */
static inline int bh__range_ok(uint64_t address, uint64_t size) {
    return size != 0 && size - 1 <= UINT64_MAX - address;
}

/* Adds a reference if the block is still generation gen and alive ("get
 * unless zero": a dying block is never revived).
 * Returns BH_OK, BH_ESTALE (other generation, or refs 0), BH_EOVERFLOW.
 * Ordering: acq_rel CAS. Acquire pairs with the release that published this
 * generation (go_live() or the CAS of whoever handed us the handle), so the
 * block's fields read after this are the current generation's. Release is
 * not needed for the increment itself but comes with the same instruction. */
static inline bh_status bh__ref_get(const bh_registry *reg, bh__block *b, uint32_t gen) {
    AO_t w = AO_load(&b->word); /* relaxed: only the CAS's first guess; the CAS checks and orders */
    for (;;) {
        if (bh__word_gen(w) != gen || bh__word_refs(w) == 0)
            return BH_ESTALE;
        if (bh__word_refs(w) >= reg->refs_max)
            return BH_EOVERFLOW;
        AO_t seen = AO_fetch_compare_and_swap_full(&b->word, w, w + 1);
        /* Expected: gcc then lays the first attempt out straight, without
         * a jump into the middle of the loop. */
        if (__builtin_expect(seen == w, 1))
            return BH_OK;
        w = seen;
    }
}

/* ======================== The lifecycle (lifecycle.c) ======================== */

/* bh_alloc_ex / bh_alloc / bh_alloc_addr: the allocator call, then a new
 * block for the address it returned (or BH_EEXIST / BH_ENOMEM, see
 * lifecycle.c); *address_out (may be NULL) is the address, on BH_OK only. */
bh_status bh__alloc_block(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out,
                          uint64_t *address_out);
/* bh_adopt: a new block for an address the caller already owns. */
bh_status bh__adopt_block(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size, bh_handle *out);
/* bh_intern after the lock-free hit gave up: the locked path decides (the
 * alias, BH_ERANGE, BH_EBUSY, BH_EOVERFLOW or a new block; *born set to 1
 * when a block was made, if born is not NULL). It hashes the key again
 * rather than take the hit's hash and shard: those two would stay live across
 * the hit's probe loop, which then ran out of registers and saved two more
 * on every hit. */
bh_status bh__intern_locked(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                            bh_handle *out, int *born);
/* bh_lookup after the lock-free hit gave up (the key hashed again, as
 * above). Counts the hit or the miss. */
bh_status bh__lookup_locked(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out);
/* bh_lookup_containing (always under the range stripe lock). */
bh_status bh__containing_block(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out);
/* After the CAS that took refs from 1 to 0: the calling thread owns the
 * death (FREE report, allocator free, unlink, retire). *freed (may be NULL)
 * set to 1. */
bh_status bh__released_last(bh_registry *reg, bh__block *b, uint32_t gen, int *freed);

#endif /* BH_LIFECYCLE_H */
