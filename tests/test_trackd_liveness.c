/*
 * test_trackd_liveness.c - when bh-trackd counts a client process gone
 * (liveness.c): once its last reporter connection has ended, and the process
 * exited or --grace-ms passed, whatever else is connected.
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

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_trackd_liveness PATH-TO-bh-trackd [TEST-NAME-PATTERN]\n");
        return 2;
    }
    trackd = argv[1];
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_connection_before_its_hello_keeps_no_process_alive, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("trackd_liveness", tests, NULL, NULL);
}
