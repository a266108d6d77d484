/*
 * lifecycle.c - block birth and death: everything the registry does under a
 * shard or range stripe lock, and the last release.
 *
 * Owns: the lifecycle protocol of a control block (see bufhandle.h,
 * LIFECYCLE) from take_block to last_release: keying and publishing a new
 * block (go_live), the overlap answers, the takeover of a dying block whose
 * free has started, the locked fallbacks of bh_intern and bh_lookup, the
 * order of the last release (mark dying, report FREE, allocator free, unlink
 * and retire), and the reports of births and deaths. Only the hot path's
 * noinline calls (lifecycle.h) and core.c reach it.
 * Must never: hold a lock while calling the allocator or the reporter (they
 * may call back into the library), call allocator.free twice for one
 * allocation, or let a stale handle touch a block of another generation.
 *
 * Protocol in one paragraph. A block's word packs (generation, refs). Handle
 * operations are compare-and-swap loops on that word that also check the
 * generation, so they are lock-free and ABA-proof. Table operations (lookup,
 * intern, alloc) run under the key's shard lock, which pins the generation of
 * every linked block (retirement also takes that lock), but refs can still
 * drop to zero underneath them, so they too take references with CAS "get
 * unless zero". A lookup, or an intern of a key that is live, first tries
 * without the lock (fast_hit in hot.h): it checks the block's word and key
 * itself and takes its reference with a CAS on the word it checked, and
 * anything short of a clean hit comes here, to the locked path. The thread
 * whose CAS takes refs from 1 to 0 owns the block's death; the block stays
 * linked (so its address reads as busy, not free) until its allocator free
 * has run.
 */
#include <string.h>

#include "lifecycle.h"

/* Fresh slots a shard takes from the slab at a time: amortises the slab lock. */
#define SLAB_REFILL 16u

static int may_take_over(const bh__block *b);

/* ======================== Reports ======================== */

/* Hands the reporter one event. Called with no lock held. The sequence number
 * is taken right here; a relaxed fetch-add is enough because every pair of
 * reports that must be ordered (one thread's; an address's FREE and its next
 * ALLOC) is already ordered by happens-before, and RMWs on one location follow
 * happens-before in their modification order. */
static __attribute__((noinline)) void report_event(bh_registry *reg, bh_event_kind kind, uint32_t device,
                                                   uint64_t address, uint64_t size) {
    bh_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.device = device;
    ev.address = address;
    ev.size = size;
    ev.seq = (uint64_t)AO_fetch_and_add1(&reg->seq) + 1;
    bh__count(&reg->stats, BH__C_REPORTS);
    /* A tee: the application's reporter and the one the environment asked
     * for both see every event, with the same seq, in the same order. The
     * environment's first: it is the library's own (socket or log) and never
     * calls back, while the application's may (an ALLOC callback that
     * allocates): run first, its nested event would reach the environment's
     * reporter before this one, against this thread's order. */
    if (reg->env_reporter.report != NULL)
        reg->env_reporter.report(reg->env_reporter.ctx, &ev);
    if (reg->reporter.report != NULL)
        reg->reporter.report(reg->reporter.ctx, &ev);
}

/* report_event if anyone listens. The test is inline: without a reporter a
 * birth or a death costs two loads and a branch here, not a call (about 25
 * of a churn's 730 instructions). Immutable fields: no ordering. */
static inline void report(bh_registry *reg, bh_event_kind kind, uint32_t device, uint64_t address,
                          uint64_t size) {
    if (reg->reporter.report != NULL || reg->env_reporter.report != NULL)
        report_event(reg, kind, device, address, size);
}

/* A block that bh_alloc, bh_adopt or bh_intern made went live: counts it (as
 * counter), reports its ALLOC and hands out its handle. Called with no lock
 * held, since the reporter may call back into the library. */
static bh_status announce_birth(bh_registry *reg, enum bh__counter counter, uint32_t device, uint64_t address,
                                uint64_t size, bh_handle h, bh_handle *out) {
    bh__live_peak(&reg->stats);
    bh__count(&reg->stats, counter);
    report(reg, BH_EVENT_ALLOC, device, address, size);
    *out = h;
    return BH_OK;
}

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
     * release store. */
    AO_int_store(&b->meta, bh__block_slot(b));
}

/* Makes a keyed free block the live block of its key with one reference and
 * links it. Under shard->lock. Returns the new handle. */
static bh_handle go_live(bh_registry *reg, bh__shard *shard, uint64_t hash, bh__block *b) {
    /* refs 0 -> 1, generation kept. Release: pairs with the acquire of
     * ref_get / fast_hit / bh_info_get / the last release on another thread;
     * the fields set_key stored are visible to anyone who sees refs == 1 of
     * this generation (every later RMW on the word continues this store's
     * release sequence). A load and a store, not an RMW: no other thread can
     * change a word whose refs is 0 (every CAS on the word expects refs > 0:
     * get-unless-zero, releases, the test hook), so nothing can come between
     * them, and a stale handle's CAS that raced us fails on the new value.
     * (helgrind and drd do not check the chunks, see slab.c; the annotation
     * below gives them the edge.) The relaxed load is ours: the block came
     * off the free list under this lock. One locked instruction fewer per
     * birth than the RMW 0.3.1 made. */
    /* For helgrind/drd: what the creator did before (its allocator call,
     * set_key) happens before a lock-free hit on this block (fast_hit's
     * BH__HAPPENS_AFTER); they do not see the release store as one. */
    BH__HAPPENS_BEFORE(&b->word);
    AO_t w = AO_load(&b->word);
    AO_store_release(&b->word, w + 1);
    bh__shard_link(shard, hash, b);
    bh__shard_live_add(shard, 1);
    return bh__block_handle(reg, b, bh__word_gen(w));
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

/* Under the locks of every stripe of those ranges, held since they were
 * taken out: their releasers have not removed them yet (they need these
 * locks), and nothing was inserted in their place, so they fit again.
 * Re-inserting can only fail for an index node or tree (host memory;
 * removals usually leave their nodes on the stripe's free list, but one that
 * empties a stripe's tree frees the tree), or past TAKEN_MAX
 * takeovers in one creation: then that range stays out until its free
 * returns (docs/internals.md, range index). Empties t. */
/* The stripe locks a creation holds: held, which is one's alone while one
 * is not NULL (bh__ranges_one: no set loop then). */
static void hold_stripes(bh_registry *reg, bh__stripe_set held, bh__range_stripe *one) {
    if (one != NULL)
        bh__stripe_lock_take(&one->lock);
    else
        bh__ranges_lock(&reg->ranges, held);
}
static void let_go_stripes(bh_registry *reg, bh__stripe_set held, bh__range_stripe *one) {
    if (one != NULL)
        bh__stripe_lock_give(&one->lock);
    else
        bh__ranges_unlock(&reg->ranges, held);
}

static void put_back_ranges(bh_registry *reg, taken_ranges *t) {
    for (unsigned i = 0; i < t->n; i++) {
        bh_status st = BH_OK;
        (void)bh__ranges_insert(&reg->ranges, t->b[i], bh__ranges_stripes_of(&reg->ranges, t->b[i]), &st);
    }
    t->n = 0;
}

/* Creates, publishes and indexes the block of a key that has no linked block
 * (or only one whose free has started, which the caller unlinks afterwards).
 * Under shard->lock. The overlap check and the range insertion are one step
 * under the locks of every range stripe the new range touches, so two
 * overlapping keys created at once on different shards cannot both pass
 * (they share a stripe). A takeover of a range that reaches into stripes
 * not held lets go of them all and starts again holding the union (lock
 * order: ascending stripes, never one more on top).
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
    bh__stripe_set held = 0;
    bh__range_stripe *one = NULL; /* held's stripe while held is one stripe (nearly always) */
    if (!(reg->flags & BH_CONFIG_NO_OVERLAP_CHECK)) {
        bh__stripe_set own = bh__range_stripes(&reg->ranges, device, address, size);
        held = own;
        one = bh__ranges_one(&reg->ranges, own);
        hold_stripes(reg, held, one);
        bh__block *o;
        bh_status ist = BH_OK; /* BH_ENOMEM: no host memory for an index node */
        taken_ranges taken;
        taken.n = 0; /* not an initialiser: that zeroed all of b[] on every creation */
        while ((o = nb == NULL    ? bh__ranges_overlap(&reg->ranges, device, address, size)
                    : one != NULL ? bh__range_insert(&reg->ranges, one, nb, &ist)
                                  : bh__ranges_insert(&reg->ranges, nb, own, &ist)) != NULL) {
            if (who != BY_INTERN && may_take_over(o)) {
                bh__stripe_set its = bh__ranges_stripes_of(&reg->ranges, o), more = its & ~held;
                if (more != 0) {
                    /* o reaches into stripes not held: everything back as
                     * it was, and again from the start holding those too
                     * (o may be gone by then; the search finds what is).
                     * held only grows, so this happens a few times at most. */
                    put_back_ranges(reg, &taken);
                    let_go_stripes(reg, held, one);
                    held |= more;
                    one = NULL;
                    bh__ranges_lock(&reg->ranges, held);
                    continue;
                }
                /* o's free has started: the allocator may have handed its
                 * memory out again (bh_alloc), or the caller has it from
                 * the allocator (bh_adopt). Its range leaves the index
                 * here, as its key leaves the table in a takeover; its
                 * releaser's removal is then a no-op. bh_intern keeps
                 * meeting o (BH_EBUSY) until o's free has returned, so if
                 * this creation fails after all, o goes back (below). */
                bh__ranges_remove(&reg->ranges, o, its);
                if (taken.n < TAKEN_MAX)
                    taken.b[taken.n++] = o;
                continue;
            }
            bh_status st = overlap_answer(reg, who, o);
            put_back_ranges(reg, &taken);
            let_go_stripes(reg, held, one);
            if (nb != NULL)
                put_back_block(shard, nb);
            return st;
        }
        if (nb == NULL || ist != BH_OK) { /* the range was checked free, as BH_ENOMEM promises */
            put_back_ranges(reg, &taken);
            let_go_stripes(reg, held, one);
            if (nb != NULL)
                put_back_block(shard, nb);
            return BH_ENOMEM;
        }
    }
    if (nb == NULL)
        return BH_ENOMEM;
    *out = go_live(reg, shard, hash, nb);
    let_go_stripes(reg, held, one); /* none with the check off */
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
    bh__shard *shard = bh__shard_for(reg, hash);
    bh__shard_prefetch(shard, hash); /* the find below, while the lock is taken */
    bh__stripe_lock_take(&shard->lock);
    bh__block *old = bh__shard_find(shard, hash, device, address);
    if (old != NULL && !may_take_over(old)) {
        /* The address is live (or dying with its free not yet started). */
        bh__stripe_lock_give(&shard->lock);
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
    bh__stripe_lock_give(&shard->lock);
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
    bh__shard *shard = bh__shard_for(reg, hash);
    bh__shard_prefetch(shard, hash); /* for the unlink below */

    report(reg, BH_EVENT_FREE, device, address, size);
    /* Release: pairs with the acquire in may_take_over() (under the shard
     * lock in claim(), under range stripe locks in create_block()). A
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
        bh__ranges_take_out(&reg->ranges, b, bh__range_stripes(&reg->ranges, device, address, size));
    }

    bh__live_sub(&reg->stats, size);
    bh__count(&reg->stats, BH__C_FREES);

    bh__stripe_lock_take(&shard->lock);
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
         * block unlinked. A plain release store, as in go_live(): refs is 0,
         * so no other thread's CAS can succeed on this word. */
        AO_store_release(&b->word, AO_load(&b->word) + ((AO_t)1 << 32));
        put_back_block(shard, b);
    }
    /* The live count comes last so that a bh_registry_destroy made after
     * every call returned sees all of this death (its acquire pairs with the
     * release store in bh__shard_live_add). It is no licence to destroy
     * while calls are still running: other releasers may still be counting
     * (see the header's bh_registry_destroy). */
    bh__shard_live_add(shard, -1);
    bh__stripe_lock_give(&shard->lock);
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

/* ======================== Interning ======================== */

bh_status bh__alloc_block(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out,
                          uint64_t *address_out) {
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
    if (!bh__range_ok(address, size)) {
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
    if (address_out != NULL)
        *address_out = address;
    return announce_birth(reg, BH__C_ALLOCS, device, address, size, h, out);
}

bh_status bh__adopt_block(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                          bh_handle *out) {
    if (reg == NULL || out == NULL || !bh__range_ok(address, size))
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

/* A bh_intern that creates nothing: its key has no live block (none linked,
 * or a dying one) and the caller is refused. The answer is the range index's
 * where a range meets [address, address + size) (overlap_answer: a live one
 * BH_EOVERLAP, a dying one BH_EBUSY), else none: BH_EBUSY for a dying key
 * (counted busy), BH_ENOTFOUND under BH_CONFIG_STRICT_INTERN (counted
 * refused). Under the key's shard lock, so no live block can start at
 * address meanwhile (that takes this lock); the stripe lock comes second,
 * as everywhere. */
static bh_status intern_refusal(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                                bh_status none) {
    if (!(reg->flags & BH_CONFIG_NO_OVERLAP_CHECK)) {
        bh__stripe_set held = bh__range_stripes(&reg->ranges, device, address, size);
        bh__ranges_lock(&reg->ranges, held);
        const bh__block *o = bh__ranges_overlap(&reg->ranges, device, address, size);
        bh_status st = o != NULL ? overlap_answer(reg, BY_INTERN, o) : BH_OK;
        bh__ranges_unlock(&reg->ranges, held);
        if (st != BH_OK)
            return st;
    }
    if (none == BH_EBUSY)
        bh__count(&reg->stats, BH__C_BUSY);
    else
        AO_fetch_and_add1(&reg->stats.interns_refused); /* relaxed: a counter */
    return none;
}

/* bh_intern when fast_hit had no clean hit: under the shard lock, the alias,
 * BH_ERANGE, BH_EBUSY, BH_EOVERFLOW or a new block. Out of line, so the
 * lock-free hit saves no registers for it. */
__attribute__((noinline)) bh_status bh__intern_locked(bh_registry *reg, uint32_t device, uint64_t address,
                                                      uint64_t size, bh_handle *out, int *born) {
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = bh__shard_for(reg, hash);
    bh__stripe_lock_take(&shard->lock);
    bh__block *b = bh__shard_find(shard, hash, device, address);
    if (b != NULL) {
        uint32_t gen = bh__linked_gen(b);
        bh_status st;
        /* Relaxed: size is fixed while the block is linked (our shard lock);
         * refs is a snapshot, ref_get's CAS re-checks it. */
        if (size > (uint64_t)AO_load(&b->size) && bh__word_refs(AO_load(&b->word)) != 0)
            st = BH_ERANGE;
        else
            st = bh__ref_get(reg, b, gen);
        /* Linked with refs 0: being freed right now (BH_EBUSY), unless a
         * bh_alloc or bh_adopt has already taken its memory over into a live
         * allocation that contains the address: then the caller's address
         * lies inside that one (BH_EOVERLAP, as for any interior intern). */
        if (st == BH_ESTALE)
            st = intern_refusal(reg, device, address, size, BH_EBUSY);
        bh__stripe_lock_give(&shard->lock);
        if (st == BH_OK) {
            bh__count(&reg->stats, BH__C_INTERNS_ALIAS);
            *out = bh__block_handle(reg, b, gen);
        }
        return st;
    }
    if (reg->flags & BH_CONFIG_STRICT_INTERN) {
        bh_status st = intern_refusal(reg, device, address, size, BH_ENOTFOUND);
        bh__stripe_lock_give(&shard->lock);
        return st;
    }
    if (bh__live_reserve(&reg->stats, size) != 0) {
        bh__stripe_lock_give(&shard->lock);
        return BH_EINVAL;
    }
    bh_handle h;
    bh_status st = create_block(reg, BY_INTERN, shard, hash, device, address, size, &h);
    bh__stripe_lock_give(&shard->lock);
    if (st != BH_OK) {
        bh__live_unreserve(&reg->stats, size);
        return st;
    }

    if (born != NULL)
        *born = 1;
    return announce_birth(reg, BH__C_INTERNS_NEW, device, address, size, h, out);
}

/* Takes a reference to b (found under a lock that keeps its generation
 * stable: its shard's, or its range stripe's) for a lookup. A dying block is a
 * miss, as if it were gone already. Returns BH_OK (*out set), BH_ENOTFOUND
 * (b NULL or dying), BH_EOVERFLOW. */
static bh_status lookup_get(bh_registry *reg, bh__block *b, bh_handle *out) {
    if (b == NULL)
        return BH_ENOTFOUND;
    uint32_t gen = bh__linked_gen(b);
    bh_status st = bh__ref_get(reg, b, gen);
    if (st == BH_OK)
        *out = bh__block_handle(reg, b, gen);
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
__attribute__((noinline)) bh_status bh__lookup_locked(bh_registry *reg, uint32_t device, uint64_t address,
                                                      bh_handle *out) {
    uint64_t hash = bh__key_hash(device, address);
    bh__shard *shard = bh__shard_for(reg, hash);
    bh__stripe_lock_take(&shard->lock);
    bh_status st = lookup_get(reg, bh__shard_find(shard, hash, device, address), out);
    bh__stripe_lock_give(&shard->lock);
    return count_lookup(reg, st);
}

bh_status bh__containing_block(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (reg == NULL || out == NULL || (reg->flags & BH_CONFIG_NO_OVERLAP_CHECK))
        return BH_EINVAL;
    /* One address is in one region, so its stripe's tree is the only one
     * that can hold a range containing it. Indexed blocks are not retired
     * (retirement follows their removal from the index, which needs this
     * lock among others), so their generation is stable here. */
    bh__range_stripe *rs = bh__range_stripe_of(&reg->ranges, device, address);
    bh__stripe_lock_take(&rs->lock);
    bh_status st = lookup_get(reg, bh__ranges_containing(&reg->ranges, device, address), out);
    bh__stripe_lock_give(&rs->lock);
    return count_lookup(reg, st);
}

/* ======================== References ======================== */

/* After the CAS that took refs from 1 to 0: this thread owns the death. */
__attribute__((noinline)) bh_status bh__released_last(bh_registry *reg, bh__block *b, uint32_t gen,
                                                      int *freed) {
    bh__count(&reg->stats, BH__C_RELEASES);
    BH__HAPPENS_AFTER(&b->word);
    BH__HAPPENS_FORGET(&b->word);
    last_release(reg, b, gen);
    if (freed != NULL)
        *freed = 1;
    return BH_OK;
}
