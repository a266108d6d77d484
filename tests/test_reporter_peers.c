/*
 * test_reporter_peers.c - whom the socket reporter talks to: a server of
 * another user gets nothing, not even HELLO, and is named once on stderr
 * (root only: skipped otherwise); a process the server refuses for its live
 * limit backs off, says so once, and leaves no false leaks.
 *
 * usage: test_reporter_peers PATH-TO-bh-trackd [slow|fast [basic|hostile]]
 *
 * All hostile (the attacks of the hardening review: natively and in the
 * hostile stage, not under valgrind). Must never depend on timing: clients
 * are forked and bounded by an alarm, waits poll for the server's counts.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/reporting.h"

/* A listener run by uid 65534 in dir; the parent learns through the pipe how
 * many bytes it received on its first connection, until the other end closed. */
static pid_t foreign_listener(int *bytes_fd) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", rp_paths.sock);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0)
            _exit(3);
        uint32_t got = 0;
        if (write(p[1], &got, 1) != 1) /* listening */
            _exit(4);
        int fd = accept(lfd, NULL, NULL);
        /* Until the reporter's process closes it (EOF): a hang guard only. */
        struct timeval tv = {(time_t)TEST_HANG_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[4096];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
            got += (uint32_t)n;
        _exit(write(p[1], &got, sizeof(got)) == sizeof(got) ? 0 : 5);
    }
    close(p[1]);
    char ready;
    assert_int_equal(read(p[0], &ready, 1), 1);
    *bytes_fd = p[0];
    return pid;
}

static void report_a_little(void) {
    bh_reporter rep;
    if (bh_socket_reporter_open(rp_paths.sock, NULL, &rep) != BH_OK)
        _exit(10);
    bh_registry *reg = rp_registry_on(&rep);
    for (int i = 0; i < 100; i++)
        (void)rp_pair(reg, 0x10000);
    (void)bh_socket_reporter_flush(&rep, 300);
    bh_registry_destroy(reg);
    bh_socket_reporter_close(&rep);
}

static void a_server_of_another_user_gets_nothing_and_is_named_once(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip(); /* needs root to run the listener as another user */
    assert_int_equal(chmod(rp_paths.dir, 0777), 0);
    int bytes_fd;
    pid_t pid = foreign_listener(&bytes_fd);
    char err[160];
    snprintf(err, sizeof(err), "%s/stderr", rp_paths.dir);
    assert_int_equal(rp_in_child(report_a_little, err), 0);
    uint32_t got = 1;
    assert_int_equal(read(bytes_fd, &got, sizeof(got)), (ssize_t)sizeof(got));
    close(bytes_fd);
    waitpid(pid, NULL, 0);
    assert_int_equal(got, 0); /* not even HELLO */
    assert_int_equal(rp_lines_with(err, "uid 65534"), 1);
}

static void over_the_limit_then_free_everything(void) {
    bh_reporter rep;
    bh_socket_options opt = {.send_timeout_ms = 200};
    if (bh_socket_reporter_open(rp_paths.sock, &opt, &rep) != BH_OK)
        _exit(30);
    bh_registry *reg = rp_registry_on(&rep);
    static bh_handle h[1000];
    rp_hold(reg, h, 1000, 1u << 20);
    /* Held over the limit until the reporter has been refused (it says so
     * on stderr, which the parent pointed at dir/stderr). */
    char err[160];
    snprintf(err, sizeof(err), "%s/stderr", rp_paths.dir);
    while (rp_lines_with(err, "refused") < 1) /* bounded by in_child's alarm */
        test_sleep_ms(10);
    rp_drop_all(reg, h, 1000);
    (void)bh_socket_reporter_flush(&rep, TEST_HANG_MS);
    if (bh_registry_destroy(reg) != BH_OK)
        _exit(31);
    bh_socket_reporter_close(&rep);
}

static void a_refused_process_backs_off_and_leaves_no_false_leaks(void **state) {
    (void)state;
    const char *opts[] = {"--max-live-per-client", "100", RP_ONLY_EXITS_ARE_GONE, NULL};
    rp_serve(opts, rp_paths.sock);
    char err[160];
    snprintf(err, sizeof(err), "%s/stderr", rp_paths.dir);
    assert_int_equal(rp_in_child(over_the_limit_then_free_everything, err), 0);
    rp_wait_gone(1); /* what the server still holds is a leak now */
    uint64_t leaks = rp_stat_of("totals", "leaks"), cuts = rp_stat_of("server", "limit_disconnects");
    print_message("refused client: %llu leaks, %llu limit disconnects\n", (unsigned long long)leaks,
                  (unsigned long long)cuts);
    assert_int_equal(leaks, 0);
    assert_true(cuts >= 1 && cuts <= 2);
    assert_int_equal(rp_lines_with(err, "refused"), 1);
}

int main(int argc, char **argv) {
    const struct CMUnitTest hostile[] = {
        RP_TEST(a_server_of_another_user_gets_nothing_and_is_named_once),
        RP_TEST(a_refused_process_backs_off_and_leaves_no_false_leaks),
    };
    return rp_main(argc, argv, "reporter_peers", NULL, 0, hostile, sizeof(hostile) / sizeof(hostile[0]));
}
