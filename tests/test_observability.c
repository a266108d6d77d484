/*
 * test_observability.c - bh-trackd's HTTP side against real tools: promtool,
 * a Prometheus server, headless Chromium, and hostile HTTP clients.
 *
 * usage: test_observability PATH-TO-bh-trackd [unit|tools [OUTDIR]]
 *   unit: the tests that need no external tool (default); tools: promtool,
 *   Prometheus, Chromium. OUTDIR keeps the dashboard screenshot
 *   (dashboard.png), its DOM and the /metrics that promtool checked.
 *
 * Each test starts its own server (Unix sockets in a temporary directory,
 * HTTP on 127.0.0.1 with a port the kernel picks) and real clients: forked
 * processes reporting through the library's socket reporter. A test whose
 * external tool is not installed is skipped with a message naming the
 * package (tools/dev.sh installs them for the observability stage).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdatomic.h>
#include <errno.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/server.h"
#include "trackd.h"
#include "wire.h"

#define DEVICES 64u
#define BH_TT_DEVICE_INFO_QUERY_FOR_TEST 6 /* answered with type 7 */ /* more than the TT server's 8 */

static const char *trackd, *outdir;
static test_paths paths;
static pid_t server, children[8];
static int nchildren;
static unsigned port;

/* ------------------------------------------------------------ helpers */

static int have(const char *prog) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* A whole file into a malloc'd string ("" if absent). */
static char *slurp(const char *path) {
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

static int tcp_connect(unsigned p) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {(time_t)TEST_HANG_S, 0}; /* the server's close ends a read: a hang guard */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* GET path from 127.0.0.1:p (HTTP/1.0, so the server closes). Returns the
 * status; *body (malloc'd) gets what follows the headers. */
static int http_request(unsigned p, const char *method, const char *path, char **body) {
    int fd = tcp_connect(p);
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

static int http_get(unsigned p, const char *path, char **body) { return http_request(p, "GET", path, body); }

/* A free loopback TCP port (for Prometheus's own listener). */
static unsigned free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Copies the fenced block of docs/observability.md that starts with the line
 * first into path; 0 if there is none. */
static int doc_block(const char *first, const char *path) {
    char *doc = slurp(BH_SOURCE_DIR "/docs/observability.md");
    char *a = strstr(doc, first), *b = a != NULL ? strstr(a, "```") : NULL;
    FILE *f = fopen(path, "w");
    int ok = a != NULL && b != NULL && f != NULL && fwrite(a, 1, (size_t)(b - a), f) == (size_t)(b - a);
    if (f != NULL)
        fclose(f);
    free(doc);
    return ok;
}

/* Starts bh-trackd with --http 127.0.0.1:0 (and extra arguments); reads the
 * bound port from its log. */
static void start_server(const char *const *extra) {
    const char *base[] = {trackd,  "--socket",    paths.sock,        "--summary",   paths.summary,
                          "--log", paths.log,     "--http",          "127.0.0.1:0", "--grace-ms",
                          "200",   "--compat-tt", "--compat-socket", paths.compat,  NULL};
    server = test_server_spawn(base, extra, 0);
    port = 0;
    for (double end = test_now_s() + TEST_HANG_S;
         test_now_s() < end && (port == 0 || !bh_trackd_reachable(paths.compat));) {
        char *log = slurp(paths.log);
        const char *p = strstr(log, "serving http on http://127.0.0.1:");
        if (p != NULL)
            port = (unsigned)strtoul(p + strlen("serving http on http://127.0.0.1:"), NULL, 10);
        free(log);
        test_sleep_ms(10);
    }
    assert_true(port != 0);
    assert_true(bh_trackd_reachable(paths.sock));
}

/* ------------------------------------------------------------ clients */

/* Reports through the library's socket reporter, as a registry would. */
typedef struct client_ctx {
    bh_reporter rep;
    uint64_t seq;
} client_ctx;

static void report(client_ctx *c, bh_event_kind kind, uint32_t domain, uint64_t address, uint64_t size) {
    bh_event e = {kind, domain, address, size, ++c->seq};
    c->rep.report(c->rep.ctx, &e);
}

static void client_open(client_ctx *c, const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0); /* the name HELLO carries */
    memset(c, 0, sizeof(*c));
    if (bh_socket_reporter_open(paths.sock, NULL, &c->rep) != BH_OK)
        _exit(20);
}

/* Live bytes the holder keeps on device d: (d+1) pages of DRAM and 1 KiB of L1. */
static uint64_t holder_dram(uint32_t d) { return (uint64_t)(d + 1) * 4096u; }
#define HOLDER_L1 1024u

static void holder(void) {
    client_ctx c;
    client_open(&c, "obs-holder");
    for (uint32_t d = 0; d < DEVICES; d++) {
        report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d, BH_MEM_DRAM), 0x10000000u + d * 0x100000u, holder_dram(d));
        report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d, BH_MEM_L1), 0x2000u + d * 0x400u, HOLDER_L1);
    }
    bh_socket_reporter_flush(&c.rep, TEST_HANG_MS);
}

/* Leaks two L1 buffers on device 2, then exits. */
static void leaker(void) {
    client_ctx c;
    client_open(&c, "obs-leaker");
    report(&c, BH_EVENT_ALLOC, BH_DOMAIN(2, BH_MEM_L1), 0xabc000, 8192);
    report(&c, BH_EVENT_ALLOC, BH_DOMAIN(2, BH_MEM_L1), 0xabe000, 4096);
    bh_socket_reporter_close(&c.rep);
}

/* The original bug: one allocation, freed by each of three aliases. */
static void overfreer(void) {
    client_ctx c;
    client_open(&c, "obs-overfree");
    report(&c, BH_EVENT_ALLOC, BH_DOMAIN(1, BH_MEM_DRAM), 0xdead0000u, 65536);
    for (int i = 0; i < 3; i++)
        report(&c, BH_EVENT_FREE, BH_DOMAIN(1, BH_MEM_DRAM), 0xdead0000u, 65536);
    bh_socket_reporter_close(&c.rep);
}

/* A working client for the dashboard's picture: for three seconds it
 * allocates ever larger L1_SMALL and TRACE buffers on devices 0..7 and frees
 * those six steps old, so the chart climbs (no DRAM: the test reads DRAM
 * figures). */
static void streamer(void) {
    client_ctx c;
    client_open(&c, "obs-streamer");
    for (uint64_t step = 0; step < 15; step++) {
        for (uint32_t d = 0; d < 8; d++) {
            uint32_t kind = d % 2 ? BH_MEM_TRACE : BH_MEM_L1_SMALL;
            report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d, kind), 0x40000000u + step * 0x100000u + d * 0x1000u,
                   (step + 1) * (d + 1) * 4096);
            if (step >= 6)
                report(&c, BH_EVENT_FREE, BH_DOMAIN(d, kind),
                       0x40000000u + (step - 6) * 0x100000u + d * 0x1000u, 0);
        }
        bh_socket_reporter_flush(&c.rep, 1000);
        test_sleep_ms(200);
    }
}

/* A client that never stops: 4 KiB more of L1_SMALL on device 40 every 2 ms
 * (20000 at most), so the server's live bytes move between any two samples
 * of the timeline (no DRAM, not device 63: the test reads those). */
static void grower(void) {
    client_ctx c;
    client_open(&c, "obs-grower");
    for (uint64_t i = 0; i < 20000; i++) {
        report(&c, BH_EVENT_ALLOC, BH_DOMAIN(40, BH_MEM_L1_SMALL), 0x80000000u + i * 0x1000u, 4096);
        test_sleep_ms(2);
    }
}

#define BACKGROUND 2 /* run_client: answers at once, runs fn, stays until teardown */

/* Runs fn in a child; returns once fn is done. keep: the child then stays
 * alive (holding what it reported) until teardown; BACKGROUND: returns
 * before fn starts. */
static void run_client(void (*fn)(void), int keep) {
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
        if (keep == BACKGROUND && write(p[1], &ok, 1) != 1)
            _exit(1);
        fn();
        if (keep != BACKGROUND && write(p[1], &ok, 1) != 1)
            _exit(1);
        if (keep)
            pause();
        _exit(0);
    }
    close(p[1]);
    char ok = 0;
    assert_int_equal(read(p[0], &ok, 1), 1);
    close(p[0]);
    if (keep && nchildren < 8)
        children[nchildren++] = pid;
    else
        waitpid(pid, NULL, 0);
}

static uint64_t holder_total(void) {
    uint64_t t = 0;
    for (uint32_t d = 0; d < DEVICES; d++)
        t += holder_dram(d) + HOLDER_L1;
    return t;
}

/* GETs path until the answer is a 200 whose body holds want, TEST_HANG_S at
 * most (what the server reaches on its own is waited for, never assumed
 * after a sleep); the last status, and its body at *body (malloc'd). */
static int http_await(const char *path, const char *want, char **body) {
    int status = 0;
    *body = NULL;
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(20)) {
        free(*body);
        status = http_get(port, path, body);
        if (status == 200 && strstr(*body, want) != NULL)
            break;
    }
    return status;
}

/* 1 if /api/stats comes to contain want (http_await). */
static int stats_contain(const char *want) {
    char *b;
    (void)http_await("/api/stats", want, &b);
    int found = b != NULL && strstr(b, want) != NULL;
    free(b);
    return found;
}

/* /api/stats, into a static buffer (the socket's `stats --json`, by HTTP). */
static const char *api_stats(void) {
    static char buf[1 << 17];
    char *b = NULL;
    assert_int_equal(http_get(port, "/api/stats", &b), 200);
    snprintf(buf, sizeof(buf), "%s", b);
    free(b);
    return buf;
}

/* Every client of the scenario, and waits until the server saw them all
 * (the leaker's leaks included). */
static void scenario(void) {
    run_client(holder, 1);
    run_client(leaker, 0);
    run_client(overfreer, 0);
    char want[128];
    snprintf(want, sizeof(want), "\"live_bytes\":%" PRIu64, holder_total());
    assert_true(stats_contain(want));
    assert_true(stats_contain("\"leaks\":2,"));
}

static void summary_lists_leaks_and_overfreed_addresses(void **state) {
    (void)state;
    start_server(NULL);
    scenario();
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    server = 0;
    char *j = slurp(paths.summary);
    /* Addresses are numbers in JSON: 0xabc000 is 11255808, 0xdead0000 3735879680. */
    assert_non_null(strstr(j, "\"name\":\"obs-leaker\",\"device\":2,\"kind\":\"l1\",\"address\":11255808,"
                              "\"size\":8192,\"age_s\":"));
    assert_non_null(strstr(j, "\"address\":11264000,\"size\":4096,"));
    assert_non_null(strstr(j, "\"leaks_listed\":2,"));
    assert_non_null(strstr(j, "\"overfreed\":[{\"pid\":"));
    assert_non_null(strstr(j,
                           "\"name\":\"obs-overfree\",\"device\":1,\"kind\":\"dram\",\"address\":3735879680,"
                           "\"allocs\":1,\"frees\":3,\"unknown_frees\":2,\"at_least\":false}"));
    free(j);
}

static void gone_clients_age_out_of_stats_but_not_out_of_the_totals(void **state) {
    (void)state;
    const char *extra[] = {"--forget-ms", "300", NULL};
    start_server(extra);
    scenario();
    /* The leaker and the over-freer are gone: after --forget-ms they leave
     * the client list and their figures join "(departed)" (pid 0). */
    assert_true(stats_contain("\"pid\":0,\"stream\":0,\"name\":\"(departed)\",\"device\":2,\"kind\":\"l1\""));
    assert_true(
        stats_contain("\"pid\":0,\"stream\":0,\"name\":\"(departed)\",\"device\":1,\"kind\":\"dram\""));
    const char *j = api_stats();
    assert_null(strstr(j, "\"name\":\"obs-leaker\",\"device\":2,\"kind\":\"l1\",\"live\""));
    assert_null(strstr(j, "\"name\":\"obs-overfree\",\"device\":1,\"kind\":\"dram\",\"live\""));
    assert_non_null(strstr(j, "\"name\":\"obs-holder\""));
    assert_non_null(strstr(j, "\"leaks\":2,\"leaked_bytes\":12288,\"unverified_leaks\":0,"));
    assert_non_null(strstr(j, "\"unknown_frees\":2,"));
    char *m = NULL;
    assert_int_equal(http_get(port, "/metrics", &m), 200);
    assert_non_null(strstr(m, "bh_trackd_leaks_total{device=\"2\",kind=\"l1\"} 2\n"));
    assert_non_null(strstr(m, "bh_trackd_unknown_frees_total{device=\"1\",kind=\"dram\"} 2\n"));
    assert_non_null(strstr(m, "bh_trackd_client_leaks{client=\"(departed)\",pid=\"0\"} 2\n"));
    free(m);
}

/* ------------------------------------------------------------ TT records */

#define TT112 112u

/* A TT record of size bytes (72 or 112) into p, as the runtime's client fills it. */
static void tt_rec(uint8_t *p, size_t size, uint8_t type, int32_t device, uint64_t bytes, uint8_t btype,
                   uint64_t address) {
    memset(p, 0, size);
    bh_tt_record(p, type, device, bytes, btype, (int32_t)getpid(), address,
                 type == BH_TT_ALLOC ? 123456789u : 0);
}

static void tt_send(int fd, uint8_t type, size_t size, int32_t device, uint64_t bytes, uint8_t btype,
                    uint64_t address) {
    uint8_t r[TT112];
    tt_rec(r, size, type, device, bytes, btype, address);
    assert_int_equal(send(fd, r, size, MSG_NOSIGNAL), (ssize_t)size);
}

/* Sends a QUERY-like record and reads the size-byte answer into out. */
static void tt_ask(int fd, uint8_t type, size_t size, int32_t device, uint8_t *out) {
    tt_send(fd, type, size, device, 0, 0, 0);
    assert_int_equal(recv(fd, out, size, MSG_WAITALL), (ssize_t)size);
}

static void record_size_is_told_only_by_what_the_bytes_prove(void **state) {
    (void)state;
    uint8_t b[4 * 144];
    /* One 72-byte QUERY: any size until the peer is at rest, then 72. */
    tt_rec(b, 72, BH_TT_QUERY, 0, 0, 0, 0);
    assert_int_equal(td_tt_detect(b, 72, 0), 0);
    assert_int_equal(td_tt_detect(b, 72, 1), 72);
    /* Two 72-byte ALLOCs: byte 72 is the second one's type. */
    tt_rec(b, 72, BH_TT_ALLOC, 3, 4096, 1, 0x1000);
    tt_rec(b + 72, 72, BH_TT_ALLOC, 3, 4096, 1, 0x2000);
    assert_int_equal(td_tt_detect(b, 73, 0), 72);
    assert_int_equal(td_tt_detect(b, 144, 1), 72);
    /* A 112-byte ALLOC: zero at 72 (answer-only fields), so 112 or 144; at
     * rest 112 bytes are one 112-byte record, and a second one decides. */
    memset(b, 0, sizeof(b));
    tt_rec(b, TT112, BH_TT_ALLOC, 3, 4096, 1, 0x1000);
    assert_int_equal(td_tt_detect(b, TT112, 0), 0);
    assert_int_equal(td_tt_detect(b, TT112, 1), 112);
    tt_rec(b + TT112, TT112, BH_TT_FREE, 3, 0, 0, 0x1000);
    assert_int_equal(td_tt_detect(b, TT112 + 1, 0), 112);
    /* A 144-byte ALLOC: zero at 72 and at 112. */
    memset(b, 0, sizeof(b));
    tt_rec(b, 144, BH_TT_ALLOC, 3, 4096, 1, 0x1000);
    assert_int_equal(td_tt_detect(b, 113, 0), 144);
    assert_int_equal(td_tt_detect(b, 144, 1), 144);
    /* A first record that is not TT's, or a second one that is not. */
    memset(b, 0x55, sizeof(b));
    assert_int_equal(td_tt_detect(b, sizeof(b), 0), -1);
    memset(b, 0, sizeof(b));
    tt_rec(b, 72, BH_TT_ALLOC, 3, 4096, 1, 0x1000);
    memset(b + 72, 0x55, 28);
    assert_int_equal(td_tt_detect(b, 200, 0), -1);
}

static void tt_112_byte_records_are_tracked_by_kind_and_answered(void **state) {
    (void)state;
    start_server(NULL);
    int fd = test_connect(paths.compat);
    uint8_t r[TT112];
    /* buffer_type (TT's BufferType, every layout): 1 L1, 2 SYSTEM_MEMORY, 3 L1_SMALL, 4 TRACE. */
    tt_send(fd, BH_TT_ALLOC, TT112, 40, 1000, 1, 0x1000);
    tt_send(fd, BH_TT_ALLOC, TT112, 40, 500, 2, 0x2000);
    tt_send(fd, BH_TT_ALLOC, TT112, 40, 300, 3, 0x3000);
    tt_send(fd, BH_TT_ALLOC, TT112, 40, 200, 4, 0x4000);
    tt_ask(fd, BH_TT_QUERY, TT112, 40, r);
    assert_int_equal(r[0], BH_TT_RESPONSE);
    assert_int_equal(bh_get32(r + 4), 40);
    assert_int_equal(bh_get64(r + 40), 0);    /* dram */
    assert_int_equal(bh_get64(r + 48), 1000); /* l1 */
    /* l1_small: SYSTEM_MEMORY and L1_SMALL, as TT's server adds them */
    assert_int_equal(bh_get64(r + 56), 800);
    assert_int_equal(bh_get64(r + 64), 200); /* trace */
    /* FREE without a buffer_type finds the L1 allocation at that address. */
    tt_send(fd, BH_TT_FREE, TT112, 40, 0, 0, 0x1000);
    tt_ask(fd, BH_TT_QUERY, TT112, 40, r);
    assert_int_equal(bh_get64(r + 48), 0);
    /* DEVICE_INFO_QUERY: as TT's server on a host without devices (none
     * described with --tt-devices), whatever devices the records name. */
    tt_ask(fd, BH_TT_DEVICE_INFO_QUERY_FOR_TEST, TT112, -1, r);
    assert_int_equal(r[0], BH_TT_DEVICE_INFO_QUERY_FOR_TEST + 1);
    assert_int_equal(bh_get32(r + 108), 0);
    tt_ask(fd, BH_TT_DEVICE_INFO_QUERY_FOR_TEST, TT112, 40, r);
    assert_int_equal(bh_get32(r + 104), 0);
    const char *j = api_stats();
    assert_non_null(strstr(j, "\"malformed\":0,"));
    assert_non_null(strstr(j, "\"unknown_frees\":0,"));
    assert_non_null(strstr(j, "\"device\":40,\"kind\":\"system_memory\",\"live\":1,\"live_bytes\":500,"));
    assert_non_null(strstr(j, "\"device\":40,\"kind\":\"l1\",\"live\":0,"));
    /* The records carry no name: the peer's process name stands in. */
    assert_non_null(strstr(j, "\"name\":\"test_observabil\",\"device\":40"));
    close(fd);
}

static void tt_72_byte_clients_on_64_devices_query_first_and_leave_early(void **state) {
    (void)state;
    start_server(NULL);
    /* A client whose first record is a QUERY gets its answer: it is at rest. */
    int fd = test_connect(paths.compat);
    uint8_t r[TT112];
    tt_ask(fd, BH_TT_QUERY, 72, 0, r);
    assert_int_equal(r[0], BH_TT_RESPONSE);
    /* One that sends an ALLOC and hangs up at once is counted, not refused. */
    int quick = test_connect(paths.compat);
    tt_send(quick, BH_TT_ALLOC, 72, 5, 777, 0, 0x777000);
    close(quick);
    /* 64 devices, each with its own DRAM bytes; QUERY answers per device. */
    for (int32_t d = 0; d < (int32_t)DEVICES; d++)
        tt_send(fd, BH_TT_ALLOC, 72, d, 1000u + (uint64_t)d, 0, 0x100000u);
    for (int32_t d = 0; d < (int32_t)DEVICES; d += 21) {
        tt_ask(fd, BH_TT_QUERY, 72, d, r);
        assert_int_equal(bh_get64(r + 40), 1000u + (uint64_t)d + (d == 5 ? 777u : 0u));
    }
    tt_ask(fd, BH_TT_QUERY, 72, 63, r);
    assert_int_equal(bh_get64(r + 40), 1063);
    char *m = NULL;
    assert_int_equal(http_get(port, "/metrics", &m), 200);
    assert_non_null(strstr(m, "bh_trackd_live_bytes{device=\"63\",kind=\"dram\"} 1063\n"));
    assert_non_null(strstr(m, "bh_trackd_live_bytes{device=\"5\",kind=\"dram\"} 1782\n"));
    assert_non_null(strstr(m, "bh_trackd_malformed_total 0\n"));
    free(m);
    close(fd);
}

static void a_configured_record_size_never_misreads_other_records(void **state) {
    (void)state;
    const char *extra[] = {"--compat-record-size", "72", NULL};
    start_server(extra);
    int fd = test_connect(paths.compat);
    tt_send(fd, BH_TT_ALLOC, TT112, 1, 4096, 1, 0x1000); /* 112 bytes: not read as 72 */
    assert_true(stats_contain("\"compat_ignored\":1,"));
    uint8_t sink[8];
    assert_int_equal(recv(fd, sink, sizeof(sink), MSG_DONTWAIT), -1); /* still open: a TT client lives on */
    close(fd);
    const char *j = api_stats();
    assert_non_null(strstr(j, "\"malformed\":0,"));
    assert_non_null(strstr(j, "\"tt\":{\"live\":0,"));
    /* A 72-byte client there is tracked, and named after its process. */
    fd = test_connect(paths.compat);
    tt_send(fd, BH_TT_ALLOC, 72, 9, 4096, 0, 0x9000);
    uint8_t r[TT112];
    tt_ask(fd, BH_TT_QUERY, 72, 9, r);
    assert_int_equal(bh_get64(r + 40), 4096);
    assert_non_null(
        strstr(api_stats(), "\"name\":\"test_observabil\",\"device\":9,\"kind\":\"dram\",\"live\":1,"));
    close(fd);
}

/* ------------------------------------------------------------ fixtures */

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-obs-test");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < nchildren; i++)
        test_kill(children[i]);
    nchildren = 0;
    test_servers_end();
    server = 0;
    return test_paths_remove(&paths);
}

/* ------------------------------------------------------------ tests */

static void metrics_show_every_device_kind_and_client(void **state) {
    (void)state;
    start_server(NULL);
    scenario();
    char *m = NULL;
    assert_int_equal(http_get(port, "/metrics", &m), 200);
    char line[160];
    for (uint32_t d = 0; d < DEVICES; d++) {
        snprintf(line, sizeof(line), "bh_trackd_live_bytes{device=\"%u\",kind=\"dram\"} %" PRIu64 "\n", d,
                 holder_dram(d));
        assert_non_null(strstr(m, line));
        snprintf(line, sizeof(line), "bh_trackd_live_bytes{device=\"%u\",kind=\"l1\"} %u\n", d, HOLDER_L1);
        assert_non_null(strstr(m, line));
    }
    assert_non_null(strstr(m, "bh_trackd_leaks_total{device=\"2\",kind=\"l1\"} 2\n"));
    assert_non_null(strstr(m, "bh_trackd_leaked_bytes_total{device=\"2\",kind=\"l1\"} 12288\n"));
    assert_non_null(strstr(m, "bh_trackd_unknown_frees_total{device=\"1\",kind=\"dram\"} 2\n"));
    snprintf(line, sizeof(line),
             "bh_trackd_client_live_bytes{client=\"obs-holder\",pid=\"%d\"} %" PRIu64 "\n", (int)children[0],
             holder_total());
    assert_non_null(strstr(m, line));
    assert_non_null(strstr(m, "bh_trackd_clients_connected 1\n"));
    assert_non_null(strstr(m, "bh_trackd_reporter_connections_total 3\n"));
    assert_non_null(strstr(m, "bh_trackd_refused_connections_total 0\n"));
    assert_non_null(strstr(m, "bh_trackd_timeouts_total 0\n"));
    assert_non_null(strstr(m, "bh_trackd_output_overflows_total 0\n"));

    free(m);
}

static void metrics_pass_promtool(void **state) {
    (void)state;
    if (!have("promtool")) {
        print_message("promtool not installed (Debian package prometheus): skipping\n");
        skip();
    }
    const char *extra[] = {"--metrics-domains", "8", NULL}; /* so the "other" series are checked too */
    start_server(extra);
    scenario();
    char *m = NULL;
    assert_int_equal(http_get(port, "/metrics", &m), 200);
    char path[160], cmd[256];
    snprintf(path, sizeof(path), "%s/metrics.txt", outdir != NULL ? outdir : paths.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(m, f);
    fclose(f);
    free(m);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    assert_int_equal(system(cmd), 0);
}

static void per_client_series_are_bounded(void **state) {
    (void)state;
    const char *extra[] = {"--metrics-clients", "1", NULL};
    start_server(extra);
    scenario();
    run_client(holder, 1); /* a second holder: two live clients, one series plus "other" */
    char *m;
    (void)http_await("/metrics", "bh_trackd_clients_connected 2\n", &m);
    char line[160];
    snprintf(line, sizeof(line), "bh_trackd_client_live_bytes{client=\"other\",pid=\"other\"} %" PRIu64 "\n",
             holder_total());
    assert_non_null(strstr(m, line));
    int series = 0;
    for (const char *p = m; (p = strstr(p, "\nbh_trackd_client_live_bytes{")) != NULL; p++)
        series++;
    assert_int_equal(series, 2);
    free(m);
}

/* Many (device, kind) domains, reported by real clients: MANY_CLIENTS
 * processes on MANY_DOMAINS domains each, every one its own. */
#define MANY_CLIENTS 8u
#define MANY_DOMAINS 4000u /* under the default --max-groups-per-client */
#define DEFAULT_METRICS_DOMAINS 1024u
static unsigned many_index;

static uint64_t many_size(uint32_t i) { return 4096u * (1u + i % 7u); }

static void many_domain_holder(void) {
    client_ctx c;
    client_open(&c, "obs-domains");
    for (uint32_t i = 0; i < MANY_DOMAINS; i++) {
        uint32_t d = many_index * MANY_DOMAINS + i;
        report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d / 4u, d % 4u), 0x100000u + i * 0x1000u, many_size(d));
    }
    bh_socket_reporter_flush(&c.rep, TEST_HANG_MS);
}

/* Sums the values of every series of a family (its lines start with name{). */
static uint64_t family_sum(const char *m, const char *name, int *series) {
    char head[96];
    snprintf(head, sizeof(head), "\n%s{", name);
    uint64_t sum = 0;
    *series = 0;
    for (const char *p = m; (p = strstr(p, head)) != NULL; p++) {
        const char *v = strchr(p + 1, ' ');
        assert_non_null(v);
        sum += strtoull(v + 1, NULL, 10);
        (*series)++;
    }
    return sum;
}

/* A child that scrapes /metrics until SCRAPES_EACH were answered (a server
 * busy with the other seven may answer 503: asked again), counting its
 * answered scrapes in *scrapes (shared with the parent). A count, not a
 * time: a loaded machine only makes the scrapes later. A scraper gives up
 * TEST_HANG_S after the last scrape any of them had answered (under TSan
 * beside busy loops the 16 took longer than TEST_HANG_S from the start:
 * 6 answered), so only a server that stopped answering ends it. */
#define SCRAPES_EACH 2
static atomic_uint *scrapes;
static void scraper(void) {
    test_progress p;
    test_progress_start(&p, TEST_HANG_S);
    for (int answered = 0; answered < SCRAPES_EACH && test_progress_going(&p, atomic_load(scrapes));) {
        char *b = NULL;
        if (http_get(port, "/metrics", &b) == 200) {
            atomic_fetch_add(scrapes, 1);
            answered++;
        }
        free(b);
    }
}

static void per_domain_series_are_bounded(void **state) {
    (void)state;
    start_server(NULL); /* the default --metrics-domains */
    uint64_t total = 0;
    for (many_index = 0; many_index < MANY_CLIENTS; many_index++)
        run_client(many_domain_holder, 1);
    for (uint32_t d = 0; d < MANY_CLIENTS * MANY_DOMAINS; d++)
        total += many_size(d);
    char want[64];
    snprintf(want, sizeof(want), "\"live_bytes\":%" PRIu64, total);
    assert_true(stats_contain(want));

    char *m = NULL;
    assert_int_equal(http_get(port, "/metrics", &m), 200);
    size_t bytes = strlen(m);
    print_message("%u domains: /metrics is %zu bytes\n", MANY_CLIENTS * MANY_DOMAINS, bytes);
    int series = 0, allocs_series = 0;
    assert_int_equal(family_sum(m, "bh_trackd_live_bytes", &series), total);
    assert_int_equal(series, DEFAULT_METRICS_DOMAINS + 1); /* and device="other" */
    assert_int_equal(family_sum(m, "bh_trackd_allocs_total", &allocs_series), MANY_CLIENTS * MANY_DOMAINS);
    assert_int_equal(allocs_series, DEFAULT_METRICS_DOMAINS + 1);
    assert_non_null(strstr(m, "\nbh_trackd_live_bytes{device=\"other\",kind=\"other\"} "));
    char line[96];
    snprintf(line, sizeof(line), "\nbh_trackd_domains_tracked %u\n", MANY_CLIENTS * MANY_DOMAINS);
    assert_non_null(strstr(m, line));
    assert_true(bytes < 1024u * 1024u); /* 8 families of 1025 series, each under 128 bytes */
    free(m);

    /* A bystander's socket `stats` while eight connections scrape: each
     * answered, and what the server spends per scrape (CPU time: the
     * machine's load does not change it) is a bounded scrape's. */
    scrapes = mmap(NULL, sizeof(*scrapes), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(scrapes != MAP_FAILED);
    atomic_init(scrapes, 0);
    pid_t scrapers[8];
    double cpu0 = test_proc_cpu_s(server);
    for (int i = 0; i < 8; i++)
        scrapers[i] = test_fork(scraper);
    static char json[1 << 17];
    double worst = 0;
    int queries = 0, running = 8;
    while (running > 0 || queries == 0) { /* until every scraper is done */
        double t0 = test_now_s();
        test_stats_json(trackd, paths.sock, json, sizeof(json)); /* asserts an answer */
        double took = test_now_s() - t0;
        worst = took > worst ? took : worst;
        queries++;
        for (int i = 0; i < 8; i++) {
            int status;
            if (scrapers[i] > 0 && waitpid(scrapers[i], &status, WNOHANG) == scrapers[i]) {
                assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                scrapers[i] = 0;
                running--;
            }
        }
    }
    double cpu = test_proc_cpu_s(server) - cpu0;
    unsigned served = atomic_load(scrapes);
    munmap(scrapes, sizeof(*scrapes));
    print_message(
        "bystander stats: %d queries, the slowest %.3f s; %u scrapes, server CPU %.3f s (%.1f ms each)\n",
        queries, worst, served, cpu, served > 0 ? cpu / served * 1e3 : 0.0);
    assert_true(queries >= 1);
    assert_int_equal(served, 8 * SCRAPES_EACH); /* every scrape answered */
    /* A bounded scrape costs tens of ms here; 32,000 domains unbounded, ~30 MB, seconds. */
    assert_true(cpu / (served + (unsigned)queries) < 0.2 * test_time_slack(NULL));
}

static void prometheus_scrapes_the_daemon_and_answers_a_query(void **state) {
    (void)state;
    if (!have("prometheus")) {
        print_message("prometheus not installed (Debian package prometheus): skipping\n");
        skip();
    }
    start_server(NULL);
    scenario();
    unsigned pport = free_port();
    char cfg[160], data[160], plog[160];
    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", paths.dir);
    snprintf(data, sizeof(data), "%s/prometheus-data", paths.dir);
    snprintf(plog, sizeof(plog), "%s/prometheus.log", paths.dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: bh-trackd\n    static_configs:\n"
            "      - targets: ['127.0.0.1:%u']\n        labels: {host: test}\n",
            port);
    fclose(f);
    pid_t prom = fork();
    assert_true(prom >= 0);
    if (prom == 0) {
        char a1[200], a2[200], a3[64];
        snprintf(a1, sizeof(a1), "--config.file=%s", cfg);
        snprintf(a2, sizeof(a2), "--storage.tsdb.path=%s", data);
        snprintf(a3, sizeof(a3), "--web.listen-address=127.0.0.1:%u", pport);
        int fd = open(plog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("prometheus", "prometheus", a1, a2, a3, (char *)NULL);
        _exit(127);
    }
    children[nchildren++] = prom;
    char want[64];
    snprintf(want, sizeof(want), "\"%" PRIu64 "\"]", holder_total());
    int found = 0;
    double t0 = test_now_s();
    while (!found && test_now_s() - t0 < 60) { /* bounded: Prometheus starts, then scrapes every second */
        test_sleep_ms(500);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)pport)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (!up)
            continue;
        char *b = NULL;
        if (http_get(pport,
                     "/api/v1/query?query=sum(bh_trackd_client_live_bytes%7Bclient%3D%22obs-holder%22%7D)",
                     &b) == 200)
            found = strstr(b, want) != NULL;
        free(b);
    }
    /* Every documented example query is valid PromQL against this server. */
    char qpath[160];
    snprintf(qpath, sizeof(qpath), "%s/queries.promql", paths.dir);
    assert_true(doc_block("# live bytes per host and memory kind\n", qpath));
    char *qs = slurp(qpath);
    int queries = 0;
    for (char *line = strtok(qs, "\n"); found && line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char url[1024] = "/api/v1/query?query=", *b = NULL;
        size_t n = strlen(url);
        for (const unsigned char *c = (const unsigned char *)line; *c && n + 4 < sizeof(url); c++)
            n += (size_t)snprintf(url + n, sizeof(url) - n, isalnum(*c) ? "%c" : "%%%02X", *c);
        assert_int_equal(http_get(pport, url, &b), 200);
        assert_non_null(strstr(b, "\"status\":\"success\""));
        free(b);
        queries++;
    }
    free(qs);
    assert_true(!found || queries >= 5);
    if (!found) {
        char *l = slurp(plog);
        print_error("prometheus log:\n%s\n", l);
        free(l);
    }
    assert_true(found);
}

static void documented_scrape_config_and_alerts_pass_promtool(void **state) {
    (void)state;
    if (!have("promtool")) {
        print_message("promtool not installed (Debian package prometheus): skipping\n");
        skip();
    }
    char cfg[160], rules[160], cmd[512];
    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", paths.dir);
    snprintf(rules, sizeof(rules), "%s/rules.yml", paths.dir);
    assert_true(doc_block("# prometheus.yml\n", cfg));
    assert_true(doc_block("groups:\n", rules));
    snprintf(cmd, sizeof(cmd), "promtool check config --syntax-only %s >%s/promtool.log 2>&1", cfg,
             paths.dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "promtool check rules %s >>%s/promtool.log 2>&1", rules, paths.dir);
    assert_int_equal(system(cmd), 0);
}

/* Runs chromium headless on the dashboard with extra arguments; stdout to out. */
static int chromium(const char *args, const char *out) {
    char cmd[1024];
    snprintf(
        cmd, sizeof(cmd),
        "timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
        "--no-first-run --user-data-dir=%s/chromium --virtual-time-budget=4000 --window-size=1400,1500 %s "
        "http://127.0.0.1:%u/ > %s 2>%s/chromium.log",
        paths.dir, args, port, out, paths.dir);
    return system(cmd);
}

static void dashboard_renders_the_clients_numbers_in_chromium(void **state) {
    (void)state;
    const char *browser = have("chromium") ? "chromium" : NULL;
    if (browser == NULL) {
        print_message("chromium not installed (Debian package chromium): skipping\n");
        skip();
    }
    start_server(NULL);
    scenario();
    run_client(streamer, 1);        /* three seconds of samples that move */
    run_client(grower, BACKGROUND); /* live bytes that move while the page polls */
    char dom[160], png[200], arg[240];
    snprintf(dom, sizeof(dom), "%s/dashboard.html", outdir != NULL ? outdir : paths.dir);
    snprintf(png, sizeof(png), "%s/dashboard.png", outdir != NULL ? outdir : paths.dir);
    assert_int_equal(chromium("--dump-dom", dom), 0);
    char *d = slurp(dom);
    /* The chart exists and carries the series: with 64 devices it stacks by
     * kind, and its legend shows the holder's DRAM over all devices; each
     * device's tile shows its own bytes. */
    assert_non_null(strstr(d, "id=\"chart\""));
    assert_non_null(strstr(d, "<path d=\"M"));
    char want[128];
    uint64_t dram = 0;
    for (uint32_t i = 0; i < DEVICES; i++)
        dram += holder_dram(i);
    snprintf(want, sizeof(want), "data-device=\"\" data-kind=\"dram\" data-bytes=\"%" PRIu64 "\"", dram);
    assert_non_null(strstr(d, want));
    snprintf(want, sizeof(want), "data-device=\"63\" data-bytes=\"%" PRIu64 "\"",
             holder_dram(63) + HOLDER_L1);
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "Devices (64)"));
    /* The chart's title names the grouping it draws (by kind here). */
    assert_non_null(strstr(d, "id=\"chart-title\">Live bytes by memory kind<"));
    /* The live-bytes card and the device tiles show one sample: the tiles
     * add up to the card, although the grower moves the total meanwhile. */
    uint64_t tiles = 0;
    for (const char *t = strstr(d, "class=\"dev\" data-device="); t != NULL;
         t = strstr(t + 1, "class=\"dev\" data-device=")) {
        const char *b = strstr(t, "data-bytes=\"");
        assert_non_null(b);
        tiles += strtoull(b + strlen("data-bytes=\""), NULL, 10);
    }
    const char *card = strstr(d, "id=\"c-live-bytes-exact\">");
    assert_non_null(card);
    uint64_t shown = 0;
    for (card += strlen("id=\"c-live-bytes-exact\">"); *card != '<' && *card != '\0'; card++)
        if (isdigit((unsigned char)*card))
            shown = shown * 10 + (uint64_t)(*card - '0');
    assert_true(tiles > 0);
    assert_int_equal(tiles, shown);
    /* The clients table counts live allocations, and says so. */
    assert_non_null(strstr(d, "<th class=\"num\">live allocations</th>"));
    /* The clients table, the over-freed address, the leaks. */
    assert_non_null(strstr(d, "obs-holder"));
    snprintf(want, sizeof(want), "title=\"%" PRIu64 " bytes\"", holder_total());
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "0xdead0000"));
    assert_non_null(strstr(d, "allocated 1, freed 3"));
    assert_non_null(strstr(d, "0xabc000"));
    assert_non_null(strstr(d, "obs-leaker"));
    assert_non_null(strstr(d, "dot live"));
    free(d);
    snprintf(arg, sizeof(arg), "--screenshot=%s", png);
    assert_int_equal(chromium(arg, "/dev/null"), 0);
    struct stat st;
    assert_int_equal(stat(png, &st), 0);
    assert_true(st.st_size > 20000); /* a picture, not an empty page */
}

/* The socket protocol answers promptly while HTTP clients misbehave. */
static void bad_http_input_never_blocks_the_socket_protocol(void **state) {
    (void)state;
    start_server(NULL);
    /* Oversized headers: refused (431) or cut off, never buffered forever. */
    int big = tcp_connect(port);
    static char hdr[256 * 1024];
    int n = snprintf(hdr, sizeof(hdr), "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(hdr + n, 'a', sizeof(hdr) - (size_t)n - 4);
    memcpy(hdr + sizeof(hdr) - 4, "\r\n\r\n", 4);
    ssize_t sent = send(big, hdr, sizeof(hdr), MSG_NOSIGNAL | MSG_DONTWAIT);
    assert_true(sent > 0);
    char reply[512] = {0};
    ssize_t r = recv(big, reply, sizeof(reply) - 1, 0);
    assert_true(r > 0 && strstr(reply, " 431 ") != NULL);
    close(big);
    /* Unknown paths, methods, bad arguments. */
    char *b = NULL;
    assert_int_equal(http_request(port, "DELETE", "/metrics", &b), 405);
    free(b);
    assert_int_equal(http_request(port, "HEAD", "/metrics", &b), 200);
    assert_string_equal(b, "");
    free(b);
    assert_int_equal(http_get(port, "/no/such/page", &b), 404);
    free(b);
    assert_int_equal(http_get(port, "/api/history?address=banana", &b), 400);
    free(b);
    assert_int_equal(http_get(port, "/api/live?limit=-1", &b), 400);
    free(b);

    /* Slow clients, more than the per-address limit (32): half a request line
     * each, then nothing. Those over the limit are refused; none holds the loop. */
    int slow[40];
    for (int i = 0; i < 40; i++) {
        slow[i] = tcp_connect(port);
        assert_int_equal(send(slow[i], "GET /met", 8, MSG_NOSIGNAL), 8);
    }
    /* Meanwhile a client reports and the socket query answers at once. */
    run_client(holder, 1);
    char cmd[512], out[160], want[64], *j = NULL;
    snprintf(out, sizeof(out), "%s/stats.json", paths.dir);
    snprintf(cmd, sizeof(cmd), "%s stats --json --socket %s > %s", trackd, paths.sock, out);
    snprintf(want, sizeof(want), "\"live_bytes\":%" PRIu64, holder_total());
    for (double end = test_now_s() + TEST_HANG_S;
         test_now_s() < end && (j == NULL || strstr(j, want) == NULL);) {
        free(j); /* the socket query, not HTTP */
        assert_int_equal(system(cmd), 0);
        j = slurp(out);
    }
    assert_non_null(strstr(j, want));
    free(j);
    /* It answered while the slow clients it admitted still hold their
     * connections: the loop did not wait for them to time out or go. */
    int held = 0;
    for (int i = 0; i < 40; i++) {
        char c;
        held += recv(slow[i], &c, 1, MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    print_message("socket stats answered while %d slow HTTP clients held their connections\n", held);
    assert_int_equal(held, 32); /* the per-address limit's worth; the rest were refused */
    /* Once they go, HTTP serves again (the server notices the closes on its
     * next turn). */
    for (int i = 0; i < 40; i++)
        close(slow[i]);
    int status = http_await("/metrics", "", &b);
    free(b);
    assert_int_equal(status, 200);
}

static void api_live_is_paged_and_history_answers_an_address(void **state) {
    (void)state;
    start_server(NULL);
    scenario();
    char *b = NULL;
    assert_int_equal(http_get(port, "/api/live?offset=10&limit=5", &b), 200);
    int entries = 0;
    for (const char *p = b; (p = strstr(p, "\"address\":")) != NULL; p++)
        entries++;
    assert_int_equal(entries, 5);
    char want[64];
    snprintf(want, sizeof(want), "\"offset\":10,\"total\":%u}", 2 * DEVICES);
    assert_non_null(strstr(b, want));
    free(b);
    assert_int_equal(http_get(port, "/api/history?address=0xdead0000", &b), 200);
    assert_non_null(strstr(b, "\"address\":3735879680,"));
    assert_non_null(strstr(b, "\"name\":\"obs-overfree\",\"device\":1,\"kind\":\"dram\",\"live\":false"));
    assert_non_null(strstr(b, "\"allocs\":1,\"frees\":3"));
    free(b);
    b = NULL;
    /* The timeline: all samples held, or only those after since. Waits for a
     * sample after the scenario (the first, at start, is all zeros). */
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(50)) {
        assert_int_equal(http_get(port, "/api/timeline", &b), 200);
        if (strstr(b, "{\"device\":63,\"kind\":\"dram\",\"bytes\":[0,") != NULL)
            break;
        free(b);
        b = NULL;
    }
    assert_non_null(b);
    char *t = strstr(b, "\"t\":["), *end = t != NULL ? strchr(t, ']') : NULL;
    assert_non_null(end);
    while (end[-1] != '[' && end[-1] != ',')
        end--;
    uint64_t last = strtoull(end, NULL, 10);
    assert_true(last > 0);
    assert_non_null(strstr(b, "{\"device\":63,\"kind\":\"dram\",\"bytes\":[0,"));
    free(b);
    char url[96];
    snprintf(url, sizeof(url), "/api/timeline?since=%" PRIu64, last);
    assert_int_equal(http_get(port, url, &b), 200);
    assert_non_null(strstr(b, "\"t\":[]"));
    assert_non_null(strstr(b, "{\"device\":63,\"kind\":\"dram\",\"bytes\":[]}"));
    free(b);
    assert_int_equal(http_get(port, "/api/history?address=0xdead0000", &b), 200);
    /* The socket command prints the same JSON, and hex in its text. */
    char cmd[512], out[8192];
    for (int json = 1; json >= 0; json--) {
        snprintf(cmd, sizeof(cmd), "%s history 0xdead0000 %s --socket %s", trackd, json ? "--json" : "",
                 paths.sock);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        assert_int_equal(pclose(f), 0);
        if (json)
            assert_string_equal(out, b);
        else
            assert_non_null(strstr(out, "address 0xdead0000\n"));
    }
    free(b);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_observability PATH-TO-bh-trackd [unit|tools [OUTDIR]]\n");
        return 2;
    }
    trackd = argv[1];
    const char *mode = argc > 2 ? argv[2] : NULL;
    outdir = argc > 3 ? argv[3] : NULL;
    signal(SIGPIPE, SIG_IGN);
    /* Without external tools (label unit, also under the sanitizers). */
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(record_size_is_told_only_by_what_the_bytes_prove),
        cmocka_unit_test_setup_teardown(metrics_show_every_device_kind_and_client, setup, teardown),
        cmocka_unit_test_setup_teardown(per_client_series_are_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(per_domain_series_are_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(api_live_is_paged_and_history_answers_an_address, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_http_input_never_blocks_the_socket_protocol, setup, teardown),
        cmocka_unit_test_setup_teardown(summary_lists_leaks_and_overfreed_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(gone_clients_age_out_of_stats_but_not_out_of_the_totals, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(tt_112_byte_records_are_tracked_by_kind_and_answered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(tt_72_byte_clients_on_64_devices_query_first_and_leave_early, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_configured_record_size_never_misreads_other_records, setup,
                                        teardown),
    };
    /* With promtool, Prometheus and Chromium (label observability). */
    const struct CMUnitTest tools[] = {
        cmocka_unit_test_setup_teardown(metrics_pass_promtool, setup, teardown),
        cmocka_unit_test_setup_teardown(documented_scrape_config_and_alerts_pass_promtool, setup, teardown),
        cmocka_unit_test_setup_teardown(prometheus_scrapes_the_daemon_and_answers_a_query, setup, teardown),
        cmocka_unit_test_setup_teardown(dashboard_renders_the_clients_numbers_in_chromium, setup, teardown),
    };
    if (mode != NULL && strcmp(mode, "tools") == 0)
        return cmocka_run_group_tests_name("observability tools", tools, NULL, NULL);
    return cmocka_run_group_tests_name("observability", unit, NULL, NULL);
}
