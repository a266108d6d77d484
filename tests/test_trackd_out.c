/*
 * test_trackd_out.c - what bh-trackd's outputs say (docs/protocol.md,
 * "Statistics JSON"; bh-trackd(1)): the text stats' "leaked" list, the log's
 * line for a process that ended with live allocations, the order of the
 * stats rows across processes, and processes_gone counting each exit once.
 *
 * usage: test_trackd_out PATH-TO-bh-trackd
 *
 * Owns: client processes (forked, each its own client to the server) that
 * report through the library's socket reporter, and reading the text and
 * JSON outputs back. Must never: assert on timing; wait without a bound
 * (every wait is test_wait_stat's, bounded by TEST_HANG_S).
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
#include <sys/prctl.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/server.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-trackd-out");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

/* ------------------------------------------------------------ clients */

/* Reports n ALLOCs of size bytes, one per domain of domains[], at address,
 * then (hold) stays alive until killed or (otherwise) exits without freeing
 * them: what it still holds is a leak once it is gone. */
static void report(const uint32_t *domains, const uint64_t *sizes, int n, uint64_t address, int hold) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test does not leave it behind */
    bh_reporter rep;
    if (bh_socket_reporter_open(paths.sock, NULL, &rep) != BH_OK)
        _exit(20);
    for (int i = 0; i < n; i++) {
        bh_event alloc = {BH_EVENT_ALLOC, domains[i], address, sizes[i], (uint64_t)i + 1};
        rep.report(rep.ctx, &alloc);
    }
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(21);
    if (hold)
        pause();
    bh_socket_reporter_close(&rep);
}

static void leaks_one(void) {
    static const uint32_t d[] = {BH_DOMAIN(3, BH_MEM_L1)};
    static const uint64_t z[] = {4096};
    report(d, z, 1, 0x7770000, 0);
}

static void leaks_two(void) {
    static const uint32_t d[] = {BH_DOMAIN(5, BH_MEM_DRAM), BH_DOMAIN(6, BH_MEM_DRAM)};
    static const uint64_t z[] = {8192, 8192};
    report(d, z, 2, 0x5550000, 0);
}

/* Two groups, the bigger first seen; and a third, smaller one in another
 * process: the fair order (each process's biggest, then each one's second)
 * lists the other process's before this one's second. */
static void holds_big_two(void) {
    static const uint32_t d[] = {BH_DOMAIN(0, BH_MEM_DRAM), BH_DOMAIN(1, BH_MEM_DRAM)};
    static const uint64_t z[] = {1048576, 524288};
    report(d, z, 2, 0x1000000, 1);
}

static void holds_small_one(void) {
    static const uint32_t d[] = {BH_DOMAIN(2, BH_MEM_DRAM)};
    static const uint64_t z[] = {4096};
    report(d, z, 1, 0x2000000, 1);
}

/* CONNS connections one after the other, each left with one allocation
 * live (a registry each, opened, reported through, closed), then the exit:
 * all within one of the server's ticks, so the process is seen without a
 * connection CONNS times before its orphan check. */
enum { CONNS = 3 };

static void leaks_on_connections_in_turn(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (uint32_t i = 0; i < CONNS; i++) {
        bh_reporter rep;
        if (bh_socket_reporter_open(paths.sock, NULL, &rep) != BH_OK)
            _exit(20);
        bh_event alloc = {BH_EVENT_ALLOC, BH_DOMAIN(i, BH_MEM_DRAM), 0x3330000, 4096, 1};
        rep.report(rep.ctx, &alloc);
        if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
            _exit(21);
        bh_socket_reporter_close(&rep);
    }
}

/* How many lines of the log contain what. */
static int logged_times(const char *what) {
    FILE *f = fopen(paths.log, "r");
    char line[512];
    int n = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, what) != NULL;
    if (f != NULL)
        fclose(f);
    return n;
}

/* Whether the log holds a line containing what. */
static int logged(const char *what) { return logged_times(what) > 0; }

/* ------------------------------------------------------------ tests */

/* A process that ended holding allocations: the text stats name each leak
 * (the JSON always did), and the log says "1 live allocation", not "1 live
 * allocations". */
static void leaks_are_listed_in_text_stats_and_counted_in_good_english(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);
    assert_int_equal(test_reap(test_fork(leaks_one)), 0);
    assert_int_equal(test_reap(test_fork(leaks_two)), 0);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "server", "processes_gone", 2), 2);
    static char text[1 << 14];
    test_trackd_says(trackd, "stats", paths.sock, text, sizeof(text));
    const char *list = strstr(text, "\nleaked (live when their process was gone; the latest 3 of 3):\n");
    assert_non_null(list);
    assert_non_null(strstr(list, " device 3 kind l1 address 0x7770000: size 4096, live "));
    assert_non_null(strstr(list, " device 5 kind dram address 0x5550000: size 8192, live "));
    assert_non_null(strstr(list, " device 6 kind dram address 0x5550000: size 8192, live "));
    assert_true(logged(" ended with 1 live allocation (a leak)"));
    assert_true(logged(" ended with 2 live allocations (leaks)"));
    assert_false(logged(" ended with 1 live allocations"));
    test_server_stop_clean(srv);
}

/* One process gone is counted once, however many of its connections ended
 * before the server's orphan check: each ending with no other connection
 * listed added the pid as an orphan again, and each orphan counted the exit
 * (processes_gone 2 or 3 for one exit, the first round failing in 10 of 10
 * runs; a wait for n processes returned after fewer). The leaks were still
 * counted once (the tracker had none left for the later entries).
 * Repeated ROUNDS times: the ends fall on the ticks differently each time.
 * The grace is the hang guard, not the suite's 300 ms: the process is alive
 * between its connections, and under valgrind beside busy loops its next
 * HELLO came more than 300 ms after the last close, so it was rightly
 * counted gone (not back in time) at each gap. Only /proc then says it has
 * gone: at its exit, with every orphan it left still listed. */
static void a_process_with_several_connections_is_gone_once(void **state) {
    (void)state;
    enum { ROUNDS = 12 };
    char grace[16];
    snprintf(grace, sizeof(grace), "%u", (unsigned)TEST_HANG_MS);
    const char *const extra[] = {"--grace-ms", grace, NULL};
    pid_t srv = test_server_start(trackd, &paths, extra);
    static char j[1 << 16];
    for (uint64_t round = 1; round <= ROUNDS; round++) {
        assert_int_equal(test_reap(test_fork(leaks_on_connections_in_turn)), 0);
        /* Its orphans are all checked in one tick: an overcount shows at once. */
        assert_int_equal(test_wait_stat(trackd, paths.sock, "server", "processes_gone", round), round);
        test_stats_json(trackd, paths.sock, j, sizeof(j));
        assert_int_equal(test_json_u64(j, "totals", "leaks"), round * CONNS);
        assert_int_equal(test_json_u64(j, "totals", "live"), 0);
    }
    assert_int_equal(logged_times(" ended with 3 live allocations (leaks)"), ROUNDS);
    test_server_stop_clean(srv);
}

/* Where each of three strings first is in text, in order: all found and
 * increasing. */
static int in_order(const char *text, const char *a, const char *b, const char *c) {
    const char *pa = strstr(text, a), *pb = strstr(text, b), *pc = strstr(text, c);
    return pa != NULL && pb != NULL && pc != NULL && pa < pb && pb < pc;
}

/* stats rows come biggest first (live bytes, then peak bytes) across
 * processes, as protocol.md says, in the JSON (`clients`) and the text; the
 * fair order only chooses which rows a cut reply keeps
 * (test_hostile_tables). Before, the rows came round by round: the other
 * process's 4 KiB between this one's 1 MiB and 512 KiB. */
static void stats_rows_come_biggest_first_across_processes(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);
    pid_t big = test_fork(holds_big_two);
    assert_int_equal(test_wait_stat_is(trackd, paths.sock, "totals", "live_bytes", 1048576 + 524288),
                     1048576 + 524288);
    pid_t small = test_fork(holds_small_one);
    assert_int_equal(test_wait_stat_is(trackd, paths.sock, "totals", "live_bytes", 1048576 + 524288 + 4096),
                     1048576 + 524288 + 4096);
    static char j[1 << 14], text[1 << 14];
    test_stats_json(trackd, paths.sock, j, sizeof(j));
    assert_true(in_order(j, "\"device\":0,", "\"device\":1,", "\"device\":2,"));
    assert_non_null(strstr(j, "\"clients\":[{\"pid\":")); /* one separator per row, */
    assert_null(strstr(j, ",,"));                         /* in its place */
    assert_non_null(strstr(j, "}],\"omitted_clients\":0,"));
    test_trackd_says(trackd, "stats", paths.sock, text, sizeof(text));
    assert_true(in_order(text, " 1048576 ", " 524288 ", " 4096 "));
    test_kill(small);
    test_kill(big);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_trackd_out PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(stats_rows_come_biggest_first_across_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(leaks_are_listed_in_text_stats_and_counted_in_good_english, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_process_with_several_connections_is_gone_once, setup, teardown),
    };
    return cmocka_run_group_tests_name("trackd_out", tests, NULL, NULL);
}
