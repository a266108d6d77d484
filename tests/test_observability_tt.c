/*
 * test_observability_tt.c - TT-Metal's records on bh-trackd's compatible
 * socket, as later toolkits send them (docs/protocol.md): the record size
 * told only by what the bytes prove (td_tt_detect alone), 112-byte records
 * tracked by kind and answered, 72-byte clients on 64 devices that query
 * first or leave at once, a configured record size that never misreads
 * others; checked by the TT answers, /api/stats and /metrics.
 *
 * usage: test_observability_tt PATH-TO-bh-trackd
 *
 * Must never depend on TT-Metal itself (records are written here, from the
 * protocol) nor on the test binary's name (the name the server gives a TT
 * peer is this process's, read back). The 72-, 112- and 144-byte formats
 * against TT's own server's answers: test_trackd_tt.
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
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/observe.h"
#include "trackd.h"
#include "wire.h"

#define BH_TT_DEVICE_INFO_QUERY_FOR_TEST 6 /* answered with type 7 */

#define TT112 112u

/* This process's name (its first 15 bytes, as the kernel keeps it): what
 * the server names a TT peer after. */
static const char *own_name(void) {
    static char name[17];
    prctl(PR_GET_NAME, name, 0, 0, 0);
    return name;
}

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
    ob_start(NULL);
    int fd = test_connect(ob_paths.compat);
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
    const char *j = ob_api_stats();
    assert_non_null(strstr(j, "\"malformed\":0,"));
    assert_non_null(strstr(j, "\"unknown_frees\":0,"));
    assert_non_null(strstr(j, "\"device\":40,\"kind\":\"system_memory\",\"live\":1,\"live_bytes\":500,"));
    assert_non_null(strstr(j, "\"device\":40,\"kind\":\"l1\",\"live\":0,"));
    /* The records carry no name: the peer's process name stands in. */
    char want[64];
    snprintf(want, sizeof(want), "\"name\":\"%s\",\"device\":40", own_name());
    assert_non_null(strstr(j, want));
    close(fd);
}

static void tt_72_byte_clients_on_64_devices_query_first_and_leave_early(void **state) {
    (void)state;
    ob_start(NULL);
    /* A client whose first record is a QUERY gets its answer: it is at rest. */
    int fd = test_connect(ob_paths.compat);
    uint8_t r[TT112];
    tt_ask(fd, BH_TT_QUERY, 72, 0, r);
    assert_int_equal(r[0], BH_TT_RESPONSE);
    /* One that sends an ALLOC and hangs up at once is counted, not refused. */
    int quick = test_connect(ob_paths.compat);
    tt_send(quick, BH_TT_ALLOC, 72, 5, 777, 0, 0x777000);
    close(quick);
    /* 64 devices, each with its own DRAM bytes; QUERY answers per device. */
    for (int32_t d = 0; d < (int32_t)OB_DEVICES; d++)
        tt_send(fd, BH_TT_ALLOC, 72, d, 1000u + (uint64_t)d, 0, 0x100000u);
    for (int32_t d = 0; d < (int32_t)OB_DEVICES; d += 21) {
        tt_ask(fd, BH_TT_QUERY, 72, d, r);
        assert_int_equal(bh_get64(r + 40), 1000u + (uint64_t)d + (d == 5 ? 777u : 0u));
    }
    tt_ask(fd, BH_TT_QUERY, 72, 63, r);
    assert_int_equal(bh_get64(r + 40), 1063);
    char *m = NULL;
    assert_int_equal(ob_http_get(ob_port, "/metrics", &m), 200);
    assert_non_null(strstr(m, "bh_trackd_live_bytes{device=\"63\",kind=\"dram\"} 1063\n"));
    assert_non_null(strstr(m, "bh_trackd_live_bytes{device=\"5\",kind=\"dram\"} 1782\n"));
    assert_non_null(strstr(m, "bh_trackd_malformed_total 0\n"));
    free(m);
    close(fd);
}

static void a_configured_record_size_never_misreads_other_records(void **state) {
    (void)state;
    const char *extra[] = {"--compat-record-size", "72", NULL};
    ob_start(extra);
    int fd = test_connect(ob_paths.compat);
    tt_send(fd, BH_TT_ALLOC, TT112, 1, 4096, 1, 0x1000); /* 112 bytes: not read as 72 */
    assert_true(ob_stats_contain("\"compat_ignored\":1,"));
    uint8_t sink[8];
    assert_int_equal(recv(fd, sink, sizeof(sink), MSG_DONTWAIT), -1); /* still open: a TT client lives on */
    close(fd);
    const char *j = ob_api_stats();
    assert_non_null(strstr(j, "\"malformed\":0,"));
    assert_non_null(strstr(j, "\"tt\":{\"live\":0,"));
    /* A 72-byte client there is tracked, and named after its process. */
    fd = test_connect(ob_paths.compat);
    tt_send(fd, BH_TT_ALLOC, 72, 9, 4096, 0, 0x9000);
    uint8_t r[TT112];
    tt_ask(fd, BH_TT_QUERY, 72, 9, r);
    assert_int_equal(bh_get64(r + 40), 4096);
    char want[96];
    snprintf(want, sizeof(want), "\"name\":\"%s\",\"device\":9,\"kind\":\"dram\",\"live\":1,", own_name());
    assert_non_null(strstr(ob_api_stats(), want));
    close(fd);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(record_size_is_told_only_by_what_the_bytes_prove),
        OB_TEST(tt_112_byte_records_are_tracked_by_kind_and_answered),
        OB_TEST(tt_72_byte_clients_on_64_devices_query_first_and_leave_early),
        OB_TEST(a_configured_record_size_never_misreads_other_records),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd", &ob_trackd, "observability_tt", tests,
                            sizeof(tests) / sizeof(tests[0]));
}
