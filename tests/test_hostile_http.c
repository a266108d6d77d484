/*
 * test_hostile_http.c - attacks through bh-trackd's --http (round 3): any
 * local user reaches it, so the HTTP attackers run as user nobody (when the
 * test runs as root) against a daemon of the test's user, and each check is
 * what the attack does to the socket protocol's owner: its stats latency
 * against a control measured in the same run, the server's RSS and CPU
 * time, descriptors, bytes.
 *
 * usage: test_hostile_http PATH-TO-bh-trackd
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/hostile.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;
static pid_t srv; /* the server of the running test */

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-hostile-http");
    assert_int_equal(chmod(paths.dir, 0755), 0); /* nobody's copy of nothing: only sockets here */
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* ------------------------------------------------------------ attackers */

/* The loopback sources an attacker spreads its connections over (the
 * per-address cap is half the total). */
static const char *source(int i) {
    static const char *const src[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3"};
    return src[i % 3];
}

static int ready_pipe[2];
static atomic_ullong *attacker_answers; /* answers the attacker has read (shared with it) */

/* In a forked child: become nobody (if root), open n keep-alive connections
 * to port, say so on ready_pipe, then send what request() gives on each and
 * read (read_answers) or not, until killed. */
static void attacker(unsigned port, int n, const char *path, int read_answers) {
    if (geteuid() == 0)
        hs_become_nobody();
    int fds[64];
    char req[512];
    int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    int opened = 0;
    for (int i = 0; i < n && i < 64; i++) {
        fds[opened] = hs_http_connect(port, source(i), read_answers ? 0 : 4096);
        if (fds[opened] >= 0)
            opened++;
    }
    for (int i = 0; i < opened; i++) {
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        (void)send(fds[i], req, (size_t)len, MSG_NOSIGNAL);
    }
    char c = (char)opened;
    (void)write(ready_pipe[1], &c, 1);
    static char sink[1 << 16];
    for (;;) { /* a new request as soon as an answer arrives: the queue never empties */
        struct pollfd p[64];
        for (int i = 0; i < opened; i++)
            p[i] = (struct pollfd){fds[i], read_answers ? POLLIN : 0, 0};
        if (poll(p, (nfds_t)opened, 1000) <= 0)
            continue;
        for (int i = 0; i < opened; i++)
            if (p[i].revents & POLLIN) {
                ssize_t r = recv(fds[i], sink, sizeof(sink), MSG_DONTWAIT);
                if (r > 0 && memmem(sink, (size_t)r, "HTTP/1.1 ", 9) != NULL) {
                    atomic_fetch_add(attacker_answers, 1);
                    (void)send(fds[i], req, (size_t)len, MSG_NOSIGNAL);
                }
            }
    }
}

/* Forks an attacker; waits until its connections are open; their number. */
static int start_attacker(unsigned port, int n, const char *path, int read_answers) {
    assert_int_equal(pipe(ready_pipe), 0);
    if (attacker_answers == NULL) {
        attacker_answers =
            mmap(NULL, sizeof(*attacker_answers), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        assert_true(attacker_answers != MAP_FAILED);
    }
    atomic_store(attacker_answers, 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready_pipe[0]);
        attacker(port, n, path, read_answers);
        _exit(0);
    }
    hs_track(pid);
    close(ready_pipe[1]);
    char c = 0;
    struct pollfd p = {ready_pipe[0], POLLIN, 0};
    assert_int_equal(poll(&p, 1, (int)TEST_HANG_MS), 1);
    assert_int_equal(read(ready_pipe[0], &c, 1), 1);
    close(ready_pipe[0]);
    return (unsigned char)c;
}

static unsigned start_http(const char *const *more) {
    const char *extra[16] = {"--http", "127.0.0.1:0", "--grace-ms", "100"};
    int n = 4;
    for (int i = 0; more != NULL && more[i] != NULL && n < 15; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    srv = hs_start(trackd, &paths, extra, 0);
    return hs_http_port(paths.log);
}

#define LIVE 500000u

/* The owner's reporter with LIVE allocations; returns its connection. */
static int owner_holds_live(void) {
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, 0, 0, 0x10000000, 64, LIVE);
    assert_int_equal(hs_wait_total(paths.sock, "live", LIVE, 60), LIVE);
    return fd;
}

/* ------------------------------------------------------------ 1: the loop */

/* 64 keep-alive connections of another user (spread over three loopback
 * sources) ask for the last page of /api/live, over and over: 0.3.1 rendered
 * every ready request in one MHD_run, and the owner's `stats` took seconds
 * (control: milliseconds). One answer is rendered per loop turn now. */
static void http_clients_cannot_stall_the_socket_protocol(void **state) {
    (void)state;
    unsigned port = start_http(NULL);
    int holder = owner_holds_live();
    double control_worst, control = hs_stats_latency(paths.sock, 15, &control_worst);
    char path[96];
    snprintf(path, sizeof(path), "/api/live?offset=%u&limit=10000", LIVE - 10000);
    int conns = start_attacker(port, 64, path, 1);
    /* The attack in full swing: as many answers read as connections, twice
     * over (TEST_HANG_S at most; the figures below are relative to the
     * control). */
    for (double end = test_now_s() + TEST_HANG_S;
         atomic_load(attacker_answers) < 2u * (unsigned)conns && test_now_s() < end;)
        test_sleep_ms(10);
    assert_true(atomic_load(attacker_answers) >= 2u * (unsigned)conns);
    double cpu0 = test_proc_cpu_s(srv), t0 = test_now_s();
    double worst, attacked = hs_stats_latency(paths.sock, 15, &worst);
    double busy = (test_proc_cpu_s(srv) - cpu0) / (test_now_s() - t0);
    print_message("64 HTTP attackers (%d connected) on /api/live's last page, %u live: owner's stats median "
                  "%.4f s (worst %.4f) vs control %.4f s (worst %.4f); server busy %.0f%%\n",
                  conns, LIVE, attacked, worst, control, control_worst, busy * 100);
    assert_true(conns >= 60);
    assert_true(attacked < 10 * control + 0.1);
    close(holder);
}

/* Paging cost: 300 requests for the last 10 rows cost no more than 300 for
 * the first 10 (0.3.1 walked the table slots before the page). */
static void paging_costs_the_same_at_any_offset(void **state) {
    (void)state;
    unsigned port = start_http(NULL);
    int holder = owner_holds_live();
    double cost[2];
    for (int end = 0; end < 2; end++) {
        char path[96];
        snprintf(path, sizeof(path), "/api/live?offset=%u&limit=10", end ? LIVE - 10 : 0);
        int fd = hs_http_connect(port, NULL, 0);
        assert_true(fd >= 0);
        char req[256];
        int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
        double cpu0 = test_proc_cpu_s(srv);
        int answers = 0;
        static char buf[1 << 16];
        for (int i = 0; i < 300; i++) { /* one at a time: each answered before the next */
            hs_send_all(fd, req, (size_t)len);
            for (double until = test_now_s() + TEST_HANG_S; test_now_s() < until;) {
                struct pollfd p = {fd, POLLIN, 0};
                if (poll(&p, 1, 100) <= 0)
                    continue;
                ssize_t r = recv(fd, buf, sizeof(buf) - 1, 0);
                assert_true(r > 0);
                buf[r] = '\0';
                if (strstr(buf, "\"total\":") != NULL) {
                    answers++;
                    break;
                }
            }
        }
        cost[end] = test_proc_cpu_s(srv) - cpu0;
        close(fd);
        assert_int_equal(answers, 300);
    }
    print_message("300 pages of 10 rows, %u live: server CPU %.2f s at offset 0, %.2f s at the end\n", LIVE,
                  cost[0], cost[1]);
    assert_true(cost[1] < 3 * cost[0] + 0.1);
    close(holder);
}

/* ------------------------------------------------------------ 2: answers held by slow readers */

#define HIST_ADDRESS 0x7000000ull

static uint32_t device_base; /* set before test_fork: each child's own devices */

/* A process that allocates HIST_ADDRESS on 4096 devices of its own, then
 * exits: its allocations leak, and the history keeps an entry for each. */
static void one_address_on_4096_devices(void) {
    int fd = hs_reporter(paths.sock);
    enum { N = 4096 };
    static uint8_t buf[N * (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN)];
    size_t n = 0;
    for (uint32_t d = 0; d < N; d++)
        n += bh_wire_event(buf + n, 1, BH_EVENT_ALLOC, device_base + d, HIST_ADDRESS, 64, d + 1);
    hs_send_all(fd, buf, n);
    close(fd);
}

/* /api/history of one address held 3.7 MB here on 0.3.1 (every entry of the
 * bounded history), and 64 connections of another user that never read
 * their answers pinned 64 of them. Now every answer is bounded like
 * /api/stats' (rows past 1 MiB counted in "omitted"), and all unsent
 * answers together by 16 MiB (past it: 503 before rendering). */
static void slow_readers_pin_bounded_memory(void **state) {
    (void)state;
    unsigned port = start_http(NULL);
    for (int i = 0; i < 8; i++) {
        device_base = (uint32_t)i * 4096u;
        pid_t c = test_fork(one_address_on_4096_devices);
        assert_int_equal(test_reap(c), 0);
    }
    assert_true(hs_wait_total(paths.sock, "leaks", 8u * 4096u, 60) == 8u * 4096u);
    char *body = NULL;
    char path[96];
    snprintf(path, sizeof(path), "/api/history?address=%llu", (unsigned long long)HIST_ADDRESS);
    assert_int_equal(hs_http_get(port, "localhost", path, &body), 200);
    size_t one = body != NULL ? strlen(body) : 0;
    uint64_t omitted = hs_num(body, "omitted");
    free(body);
    long rss0 = hs_rss_kb(srv);
    int conns = start_attacker(port, 60, path, 0); /* 4 of the 64 slots left for the owner */
    /* Requests are answered in arrival order: once the owner's own request
     * is answered, every attacker's has been rendered (or refused). */
    int owner = hs_http_get(port, "localhost", "/api/stats", NULL);
    long rss = hs_rss_kb(srv);
    print_message("/api/history of one address: %zu bytes (%llu rows omitted); 60 readers that never read "
                  "(%d connected): server RSS %ld -> %ld kB (+%ld MiB)\n",
                  one, (unsigned long long)omitted, conns, rss0, rss, (rss - rss0) / 1024);
    assert_int_equal(owner, 200);
    assert_true(one <= (1u << 20));
    assert_true(omitted > 0 && omitted != UINT64_MAX);
    assert_true(rss - rss0 < 40 * 1024);
}

/* ------------------------------------------------------------ 3: descriptors */

/* With 128 descriptors, another user's 64 idle HTTP connections took what
 * the owner's connections were promised: its stats failed with "server out
 * of file descriptors" before --max-connections was reached. HTTP
 * connections are reserved for now, and the logged cap holds. */
static void http_connections_cannot_take_the_owners_descriptors(void **state) {
    (void)state;
    const char *extra[] = {"--http", "127.0.0.1:0", NULL};
    srv = hs_start(trackd, &paths, extra, 128);
    unsigned port = hs_http_port(paths.log);
    uint64_t cap = hs_logged_cap(paths.log);
    assert_true(cap > 4 && cap < 128);
    int conns = start_attacker(port, 64, "/api/stats", 1);
    /* The owner: reporters up to two under the logged cap, then a query. */
    int fds[128], nfds = 0;
    for (uint64_t i = 0; i + 2 < cap && nfds < 128; i++)
        fds[nfds++] = hs_reporter(paths.sock);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    print_message("128 descriptors, %d HTTP connections of another user: owner holds %d of %llu connections, "
                  "its stats %s\n",
                  conns, nfds, (unsigned long long)cap, j != NULL ? "answered" : "refused");
    assert_non_null(j);
    assert_true(hs_num(j, "open_connections") >= (uint64_t)nfds);
    free(j);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* ------------------------------------------------------------ 4: Host */

/* After DNS rebinding a web page's requests reach 127.0.0.1 with its own
 * name in Host: 0.3.1 served them. Loopback names and addresses, and names
 * given with --http-allow-host, are served; any other Host is 421. */
static void only_loopback_and_allowed_hosts_are_served(void **state) {
    (void)state;
    const char *more[] = {"--http-allow-host", "tracker.example", NULL};
    unsigned port = start_http(more);
    static const struct {
        const char *host;
        int status;
    } cases[] = {
        {"rebound.attacker.example", 421},
        {"rebound.attacker.example:80", 421},
        {"localhost.attacker.example", 421},
        {"10.1.2.3", 421},
        {"localhost", 200},
        {"LOCALHOST:9464", 200},
        {"127.0.0.1", 200},
        {"127.0.0.2:80", 200},
        {"[::1]:9464", 200},
        {"tracker.example:9464", 200},
        {NULL, 200}, /* HTTP/1.0 without Host: nothing to rebind */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = NULL;
        int st = hs_http_get(port, cases[i].host, "/api/stats", &b);
        print_message("Host %s: %d\n", cases[i].host != NULL ? cases[i].host : "(none)", st);
        assert_int_equal(st, cases[i].status);
        if (st == 421)
            assert_null(strstr(b != NULL ? b : "", "\"totals\""));
        free(b);
    }
}

/* ------------------------------------------------------------ 5: the timeline's first come */

static void many_small_domains(void) {
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(1000, 0), 1100, 0x1000000, 64, 1100);
    for (;;) /* holds them until killed */
        pause();
}

/* 1,100 domains of 64 bytes each filled the 1,024 series of the timeline
 * first: 0.3.1 gave a later device holding 1 MiB no chart and no tile. The
 * series with the fewest bytes now gives way. */
static void a_late_device_with_memory_gets_its_series(void **state) {
    (void)state;
    const char *more[] = {"--max-groups-per-client", "2000", NULL};
    unsigned port = start_http(more);
    hs_track(test_fork(many_small_domains));
    assert_int_equal(hs_wait_total(paths.sock, "live", 1100, 30), 1100);
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(7777, BH_MEM_DRAM), 0, 0x9000000, 1u << 20, 1);
    assert_int_equal(hs_wait_total(paths.sock, "live", 1101, 30), 1101);
    int found = 0;
    size_t series = 0;
    for (double end = test_now_s() + TEST_HANG_S; !found && test_now_s() < end; test_sleep_ms(200)) {
        char *b = NULL;
        assert_int_equal(hs_http_get(port, "localhost", "/api/timeline", &b), 200);
        found = b != NULL && strstr(b, "{\"device\":7777,") != NULL;
        series = 0;
        for (const char *p = b; p != NULL && (p = strstr(p, "{\"device\":")) != NULL; p++)
            series++;
        free(b);
    }
    print_message("1100 small domains first, then 1 MiB on device 7777: %s (%zu series)\n",
                  found ? "charted" : "not charted", series);
    assert_true(found);
    assert_true(series <= 1024);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_hostile_http PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(http_clients_cannot_stall_the_socket_protocol),
        T(paging_costs_the_same_at_any_offset),
        T(slow_readers_pin_bounded_memory),
        T(http_connections_cannot_take_the_owners_descriptors),
        T(only_loopback_and_allowed_hosts_are_served),
        T(a_late_device_with_memory_gets_its_series),
    };
    return cmocka_run_group_tests_name("hostile_http", tests, NULL, NULL);
}
