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
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "proc.h"
#include "support/server.h"

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
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", p->dir, p->dir);
    return system(cmd) == 0 ? 0 : -1;
}

double test_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double test_time_slack(const char *mode) {
    double slack = mode != NULL && strcmp(mode, "slow") == 0 ? 40 : 1;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    slack *= 4;
#endif
    return slack;
}

void test_sleep_ms(int ms) { nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL); }

void test_wait_accepting(const char *path) {
    for (int i = 0; i < 500 && !bh_trackd_reachable(path); i++)
        test_sleep_ms(10);
    assert_true(bh_trackd_reachable(path));
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
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s stats --json --socket %s", trackd, sock);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    assert_int_equal(pclose(f), 0);
    return buf;
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
