/*
 * test_trackd.c - the library's reporters end to end against a real
 * bh-trackd: the three-aliases client through handles is clean, a naive
 * client (each alias reports its own FREE) is flagged, two registries of
 * one process share one connection, and events still queued when a process
 * exits without destroying its registry reach the server.
 *
 * usage: test_trackd PATH-TO-bh-trackd [slow]   (slow: under valgrind)
 *
 * Each test starts its own server on a socket in a temporary directory.
 * Client processes are forked children (the server keys clients by
 * process), and the server's view is read back with `bh-trackd stats
 * --json`. Must never depend on timing: each waits for the server's count
 * (support/server.h). The reporter against a dead, absent or stalled
 * server: test_trackd_faults; the server's own side: test_trackd_server.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/trackd_tests.h"
#include "wire.h"

#define DEVICE 4u

/* The three-aliases scenario through the library, tracking from the
 * environment (BH_TRACK_SOCKET), released in all six orders, then reused. */
static void handles_client(void) {
    setenv("BH_TRACK_SOCKET", tk_paths.sock, 1);
    bh_sim *sim = tk_make_sim();
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(sim);
    bh_registry *reg;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        _exit(11);
    static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    uint32_t domain = bh_sim_domain(DEVICE, BH_SIM_DRAM);
    for (int o = 0; o < 6; o++) {
        bh_handle h[3];
        bh_info info;
        if (bh_alloc(reg, domain, 1 << 20, &h[0]) != BH_OK || bh_info_get(reg, h[0], &info) != BH_OK ||
            bh_intern(reg, domain, info.address, 1 << 20, &h[1]) != BH_OK ||
            bh_lookup(reg, domain, info.address, &h[2]) != BH_OK)
            _exit(12);
        for (int i = 0; i < 3; i++)
            if (bh_release(reg, h[orders[o][i]]) != BH_OK)
                _exit(13);
    }
    bh_handle again;
    if (bh_alloc(reg, domain, 4096, &again) != BH_OK || bh_release(reg, again) != BH_OK)
        _exit(14);
    bh_stats st;
    bh_stats_get(reg, &st);
    if (st.reports != 14 || st.reports_dropped != 0)
        _exit(15);
    if (bh_registry_destroy(reg) != BH_OK) /* flushes the reporter */
        _exit(16);
    bh_sim_destroy(sim);
}

/* The old runtime: every object reports on its own. A is allocated (ALLOC), B
 * is re-created at A's address and reports ALLOC again, C is a view; each of
 * the three reports FREE. One allocation is never freed. */
static void naive_client(void) {
    bh_reporter rep;
    if (bh_socket_reporter_open(tk_paths.sock, NULL, &rep) != BH_OK)
        _exit(20);
    uint64_t seq = 0;
    for (int o = 0; o < 6; o++) {
        bh_event alloc = {BH_EVENT_ALLOC, DEVICE, 695055872, 1 << 20, 0};
        bh_event fr = {BH_EVENT_FREE, DEVICE, 695055872, 1 << 20, 0};
        alloc.seq = ++seq;
        rep.report(rep.ctx, &alloc);
        alloc.seq = ++seq;
        rep.report(rep.ctx, &alloc);
        for (int i = 0; i < 3; i++) {
            fr.seq = ++seq;
            rep.report(rep.ctx, &fr);
        }
    }
    bh_event leak = {BH_EVENT_ALLOC, DEVICE, 0x7000000, 4096, ++seq};
    rep.report(rep.ctx, &leak);
    bh_socket_reporter_close(&rep);
}

/* Two registries of one process, tracking from the environment: one
 * connection, two streams. */
static void two_registries_client(void) {
    setenv("BH_TRACK_SOCKET", tk_paths.sock, 1);
    bh_sim *sim = tk_make_sim();
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(sim);
    bh_registry *reg[2];
    bh_handle h[2];
    for (int i = 0; i < 2; i++)
        if (bh_registry_create(&cfg, &reg[i]) != BH_OK ||
            bh_alloc(reg[i], bh_sim_domain((uint32_t)i, BH_SIM_DRAM), 4096, &h[i]) != BH_OK)
            _exit(30);
    for (int i = 0; i < 2; i++)
        if (bh_release(reg[i], h[i]) != BH_OK || bh_registry_destroy(reg[i]) != BH_OK)
            _exit(31);
    bh_sim_destroy(sim);
}

/* A runtime that returns from main with its registry never destroyed (a leak,
 * or a registry meant to live as long as the process), tracking from the
 * environment: one allocation kept, one freed, then exit() (not _exit: the
 * process ends as programs do). What waits in the reporter must still reach
 * the server, or the leak the tracker runs for is never seen. Statics keep
 * what is left reachable for memcheck. */
static bh_sim *exiting_sim;

static bh_registry *exiting_reg;

static bh_handle exiting_kept;

static void exits_without_destroying_its_registry(void) {
    setenv("BH_TRACK_SOCKET", tk_paths.sock, 1);
    exiting_sim = tk_make_sim();
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(exiting_sim);
    bh_handle freed;
    if (bh_registry_create(&cfg, &exiting_reg) != BH_OK ||
        bh_alloc(exiting_reg, bh_sim_domain(DEVICE, BH_SIM_L1), 4096, &exiting_kept) != BH_OK ||
        bh_alloc(exiting_reg, bh_sim_domain(DEVICE, BH_SIM_DRAM), 8192, &freed) != BH_OK ||
        bh_release(exiting_reg, freed) != BH_OK)
        _exit(40);
    exit(0);
}

static void handle_client_leaves_no_unknown_free_no_duplicate_and_no_leak(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    assert_int_equal(test_reap(test_fork(handles_client)), 0);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "frees", 7), 7);
    /* The server has seen the process gone: a leak would show now. */
    assert_int_equal(test_wait_stat(tk_trackd, tk_paths.sock, "server", "processes_gone", 1), 1);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "totals", "allocs"), 7);
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 0);
    assert_int_equal(test_json_u64(j, "totals", "duplicate_allocs"), 0);
    assert_int_equal(test_json_u64(j, "totals", "leaks"), 0);
    assert_int_equal(test_json_u64(j, "totals", "live"), 0);
    test_server_stop_clean(srv);
    /* SIGTERM wrote the summary and removed the socket. */
    FILE *f = fopen(tk_paths.summary, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_int_equal(test_json_u64(buf, "totals", "frees"), 7);
    assert_int_equal(access(tk_paths.sock, F_OK), -1);
}

static void naive_client_is_flagged_for_unknown_frees_duplicates_and_leaks(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    assert_int_equal(test_reap(test_fork(naive_client)), 0);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "leaks", 1), 1);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "totals", "allocs"), 13);
    assert_int_equal(test_json_u64(j, "totals", "frees"), 18);
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 12);
    assert_int_equal(test_json_u64(j, "totals", "duplicate_allocs"), 6);
    assert_int_equal(test_json_u64(j, "totals", "leaked_bytes"), 4096);
    test_server_stop_clean(srv);
}

static void events_still_queued_at_exit_reach_the_server(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    assert_int_equal(test_reap(test_fork(exits_without_destroying_its_registry)), 0);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "leaks", 1), 1);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "totals", "allocs"), 2);
    assert_int_equal(test_json_u64(j, "totals", "frees"), 1);
    assert_int_equal(test_json_u64(j, "totals", "leaked_bytes"), 4096);
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 0);
    test_server_stop_clean(srv);
}

static void registries_of_one_process_share_one_connection(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    assert_int_equal(test_reap(test_fork(two_registries_client)), 0);
    assert_int_equal(test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "frees", 2), 2);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "server", "reporter_connections"), 1);
    assert_non_null(strstr(j, "\"stream\":1"));
    assert_non_null(strstr(j, "\"stream\":2"));
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 0);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        TK_TEST(handle_client_leaves_no_unknown_free_no_duplicate_and_no_leak),
        TK_TEST(naive_client_is_flagged_for_unknown_frees_duplicates_and_leaks),
        TK_TEST(registries_of_one_process_share_one_connection),
        TK_TEST(events_still_queued_at_exit_reach_the_server),
    };
    return tk_main(argc, argv, "trackd", tests, sizeof(tests) / sizeof(tests[0]));
}
