/*
 * registry.c - the public API: interning, references, and the last release.
 *
 * Owns: the lifecycle protocol of a control block (see bufhandle.h, LIFECYCLE)
 * and the order of the last release: mark dying, report FREE, allocator free,
 * unlink and retire. Everything else is delegated: memory to slab.c and
 * hostmem.c, keys to table.c, counters to stats.c.
 * Must never: hold a lock while calling the allocator or the reporter (they may
 * call back into the library), call allocator.free twice for one allocation, or
 * let a stale handle touch a block of another generation.
 *
 * Protocol in one paragraph. A block's word packs (generation, refs). Handle
 * operations are compare-and-swap loops on that word that also check the
 * generation, so they are lock-free and ABA-proof. Table operations (lookup,
 * intern, alloc) run under the key's shard lock, which pins the generation of
 * every linked block (retirement also takes that lock), but refs can still
 * drop to zero underneath them, so they too take references with CAS "get
 * unless zero". A lookup, or an intern of a key that is live, first tries
 * without the lock (fast_hit): it checks the block's word and key itself and
 * takes its reference with a CAS on the word it checked, and anything short of
 * a clean hit goes to the locked path. The thread whose CAS takes refs from 1 to 0 owns the block's
 * death; the block stays linked (so its address reads as busy, not free)
 * until its allocator free has run.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "diag/diag.h"
#include "internal.h"

/* Fresh slots a shard takes from the slab at a time: amortises the slab lock. */
static int may_take_over(const bh__block *b);

#define SLAB_REFILL 16u

/* Process-wide count of registries made, the source of registry tags. */
static AO_t registries_made;

/* ======================== Small helpers ======================== */

static bh__shard *shard_for(bh_registry *reg, uint64_t hash) { return &reg->shards[bh__shard_of(hash)]; }

/* Cold and out of line: every error return of the handle operations funnels
 * here, which keeps their common path free of the counter's code. */
static __attribute__((cold, noinline)) bh_status count_stale(bh_registry *reg) {
    bh__count(&reg->stats, BH__C_STALE);
    return BH_ESTALE;
}

/* Hands the reporter one event. Called with no lock held. The sequence number
 * is taken right here; a relaxed fetch-add is enough because every pair of
 * reports that must be ordered (one thread's; an address's FREE and its next
 * ALLOC) is already ordered by happens-before, and RMWs on one location follow
 * happens-before in their modification order. */
static void report(bh_registry *reg, bh_event_kind kind, uint32_t device, uint64_t address, uint64_t size) {
    if (reg->reporter.report == NULL && reg->env_reporter.report == NULL)
        return;
    bh_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.device = device;
    ev.address = address;
    ev.size = size;
    ev.seq = (uint64_t)AO_fetch_and_add1(&reg->seq) + 1;
    bh__count(&reg->stats, BH__C_REPORTS);
    /* A tee: the application's reporter and the one the environment asked
     * for both see every event, with the same seq, in the same order. */
    if (reg->reporter.report != NULL)
        reg->reporter.report(reg->reporter.ctx, &ev);
    if (reg->env_reporter.report != NULL)
        reg->env_reporter.report(reg->env_reporter.ctx, &ev);
}

/* A block that bh_alloc, bh_adopt or bh_intern made went live: counts it (as
 * counter), reports its ALLOC and hands out its handle. Called with no lock
 * held, since the reporter may call back into the library. */
static bh_status announce_birth(bh_registry *reg, enum bh__counter counter, uint32_t device, uint64_t address,
                                uint64_t size, bh_handle h, bh_handle *out) {
    bh__live_born(&reg->stats);
    bh__count(&reg->stats, counter);
    report(reg, BH_EVENT_ALLOC, device, address, size);
    *out = h;
    return BH_OK;
}

/* A handle that resolve() turned down: the null handle is a caller's error,
 * anything else (another registry's tag, slot 0, a slot never handed out) is
 * stale. Out of line: only the rejections pay for telling them apart. */
static __attribute__((cold, noinline)) bh_status rejected(bh_registry *reg, bh_handle h) {
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
    uint32_t slot = bh__handle_slot(h);
    if (__builtin_expect(bh__handle_tag(h) != reg->tag || slot == 0, 0)) {
        *err = rejected(reg, h);
        return NULL;
    }
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

/* Adds a reference if the block is still generation gen and alive ("get
 * unless zero": a dying block is never revived).
 * Returns BH_OK, BH_ESTALE (other generation, or refs 0), BH_EOVERFLOW.
 * Ordering: acq_rel CAS. Acquire pairs with the release that published this
 * generation (publish() or the CAS of whoever handed us the handle), so the
 * block's fields read after this are the current generation's. Release is
 * not needed for the increment itself but comes with the same instruction. */
static bh_status ref_get(const bh_registry *reg, bh__block *b, uint32_t gen) {
    AO_t w = AO_load(&b->word); /* relaxed: only the CAS's first guess; the CAS checks and orders */
    for (;;) {
        if (bh__word_gen(w) != gen || bh__word_refs(w) == 0)
            return BH_ESTALE;
        if (bh__word_refs(w) >= reg->refs_max)
            return BH_EOVERFLOW;
        AO_t seen = AO_fetch_compare_and_swap_full(&b->word, w, w + 1);
        if (seen == w)
            return BH_OK;
        w = seen;
    }
}

/* ======================== Lock-free hits ======================== */

/* How far a lock-free probe walks before it leaves the answer to the locked
 * path. The bound only keeps a pathological run (or a reader racing a
 * backward shift) from walking far without the lock that would make it
 * exact; every key inside it is found without the lock. At load 3/4 about
 * 5% of keys sit 8 or more entries from home (1–1.5% at load 0.6), so a
 * bound of 8 sent those keys' every lookup to the lock; past 32 they are
 * vanishingly rare, and 32 entries are two cache lines. */
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
 * acquire load of the word w pairs with go_live's release RMW for generation
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
    unsigned tag = bh__entry_tag(hash);
    uint32_t i = (uint32_t)hash & t->mask;
    for (unsigned n = 0; n < FAST_PROBES; n++, i = (i + 1) & t->mask) {
        /* Relaxed: a hint (above); a 32-bit atomic load keeps it whole and
         * TSan-visible. */
        unsigned e = AO_int_load(&t->e[i]);
        if (e == 0)
            return 0;
        if (bh__entry_tag_of(e) != tag)
            continue;
        /* NULL only if this thread cannot see the chunk yet: not clean. */
        bh__block *b = bh__slab_at(&reg->slab, bh__entry_slot(e));
        if (b == NULL)
            return 0;
        /* Acquire: pairs with go_live's release (above). */
        AO_t w = AO_load_acquire(&b->word);
        if (bh__word_refs(w) == 0)
            continue;
        /* Relaxed: ordered by the acquire above and the CAS below. (For
         * helgrind and drd these fields are atomic-only: see slab.c.) */
        int match = bh__block_device(b) == device && (uint64_t)AO_load(&b->address) == address;
        int fits = size <= (uint64_t)AO_load(&b->size);
        if (!match)
            continue;
        if (!fits || bh__word_refs(w) >= reg->refs_max)
            return 0;
        /* acq_rel, see above. */
        if (AO_fetch_compare_and_swap_full(&b->word, w, w + 1) != w)
            return 0;
        /* The entry's slot is the block's: no read of b->slot needed. */
        *out = bh__handle_of(reg, bh__entry_slot(e), bh__word_gen(w));
        return 1;
    }
    return 0;
}

/* Gen of a linked (or range-indexed) block. Stable while the caller holds the
 * key's shard lock (or the domain's range stripe lock): retirement takes both
 * in turn. Relaxed: the caller's lock orders it. */
static uint32_t linked_gen(const bh__block *b) { return bh__word_gen(AO_load(&b->word)); }

static bh_handle handle_of(const bh_registry *reg, const bh__block *b, uint32_t gen) {
    return bh__handle_of(reg, bh__block_slot(b), gen);
}

/* [address, address + size) must be a non-empty range below 2^64 (it may end
 * exactly at 2^64). */
static int range_ok(uint64_t address, uint64_t size) { return size != 0 && size - 1 <= UINT64_MAX - address; }

/* ======================== Block birth and death ======================== */

/* Pops a reusable block for this shard, refilling from the slab if needed.
 * Under shard->lock. NULL when host memory (or the slot space) ran out. */
static bh__block *take_block(bh_registry *reg, bh__shard *shard) {
    if (shard->free_list == NULL) {
        bh__block *fresh;
        if (bh__slab_take_fresh(&reg->slab, SLAB_REFILL, &fresh) == 0)
            return NULL;
        shard->free_list = fresh;
    }
    bh__block *b = shard->free_list;
    shard->free_list = bh__block_next_free(b);
    return b;
}

static void put_back_block(bh__shard *shard, bh__block *b) {
    /* The free list runs through the blocks' address field, which a stale
     * reader may still read (bh_info_get, fast_hit). Release, like set_key's
     * stores: a reader who sees this link also sees the retirement before
     * it, and rejects what it read. */
    AO_store_release(&b->address, (AO_t)shard->free_list);
    shard->free_list = b;
}

/* Gives a free block its new key and size. Under shard->lock; the block is
 * not reachable through the table or the range index yet. */
static void set_key(bh__block *b, uint32_t device, uint64_t address, uint64_t size) {
    /* Field stores are release so that a seqlock-style reader (bh_info_get)
     * holding an old handle, who reads one of these new values, is guaranteed
     * to also see the retirement that came before them and reject its
     * snapshot. */
    AO_int_store_release(&b->device, device);
    AO_store_release(&b->address, (AO_t)address);
    AO_store_release(&b->size, (AO_t)size);
    /* Phase back to live, slot kept. Relaxed: published by go_live's
     * release RMW. */
    AO_int_store(&b->meta, bh__block_slot(b));
}

/* Makes a keyed free block the live block of its key with one reference and
 * links it. Under shard->lock. Returns the new handle. */
static bh_handle go_live(bh_registry *reg, bh__shard *shard, uint64_t hash, bh__block *b) {
    /* refs 0 -> 1, generation kept. Release: pairs with the acquire of
     * ref_get / bh_info_get / the last release on another thread; the fields
     * set_key stored are visible to anyone who sees refs == 1 of this
     * generation. An RMW rather than a plain store (the block is ours, either
     * would do): drd and helgrind see a plain store racing with the lock-free
     * CASes that stale handles may still be making on this word; they see an
     * RMW as atomic. */
    uint32_t gen = bh__word_gen(AO_fetch_and_add_release(&b->word, 1));
    bh__shard_link(shard, hash, b);
    return handle_of(reg, b, gen);
}

/* Who is creating a block: decides what an overlapping range means. */
enum creator { BY_ALLOC, BY_ADOPT, BY_INTERN };

/* The answer to a new range that meets the indexed range of block o (another
 * key, same domain), unless o's free has started and the creator is bh_alloc
 * or bh_adopt (create_block takes o out then). For bh_alloc any other overlap
 * is the allocator's bug, as an exact hit is. For bh_adopt and bh_intern a
 * live o is BH_EOVERLAP (an interior address must never become a second
 * owner); a dying o is a conflict for bh_adopt (its free has not started: the
 * caller claims memory not yet given back) and BH_EBUSY for bh_intern until
 * o's free has returned, as for an exact hit. The refs
 * read is a snapshot: the answer holds at that instant (relaxed: it only
 * chooses an error code; o stays indexed, so its key is stable, while the
 * caller holds the stripe lock). */
static bh_status overlap_answer(bh_registry *reg, enum creator who, const bh__block *o) {
    int live = bh__word_refs(AO_load(&o->word)) != 0;
    if (who == BY_ALLOC || (who == BY_ADOPT && !live)) {
        bh__count(&reg->stats, BH__C_CONFLICTS);
        return BH_EEXIST;
    }
    if (!live) {
        bh__count(&reg->stats, BH__C_BUSY);
        return BH_EBUSY;
    }
    bh__count(&reg->stats, BH__C_OVERLAPS);
    return BH_EOVERLAP;
}

/* Dying blocks whose ranges a creation took out of the index (takeovers),
 * kept so that a creation that fails after all can put them back. */
#define TAKEN_MAX 8
typedef struct taken_ranges {
    unsigned n;
    bh__block *b[TAKEN_MAX];
} taken_ranges;

/* Under the range stripe's lock, which was held since the ranges were taken
 * out: their releasers have not removed them yet (they need this lock), and
 * nothing was inserted in their place, so they fit again. Re-inserting can
 * only fail for an index node (host memory; removals usually leave their
 * nodes on the stripe's free list), or past TAKEN_MAX takeovers in one
 * creation: then that range stays out until its free returns
 * (docs/internals.md, range index). */
static void put_back_ranges(bh_registry *reg, bh__range_stripe *rs, const taken_ranges *t) {
    for (unsigned i = 0; i < t->n; i++) {
        bh_status st = BH_OK;
        (void)bh__range_insert(&reg->ranges, rs, t->b[i], &st);
    }
}

/* Creates, publishes and indexes the block of a key that has no linked block
 * (or only one whose free has started, which the caller unlinks afterwards).
 * Under shard->lock. The overlap check and the range insertion are one step
 * (one walk of the range index) under the domain's range stripe lock, so two
 * overlapping keys created at once on different shards cannot both pass.
 * When no block or no table room can be had (host memory), the range is
 * still checked first:
 * BH_ENOMEM means the range was free, so a caller may give it back to the
 * allocator.
 * Returns BH_OK, BH_ENOMEM, or overlap_answer()'s code. */
static bh_status create_block(bh_registry *reg, enum creator who, bh__shard *shard, uint64_t hash,
                              uint32_t device, uint64_t address, uint64_t size, bh_handle *out) {
    /* Room in the table first: with it and a block, go_live cannot fail. */
    bh__block *nb = bh__shard_reserve(shard) == BH_OK ? take_block(reg, shard) : NULL;
    if (nb != NULL)
        set_key(nb, device, address, size);
    bh__range_stripe *rs = NULL;
    if (!(reg->flags & BH_CONFIG_NO_OVERLAP_CHECK)) {
        rs = bh__range_stripe_of(&reg->ranges, device);
        pthread_mutex_lock(&rs->lock);
        bh__block *o;
        bh_status ist = BH_OK; /* BH_ENOMEM: no host memory for an index node */
        taken_ranges taken = {.n = 0};
        while ((o = nb != NULL ? bh__range_insert(&reg->ranges, rs, nb, &ist)
                               : bh__range_overlap(&reg->ranges, rs, device, address, size)) != NULL) {
            if (who != BY_INTERN && may_take_over(o)) {
                /* o's free has started: the allocator may have handed its
                 * memory out again (bh_alloc), or the caller has it from
                 * the allocator (bh_adopt). Its range leaves the index
                 * here, as its key leaves the table in a takeover; its
                 * releaser's removal is then a no-op. bh_intern keeps
                 * meeting o (BH_EBUSY) until o's free has returned, so if
                 * this creation fails after all, o goes back (below). */
                bh__range_remove(&reg->ranges, rs, o);
                if (taken.n < TAKEN_MAX)
                    taken.b[taken.n++] = o;
                continue;
            }
            bh_status st = overlap_answer(reg, who, o);
            put_back_ranges(reg, rs, &taken);
            pthread_mutex_unlock(&rs->lock);
            if (nb != NULL)
                put_back_block(shard, nb);
            return st;
        }
        if (nb == NULL || ist != BH_OK) { /* the range was checked free, as BH_ENOMEM promises */
            put_back_ranges(reg, rs, &taken);
            pthread_mutex_unlock(&rs->lock);
            if (nb != NULL)
                put_back_block(shard, nb);
            return BH_ENOMEM;
        }
    }
    if (nb == NULL)
        return BH_ENOMEM;
    *out = go_live(reg, shard, hash, nb);
    if (rs != NULL)
        pthread_mutex_unlock(&rs->lock);
    return BH_OK;
}

/* A new block for an address the caller owns from now on: bh_alloc's after the
 * allocator answered, bh_adopt's. The live-bytes reservation is the caller's.
 * Every check that can refuse the address comes before anything that can run
 * out of host memory, so a caller that gets BH_ENOMEM knows the address was
 * neither live nor overlapping a live range, and may give it back to the
 * allocator.
 * Returns BH_OK, BH_EEXIST (conflict counted), BH_ENOMEM, and for bh_adopt
 * BH_EOVERLAP. */
static bh_status claim(bh_registry *reg, enum creator who, uint32_t device, uint64_t address, uint64_t size,
                       bh_handle *out) {
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = shard_for(reg, hash);
    pthread_mutex_lock(&shard->lock);
    bh__block *old = bh__shard_find(shard, hash, device, address);
    if (old != NULL && !may_take_over(old)) {
        /* The address is live (or dying with its free not yet started). */
        pthread_mutex_unlock(&shard->lock);
        bh__count(&reg->stats, BH__C_CONFLICTS);
        return BH_EEXIST;
    }
    bh_status st = create_block(reg, who, shard, hash, device, address, size, out);
    if (st == BH_OK && old != NULL) {
        /* Its free has started; its releaser retires it without unlinking.
         * (create_block took its range out of the index.) */
        bh__shard_unlink(shard, hash, bh__block_slot(old));
        bh__count(&reg->stats, BH__C_TAKEOVERS);
    }
    pthread_mutex_unlock(&shard->lock);
    return st;
}

/* Called by the thread whose release took refs from 1 to 0. */
static void last_release(bh_registry *reg, bh__block *b, uint32_t gen) {
    /* We own the block now: nobody can revive it (get-unless-zero) and only we
     * retire it, so relaxed loads of the fields are enough; our acquiring CAS
     * already made them visible. */
    uint32_t device = bh__block_device(b);
    uint64_t address = (uint64_t)AO_load(&b->address);
    uint64_t size = (uint64_t)AO_load(&b->size);
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = shard_for(reg, hash);

    report(reg, BH_EVENT_FREE, device, address, size);
    /* Release: pairs with the acquire in may_take_over() (under the shard
     * lock in claim(), under the range stripe lock in create_block()). A
     * bh_alloc or bh_adopt that sees FREEING also sees that the FREE report
     * above was made, so its ALLOC of this memory is reported after it. */
    AO_int_store_release(&b->meta, bh__block_slot(b) | BH__META_FREEING);
    if (reg->allocator.free != NULL)
        reg->allocator.free(reg->allocator.ctx, device, address, size);
    /* The range leaves the index only after the free has returned: until
     * then a bh_intern whose range meets it answers BH_EBUSY (the memory is
     * being freed; an owner made now would free it a second time). A
     * bh_alloc or bh_adopt of that memory meanwhile is legitimate and takes
     * the range out itself (create_block), making this a no-op. Before the
     * retirement below: an indexed block keeps its generation. */
    if (!(reg->flags & BH_CONFIG_NO_OVERLAP_CHECK)) {
        bh__range_stripe *rs = bh__range_stripe_of(&reg->ranges, device);
        pthread_mutex_lock(&rs->lock);
        bh__range_remove(&reg->ranges, rs, b);
        pthread_mutex_unlock(&rs->lock);
    }

    pthread_mutex_lock(&shard->lock);
    /* A no-op if a bh_alloc or bh_adopt took the key over (the key's entry
     * then names the new block; this slot's entry is gone). */
    bh__shard_unlink(shard, hash, bh__block_slot(b));
    if (gen == UINT32_MAX) {
        /* The generation would wrap and re-validate ancient handles: retire
         * the slot for good. Its word stays (gen, 0): stale for every handle. */
        bh__count(&reg->stats, BH__C_SLOTS_RETIRED);
    } else {
        /* (gen, 0) -> (gen + 1, 0): every copy of the old handle is stale
         * from here. Release: a reader that sees the new generation sees the
         * block unlinked. RMW for the race detectors, as in publish(). */
        (void)AO_fetch_and_add_release(&b->word, (AO_t)1 << 32);
        put_back_block(shard, b);
    }
    pthread_mutex_unlock(&shard->lock);

    bh__count(&reg->stats, BH__C_FREES);
    /* The gauges come last so that a bh_registry_destroy made after every
     * call returned sees all of this death (its acquire pairs with the
     * release in bh__live_sub). It is no licence to destroy while calls are
     * still running: other releasers may still be counting (see the header's
     * bh_registry_destroy). */
    bh__live_sub(&reg->stats, size);
}

/* bh_alloc or bh_adopt met a block at the memory it claims: linked at the
 * same address, or indexed with a range the new one meets. Legitimate only
 * if that block is dying and its free has started (the allocator may hand
 * the memory out from then on). Under the block's shard lock or its range
 * stripe lock: either keeps a linked / indexed block from being retired. */
static int may_take_over(const bh__block *b) {
    /* Relaxed: refs of a linked (or indexed) block only ever fall to 0 and
     * stay there (get-unless-zero), so a 0 seen here is final; the meta load below is
     * the one that orders. */
    if (bh__word_refs(AO_load(&b->word)) != 0)
        return 0;
    /* Acquire: pairs with the release in last_release() (see there). */
    return (AO_int_load_acquire(&b->meta) & BH__META_FREEING) != 0;
}

/* ======================== Registry ======================== */

/* Opens the reporter the environment asks for (see bufhandle.h, TRACKING FROM
 * THE ENVIRONMENT). Tracking is optional: if it cannot be opened, the registry
 * works without reports rather than failing. */
static void reporter_from_env(bh_registry *reg) {
    const char *sock = getenv("BH_TRACK_SOCKET");
    const char *tt = getenv("TT_ALLOC_TRACKING_ENABLED");
    const char *log = getenv("BH_TRACK_LOG");
    bh_status st = BH_EINVAL;
    if (sock != NULL && sock[0] != '\0') {
        st = bh__socket_reporter_open_env("BH_TRACK_SOCKET", sock, NULL, &reg->env_reporter);
    } else if (tt != NULL && strcmp(tt, "1") == 0) {
        bh_socket_options opt;
        memset(&opt, 0, sizeof(opt));
        opt.flags = BH_SOCKET_COMPAT_TT;
        const char *path = getenv("BH_TT_SOCKET");
        st = bh__socket_reporter_open_env("TT_ALLOC_TRACKING_ENABLED",
                                          path != NULL && path[0] != '\0' ? path : NULL, &opt,
                                          &reg->env_reporter);
    } else if (log != NULL && log[0] != '\0') {
        st = bh_log_reporter_open(log, &reg->env_reporter);
    }
    if (st != BH_OK)
        memset(&reg->env_reporter, 0, sizeof(reg->env_reporter));
}

/* 32 random bits for bh__handle_of. getrandom() does not block once the
 * kernel's pool is initialised (always, after early boot); if it cannot answer,
 * the clock, the pid, the registry's address and its creation number, mixed,
 * still differ between any two registries of one process. */
static uint32_t generation_salt(const bh_registry *reg, AO_t made) {
    uint32_t salt;
    if (getrandom(&salt, sizeof(salt), GRND_NONBLOCK) == (ssize_t)sizeof(salt))
        return salt;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mix = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 40) ^
                   (uint64_t)(uintptr_t)reg;
    return (uint32_t)bh__key_hash((uint32_t)made, mix);
}

static void close_owned_reporter(bh_registry *reg) {
    if (bh__is_socket_reporter(&reg->env_reporter))
        bh_socket_reporter_close(&reg->env_reporter);
    else if (bh__is_log_reporter(&reg->env_reporter))
        bh_log_reporter_close(&reg->env_reporter);
}

bh_status bh_registry_create(const bh_config *cfg, bh_registry **out) {
    if (out == NULL)
        return BH_EINVAL;
    if (cfg != NULL && (cfg->flags & ~(uint32_t)(BH_CONFIG_NO_ENV | BH_CONFIG_ALLOC_EX |
                                                 BH_CONFIG_NO_OVERLAP_CHECK | BH__DIAG_ROUTE)) != 0)
        return BH_EINVAL;
    if (cfg != NULL && (cfg->flags & BH_CONFIG_ALLOC_EX) && cfg->alloc_ex == NULL)
        return BH_EINVAL;
    bh_registry *reg = bh__zalloc_aligned(_Alignof(bh_registry), sizeof(*reg)); /* stats: 128-byte stripes */
    if (reg == NULL)
        return BH_ENOMEM;
    for (unsigned i = 0; i < BH__SHARDS; i++) {
        if (bh__shard_init(&reg->shards[i], &reg->slab) != BH_OK) {
            while (i-- > 0)
                bh__shard_fini(&reg->shards[i]);
            bh__free(reg);
            return BH_ENOMEM;
        }
    }
    bh__slab_init(&reg->slab);
    if (cfg != NULL) {
        reg->allocator = cfg->allocator;
        reg->reporter = cfg->reporter;
        reg->flags = cfg->flags;
        if (cfg->flags & BH_CONFIG_ALLOC_EX)
            reg->alloc_ex = cfg->alloc_ex;
    }
    if (!(reg->flags & BH_CONFIG_NO_ENV))
        reporter_from_env(reg); /* also beside the application's reporter: a tee */
    /* Relaxed: tags need only differ, they publish nothing. */
    AO_t made = AO_fetch_and_add1(&registries_made);
    reg->tag = (uint32_t)(made % 255u) + 1u;
    reg->gen_salt = generation_salt(reg, made);
    bh__ranges_init(&reg->ranges, &reg->slab);
    reg->refs_max = UINT32_MAX;
    if (bh__diag_attach(reg, reg->flags) != BH_OK) {
        close_owned_reporter(reg);
        for (unsigned i = 0; i < BH__SHARDS; i++)
            bh__shard_fini(&reg->shards[i]);
        bh__ranges_fini(&reg->ranges);
        bh__slab_fini(&reg->slab);
        bh__free(reg);
        return BH_ENOMEM;
    }
    *out = reg;
    return BH_OK;
}

bh_status bh_registry_destroy(bh_registry *reg) {
    if (reg == NULL)
        return BH_EINVAL;
    /* Acquire: pairs with the release decrement in bh__live_sub(), so the
     * teardown below sees everything the last retiring thread wrote. The
     * caller guarantees that no other call is running (see the header): this
     * check is about references still held, not about threads. */
    if (AO_load_acquire(&reg->stats.live_blocks) != 0)
        return BH_EBUSY;
    bh__diag_detach(reg);
    close_owned_reporter(reg); /* flushes what is queued */
    for (unsigned i = 0; i < BH__SHARDS; i++)
        bh__shard_fini(&reg->shards[i]);
    bh__ranges_fini(&reg->ranges);
    bh__slab_fini(&reg->slab);
    bh__free(reg);
    return BH_OK;
}

/* ======================== Interning ======================== */

static bh_status alloc_block(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out) {
    if (reg == NULL || out == NULL || size == 0)
        return BH_EINVAL;
    /* Without alloc_ex an argument would be dropped on the floor: refuse. */
    if (reg->alloc_ex == NULL && (reg->allocator.alloc == NULL || arg != NULL))
        return BH_EINVAL;
    if (bh__live_reserve(&reg->stats, size) != 0)
        return BH_EINVAL;
    uint64_t address = 0;
    int rc = reg->alloc_ex != NULL ? reg->alloc_ex(reg->allocator.ctx, device, size, arg, &address)
                                   : reg->allocator.alloc(reg->allocator.ctx, device, size, &address);
    if (rc != 0) {
        bh__live_unreserve(&reg->stats, size);
        return BH_EALLOC;
    }
    if (!range_ok(address, size)) {
        /* A range the allocator cannot have meant: it is not trusted with a
         * free either (it may name something live). */
        bh__live_unreserve(&reg->stats, size);
        return BH_EALLOC;
    }
    bh_handle h;
    bh_status st = claim(reg, BY_ALLOC, device, address, size, &h);
    if (st != BH_OK) {
        bh__live_unreserve(&reg->stats, size);
        /* BH_ENOMEM: claim() checked first that the address is not live, so
         * it is ours to give back; nothing was reported for it. BH_EEXIST:
         * it is live, so it is NOT freed. */
        if (st == BH_ENOMEM && reg->allocator.free != NULL)
            reg->allocator.free(reg->allocator.ctx, device, address, size);
        return st;
    }
    return announce_birth(reg, BH__C_ALLOCS, device, address, size, h, out);
}

static bh_status adopt_block(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                             bh_handle *out) {
    if (reg == NULL || out == NULL || !range_ok(address, size))
        return BH_EINVAL;
    if (bh__live_reserve(&reg->stats, size) != 0)
        return BH_EINVAL;
    bh_handle h;
    bh_status st = claim(reg, BY_ADOPT, device, address, size, &h);
    if (st != BH_OK) {
        bh__live_unreserve(&reg->stats, size);
        return st;
    }
    return announce_birth(reg, BH__C_ADOPTS, device, address, size, h, out);
}

/* bh_intern when fast_hit had no clean hit: under the shard lock, the alias,
 * BH_ERANGE, BH_EBUSY, BH_EOVERFLOW or a new block. Out of line, so the
 * lock-free hit saves no registers for it. */
static __attribute__((noinline)) bh_status intern_locked(bh_registry *reg, bh__shard *shard, uint64_t hash,
                                                         uint32_t device, uint64_t address, uint64_t size,
                                                         bh_handle *out, int *born) {
    pthread_mutex_lock(&shard->lock);
    bh__block *b = bh__shard_find(shard, hash, device, address);
    if (b != NULL) {
        uint32_t gen = linked_gen(b);
        bh_status st;
        /* Relaxed: size is fixed while the block is linked (our shard lock);
         * refs is a snapshot, ref_get's CAS re-checks it. */
        if (size > (uint64_t)AO_load(&b->size) && bh__word_refs(AO_load(&b->word)) != 0)
            st = BH_ERANGE;
        else
            st = ref_get(reg, b, gen);
        pthread_mutex_unlock(&shard->lock);
        if (st == BH_ESTALE) { /* linked with refs 0: being freed right now */
            bh__count(&reg->stats, BH__C_BUSY);
            return BH_EBUSY;
        }
        if (st == BH_OK) {
            bh__count(&reg->stats, BH__C_INTERNS_ALIAS);
            *out = handle_of(reg, b, gen);
        }
        return st;
    }
    if (bh__live_reserve(&reg->stats, size) != 0) {
        pthread_mutex_unlock(&shard->lock);
        return BH_EINVAL;
    }
    bh_handle h;
    bh_status st = create_block(reg, BY_INTERN, shard, hash, device, address, size, &h);
    pthread_mutex_unlock(&shard->lock);
    if (st != BH_OK) {
        bh__live_unreserve(&reg->stats, size);
        return st;
    }

    if (born != NULL)
        *born = 1;
    return announce_birth(reg, BH__C_INTERNS_NEW, device, address, size, h, out);
}

static bh_status intern_block(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                              bh_handle *out, int *born) {
    if (reg == NULL || out == NULL || !range_ok(address, size))
        return BH_EINVAL;
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = shard_for(reg, hash);
    if (fast_hit(reg, shard, hash, device, address, size, out)) {
        bh__count(&reg->stats, BH__C_INTERNS_ALIAS);
        return BH_OK;
    }
    return intern_locked(reg, shard, hash, device, address, size, out, born);
}

/* Takes a reference to b (found under a lock that keeps its generation
 * stable: its shard's, or its range stripe's) for a lookup. A dying block is a
 * miss, as if it were gone already. Returns BH_OK (*out set), BH_ENOTFOUND
 * (b NULL or dying), BH_EOVERFLOW. */
static bh_status lookup_get(bh_registry *reg, bh__block *b, bh_handle *out) {
    if (b == NULL)
        return BH_ENOTFOUND;
    uint32_t gen = linked_gen(b);
    bh_status st = ref_get(reg, b, gen);
    if (st == BH_OK)
        *out = handle_of(reg, b, gen);
    return st == BH_ESTALE ? BH_ENOTFOUND : st;
}

static bh_status count_lookup(bh_registry *reg, bh_status st) {
    if (st == BH_OK)
        bh__count(&reg->stats, BH__C_LOOKUPS_HIT);
    else if (st == BH_ENOTFOUND)
        bh__count(&reg->stats, BH__C_LOOKUPS_MISS);
    return st;
}

/* bh_lookup when fast_hit had no clean hit: the locked path decides. Out of
 * line, as intern_locked. */
static __attribute__((noinline)) bh_status lookup_locked(bh_registry *reg, bh__shard *shard, uint64_t hash,
                                                         uint32_t device, uint64_t address, bh_handle *out) {
    pthread_mutex_lock(&shard->lock);
    bh_status st = lookup_get(reg, bh__shard_find(shard, hash, device, address), out);
    pthread_mutex_unlock(&shard->lock);
    return count_lookup(reg, st);
}

static bh_status lookup_block(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (reg == NULL || out == NULL)
        return BH_EINVAL;
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = shard_for(reg, hash);
    if (fast_hit(reg, shard, hash, device, address, 0, out)) {
        bh__count(&reg->stats, BH__C_LOOKUPS_HIT);
        return BH_OK;
    }
    return lookup_locked(reg, shard, hash, device, address, out);
}

static bh_status containing_block(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (reg == NULL || out == NULL || (reg->flags & BH_CONFIG_NO_OVERLAP_CHECK))
        return BH_EINVAL;
    bh__range_stripe *rs = bh__range_stripe_of(&reg->ranges, device);
    /* Indexed blocks are not retired (retirement follows their removal from
     * the index, under this lock), so their generation is stable here. */
    pthread_mutex_lock(&rs->lock);
    bh_status st = lookup_get(reg, bh__range_containing(&reg->ranges, rs, device, address), out);
    pthread_mutex_unlock(&rs->lock);
    return count_lookup(reg, st);
}

/* ======================== References ======================== */

/* After the CAS that took refs from 1 to 0: this thread owns the death. */
static __attribute__((noinline)) bh_status released_last(bh_registry *reg, bh__block *b, uint32_t gen,
                                                         int *freed) {
    bh__count(&reg->stats, BH__C_RELEASES);
    BH__HAPPENS_AFTER(&b->word);
    BH__HAPPENS_FORGET(&b->word);
    last_release(reg, b, gen);
    if (freed != NULL)
        *freed = 1;
    return BH_OK;
}

/* retain_block and release_block are always inline: the public entry
 * points are their hot callers, and a call there costs more than the rest of
 * the common path (bh__core_ gets its own copy). */
static inline __attribute__((always_inline)) bh_status retain_block(bh_registry *reg, bh_handle h) {
    bh_status st = BH_ESTALE; /* resolve() sets it when it returns NULL */
    bh__block *b = resolve(reg, h, &st);
    if (b == NULL)
        return st;
    st = ref_get(reg, b, bh__handle_gen_of(reg, h));
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
        if (seen == w)
            break;
        w = seen;
    }
    /* The last reference's path is a tail call, so the common path saves no
     * registers. */
    if (bh__word_refs(w) == 1)
        return released_last(reg, b, gen, freed);
    bh__count(&reg->stats, BH__C_RELEASES);
    return BH_OK;
}

/* ======================== Queries ======================== */

static bh_status info_block(bh_registry *reg, bh_handle h, bh_info *out) {
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

bh_status bh_stats_get(bh_registry *reg, bh_stats *out) {
    if (reg == NULL || out == NULL)
        return BH_EINVAL;
    bh__stats_sum(&reg->stats, out);
    const bh_reporter *both[2] = {&reg->reporter, &reg->env_reporter};
    for (int i = 0; i < 2; i++) {
        bh_reporter_stats rs;
        if (bh_socket_reporter_stats(both[i], &rs) == BH_OK) {
            out->reports_dropped += rs.dropped;
            out->resyncs += rs.resyncs;
        }
    }
    return BH_OK;
}

/* ======================== Public entry points ======================== */

/* Each public call tests one flag word: with every diagnostic off (the
 * default) it goes straight to the core above; otherwise through diag.c,
 * which maps debug tokens to blocks and calls the core back through the
 * bh__core_ functions below. reg->flags is immutable after creation. */
#define ROUTED(reg) ((reg) != NULL && __builtin_expect(((reg)->flags & BH__DIAG_ROUTE) != 0, 0))

static bh_status routed_acquire(bh_registry *reg, bh__acq_op op, uint32_t device, uint64_t address,
                                uint64_t size, void *arg, bh_handle *out) {
    bh__acq a = {op, device, address, size, arg};
    return bh__diag_acquire(reg, &a, out);
}

bh_status bh_alloc_ex(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out) {
    if (ROUTED(reg) && out != NULL)
        return routed_acquire(reg, BH__ACQ_ALLOC, device, 0, size, arg, out);
    return alloc_block(reg, device, size, arg, out);
}

bh_status bh_alloc(bh_registry *reg, uint32_t device, uint64_t size, bh_handle *out) {
    return bh_alloc_ex(reg, device, size, NULL, out);
}

bh_status bh_adopt(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size, bh_handle *out) {
    if (ROUTED(reg) && out != NULL)
        return routed_acquire(reg, BH__ACQ_ADOPT, device, address, size, NULL, out);
    return adopt_block(reg, device, address, size, out);
}

bh_status bh_intern(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size, bh_handle *out) {
    if (ROUTED(reg) && out != NULL)
        return routed_acquire(reg, BH__ACQ_INTERN, device, address, size, NULL, out);
    return intern_block(reg, device, address, size, out, NULL);
}

bh_status bh_lookup(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (ROUTED(reg) && out != NULL)
        return routed_acquire(reg, BH__ACQ_LOOKUP, device, address, 0, NULL, out);
    return lookup_block(reg, device, address, out);
}

bh_status bh_lookup_containing(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (ROUTED(reg) && out != NULL && !(reg->flags & BH_CONFIG_NO_OVERLAP_CHECK))
        return routed_acquire(reg, BH__ACQ_LOOKUP_CONTAINING, device, address, 0, NULL, out);
    return containing_block(reg, device, address, out);
}

bh_status bh_retain(bh_registry *reg, bh_handle h) {
    if (ROUTED(reg))
        return bh__diag_retain(reg, h);
    return retain_block(reg, h);
}

bh_status bh_release(bh_registry *reg, bh_handle h) {
    if (ROUTED(reg))
        return bh__diag_release(reg, h);
    return release_block(reg, h, NULL);
}

bh_status bh_info_get(bh_registry *reg, bh_handle h, bh_info *out) {
    if (ROUTED(reg) && out != NULL)
        return bh__diag_info_get(reg, h, out);
    return info_block(reg, h, out);
}

/* ======================== The core, for diag.c ======================== */

bh_status bh__core_acquire(bh_registry *reg, const bh__acq *a, bh_handle *out, int *born) {
    *born = a->op == BH__ACQ_ALLOC || a->op == BH__ACQ_ADOPT;
    switch (a->op) {
    case BH__ACQ_ALLOC:
        return alloc_block(reg, a->device, a->size, a->arg, out);
    case BH__ACQ_ADOPT:
        return adopt_block(reg, a->device, a->address, a->size, out);
    case BH__ACQ_INTERN:
        return intern_block(reg, a->device, a->address, a->size, out, born);
    case BH__ACQ_LOOKUP:
        return lookup_block(reg, a->device, a->address, out);
    case BH__ACQ_LOOKUP_CONTAINING:
        return containing_block(reg, a->device, a->address, out);
    }
    return BH_EINVAL;
}

bh_status bh__core_retain(bh_registry *reg, bh_handle h) { return retain_block(reg, h); }
bh_status bh__core_release(bh_registry *reg, bh_handle h, int *freed) { return release_block(reg, h, freed); }
bh_status bh__core_info_get(bh_registry *reg, bh_handle h, bh_info *out) { return info_block(reg, h, out); }
void bh__core_count_stale(bh_registry *reg) { (void)count_stale(reg); }

void bh__core_foreach_live(bh_registry *reg, void (*fn)(void *ctx, bh_handle block, const bh_info *info),
                           void *ctx) {
    pthread_mutex_lock(&reg->slab.lock);
    uint32_t end = reg->slab.next_fresh; /* slots below it exist and never move */
    pthread_mutex_unlock(&reg->slab.lock);
    for (uint32_t slot = 1; slot < end; slot++) {
        bh__block *b = bh__slab_at(&reg->slab, slot);
        /* Acquire: pairs with publish(), like bh_info_get's first load. */
        AO_t w = AO_load_acquire(&b->word);
        if (bh__word_refs(w) == 0)
            continue;
        bh_info info;
        bh_handle h = handle_of(reg, b, bh__word_gen(w));
        if (info_block(reg, h, &info) == BH_OK) /* it may have died meanwhile */
            fn(ctx, h, &info);
    }
}

/* ======================== Test hooks ======================== */

void bh__registry_set_refs_max(bh_registry *reg, uint32_t refs_max) { reg->refs_max = refs_max; }

bh_status bh__registry_set_gen(bh_registry *reg, bh_handle h, uint32_t gen, bh_handle *out) {
    bh_status st = BH_ESTALE; /* resolve() sets it when it returns NULL */
    bh__block *b = resolve(reg, h, &st);
    if (b == NULL)
        return st;
    AO_t w = AO_load(&b->word); /* relaxed: test hook, the CAS below checks */
    if (bh__word_gen(w) != bh__handle_gen_of(reg, h) || bh__word_refs(w) == 0)
        return BH_ESTALE;
    if (AO_fetch_compare_and_swap_full(&b->word, w, bh__word_make(gen, bh__word_refs(w))) != w)
        return BH_EBUSY;
    *out = handle_of(reg, b, gen);
    return BH_OK;
}
