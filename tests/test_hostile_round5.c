/*
 * test_hostile_round5.c - bh-trackd against a local client of another uid,
 * round 5 (session 9's attack): a pid the kernel gives to another process.
 * A connection outlives its process (a descendant keeps it) while the pid
 * goes to another user's reporter: what the old connection sends must not
 * count as the new process's. A reporter that ends and whose pid a new
 * reporter gets at once: the new one starts with figures of its own, the
 * old one's buffers counted as its leaks. Checked by the new process's row
 * in stats. And the start time that tells processes at one pid apart, and
 * a TT QUERY for a device that is not the one answered for.
 *
 * The pid is reused on purpose: clone3 with set_tid (root, Linux 5.5 and
 * later; skipped otherwise). Every wait is for a count the server shows.
 *
 * usage: test_hostile_round5 PATH-TO-bh-trackd
 */
#define _GNU_SOURCE
#include <linux/sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "procstart.h"
#include "support/hostile.h"
#include "wire.h"

#define VICTIM_ADDR 0x1000u
#define VICTIM_SIZE 4096u
#define FORGED_ADDR 0xdead0000u
#define FORGED_SIZE (1ull << 30)

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-hostile-r5");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* A child at pid want (clone3 set_tid), as fork; -1 if the kernel would
 * not (not root: EPERM; before 5.5: ENOSYS, E2BIG). Children never assert
 * (cmocka's jump would run the rest of the tests in them). */
static pid_t fork_at(pid_t want) {
    struct clone_args ca;
    memset(&ca, 0, sizeof(ca));
    ca.exit_signal = SIGCHLD;
    ca.set_tid = (uint64_t)(uintptr_t)&want;
    ca.set_tid_size = 1;
    return (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
}

/* CLOCK_BOOTTIME in clock ticks: the unit of a start time in /proc. */
static uint64_t boot_ticks(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    uint64_t hz = (uint64_t)sysconf(_SC_CLK_TCK);
    return (uint64_t)ts.tv_sec * hz + (uint64_t)ts.tv_nsec / (1000000000u / hz);
}

static void wait_byte(int fd) {
    char c;
    if (read(fd, &c, 1) != 1)
        _exit(98);
}

static void event(int fd, uint8_t kind, uint64_t address, uint64_t size, uint64_t seq) {
    uint8_t e[BH_WIRE_HEADER + BH_WIRE_EVENT_LEN];
    hs_send_all(fd, e, bh_wire_event(e, 1, kind, 0, address, size, seq));
}

/* A reporter, a child at pid want (any pid: 0) that allocates size bytes
 * at address and stays until hold's write end is closed (hold NULL: ends at
 * once). Skips the test if the kernel would not give it that pid. */
static pid_t reporter(pid_t want, uint64_t address, uint64_t size, const int *hold) {
    pid_t pid = want != 0 ? fork_at(want) : fork();
    if (pid == 0) {
        if (hold != NULL)
            close(hold[1]);
        int fd = hs_connect(paths.sock);
        uint8_t h[64];
        if (fd < 0)
            _exit(97);
        hs_send_all(fd, h, hs_hello(h, 0));
        event(fd, BH_EVENT_ALLOC, address, size, 1);
        if (hold != NULL)
            wait_byte(hold[0]); /* EOF: the test is over */
        _exit(0);
    }
    if (pid < 0 && want != 0)
        skip(); /* not root, or a kernel before 5.5 */
    assert_true(pid > 0 && (want == 0 || pid == want));
    hs_track(pid);
    return pid;
}

/* The row of pid in a stats JSON that is not unverified, NULL if none. */
static const char *verified_row(const char *json, pid_t pid) {
    char needle[48];
    snprintf(needle, sizeof(needle), "{\"pid\":%d,\"stream\":", (int)pid);
    const char *clients = strstr(json, "\"clients\":[");
    const char *end = clients != NULL ? strstr(clients, "\"omitted_clients\"") : NULL;
    for (const char *r = clients; r != NULL && (r = strstr(r + 1, needle)) != NULL && r < end;) {
        const char *close = strchr(r, '}'), *u = strstr(r, "\"unverified\":true");
        if (u == NULL || u > close)
            return r;
    }
    return NULL;
}

/* A reporter of uid nobody says HELLO (before its process ends, or only
 * after, late), and ends; its forked child keeps the connection. Another
 * reporter, of the test's uid, is started at that pid and allocates 4 KiB.
 * Then the kept connection FREEs that buffer and ALLOCs 1 GiB. 0.4-dev
 * keyed it all by the pid: the new process's row read 1 GiB live, its own
 * buffer freed. */
static void old_connection(int late) {
    if (geteuid() != 0)
        skip();
    assert_int_equal(chmod(paths.dir, 0755), 0);
    (void)hs_start(trackd, &paths, (const char *const[]){"--allow-uid", "65534", NULL}, 0);
    int quit[2], go[2], victim_go[2], connected[2];
    assert_int_equal(pipe(connected), 0);
    assert_int_equal(pipe(quit), 0);
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(victim_go), 0);
    pid_t old = fork();
    assert_true(old >= 0);
    if (old == 0) {
        close(quit[1]);
        close(go[1]);
        close(victim_go[1]);
        hs_become_nobody();
        int fd = hs_connect(paths.sock);
        uint8_t h[64];
        if (fd < 0)
            _exit(97);
        if (!late)
            hs_send_all(fd, h, hs_hello(h, 0));
        if (write(connected[1], "c", 1) != 1)
            _exit(95);
        pid_t keeper = fork();
        if (keeper == 0) { /* outlives its parent with the connection */
            wait_byte(go[0]);
            if (late)
                hs_send_all(fd, h, hs_hello(h, 0));
            event(fd, BH_EVENT_FREE, VICTIM_ADDR, 0, 1);
            event(fd, BH_EVENT_ALLOC, FORGED_ADDR, FORGED_SIZE, 2);
            wait_byte(go[0]); /* EOF: the test is over */
            _exit(0);
        }
        wait_byte(quit[0]);
        _exit(keeper > 0 ? 0 : 96);
    }
    close(quit[0]);
    close(go[0]);
    if (!late) /* its HELLO read while its process lives */
        assert_int_equal(hs_wait_total(paths.sock, "reporter_connections", 1, TEST_HANG_S), 1);
    /* Its connection was accepted before this query's (a listening
     * socket's queue is first in, first out); the next process starts a
     * clock tick (/proc's unit) after that. */
    wait_byte(connected[0]);
    free(hs_query(paths.sock, 1, TEST_HANG_S, NULL));
    for (uint64_t t = boot_ticks(); boot_ticks() == t;)
        ;
    assert_int_equal(write(quit[1], "q", 1), 1);
    int status;
    assert_int_equal(waitpid(old, &status, 0), old);
    assert_int_equal(WEXITSTATUS(status), 0);
    pid_t victim = reporter(old, VICTIM_ADDR, VICTIM_SIZE, victim_go);
    assert_int_equal(hs_wait_total(paths.sock, "allocs", 1, TEST_HANG_S), 1);
    assert_int_equal(write(go[1], "g", 1), 1);
    assert_int_equal(hs_wait_total(paths.sock, "allocs", 2, TEST_HANG_S), 2);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    const char *row = verified_row(j, victim);
    print_message("pid %d reused (HELLO %s its first process ended): its row %.*s\n", (int)victim,
                  late ? "after" : "before", row != NULL ? (int)(strchr(row, '}') - row + 1) : 4,
                  row != NULL ? row : "none");
    assert_non_null(row);
    assert_int_equal(hs_num(row, "live_bytes"), VICTIM_SIZE);
    assert_int_equal(hs_num(row, "frees"), 0);
    assert_int_equal(hs_num(row, "unknown_frees"), 0);
    free(j);
    close(go[1]); /* the keeper ends (its parent's exit left it to init) */
    close(victim_go[1]);
    close(quit[1]);
    close(victim_go[0]);
    waitpid(victim, NULL, 0);
}

static void a_connection_kept_past_its_process_never_writes_for_the_next(void **state) {
    (void)state;
    old_connection(0);
}

static void a_hello_after_the_pid_was_reused_is_not_the_new_process(void **state) {
    (void)state;
    old_connection(1);
}

/* A reporter allocates 4 KiB and ends; a new reporter gets its pid at once
 * and allocates 8 KiB. The old one's buffer is its leak, the new one's row
 * holds its own 8 KiB only. 0.4-dev took the new process for the old one
 * back (its 4 KiB live in the new row, never a leak) or showed the old
 * one's figures in the new row (its allocation, its leak). */
static void a_new_process_at_a_pid_starts_with_figures_of_its_own(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip();
    (void)hs_start(trackd, &paths, (const char *const[]){"--grace-ms", "60000", NULL}, 0);
    int done[2];
    assert_int_equal(pipe(done), 0);
    pid_t old = reporter(0, VICTIM_ADDR, VICTIM_SIZE, NULL);
    assert_int_equal(hs_wait_total(paths.sock, "allocs", 1, TEST_HANG_S), 1);
    assert_int_equal(waitpid(old, NULL, 0), old);
    for (uint64_t t = boot_ticks();
         boot_ticks() == t;) /* not started in the same tick: /proc tells them apart */
        ;
    pid_t next = reporter(old, FORGED_ADDR, 2 * VICTIM_SIZE, done);
    assert_int_equal(hs_wait_total(paths.sock, "allocs", 2, TEST_HANG_S), 2);
    assert_int_equal(hs_wait_total(paths.sock, "leaks", 1, TEST_HANG_S), 1);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    const char *row = verified_row(j, next);
    print_message("pid %d reused by a new reporter: leaks %llu, its row %.*s\n", (int)next,
                  (unsigned long long)hs_num(j, "leaks"), row != NULL ? (int)(strchr(row, '}') - row + 1) : 4,
                  row != NULL ? row : "none");
    assert_non_null(row);
    assert_int_equal(hs_num(row, "live_bytes"), 2 * VICTIM_SIZE);
    assert_int_equal(hs_num(row, "allocs"), 1);
    assert_int_equal(hs_num(row, "leaks"), 0);
    free(j);
    close(done[1]);
    waitpid(next, NULL, 0);
}

/* What tells processes at one pid apart is the start time in /proc (field
 * 22): 0.4-dev's bh_proc_start read field 21 (itrealvalue, always 0), so
 * every process, this one and one started later, read as started at 1, and
 * so stated the library's reporter in HELLO. */
static void the_start_time_is_the_processs_own(void **state) {
    (void)state;
    uint64_t mine = 0, later = 0, now = boot_ticks();
    assert_int_equal(bh_proc_start(0, &mine), 0);
    int done[2];
    assert_int_equal(pipe(done), 0);
    for (uint64_t t = now; boot_ticks() == t;) /* the child starts a tick later than now at least */
        ;
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(done[1]);
        wait_byte(done[0]);
        _exit(0);
    }
    close(done[0]);
    assert_int_equal(bh_proc_start(child, &later), 0);
    close(done[1]);
    waitpid(child, NULL, 0);
    print_message("start times: this process %llu, a child %llu, now %llu (clock ticks since boot)\n",
                  (unsigned long long)mine, (unsigned long long)later, (unsigned long long)now);
    assert_true(mine <= now);
    assert_true(later > now);
    assert_true(later <= boot_ticks());
}

/* A TT QUERY for device 2^28 + 5 answered with what native clients hold on
 * device 5: a domain keeps 28 bits of device, and the answer's native part
 * was read from the domain of the device asked about, cut to those bits. */
static void a_tt_query_past_the_domains_devices_is_not_another_device(void **state) {
    (void)state;
    (void)hs_start_compat(trackd, &paths, NULL);
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(5, BH_MEM_DRAM), 0, 0x1000, VICTIM_SIZE, 1);
    assert_int_equal(hs_wait_total(paths.sock, "allocs", 1, TEST_HANG_S), 1);
    int tt = hs_tt_connect(paths.compat);
    uint64_t five = hs_tt_dram(tt, 5), alias = hs_tt_dram(tt, (int32_t)((1u << 28) + 5));
    print_message("TT QUERY DRAM: device 5 %llu, device 2^28 + 5 %llu\n", (unsigned long long)five,
                  (unsigned long long)alias);
    assert_int_equal(five, VICTIM_SIZE);
    assert_int_equal(alias, 0);
    close(tt);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_hostile_round5 PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(the_start_time_is_the_processs_own),
        T(a_connection_kept_past_its_process_never_writes_for_the_next),
        T(a_hello_after_the_pid_was_reused_is_not_the_new_process),
        T(a_new_process_at_a_pid_starts_with_figures_of_its_own),
        T(a_tt_query_past_the_domains_devices_is_not_another_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
