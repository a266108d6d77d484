/*
 * test_track.c - the tracker's accounting (tools/track/) across loss and
 * resync, and its bounded history when it is full.
 *
 * Each test plays what a transport delivers for one process: numbered
 * events, a gap where events were lost, a resync, and checks that a correct
 * program is never blamed (no unknown FREE, duplicate ALLOC, over-freed
 * address or leak that it did not make), that what a loss made uncertain
 * says so, and that a full history keeps findings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "track.h"

#define CLIENT BH_TRACK_CLIENT(100, 1)
#define DEV 3u

static bh_track_result ev(bh_track *t, uint64_t client, uint32_t kind, uint64_t address, uint64_t seq,
                          uint64_t now) {
    bh_track_event e = {client, address, 64, seq, now, DEV, 0, kind};
    return bh_track_on_event(t, &e);
}

static void totals(const bh_track *t, bh_track_counts *c) { bh_track_totals(t, UINT64_MAX, UINT32_MAX, c); }

/* Numbered events with no gap: exact counts, no loss, nothing inexact. */
static void no_gap_is_exact(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    uint64_t seq = 1;
    for (uint64_t a = 1; a <= 100; a++) {
        assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, a * 64, seq++, 1), BH_TRACK_OK);
        if (a % 2 == 0)
            assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, a * 64, seq++, 2), BH_TRACK_OK);
    }
    bh_track_counts c;
    totals(t, &c);
    assert_int_equal(c.allocs, 100);
    assert_int_equal(c.frees, 50);
    assert_int_equal(c.live, 50);
    assert_int_equal(c.inexact, 0);
    bh_track_loss l;
    bh_track_stream_loss(t, CLIENT, &l);
    assert_int_equal(l.lost, 0);
    bh_track_free(t);
}

/* The reporter drops events (ALLOCs and FREEs), resyncs, goes on: the
 * tracker counts the gap as lost, the live set is exact after the resync,
 * nothing of this correct program is a finding, and the ALLOC the tracker
 * saw keeps its time. 0.3.1 showed "allocated 1, freed 3" here. */
static void loss_then_resync_blames_nobody(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    /* seen: A at 0x1000 (time 10), B at 0x2000 */
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 1, 10), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x2000, 2, 11), BH_TRACK_OK);
    /* lost (seq 3..6): FREE 0x2000, ALLOC 0x3000, ALLOC 0x2000 again, FREE 0x2000.
     * The resync (live set: 0x1000, 0x3000) comes first, then the rest. */
    bh_track_resync_begin(t, CLIENT);
    assert_int_equal(bh_track_restore(t, CLIENT, DEV, 0x1000, 64, 500), BH_TRACK_OK);
    assert_int_equal(bh_track_restore(t, CLIENT, DEV, 0x3000, 64, 500), BH_TRACK_OK);
    bh_track_resync_end(t, CLIENT);
    /* after: FREE 0x3000, ALLOC 0x2000, FREE 0x2000, FREE 0x1000, ALLOC 0x1000 */
    assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x3000, 7, 600), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x2000, 8, 601), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x2000, 9, 602), BH_TRACK_OK);
    bh_track_loss l;
    bh_track_stream_loss(t, CLIENT, &l);
    assert_int_equal(l.lost, 4);
    assert_int_equal(l.unsynced, 0);
    assert_int_equal(l.resyncs, 1);
    bh_track_counts c;
    totals(t, &c);
    assert_int_equal(c.unknown_frees, 0);
    assert_int_equal(c.duplicate_allocs, 0);
    assert_int_equal(c.live, 1);
    assert_true(c.inexact & BH_TRACK_AT_LEAST);
    assert_false(c.inexact & BH_TRACK_UNSYNCED);
    bh_track_entry top[4];
    assert_int_equal(bh_track_most_overfreed(t, top, 4), 0);
    uint64_t n = bh_track_process_gone(t, 100, NULL, NULL);
    assert_int_equal(n, 1);
    totals(t, &c);
    assert_int_equal(c.leaks, 1);
    assert_int_equal(c.unverified_leaks, 0);
    bh_track_free(t);
}

static void keep_since(void *ctx, const bh_track_entry *e) { *(uint64_t *)ctx = e->since; }

/* An entry the resync restores keeps the tracker's time, or the earlier one
 * the resync carries; one the tracker never saw gets the resync's. */
static void resync_keeps_original_time(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 1, 10), BH_TRACK_OK);
    bh_track_resync_begin(t, CLIENT);
    assert_int_equal(bh_track_restore(t, CLIENT, DEV, 0x1000, 64, 900), BH_TRACK_OK);
    assert_int_equal(bh_track_restore(t, CLIENT, DEV, 0x2000, 64, 7), BH_TRACK_OK);
    bh_track_resync_end(t, CLIENT);
    uint64_t since = 0;
    bh_track_each_at(t, 0x1000, keep_since, &since);
    assert_int_equal(since, 10);
    bh_track_each_at(t, 0x2000, keep_since, &since);
    assert_int_equal(since, 7);
    bh_track_free(t);
}

/* Events go on after a gap before any resync (a ring that overflowed): a
 * FREE whose ALLOC was lost and an ALLOC whose FREE was lost are no
 * findings; the stream says it is unsynced until the resync ends; a process
 * that goes unsynced has unverified leaks, not leaks. A late event fills its
 * gap back. */
static void unsynced_excuses_and_late_fills(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 1, 1), BH_TRACK_OK);
    /* lost: 2 ALLOC 0x2000, 3 FREE 0x1000; 4 arrives late */
    assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x2000, 5, 2), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 6, 3), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x5000, 4, 3), BH_TRACK_OK);
    bh_track_loss l;
    bh_track_stream_loss(t, CLIENT, &l);
    assert_int_equal(l.lost, 2);
    assert_int_equal(l.unsynced, 2);
    bh_track_counts c;
    totals(t, &c);
    assert_int_equal(c.unknown_frees, 0);
    assert_int_equal(c.duplicate_allocs, 0);
    assert_true(c.inexact & BH_TRACK_UNSYNCED);
    assert_int_equal(bh_track_process_gone(t, 100, NULL, NULL), 0);
    totals(t, &c);
    assert_int_equal(c.leaks, 0);
    assert_int_equal(c.unverified_leaks, 2);
    /* the transport's own count goes to the same place */
    bh_track_lost(t, BH_TRACK_CLIENT(101, 1), 5);
    bh_track_process_loss(t, UINT32_MAX, &l);
    assert_int_equal(l.lost, 7);
    bh_track_free(t);
}

/* A resync that says which events it covers (a ring's mark) counts a gap
 * at the end of the stream too, and the next event's gap is not counted
 * twice. */
static void resync_covers_a_trailing_gap(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 1, 1), BH_TRACK_OK);
    bh_track_resync_begin(t, CLIENT);
    bh_track_resync_covers(t, CLIENT, 10);
    assert_int_equal(bh_track_restore(t, CLIENT, DEV, 0x1000, 64, 1), BH_TRACK_OK);
    bh_track_resync_end(t, CLIENT);
    bh_track_loss l;
    bh_track_stream_loss(t, CLIENT, &l);
    assert_int_equal(l.lost, 9);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x1000, 11, 2), BH_TRACK_OK);
    bh_track_stream_loss(t, CLIENT, &l);
    assert_int_equal(l.lost, 9);
    assert_int_equal(l.unsynced, 0);
    bh_track_free(t);
}

/* A synced stream's real double free and duplicate ALLOC are findings. */
static void synced_findings_count(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 1, 1), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x1000, 2, 1), BH_TRACK_DUPLICATE_ALLOC);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x1000, 3, 1), BH_TRACK_OK);
    assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x1000, 4, 1), BH_TRACK_UNKNOWN_FREE);
    bh_track_entry top[2];
    assert_int_equal(bh_track_most_overfreed(t, top, 2), 1);
    assert_int_equal(top[0].address, 0x1000);
    assert_int_equal(top[0].unknown_frees, 1);
    assert_int_equal(top[0].inexact, 0);
    bh_track_free(t);
}

static void count_at(void *ctx, const bh_track_entry *e) {
    (void)e;
    (*(int *)ctx)++;
}

/* Earlier, correct clients fill the history; a later client's double free
 * still shows in the over-freed list and in the address's history, and the
 * clean records that made room are counted as evicted. */
static void full_history_keeps_findings(void **state) {
    (void)state;
    bh_track *t = bh_track_new(0);
    bh_track_set_history(t, 64);
    for (uint32_t pid = 1; pid <= 4; pid++) {
        uint64_t client = BH_TRACK_CLIENT(pid, 1);
        for (uint64_t a = 0; a < 100; a++) {
            assert_int_equal(ev(t, client, BH_TRACK_ALLOC, 0x100000 + a * 64, 2 * a + 1, 1), BH_TRACK_OK);
            assert_int_equal(ev(t, client, BH_TRACK_FREE, 0x100000 + a * 64, 2 * a + 2, 1), BH_TRACK_OK);
        }
    }
    uint64_t bad = BH_TRACK_CLIENT(9, 1);
    assert_int_equal(ev(t, bad, BH_TRACK_ALLOC, 0xdead000, 1, 1), BH_TRACK_OK);
    assert_int_equal(ev(t, bad, BH_TRACK_FREE, 0xdead000, 2, 1), BH_TRACK_OK);
    assert_int_equal(ev(t, bad, BH_TRACK_FREE, 0xdead000, 3, 1), BH_TRACK_UNKNOWN_FREE);
    /* more correct traffic afterwards does not push the finding out */
    for (uint64_t a = 0; a < 500; a++) {
        assert_int_equal(ev(t, CLIENT, BH_TRACK_ALLOC, 0x900000 + a * 64, 2 * a + 1, 1), BH_TRACK_OK);
        assert_int_equal(ev(t, CLIENT, BH_TRACK_FREE, 0x900000 + a * 64, 2 * a + 2, 1), BH_TRACK_OK);
    }
    bh_track_entry top[2];
    assert_int_equal(bh_track_most_overfreed(t, top, 2), 1);
    assert_int_equal(top[0].client, bad);
    assert_int_equal(top[0].address, 0xdead000);
    assert_int_equal(top[0].allocs, 1);
    assert_int_equal(top[0].frees, 2);
    int n = 0;
    bh_track_each_at(t, 0xdead000, count_at, &n);
    assert_int_equal(n, 1);
    uint64_t clean, found;
    bh_track_history_evictions(t, &clean, &found);
    /* every record went into the clean table; 64 stay, one moved to the findings */
    assert_int_equal(clean, 4 * 100 + 1 + 500 - 64 - 1);
    assert_int_equal(found, 0);
    bh_track_loss l;
    bh_track_process_loss(t, UINT32_MAX, &l);
    assert_int_equal(l.evicted, clean);
    bh_track_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_gap_is_exact),
        cmocka_unit_test(loss_then_resync_blames_nobody),
        cmocka_unit_test(resync_keeps_original_time),
        cmocka_unit_test(unsynced_excuses_and_late_fills),
        cmocka_unit_test(resync_covers_a_trailing_gap),
        cmocka_unit_test(synced_findings_count),
        cmocka_unit_test(full_history_keeps_findings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
