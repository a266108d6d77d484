/*
 * test_track_drop.c - a gone process's live set dropped in slices
 * (bh_track_process_going, bh_track_drop_some): every slice leaves a
 * consistent state (what is not dropped yet is live everywhere: totals, the
 * dump, one address), the end is exactly what the one-call drop gives, and a
 * process reusing the pid meanwhile is never mixed with what is dropped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "track.h"

#define PID 100u
#define DEV 3u
enum { STREAMS = 3, PER_STREAM = 3000, BUDGET = 250 };

static void totals(const bh_track *t, bh_track_counts *c) { bh_track_totals(t, UINT64_MAX, UINT32_MAX, c); }

/* STREAMS streams of PID with PER_STREAM live each on two devices, half of
 * them freed again; stream 3 lost an event (unsynced: its leaks are
 * unverified). The same every time. */
static bh_track *make(uint64_t max_live) {
    bh_track *t = bh_track_new(max_live);
    assert_non_null(t);
    for (uint32_t st = 1; st <= STREAMS; st++) {
        uint64_t client = BH_TRACK_CLIENT(PID, st), seq = 1;
        for (uint64_t i = 0; i < PER_STREAM * 2; i++) {
            bh_track_event e = {client, 0x10000 + i * 64,        64 + i, seq++,
                                i,      DEV + (uint32_t)(i % 2), 0,      BH_TRACK_ALLOC};
            assert_int_equal(bh_track_on_event(t, &e), BH_TRACK_OK);
            if (i % 2 == 1) {
                e.kind = BH_TRACK_FREE;
                e.seq = seq++;
                assert_int_equal(bh_track_on_event(t, &e), BH_TRACK_OK);
            }
        }
    }
    bh_track_lost(t, BH_TRACK_CLIENT(PID, 3), 1);
    return t;
}

static void count_leak(void *ctx, const bh_track_entry *e) {
    (void)e;
    (*(uint64_t *)ctx)++;
}

static int count_entry(void *ctx, const bh_track_entry *e) {
    (void)e;
    (*(uint64_t *)ctx)++;
    return 0;
}

static int count_device(void *ctx, const bh_track_entry *e) {
    uint64_t *n = ctx;
    n[0]++;
    n[1] += e->device == DEV;
    return 0;
}

static void seen_at(void *ctx, const bh_track_entry *e) { *(uint32_t *)ctx += e->live; }

/* Slice after slice: live + leaks + unverified leaks stays what was live,
 * the dump walks exactly the live count (and its pages meet it), and the
 * end equals the one-call drop, counts and leaks listed alike. */
static void slices_are_consistent_and_end_exact(void **state) {
    (void)state;
    bh_track *once = make(0), *sliced = make(0);
    uint64_t leaks_once = 0, leaks_sliced = 0;
    uint64_t n_once = bh_track_process_gone(once, PID, count_leak, &leaks_once);
    bh_track_counts before;
    totals(sliced, &before);
    assert_int_equal(before.live, STREAMS * PER_STREAM);
    assert_int_equal(bh_track_process_going(sliced, PID, count_leak, &leaks_sliced), STREAMS * PER_STREAM);
    uint64_t left = 1, slices = 0, n_sliced = 0;
    while (left > 0) {
        n_sliced += bh_track_drop_some(sliced, PID, BUDGET, count_leak, &leaks_sliced, &left);
        slices++;
        bh_track_counts c;
        totals(sliced, &c);
        assert_int_equal(c.live, left);
        assert_int_equal(bh_track_process_doomed(sliced, PID), left);
        assert_int_equal(c.live + c.leaks + c.unverified_leaks, before.live);
        uint64_t walked = 0, dev[2] = {0, 0};
        bh_track_each_entry(sliced, 0, count_entry, &walked);
        assert_int_equal(walked, left);
        if (left > 10) { /* a page from the middle: the rest of the walk */
            bh_track_each_entry(sliced, left - 10, count_device, dev);
            assert_int_equal(dev[0], 10);
        }
    }
    printf("# %d live dropped in %llu slices of at most %d\n", STREAMS * PER_STREAM,
           (unsigned long long)slices, BUDGET);
    assert_int_equal(slices, (STREAMS * PER_STREAM + BUDGET - 1) / BUDGET);
    bh_track_counts a, b;
    totals(once, &a);
    totals(sliced, &b);
    assert_memory_equal(&a, &b, sizeof(a));
    assert_int_equal(n_once, n_sliced);
    assert_int_equal(n_once, 2 * PER_STREAM); /* stream 3's are unverified */
    assert_int_equal(b.unverified_leaks, PER_STREAM);
    assert_int_equal(leaks_once, leaks_sliced);
    bh_track_free(once);
    bh_track_free(sliced);
}

/* A process that reuses the pid while the old one is dropped: its ALLOC of
 * an address the old one held live is no duplicate, its FREE of another is
 * an unknown FREE (it never allocated it), the live limit counts only its
 * own, and the old one's drop never takes its allocations. Meanwhile the
 * old one's entries are still shown live at their address. */
static void a_reused_pid_is_not_mixed(void **state) {
    (void)state;
    bh_track *t = make(STREAMS * PER_STREAM + 1); /* the limit its last ALLOC reached */
    uint64_t client = BH_TRACK_CLIENT(PID, 1);
    assert_int_equal(bh_track_process_going(t, PID, NULL, NULL), STREAMS * PER_STREAM);
    uint32_t live_at = 0;
    bh_track_each_at(t, 0x10000, seen_at, &live_at);
    assert_int_equal(live_at, STREAMS); /* the old one's, still to drop */
    assert_true(bh_track_is_live(t, client, DEV, 0x10000));
    /* The new process: fresh numbering, same stream id. */
    bh_track_event e = {client, 0x10000, 64, 1, 9, DEV, 0, BH_TRACK_ALLOC};
    assert_int_equal(bh_track_on_event(t, &e), BH_TRACK_OK);
    e.address = 0x10;
    e.seq = 2;
    assert_int_equal(bh_track_on_event(t, &e),
                     BH_TRACK_OK); /* not over the limit: the old ones are not its */
    bh_track_event f = {client, 0x10000 + 2 * 64, 0, 3, 9, DEV, 0, BH_TRACK_FREE};
    assert_int_equal(bh_track_on_event(t, &f), BH_TRACK_UNKNOWN_FREE);
    bh_track_counts c;
    totals(t, &c);
    assert_int_equal(c.duplicate_allocs, 0);
    assert_int_equal(c.live, STREAMS * PER_STREAM + 2);
    uint64_t left = 1;
    while (left > 0)
        (void)bh_track_drop_some(t, PID, BUDGET, NULL, NULL, &left);
    totals(t, &c);
    assert_int_equal(c.live, 2);
    assert_true(bh_track_is_live(t, client, DEV, 0x10000));
    assert_int_equal(c.leaks, 2 * PER_STREAM);
    /* It goes too: only its own allocations are its leaks. */
    assert_int_equal(bh_track_process_gone(t, PID, NULL, NULL), 2);
    bh_track_free(t);
}

/* A second going before the first drop ended (the pid reused, gone
 * again): the first is finished, then the second's is its own. */
static void going_twice_finishes_the_first(void **state) {
    (void)state;
    bh_track *t = make(0);
    uint64_t leaks = 0, left = 0;
    assert_int_equal(bh_track_process_going(t, PID, count_leak, &leaks), STREAMS * PER_STREAM);
    (void)bh_track_drop_some(t, PID, BUDGET, count_leak, &leaks, &left);
    assert_int_equal(left, STREAMS * PER_STREAM - BUDGET);
    bh_track_event e = {BH_TRACK_CLIENT(PID, 1), 0x10000, 64, 1, 9, DEV, 0, BH_TRACK_ALLOC};
    assert_int_equal(bh_track_on_event(t, &e), BH_TRACK_OK);
    assert_int_equal(bh_track_process_going(t, PID, count_leak, &leaks), 1);
    assert_int_equal(leaks, 2 * PER_STREAM);
    (void)bh_track_drop_some(t, PID, BUDGET, count_leak, &leaks, &left);
    assert_int_equal(left, 0);
    assert_int_equal(leaks, 2 * PER_STREAM + 1);
    bh_track_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slices_are_consistent_and_end_exact),
        cmocka_unit_test(a_reused_pid_is_not_mixed),
        cmocka_unit_test(going_twice_finishes_the_first),
    };
    return cmocka_run_group_tests_name("track_drop", tests, NULL, NULL);
}
