/*
 * test_reporter_path.c - where the socket reporter connects: the private
 * directory check, the per-user directory made private (a planted one
 * refused), the default socket in XDG_RUNTIME_DIR when that is private
 * (and a reporter opened with no path connecting there), and a server the
 * environment names but nobody runs said once on stderr, never on stdout.
 *
 * usage: test_reporter_path PATH-TO-bh-trackd [slow|fast [basic|hostile]]
 *
 * All basic (also under valgrind). Must never depend on the machine's own
 * runtime directory or environment: each test works in its own temporary
 * directory and puts back what it set.
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
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "rundir.h"
#include "support/reporting.h"

static void a_private_directory_is_one_of_ours_with_mode_0700(void **state) {
    (void)state;
    unsigned me = (unsigned)geteuid();
    char p[160];
    snprintf(p, sizeof(p), "%s/d", rp_paths.dir);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(bh__private_dir_ok(p, me), 0);
    assert_int_equal(chmod(p, 0750), 0);
    assert_int_equal(bh__private_dir_ok(p, me), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(chmod(p, 0700), 0);
    assert_int_equal(bh__private_dir_ok(p, me + 1), -1); /* someone else's */
    assert_int_equal(errno, EPERM);
    char link[160];
    snprintf(link, sizeof(link), "%s/l", rp_paths.dir);
    assert_int_equal(symlink(p, link), 0);
    assert_int_equal(bh__private_dir_ok(link, me), -1); /* never through a link */
    assert_int_equal(errno, ENOTDIR);
}

static void the_per_user_directory_is_made_private_and_a_planted_one_is_refused(void **state) {
    (void)state;
    char got[256], want[256];
    snprintf(want, sizeof(want), "%s/bh-trackd-%u", rp_paths.dir, (unsigned)geteuid());
    mode_t old = umask(0);
    assert_int_equal(bh__user_dir(rp_paths.dir, got, sizeof(got)), 0);
    umask(old);
    assert_string_equal(got, want);
    struct stat st;
    assert_int_equal(lstat(want, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(bh__user_dir(rp_paths.dir, got, sizeof(got)), 0); /* again: exists, fine */
    assert_int_equal(bh__user_dir(rp_paths.dir, got, 8), -1);
    assert_int_equal(errno, ENAMETOOLONG);

    /* Made by someone first with a looser mode: refused, not repaired. */
    assert_int_equal(chmod(want, 0777), 0);
    assert_int_equal(bh__user_dir(rp_paths.dir, got, sizeof(got)), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(rmdir(want), 0);
    /* A link planted in its place: refused, and its target untouched. */
    char target[160];
    snprintf(target, sizeof(target), "%s/elsewhere", rp_paths.dir);
    assert_int_equal(mkdir(target, 0700), 0);
    assert_int_equal(symlink(target, want), 0);
    assert_int_equal(bh__user_dir(rp_paths.dir, got, sizeof(got)), -1);
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
    assert_int_equal(chmod(rp_paths.dir, 0700), 0);
    setenv("XDG_RUNTIME_DIR", rp_paths.dir, 1);
    snprintf(want, sizeof(want), "%s/bh-trackd.sock", rp_paths.dir);
    assert_int_equal(bh__default_socket_path(got, sizeof(got)), 0);
    assert_string_equal(got, want);

    /* The reporter opened with path NULL connects there. */
    int lfd = test_unix_listen(want, 16);
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(NULL, NULL, &rep), BH_OK);
    bh_reporter_stats rs;
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    assert_int_equal(rs.connects, 1);
    bh_socket_reporter_close(&rep);
    close(lfd);

    /* Readable by others: not a runtime directory we trust; the per-user
     * directory in /tmp is used instead. */
    assert_int_equal(chmod(rp_paths.dir, 0755), 0);
    if (bh__default_socket_path(got, sizeof(got)) == 0) {
        snprintf(want, sizeof(want), "/tmp/bh-trackd-%u/bh-trackd.sock", (unsigned)geteuid());
        assert_string_equal(got, want);
    }
    if (keep[0] != '\0')
        setenv("XDG_RUNTIME_DIR", keep, 1);
    else
        unsetenv("XDG_RUNTIME_DIR");
}

static void tracked_by_environment_without_a_server(void) {
    for (int i = 0; i < 2; i++) {
        bh_registry *reg;
        if (bh_registry_create(NULL, &reg) != BH_OK)
            _exit(50);
        (void)rp_pair(reg, 0x1000);
        if (bh_registry_destroy(reg) != BH_OK)
            _exit(51);
    }
}

static void an_unreachable_server_named_by_the_environment_is_said_once(void **state) {
    (void)state;
    char err[160], out[160], none[160];
    snprintf(err, sizeof(err), "%s/stderr", rp_paths.dir);
    snprintf(out, sizeof(out), "%s/stdout", rp_paths.dir);
    snprintf(none, sizeof(none), "%s/nobody.sock", rp_paths.dir);
    int saved = dup(1);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1); /* the child's stdout: must stay empty */
    close(fd);
    setenv("BH_TRACK_SOCKET", none, 1);
    int rc = rp_in_child(tracked_by_environment_without_a_server, err);
    unsetenv("BH_TRACK_SOCKET");
    int said = rp_lines_with(err, "BH_TRACK_SOCKET=");
    setenv("TT_ALLOC_TRACKING_ENABLED", "1", 1);
    setenv("BH_TT_SOCKET", none, 1);
    int rc_tt = rp_in_child(tracked_by_environment_without_a_server, err);
    unsetenv("TT_ALLOC_TRACKING_ENABLED");
    unsetenv("BH_TT_SOCKET");
    dup2(saved, 1);
    close(saved);
    assert_int_equal(rc, 0);
    assert_int_equal(said, 1); /* two registries, one line */
    assert_int_equal(rc_tt, 0);
    assert_int_equal(rp_lines_with(err, "TT_ALLOC_TRACKING_ENABLED="), 1);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(st.st_size, 0);
}

int main(int argc, char **argv) {
    const struct CMUnitTest basic[] = {
        RP_TEST(a_private_directory_is_one_of_ours_with_mode_0700),
        RP_TEST(the_per_user_directory_is_made_private_and_a_planted_one_is_refused),
        RP_TEST(the_default_socket_is_in_xdg_runtime_dir_when_that_is_private),
        RP_TEST(an_unreachable_server_named_by_the_environment_is_said_once),
    };
    return rp_main(argc, argv, "reporter_path", basic, sizeof(basic) / sizeof(basic[0]), NULL, 0);
}
