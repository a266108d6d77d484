/*
 * test_trackd_liveness.c - when bh-trackd counts a client process gone
 * (liveness.c): once its last reporter connection has ended, and the process
 * exited or --grace-ms passed, whatever else is connected; and what a
 * connection's end gives up (its open resyncs).
 *
 * usage: test_trackd_liveness PATH-TO-bh-trackd [TEST-NAME-PATTERN]
 *
 * Owns: raw connections from this test process (its pid is the client's),
 * one server per test. Must never: assert on timing; wait without a bound
 * (hs_wait_total gives up TEST_HANG_S after its figure last moved).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/hostile.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-trackd-liveness");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* A connection of the process that has not said HELLO yet (a query being
 * made, a reporter reconnecting) is no reporter. main before this test took
 * it for one when the process's reporter connection ended: no orphan was
 * kept, the silent connection's close (no HELLO: not a reporter's) kept
 * none either, and the process was never counted gone nor its allocations
 * reported as leaks. Seen as a rare failure of test_hostile_ring, whose
 * stats queries were such connections. */
static void a_connection_before_its_hello_keeps_no_process_alive(void **state) {
    (void)state;
    hs_start(trackd, &paths, (const char *const[]){"--grace-ms", "200", NULL}, 0);
    int silent = bh_unix_connect(paths.sock);
    assert_true(silent >= 0);
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0, 0x100000, 64, 3);
    /* Answered after both connections were accepted (in order): the silent
     * one is listed when the reporter's ends. */
    assert_int_equal(hs_wait_total(paths.sock, "live", 3, TEST_HANG_S), 3);
    close(fd);
    assert_int_equal(hs_wait_total(paths.sock, "processes_gone", 1, TEST_HANG_S), 1);
    assert_int_equal(hs_wait_total(paths.sock, "leaks", 3, TEST_HANG_S), 3);
    close(silent);
}

/* A DUMP on fd, a reporter holding 20,000 live allocations: a reply far
 * bigger than a socket holds, never read past its header, so fd stays
 * closing (its last reply unread) until the closing timeout. */
static void make_closing(int fd) {
    uint8_t q[BH_WIRE_HEADER + 4];
    size_t n = bh_wire_header(q, BH_WIRE_QUERY, 4);
    bh_put16(q + n, 2);
    bh_put16(q + n + 2, 0);
    hs_send_all(fd, q, n + 4);
    uint8_t h[BH_WIRE_HEADER];
    assert_int_equal(hs_read_n(fd, h, sizeof(h)), sizeof(h));
    assert_int_equal(bh_get16(h + 6), BH_WIRE_REPLY);
    assert_true(bh_get32(h + 8) >= 512u << 10);
}

/* A connection closing (its last reply unread) is still open: the
 * process's other reporter connection ending then leaves it connected.
 * main before this test did not count closing connections: that ending
 * made an orphan, counted gone after --grace-ms (100 ms here) while the
 * closing one was open, and its close (at the 2 s closing timeout) made
 * another, counted gone once more. A child process that ends its
 * connection after that close is the marker: its orphan is younger, so
 * when its leaks are in, any second count of this process is in too. */
static void a_closing_connection_keeps_its_process_counted_once(void **state) {
    (void)state;
    enum { LIVE = 20000, CHILD_LIVE = 5 };
    hs_start(trackd, &paths,
             (const char *const[]){"--grace-ms", "100", "--handshake-timeout-ms", "2000", NULL}, 0);
    int a = hs_reporter(paths.sock), b = hs_reporter(paths.sock);
    hs_events(a, 1, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0, 0x100000, 64, LIVE);
    hs_events(b, 2, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0, 0x10000000, 64, 1);
    assert_int_equal(hs_wait_total(paths.sock, "live", LIVE + 1, TEST_HANG_S), LIVE + 1);
    make_closing(a);
    close(b);
    assert_int_equal(hs_wait_total(paths.sock, "processes_gone", 1, TEST_HANG_S), 1);
    assert_int_equal(hs_wait_total(paths.sock, "timeouts", 1, TEST_HANG_S), 1); /* a closed */
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(go[1]);
        int fd = hs_reporter(paths.sock);
        hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0, 0x100000, 64, CHILD_LIVE);
        close(fd);
        char c;
        (void)!read(go[0], &c, 1); /* alive (not ended) until the parent is done */
        _exit(0);
    }
    hs_track(child);
    close(go[0]);
    assert_int_equal(hs_wait_total(paths.sock, "leaks", LIVE + 1 + CHILD_LIVE, TEST_HANG_S),
                     LIVE + 1 + CHILD_LIVE);
    assert_int_equal(hs_stat(paths.sock, "processes_gone"), 2);
    close(go[1]);
    close(a);
}

/* clients_connected counts the processes that keep from being counted
 * gone: those with a reporter connection (closing ones too). main before
 * this test counted a connection before its HELLO (a silent probe, a query
 * being made) as a client process, and not one whose only connection was
 * closing: 1 for a silent connection and 0 for a closing reporter. */
static void clients_connected_counts_the_processes_kept_alive(void **state) {
    (void)state;
    hs_start(trackd, &paths, NULL, 0);
    int silent = bh_unix_connect(paths.sock);
    assert_true(silent >= 0);
    /* The stats query comes after the silent connection was accepted. */
    uint64_t with_silent = hs_stat(paths.sock, "clients_connected");
    int a = hs_reporter(paths.sock);
    hs_events(a, 1, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0, 0x100000, 64, 20000);
    assert_int_equal(hs_wait_total(paths.sock, "live", 20000, TEST_HANG_S), 20000);
    uint64_t with_reporter = hs_stat(paths.sock, "clients_connected");
    make_closing(a);
    uint64_t with_closing = hs_stat(paths.sock, "clients_connected");
    printf("# clients_connected: %" PRIu64 " with a silent connection, %" PRIu64
           " with a reporter too, %" PRIu64 " with that reporter closing\n",
           with_silent, with_reporter, with_closing);
    assert_int_equal(with_silent, 0);
    assert_int_equal(with_reporter, 1);
    assert_int_equal(with_closing, 1);
    close(a);
    close(silent);
}

/* A connection that ends with resyncs of several streams begun: each is
 * given up (server.resyncs_cut), none left resyncing for good. At most
 * TD_RESYNCS_OPEN (16) at once: a 17th stream's RESYNC_BEGIN is refused
 * (ERROR BH_EINVAL), and the connection's end gives up the 16. main before
 * this test kept only the latest resync begun: the others stayed resyncing
 * (resyncs_cut 1 of 17, their leaks unverified for good). */
static void every_resync_a_connection_leaves_open_is_given_up(void **state) {
    (void)state;
    enum { OPEN = 16 };
    hs_start(trackd, &paths, (const char *const[]){"--grace-ms", "100", NULL}, 0);
    int fd = hs_reporter(paths.sock);
    uint8_t f[(OPEN + 1) * (BH_WIRE_HEADER + 4)];
    size_t n = 0;
    for (uint32_t stream = 1; stream <= OPEN + 1; stream++) {
        n += bh_wire_header(f + n, BH_WIRE_RESYNC_BEGIN, 4);
        bh_put32(f + n, stream);
        n += 4;
    }
    hs_send_all(fd, f, n);
    uint8_t e[BH_WIRE_HEADER + 4];
    size_t got = hs_read_n(fd, e, sizeof(e));
    int refused = got == sizeof(e) && bh_get16(e + 6) == BH_WIRE_ERROR;
    close(fd);
    assert_int_equal(hs_wait_total(paths.sock, "processes_gone", 1, TEST_HANG_S), 1); /* after the cut */
    uint64_t cut = hs_stat(paths.sock, "resyncs_cut");
    printf("# %d streams' RESYNC_BEGIN, then the end: the last %s, %" PRIu64 " resyncs given up\n", OPEN + 1,
           refused ? "refused" : "taken", cut);
    assert_true(refused);
    assert_int_equal((int32_t)bh_get32(e + BH_WIRE_HEADER), BH_EINVAL);
    assert_int_equal(cut, OPEN);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_connection_before_its_hello_keeps_no_process_alive, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_closing_connection_keeps_its_process_counted_once, setup, teardown),
        cmocka_unit_test_setup_teardown(clients_connected_counts_the_processes_kept_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(every_resync_a_connection_leaves_open_is_given_up, setup, teardown),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &trackd, "trackd_liveness",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
