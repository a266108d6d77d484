/*
 * test_report_fork_connect.c - fork() while the socket reporter's sender
 * thread connects: the child must not inherit the connection's socket.
 *
 * The sender makes and connects its socket with the connection's lock
 * released (rs_try_connect, src/report/report_conn.c); fork_child
 * (report_socket.c) closes c->fd in the child. A socket not yet in c->fd
 * when the fork came stayed open in the child, and the server saw that
 * connection alive as long as the child lived. The window is one connect()
 * wide, so this test holds the sender inside it: it defines connect()
 * itself (the executable's definition is the one the statically linked
 * library calls), which, once armed, does the real connect and then waits
 * until the test has forked and its child has counted the sockets it holds.
 * No hook in the library. Bounded by conditions, each waited for
 * TEST_HANG_S at most.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "report/report_socket.h"
#include "support/server.h"

static test_paths paths;
static int lfd = -1;

/* The held connect: armed by the test; the sender, in it, says so (inside)
 * and waits for release. Under hold_lock. */
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cond = PTHREAD_COND_INITIALIZER;
static int armed, inside, released;

typedef int (*connect_fn)(int, __CONST_SOCKADDR_ARG, socklen_t);

/* As <sys/socket.h> declares it (glibc: a transparent union with
 * _GNU_SOURCE). */
int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len) {
    connect_fn real = (connect_fn)(uintptr_t)dlsym(RTLD_NEXT, "connect");
    int rc = real(fd, addr, len);
    const struct sockaddr *sa = addr.__sockaddr__;
    const struct sockaddr_un *un = (const struct sockaddr_un *)(const void *)sa;
    pthread_mutex_lock(&hold_lock);
    if (armed && sa->sa_family == AF_UNIX && strcmp(un->sun_path, paths.sock) == 0) {
        armed = 0;
        inside = 1;
        pthread_cond_broadcast(&hold_cond);
        for (double end = test_now_s() + TEST_HANG_S; !released && test_now_s() < end;) {
            struct timespec dl = rs_deadline_in(10u * 1000u);
            pthread_cond_timedwait(&hold_cond, &hold_lock, &dl);
        }
    }
    pthread_mutex_unlock(&hold_lock);
    return rc;
}

/* Sockets open in this process other than the listener. */
static int other_sockets(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
        char path[300], target[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof(target) - 1);
        if (k <= 0 || atoi(e->d_name) == lfd || atoi(e->d_name) == dirfd(d))
            continue;
        target[k] = 0;
        n += strncmp(target, "socket:", 7) == 0;
    }
    if (d != NULL)
        closedir(d);
    return n;
}

static void a_child_forked_during_a_connect_holds_no_socket(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-fork-connect");
    lfd = test_unix_listen(paths.sock, 64);
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(paths.sock, NULL, &rep), BH_OK);
    conn *c = ((stream *)rep.ctx)->c;
    int first = accept(lfd, NULL, NULL);
    assert_true(first >= 0);
    pthread_mutex_lock(&hold_lock);
    armed = 1; /* the sender's next connect: after it reads the end of this one */
    pthread_mutex_unlock(&hold_lock);
    close(first);

    pthread_mutex_lock(&hold_lock);
    for (double end = test_now_s() + TEST_HANG_S; !inside && test_now_s() < end;) {
        struct timespec dl = rs_deadline_in(10u * 1000u);
        pthread_cond_timedwait(&hold_cond, &hold_lock, &dl);
    }
    int held = inside;
    pthread_mutex_unlock(&hold_lock);
    assert_true(held); /* the sender is inside its connect, connected */

    pid_t pid = fork();
    if (pid == 0)
        _exit(other_sockets());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    pthread_mutex_lock(&hold_lock);
    released = 1;
    pthread_cond_broadcast(&hold_cond);
    pthread_mutex_unlock(&hold_lock);
    print_message("sockets the child inherited open: %d\n", WEXITSTATUS(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Control: the parent holds the connection the sender made. */
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(1)) {
        pthread_mutex_lock(&c->lock);
        int up = c->connected;
        pthread_mutex_unlock(&c->lock);
        if (up)
            break;
    }
    assert_int_equal(other_sockets(), 1);
    bh_socket_reporter_close(&rep);
    close(lfd);
    test_paths_remove(&paths);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_child_forked_during_a_connect_holds_no_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
