/*
 * attack.c - the shared part of the attack files that came out of
 * test_hostile_trackd.c (attack.h).
 *
 * Owns: what attack.h declares. Must never: be linked into the library or a
 * tool, or loosen a test's checks.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "support/attack.h"
#include "wire.h"

const char *at_trackd;
test_paths at_paths;
rlim_t at_nofile;

pid_t at_start_argv(const char *const *extra, int with_socket) {
    const char *base[] = {at_trackd, "--log",    at_paths.log,  "--grace-ms",
                          "200",     "--socket", at_paths.sock, NULL};
    if (!with_socket)
        base[5] = NULL;
    return test_server_spawn_nofile(base, extra, 1,
                                    at_nofile != 0 ? &(struct rlimit){at_nofile, at_nofile} : NULL);
}

pid_t at_start(const char *const *extra) {
    pid_t pid = at_start_argv(extra, 1);
    test_wait_accepting(at_paths.sock);
    return pid;
}

int at_wait_exit(pid_t pid, double secs) {
    double end = test_now_s() + secs;
    int status;
    do {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        test_sleep_ms(10);
    } while (test_now_s() < end);
    return -1;
}

size_t at_read_some(int fd, uint8_t *buf, size_t cap, double secs) {
    size_t n = 0;
    double end = test_now_s() + secs;
    while (n < cap && test_now_s() < end) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + n, cap - n, MSG_DONTWAIT);
        if (r == 0)
            break;
        if (r > 0)
            n += (size_t)r;
    }
    return n;
}

size_t at_stream_frame(uint8_t *p, uint16_t type, uint32_t stream) {
    size_t n = bh_wire_header(p, type, 4);
    bh_put32(p + n, stream);
    return n + 4;
}

char *at_query(uint16_t what, double *took) { return hs_query(at_paths.sock, what, TEST_HANG_S, took); }

char *at_bystander_query(pid_t srv, double *took, double *server_cpu) {
    double cpu0 = test_proc_cpu_s(srv);
    char *j = at_query(1, took);
    *server_cpu = j != NULL ? test_proc_cpu_s(srv) - cpu0 : TEST_HANG_S;
    return j;
}

uint64_t at_wait_total(const char *key, uint64_t want) {
    uint64_t v = UINT64_MAX;
    test_progress pr;
    for (test_progress_start(&pr, TEST_HANG_S);; test_sleep_ms(50)) {
        char *j = at_query(1, NULL);
        v = hs_num(j, key); /* totals come first in the JSON */
        free(j);
        if (v == want || !test_progress_going(&pr, v))
            break;
    }
    return v;
}

int at_setup(void **state) {
    (void)state;
    test_paths_make(&at_paths, "bh-hostile");
    at_nofile = 0;
    return 0;
}

int at_teardown(void **state) {
    (void)state;
    hs_teardown(); /* the holders hs_track was given, and the servers */
    return test_paths_remove(&at_paths);
}

int at_main(int argc, char **argv, const char *group, const struct CMUnitTest *tests, size_t n) {
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &at_trackd, group, tests, n);
}
