/*
 * test_reporter.c - the socket reporter's own promises: where it connects by
 * default, whom it talks to, and what it costs the application in every state.
 *
 * usage: test_reporter PATH-TO-bh-trackd [slow|fast [basic|hostile]]
 *        (slow: under valgrind, smaller sets and looser bounds; no group: all)
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
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdatomic.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "rundir.h"
#include "sanitize.h"
#include "support/server.h"
#include "wire.h"

static const char *trackd;
static double slack = 1; /* time bounds are multiplied by this under valgrind */
static test_paths paths;
static pid_t server = -1; /* the bh-trackd of the running test */
/* What a forked client may take in all (its alarm): a few waits of
 * TEST_HANG_S each, which only a hang reaches, at valgrind's pace. */
#define CHILD_HANG_S ((unsigned)(3 * TEST_HANG_S * slack))

/* ------------------------------------------------------------ helpers */

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-reporter-test");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    server = -1;
    return test_paths_remove(&paths);
}

/* Starts bh-trackd on paths.sock with a short grace period and the given
 * options (NULL-terminated list), and waits until path accepts. */
static void serve(const char *const *opts, const char *path) {
    const char *base[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "300", NULL};
    server = test_server_spawn(base, opts, 0);
    test_wait_accepting(path);
}

/* --grace-ms long past any test: the server then says a process is gone
 * only when it has exited (a live one is never taken for gone), so waiting
 * for server.processes_gone waits for exactly the exits. */
#define ONLY_EXITS_ARE_GONE "--grace-ms", "600000"

/* Waits (TEST_HANG_S at most) until the server has seen n client processes
 * gone: from then on what they still held is counted as leaked. */
static void wait_gone(uint64_t n) {
    assert_true(test_wait_stat(trackd, paths.sock, "server", "processes_gone", n) >= n);
}

/* totals.KEY or server.KEY from `bh-trackd stats --json`. */
static uint64_t stat_of(const char *section, const char *key) {
    char buf[1 << 15];
    return test_json_u64(test_stats_json(trackd, paths.sock, buf, sizeof(buf)), section, key);
}

/* Waits (TEST_HANG_S at most) until totals.live is 0. */
static void wait_nothing_live(void) {
    for (double end = test_now_s() + TEST_HANG_S; stat_of("totals", "live") != 0 && test_now_s() < end;)
        test_sleep_ms(20);
    assert_int_equal(stat_of("totals", "live"), 0);
}

/* Runs fn in a child process with stderr going to the file err (if not
 * NULL); returns its exit status, or 128 + signal. alarm() bounds it: only a
 * hang reaches it (CHILD_HANG_S). */
static int in_child(void (*fn)(void), const char *err) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (err != NULL) {
            int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            dup2(fd, 2);
        }
        alarm(CHILD_HANG_S);
        fn();
        _exit(0);
    }
    return test_reap(pid);
}

/* Lines of file f that contain needle. */
static int lines_with(const char *f, const char *needle) {
    FILE *fp = fopen(f, "r");
    if (fp == NULL)
        return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), fp) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(fp);
    return n;
}

/* A registry without an allocator that reports to rep: bh_intern makes
 * allocations out of plain numbers, as fast as the library goes. */
static bh_registry *registry_on(const bh_reporter *rep) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reporter = *rep;
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        _exit(90);
    return reg;
}

#define DOMAIN BH_DOMAIN(1, BH_MEM_DRAM)

/* n allocations at addresses base, base + 4096, ... */
static void hold(bh_registry *reg, bh_handle *h, uint32_t n, uint64_t base) {
    for (uint32_t i = 0; i < n; i++)
        if (bh_intern(reg, DOMAIN, base + (uint64_t)i * 4096, 4096, &h[i]) != BH_OK)
            _exit(91);
}

static void drop_all(bh_registry *reg, bh_handle *h, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (h[i].bits != 0 && bh_release(reg, h[i]) != BH_OK)
            _exit(92);
}

/* One alloc + release; returns its latency in seconds, or -1 if the thread
 * was preempted during it (test_timer: the machine's load, not ours). */
static double pair(bh_registry *reg, uint64_t address) {
    bh_handle h;
    test_timer t;
    test_timer_start(&t);
    if (bh_intern(reg, DOMAIN, address, 64, &h) != BH_OK || bh_release(reg, h) != BH_OK)
        _exit(93);
    return test_timer_unpreempted(&t);
}

/* ------------------------------------------------------------ default path */

static void a_private_directory_is_one_of_ours_with_mode_0700(void **state) {
    (void)state;
    unsigned me = (unsigned)geteuid();
    char p[160];
    snprintf(p, sizeof(p), "%s/d", paths.dir);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(bh__private_dir_ok(p, me), 0);
    assert_int_equal(chmod(p, 0750), 0);
    assert_int_equal(bh__private_dir_ok(p, me), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(chmod(p, 0700), 0);
    assert_int_equal(bh__private_dir_ok(p, me + 1), -1); /* someone else's */
    assert_int_equal(errno, EPERM);
    char link[160];
    snprintf(link, sizeof(link), "%s/l", paths.dir);
    assert_int_equal(symlink(p, link), 0);
    assert_int_equal(bh__private_dir_ok(link, me), -1); /* never through a link */
    assert_int_equal(errno, ENOTDIR);
}

static void the_per_user_directory_is_made_private_and_a_planted_one_is_refused(void **state) {
    (void)state;
    char got[256], want[256];
    snprintf(want, sizeof(want), "%s/bh-trackd-%u", paths.dir, (unsigned)geteuid());
    mode_t old = umask(0);
    assert_int_equal(bh__user_dir(paths.dir, got, sizeof(got)), 0);
    umask(old);
    assert_string_equal(got, want);
    struct stat st;
    assert_int_equal(lstat(want, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(bh__user_dir(paths.dir, got, sizeof(got)), 0); /* again: exists, fine */
    assert_int_equal(bh__user_dir(paths.dir, got, 8), -1);
    assert_int_equal(errno, ENAMETOOLONG);

    /* Made by someone first with a looser mode: refused, not repaired. */
    assert_int_equal(chmod(want, 0777), 0);
    assert_int_equal(bh__user_dir(paths.dir, got, sizeof(got)), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(rmdir(want), 0);
    /* A link planted in its place: refused, and its target untouched. */
    char target[160];
    snprintf(target, sizeof(target), "%s/elsewhere", paths.dir);
    assert_int_equal(mkdir(target, 0700), 0);
    assert_int_equal(symlink(target, want), 0);
    assert_int_equal(bh__user_dir(paths.dir, got, sizeof(got)), -1);
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
    assert_int_equal(chmod(paths.dir, 0700), 0);
    setenv("XDG_RUNTIME_DIR", paths.dir, 1);
    snprintf(want, sizeof(want), "%s/bh-trackd.sock", paths.dir);
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
    assert_int_equal(chmod(paths.dir, 0755), 0);
    if (bh__default_socket_path(got, sizeof(got)) == 0) {
        snprintf(want, sizeof(want), "/tmp/bh-trackd-%u/bh-trackd.sock", (unsigned)geteuid());
        assert_string_equal(got, want);
    }
    if (keep[0] != '\0')
        setenv("XDG_RUNTIME_DIR", keep, 1);
    else
        unsetenv("XDG_RUNTIME_DIR");
}

/* ------------------------------------------------------------ whom it talks to */

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
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", paths.sock);
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
    if (bh_socket_reporter_open(paths.sock, NULL, &rep) != BH_OK)
        _exit(10);
    bh_registry *reg = registry_on(&rep);
    for (int i = 0; i < 100; i++)
        (void)pair(reg, 0x10000);
    (void)bh_socket_reporter_flush(&rep, 300);
    bh_registry_destroy(reg);
    bh_socket_reporter_close(&rep);
}

static void a_server_of_another_user_gets_nothing_and_is_named_once(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip(); /* needs root to run the listener as another user */
    assert_int_equal(chmod(paths.dir, 0777), 0);
    int bytes_fd;
    pid_t pid = foreign_listener(&bytes_fd);
    char err[160];
    snprintf(err, sizeof(err), "%s/stderr", paths.dir);
    assert_int_equal(in_child(report_a_little, err), 0);
    uint32_t got = 1;
    assert_int_equal(read(bytes_fd, &got, sizeof(got)), (ssize_t)sizeof(got));
    close(bytes_fd);
    waitpid(pid, NULL, 0);
    assert_int_equal(got, 0); /* not even HELLO */
    assert_int_equal(lines_with(err, "uid 65534"), 1);
}

/* ------------------------------------------------------------ fork */

/* busy: churned by a thread of the parent while it forks; idle: a second
 * registry whose reporter shares busy's connection (and so its lock and its
 * sender thread), used by the children. (A registry busy in another thread at
 * the moment of fork() is the core's matter: its table locks.) */
static bh_registry *busy_reg, *idle_reg;
static atomic_int churning;

static void *churn_thread(void *arg) {
    (void)arg;
    for (uint64_t i = 0; churning; i++)
        (void)pair(busy_reg, 0x100000 + (i % 64) * 64);
    return NULL;
}

/* In the child: the inherited registry is the parent's (BH_EFORKED at once,
 * nothing reaches its reporter), and a reporter opened here gets a
 * connection of its own. */
static void forked_child(void) {
    bh_handle h;
    for (int i = 0; i < 200; i++)
        if (bh_intern(idle_reg, DOMAIN, 0x900000, 64, &h) != BH_EFORKED)
            _exit(19);
#if BH__TSAN || BH__ASAN
    /* No threads in the child of a threaded process under a sanitizer. TSan
     * kills such a child (die_after_fork). Under gcc 12's ASan, which takes
     * no allocator lock across fork(), the child's sender thread hung before
     * running any of the library's code (2 of 200 children beside busy
     * loops, under gdb): AsanThread::Init -> pthread_getattr_np -> free ->
     * the quarantine's batch allocation -> SizeClassAllocator64::
     * GetFromAllocator, waiting for the lock of that size class. Stopping
     * the churn thread outside the library for each fork made it rarer (4
     * of 4,500 children), not gone. The registry checks above still run. */
    return;
#endif
    bh_reporter rep;
    if (bh_socket_reporter_open(paths.sock, NULL, &rep) != BH_OK)
        _exit(20);
    bh_registry *reg = registry_on(&rep);
    for (int i = 0; i < 200; i++)
        (void)pair(reg, 0x900000);
    /* The flush only has to finish (2 s was not always enough for an ASan
     * child beside busy loops): only a hang reaches its bound. */
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(21);
    bh_reporter_stats rs;
    if (bh_socket_reporter_stats(&rep, &rs) != BH_OK || rs.reported != 400 || rs.connects != 1)
        _exit(22);
    if (bh_registry_destroy(reg) != BH_OK)
        _exit(23);
    bh_socket_reporter_close(&rep);
}

static void forked_children_keep_using_the_library(void **state) {
    (void)state;
#if BH__TSAN
    /* gcc 12's ThreadSanitizer does not hold its own allocator's locks
     * across fork(): a child forked while the churn thread is inside malloc
     * waits forever in TSan's SizeClassAllocator64 lock (seen under gdb, 1
     * run in 3 on a loaded machine). The library's fork handling is checked
     * by this test in the debug, ASan and valgrind builds. */
    print_message("ThreadSanitizer cannot fork a process whose threads allocate: skipping\n");
    skip();
#endif
    const char *opts[] = {ONLY_EXITS_ARE_GONE, NULL};
    serve(opts, paths.sock);
    bh_reporter rep, rep2;
    assert_int_equal(bh_socket_reporter_open(paths.sock, NULL, &rep), BH_OK);
    assert_int_equal(bh_socket_reporter_open(paths.sock, NULL, &rep2), BH_OK);
    busy_reg = registry_on(&rep);
    idle_reg = registry_on(&rep2);
    churning = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_thread, NULL), 0);
    double t0 = test_now_s();
    int status[20];
    for (int i = 0; i < 20; i++) /* each child is bounded by its alarm */
        status[i] = in_child(forked_child, NULL);
    double took = test_now_s() - t0;
    churning = 0;
    pthread_join(t, NULL);
    for (int i = 0; i < 20; i++)
        assert_int_equal(status[i], 0);
    print_message("20 forked children finished in %.2f s\n", took); /* each bounded by its alarm */
    assert_int_equal(bh_registry_destroy(busy_reg), BH_OK);
    assert_int_equal(bh_registry_destroy(idle_reg), BH_OK);
    bh_socket_reporter_close(&rep);
    bh_socket_reporter_close(&rep2);
    /* Each child reported on a connection of its own (the parent's was never
     * written by a child): nothing unknown, nothing left, nothing leaked. */
#if !BH__ASAN
    wait_gone(20); /* the children, seen gone by the server */
#endif
    wait_nothing_live();
    assert_int_equal(stat_of("totals", "unknown_frees"), 0);
    assert_int_equal(stat_of("totals", "leaks"), 0);
#if !BH__TSAN && !BH__ASAN
    assert_true(stat_of("server", "reporter_connections") >= 21); /* the parent's and one per child */
#endif
}

/* ------------------------------------------------------------ the application's bound */

/* The resync test's churn: alloc+release pairs, and what they measured. */
typedef struct churn_run {
    bh_registry *reg;
    const bh_reporter *rep;
    uint64_t pairs, preempted;
    double worst;
    bh_reporter_stats rs; /* the reporter's counters, read every 256 pairs */
} churn_run;

/* One pair. A call during which this thread was preempted measures the load
 * of the machine, not the library: only calls that ran or waited on their
 * own (a lock wait is a voluntary switch) count. */
static void churn_one(churn_run *c) {
    double dt = pair(c->reg, 0x10000 + (c->pairs++ % 1024) * 64);
    if (dt < 0)
        c->preempted++;
    else if (dt > c->worst)
        c->worst = dt;
    if (c->pairs % 256 == 0)
        assert_int_equal(bh_socket_reporter_stats(c->rep, &c->rs), BH_OK);
}

static void the_application_thread_stays_fast_while_resyncs_happen(void **state) {
    (void)state;
    uint32_t live = slack > 1 ? 20000 : 300000;
    uint64_t phase = slack > 1 ? 5000 : 50000; /* pairs churned with the server up, before and after */
    serve(NULL, paths.sock);
    bh_reporter rep;
    bh_socket_options opt = {.queue_capacity = 256, .max_block_us = 0, .send_timeout_ms = 200};
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &rep), BH_OK);
    bh_registry *reg = registry_on(&rep);
    bh_handle *h = calloc(live, sizeof(*h));
    assert_non_null(h);
    double t0 = test_now_s(); /* every resync of this run starts after this */
    hold(reg, h, live, 1u << 30);
    /* Churn with the server up; stop it until the small ring has overflowed
     * (sends stall, events are dropped) and for 0.4 s at least (past the
     * send timeout: the connection is dropped and made again), then let it
     * go on and churn until a resync has been completed (the hold's own
     * overflow owes one too; beside busy loops a resync after the stop was
     * cut short by one dropped connection after another for 50 s: the
     * server, starved, stalls sends past 0.2 s), and as many pairs again. Each phase ends on a count or a
     * condition (TEST_HANG_S only guards against a hang; 0.4 s is a least time, which load only makes
     * longer): a loaded machine makes the run longer, never different. */
    churn_run c = {.reg = reg, .rep = &rep};
    while (c.pairs < phase)
        churn_one(&c);
    assert_int_equal(bh_socket_reporter_stats(&rep, &c.rs), BH_OK);
    uint64_t dropped0 = c.rs.dropped, resyncs0 = c.rs.resyncs;
    assert_int_equal(kill(server, SIGSTOP), 0);
    double stopped = test_now_s(), hang = stopped + TEST_HANG_S;
    while ((c.rs.dropped == dropped0 || test_now_s() < stopped + 0.4) && test_now_s() < hang)
        churn_one(&c);
    assert_int_equal(kill(server, SIGCONT), 0);
    uint64_t resumed = c.pairs;
    for (hang = test_now_s() + TEST_HANG_S;
         (c.rs.resyncs == 0 || c.pairs < resumed + phase) && test_now_s() < hang;)
        churn_one(&c);
    double took = test_now_s() - t0;
    bh_reporter_stats rs;
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    print_message(
        "%u live, %llu pairs (%llu preempted): worst alloc+release %.2f ms; %llu resyncs (%llu after the "
        "stop) in %.1f s, %llu connects, %llu dropped (%llu during the stop)\n",
        live, (unsigned long long)c.pairs, (unsigned long long)c.preempted, c.worst * 1e3,
        (unsigned long long)rs.resyncs, (unsigned long long)(rs.resyncs - resyncs0), took,
        (unsigned long long)rs.connects, (unsigned long long)rs.dropped,
        (unsigned long long)(c.rs.dropped - dropped0));
    assert_true(c.preempted <= c.pairs / 2); /* most calls measured */
    assert_true(c.rs.dropped > dropped0);    /* the stop overflowed the ring */
    assert_true(rs.resyncs >= 1);            /* none at the first connection: these came from losses */
    /* Spaced (their starts RESYNC_GAP_MS, 1 s, apart), not one per
     * overflow: at most one per second of this same run. */
    assert_true((double)rs.resyncs <= 1 + took);
    /* Ours: under LOCK_WAIT_US (0.2 ms) plus the call's own work. 0.2 copied
     * the live set under the lock its reporters need (20-50 ms here). */
    assert_true(c.worst < 0.005 * slack);
    drop_all(reg, h, live);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    wait_nothing_live();
    assert_int_equal(stat_of("totals", "unknown_frees"), 0);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_socket_reporter_close(&rep);
    free(h);
}

/* A server that takes 16 KiB every 50 ms from whoever connects: a resync of
 * 200,000 entries (4.8 MB) would take it over 15 s. It declines the ring each
 * stream offers (RING_ACK, status -1), so the reporter sends its events on
 * the socket, at this pace: a server that never answered the offer would get
 * nothing past HELLO and RING, and no close would wait for it. slow_taken:
 * the bytes it has taken. */
static atomic_int slow_serving;
static atomic_ullong slow_taken;

/* The frames from a connection's start (HELLO, then a RING per stream,
 * nothing more until a RING_ACK): each RING whole in p[0, n) is declined.
 * Returns 1 once one was. */
static int decline_rings(int fd, const uint8_t *p, size_t n) {
    int declined = 0;
    for (size_t off = 0; n - off >= BH_WIRE_HEADER;) {
        uint32_t len = bh_get32(p + off + 8);
        if (n - off - BH_WIRE_HEADER < len)
            break;
        if (bh_get16(p + off + 6) == BH_WIRE_RING && len >= 4) {
            uint8_t ack[BH_WIRE_HEADER + 8];
            bh_wire_header(ack, BH_WIRE_RING_ACK, 8);
            bh_put32(ack + BH_WIRE_HEADER, bh_get32(p + off + BH_WIRE_HEADER));
            bh_put32(ack + BH_WIRE_HEADER + 4, (uint32_t)-1);
            declined = send(fd, ack, sizeof(ack), MSG_NOSIGNAL) == (ssize_t)sizeof(ack);
        }
        off += BH_WIRE_HEADER + len;
    }
    return declined;
}

static void *slow_reader(void *arg) {
    int lfd = *(int *)arg;
    struct pollfd p = {lfd, POLLIN, 0};
    int fd = -1, declined = 0;
    uint8_t buf[16384], head[4096];
    size_t head_len = 0;
    while (slow_serving) {
        if (poll(&p, 1, 0) == 1) {
            if (fd >= 0)
                close(fd);
            fd = accept(lfd, NULL, NULL);
            declined = 0;
            head_len = 0;
        }
        ssize_t n = fd >= 0 ? recv(fd, buf, sizeof(buf), MSG_DONTWAIT) : -1;
        if (n > 0) {
            atomic_fetch_add(&slow_taken, (unsigned long long)n);
            size_t keep = (size_t)n < sizeof(head) - head_len ? (size_t)n : sizeof(head) - head_len;
            memcpy(head + head_len, buf, keep);
            head_len += keep;
            if (!declined)
                declined = decline_rings(fd, head, head_len);
        }
        if (n == 0) {
            close(fd);
            fd = -1;
        }
        test_sleep_ms(50);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void close_is_bounded_by_the_flush_timeout_against_a_slow_server(void **state) {
    (void)state;
    uint32_t live = slack > 1 ? 20000 : 200000;
    int lfd = test_unix_listen(paths.sock, 16);
    slow_serving = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_reader, &lfd), 0);
    bh_reporter rep;
    bh_socket_options opt = {.queue_capacity = 1024, .flush_timeout_ms = 300};
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &rep), BH_OK);
    for (uint64_t i = 1; i <= live; i++) {
        bh_event ev = {BH_EVENT_ALLOC, DOMAIN, i * 4096, 4096, i};
        rep.report(rep.ctx, &ev);
    }
    /* The ring overflowed (events dropped) while connected: the sender owes
     * the slow server a resync of the whole live set. */
    bh_reporter_stats rs = {0};
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(10)) {
        assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
        if (rs.connected && rs.dropped > 0)
            break;
    }
    assert_true(rs.connected && rs.dropped > 0);
    double t0 = test_now_s();
    unsigned long long taken0 = atomic_load(&slow_taken);
    bh_socket_reporter_close(&rep);
    unsigned long long taken = atomic_load(&slow_taken) - taken0;
    double took = test_now_s() - t0;
    /* A close that waited for the resync would return only once the slow
     * server had taken the live set (24 bytes an entry), less what its
     * socket buffer holds. The bound is a third of that, in bytes the
     * server took, not in seconds: a loaded machine slows the server's
     * taking as much as the close, so only a close that waits for the
     * server, not for its own timeout, can reach it. */
    double resync = live * 24.0;
    print_message("close with %u live against a slow server: %.3f s (flush timeout 0.3 s), the server took "
                  "%llu bytes meanwhile (the resync: %.0f)\n",
                  live, took, taken, resync);
    assert_true((double)taken < resync / 3);
    slow_serving = 0;
    pthread_join(t, NULL);
    close(lfd);
}

/* ------------------------------------------------------------ refusals */

static void over_the_limit_then_free_everything(void) {
    bh_reporter rep;
    bh_socket_options opt = {.send_timeout_ms = 200};
    if (bh_socket_reporter_open(paths.sock, &opt, &rep) != BH_OK)
        _exit(30);
    bh_registry *reg = registry_on(&rep);
    static bh_handle h[1000];
    hold(reg, h, 1000, 1u << 20);
    /* Held over the limit until the reporter has been refused (it says so
     * on stderr, which the parent pointed at dir/stderr). */
    char err[160];
    snprintf(err, sizeof(err), "%s/stderr", paths.dir);
    while (lines_with(err, "refused") < 1) /* bounded by in_child's alarm */
        test_sleep_ms(10);
    drop_all(reg, h, 1000);
    (void)bh_socket_reporter_flush(&rep, TEST_HANG_MS);
    if (bh_registry_destroy(reg) != BH_OK)
        _exit(31);
    bh_socket_reporter_close(&rep);
}

static void a_refused_process_backs_off_and_leaves_no_false_leaks(void **state) {
    (void)state;
    const char *opts[] = {"--max-live-per-client", "100", ONLY_EXITS_ARE_GONE, NULL};
    serve(opts, paths.sock);
    char err[160];
    snprintf(err, sizeof(err), "%s/stderr", paths.dir);
    assert_int_equal(in_child(over_the_limit_then_free_everything, err), 0);
    wait_gone(1); /* what the server still holds is a leak now */
    uint64_t leaks = stat_of("totals", "leaks"), cuts = stat_of("server", "limit_disconnects");
    print_message("refused client: %llu leaks, %llu limit disconnects\n", (unsigned long long)leaks,
                  (unsigned long long)cuts);
    assert_int_equal(leaks, 0);
    assert_true(cuts >= 1 && cuts <= 2);
    assert_int_equal(lines_with(err, "refused"), 1);
}

/* ------------------------------------------------------------ TT records */

static void tt_records_carry_the_device_and_the_memory_kind(void **state) {
    (void)state;
    int lfd = test_unix_listen(paths.compat, 16);
    bh_reporter rep;
    bh_socket_options opt = {.flags = BH_SOCKET_COMPAT_TT};
    assert_int_equal(bh_socket_reporter_open(paths.compat, &opt, &rep), BH_OK);
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    bh_event evs[] = {{BH_EVENT_ALLOC, BH_DOMAIN(3, BH_MEM_L1), 0x5000, 100, 1},
                      {BH_EVENT_ALLOC, BH_DOMAIN(3, 7), 0x6000, 100, 2}, /* no TT buffer_type: not sent */
                      {BH_EVENT_FREE, BH_DOMAIN(3, 7), 0x6000, 100, 3},
                      {BH_EVENT_FREE, BH_DOMAIN(3, BH_MEM_L1), 0x5000, 100, 4}};
    for (int i = 0; i < 4; i++)
        rep.report(rep.ctx, &evs[i]);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    bh_socket_reporter_close(&rep);
    uint8_t rec[3 * BH_TT_RECORD];
    struct timeval tv = {(time_t)TEST_HANG_S, 0}; /* the close's EOF ends the read */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n = recv(fd, rec, sizeof(rec), MSG_WAITALL);
    assert_int_equal(n, 2 * BH_TT_RECORD);
    assert_int_equal(rec[0], BH_TT_ALLOC);
    assert_int_equal(bh_get32(rec + 4), 3); /* device_id */
    assert_int_equal(rec[16], BH_MEM_L1);   /* buffer_type */
    assert_int_equal(bh_get64(rec + 24), 0x5000);
    assert_int_equal(rec[BH_TT_RECORD], BH_TT_FREE);
    assert_int_equal(bh_get32(rec + BH_TT_RECORD + 4), 3);
    assert_int_equal(bh_get64(rec + BH_TT_RECORD + 24), 0x5000);
    close(fd);
    close(lfd);
}

static int tt_up[2], tt_down[2]; /* child -> parent, parent -> child */

/* Holds 50 and tells the parent, which stops the server and says so; churns
 * with a tiny ring until events are lost, frees 20 of the 50 and makes 10
 * more, churns on, and tells the parent, which lets the server go on; then
 * waits until a resync has made the server's view right and everything is
 * sent, and frees everything. Each step waits for the one before (no sleeps):
 * the loss and the changes during it happen on any machine. */
static void tt_client_through_a_loss(void) {
    bh_reporter rep;
    bh_socket_options opt = {
        .flags = BH_SOCKET_COMPAT_TT, .queue_capacity = 64, .max_block_us = 0, .send_timeout_ms = 100};
    if (bh_socket_reporter_open(paths.compat, &opt, &rep) != BH_OK)
        _exit(40);
    bh_registry *reg = registry_on(&rep);
    bh_handle h[60];
    memset(h, 0, sizeof(h));
    hold(reg, h, 50, 1u << 20);
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(41);
    char c;
    if (write(tt_up[1], "r", 1) != 1 || read(tt_down[0], &c, 1) != 1) /* the server is stopped now */
        _exit(42);
    bh_reporter_stats rs = {0};
    uint64_t i = 0;
    for (; rs.dropped == 0; i++) { /* bounded by the alarm */
        (void)pair(reg, 0x10000 + (i % 512) * 64);
        bh_socket_reporter_stats(&rep, &rs);
    }
    drop_all(reg, h, 20);
    memset(h, 0, 20 * sizeof(h[0]));
    hold(reg, h + 50, 10, 1u << 28);
    for (uint64_t end = i + 2000; i < end; i++)
        (void)pair(reg, 0x10000 + (i % 512) * 64);
    if (write(tt_up[1], "l", 1) != 1) /* lost events: the parent lets the server go on */
        _exit(45);
    while (bh_socket_reporter_flush(&rep, 100) != BH_OK || rs.resyncs == 0) { /* bounded by the alarm */
        bh_socket_reporter_stats(&rep, &rs);
        test_sleep_ms(10);
    }
    if (rs.dropped == 0 || rs.resyncs == 0)
        _exit(43); /* the loss this test is about did not happen */
    drop_all(reg, h, 60);
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK || bh_registry_destroy(reg) != BH_OK)
        _exit(44);
    bh_socket_reporter_close(&rep);
}

static void a_tt_server_sees_no_duplicate_unknown_free_or_false_leak_after_a_loss(void **state) {
    (void)state;
    const char *opts[] = {"--compat-tt", "--compat-socket", paths.compat, ONLY_EXITS_ARE_GONE, NULL};
    serve(opts, paths.compat);
    assert_int_equal(pipe(tt_up), 0);
    assert_int_equal(pipe(tt_down), 0);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        alarm(CHILD_HANG_S);
        tt_client_through_a_loss();
        _exit(0);
    }
    close(tt_up[1]); /* a child that dies early makes the reads below return 0 */
    close(tt_down[0]);
    char r = 0, l = 0;
    ssize_t got = read(tt_up[0], &r, 1);
    if (got == 1) {
        kill(server, SIGSTOP);
        got = write(tt_down[1], "s", 1) == 1 ? read(tt_up[0], &l, 1) : 0;
        kill(server, SIGCONT);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(got, 1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    wait_gone(1); /* what the server still holds is a leak now */
    uint64_t dup = stat_of("totals", "duplicate_allocs"), unknown = stat_of("totals", "unknown_frees"),
             leaks = stat_of("totals", "leaks");
    print_message("TT after a loss: %llu duplicate ALLOCs, %llu unknown FREEs, %llu leaks\n",
                  (unsigned long long)dup, (unsigned long long)unknown, (unsigned long long)leaks);
    assert_int_equal(dup, 0);
    assert_int_equal(unknown, 0);
    assert_int_equal(leaks, 0);
    assert_int_equal(stat_of("totals", "live"), 0);
    close(tt_up[0]);
    close(tt_down[1]);
}

/* ------------------------------------------------------------ the environment */

static void tracked_by_environment_without_a_server(void) {
    for (int i = 0; i < 2; i++) {
        bh_registry *reg;
        if (bh_registry_create(NULL, &reg) != BH_OK)
            _exit(50);
        (void)pair(reg, 0x1000);
        if (bh_registry_destroy(reg) != BH_OK)
            _exit(51);
    }
}

static void an_unreachable_server_named_by_the_environment_is_said_once(void **state) {
    (void)state;
    char err[160], out[160], none[160];
    snprintf(err, sizeof(err), "%s/stderr", paths.dir);
    snprintf(out, sizeof(out), "%s/stdout", paths.dir);
    snprintf(none, sizeof(none), "%s/nobody.sock", paths.dir);
    int saved = dup(1);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1); /* the child's stdout: must stay empty */
    close(fd);
    setenv("BH_TRACK_SOCKET", none, 1);
    int rc = in_child(tracked_by_environment_without_a_server, err);
    unsetenv("BH_TRACK_SOCKET");
    int said = lines_with(err, "BH_TRACK_SOCKET=");
    setenv("TT_ALLOC_TRACKING_ENABLED", "1", 1);
    setenv("BH_TT_SOCKET", none, 1);
    int rc_tt = in_child(tracked_by_environment_without_a_server, err);
    unsetenv("TT_ALLOC_TRACKING_ENABLED");
    unsetenv("BH_TT_SOCKET");
    dup2(saved, 1);
    close(saved);
    assert_int_equal(rc, 0);
    assert_int_equal(said, 1); /* two registries, one line */
    assert_int_equal(rc_tt, 0);
    assert_int_equal(lines_with(err, "TT_ALLOC_TRACKING_ENABLED="), 1);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(st.st_size, 0);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_reporter PATH-TO-bh-trackd [slow|fast [basic|hostile]]\n");
        return 2;
    }
    trackd = argv[1];
    slack = test_time_slack(argc > 2 ? argv[2] : NULL);
    signal(SIGPIPE, SIG_IGN);
    /* hostile: the attacks of the hardening review (a CTest entry of their
     * own, label hostile); basic: the rest. No group: all. */
    const char *group = argc > 3 ? argv[3] : "all";
    const struct CMUnitTest basic[] = {
        cmocka_unit_test_setup_teardown(a_private_directory_is_one_of_ours_with_mode_0700, setup, teardown),
        cmocka_unit_test_setup_teardown(the_per_user_directory_is_made_private_and_a_planted_one_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(the_default_socket_is_in_xdg_runtime_dir_when_that_is_private, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(tt_records_carry_the_device_and_the_memory_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(an_unreachable_server_named_by_the_environment_is_said_once, setup,
                                        teardown),
    };
    const struct CMUnitTest hostile[] = {
        cmocka_unit_test_setup_teardown(a_server_of_another_user_gets_nothing_and_is_named_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(forked_children_keep_using_the_library, setup, teardown),
        cmocka_unit_test_setup_teardown(the_application_thread_stays_fast_while_resyncs_happen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(close_is_bounded_by_the_flush_timeout_against_a_slow_server, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_refused_process_backs_off_and_leaves_no_false_leaks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_tt_server_sees_no_duplicate_unknown_free_or_false_leak_after_a_loss,
                                        setup, teardown),
    };
    int failed = 0;
    if (strcmp(group, "hostile") != 0)
        failed += cmocka_run_group_tests_name("reporter", basic, NULL, NULL);
    if (strcmp(group, "basic") != 0)
        failed += cmocka_run_group_tests_name("reporter hostile", hostile, NULL, NULL);
    return failed;
}
