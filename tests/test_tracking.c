/*
 * test_tracking.c - bh-trackd's accounting against a real daemon: what it
 * shows when its tables are full, what its log says, and (mode "load",
 * label "tracking") whether a loaded program's own counts and the daemon's
 * agree, without loss and with loss forced.
 *
 * usage: test_tracking PATH-TO-bh-trackd [unit | load|loss PATH-TO-tracking_load]
 *
 * Clients are forked children (the daemon keys clients by process); raw
 * ones speak the native protocol by hand (src/common/wire.h), so that they
 * can do what the library never lets a program do (free twice). The daemon's
 * view is read back with `bh-trackd stats|history --json`. Nothing is timed:
 * every wait is for a condition, bounded.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/server.h"
#include "track.h"
#include "wire.h"

static const char *trackd, *load_program;
static test_paths paths;
static pid_t server;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-tracking-test");
    return 0;
}

static void hogs_stop(void);

static int teardown(void **state) {
    (void)state;
    hogs_stop(); /* a failed assertion skips the test's own stop */
    test_kill(server);
    server = 0;
    return test_paths_remove(&paths);
}

/* The server, once it accepts (TEST_HANG_S at most: bh_trackd_start's 5 s
 * is a tool's patience, not a hang guard for a loaded machine). */
static void start(void) {
    const char *argv[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "200", NULL};
    server = test_server_spawn(argv, NULL, 0);
    test_wait_accepting(paths.sock);
}

/* `bh-trackd stats --json`, into a static buffer. */
static const char *stats(void) {
    static char buf[1 << 20];
    return test_stats_json(trackd, paths.sock, buf, sizeof(buf));
}

/* The output of a bh-trackd command (argv after the program), into buf. */
static const char *run_trackd(const char *const *args, char *buf, size_t cap) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[16] = {trackd};
        int n = 1;
        for (int i = 0; args[i] != NULL && n < 15; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        dup2(fds[1], 1);
        execv(trackd, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(fds[0], buf + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fds[0]);
    assert_int_equal(test_reap(pid), 0);
    return buf;
}

/* ------------------------------------------------------------ raw clients */

static int raw_fd;
static uint64_t raw_seq;
static uint8_t raw_buf[64 << 10];
static size_t raw_len;

static void raw_flush(void) {
    size_t off = 0;
    while (off < raw_len) {
        ssize_t n = write(raw_fd, raw_buf + off, raw_len - off);
        if (n <= 0)
            _exit(20);
        off += (size_t)n;
    }
    raw_len = 0;
}

static void raw_open(const char *name) {
    raw_fd = bh_unix_connect(paths.sock);
    if (raw_fd < 0)
        _exit(21);
    raw_len = bh_wire_hello(raw_buf, (uint32_t)getpid(), 0, name, strlen(name), 0);
    raw_seq = 0;
}

static void raw_event(uint8_t kind, uint64_t address) {
    if (raw_len + BH_WIRE_HEADER + BH_WIRE_EVENT_LEN > sizeof(raw_buf))
        raw_flush();
    raw_len += bh_wire_event(raw_buf + raw_len, 1, kind, 1, address, 4096, ++raw_seq);
}

static void raw_close(void) {
    raw_flush();
    close(raw_fd);
}

/* ------------------------------------------------------------ unit */

/* A correct client: ALLOC and FREE of 20,000 addresses of its own. */
static void correct_client(void) {
    raw_open("correct");
    for (uint64_t a = 0; a < 20000; a++) {
        uint64_t address = 0x10000000 + ((uint64_t)getpid() << 28) + a * 4096;
        raw_event(BH_EVENT_ALLOC, address);
        raw_event(BH_EVENT_FREE, address);
    }
    raw_close();
}

#define DOUBLE_FREED 0xdf0000u

static void double_freer(void) {
    raw_open("double-freer");
    raw_event(BH_EVENT_ALLOC, DOUBLE_FREED);
    raw_event(BH_EVENT_FREE, DOUBLE_FREED);
    raw_event(BH_EVENT_FREE, DOUBLE_FREED);
    raw_close();
}

/* Earlier, correct clients fill the 32,767-address history; a later
 * client's double free still shows in the over-freed list and in
 * `history`, and the evictions that made room are shown. (0.3.1: the
 * history was full, the double free was in neither.) */
static void a_full_history_still_shows_a_later_double_free(void **state) {
    (void)state;
    start();
    for (int i = 0; i < 2; i++)
        assert_int_equal(test_reap(test_fork(correct_client)), 0);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "frees", 40000), 40000);
    pid_t bad = test_fork(double_freer);
    assert_int_equal(test_reap(bad), 0);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "unknown_frees", 1), 1);
    const char *j = stats();
    char want[160];
    snprintf(want, sizeof(want), "\"overfreed\":[{\"pid\":%d,\"stream\":1,\"name\":\"double-freer\",",
             (int)bad);
    assert_non_null(strstr(j, want));
    assert_non_null(strstr(j, "\"address\":14614528,\"allocs\":1,\"frees\":2,\"unknown_frees\":1,"));
    assert_true(test_json_u64(j, "totals", "history_evictions") >= 40000 - BH_TRACK_DEFAULT_HISTORY);
    static char h[1 << 16];
    const char *args[] = {"history", "0xdf0000", "--json", "--socket", paths.sock, NULL};
    run_trackd(args, h, sizeof(h));
    snprintf(want, sizeof(want), "{\"pid\":%d,\"stream\":1,\"name\":\"double-freer\",", (int)bad);
    assert_non_null(strstr(h, want));
    assert_non_null(strstr(h, "\"allocs\":1,\"frees\":2,\"unknown_frees\":1,"));
}

static void unknown_freer(void) {
    raw_open("unknown-freer");
    for (uint64_t a = 0; a < 150; a++)
        raw_event(BH_EVENT_FREE, 0xbad000 + a * 64);
    raw_close();
}

/* Lines held back by the log's rate limit are summed up with one of them as
 * it read, not with its format string ("pid %d %s address 0x%lx"). */
static void held_back_log_lines_are_shown_as_they_read(void **state) {
    (void)state;
    start();
    pid_t pid = test_fork(unknown_freer);
    assert_int_equal(test_reap(pid), 0);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "unknown_frees", 150), 150);
    (void)test_server_stop(server, SIGTERM); /* the exit reports what each window held back */
    server = 0;
    FILE *f = fopen(paths.log, "r");
    assert_non_null(f);
    static char log[1 << 16];
    size_t n = fread(log, 1, sizeof(log) - 1, f);
    log[n] = '\0';
    fclose(f);
    char want[160];
    snprintf(want, sizeof(want), "50 more lines like \"FREE of unknown buffer: pid %d ", (int)pid);
    assert_non_null(strstr(log, want));
    assert_null(strstr(log, "%d"));
}

/* ------------------------------------------------------------ load */

#define LOAD_EVENTS 3600000u /* ALLOC+FREE events: 8 s at 450K/s */
#define LOAD_RATE 450000u
#define LOAD_LEAKS 1000u
#define HOGS 3
#define HOG_CPU_S 90 /* each hog's CPU-time bound (RLIMIT_CPU) if the test dies before killing it */

static pid_t hogs[HOGS];

static void hog(void) {
    struct rlimit cpu = {HOG_CPU_S, HOG_CPU_S};
    setrlimit(RLIMIT_CPU, &cpu);
    int devnull = open("/dev/null", O_WRONLY); /* holds no pipe of the test's caller open */
    dup2(devnull, 1);
    dup2(devnull, 2);
    for (volatile uint64_t x = 0;; x++)
        ;
}

static void hogs_start(void) {
    for (int i = 0; i < HOGS; i++)
        hogs[i] = test_fork(hog);
}

static void hogs_stop(void) {
    for (int i = 0; i < HOGS; i++) { /* test_kill: nothing for 0 */
        test_kill(hogs[i]);
        hogs[i] = 0;
    }
}

/* The number after "key": in a flat JSON object, or -1 if absent (0.3.1's
 * daemon lacks the newer keys; a measurement still prints the rest). */
static int64_t flat(const char *json, const char *key) {
    char k[64];
    snprintf(k, sizeof(k), "\"%s\":", key);
    const char *p = strstr(json, k);
    return p != NULL ? (int64_t)strtoull(p + strlen(k), NULL, 10) : -1;
}

/* The smallest "age_s" in the stats' "leaks" list (the latest 256), in ms. */
static int64_t youngest_leak_ms(const char *json) {
    const char *p = strstr(json, "\"leaks\":[");
    const char *end = p != NULL ? strchr(p, ']') : NULL;
    int64_t min = -1;
    while (p != NULL && (p = strstr(p + 1, "\"age_s\":")) != NULL && p < end) {
        int64_t ms = (int64_t)(strtod(p + 8, NULL) * 1000.0);
        min = min < 0 || ms < min ? ms : min;
    }
    return min;
}

typedef struct load_run {
    char truth[512]; /* the program's JSON line */
    char *stats;     /* the daemon's stats once it saw the program gone */
} load_run;

/* Runs tracking_load against the server beside the hogs; with stop_ms, the
 * server is stopped (SIGSTOP) that long once a quarter of the events are
 * made, and the reporter's ring is 16,384 records (BH_TRACK_RING), not the
 * default 2^21 (4.7 s of this load: a 5 s stop would overflow it only at
 * the end, and the exit's flush could time out before the resync). Waits
 * until the server has seen the program gone. */
static void run_load(load_run *r, int stop_ms) {
    int out[2], progress[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(progress), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char fd[16], events[32], rate[32], leaks[32];
        snprintf(fd, sizeof(fd), "%d", progress[1]);
        snprintf(events, sizeof(events), "%u", LOAD_EVENTS);
        snprintf(rate, sizeof(rate), "%u", LOAD_RATE);
        snprintf(leaks, sizeof(leaks), "%u", LOAD_LEAKS);
        setenv("BH_TRACK_SOCKET", paths.sock, 1);
        setenv("TRACKING_LOAD_PROGRESS_FD", fd, 1);
        if (stop_ms > 0) /* a ring deliberately too small: the stop overflows it at once, and the
                            resync after it is done long before the program's exit */
            setenv("BH_TRACK_RING", "16384", 1);
        dup2(out[1], 1);
        close(out[0]);
        close(progress[0]);
        execl(load_program, load_program, events, rate, leaks, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(progress[1]);
    char q;
    assert_int_equal(read(progress[0], &q, 1), 1);
    if (stop_ms > 0) {
        kill(server, SIGSTOP);
        test_sleep_ms(stop_ms);
        kill(server, SIGCONT);
    }
    size_t len = 0;
    ssize_t n;
    while (len + 1 < sizeof(r->truth) && (n = read(out[0], r->truth + len, sizeof(r->truth) - 1 - len)) > 0)
        len += (size_t)n;
    r->truth[len] = '\0';
    close(out[0]);
    close(progress[0]);
    assert_int_equal(test_reap(pid), 0);
    /* The program is gone once its leaks are counted (verified or not). */
    const char *j = stats();
    for (int i = 0; i < 3000; i++, j = stats()) {
        int64_t unverified = flat(j, "unverified_leaks");
        if (flat(j, "leaks") + (unverified > 0 ? unverified : 0) >= LOAD_LEAKS)
            break;
        test_sleep_ms(10);
    }
    r->stats = strdup(j);
    print_message("program: %s", r->truth);
    print_message("daemon: allocs %" PRId64 " frees %" PRId64 " unknown FREEs %" PRId64
                  " duplicate ALLOCs %" PRId64 " leaks %" PRId64 " unverified leaks %" PRId64 " lost %" PRId64
                  " resyncs %" PRId64 " youngest leak %" PRId64 " ms (program: %" PRId64
                  " ms); over-freed list: %.240s\n",
                  flat(j, "allocs"), flat(j, "frees"), flat(j, "unknown_frees"), flat(j, "duplicate_allocs"),
                  flat(j, "leaks"), flat(j, "unverified_leaks"), flat(j, "lost"), flat(j, "resyncs"),
                  youngest_leak_ms(j), flat(r->truth, "leak_age_ms"),
                  strstr(j, "\"overfreed\":[]") != NULL ? "empty" : strstr(j, "\"overfreed\":["));
}

/* What holds with or without loss: no finding the program did not make, the
 * leaks exactly, the over-freed list empty. */
static void assert_no_false_findings(const load_run *r) {
    const char *j = r->stats;
    assert_int_equal(flat(j, "unknown_frees"), 0);
    assert_int_equal(flat(j, "duplicate_allocs"), 0);
    assert_int_equal(flat(j, "leaks"), LOAD_LEAKS);
    assert_int_equal(flat(j, "unverified_leaks"), 0);
    assert_non_null(strstr(j, "\"overfreed\":[]"));
}

/* Item 1: under load, default settings, the daemon's counts are the
 * program's, nothing lost. */
static void loaded_run_is_counted_exactly(void **state) {
    (void)state;
    start();
    hogs_start();
    load_run r;
    run_load(&r, 0);
    hogs_stop();
    assert_int_equal(flat(r.truth, "dropped"), 0);
    assert_int_equal(flat(r.stats, "lost"), 0);
    assert_int_equal(flat(r.stats, "allocs"), flat(r.truth, "allocs"));
    assert_int_equal(flat(r.stats, "frees"), flat(r.truth, "frees"));
    assert_no_false_findings(&r);
    free(r.stats);
}

/* Item 2: a ring too small and the daemon stopped for 5 s mid-run: it knows how many events it
 * lost (the reporter's own count), the live set is exact after the resync
 * (leaks exactly the planted ones), nothing of this correct program is a
 * finding, the counts say they are lower bounds, and the leaks keep their
 * age. */
static void forced_loss_is_counted_and_blames_nobody(void **state) {
    (void)state;
    start();
    hogs_start();
    load_run r;
    run_load(&r, 5000);
    hogs_stop();
    const char *j = r.stats;
    int64_t dropped = flat(r.truth, "dropped");
    assert_true(dropped > 0); /* else nothing was forced: the run proves nothing */
    assert_int_equal(flat(j, "lost"), dropped);
    assert_int_equal(flat(j, "allocs") + flat(j, "frees") + flat(j, "lost"),
                     flat(r.truth, "allocs") + flat(r.truth, "frees"));
    assert_non_null(strstr(j, "\"at_least\":true"));
    assert_no_false_findings(&r);
    int64_t youngest = youngest_leak_ms(j);
    assert_true(youngest >= flat(r.truth, "leak_age_ms") - 1000);
    free(r.stats);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_tracking PATH-TO-bh-trackd [unit | load|loss PATH-TO-tracking_load]\n");
        return 2;
    }
    trackd = argv[1];
    const char *mode = argc > 2 ? argv[2] : "unit";
    load_program = argc > 3 ? argv[3] : NULL;
    const struct CMUnitTest load[] = {
        cmocka_unit_test_setup_teardown(loaded_run_is_counted_exactly, setup, teardown),
    };
    const struct CMUnitTest loss[] = {
        cmocka_unit_test_setup_teardown(forced_loss_is_counted_and_blames_nobody, setup, teardown),
    };
    const struct CMUnitTest unit[] = {
        cmocka_unit_test_setup_teardown(a_full_history_still_shows_a_later_double_free, setup, teardown),
        cmocka_unit_test_setup_teardown(held_back_log_lines_are_shown_as_they_read, setup, teardown),
    };
    if (strcmp(mode, "load") == 0 || strcmp(mode, "loss") == 0) {
        if (load_program == NULL) {
            fprintf(stderr, "test_tracking: %s needs PATH-TO-tracking_load\n", mode);
            return 2;
        }
        return strcmp(mode, "load") == 0 ? cmocka_run_group_tests_name("tracking load", load, NULL, NULL)
                                         : cmocka_run_group_tests_name("tracking loss", loss, NULL, NULL);
    }
    return cmocka_run_group_tests_name("tracking", unit, NULL, NULL);
}
