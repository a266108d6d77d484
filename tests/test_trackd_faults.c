/*
 * test_trackd_faults.c - the socket reporter against a server that fails:
 * killed and restarted (drops counted, the resync gives the new server the
 * live set back), absent (reports cost nothing but counted drops), and a
 * peer that takes nothing (the application is never stalled).
 *
 * usage: test_trackd_faults PATH-TO-bh-trackd [slow]   (slow: under
 * valgrind, looser latency bounds)
 *
 * The application's latency is the worst alloc + release among the calls
 * the machine did not preempt (support/server.h's test_timer), so it must
 * never depend on a quiet machine; waits poll for the server's counts.
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

/* Alloc + release pairs; returns the worst latency of one pair in seconds,
 * among the pairs during which this thread was not preempted (another
 * process on the core measures the machine's load, not the reporter). At
 * least half of them must count, or the figure would say nothing. */
static double churn(bh_registry *reg, int pairs) {
    double worst = 0;
    int counted = 0;
    for (int i = 0; i < pairs; i++) {
        bh_handle h;
        test_timer t;
        test_timer_start(&t);
        assert_int_equal(bh_alloc(reg, bh_sim_domain(1, BH_SIM_L1), 64, &h), BH_OK);
        assert_int_equal(bh_release(reg, h), BH_OK);
        double dt = test_timer_unpreempted(&t);
        counted += dt >= 0;
        if (dt > worst)
            worst = dt;
    }
    assert_true(counted >= pairs / 2);
    return worst;
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
    double worst = churn(reg, 2000);
    for (int i = 5; i < 8; i++)
        assert_int_equal(bh_alloc(reg, bh_sim_domain(0, BH_SIM_DRAM), 4096, &held[i]), BH_OK);
    /* Let the sender try: against a dead server it disconnects and drops. */
    (void)bh_socket_reporter_flush(&rep, 1000);
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_true(st.reports_dropped > 0);
    assert_true(worst < 0.25 * tk_slack); /* never waits on the dead server beyond the send timeout */

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
    double worst = churn(reg, 20000);
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_int_equal(st.reports, 40000);
    /* The ring keeps what fits (one record stays free for a resync's mark)
     * for a server that comes later; the rest is dropped and counted. */
    assert_int_equal(st.reports_dropped, 40000 - 1023);
    assert_true(worst < 0.05 * tk_slack);
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
 * answer). So the worst alloc + release stays far below the 100 ms of the
 * send and flush timeouts, which a report waiting on the peer would cost,
 * and all but what the ring holds is dropped. */
static void slow_server_does_not_stall_the_application(void **state) {
    (void)state;
    int lfd = test_unix_listen(tk_paths.sock, 4);
    bh_sim *sim = tk_make_sim();
    bh_reporter rep;
    bh_socket_options opt = {
        .queue_capacity = 1024, .max_block_us = 500, .send_timeout_ms = 100, .flush_timeout_ms = 100};
    bh_registry *reg = tracked_registry(sim, &rep, &opt);
    double t0 = test_now_s();
    double worst = churn(reg, 100000);
    double avg_us = (test_now_s() - t0) / 200000 * 1e6;
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    print_message("slow server: worst call %.3f ms, average %.2f us per call, %llu of %llu reports dropped\n",
                  worst * 1e3, avg_us, (unsigned long long)st.reports_dropped,
                  (unsigned long long)st.reports);
    assert_true(st.reports_dropped > 0);
    assert_true(worst < 0.1 * tk_slack); /* no report waited on the peer */
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
