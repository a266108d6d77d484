/*
 * test_trackd_gone.c - a client process gone with many live allocations
 * (liveness.c): its drop runs in slices, every other client served between
 * them, each answer meanwhile consistent (the process listed as going, what
 * it has still to drop counted live), and the end exact.
 *
 * usage: test_trackd_gone PATH-TO-bh-trackd [TEST-NAME-PATTERN]
 *
 * Owns: a forked reporter (its own process: its exit is what is dropped)
 * and stats queries from this process. Must never: assert on timing; wait
 * without a bound (the waits give up TEST_HANG_S after their figure last
 * moved).
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
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/hostile.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-trackd-gone");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* A child that reports n ALLOCs and then holds them until go's write end
 * closes, then exits without freeing them. */
static pid_t holder(size_t n, int go[2]) {
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(go[1]);
        int fd = hs_reporter(paths.sock);
        hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0, 0x100000, 64, n);
        char c;
        (void)!read(go[0], &c, 1);
        _exit(0);
    }
    hs_track(child);
    close(go[0]);
    return child;
}

/* 300,000 live allocations of a process that exits: main before this test
 * dropped them in one loop turn (1M: 1.47 s of CPU), no query answered
 * meanwhile: every answer saw either all of them live or none. Now the drop
 * takes TD_GONE_SLICE (4096) per turn and queries made meanwhile are
 * answered between slices, each showing the process going with exactly
 * what is still live; the end counts every one as a leak. */
static void a_big_exit_is_dropped_in_slices(void **state) {
    (void)state;
    enum { LIVE = 300000, SLICE = 4096 };
    hs_start(trackd, &paths, (const char *const[]){"--grace-ms", "100", NULL}, 0);
    int go[2];
    pid_t child = holder(LIVE, go);
    assert_int_equal(hs_wait_total(paths.sock, "live", LIVE, TEST_HANG_S), LIVE);
    close(go[1]); /* it exits */
    assert_int_equal(test_reap(child), 0);
    uint64_t during = 0, consistent = 0, gone = 0, live = LIVE;
    test_progress p;
    test_progress_start(&p, TEST_HANG_S);
    char *j = NULL;
    while (gone == 0 && test_progress_going(&p, LIVE - live)) {
        free(j);
        j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
        assert_non_null(j);
        live = hs_num(j, "live"); /* the totals' come first */
        gone = hs_num(j, "processes_gone");
        if (gone == 0 && live < LIVE) { /* answered while the drop was under way */
            during++;
            consistent += hs_num(j, "processes_going") == 1 && hs_num(j, "left") == live &&
                          hs_num(j, "leaks") + live == LIVE;
        }
    }
    assert_non_null(j);
    uint64_t slices = hs_num(j, "drop_slices"), leaks = hs_num(j, "leaks");
    printf("# %d live dropped in %" PRIu64 " slices; %" PRIu64 " answers during the drop (%" PRIu64
           " consistent); then %" PRIu64 " leaks, %" PRIu64 " live\n",
           LIVE, slices, during, consistent, leaks, live);
    free(j);
    assert_int_equal(gone, 1);
    assert_true(during >= 1);
    assert_int_equal(consistent, during);
    assert_true(slices >= (LIVE + SLICE - 1) / SLICE);
    assert_int_equal(leaks, LIVE);
    assert_int_equal(live, 0);
}

/* A reporter of this (forked) process named name; with an ALLOC at
 * address when address is not 0 (a row in stats that shows the name). */
static int named_reporter(const char *name, uint64_t address) {
    int fd = hs_connect(paths.sock);
    if (fd < 0)
        _exit(3);
    uint8_t f[BH_WIRE_HELLO_MAX + BH_WIRE_HEADER + BH_WIRE_EVENT_LEN];
    size_t n = bh_wire_hello(f, (uint32_t)getpid(), 0, name, (uint32_t)strlen(name), 0);
    if (address != 0)
        n += bh_wire_event(f + n, 1, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), address, 64, 1);
    hs_send_all(fd, f, n);
    return fd;
}

/* LIVE processes that hold a connection (and one allocation each), then
 * 600 that say HELLO and go: the name table (256) fills with theirs. A
 * process's name stays its own while it is not gone: main before this test
 * put a new name in slot pid % 256 once 256 were kept, whoever's it was,
 * and live processes' rows showed gone ones' names. A live process that
 * comes after them is named too. */
static void a_live_process_keeps_its_name(void **state) {
    (void)state;
    enum { LIVE = 8, GONE = 600 };
    hs_start(trackd, &paths, (const char *const[]){"--grace-ms", "100", NULL}, 0);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t live[LIVE + 1];
    for (int k = 0; k <= LIVE; k++) {
        if (k == LIVE) { /* the last live one comes after the others went */
            assert_int_equal(hs_wait_total(paths.sock, "live", LIVE, TEST_HANG_S), LIVE);
            for (int i = 0; i < GONE; i++) {
                pid_t c = fork();
                assert_true(c >= 0);
                if (c == 0) {
                    char name[16];
                    snprintf(name, sizeof(name), "gone-%d", i);
                    close(named_reporter(name, 0));
                    _exit(0);
                }
                assert_int_equal(test_reap(c), 0);
            }
            assert_int_equal(hs_wait_total(paths.sock, "processes_gone", GONE, TEST_HANG_S), GONE);
        }
        live[k] = fork();
        assert_true(live[k] >= 0);
        if (live[k] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(go[1]);
            char name[16];
            snprintf(name, sizeof(name), "live-%d", k);
            int fd = named_reporter(name, 0x10000 + (uint64_t)k * 64);
            char c;
            (void)!read(go[0], &c, 1);
            close(fd);
            _exit(0);
        }
        hs_track(live[k]);
    }
    close(go[0]);
    assert_int_equal(hs_wait_total(paths.sock, "live", LIVE + 1, TEST_HANG_S), LIVE + 1);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    int right = 0;
    for (int k = 0; k <= LIVE; k++) {
        char want[64];
        snprintf(want, sizeof(want), "\"pid\":%d,\"stream\":1,\"name\":\"live-%d\"", (int)live[k], k);
        int ok = strstr(j, want) != NULL;
        if (!ok) { /* what its row says instead */
            char pat[32];
            snprintf(pat, sizeof(pat), "\"pid\":%d,", (int)live[k]);
            const char *r = strstr(j, pat);
            printf("# live-%d: %.50s\n", k, r != NULL ? r : "no row");
        }
        right += ok;
    }
    printf("# %d of %d live processes named right after %d gone ones\n", right, LIVE + 1, GONE);
    free(j);
    close(go[1]);
    assert_int_equal(right, LIVE + 1);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_big_exit_is_dropped_in_slices, setup, teardown),
        cmocka_unit_test_setup_teardown(a_live_process_keeps_its_name, setup, teardown),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &trackd, "trackd_gone",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
