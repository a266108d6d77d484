/*
 * test_trackd_tt.c - bh-trackd --compat-tt against TT-Metal's allocation
 * records, written from the documented formats (docs/protocol.md, "TT-Metal
 * compat records"): 72-, 112- and 144-byte records, every BufferType, and the
 * answers TT's own allocation server gives on the same traffic.
 *
 * usage: test_trackd_tt PATH-TO-bh-trackd PATH-TO-bh-demo [slow]
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
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/server.h"

static const char *trackd, *demo;
static pid_t server; /* the latest started */
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
    const char *base[] = {trackd,       "--socket", paths.sock, "--compat-tt", "--compat-socket",
                          paths.compat, "--log",    paths.log,  "--grace-ms",  "200",
                          NULL};
    server = test_server_spawn(base, extra, 0);
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
    test_servers_end();
    return test_paths_remove(&paths);
}

/* ------------------------------------------------------------ tests */

/* Every BufferType in 72-byte records: RESPONSE has dram, l1, l1_small
 * (SYSTEM_MEMORY and L1_SMALL added, as TT's server does) and trace. */
static void each_buffer_type_in_72_byte_records_is_answered_as_tt_does(void **state) {
    (void)state;
    static const char *const extra[] = {"--compat-record-size", "72", NULL};
    start_server(extra);
    int fd = test_connect(paths.compat);
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

/* `bh-trackd stats --json`, into a static buffer. */
static const char *stats(void) {
    static char buf[1 << 16];
    return test_stats_json(trackd, paths.sock, buf, sizeof(buf));
}

/* Each BufferType and the circular-buffer and kernel records in 112- and
 * 144-byte records, auto-detected: RESPONSE of the connection's size, with
 * cb_allocated and kernel_allocated at 72 and 80 in the 144-byte one. */
static void records_of_112_and_144_bytes_are_detected_and_answered(void **state) {
    (void)state;
    /* The rows are read after each connection closed: a grace period out of
     * reach keeps them live however slow the machine (200 ms turned them
     * into leaks under valgrind or beside busy loops). */
    static const char *const keep[] = {"--grace-ms", "600000", NULL};
    start_server(keep);
    static const size_t sizes[] = {112, 144};
    for (int i = 0; i < 2; i++) {
        size_t n = sizes[i];
        int32_t dev = 7 + i;
        int fd = test_connect(paths.compat);
        send_rec(fd, n, ALLOC, dev, 1000, T_DRAM, 0x1000);
        send_rec(fd, n, ALLOC, dev, 200, T_L1, 0x2000);
        send_rec(fd, n, ALLOC, dev, 16384, T_SYSTEM, 0x3000);
        send_rec(fd, n, ALLOC, dev, 30, T_L1_SMALL, 0x4000);
        send_rec(fd, n, ALLOC, dev, 2097152, T_TRACE, 0x5000);
        send_rec(fd, n, 8, dev, 65536, 0, 3);   /* CB_ALLOC cb_id 3 */
        send_rec(fd, n, 8, dev, 4096, 0, 4);    /* CB_ALLOC cb_id 4 */
        send_rec(fd, n, 10, dev, 12288, 2, 77); /* KERNEL_LOAD kernel_id 77, kernel type 2 */
        send_rec(fd, n, 9, dev, 0, 0, 4);       /* CB_FREE cb_id 4 */
        uint8_t r[144];
        ask(fd, n, QUERY, dev, r);
        assert_int_equal(r[0], RESPONSE);
        assert_int_equal(get(r + 4, 4), (uint64_t)dev);
        assert_int_equal(get(r + 40, 8), 1000);
        assert_int_equal(get(r + 48, 8), 200);
        assert_int_equal(get(r + 56, 8), 16384 + 30);
        assert_int_equal(get(r + 64, 8), 2097152);
        if (n == 144) {
            assert_int_equal(get(r + 72, 8), 65536); /* cb_allocated */
            assert_int_equal(get(r + 80, 8), 12288); /* kernel_allocated */
        } else {
            assert_int_equal(get(r + 72, 8), 0); /* total_dram_size: not a DEVICE_INFO_RESPONSE */
        }
        send_rec(fd, n, 11, dev, 0, 2, 77); /* KERNEL_UNLOAD */
        ask(fd, n, QUERY, dev, r);
        assert_int_equal(get(r + 80, 8), 0);
        close(fd);
    }
    const char *j = stats();
    assert_int_equal(test_json_u64(j, "server", "compat_ignored"), 0);
    assert_int_equal(test_json_u64(j, "tt", "unknown_frees"), 0);
    assert_non_null(strstr(j, "\"device\":8,\"kind\":\"cb\",\"live\":1,\"live_bytes\":65536,"));
    assert_non_null(strstr(j, "\"device\":8,\"kind\":\"system_memory\",\"live\":1,\"live_bytes\":16384,"));
}

/* TT's semantics on two processes' traffic: (device, buffer_id) across
 * processes, a repeated ALLOC of a live buffer is one more reference, a FREE
 * releases one. The figures are what TT's server answers by them. */
static int fd_a, fd_b;
static void two_processes_share_buffers_by_reference(void **state) {
    (void)state;
    start_server(NULL);
    fd_a = test_connect(paths.compat);
    uint8_t r[144];
    /* A and B (another process) allocate the same 100 MiB DRAM buffer. */
    send_rec(fd_a, 72, ALLOC, 0, 104857600, T_DRAM, 0xA000);
    send_rec(fd_a, 72, ALLOC, 0, 4096, T_L1, 0xB000);
    pid_t b = fork();
    assert_true(b >= 0);
    if (b == 0) {
        fd_b = test_connect(paths.compat);
        send_rec(fd_b, 72, ALLOC, 0, 104857600, T_DRAM, 0xA000);
        send_rec(fd_b, 72, ALLOC, 0, 8192, T_DRAM, 0xD000); /* never freed: a leak when B is gone */
        send_rec(fd_b, 72, FREE, 0, 0, 0, 0xB000);          /* A's L1 buffer: TT frees it */
        ask(fd_b, 72, QUERY, 0, r);
        _exit(get(r + 40, 8) == 104857600 + 8192 && get(r + 48, 8) == 0 ? 0 : 1);
    }
    assert_int_equal(test_reap(b), 0);
    ask(fd_a, 72, QUERY, 0, r);
    assert_int_equal(get(r + 40, 8), 104857600 + 8192); /* once, not 209715200 */
    send_rec(fd_a, 72, FREE, 0, 0, 0, 0xA000);          /* one of two references */
    ask(fd_a, 72, QUERY, 0, r);
    assert_int_equal(get(r + 40, 8), 104857600 + 8192);
    send_rec(fd_a, 72, FREE, 0, 0, 0, 0xA000); /* the last */
    send_rec(fd_a, 72, FREE, 0, 0, 0, 0xB000); /* B freed it: unknown to TT */
    /* A's own buffer allocated twice and freed twice: two references. */
    send_rec(fd_a, 72, ALLOC, 0, 512, T_L1, 0xC000);
    send_rec(fd_a, 72, ALLOC, 0, 512, T_L1, 0xC000);
    send_rec(fd_a, 72, FREE, 0, 0, 0, 0xC000);
    send_rec(fd_a, 72, FREE, 0, 0, 0, 0xC000);
    send_rec(fd_a, 72, FREE, 0, 0, 0, 0xE000); /* never allocated */
    ask(fd_a, 72, QUERY, 0, r);
    assert_int_equal(get(r + 40, 8), 8192);
    assert_int_equal(get(r + 48, 8), 0);
    /* B is gone: its 8192 bytes leaked, by TT's table. */
    assert_int_equal(test_wait_stat(trackd, paths.sock, "tt", "leaked_bytes", 8192), 8192);
    const char *j = stats();
    assert_int_equal(test_json_u64(j, "tt", "unknown_frees"), 2);
    assert_int_equal(test_json_u64(j, "tt", "references"), 2);
    assert_int_equal(test_json_u64(j, "tt", "leaks"), 1);
    assert_int_equal(test_json_u64(j, "tt", "live_bytes"), 8192);
    /* bh-trackd's own findings, per process, in addition: A allocated
     * 0xC000 while it held it; unknown FREEs: B's of A's 0xB000, A's second
     * of 0xA000 (B holds the other reference) and of 0xC000, and 0xE000. */
    assert_int_equal(test_json_u64(j, "totals", "duplicate_allocs"), 1);
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 4);
    close(fd_a);
}

/* `bh-trackd history ADDRESS --json`, into a static buffer. */
static const char *history(uint64_t address) {
    static char buf[1 << 14];
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "history 0x%llx --json", (unsigned long long)address);
    return test_trackd_says(trackd, cmd, paths.sock, buf, sizeof(buf));
}

/* The per-process view charges a FREE to the buffer it frees: a
 * buffer_type of 1..4 names it; 0, what TT's clients send in every FREE,
 * reads as not given: the live allocation there, else the kind the process
 * had it under, else kind "unknown". A DRAM row for a buffer that was never
 * DRAM was shown before. TT's table keys by (device, buffer_id) whatever
 * the type, as TT's server does. */
static void a_free_is_charged_to_the_kind_of_buffer_it_frees(void **state) {
    (void)state;
    start_server(NULL);
    int fd = test_connect(paths.compat);
    send_rec(fd, 72, ALLOC, 0, 4096, T_L1, 0x7770000); /* L1 in every record, freed twice */
    send_rec(fd, 72, FREE, 0, 0, T_L1, 0x7770000);
    send_rec(fd, 72, FREE, 0, 0, T_L1, 0x7770000);
    send_rec(fd, 72, ALLOC, 0, 4096, T_L1_SMALL, 0x8880000); /* as TT's clients: 0 in FREE */
    send_rec(fd, 72, FREE, 0, 0, T_DRAM, 0x8880000);
    send_rec(fd, 72, FREE, 0, 0, T_DRAM, 0x8880000);
    send_rec(fd, 72, FREE, 0, 0, T_DRAM, 0x9990000);        /* never allocated */
    send_rec(fd, 72, ALLOC, 0, 1048576, T_DRAM, 0xAAA0000); /* DRAM and L1 at one address, */
    send_rec(fd, 72, ALLOC, 0, 8192, T_L1, 0xAAA0000);      /* one key to TT: two references */
    send_rec(fd, 72, FREE, 0, 0, T_L1, 0xAAA0000);          /* the L1 one */
    uint8_t r[72];
    ask(fd, 72, QUERY, 0, r); /* answered after every record before it */
    assert_int_equal(get(r + 40, 8), 1048576);
    const char *h = history(0x7770000);
    assert_non_null(strstr(h, "\"kind\":\"l1\",\"live\":false,\"size\":0,\"allocs\":1,\"frees\":2,"
                              "\"unknown_frees\":1,"));
    assert_null(strstr(h, "\"kind\":\"dram\""));
    h = history(0x8880000);
    assert_non_null(strstr(h, "\"kind\":\"l1_small\",\"live\":false,\"size\":0,\"allocs\":1,\"frees\":2,"
                              "\"unknown_frees\":1,"));
    assert_null(strstr(h, "\"kind\":\"dram\""));
    h = history(0x9990000);
    assert_non_null(strstr(h, "\"kind\":\"unknown\",\"live\":false,\"size\":0,\"allocs\":0,\"frees\":1,"
                              "\"unknown_frees\":1,"));
    assert_null(strstr(h, "\"kind\":\"dram\""));
    h = history(0xAAA0000);
    assert_non_null(strstr(h, "\"kind\":\"dram\",\"live\":true,"));
    assert_non_null(strstr(h, "\"kind\":\"l1\",\"live\":false,"));
    const char *j = stats();
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 3);
    assert_int_equal(test_json_u64(j, "tt", "unknown_frees"), 3);
    close(fd);
}

/* A record the server cannot use is ignored: the client is never
 * disconnected, so a TT process (SIGPIPE at its default) lives on, and its
 * later records count. */
static void unusable_records_are_ignored_and_the_client_lives_on(void **state) {
    (void)state;
    start_server(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        signal(SIGPIPE, SIG_DFL); /* as a TT process has it */
        int fd = test_connect(paths.compat);
        uint8_t r[144];
        send_rec(fd, 72, ALLOC, 0, 4096, T_DRAM, 0x1000);
        send_rec(fd, 72, ALLOC, 0, 4096, 9, 0x2000);       /* buffer_type 9: none */
        send_rec(fd, 72, 200, 0, 4096, T_DRAM, 0x3000);    /* type 200: none */
        send_rec(fd, 72, ALLOC, -5, 4096, T_DRAM, 0x4000); /* device -5 */
        send_rec(fd, 72, RESPONSE, 0, 0, 0, 0);            /* an answer, from a client */
        send_rec(fd, 72, ALLOC, 0, 2097152, T_TRACE, 0x5000);
        ask(fd, 72, QUERY, 0, r);
        if (get(r + 40, 8) != 4096 || get(r + 64, 8) != 2097152)
            _exit(1);
        for (int i = 0; i < 100; i++) /* the socket is still open: these are read */
            send_rec(fd, 72, ALLOC, 1, 64, T_L1, 0x100000u + 64u * (uint64_t)i);
        ask(fd, 72, QUERY, 1, r);
        _exit(get(r + 48, 8) == 6400 ? 0 : 2);
    }
    assert_int_equal(test_reap(child), 0); /* not 128 + SIGPIPE */
    const char *j = stats();
    assert_int_equal(test_json_u64(j, "server", "compat_ignored"), 4);
    assert_int_equal(test_json_u64(j, "server", "malformed"), 0);
    assert_int_equal(test_json_u64(j, "tt", "allocs"), 102);
}

/* An ALLOC that could wrap the device's sums (over 2^48 bytes, or taking
 * one kind of a device past 2^50) is ignored whole: not kept, not counted,
 * not even as one more reference to a live key; other kinds still count. */
static void allocs_too_large_to_count_are_ignored(void **state) {
    (void)state;
    start_server(NULL);
    int fd = test_connect(paths.compat);
    const uint64_t big = 1ull << 48;
    send_rec(fd, 72, ALLOC, 2, big * 2, T_DRAM, 0x1); /* over 2^48 */
    for (uint64_t i = 0; i < 4; i++)                  /* 2^50 on device 2's DRAM: the most */
        send_rec(fd, 72, ALLOC, 2, big, T_DRAM, 0x10 + i);
    send_rec(fd, 72, ALLOC, 2, big, T_DRAM, 0x14); /* past 2^50 */
    send_rec(fd, 72, ALLOC, 2, big, T_DRAM, 0x10); /* a live key, but as large */
    send_rec(fd, 72, ALLOC, 2, 4096, T_L1, 0x20);
    uint8_t r[72];
    ask(fd, 72, QUERY, 2, r);
    assert_int_equal(get(r + 40, 8), 4 * big);
    assert_int_equal(get(r + 48, 8), 4096);
    const char *j = stats();
    assert_int_equal(test_json_u64(j, "server", "compat_ignored"), 3);
    assert_int_equal(test_json_u64(j, "tt", "allocs"), 5);
    assert_int_equal(test_json_u64(j, "tt", "references"), 0);
    close(fd);
}

/* DEVICE_INFO: TT's server without devices answers num_devices 0 and
 * is_available 0; with --tt-devices the operator's description. */
static void device_info_is_tt_without_devices_unless_described(void **state) {
    (void)state;
    start_server(NULL);
    int fd = test_connect(paths.compat);
    uint8_t r[144];
    send_rec(fd, 112, ALLOC, 3, 4096, T_DRAM, 0x1000);
    ask(fd, 112, DEVINFO_Q, -1, r);
    assert_int_equal(r[0], DEVINFO_R);
    assert_int_equal(get(r + 104, 4), 0); /* is_available */
    assert_int_equal(get(r + 108, 4), 0); /* num_devices */
    ask(fd, 112, DEVINFO_Q, 3, r);
    assert_int_equal(get(r + 104, 4), 0);
    close(fd);
    (void)test_server_stop(server, SIGKILL);
    assert_int_equal(test_paths_remove(&paths), 0);
    test_paths_make(&paths, "bh-trackd-tt");

    /* A bad description is refused at start; a good one, from a file. */
    pid_t bad = fork();
    assert_true(bad >= 0);
    if (bad == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execl(trackd, trackd, "--socket", paths.sock, "--tt-devices", "count=2,arch=pdp11", (char *)NULL);
        _exit(127);
    }
    assert_int_equal(test_reap(bad), 2);
    char file[160];
    snprintf(file, sizeof(file), "%s/devices", paths.dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fprintf(f, "# two Wormhole_B0 boards\ncount=2,arch=wormhole_b0\ndram=12884901888,l1=1499136\n"
               "dram_channels=12,l1_per_core=1499136\n");
    fclose(f);
    const char *const extra[] = {"--tt-devices-file", file, NULL};
    start_server(extra);
    static const struct {
        size_t size, at; /* where the device fields start */
    } layouts[] = {{112, 72}, {144, 88}};
    for (int i = 0; i < 2; i++) {
        size_t n = layouts[i].size, at = layouts[i].at;
        fd = test_connect(paths.compat);
        ask(fd, n, DEVINFO_Q, -1, r);
        assert_int_equal(get(r + at + 36, 4), 2); /* num_devices */
        ask(fd, n, DEVINFO_Q, 1, r);
        assert_int_equal(r[0], DEVINFO_R);
        assert_int_equal(get(r + at, 8), 12884901888u);    /* total_dram_size */
        assert_int_equal(get(r + at + 8, 8), 1499136);     /* total_l1_size */
        assert_int_equal(get(r + at + 16, 4), 2);          /* arch_type: Wormhole_B0 */
        assert_int_equal(get(r + at + 20, 4), 12);         /* num_dram_channels */
        assert_int_equal(get(r + at + 24, 4), 1073741824); /* dram_size_per_channel */
        assert_int_equal(get(r + at + 28, 4), 1499136);    /* l1_size_per_core */
        assert_int_equal(get(r + at + 32, 4), 1);          /* is_available */
        ask(fd, n, DEVINFO_Q, 2, r);
        assert_int_equal(get(r + at + 32, 4), 0);
        close(fd);
    }
}

/* The library's TT reporter in each record size (BH_TT_RECORD_SIZE), read
 * by a listener of ours: every BufferType in its TT number, the size's
 * records back to back, and what it withholds counted apart from dropped. */
static void the_reporter_speaks_each_size_and_counts_what_it_withholds(void **state) {
    (void)state;
    static const char *const sizes[] = {"72", "112", "144"};
    static const struct {
        uint32_t kind;
        uint8_t btype;
    } kinds[] = {{BH_MEM_DRAM, T_DRAM},
                 {BH_MEM_L1, T_L1},
                 {BH_MEM_SYSTEM, T_SYSTEM},
                 {BH_MEM_L1_SMALL, T_L1_SMALL},
                 {BH_MEM_TRACE, T_TRACE}};
    for (int i = 0; i < 3; i++) {
        size_t n = (size_t)atoi(sizes[i]);
        char path[160];
        snprintf(path, sizeof(path), "%s/tt%zu.sock", paths.dir, n);
        int lfd = test_unix_listen(path, 4);
        setenv("BH_TT_RECORD_SIZE", sizes[i], 1);
        bh_socket_options so = {.flags = BH_SOCKET_COMPAT_TT, .max_block_us = 100000};
        bh_reporter rep;
        assert_int_equal(bh_socket_reporter_open(path, &so, &rep), BH_OK);
        uint64_t seq = 0;
        for (size_t k = 0; k < 5; k++) {
            bh_event ev = {BH_EVENT_ALLOC, BH_DOMAIN(3, kinds[k].kind), 0x1000 * (k + 1), 100 + k, ++seq};
            rep.report(rep.ctx, &ev);
        }
        bh_event own = {BH_EVENT_ALLOC, BH_DOMAIN(3, 9), 0x9000, 64, ++seq};         /* kind 9: no TT type */
        bh_event bad = {BH_EVENT_FREE, BH_DOMAIN(3, BH_MEM_DRAM), 0x7000, 0, ++seq}; /* never allocated */
        bh_event fr = {BH_EVENT_FREE, BH_DOMAIN(3, BH_MEM_DRAM), 0x1000, 100, ++seq};
        rep.report(rep.ctx, &own);
        rep.report(rep.ctx, &bad);
        rep.report(rep.ctx, &fr);
        assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
        bh_reporter_stats st;
        assert_int_equal(bh_socket_reporter_stats(&rep, &st), BH_OK);
        assert_int_equal(st.withheld, 2);
        assert_int_equal(st.dropped, 0);
        assert_int_equal(st.sent, 6);
        bh_socket_reporter_close(&rep);
        int fd = accept(lfd, NULL, NULL);
        assert_true(fd >= 0);
        uint8_t r[7 * 144];
        size_t got = 0;
        ssize_t k;
        while ((k = recv(fd, r + got, sizeof(r) - got, 0)) > 0) /* the reporter closed: EOF ends it */
            got += (size_t)k;
        assert_int_equal(got, 6 * n);
        for (size_t j = 0; j < 6; j++) {
            const uint8_t *p = r + j * n;
            assert_int_equal(p[0], j < 5 ? ALLOC : FREE);
            assert_int_equal(get(p + 4, 4), 3);
            assert_int_equal(get(p + 24, 8), j < 5 ? 0x1000 * (j + 1) : 0x1000);
            if (j < 5) {
                assert_int_equal(p[16], kinds[j].btype);
                assert_int_equal(get(p + 8, 8), 100 + j);
            }
            for (size_t b = 40; b < n; b++) /* the server's fields stay zero */
                assert_int_equal(p[b], 0);
        }
        close(fd);
        close(lfd);
    }
    unsetenv("BH_TT_RECORD_SIZE");
}

/* Runs bh-demo with args, in env (NULL-terminated "NAME=VALUE" list, or
 * NULL) on top of ours; its exit status. */
static int run_demo(const char *const *env, const char *const *args) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[16] = {demo, "--steps", "5", "--threads", "2", "--quiet", "--json"};
        int n = 7;
        for (int i = 0; args[i] != NULL && n < 15; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        for (int i = 0; env != NULL && env[i] != NULL; i++)
            putenv((char *)env[i]);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execv(demo, (char *const *)argv);
        _exit(127);
    }
    return test_reap(pid);
}

/* bh-demo reports to a TT server (here bh-trackd --compat-tt): the raw run,
 * as TT's own client, gets unknown-buffer warnings; the handle run, through
 * the library's TT reporter, none. */
static void bh_demo_shows_the_difference_on_a_tt_server(void **state) {
    (void)state;
    start_server(NULL);
    static const char *const handles[] = {"--tt-server", paths.compat, "--run", "handles", NULL};
    assert_int_equal(run_demo(NULL, handles), 0);
    const char *j = stats();
    uint64_t allocs = test_json_u64(j, "tt", "allocs");
    assert_true(allocs > 0);
    assert_int_equal(test_json_u64(j, "tt", "frees"), allocs);
    assert_int_equal(test_json_u64(j, "tt", "unknown_frees"), 0);
    assert_int_equal(test_json_u64(j, "tt", "live"), 0);
    /* The same from the environment, in 144-byte records. */
    static char env_on[] = "TT_ALLOC_TRACKING_ENABLED=1", env_size[] = "BH_TT_RECORD_SIZE=144";
    static char env_path[160];
    snprintf(env_path, sizeof(env_path), "BH_TT_SOCKET=%s", paths.compat);
    const char *const env[] = {env_on, env_size, env_path, NULL};
    static const char *const handles_env[] = {"--run", "handles", NULL};
    assert_int_equal(run_demo(env, handles_env), 0);
    j = stats();
    assert_true(test_json_u64(j, "tt", "allocs") > allocs);
    assert_int_equal(test_json_u64(j, "tt", "unknown_frees"), 0);
    static const char *const raw[] = {"--tt-server", paths.compat, "--run", "raw", NULL};
    assert_int_equal(run_demo(NULL, raw), 0);
    j = stats();
    assert_true(test_json_u64(j, "tt", "unknown_frees") > 0);
    assert_int_equal(test_json_u64(j, "server", "compat_ignored"), 0);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_trackd_tt PATH-TO-bh-trackd PATH-TO-bh-demo [slow]\n");
        return 2;
    }
    trackd = argv[1];
    demo = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(each_buffer_type_in_72_byte_records_is_answered_as_tt_does, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(records_of_112_and_144_bytes_are_detected_and_answered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(two_processes_share_buffers_by_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(a_free_is_charged_to_the_kind_of_buffer_it_frees, setup, teardown),
        cmocka_unit_test_setup_teardown(unusable_records_are_ignored_and_the_client_lives_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(allocs_too_large_to_count_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(device_info_is_tt_without_devices_unless_described, setup, teardown),
        cmocka_unit_test_setup_teardown(the_reporter_speaks_each_size_and_counts_what_it_withholds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bh_demo_shows_the_difference_on_a_tt_server, setup, teardown),
    };
    return cmocka_run_group_tests_name("trackd_tt", tests, NULL, NULL);
}
