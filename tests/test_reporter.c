/*
 * test_reporter.c - the socket reporter's own promises: where it connects by
 * default, whom it talks to, and what it costs the application in every state.
 *
 * usage: test_reporter PATH-TO-bh-trackd [slow]   (slow: under valgrind, looser bounds)
 *
 * Everything lives in a temporary directory made per test; servers are either
 * a real bh-trackd or a few lines of socket code standing in for a hostile one.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "rundir.h"

static const char *trackd;
static double slack = 1; /* time bounds are multiplied by this under valgrind */
static char dir[64];
static char sock_path[128];

/* ------------------------------------------------------------ helpers */

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/bh-reporter-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(sock_path, sizeof(sock_path), "%s/trackd.sock", dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (getenv("BH_TEST_KEEP") != NULL) {
        fprintf(stderr, "kept %s\n", dir);
        return 0;
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", dir, dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A listening Unix socket at path (nobody accepts: connects still succeed
 * while the backlog has room). */
static int listen_at(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    assert_true(n < sizeof(sa.sun_path)); /* a truncated path would bind somewhere else */
    memcpy(sa.sun_path, path, n + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    return fd;
}

/* ------------------------------------------------------------ default path */

static void a_private_directory_is_one_of_ours_with_mode_0700(void **state) {
    (void)state;
    unsigned me = (unsigned)geteuid();
    char p[160];
    snprintf(p, sizeof(p), "%s/d", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(bh__private_dir_ok(p, me), 0);
    assert_int_equal(chmod(p, 0750), 0);
    assert_int_equal(bh__private_dir_ok(p, me), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(chmod(p, 0700), 0);
    assert_int_equal(bh__private_dir_ok(p, me + 1), -1); /* someone else's */
    assert_int_equal(errno, EPERM);
    char link[160];
    snprintf(link, sizeof(link), "%s/l", dir);
    assert_int_equal(symlink(p, link), 0);
    assert_int_equal(bh__private_dir_ok(link, me), -1); /* never through a link */
    assert_int_equal(errno, ENOTDIR);
}

static void the_per_user_directory_is_made_private_and_a_planted_one_is_refused(void **state) {
    (void)state;
    char got[256], want[256];
    snprintf(want, sizeof(want), "%s/bh-trackd-%u", dir, (unsigned)geteuid());
    mode_t old = umask(0);
    assert_int_equal(bh__user_dir(dir, got, sizeof(got)), 0);
    umask(old);
    assert_string_equal(got, want);
    struct stat st;
    assert_int_equal(lstat(want, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(bh__user_dir(dir, got, sizeof(got)), 0); /* again: exists, fine */
    assert_int_equal(bh__user_dir(dir, got, 8), -1);
    assert_int_equal(errno, ENAMETOOLONG);

    /* Made by someone first with a looser mode: refused, not repaired. */
    assert_int_equal(chmod(want, 0777), 0);
    assert_int_equal(bh__user_dir(dir, got, sizeof(got)), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(rmdir(want), 0);
    /* A link planted in its place: refused, and its target untouched. */
    char target[160];
    snprintf(target, sizeof(target), "%s/elsewhere", dir);
    assert_int_equal(mkdir(target, 0700), 0);
    assert_int_equal(symlink(target, want), 0);
    assert_int_equal(bh__user_dir(dir, got, sizeof(got)), -1);
    assert_int_equal(lstat(want, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
}

static void the_default_socket_is_in_xdg_runtime_dir_when_that_is_private(void **state) {
    (void)state;
    char got[256], want[256];
    const char *saved = getenv("XDG_RUNTIME_DIR");
    char keep[256] = "";
    if (saved != NULL)
        snprintf(keep, sizeof(keep), "%s", saved);
    assert_int_equal(chmod(dir, 0700), 0);
    setenv("XDG_RUNTIME_DIR", dir, 1);
    snprintf(want, sizeof(want), "%s/bh-trackd.sock", dir);
    assert_int_equal(bh__default_socket_path(got, sizeof(got)), 0);
    assert_string_equal(got, want);

    /* The reporter opened with path NULL connects there. */
    int lfd = listen_at(want);
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(NULL, NULL, &rep), BH_OK);
    bh_reporter_stats rs;
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    assert_int_equal(rs.connects, 1);
    bh_socket_reporter_close(&rep);
    close(lfd);

    /* Readable by others: not a runtime directory we trust; the per-user
     * directory in /tmp is used instead. */
    assert_int_equal(chmod(dir, 0755), 0);
    if (bh__default_socket_path(got, sizeof(got)) == 0) {
        snprintf(want, sizeof(want), "/tmp/bh-trackd-%u/bh-trackd.sock", (unsigned)geteuid());
        assert_string_equal(got, want);
    }
    if (keep[0] != '\0')
        setenv("XDG_RUNTIME_DIR", keep, 1);
    else
        unsetenv("XDG_RUNTIME_DIR");
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_reporter PATH-TO-bh-trackd [slow]\n");
        return 2;
    }
    trackd = argv[1];
    if (argc > 2 && strcmp(argv[2], "slow") == 0)
        slack = 40;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_private_directory_is_one_of_ours_with_mode_0700, setup, teardown),
        cmocka_unit_test_setup_teardown(the_per_user_directory_is_made_private_and_a_planted_one_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(the_default_socket_is_in_xdg_runtime_dir_when_that_is_private, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("reporter", tests, NULL, NULL);
}
