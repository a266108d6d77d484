/*
 * observe.c - the shared part of the observability tests (observe.h).
 *
 * Owns: what observe.h declares. Must never: be linked into the library or
 * a tool, or loosen a test's checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "proc.h"
#include "support/observe.h"

const char *ob_trackd;
test_paths ob_paths;
pid_t ob_server, ob_children[8];
int ob_nchildren;
unsigned ob_port;

char *ob_slurp(const char *path) {
    FILE *f = fopen(path, "r");
    char *p = calloc(1, 1);
    size_t n = 0;
    if (f == NULL)
        return p;
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        p = realloc(p, n + r + 1);
        memcpy(p + n, chunk, r);
        n += r;
        p[n] = '\0';
    }
    fclose(f);
    return p;
}

int ob_tcp_connect(unsigned p) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {(time_t)TEST_HANG_S, 0}; /* the server's close ends a read: a hang guard */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

int ob_http_request(unsigned p, const char *method, const char *path, char **body) {
    int fd = ob_tcp_connect(p);
    char req[1024];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while ((r = recv(fd, buf + len, cap - len, 0)) > 0) {
        len += (size_t)r;
        if (len == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    char *sep = strstr(buf, "\r\n\r\n");
    if (body != NULL)
        *body = strdup(sep != NULL ? sep + 4 : "");
    free(buf);
    return status;
}

int ob_http_get(unsigned p, const char *path, char **body) { return ob_http_request(p, "GET", path, body); }

void ob_start(const char *const *extra) {
    const char *base[] = {ob_trackd, "--socket",    ob_paths.sock,     "--summary",     ob_paths.summary,
                          "--log",   ob_paths.log,  "--http",          "127.0.0.1:0",   "--grace-ms",
                          "200",     "--compat-tt", "--compat-socket", ob_paths.compat, NULL};
    ob_server = test_server_spawn(base, extra, 0);
    ob_port = 0;
    for (double end = test_now_s() + TEST_HANG_S;
         test_now_s() < end && (ob_port == 0 || !bh_trackd_reachable(ob_paths.compat));) {
        char *log = ob_slurp(ob_paths.log);
        const char *p = strstr(log, "serving http on http://127.0.0.1:");
        if (p != NULL)
            ob_port = (unsigned)strtoul(p + strlen("serving http on http://127.0.0.1:"), NULL, 10);
        free(log);
        test_sleep_ms(10);
    }
    assert_true(ob_port != 0);
    assert_true(bh_trackd_reachable(ob_paths.sock));
}

void ob_report(ob_client *c, bh_event_kind kind, uint32_t domain, uint64_t address, uint64_t size) {
    bh_event e = {kind, domain, address, size, ++c->seq};
    c->rep.report(c->rep.ctx, &e);
}

void ob_client_open(ob_client *c, const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0); /* the name HELLO carries */
    memset(c, 0, sizeof(*c));
    if (bh_socket_reporter_open(ob_paths.sock, NULL, &c->rep) != BH_OK)
        _exit(20);
}

uint64_t ob_holder_dram(uint32_t d) { return (uint64_t)(d + 1) * 4096u; }

void ob_holder(void) {
    ob_client c;
    ob_client_open(&c, "obs-holder");
    for (uint32_t d = 0; d < OB_DEVICES; d++) {
        ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d, BH_MEM_DRAM), 0x10000000u + d * 0x100000u,
                  ob_holder_dram(d));
        ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d, BH_MEM_L1), 0x2000u + d * 0x400u, OB_HOLDER_L1);
    }
    bh_socket_reporter_flush(&c.rep, TEST_HANG_MS);
}

/* Leaks two L1 buffers on device 2, then exits. */
static void leaker(void) {
    ob_client c;
    ob_client_open(&c, "obs-leaker");
    ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(2, BH_MEM_L1), 0xabc000, 8192);
    ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(2, BH_MEM_L1), 0xabe000, 4096);
    bh_socket_reporter_close(&c.rep);
}

/* The original bug: one allocation, freed by each of three aliases. */
static void overfreer(void) {
    ob_client c;
    ob_client_open(&c, "obs-overfree");
    ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0xdead0000u, 65536);
    for (int i = 0; i < 3; i++)
        ob_report(&c, BH_EVENT_FREE, BH_DOMAIN(1, BH_MEM_DRAM), 0xdead0000u, 65536);
    bh_socket_reporter_close(&c.rep);
}

void ob_run_client(void (*fn)(void), int keep) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int fd = 3; fd < 1024; fd++) /* the parent's test connections stay the parent's */
            if (fd != p[1])
                close(fd);
        char ok = 1;
        if (keep == OB_BACKGROUND && write(p[1], &ok, 1) != 1)
            _exit(1);
        fn();
        if (keep != OB_BACKGROUND && write(p[1], &ok, 1) != 1)
            _exit(1);
        if (keep)
            pause();
        _exit(0);
    }
    close(p[1]);
    char ok = 0;
    assert_int_equal(read(p[0], &ok, 1), 1);
    close(p[0]);
    if (keep && ob_nchildren < 8)
        ob_children[ob_nchildren++] = pid;
    else
        waitpid(pid, NULL, 0);
}

uint64_t ob_holder_total(void) {
    uint64_t t = 0;
    for (uint32_t d = 0; d < OB_DEVICES; d++)
        t += ob_holder_dram(d) + OB_HOLDER_L1;
    return t;
}

int ob_http_await(const char *path, const char *want, char **body) {
    int status = 0;
    *body = NULL;
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(20)) {
        free(*body);
        status = ob_http_get(ob_port, path, body);
        if (status == 200 && strstr(*body, want) != NULL)
            break;
    }
    return status;
}

int ob_stats_contain(const char *want) {
    char *b;
    (void)ob_http_await("/api/stats", want, &b);
    int found = b != NULL && strstr(b, want) != NULL;
    free(b);
    return found;
}

const char *ob_api_stats(void) {
    static char buf[1 << 17];
    char *b = NULL;
    assert_int_equal(ob_http_get(ob_port, "/api/stats", &b), 200);
    snprintf(buf, sizeof(buf), "%s", b);
    free(b);
    return buf;
}

void ob_scenario(void) {
    ob_run_client(ob_holder, 1);
    ob_run_client(leaker, 0);
    ob_run_client(overfreer, 0);
    char want[128];
    snprintf(want, sizeof(want), "\"live_bytes\":%" PRIu64, ob_holder_total());
    assert_true(ob_stats_contain(want));
    assert_true(ob_stats_contain("\"leaks\":2,"));
}

int ob_setup(void **state) {
    (void)state;
    test_paths_make(&ob_paths, "bh-obs-test");
    return 0;
}

int ob_teardown(void **state) {
    (void)state;
    for (int i = 0; i < ob_nchildren; i++)
        test_kill(ob_children[i]);
    ob_nchildren = 0;
    test_servers_end();
    ob_server = 0;
    return test_paths_remove(&ob_paths);
}
