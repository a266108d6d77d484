/*
 * test_ring.c - the socket reporter's event ring against a real bh-trackd:
 * loss counted alike on both sides, forced loss repaired by a resync that
 * keeps allocation times, and rings written by a hostile producer.
 *
 * usage: test_ring PATH-TO-bh-trackd [slow]   (slow: under valgrind)
 *
 * Each test starts its own server on a socket in a temporary directory and
 * reads its view back with `bh-trackd stats|dump --json`. Work is bounded by
 * counts; waits poll for a condition (TEST_HANG_S at most).
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
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/server.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static pid_t start_server(void) {
    const char *base[] = {trackd,       "--socket", paths.sock, "--summary", paths.summary,
                          "--grace-ms", "300",      "--log",    paths.log,   NULL};
    pid_t pid = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.sock);
    return pid;
}

/* `bh-trackd dump --json`, into a static buffer. */
static const char *dump_json(void) {
    static char buf[1 << 16];
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s dump --json --socket %s", trackd, paths.sock);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    assert_int_equal(pclose(f), 0);
    return buf;
}

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-ring-test");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

static int raw_connect(void) {
    int fd = bh_unix_connect(paths.sock);
    assert_true(fd >= 0);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const void *p, size_t n) {
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void send_hello(int fd) {
    uint8_t f[BH_WIRE_HEADER + 14];
    size_t h = bh_wire_header(f, BH_WIRE_HELLO, 14);
    bh_put32(f + h, (uint32_t)getpid());
    bh_put16(f + h + 4, BH_WIRE_VERSION);
    bh_put16(f + h + 6, 0);
    bh_put16(f + h + 8, 4);
    memcpy(f + h + 10, "ring", 4);
    send_all(fd, f, sizeof(f));
}

static void send_stream_frame(int fd, uint16_t type, uint32_t stream) {
    uint8_t f[BH_WIRE_HEADER + 4];
    size_t h = bh_wire_header(f, type, 4);
    bh_put32(f + h, stream);
    send_all(fd, f, sizeof(f));
}

/* ------------------------------------------------------------ tests */

/* A resync entry says how long the allocation has been live: the server's
 * dump shows that age, not the time since the resync (0.3.1 had no such
 * entry and restarted every age at the resync). */
static void an_aged_resync_entry_keeps_its_age(void **state) {
    (void)state;
    pid_t srv = start_server();
    int fd = raw_connect();
    send_hello(fd);
    send_stream_frame(fd, BH_WIRE_RESYNC_BEGIN, 1);
    uint8_t f[BH_WIRE_HEADER + 8 + BH_WIRE_RESYNC_AGED_ENTRY];
    size_t h = bh_wire_header(f, BH_WIRE_RESYNC_CHUNK_AGED, 8 + BH_WIRE_RESYNC_AGED_ENTRY);
    memset(f + h, 0, 8 + BH_WIRE_RESYNC_AGED_ENTRY);
    bh_put32(f + h, 1);
    bh_put32(f + h + 4, 1);
    bh_put32(f + h + 8, 3);            /* device */
    bh_put64(f + h + 16, 0x7000);      /* address */
    bh_put64(f + h + 24, 4096);        /* size */
    bh_put64(f + h + 32, 90u * 1000u); /* live for 90 s */
    send_all(fd, f, sizeof(f));
    send_stream_frame(fd, BH_WIRE_RESYNC_END, 1);
    test_wait_stat(trackd, paths.sock, "server", "resyncs", 1);
    const char *j = dump_json();
    const char *age = strstr(j, "\"age_s\":");
    assert_non_null(age);
    assert_true(strtod(age + 8, NULL) >= 90.0);
    close(fd);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_ring PATH-TO-bh-trackd [slow]\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(an_aged_resync_entry_keeps_its_age, setup, teardown),
    };
    return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
