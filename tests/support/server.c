/*
 * server.c - the shared helpers of the tests that run a real bh-trackd.
 *
 * Owns: what server.h declares. Must never: be linked into the library or a
 * tool, or loosen a test's checks (a helper asserts what every caller would).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "proc.h"
#include "sanitize.h"
#include "support/server.h"
#include "wire.h"

void test_paths_make(test_paths *p, const char *name) {
    snprintf(p->dir, sizeof(p->dir), "/tmp/%s-XXXXXX", name);
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->sock, sizeof(p->sock), "%s/trackd.sock", p->dir);
    snprintf(p->compat, sizeof(p->compat), "%s/tt.sock", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/trackd.log", p->dir);
    snprintf(p->summary, sizeof(p->summary), "%s/summary.json", p->dir);
}

int test_paths_remove(const test_paths *p) {
    if (getenv("BH_TEST_KEEP") != NULL) {
        fprintf(stderr, "kept %s\n", p->dir);
        return 0;
    }
    /* chmod first: some tests take the permissions off their directory. */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s 2>/dev/null; rm -rf %s 2>/dev/null", p->dir, p->dir);
    /* A process a killed server left behind (its summary writer, dying of
     * the server's death) may still add a file while rm walks: try again,
     * a bounded number of times. */
    for (int i = 0; i < 50; i++) {
        if (system(cmd) == 0)
            return 0;
        test_sleep_ms(20);
    }
    return -1;
}

double test_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double test_time_slack(const char *mode) {
    double slack = mode != NULL && strcmp(mode, "slow") == 0 ? 40 : 1;
#if BH__ASAN || BH__TSAN
    slack *= 4;
#endif
    return slack;
}

void test_sleep_ms(int ms) { nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL); }

void test_wait_accepting(const char *path) {
    for (double end = test_now_s() + TEST_HANG_S; !bh_trackd_reachable(path) && test_now_s() < end;)
        test_sleep_ms(10);
    assert_true(bh_trackd_reachable(path));
}

double test_proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void thread_switches(long *involuntary, long *voluntary) {
    struct rusage r;
    getrusage(RUSAGE_THREAD, &r);
    *involuntary = r.ru_nivcsw;
    *voluntary = r.ru_nvcsw;
}

long test_thread_sleeps(void) {
    long involuntary, voluntary;
    thread_switches(&involuntary, &voluntary);
    return voluntary;
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The seconds the calling thread has waited for a core so far: the kernel's
 * run-queue delay (the second figure of /proc/thread-self/schedstat), which
 * grows while the thread is runnable and another task has the core, from a
 * wake-up as well as a preemption. 0 where the kernel keeps no such figure
 * (then a timer measures wall time, as before). The descriptor is kept per
 * thread and opened again by a thread it was not opened by (a fork child
 * inherits its parent's). */
static double thread_queued_s(void) {
    static __thread int fd = -1;
    static __thread pid_t owner;
    pid_t tid = gettid();
    if (fd < 0 || owner != tid) {
        if (fd >= 0)
            close(fd);
        fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
        owner = tid;
    }
    char buf[128];
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    unsigned long long run_ns, queued_ns;
    if (sscanf(buf, "%llu %llu", &run_ns, &queued_ns) != 2)
        return 0;
    return (double)queued_ns / 1e9;
}

void test_timer_start(test_timer *t) {
    thread_switches(&t->nivcsw, &t->nvcsw);
    t->queued0 = thread_queued_s();
    t->cpu0 = thread_cpu_s();
    t->t0 = test_now_s();
}

double test_timer_unloaded(const test_timer *t) {
    double dt = test_now_s() - t->t0, cpu = thread_cpu_s() - t->cpu0;
    double queued = thread_queued_s() - t->queued0;
    long nivcsw, nvcsw;
    thread_switches(&nivcsw, &nvcsw);
    if (nivcsw != t->nivcsw)
        return -1;
    /* What the call took on its own: the wall time less the waits for a
     * core (after a wake-up: a call that slept, on a loaded machine, then
     * waits for the core it left). */
    double own = dt - queued;
    /* Never off the CPU by its own choice: what the wall clock adds to the
     * thread's CPU time is the hypervisor's (steal time, no context switch
     * the guest sees). */
    return nvcsw == t->nvcsw && cpu < own ? cpu : own;
}

/* The servers started and not yet reaped (test_servers_end's list). */
static pid_t spawned[16];

static void forget_spawned(pid_t pid) {
    for (int i = 0; i < 16; i++)
        if (spawned[i] == pid)
            spawned[i] = 0;
}

void test_servers_end(void) {
    for (int i = 0; i < 16; i++) {
        test_kill(spawned[i]);
        spawned[i] = 0;
    }
}

pid_t test_server_spawn(const char *const *base, const char *const *extra, int quiet) {
    return test_server_spawn_nofile(base, extra, quiet, NULL);
}

pid_t test_server_spawn_nofile(const char *const *base, const char *const *extra, int quiet,
                               const struct rlimit *nofile) {
    const char *argv[48];
    int n = 0;
    for (; base[n] != NULL; n++)
        argv[n] = base[n];
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        argv[n++] = extra[i];
    assert_true(n < 48);
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (quiet) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 2);
        }
        /* In the child alone: a hard limit lowered cannot be raised again. */
        if (nofile != NULL && setrlimit(RLIMIT_NOFILE, nofile) != 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 16; i++) {
        if (spawned[i] == 0) {
            spawned[i] = pid;
            break;
        }
    }
    return pid;
}

pid_t test_server_start(const char *trackd, const test_paths *p, const char *const *extra) {
    const char *base[] = {trackd,       "--socket", p->sock, "--summary", p->summary,
                          "--grace-ms", "300",      "--log", p->log,      NULL};
    pid_t pid = test_server_spawn(base, extra, 0);
    test_wait_accepting(p->sock);
    return pid;
}

int test_connect(const char *path) {
    int fd = bh_unix_connect(path);
    assert_true(fd >= 0);
    struct timeval tv = {(time_t)TEST_HANG_S, 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    return fd;
}

test_stop test_server_stop(pid_t pid, int sig) {
    test_stop r = {0, 0};
    double cpu0 = test_proc_cpu_s(pid);
    kill(pid, sig);
    struct rusage ru;
    pid_t got = 0;
    for (double end = test_now_s() + TEST_HANG_S; got == 0 && test_now_s() < end;) {
        got = wait4(pid, &r.status, WNOHANG, &ru);
        if (got == 0)
            test_sleep_ms(10);
    }
    forget_spawned(pid);
    if (got != pid) { /* hung: end it, then fail */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("pid %d did not exit within %.0f s of signal %d", (int)pid, TEST_HANG_S, sig);
    }
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    r.cpu_s = cpu0 >= 0 && cpu > cpu0 ? cpu - cpu0 : 0;
    return r;
}

void test_server_stop_clean(pid_t pid) {
    test_stop st = test_server_stop(pid, SIGTERM);
    assert_true(WIFEXITED(st.status));
    assert_int_equal(WEXITSTATUS(st.status), 0);
    assert_true(st.cpu_s < 1.0);
}

int test_unix_listen(const char *path, int backlog) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    assert_true(n < sizeof(sa.sun_path)); /* a truncated path would bind somewhere else */
    memcpy(sa.sun_path, path, n + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, backlog), 0);
    return fd;
}

pid_t test_fork(void (*fn)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        _exit(0);
    }
    return pid;
}

void test_kill(pid_t pid) {
    if (pid <= 0)
        return;
    kill(pid, SIGCONT);
    if (kill(pid, SIGKILL) == 0)
        waitpid(pid, NULL, 0);
}

int test_reap(pid_t pid) {
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const char *test_stats_json(const char *trackd, const char *sock, char *buf, size_t cap) {
    return test_trackd_says(trackd, "stats --json", sock, buf, cap);
}

const char *test_trackd_says(const char *trackd, const char *command, const char *sock, char *buf,
                             size_t cap) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s %s --socket %s", trackd, command, sock);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    assert_int_equal(pclose(f), 0);
    return buf;
}

uint64_t test_said_lost(const char *err) {
    const char *p = strstr(err, " events of this process were never delivered");
    if (p == NULL)
        return 0;
    while (p > err && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return strtoull(p, NULL, 10);
}

uint64_t test_json_u64(const char *json, const char *section, const char *key) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":{", section);
    const char *p = strstr(json, pat);
    assert_non_null(p);
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(p, pat);
    assert_non_null(p);
    return strtoull(p + strlen(pat), NULL, 10);
}

void test_progress_start(test_progress *p, double window) {
    p->window = window;
    p->end = test_now_s() + window;
    p->seen = 0;
}

int test_progress_going(test_progress *p, uint64_t v) {
    double now = test_now_s();
    if (!p->seen || v != p->last)
        p->end = now + p->window;
    p->seen = 1;
    p->last = v;
    return now < p->end;
}

/* test_wait_stat and test_wait_stat_is: want or more (exact 0), or want;
 * TEST_HANG_S after the value last changed at most (test_progress). */
static uint64_t wait_stat(const char *trackd, const char *sock, const char *section, const char *key,
                          uint64_t want, int exact) {
    static char buf[BH_WIRE_MAX_PAYLOAD + 64]; /* a whole reply and its newline */
    uint64_t v = 0;
    test_progress pr;
    for (test_progress_start(&pr, TEST_HANG_S);; test_sleep_ms(20)) {
        v = test_json_u64(test_stats_json(trackd, sock, buf, sizeof(buf)), section, key);
        if ((exact ? v == want : v >= want) || !test_progress_going(&pr, v))
            break;
    }
    return v;
}

uint64_t test_wait_stat(const char *trackd, const char *sock, const char *section, const char *key,
                        uint64_t want) {
    return wait_stat(trackd, sock, section, key, want, 0);
}

uint64_t test_wait_stat_is(const char *trackd, const char *sock, const char *section, const char *key,
                           uint64_t want) {
    return wait_stat(trackd, sock, section, key, want, 1);
}

int test_trackd_main(int argc, char **argv, const char *args, const char **trackd, const char *group,
                     const struct CMUnitTest *tests, size_t n) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s %s\n", argv[0], args);
        return 2;
    }
    *trackd = argv[1];
    /* Only a file whose usage names it takes a test name pattern: the
     * others' argv[2] is a mode ("slow" under valgrind, "fast") or a
     * directory, which as a filter matched no test, and a run of none
     * passed. A pattern that matches none fails instead. */
    if (argc > 2 && strstr(args, "[TEST-NAME-PATTERN]") != NULL) {
        size_t matched = 0;
        for (size_t i = 0; i < n; i++)
            matched += fnmatch(argv[2], tests[i].name, 0) == 0;
        if (matched == 0) {
            fprintf(stderr, "%s: no test of %s matches %s\n", argv[0], group, argv[2]);
            return 1;
        }
        cmocka_set_test_filter(argv[2]);
    }
    signal(SIGPIPE, SIG_IGN);
    return _cmocka_run_group_tests(group, tests, n, NULL, NULL);
}
