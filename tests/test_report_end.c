/*
 * test_report_end.c - what the socket reporter promises when delivery ends
 * short, against a real bh-trackd: a flush without a server says so (it
 * does not return BH_OK over undelivered events), and a process that exits
 * while its server is too slow to take everything (here: stopped) has every
 * event delivered or counted as lost and said on stderr, never lost
 * silently: a ring the server took is drained after the exit; what the
 * reporter sends itself (a TT server takes no ring) and could not send is
 * counted.
 *
 * usage: test_report_end PATH-TO-bh-trackd
 *
 * Bounded by counts: a stopped server (SIGSTOP) is slow however loaded the
 * machine, and the figures are read once the server is done (a stat waited
 * for while it moves, test_wait_stat).
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
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/server.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-report-end-test");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

/* n allocations from base. */
static void report_some(const bh_reporter *rep, uint64_t base, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        bh_event ev = {BH_EVENT_ALLOC, 1, base + i * 4096, 64, i + 1};
        rep->report(rep->ctx, &ev);
    }
}

/* ------------------------------------------------------------ flush */

#define WAITING 10 /* events reported while no server listens */

/* A flush while no server listens (the reporter's try at once fails too)
 * returns BH_EBUSY: the events wait in the ring, undelivered. main before
 * this test returned BH_OK, as if they were sent. A flush with nothing
 * waiting is BH_OK without a server, and once a server listens the same
 * flush delivers what waited and returns BH_OK. */
static void a_flush_without_a_server_is_not_ok(void **state) {
    (void)state;
    bh_socket_options opt = {.queue_capacity = 1000};
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &rep), BH_OK); /* nobody listens */
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);    /* nothing waits */
    report_some(&rep, 0x10000000ull, WAITING);
    bh_status st = bh_socket_reporter_flush(&rep, TEST_HANG_MS);
    bh_reporter_stats rs;
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    print_message("flush of %d events without a server: %s (sent %llu, dropped %llu)\n", WAITING,
                  bh_status_name(st), (unsigned long long)rs.sent, (unsigned long long)rs.dropped);
    assert_int_equal(st, BH_EBUSY);
    assert_int_equal(rs.sent, 0);
    assert_int_equal(rs.dropped, 0); /* not lost: waiting */

    const char *base[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "600000", NULL};
    pid_t srv = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.sock);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    assert_int_equal(rs.sent, WAITING);
    char buf[1 << 15];
    assert_int_equal(test_json_u64(test_stats_json(trackd, paths.sock, buf, sizeof(buf)), "totals", "allocs"),
                     WAITING);
    bh_socket_reporter_close(&rep);
    test_server_stop_clean(srv);
}

/* ------------------------------------------------------------ exit */

/* Events reported after the server stopped: 72-byte TT records of them are
 * 3.6 MB, far more than the socket's buffers hold. */
#define AFTER_STOP 50000u

static pid_t server;           /* the server the child stops */
static int child_err = -1;     /* the child's stderr: a file the parent reads back */
static const char *child_path; /* the socket the child reports to */
static uint32_t child_flags;   /* its bh_socket_options.flags */
static int child_cut;          /* the exit's flush outlasts the connection */

/* A child: a reporter with one event delivered (flushed), then the server
 * stopped, AFTER_STOP more events, and exit() with the reporter open: the
 * exit's flush (BH_TRACK_FLUSH_MS) cannot finish. It ends at its time
 * limit, the connection still up (no send gives up before: send_timeout_ms
 * is the hang bound); or (child_cut) with the connection, which a send
 * blocked for 100 ms ends (the TT sender's records, or the nudges a native
 * sender sends while a flush waits, fill the socket's buffer), the time
 * limit far away. */
static void report_then_exit_beside_a_stopped_server(void) {
    if (dup2(child_err, 2) != 2)
        _exit(3);
    setenv("BH_TRACK_FLUSH_MS", child_cut ? "3600000" : "200", 1);
    bh_socket_options opt = {.queue_capacity = 2 * AFTER_STOP,
                             .send_timeout_ms = child_cut ? 100 : TEST_HANG_MS,
                             .flags = child_flags};
    bh_reporter rep;
    if (bh_socket_reporter_open(child_path, &opt, &rep) != BH_OK)
        _exit(4);
    report_some(&rep, 0x10000000ull, 1);
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(5);
    if (kill(server, SIGSTOP) != 0)
        _exit(6);
    report_some(&rep, 0x20000000ull, AFTER_STOP);
    exit(0); /* the reporter open; not test_fork's _exit, which runs no exit handler */
}

/* Runs the child against the server srv (stopped by it, resumed here once
 * it exited); returns what it said it lost. */
static uint64_t exit_beside_a_stopped_server(pid_t srv, const char *path, uint32_t flags, int cut) {
    char file[128], err[4096];
    snprintf(file, sizeof(file), "%s/stderr", paths.dir);
    child_err = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(child_err >= 0);
    server = srv;
    child_path = path;
    child_flags = flags;
    child_cut = cut;
    int rc = test_reap(test_fork(report_then_exit_beside_a_stopped_server));
    assert_int_equal(kill(srv, SIGCONT), 0);
    assert_int_equal(rc, 0);
    ssize_t n = pread(child_err, err, sizeof(err) - 1, 0);
    assert_true(n >= 0);
    err[n] = '\0';
    close(child_err);
    print_message("the child said: %s", n > 0 ? err : "nothing\n");
    return test_said_lost(err);
}

/* A TT server takes no ring: the reporter's sender sends the records itself.
 * Stopped, it takes a few socket buffers' worth; the rest is lost and must
 * be counted and said at exit: what the server got and what the child said
 * cover every event. With cut 0 the exit's flush ends at its limit, the
 * connection up and a batch being written; with cut 1 a send times out
 * first (a batch dropped before the exit, the connection lost). main
 * before this test said nothing at exit while connected (it assumed the
 * sender would still deliver), and the process's end took the ring and the
 * batch being written with it; and a batch dropped before the exit was in
 * the reporter's stats only, which nobody reads at exit (a TT server sees
 * no numbers, so no gap). */
static void exit_beside_a_stopped_tt_server_counts_what_it_could_not_send(int cut) {
    const char *base[] = {trackd,       "--socket", paths.sock, "--compat-tt", "--compat-socket",
                          paths.compat, "--log",    paths.log,  "--grace-ms",  "200",
                          NULL};
    pid_t srv = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.compat);
    test_wait_accepting(paths.sock);
    uint64_t said = exit_beside_a_stopped_server(srv, paths.compat, BH_SOCKET_COMPAT_TT, cut);
    uint64_t want = 1 + AFTER_STOP, got = test_wait_stat(trackd, paths.sock, "tt", "allocs", want - said);
    print_message("TT, flush ended by %s: %u events after the stop: the server got %llu of %llu, the child "
                  "said %llu lost\n",
                  cut ? "the connection's end" : "its time limit", AFTER_STOP, (unsigned long long)got,
                  (unsigned long long)want, (unsigned long long)said);
    assert_true(said > 0); /* the server was stopped: it cannot have taken them all */
    assert_true(said <= AFTER_STOP);
    assert_true(got + said >= want); /* a partly written batch may be in both */
    test_server_stop_clean(srv);
}

static void an_exit_beside_a_stopped_tt_server_counts_what_it_could_not_send(void **state) {
    (void)state;
    exit_beside_a_stopped_tt_server_counts_what_it_could_not_send(0);
}

static void a_batch_a_stopped_tt_server_cut_off_is_said_at_exit(void **state) {
    (void)state;
    exit_beside_a_stopped_tt_server_counts_what_it_could_not_send(1);
}

/* A server that took the ring drains it after the exit, however late: a
 * stopped bh-trackd, resumed after the child exited, has every event, and
 * the child says it lost none, whether the exit's flush ended at its time
 * limit (cut 0) or with the connection (cut 1: the server still holds its end,
 * and drains the ring when it sees ours end). main before this test said
 * every event after the stop lost in both (its 2 s flush outlasted the
 * connection), though the server had them all. */
static void exit_beside_a_stopped_server_leaves_the_ring_to_it(int cut) {
    const char *base[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "200", NULL};
    pid_t srv = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.sock);
    uint64_t said = exit_beside_a_stopped_server(srv, paths.sock, 0, cut);
    uint64_t want = 1 + AFTER_STOP, got = test_wait_stat(trackd, paths.sock, "totals", "allocs", want);
    print_message("native, flush ended by %s: %u events after the stop: the server got %llu of %llu, the "
                  "child said %llu lost\n",
                  cut ? "the connection's end" : "its time limit", AFTER_STOP, (unsigned long long)got,
                  (unsigned long long)want, (unsigned long long)said);
    assert_int_equal(said, 0);
    assert_int_equal(got, want);
    test_server_stop_clean(srv);
}

static void an_exit_beside_a_stopped_server_leaves_the_ring_to_it(void **state) {
    (void)state;
    exit_beside_a_stopped_server_leaves_the_ring_to_it(0);
}

static void an_exit_that_outlasts_the_connection_leaves_the_ring_to_the_server(void **state) {
    (void)state;
    exit_beside_a_stopped_server_leaves_the_ring_to_it(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_report_end PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_flush_without_a_server_is_not_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(an_exit_beside_a_stopped_tt_server_counts_what_it_could_not_send,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_batch_a_stopped_tt_server_cut_off_is_said_at_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(an_exit_beside_a_stopped_server_leaves_the_ring_to_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_exit_that_outlasts_the_connection_leaves_the_ring_to_the_server,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("report_end", tests, NULL, NULL);
}
