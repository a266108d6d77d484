/*
 * test_trackd_faults.c - the socket reporter against a server that fails:
 * killed and restarted (drops counted, the resync gives the new server the
 * live set back), absent (reports cost nothing but counted drops), and a
 * peer that takes nothing (the application is never stalled).
 *
 * usage: test_trackd_faults PATH-TO-bh-trackd [slow]   (slow: under
 * valgrind, looser latency bounds)
 *
 * The application's latency is the worst alloc + release on its own (CPU
 * time and sleeps, less the waits for a core: support/server.h's
 * test_timer_unloaded) among the calls the machine did not preempt, with a
 * count of the times the thread went to sleep, so it never depends on a
 * quiet machine; waits poll for the server's counts.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/trackd_tests.h"
#include "wire.h"

static bh_registry *tracked_registry(bh_sim *sim, bh_reporter *rep, const bh_socket_options *opt) {
    assert_int_equal(bh_socket_reporter_open(tk_paths.sock, opt, rep), BH_OK);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(sim);
    cfg.reporter = *rep;
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

/* What a churn measured: the worst alloc + release on its own (support/
 * server.h's test_timer_unloaded: its CPU time and its sleeps, not the waits
 * for a core that other processes cost it), among the pairs during which
 * this thread was not preempted, and how many times the thread went to
 * sleep (a count: each blocking call, nap or lock wait is one). */
typedef struct churned {
    double worst;
    long sleeps;
} churned;

/* The most times a churn's thread may go to sleep: one wait for ring room
 * (report_stream.c's put_waiting, before the first drop asks for a resync:
 * none after it) naps 20 us at a time for max_block_us, 500 us in these
 * tests, so 25 naps; twice that. A report that waited on the server, or
 * for room on every full ring, sleeps once per report: thousands. */
#define SLEEPS_MAX 50

/* Alloc + release pairs; fails at the first that took more than limit
 * seconds on its own, or once the thread went to sleep more than
 * SLEEPS_MAX times (so a stall fails at once instead of at the end of as
 * many stalls as pairs). At least half of the pairs must be measured, or
 * the worst would say nothing. */
static churned churn(bh_registry *reg, int pairs, double limit) {
    churned r = {0, 0};
    int counted = 0;
    long sleeps0 = test_thread_sleeps(), sleeps_max = (long)(SLEEPS_MAX * tk_slack);
    for (int i = 0; i < pairs; i++) {
        bh_handle h;
        test_timer t;
        test_timer_start(&t);
        assert_int_equal(bh_alloc(reg, bh_sim_domain(1, BH_SIM_L1), 64, &h), BH_OK);
        assert_int_equal(bh_release(reg, h), BH_OK);
        double dt = test_timer_unloaded(&t);
        counted += dt >= 0;
        if (dt > r.worst)
            r.worst = dt;
        r.sleeps = test_thread_sleeps() - sleeps0;
        if (r.worst >= limit || r.sleeps > sleeps_max)
            fail_msg(
                "after %d pairs: the worst took %.3f ms on its own (limit %.3f ms), the thread slept %ld "
                "times (limit %ld)",
                i + 1, r.worst * 1e3, limit * 1e3, r.sleeps, sleeps_max);
    }
    assert_true(counted >= pairs / 2);
    return r;
}

static void server_killed_and_restarted_gets_the_live_set_back_by_resync(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    bh_sim *sim = tk_make_sim();
    bh_reporter rep;
    /* A ring of 1,024 records: the 4,006 events while the server is dead overflow it. */
    bh_socket_options opt = {.send_timeout_ms = 200, .queue_capacity = 1000};
    bh_registry *reg = tracked_registry(sim, &rep, &opt);
    bh_handle held[8];
    for (int i = 0; i < 5; i++)
        assert_int_equal(bh_alloc(reg, bh_sim_domain(0, BH_SIM_DRAM), 4096, &held[i]), BH_OK);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "live", 5), 5);

    test_server_stop(srv, SIGKILL); /* leaves a stale socket file behind */
    /* never waits on the dead server beyond the send timeout */
    churned k = churn(reg, 2000, 0.25 * tk_slack);
    print_message("dead server: worst call %.3f ms, %ld sleeps\n", k.worst * 1e3, k.sleeps);
    for (int i = 5; i < 8; i++)
        assert_int_equal(bh_alloc(reg, bh_sim_domain(0, BH_SIM_DRAM), 4096, &held[i]), BH_OK);
    /* Let the sender try: against a dead server it disconnects and drops. */
    (void)bh_socket_reporter_flush(&rep, 1000);
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_true(st.reports_dropped > 0);

    srv = test_server_start(tk_trackd, &tk_paths, NULL); /* replaces the stale socket file */
    bh_reporter_stats rs;
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(10)) {
        assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
        if (rs.connects >= 2 && rs.resyncs >= 1)
            break;
    }
    assert_true(rs.connects >= 2 && rs.resyncs >= 1);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "live", 8),
                     8); /* the resync made the view right */
    for (int i = 0; i < 8; i++)
        assert_int_equal(bh_release(reg, held[i]), BH_OK);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "live", 0), 0);
    const char *j = tk_stats_json();
    /* The new server drained what the ring kept from before it started, so
     * it counts frees of the churn too; it lost exactly what was dropped. */
    assert_true(test_json_u64(j, "totals", "frees") >= 8);
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 0);
    assert_int_equal(test_json_u64(j, "totals", "duplicate_allocs"), 0);
    assert_true(test_json_u64(j, "server", "resyncs") >= 1);
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    assert_int_equal(test_json_u64(j, "totals", "lost"), rs.dropped);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_socket_reporter_close(&rep);
    bh_sim_destroy(sim);
    test_server_stop_clean(srv);
}

static void no_server_costs_nothing_but_counted_drops(void **state) {
    (void)state;
    bh_sim *sim = tk_make_sim();
    bh_reporter rep;
    bh_socket_options opt = {.queue_capacity = 1000};     /* a ring of 1,024 records */
    bh_registry *reg = tracked_registry(sim, &rep, &opt); /* nobody listens on tk_paths.sock */
    int pairs = tk_slack > 1 ? 5000 : 20000;              /* under valgrind, fewer */
    churned c = churn(reg, pairs, 0.05 * tk_slack);
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_int_equal(st.reports, 2 * pairs);
    /* The ring keeps what fits (one record stays free for a resync's mark)
     * for a server that comes later; the rest is dropped and counted. */
    assert_int_equal(st.reports_dropped, 2 * pairs - 1023);
    print_message("no server: worst call %.3f ms, %ld sleeps\n", c.worst * 1e3, c.sleeps);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_socket_reporter_close(&rep);
    bh_sim_destroy(sim);
}

/* A peer that never takes the connection off its listen backlog: the
 * reporter connects (the backlog has room) and offers its ring, but nothing
 * answers the offer, so nothing ever drains the ring. Reporting calls never
 * touch the socket (the sender thread does, and sends nothing past HELLO
 * and RING until the offer is answered): they write into the shared-memory
 * ring until it is full (2,047 records), then drop and count. A report
 * waits for ring room at most max_block_us, and not at all while a resync
 * is due (from the connection on, here: the resync waits for the offer's
 * answer). So the worst alloc + release on its own stays far below the
 * 100 ms of the send and flush timeouts, which a report waiting on the peer
 * would cost, the thread sleeps no more than one wait's naps, and all but
 * what the ring holds is dropped. Checked: a report that waits for room up
 * to the send timeout fails at once on both bounds, beside busy loops or
 * not; this passes beside them. */
static void slow_server_does_not_stall_the_application(void **state) {
    (void)state;
    int lfd = test_unix_listen(tk_paths.sock, 4);
    bh_sim *sim = tk_make_sim();
    bh_reporter rep;
    bh_socket_options opt = {
        .queue_capacity = 1024, .max_block_us = 500, .send_timeout_ms = 100, .flush_timeout_ms = 100};
    bh_registry *reg = tracked_registry(sim, &rep, &opt);
    int pairs = tk_slack > 1 ? 10000 : 100000; /* under valgrind, fewer: still 10 rings' worth */
    double t0 = test_now_s();
    /* No report waited on the peer: that is the send timeout, 4 times this. */
    churned c = churn(reg, pairs, opt.send_timeout_ms / 4 / 1e3 * tk_slack);
    double avg_us = (test_now_s() - t0) / (2 * pairs) * 1e6;
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    print_message("slow server: worst call %.3f ms, %ld sleeps, average %.2f us per call, %llu of %llu "
                  "reports dropped\n",
                  c.worst * 1e3, c.sleeps, avg_us, (unsigned long long)st.reports_dropped,
                  (unsigned long long)st.reports);
    assert_true(st.reports_dropped > 0);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_socket_reporter_close(&rep);
    bh_sim_destroy(sim);
    close(lfd);
    unlink(tk_paths.sock);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        TK_TEST(server_killed_and_restarted_gets_the_live_set_back_by_resync),
        TK_TEST(no_server_costs_nothing_but_counted_drops),
        TK_TEST(slow_server_does_not_stall_the_application),
    };
    return tk_main(argc, argv, "trackd_faults", tests, sizeof(tests) / sizeof(tests[0]));
}
