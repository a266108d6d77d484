/*
 * hostile.c - the shared helpers of the attack tests (hostile.h).
 *
 * Owns: what hostile.h declares. Must never: be linked into the library or a
 * tool, or loosen a test's checks.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <cmocka.h>

#include "proc.h"
#include "support/hostile.h"
#include "support/rings.h"
#include "wire.h"

static pid_t tracked[128];
static int ntracked;

void hs_track(pid_t pid) {
    if (ntracked < (int)(sizeof(tracked) / sizeof(tracked[0])))
        tracked[ntracked++] = pid;
}

void hs_teardown(void) {
    while (ntracked > 0)
        test_kill(tracked[--ntracked]);
    test_servers_end();
}

pid_t hs_start(const char *trackd, const test_paths *p, const char *const *extra, unsigned long nofile) {
    return hs_start_nofile(trackd, p, extra, nofile != 0 ? &(struct rlimit){nofile, nofile} : NULL);
}

pid_t hs_start_nofile(const char *trackd, const test_paths *p, const char *const *extra,
                      const struct rlimit *nofile) {
    const char *base[] = {trackd, "--log", p->log, "--socket", p->sock, NULL};
    pid_t pid = test_server_spawn_nofile(base, extra, 1, nofile);
    assert_true(pid > 0);
    test_wait_accepting(p->sock);
    return pid;
}

/* The text after tag in log (its first cap - 1 bytes) now, or NULL. */
static const char *log_find(const char *log, const char *tag, char *buf, size_t cap) {
    FILE *f = fopen(log, "r");
    size_t n = f != NULL ? fread(buf, 1, cap - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    const char *at = strstr(buf, tag);
    return at != NULL ? at + strlen(tag) : NULL;
}

/* The text after tag in log, polled for TEST_HANG_S at most; NULL if it
 * never came. */
static const char *logged_after(const char *log, const char *tag, char *buf, size_t cap) {
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(10)) {
        const char *at = log_find(log, tag, buf, cap);
        if (at != NULL)
            return at;
    }
    return NULL;
}

int hs_log_has(const char *log, const char *tag) {
    static char buf[1 << 20];
    return log_find(log, tag, buf, sizeof(buf)) != NULL;
}

unsigned hs_http_port(const char *log) {
    static char buf[1 << 16];
    const char *at = logged_after(log, "serving http on http://127.0.0.1:", buf, sizeof(buf));
    assert_non_null(at);
    return (unsigned)strtoul(at, NULL, 10);
}

uint64_t hs_logged_cap(const char *log) {
    static char buf[1 << 16];
    const char *at = logged_after(log, "INFO bh-trackd: at most ", buf, sizeof(buf));
    return at != NULL ? strtoull(at, NULL, 10) : 0;
}

long hs_rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL && sscanf(line, "VmRSS: %ld kB", &kb) != 1) {
    }
    if (f != NULL)
        fclose(f);
    return kb;
}

void hs_send_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
        if (r <= 0)
            return; /* closed by the server: the caller checks what it wanted */
        b += r;
        n -= (size_t)r;
    }
}

size_t hs_read_n(int fd, uint8_t *buf, size_t n) {
    size_t got = 0;
    for (double end = test_now_s() + TEST_HANG_S; got < n && test_now_s() < end;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

pid_t hs_start_compat(const char *trackd, const test_paths *p, const char *const *more) {
    const char *extra[24] = {"--compat-tt", "--compat-socket", p->compat, "--grace-ms", "100"};
    int n = 5;
    for (int i = 0; more != NULL && more[i] != NULL && n < 23; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    pid_t pid = hs_start(trackd, p, extra, 0);
    test_wait_accepting(p->compat);
    return pid;
}

int hs_tt_connect(const char *compat) {
    int fd = bh_unix_connect(compat);
    assert_true(fd >= 0);
    return fd;
}

uint64_t hs_stat(const char *sock, const char *key) {
    char *j = hs_query(sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    uint64_t v = hs_num(j, key);
    free(j);
    return v;
}

uint64_t hs_tt_dram(int fd, int32_t device) {
    uint8_t q[BH_TT_RECORD], a[BH_TT_RECORD];
    bh_tt_record(q, BH_TT_QUERY, device, 0, 0, 0, 0, 0);
    hs_send_all(fd, q, sizeof(q));
    assert_int_equal(hs_read_n(fd, a, sizeof(a)), sizeof(a));
    return bh_get64(a + 40);
}

size_t hs_hello(uint8_t *p, int control) {
    return bh_wire_hello(p, (uint32_t)getpid(), control ? BH_WIRE_HELLO_CONTROL : 0, "evil", 4, 0);
}

int hs_connect(const char *sock) {
    int fd = bh_unix_connect(sock);
    struct timeval tv = {(time_t)TEST_HANG_S, 0}; /* no step may hang a test */
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    return fd;
}

int hs_reporter(const char *sock) {
    int fd = hs_connect(sock);
    assert_true(fd >= 0);
    uint8_t h[64];
    hs_send_all(fd, h, hs_hello(h, 0));
    return fd;
}

void hs_events(int fd, uint32_t stream, uint8_t kind, uint32_t device, uint32_t spread, uint64_t base,
               uint64_t size, size_t count) {
    enum { BATCH = 2048 };
    static uint8_t buf[BATCH * (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN)];
    for (size_t i = 0; i < count;) {
        size_t n = 0;
        for (size_t k = 0; k < BATCH && i < count; k++, i++)
            n += bh_wire_event(buf + n, stream, kind, device + (spread ? (uint32_t)(i % spread) : 0),
                               base + i * 64, size, i + 1);
        hs_send_all(fd, buf, n);
    }
}

char *hs_query(const char *sock, uint16_t what, double secs, double *took) {
    double t0 = test_now_s();
    int fd = hs_connect(sock);
    if (fd < 0)
        return NULL;
    uint8_t req[64];
    size_t n = hs_hello(req, 1);
    n += bh_wire_header(req + n, BH_WIRE_QUERY, 4);
    bh_put16(req + n, what);
    bh_put16(req + n + 2, 1);
    hs_send_all(fd, req, n + 4);
    size_t cap = BH_WIRE_HEADER + BH_WIRE_MAX_PAYLOAD, got = 0;
    uint8_t *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (double end = t0 + secs; test_now_s() < end && got < cap;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got >= BH_WIRE_HEADER && got == BH_WIRE_HEADER + bh_get32(buf + 8))
            break;
    }
    close(fd);
    if (took != NULL)
        *took = test_now_s() - t0;
    if (got < BH_WIRE_HEADER || bh_get16(buf + 6) != BH_WIRE_REPLY ||
        got != BH_WIRE_HEADER + bh_get32(buf + 8)) {
        free(buf);
        return NULL;
    }
    memmove(buf, buf + BH_WIRE_HEADER, got - BH_WIRE_HEADER);
    buf[got - BH_WIRE_HEADER] = '\0';
    return (char *)buf;
}

uint64_t hs_num(const char *json, const char *key) {
    char pat[96];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = json != NULL ? strstr(json, pat) : NULL;
    return p != NULL ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

uint64_t hs_wait_total(const char *sock, const char *key, uint64_t want, double secs) {
    uint64_t v = UINT64_MAX;
    test_progress pr;
    test_progress_start(&pr, secs);
    for (;;) {
        char *j = hs_query(sock, 1, TEST_HANG_S, NULL);
        v = hs_num(j, key); /* totals come first; UINT64_MAX without an answer */
        free(j);
        if ((v != UINT64_MAX && v >= want) || !test_progress_going(&pr, v))
            break;
        test_sleep_ms(20);
    }
    return v;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double hs_stats_latency(const char *sock, int n, double *worst) {
    double t[64];
    if (n > 64)
        n = 64;
    for (int i = 0; i < n; i++) {
        char *j = hs_query(sock, 1, TEST_HANG_S, &t[i]);
        if (j == NULL)
            t[i] = TEST_HANG_S; /* no answer counts as the bound */
        free(j);
    }
    qsort(t, (size_t)n, sizeof(t[0]), by_value);
    if (worst != NULL)
        *worst = t[n - 1];
    return t[n / 2];
}

int hs_http_connect(unsigned port, const char *src, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (src != NULL) {
        inet_pton(AF_INET, src, &sa.sin_addr);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            close(fd);
            return -1;
        }
    }
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int hs_http_get(unsigned port, const char *host, const char *path, char **body) {
    if (body != NULL)
        *body = NULL;
    int fd = hs_http_connect(port, NULL, 0);
    if (fd < 0)
        return -1;
    char req[512];
    int n = host != NULL ? snprintf(req, sizeof(req),
                                    "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
                         : snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
    hs_send_all(fd, req, (size_t)n);
    size_t cap = 4u << 20, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end && len < cap;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + len, cap - len, MSG_DONTWAIT);
        if (r <= 0)
            break; /* Connection: close: the answer ends at EOF */
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int status = -1;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    char *start = strstr(buf, "\r\n\r\n");
    if (body != NULL && start != NULL) {
        memmove(buf, start + 4, len - (size_t)(start + 4 - buf) + 1);
        *body = buf;
    } else {
        free(buf);
    }
    return status;
}

void hs_become_nobody(void) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
        _exit(99);
}

int hs_lingering_socket(int *listener, int linger_s) {
    int small = 4096;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 4), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static char junk[1 << 16];
    size_t sent = 0;
    for (ssize_t n; (n = send(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL)) > 0;)
        sent += (size_t)n;
    assert_true(sent > 0);
    struct linger lg = {1, linger_s};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    *listener = l;
    return fd;
}

int hs_closed_in_time(int w) {
    struct pollfd p = {w, 0, 0};
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end;)
        if (poll(&p, 1, 100) > 0 && (p.revents & POLLERR))
            return 1;
    return 0;
}

int hs_passed_pipe_closed(const char *sock) {
    int pipe_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    int fd = hs_reporter(sock);
    uint8_t f[BH_WIRE_HEADER];
    tr_send_fds(fd, f, bh_wire_header(f, BH_WIRE_DRAIN, 0), &pipe_fds[0], 1);
    close(pipe_fds[0]);
    int closed = hs_closed_in_time(pipe_fds[1]);
    close(pipe_fds[1]);
    close(fd);
    return closed;
}
