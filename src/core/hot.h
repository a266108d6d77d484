/*
 * hot.h - the hot path: handle checks, the lock-free hit, retain, release,
 * bh_info_get, all inline.
 *
 * Owns: what a public call does with diagnostics off before it needs a lock:
 * resolving a handle to its block, the CAS loops on the block's word, the
 * lock-free hit of bh_lookup / bh_intern (fast_hit) and the seqlock read of
 * bh_info_get. Included by api.c (the public entry points) and core.c (the
 * same operations for the diagnostics), which each get their own inline copy.
 * Must never: take a lock, call the allocator or a reporter, or reach the
 * lifecycle (lifecycle.c) except through its noinline functions: the common
 * path calls nothing and saves no registers.
 */
#ifndef BH_HOT_H
#define BH_HOT_H

#include "lifecycle.h"

/* ======================== Handles ======================== */

/* Cold and out of line: every error return of the handle operations funnels
 * here, which keeps their common path free of the counter's code. */
static __attribute__((cold, noinline, unused)) bh_status count_stale(bh_registry *reg) {
    bh__count(&reg->stats, BH__C_STALE);
    return BH_ESTALE;
}

/* A handle that resolve() turned down: the null handle is a caller's error,
 * anything else (another registry's tag, slot 0, a slot never handed out) is
 * stale. Out of line: only the rejections pay for telling them apart. */
static __attribute__((cold, noinline, unused)) bh_status rejected(bh_registry *reg, bh_handle h) {
    return h.bits == 0 ? BH_EINVAL : count_stale(reg);
}

/* Checks a handle's shape and finds the block it names (NULL: *err says
 * why). The generation is checked by the caller's CAS on the word, not here. Always inline: it is
 * the front of every retain and release, and as a call it was a third of
 * the pair's instructions. The null handle needs no test of its own: its
 * tag 0 is never a registry's (tags are 1..255). Reads only the registry's
 * immutable fields and the slab directory, so a forged handle touches no
 * memory outside the slab. */
static inline __attribute__((always_inline)) bh__block *resolve(bh_registry *reg, bh_handle h,
                                                                bh_status *err) {
    if (reg == NULL) {
        *err = BH_EINVAL;
        return NULL;
    }
    /* This registry's tag and a slot other than 0 in one compare: the low
     * word of such a handle is tag << 24 | slot, so low - handle_floor is
     * slot - 1, below BH__SLOT_MASK; slot 0 makes it wrap, and another tag
     * puts it at 2^24 - 1 or more (or wraps): half the instructions of two
     * tests. */
    uint32_t below = (uint32_t)h.bits - reg->handle_floor;
    if (__builtin_expect(below >= BH__SLOT_MASK, 0)) {
        *err = rejected(reg, h);
        return NULL;
    }
    uint32_t slot = below + 1;
    AO_t entry = bh__slab_entry_of(&reg->slab, slot);
    if (__builtin_expect(entry == 0, 0)) {
        *err = count_stale(reg);
        return NULL;
    }
    bh__block *b = bh__slab_block(entry, slot);
    /* A block inside an existing chunk is never at address 0; saying so
     * spares the callers' NULL test. */
    if (b == NULL)
        __builtin_unreachable();
    return b;
}

/* ======================== Lock-free hits ======================== */

/* How far a lock-free probe walks before it leaves the answer to the locked
 * path. The bound only keeps a pathological run (or a reader racing a
 * backward shift) from walking far without the lock that would make it
 * exact; every key inside it is found without the lock. At load 3/4 about
 * 5% of keys sit 8 or more entries from home (1–1.5% at load 0.6), so a
 * bound of 8 sent those keys' every lookup to the lock; past 32 they are
 * rare (0.3% of keys at load 3/4 in a simulation of linear probing), and 32
 * entries are two cache lines. */
#define FAST_PROBES 32u

/* bh_lookup, and bh_intern of a key that is live, without the shard lock.
 * Returns 1 with *out a new reference to the live block of (device, address)
 * if its size is at least size, or 0: "not a clean hit", and the caller asks
 * the locked path, which decides. 0 covers an empty
 * entry (a miss: the locked path confirms it), a dying block, a size past the
 * block's (BH_ERANGE), a count at the limit (BH_EOVERFLOW), a failed CAS and
 * a probe run longer than FAST_PROBES. So this can only ever answer with a
 * reference that its own CAS took, and a wrong answer is impossible by
 * construction:
 *
 * The entries are hints (a reader may probe an array that was replaced, or
 * race a backward shift): all that is trusted is that the slot exists. The
 * acquire load of the word w pairs with go_live's release store for generation
 * gen(w) (every later RMW on the word continues its release sequence), so the
 * key fields stored for that generation are visible. Key fields change only
 * while a block is free (refs 0), and the word leaves the states (gen(w),
 * refs > 0) for good when it gets there (get-unless-zero; generations only
 * grow, and a slot whose generation would wrap is retired). The CAS succeeds
 * only if the word still equals w, so the block was live in generation gen(w)
 * from the load to the CAS, across the key reads: they read that
 * generation's key. The CAS is the linearisation point: at that instant the
 * block is the live block of the key (a live key is always linked, and has
 * one live block), which is what the locked path would have returned.
 *
 * No fence between the key reads and the CAS: the CAS is acq_rel, and its
 * release half keeps the reads before it. The last release that must come
 * after it in the word's modification order (before the key can change) is
 * an acquiring CAS, so it synchronises with ours, and every key store after
 * it happens after our reads: they cannot see it. */
static inline int fast_hit(bh_registry *reg, const bh__shard *shard, uint64_t hash, uint32_t device,
                           uint64_t address, uint64_t size, bh_handle *out) {
    const bh__table *t = bh__shard_table(shard);
    unsigned want = bh__entry_want(bh__entry_tag(hash), 0);
    uint32_t i = (uint32_t)hash & t->mask;
    for (unsigned n = 0; n < FAST_PROBES; n++, i = (i + 1) & t->mask, want = bh__entry_want_next(want)) {
        /* Relaxed: a hint (above); a 32-bit atomic load keeps it whole and
         * TSan-visible. */
        unsigned e = AO_int_load(&t->e[i]);
        if (e == 0)
            return 0;
        if (bh__entry_top(e) != want)
            continue; /* another home's entry, or another tag's */
        /* No chunk only if this thread cannot see it yet: not clean. (The
         * entry, not bh__slab_at's NULL: a block's address is never 0, and
         * the test of it cost two instructions per probe.) */
        uint32_t slot = bh__entry_slot(e);
        AO_t entry = bh__slab_entry_of(&reg->slab, slot);
        if (entry == 0)
            return 0;
        bh__block *b = bh__slab_block(entry, slot);
        /* Acquire: pairs with go_live's release (above). */
        AO_t w = AO_load_acquire(&b->word);
        if (bh__word_refs(w) == 0)
            continue;
        /* Relaxed: ordered by the acquire above and the CAS below. (For
         * helgrind and drd these fields are atomic-only: see slab.c.) */
        if (bh__block_device(b) != device || (uint64_t)AO_load(&b->address) != address)
            continue;
        /* A lookup (size 0) fits any block: its inline copy reads no size. */
        if ((size != 0 && size > (uint64_t)AO_load(&b->size)) || bh__word_refs(w) >= reg->refs_max)
            return 0;
        /* acq_rel, see above. */
        if (AO_fetch_compare_and_swap_full(&b->word, w, w + 1) != w)
            return 0;
        /* For helgrind/drd: pairs with go_live's (and every releaser's)
         * BH__HAPPENS_BEFORE, as the CAS's acquire does. */
        BH__HAPPENS_AFTER(&b->word);
        /* The entry's slot is the block's: no read of b->slot needed. */
        *out = bh__handle_of(reg, slot, bh__word_gen(w));
        return 1;
    }
    return 0;
}

static inline bh_status intern_block(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                                     bh_handle *out, int *born) {
    if (reg == NULL || out == NULL || !bh__range_ok(address, size))
        return BH_EINVAL;
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = bh__shard_for(reg, hash);
    if (fast_hit(reg, shard, hash, device, address, size, out)) {
        bh__count(&reg->stats, BH__C_INTERNS_ALIAS);
        return BH_OK;
    }
    return bh__intern_locked(reg, device, address, size, out, born);
}

static inline bh_status lookup_block(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (reg == NULL || out == NULL)
        return BH_EINVAL;
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = bh__shard_for(reg, hash);
    if (fast_hit(reg, shard, hash, device, address, 0, out)) {
        bh__count(&reg->stats, BH__C_LOOKUPS_HIT);
        return BH_OK;
    }
    return bh__lookup_locked(reg, device, address, out);
}

/* retain_block and release_block are always inline: the public entry
 * points are their hot callers, and a call there costs more than the rest of
 * the common path (bh__core_ gets its own copy). */
static inline __attribute__((always_inline)) bh_status retain_block(bh_registry *reg, bh_handle h) {
    bh_status st = BH_ESTALE; /* resolve() sets it when it returns NULL */
    bh__block *b = resolve(reg, h, &st);
    if (b == NULL)
        return st;
    st = bh__ref_get(reg, b, bh__handle_gen_of(reg, h));
    if (st == BH_ESTALE)
        return count_stale(reg);
    if (st == BH_OK)
        bh__count(&reg->stats, BH__C_RETAINS);
    return st;
}

static inline __attribute__((always_inline)) bh_status release_block(bh_registry *reg, bh_handle h,
                                                                     int *freed) {
    bh_status st = BH_ESTALE; /* resolve() sets it when it returns NULL */
    bh__block *b = resolve(reg, h, &st);
    if (b == NULL)
        return st;
    uint32_t gen = bh__handle_gen_of(reg, h);
    /* For helgrind/drd: everything this thread did with the block happens
     * before whoever runs the last release. */
    BH__HAPPENS_BEFORE(&b->word);
    AO_t w = AO_load(&b->word); /* relaxed: the CAS's first guess; the CAS checks and orders */
    for (;;) {
        if (bh__word_gen(w) != gen || bh__word_refs(w) == 0)
            return count_stale(reg);
        /* acq_rel: release publishes this thread's use of the allocation to
         * the thread that frees it; acquire (it matters for the last one)
         * pairs with every earlier releaser's release, so the freeing thread
         * sees all their writes. Release sequences make the chain complete. */
        AO_t seen = AO_fetch_compare_and_swap_full(&b->word, w, w - 1);
        if (__builtin_expect(seen == w, 1)) /* as in bh__ref_get */
            break;
        w = seen;
    }
    /* The last reference's path is a tail call, so the common path saves no
     * registers. */
    if (bh__word_refs(w) == 1)
        return bh__released_last(reg, b, gen, freed);
    bh__count(&reg->stats, BH__C_RELEASES);
    return BH_OK;
}

/* ======================== Queries ======================== */

static inline bh_status info_block(bh_registry *reg, bh_handle h, bh_info *out) {
    if (out == NULL)
        return BH_EINVAL;
    bh_status st = BH_ESTALE; /* resolve() sets it when it returns NULL */
    bh__block *b = resolve(reg, h, &st);
    if (b == NULL)
        return st;
    uint32_t gen = bh__handle_gen_of(reg, h);
    /* Seqlock-style snapshot without taking a reference: read the word, the
     * fields, the word again. All loads are acquire, so the second word load
     * cannot move above the field loads; if a field came from after this
     * generation's death (a later generation's key, or the free-list link a
     * retired block keeps in address), the release store that wrote it makes
     * the retirement before it visible to the second load, and the snapshot
     * is rejected. */
    AO_t w1 = AO_load_acquire(&b->word);
    if (bh__word_gen(w1) != gen || bh__word_refs(w1) == 0)
        return count_stale(reg);
    bh_info info;
    info.device = AO_int_load_acquire(&b->device);
    info.address = (uint64_t)AO_load_acquire(&b->address);
    info.size = (uint64_t)AO_load_acquire(&b->size);
    AO_t w2 = AO_load_acquire(&b->word);
    if (bh__word_gen(w2) != gen || bh__word_refs(w2) == 0)
        return count_stale(reg);
    info.refs = bh__word_refs(w2);
    *out = info;
    return BH_OK;
}

#endif /* BH_HOT_H */
