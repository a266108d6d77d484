/*
 * test_hostile_files.c - attacks on a real bh-trackd through the file
 * system and other users (the 0.3 hardening review): a second server on the
 * same path, the default socket's directory, another uid's server and
 * --allow-uid (root only: skipped otherwise), --log and --summary through
 * symbolic links, file modes under umask 0, SIGHUP and the periodic
 * summary, log stamps and rate limits. Each prints what it found.
 *
 * usage: test_hostile_files PATH-TO-bh-trackd [TEST-NAME-PATTERN]
 *
 * Must never touch a file outside its own temporary directory, nor depend
 * on the machine's speed (waits poll for a file or an exit,
 * support/attack.h).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
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
#include "support/attack.h"
#include "wire.h"

/* 0.2 let a second server bind a path whose socket file had been removed,
 * and the first one's exit then removed the second one's socket. */
static void a_second_server_is_refused_and_the_exiting_one_unlinks_only_its_own(void **state) {
    (void)state;
    pid_t first = at_start(NULL);
    assert_int_equal(unlink(at_paths.sock), 0);
    pid_t second = at_start_argv(NULL, 1);
    int st = at_wait_exit(second, TEST_HANG_S);
    print_message("second server on a removed path: %s\n", st == -1 ? "running (bound it)" : "refused");
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
    /* Somebody else's socket now sits at the path: the first server must
     * leave it when it exits. */
    int other = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", at_paths.sock);
    assert_int_equal(bind(other, (struct sockaddr *)&sa, sizeof(sa)), 0);
    test_server_stop_clean(first);
    assert_int_equal(access(at_paths.sock, F_OK), 0);
    close(other);
}

/* Without --socket, the socket goes into the private runtime directory
 * (0.2: /tmp/bh-trackd.sock, which anyone can bind first). */
static void the_default_socket_is_in_the_private_runtime_directory(void **state) {
    (void)state;
    char xdg[128], path[160];
    snprintf(xdg, sizeof(xdg), "%s/run", at_paths.dir);
    assert_int_equal(mkdir(xdg, 0700), 0);
    snprintf(path, sizeof(path), "%s/bh-trackd.sock", xdg);
    setenv("XDG_RUNTIME_DIR", xdg, 1);
    pid_t srv = at_start_argv(NULL, 0);
    unsetenv("XDG_RUNTIME_DIR");
    test_wait_accepting(path); /* asserts that it is there, TEST_HANG_S at most */
    print_message("default socket: %s\n", path);
    test_server_stop_clean(srv);
}

static uid_t nobody = 65534;

/* A copy of the daemon at to (mode 0755), which nobody can execute even when
 * the build tree sits in a directory only root may search (a clone in a
 * mktemp -d directory, mode 0700). bh-trackd needs no library of the build
 * tree, so the copy runs as it is. */
static void copy_executable(const char *from, const char *to) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    assert_true(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    assert_int_equal(close(out), 0);
    assert_int_equal(chmod(to, 0755), 0); /* whatever the umask */
}

/* Another user's server cannot probe root's socket (EACCES): 0.2 took that
 * for "stale", deleted root's socket and bound its own. */
static void another_users_server_cannot_take_over_a_live_socket(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip();
    assert_int_equal(chmod(at_paths.dir, 0777), 0); /* writable by nobody, not sticky: the worst case */
    char intruder_exe[sizeof(at_paths.dir) + 32];
    snprintf(intruder_exe, sizeof(intruder_exe), "%s/bh-trackd-copy", at_paths.dir);
    copy_executable(at_trackd, intruder_exe);
    pid_t srv = at_start(NULL);
    struct stat before, after;
    assert_int_equal(stat(at_paths.sock, &before), 0);
    fflush(NULL);
    pid_t intruder = fork();
    if (intruder == 0) {
        hs_become_nobody();
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(intruder_exe, intruder_exe, "--socket", at_paths.sock, "--log", "/dev/null", (char *)NULL);
        _exit(127);
    }
    int st = at_wait_exit(intruder, TEST_HANG_S);
    if (st == -1) {
        kill(intruder, SIGKILL);
        waitpid(intruder, NULL, 0);
    }
    int same = stat(at_paths.sock, &after) == 0 && after.st_ino == before.st_ino;
    print_message("intruder as uid %d: %s, root's socket %s\n", (int)nobody,
                  st == -1 ? "kept running" : "exited", same ? "kept" : "replaced");
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_true(same);
    test_server_stop_clean(srv);
}

static void nobody_reports_one_alloc(void) {
    hs_become_nobody();
    int fd = hs_connect(at_paths.sock);
    if (fd < 0)
        _exit(3);
    uint8_t b[128];
    size_t n = hs_hello(b, 0);
    n += bh_wire_event(b + n, 1, BH_EVENT_ALLOC, 0, 0x1000, 64, 1);
    hs_send_all(fd, b, n);
    test_sleep_ms(100);
    close(fd);
    _exit(0);
}

/* --allow-uid could not work in 0.2: the socket was 0600. */
static void allowed_uids_can_connect(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip();
    assert_int_equal(chmod(at_paths.dir, 0755), 0);
    const char *extra[] = {"--allow-uid", "65534", NULL};
    pid_t srv = at_start(extra);
    struct stat st;
    assert_int_equal(stat(at_paths.sock, &st), 0);
    pid_t c = test_fork(nobody_reports_one_alloc);
    int status;
    waitpid(c, &status, 0);
    uint64_t allocs = at_wait_total("allocs", 1);
    print_message("--allow-uid 65534: socket mode %o, child %s, allocs %llu\n", (unsigned)(st.st_mode & 0777),
                  WEXITSTATUS(status) == 0 ? "connected" : "could not connect", (unsigned long long)allocs);
    assert_int_equal(st.st_mode & 0777, 0666);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(allocs, 1);
    test_server_stop_clean(srv);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int file_is(const char *path, const char *text) {
    char buf[256] = {0};
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

/* --log and --summary pointing at symbolic links: 0.2 appended to and
 * truncated the targets. */
static void log_and_summary_never_write_through_links(void **state) {
    (void)state;
    char target1[160], target2[160], link_summary[160];
    snprintf(target1, sizeof(target1), "%s/precious1", at_paths.dir);
    snprintf(target2, sizeof(target2), "%s/precious2", at_paths.dir);
    snprintf(link_summary, sizeof(link_summary), "%s/summary-link", at_paths.dir);
    write_file(target1, "keep me\n");
    write_file(target2, "keep me too\n");
    assert_int_equal(symlink(target1, at_paths.log), 0);
    pid_t srv = at_start_argv(NULL, 1);
    int st = at_wait_exit(srv, TEST_HANG_S);
    if (st == -1) {
        kill(srv, SIGKILL);
        waitpid(srv, NULL, 0);
    }
    unlink(at_paths.log);
    assert_int_equal(symlink(target2, link_summary), 0);
    const char *extra[] = {"--summary", link_summary, NULL};
    srv = at_start(extra);
    test_server_stop_clean(srv);
    int kept1 = file_is(target1, "keep me\n"), kept2 = file_is(target2, "keep me too\n");
    struct stat ls;
    lstat(link_summary, &ls);
    print_message("links: log target %s (server %s), summary target %s, summary is %s\n",
                  kept1 ? "untouched" : "WRITTEN", st == -1 ? "started" : "refused",
                  kept2 ? "untouched" : "WRITTEN",
                  S_ISREG(ls.st_mode) ? "a new regular file" : "still the link");
    assert_true(kept1 && st != -1);
    assert_true(kept2 && S_ISREG(ls.st_mode));
}

/* Modes do not depend on the umask; SIGHUP reopens the log and writes the
 * summary (0.2 died of it); the summary is also written periodically, so a
 * SIGKILL loses at most one period. */
static void files_have_fixed_modes_sighup_rotates_and_summary_is_periodic(void **state) {
    (void)state;
    mode_t old = umask(0);
    const char *extra[] = {"--summary", at_paths.summary, "--summary-interval-ms", "200", NULL};
    pid_t srv = at_start(extra);
    umask(old);
    struct stat st;
    assert_int_equal(stat(at_paths.log, &st), 0);
    mode_t log_mode = st.st_mode & 0777;
    for (double end = test_now_s() + TEST_HANG_S; access(at_paths.summary, F_OK) != 0 && test_now_s() < end;)
        test_sleep_ms(20);
    int periodic = access(at_paths.summary, F_OK) == 0;
    char rotated[160];
    snprintf(rotated, sizeof(rotated), "%s.1", at_paths.log);
    assert_int_equal(rename(at_paths.log, rotated), 0);
    unlink(at_paths.summary);
    kill(srv, SIGHUP);
    /* Until the log is back and the summary written (or TEST_HANG_S, or the
     * server died of the signal, as 0.2 did). */
    int alive = 1;
    for (double end = test_now_s() + TEST_HANG_S;
         alive && (access(at_paths.log, F_OK) != 0 || access(at_paths.summary, F_OK) != 0) &&
         test_now_s() < end;)
        alive = at_wait_exit(srv, 0.02) == -1;
    alive = alive && at_wait_exit(srv, 0.1) == -1;
    int reopened = access(at_paths.log, F_OK) == 0, summary_on_hup = access(at_paths.summary, F_OK) == 0;
    mode_t summary_mode = stat(at_paths.summary, &st) == 0 ? st.st_mode & 0777 : 0;
    if (alive)
        test_server_stop(srv, SIGKILL);
    print_message(
        "umask 0: log mode %o, summary mode %o; periodic summary %s; after SIGHUP the server is %s, "
        "log %s, summary %s\n",
        (unsigned)log_mode, (unsigned)summary_mode, periodic ? "written" : "missing",
        alive ? "alive" : "dead", reopened ? "reopened" : "not reopened",
        summary_on_hup ? "written" : "not written");
    assert_int_equal(log_mode, 0600);
    assert_true(periodic);
    assert_true(alive && reopened && summary_on_hup);
    assert_int_equal(summary_mode, 0644);
}

/* 500 malformed connections: every line has a timestamp and a level, and
 * the repeated message is rate-limited (0.2 logged each one). */
static void log_lines_are_stamped_and_every_repeated_message_is_limited(void **state) {
    (void)state;
    pid_t srv = at_start(NULL);
    for (int i = 0; i < 500; i++) {
        int fd = hs_connect(at_paths.sock);
        if (fd < 0)
            continue;
        hs_send_all(fd, "NOPE-NOPE-NOPE", 14);
        uint8_t b[256];
        at_read_some(fd, b, sizeof(b), TEST_HANG_S);
        close(fd);
    }
    test_server_stop_clean(srv);
    FILE *f = fopen(at_paths.log, "r");
    assert_non_null(f);
    char line[512];
    int lines = 0, stamped = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        int y, mo, d, h, mi, s, ms;
        char level[8];
        lines++;
        if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %7s ", &y, &mo, &d, &h, &mi, &s, &ms, level) == 8 &&
            (strcmp(level, "INFO") == 0 || strcmp(level, "WARN") == 0 || strcmp(level, "ERROR") == 0))
            stamped++;
    }
    fclose(f);
    print_message("500 malformed connections: %d log lines, %d stamped\n", lines, stamped);
    assert_true(lines < 150);
    assert_int_equal(stamped, lines);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        AT_TEST(a_second_server_is_refused_and_the_exiting_one_unlinks_only_its_own),
        AT_TEST(the_default_socket_is_in_the_private_runtime_directory),
        AT_TEST(another_users_server_cannot_take_over_a_live_socket),
        AT_TEST(allowed_uids_can_connect),
        AT_TEST(log_and_summary_never_write_through_links),
        AT_TEST(files_have_fixed_modes_sighup_rotates_and_summary_is_periodic),
        AT_TEST(log_lines_are_stamped_and_every_repeated_message_is_limited),
    };
    return at_main(argc, argv, "hostile_files", tests, sizeof(tests) / sizeof(tests[0]));
}
