/*
 * stats.c - the registry's counters.
 *
 * Owns: striped event counters and the live/peak byte gauges.
 * Must never: put one shared, written cache line on the retain/release path.
 * Event counters are striped per thread (see BH__OWNED_STRIPES in
 * internal.h); the gauges are touched only when a block is born or retired,
 * next to a shard lock and an allocator call that cost far more.
 */
#include <string.h>

#include "internal.h"

/* Process-wide: threads are numbered once, in order of their first count
 * (see BH__OWNED_STRIPES). initial-exec TLS: a plain %fs-relative load
 * instead of a __tls_get_addr call on every count (it was a third of a
 * retain/release pair); four bytes of the static TLS surplus glibc keeps for
 * libraries. UINT32_MAX (not numbered yet) fails bh__count's one test for an
 * owned stripe, like a shared number does, so the inline path has no
 * separate first-use test. */
static AO_t next_thread_number;
__attribute__((tls_model("initial-exec"))) _Thread_local uint32_t bh__thread_number = UINT32_MAX;

void bh__count_unowned(bh__stats *st, enum bh__counter c) {
    uint32_t n = bh__thread_number;
    if (n == UINT32_MAX) {
        /* Relaxed: only distinctness matters, not ordering. */
        AO_t v = AO_fetch_and_add1(&next_thread_number);
        /* Only the stripe choice matters: the first threads keep their own
         * number, every later one a number in the shared range (so no count
         * of threads can wrap back into an owned stripe). */
        n = v < BH__OWNED_STRIPES ? (uint32_t)v : BH__OWNED_STRIPES + (uint32_t)(v % BH__SHARED_STRIPES);
        bh__thread_number = n;
    }
    if (n < BH__OWNED_STRIPES)
        bh__count(st, c); /* just numbered, and owns a stripe */
    else
        (void)AO_fetch_and_add1(&st->stripes[n].c[c]); /* n is in the shared range */
}

int bh__live_reserve(bh__stats *st, uint64_t bytes) {
    /* Relaxed CAS loop: the gauge publishes nothing; the loop only makes the
     * overflow check and the addition one step, so two concurrent 2^63-byte
     * blocks cannot both pass the check and wrap the sum to 0. */
    AO_t now = AO_load(&st->live_bytes);
    for (;;) {
        if ((uint64_t)now > UINT64_MAX - bytes)
            return -1;
        AO_t seen = AO_fetch_compare_and_swap(&st->live_bytes, now, now + (AO_t)bytes);
        if (seen == now)
            return 0;
        now = seen;
    }
}

void bh__live_unreserve(bh__stats *st, uint64_t bytes) {
    (void)AO_fetch_and_add(&st->live_bytes, (AO_t)0 - (AO_t)bytes); /* relaxed: a gauge */
}

void bh__live_born(bh__stats *st) {
    (void)AO_fetch_and_add1(&st->live_blocks); /* relaxed: destroy's acquire pairs with the death side only */
    /* CAS-max, relaxed: the peak is a statistic and orders nothing. A racy
     * read of live_bytes can only make the peak lag, never exceed a value the
     * gauge really had. */
    AO_t now = AO_load(&st->live_bytes);
    AO_t peak = AO_load(&st->peak_live_bytes);
    while (now > peak) {
        AO_t seen = AO_fetch_compare_and_swap(&st->peak_live_bytes, peak, now);
        if (seen == peak)
            break;
        peak = seen;
    }
}

void bh__live_sub(bh__stats *st, uint64_t bytes) {
    (void)AO_fetch_and_add(&st->live_bytes, (AO_t)0 - (AO_t)bytes); /* relaxed: the decrement below orders */
    /* Release: bh_registry_destroy reads live_blocks with acquire and must see
     * every write the retiring thread made to the registry before it (the
     * caller of destroy guarantees every call returned; this orders memory,
     * it does not wait for threads). */
    (void)AO_fetch_and_sub1_release(&st->live_blocks);
}

void bh__stats_sum(const bh__stats *st, bh_stats *out) {
    uint64_t sum[BH__C_COUNT];
    memset(sum, 0, sizeof(sum));
    /* Relaxed loads throughout: a statistic read while others count, not
     * one instant (see bh_stats_get); nothing is published through them. */
    for (unsigned s = 0; s < BH__STRIPES; s++)
        for (unsigned c = 0; c < BH__C_COUNT; c++)
            sum[c] += (uint64_t)AO_load(&st->stripes[s].c[c]);
    memset(out, 0, sizeof(*out));
    out->live_handles = (uint64_t)AO_load(&st->live_blocks);
    out->live_bytes = (uint64_t)AO_load(&st->live_bytes);
    out->peak_live_bytes = (uint64_t)AO_load(&st->peak_live_bytes);
    out->allocs = sum[BH__C_ALLOCS];
    out->interns_new = sum[BH__C_INTERNS_NEW];
    out->interns_alias = sum[BH__C_INTERNS_ALIAS];
    out->lookups_hit = sum[BH__C_LOOKUPS_HIT];
    out->lookups_miss = sum[BH__C_LOOKUPS_MISS];
    out->retains = sum[BH__C_RETAINS];
    out->releases = sum[BH__C_RELEASES];
    out->frees = sum[BH__C_FREES];
    out->stale_ops = sum[BH__C_STALE];
    out->conflicts = sum[BH__C_CONFLICTS];
    out->busy = sum[BH__C_BUSY];
    out->takeovers = sum[BH__C_TAKEOVERS];
    out->slots_retired = sum[BH__C_SLOTS_RETIRED];
    out->reports = sum[BH__C_REPORTS];
    out->adopts = sum[BH__C_ADOPTS];
    out->overlaps = sum[BH__C_OVERLAPS];
}
