/*
 * test_trackd_tt.c - bh-trackd --compat-tt against TT-Metal's allocation
 * records, written from the documented formats (docs/protocol.md, "TT-Metal
 * compat records"): 72-, 112- and 144-byte records, every BufferType, and the
 * answers TT's own allocation server gives on the same traffic.
 *
 * usage: test_trackd_tt PATH-TO-bh-trackd [slow]
 *
 * Owns: building TT records byte by byte from the documented offsets (no
 * helper of the code under test builds them) and the expected figures of TT's
 * semantics. Must never: assert on timing; wait without a bound.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "proc.h"
#include "support/server.h"

static const char *trackd;
static pid_t servers[4];
static int nservers;
static test_paths paths;

/* ------------------------------------------------------------ records */

enum { ALLOC = 1, FREE = 2, QUERY = 3, RESPONSE = 4, DUMP = 5, DEVINFO_Q = 6, DEVINFO_R = 7 };
enum { T_DRAM = 0, T_L1 = 1, T_SYSTEM = 2, T_L1_SMALL = 3, T_TRACE = 4 }; /* TT's BufferType */

static void le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* One record of size bytes (72, 112 or 144) as TT's clients fill it. */
static void rec(uint8_t *p, size_t size, uint8_t type, int32_t device, uint64_t bytes, uint8_t btype,
                uint64_t id) {
    memset(p, 0, size);
    p[0] = type;
    le(p + 4, (uint32_t)device, 4);
    le(p + 8, bytes, 8);
    p[16] = btype;
    le(p + 20, (uint32_t)getpid(), 4);
    le(p + 24, id, 8);
    le(p + 32, type == ALLOC ? 1234567u : 0u, 8);
}

static int tt_connect(void) {
    int fd = bh_unix_connect(paths.compat);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_rec(int fd, size_t size, uint8_t type, int32_t device, uint64_t bytes, uint8_t btype,
                     uint64_t id) {
    uint8_t r[144];
    rec(r, size, type, device, bytes, btype, id);
    assert_int_equal(send(fd, r, size, MSG_NOSIGNAL), (ssize_t)size);
}

/* A QUERY (or DEVICE_INFO_QUERY) and its size-byte answer into out. */
static void ask(int fd, size_t size, uint8_t type, int32_t device, uint8_t *out) {
    send_rec(fd, size, type, device, 0, 0, 0);
    assert_int_equal(recv(fd, out, size, MSG_WAITALL), (ssize_t)size);
}

/* ------------------------------------------------------------ server */

static void start_server(const char *const *extra) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[24] = {trackd,       "--socket", paths.sock, "--compat-tt", "--compat-socket",
                                paths.compat, "--log",    paths.log,  "--grace-ms",  "200"};
        int n = 10;
        for (int i = 0; extra != NULL && extra[i] != NULL && n < 23; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        execv(trackd, (char *const *)argv);
        _exit(127);
    }
    servers[nservers++] = pid;
    test_wait_accepting(paths.sock);
    test_wait_accepting(paths.compat);
}

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-trackd-tt");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < nservers; i++)
        test_kill(servers[i]);
    nservers = 0;
    return test_paths_remove(&paths);
}

/* ------------------------------------------------------------ tests */

/* Every BufferType in 72-byte records: RESPONSE has dram, l1, l1_small
 * (SYSTEM_MEMORY and L1_SMALL added, as TT's server does) and trace. */
static void each_buffer_type_in_72_byte_records_is_answered_as_tt_does(void **state) {
    (void)state;
    static const char *const extra[] = {"--compat-record-size", "72", NULL};
    start_server(extra);
    int fd = tt_connect();
    send_rec(fd, 72, ALLOC, 0, 1000, T_DRAM, 0x1000);
    send_rec(fd, 72, ALLOC, 0, 200, T_L1, 0x2000);
    send_rec(fd, 72, ALLOC, 0, 16384, T_SYSTEM, 0x3000);
    send_rec(fd, 72, ALLOC, 0, 30, T_L1_SMALL, 0x4000);
    send_rec(fd, 72, ALLOC, 0, 2097152, T_TRACE, 0x5000);
    uint8_t r[144];
    ask(fd, 72, QUERY, 0, r);
    assert_int_equal(r[0], RESPONSE);
    assert_int_equal(get(r + 40, 8), 1000);
    assert_int_equal(get(r + 48, 8), 200);
    assert_int_equal(get(r + 56, 8), 16384 + 30);
    assert_int_equal(get(r + 64, 8), 2097152);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_trackd_tt PATH-TO-bh-trackd [slow]\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(each_buffer_type_in_72_byte_records_is_answered_as_tt_does, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("trackd_tt", tests, NULL, NULL);
}
