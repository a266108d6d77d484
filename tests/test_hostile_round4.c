/*
 * test_hostile_round4.c - bh-trackd against a local unprivileged client,
 * round 4 (session 8's attack): figures each within their bounds (sizes,
 * sequence numbers) that still add up past 2^64 in a figure the server keeps
 * over all clients (TT's table, a domain's sample in the timeline, a TT QUERY
 * answer, the "other" series of /metrics), checked by what stats,
 * /api/timeline, TT QUERY and /metrics show; and a number in a request that
 * is not the one answered for.
 *
 * usage: test_hostile_round4 PATH-TO-bh-trackd
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/hostile.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-hostile-r4");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* The number after "key": inside the member "in":{...} of a fresh stats
 * --json (UINT64_MAX if absent). */
static uint64_t stat_in(const char *in, const char *key) {
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    char tag[64];
    snprintf(tag, sizeof(tag), "\"%s\":{", in);
    const char *m = strstr(j, tag);
    uint64_t v = m != NULL ? hs_num(m, key) : UINT64_MAX;
    free(j);
    return v;
}

/* ------------------------------------------------ TT's table: byte sums */

#define BIG (1ull << 48)   /* the largest size one ALLOC may have */
#define PER_DEVICE 4u      /* 4 x 2^48: the most one device's DRAM may hold */
#define DEVICES (1u << 14) /* 2^14 x 2^50 = 2^64 */
#define N_BIG (DEVICES * PER_DEVICE)
#define SMALL 4096u

/* count TT records of type on devices (i / PER_DEVICE), ids i, in one send. */
static void tt_records(int fd, uint8_t type, uint64_t size, uint32_t count) {
    uint8_t *b = malloc((size_t)count * BH_TT_RECORD);
    assert_non_null(b);
    for (uint32_t i = 0; i < count; i++)
        bh_tt_record(b + (size_t)i * BH_TT_RECORD, type, (int32_t)(i / PER_DEVICE), size, 0,
                     (int32_t)getpid(), 0x1000000 + (uint64_t)i * 0x1000, 1);
    hs_send_all(fd, b, (size_t)count * BH_TT_RECORD);
    free(b);
}

/* A TT client: 2^16 ALLOCs of 2^48 bytes, 4 on each of 2^14 devices (every
 * one within the bounds: 2^48 an ALLOC, 2^50 a device's kind), and 4 KiB on
 * one more device; answered (so every record was handled), then gone
 * without freeing any. */
static void holds_2_to_the_64_bytes(void) {
    int fd = hs_tt_connect(paths.compat);
    tt_records(fd, BH_TT_ALLOC, BIG, N_BIG);
    uint8_t r[BH_TT_RECORD];
    bh_tt_record(r, BH_TT_ALLOC, (int32_t)DEVICES, SMALL, 0, (int32_t)getpid(), 0x77000, 1);
    hs_send_all(fd, r, sizeof(r));
    assert_int_equal(hs_tt_dram(fd, 0), PER_DEVICE * BIG);
    close(fd);
}

/* TT's table summed every entry's size into live_bytes (and an owner's
 * into its leaked_bytes) modulo 2^64: 2^64 + 4 KiB read 4096 in stats and
 * /metrics, the same as a process holding 4 KiB. The sums saturate now, and
 * stay exact below the top: once the big buffers are freed, 4 KiB. */
static void tt_byte_sums_never_wrap(void **state) {
    (void)state;
    (void)hs_start_compat(trackd, &paths, NULL);
    assert_int_equal(test_reap(test_fork(holds_2_to_the_64_bytes)), 0);
    /* Its entries become leaks once the server saw it gone. */
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end && stat_in("tt", "leaks") < N_BIG + 1;)
        test_sleep_ms(20);
    uint64_t live = stat_in("tt", "live"), live_bytes = stat_in("tt", "live_bytes"),
             leaked_bytes = stat_in("tt", "leaked_bytes");
    print_message(
        "TT table: %llu live entries of 2^48 bytes and one of 4 KiB (a gone process's): tt.live_bytes "
        "%llu, tt.leaked_bytes %llu\n",
        (unsigned long long)live, (unsigned long long)live_bytes, (unsigned long long)leaked_bytes);
    assert_int_equal(live, N_BIG + 1);
    assert_int_equal(live_bytes, UINT64_MAX);
    assert_int_equal(leaked_bytes, UINT64_MAX);
    /* TT frees by (device, buffer_id), whoever allocated it. */
    int fd = hs_tt_connect(paths.compat);
    tt_records(fd, BH_TT_FREE, 0, N_BIG);
    (void)hs_tt_dram(fd, 0);
    live_bytes = stat_in("tt", "live_bytes");
    leaked_bytes = stat_in("tt", "leaked_bytes");
    print_message("after the 2^16 big ones were freed: tt.live_bytes %llu, tt.leaked_bytes %llu\n",
                  (unsigned long long)live_bytes, (unsigned long long)leaked_bytes);
    assert_int_equal(live_bytes, SMALL);
    assert_int_equal(leaked_bytes, SMALL);
    close(fd);
}

/* ------------------------------------------------ the timeline: one domain's sum */

#define STREAMS 4096u /* a process's (stream, device) groups at the default limit */
#define HOLDERS 4u    /* 4 x 4096 groups x 2^50 = 2^64 on one domain */

/* A reporter: 4 ALLOCs of 2^48 on device 0's DRAM in each of 4,096 streams
 * (every group at its 2^50), then it stays. */
static void fills_4096_groups_of_device_0(void) {
    int fd = hs_reporter(paths.sock);
    for (uint32_t st = 1; st <= STREAMS; st++)
        hs_events(fd, st, BH_EVENT_ALLOC, BH_DOMAIN(0, BH_MEM_DRAM), 0, (uint64_t)st << 20, BIG, PER_DEVICE);
    for (;;)
        pause();
}

/* Device 0's DRAM in the first sample of /api/timeline?since=since into
 * *v: 1, or 0 while there is no sample after since. */
static int timeline_dram0(unsigned port, uint64_t since, uint64_t *v) {
    char path[64], *b = NULL;
    snprintf(path, sizeof(path), "/api/timeline?since=%llu", (unsigned long long)since);
    assert_int_equal(hs_http_get(port, "localhost", path, &b), 200);
    const char *tag = "{\"device\":0,\"kind\":\"dram\",\"bytes\":[";
    const char *m = b != NULL ? strstr(b, tag) : NULL;
    int found = m != NULL && m[strlen(tag)] != ']';
    if (found)
        *v = strtoull(m + strlen(tag), NULL, 10);
    free(b);
    return found;
}

static uint64_t unix_ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The timeline summed a domain's groups modulo 2^64: 4 processes at the
 * default limits, each group within its 2^50, plus another process's 4 KiB
 * charted device 0 as holding 4 KiB (the tracker's own device sum
 * saturates). The sample saturates now. */
static void the_timeline_never_wraps_a_domain(void **state) {
    (void)state;
    (void)hs_start(trackd, &paths, (const char *const[]){"--http", "127.0.0.1:0", NULL}, 0);
    unsigned port = hs_http_port(paths.log);
    int owner = hs_reporter(paths.sock);
    hs_events(owner, 1, BH_EVENT_ALLOC, BH_DOMAIN(0, BH_MEM_DRAM), 0, 0x1000, SMALL, 1);
    for (unsigned k = 0; k < HOLDERS; k++)
        hs_track(test_fork(fills_4096_groups_of_device_0));
    uint64_t want = 1 + (uint64_t)HOLDERS * STREAMS * PER_DEVICE;
    assert_int_equal(hs_wait_total(paths.sock, "live", want, TEST_HANG_S), want);
    uint64_t since = unix_ms_now(), v = 0;
    int sampled = 0;
    for (double end = test_now_s() + TEST_HANG_S; !sampled && test_now_s() < end; test_sleep_ms(100))
        sampled = timeline_dram0(port, since, &v);
    print_message("device 0 DRAM: %llu live allocations (2^64 + 4 KiB); its timeline sample: %llu\n",
                  (unsigned long long)want, (unsigned long long)v);
    assert_true(sampled);
    assert_int_equal(v, UINT64_MAX); /* saturated; it read 4096 */
    close(owner);
}

/* ------------------------------------------------ TT QUERY: native bytes added */

/* A TT client: 4 KiB on device 0's DRAM, answered, then gone without
 * freeing it (TT's table keeps it; the per-process view let it go). */
static void leaves_4_kib_on_device_0(void) {
    int fd = hs_tt_connect(paths.compat);
    uint8_t r[BH_TT_RECORD];
    bh_tt_record(r, BH_TT_ALLOC, 0, SMALL, 0, (int32_t)getpid(), 0x5000, 1);
    hs_send_all(fd, r, sizeof(r));
    (void)hs_tt_dram(fd, 0);
    close(fd);
}

/* TT QUERY adds what native clients hold on the device (the tracker's
 * device sum, saturated at 2^64 - 1 by the 4 processes above) to TT's own
 * figure modulo 2^64: with a gone TT client's 4 KiB in TT's table, device 0
 * read 4095 bytes. It saturates now. */
static void tt_query_never_wraps_with_native_bytes(void **state) {
    (void)state;
    (void)hs_start_compat(trackd, &paths, NULL);
    assert_int_equal(test_reap(test_fork(leaves_4_kib_on_device_0)), 0);
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end && stat_in("tt", "leaks") < 1;)
        test_sleep_ms(20);
    assert_int_equal(stat_in("tt", "leaks"), 1);
    for (unsigned k = 0; k < HOLDERS; k++)
        hs_track(test_fork(fills_4096_groups_of_device_0));
    uint64_t want = (uint64_t)HOLDERS * STREAMS * PER_DEVICE;
    assert_int_equal(hs_wait_total(paths.sock, "live", want, TEST_HANG_S), want);
    int fd = hs_tt_connect(paths.compat);
    uint64_t dram = hs_tt_dram(fd, 0);
    print_message("device 0 DRAM: 2^64 bytes of native clients, 4 KiB of a gone TT client: TT QUERY %llu\n",
                  (unsigned long long)dram);
    assert_int_equal(dram, UINT64_MAX); /* it read 4095 */
    close(fd);
}

/* ------------------------------------------------ /metrics: loss of the clients not shown */

#define MIB (1ull << 20)

static int loser; /* which of the three below a forked child is */

/* One ALLOC of size on stream numbered seq (its first: seq - 1 events
 * lost before it). */
static void alloc_numbered(int fd, uint32_t stream, uint64_t seq, uint64_t size) {
    uint8_t f[BH_WIRE_HEADER + BH_WIRE_EVENT_LEN];
    size_t n =
        bh_wire_event(f, stream, BH_EVENT_ALLOC, BH_DOMAIN(0, BH_MEM_DRAM), 0x100000 * stream, size, seq);
    hs_send_all(fd, f, n);
}

/* 0: 3 MiB, and its two streams' first events numbered 2^64 - 1 (each
 * 2^64 - 2 lost: the process's sum saturates); 1: 2 MiB, 5 lost; 2: 1 MiB,
 * none lost. Then they stay. */
static void loses_events(void) {
    int fd = hs_reporter(paths.sock);
    if (loser == 0) {
        alloc_numbered(fd, 1, UINT64_MAX, 2 * MIB);
        alloc_numbered(fd, 2, UINT64_MAX, MIB);
    } else {
        alloc_numbered(fd, 1, loser == 1 ? 6 : 1, (3 - (uint64_t)loser) * MIB);
    }
    for (;;)
        pause();
}

/* The value of the series line that starts with series in /metrics. */
static uint64_t metric(unsigned port, const char *series) {
    char *b = NULL;
    assert_int_equal(hs_http_get(port, "localhost", "/metrics", &b), 200);
    const char *m = b != NULL ? strstr(b, series) : NULL;
    assert_non_null(m);
    uint64_t v = strtoull(m + strlen(series), NULL, 10);
    free(b);
    return v;
}

/* /metrics showed the clients not listed (the "other" series) as the total
 * less the listed ones summed modulo 2^64: with a listed client's loss at
 * the top (saturated) and another's 5, a client that lost nothing read
 * 2^64 - 5 events lost. The sum saturates now, and the rest is never less
 * than 0. */
static void metrics_other_loss_never_wraps(void **state) {
    (void)state;
    (void)hs_start(trackd, &paths,
                   (const char *const[]){"--http", "127.0.0.1:0", "--metrics-clients", "2", NULL}, 0);
    unsigned port = hs_http_port(paths.log);
    for (loser = 0; loser < 3; loser++)
        hs_track(test_fork(loses_events));
    assert_int_equal(hs_wait_total(paths.sock, "live", 4, TEST_HANG_S), 4);
    uint64_t other = metric(port, "bh_trackd_client_events_lost{client=\"other\",pid=\"other\"} ");
    print_message("/metrics events lost: listed clients 2^64 - 1 (saturated) and 5, the other one 0: "
                  "\"other\" reads %llu\n",
                  (unsigned long long)other);
    assert_int_equal(other, 0);
}

/* ------------------------------------------------ numbers in requests */

/* An address asked about must be the one answered for: only decimal, or
 * hexadecimal after one 0x. strtoull's base 16 took a second 0x, so
 * /api/history?address=0x0x5 answered for address 5. */
static void a_number_with_two_hex_prefixes_is_refused(void **state) {
    (void)state;
    (void)hs_start(trackd, &paths, (const char *const[]){"--http", "127.0.0.1:0", NULL}, 0);
    unsigned port = hs_http_port(paths.log);
    static const struct {
        const char *path;
        int status;
    } cases[] = {
        {"/api/history?address=0x0x5", 400}, {"/api/history?address=0X0x5", 400},
        {"/api/live?offset=0x0x1", 400},     {"/api/timeline?since=0x0x1", 400},
        {"/api/history?address=0x5", 200},   {"/api/history?address=0x05", 200},
        {"/api/history?address=5", 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = hs_http_get(port, "localhost", cases[i].path, NULL);
        print_message("%s: %d\n", cases[i].path, st);
        assert_int_equal(st, cases[i].status);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_hostile_round4 PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(tt_byte_sums_never_wrap),
        T(the_timeline_never_wraps_a_domain),
        T(tt_query_never_wraps_with_native_bytes),
        T(metrics_other_loss_never_wraps),
        T(a_number_with_two_hex_prefixes_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
