/*
 * stats.c - the registry's counters.
 *
 * Owns: striped event counters, the process's thread numbers that pick a
 * stripe, and the live/peak byte gauges (the live block count is per shard:
 * bh__shard_live_add, internal.h).
 * Must never: put one shared, written cache line on the retain/release path.
 * Event counters are striped per thread (see BH__OWNED_STRIPES in
 * internal.h); the gauges are touched only when a block is born or retired,
 * next to a shard lock and an allocator call that cost far more.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* ======================== Thread numbers ======================== */

/* Process-wide, not per registry: a thread's number picks its stripe in
 * every registry. Numbers 0..BH__OWNED_STRIPES-1 are owned: one thread at a
 * time holds each, takes it on its first count (or later, when one is free)
 * and gives it back when it exits, through a pthread key destructor (C11
 * tss is the same mechanism in glibc and not in every libc we build on;
 * __cxa_thread_atexit_impl is glibc only). A thread that finds none free
 * takes a shared number, BH__OWNED_STRIPES + k, and retries for an owned one
 * on its later counts while any is free. A thread whose owned number was
 * given back (its destructor ran, yet something counts after it, e.g. another
 * key's destructor) is pinned to a shared number for good.
 *
 * initial-exec TLS: a plain %fs-relative load instead of a __tls_get_addr
 * call on every count (it was a third of a retain/release pair); four bytes
 * of the static TLS surplus glibc keeps for libraries. UINT32_MAX (not
 * numbered yet) and every shared or pinned number fail bh__count's one test
 * for an owned stripe, so the inline path has no separate first-use test. */
__attribute__((tls_model("initial-exec"))) _Thread_local uint32_t bh__thread_number = UINT32_MAX;

#define ALL_OWNED (((AO_t)1 << BH__OWNED_STRIPES) - 1)
/* Set on a shared number that must never be traded for an owned one. */
#define PINNED 0x40000000u

/* ATOMIC: bit i set = owned number i is free. Taken with an acquire CAS,
 * given back with a release OR: the handover of a stripe (below). */
static AO_t free_owned = ALL_OWNED;
static AO_t next_shared; /* ATOMIC: relaxed; only spreads shared numbers over the shared stripes */
static pthread_key_t number_key;
static int have_key; /* written once, by number_init */

/* Gives owned number n back. Release: pairs with the acquire CAS in
 * take_owned. This thread's plain stores to stripe n (in every registry)
 * must be visible to the next owner before its first plain load of them, or
 * that owner's load + store would overwrite counts with a stale sum. The RMW
 * chain on free_owned carries the release to whichever later CAS takes n. */
static void give_back(uint32_t n) {
    BH__HAPPENS_BEFORE(&free_owned); /* the same edge, for helgrind and drd */
    AO_or_release(&free_owned, (AO_t)1 << n);
}

static uint32_t shared_number(void) {
    return BH__OWNED_STRIPES + (uint32_t)(AO_fetch_and_add1(&next_shared) % BH__SHARED_STRIPES);
}

/* Key destructor: runs when a thread that took an owned number exits (glibc
 * runs C++ thread_local destructors, which may still count, before it). The
 * thread stops using the number before it gives it back. */
static void number_dtor(void *value) {
    uint32_t n = (uint32_t)((uintptr_t)value - 1);
    bh__thread_number = PINNED | shared_number();
    give_back(n);
}

/* In a forked child only the forking thread is left: every other owner is
 * gone and cannot give its number back. Single-threaded here: no ordering. */
static void number_fork_child(void) {
    uint32_t n = bh__thread_number;
    AO_store(&free_owned, n < BH__OWNED_STRIPES ? ALL_OWNED & ~((AO_t)1 << n) : ALL_OWNED);
}

/* At load, before the process (or dlopen's caller) can start a thread that
 * counts: no once-guard on the count path, and nothing for helgrind to see
 * racing (it does not understand pthread_once). Without a key (keys
 * exhausted) no number could be given back: threads then stay on the shared
 * stripes rather than leak the owned ones. */
__attribute__((constructor)) static void number_init(void) {
    have_key = pthread_key_create(&number_key, number_dtor) == 0;
    if (have_key)
        (void)pthread_atfork(NULL, NULL, number_fork_child);
}

/* A library unloaded while threads holding numbers live on must not leave
 * them a destructor pointing into unmapped code. */
__attribute__((destructor)) static void number_fini(void) {
    if (have_key)
        (void)pthread_key_delete(number_key);
}

/* A free owned number for this thread, or UINT32_MAX if none is free. */
static uint32_t take_owned(void) {
    if (!have_key)
        return UINT32_MAX;
    AO_t free = AO_load(&free_owned); /* relaxed: only a guess for the CAS */
    while (free != 0) {
        uint32_t n = (uint32_t)__builtin_ctzll((unsigned long long)free);
        /* Acquire: pairs with give_back's release (see there). */
        AO_t seen = AO_fetch_compare_and_swap_acquire(&free_owned, free, free & ~((AO_t)1 << n));
        if (seen == free) {
            BH__HAPPENS_AFTER(&free_owned);
            if (pthread_setspecific(number_key, (void *)(uintptr_t)(n + 1)) == 0)
                return n;
            give_back(n); /* no destructor would return it: do not hold it */
            return UINT32_MAX;
        }
        free = seen;
    }
    return UINT32_MAX;
}

unsigned bh__thread_numbers_free(void) {
    return (unsigned)__builtin_popcountll((unsigned long long)AO_load(&free_owned)); /* relaxed: a snapshot */
}

void bh__count_unowned(bh__stats *st, enum bh__counter c) {
    uint32_t n = bh__thread_number;
    /* Relaxed load of free_owned: a stale 0 only delays the trade to a later
     * count; take_owned's CAS decides. */
    if (n == UINT32_MAX || ((n & PINNED) == 0 && AO_load(&free_owned) != 0)) {
        uint32_t owned = take_owned();
        if (owned != UINT32_MAX)
            n = owned;
        else if (n == UINT32_MAX)
            n = shared_number();
        bh__thread_number = n;
    }
    if (n < BH__OWNED_STRIPES)
        bh__count(st, c); /* just took an owned stripe */
    else
        (void)AO_fetch_and_add1(&st->stripes[n & ~PINNED].c[c]); /* a shared stripe: relaxed, a sum */
}

/* ======================== Gauges and sums ======================== */

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

void bh__live_peak(bh__stats *st) {
    /* CAS-max, relaxed: the peak is a statistic and orders nothing. A racy
     * read of live_bytes can only make the peak lag, never exceed a value the
     * gauge really had. No locked instruction unless the peak rises. */
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
    (void)AO_fetch_and_add(&st->live_bytes, (AO_t)0 - (AO_t)bytes); /* relaxed: a gauge */
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
    out->interns_refused = (uint64_t)AO_load(&st->interns_refused); /* relaxed: a counter */
}
