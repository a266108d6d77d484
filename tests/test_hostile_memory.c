/*
 * test_hostile_memory.c - attacks on a real bh-trackd that try to exhaust
 * what it holds (the 0.3 hardening review): memory for unknown FREEs and for
 * processes that come and go, descriptors for idle connections, buffers for
 * half-sent frames, the live limit and cleanup over many streams of one
 * process. Each is checked by the server's RSS, its own counts (refused,
 * timed out, open connections, leaks) and a bystander served, and prints
 * its figure.
 *
 * usage: test_hostile_memory PATH-TO-bh-trackd [TEST-NAME-PATTERN]
 *
 * Must never depend on the machine's speed or load (waits poll for the
 * server's counts, support/attack.h) nor on the test's own descriptor limit
 * (the server's is set in its child).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/attack.h"
#include "wire.h"

static void unknown_frees_and_pairs(void) {
    int fd = hs_reporter(at_paths.sock);
    hs_events(fd, 1, BH_EVENT_FREE, 0, 0, 0x40000000, 64, 200000);
    for (int k = 0; k < 50; k++) { /* 200,000 ALLOC/FREE pairs, nothing left live */
        hs_events(fd, 1, BH_EVENT_ALLOC, 0, 0, 0x80000000 + (uint64_t)k * 4000 * 64, 64, 4000);
        hs_events(fd, 1, BH_EVENT_FREE, 0, 0, 0x80000000 + (uint64_t)k * 4000 * 64, 64, 4000);
    }
    close(fd);
}

static void holds_then_exits(void) {
    int fd = hs_reporter(at_paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, 0, 0, 0x1000000, 64, 200000);
    close(fd);
}

/* 0.2 kept an entry per address ever seen (unknown FREEs included) and gave
 * nothing back when a client left: 1M unknown FREEs cost 149 MB. */
static void memory_follows_what_is_live(void **state) {
    (void)state;
    pid_t srv = at_start(NULL);
    long rss0 = hs_rss_kb(srv);
    pid_t c = test_fork(unknown_frees_and_pairs);
    waitpid(c, NULL, 0);
    assert_int_equal(at_wait_total("frees", 400000), 400000);
    long rss1 = hs_rss_kb(srv);
    c = test_fork(holds_then_exits);
    waitpid(c, NULL, 0);
    assert_int_equal(at_wait_total("leaks", 200000), 200000);
    long rss2 = hs_rss_kb(srv);
    print_message("memory: 200K unknown FREEs + 200K pairs: RSS %ld -> %ld kB; 200K live then gone: %ld kB\n",
                  rss0, rss1, rss2);
    assert_true(rss1 - rss0 < 16 * 1024);
    assert_true(rss2 - rss0 < 24 * 1024);
    test_server_stop_clean(srv);
}

static uint32_t device_base; /* set before test_fork: each child's own devices */

static void groups_then_exits(void) {
    int fd = hs_reporter(at_paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, device_base, 4096, 0x1000, 64, 4096);
    hs_events(fd, 1, BH_EVENT_FREE, device_base, 4096, 0x1000, 64, 4096);
    close(fd);
}

/* (stream, device) groups in a stats JSON reply: rows plus omitted ones. */
static uint64_t groups_in(const char *j) {
    uint64_t n = 0;
    for (const char *p = j; p != NULL && (p = strstr(p, "\"peak_bytes\":")) != NULL; p++)
        n++;
    return n + hs_num(j, "omitted_clients");
}

/* 48 processes one after another, each with 4,096 devices of its own (an
 * ALLOC and a FREE on each: nothing leaks), then gone. Their counters were
 * kept for --forget-ms (5 minutes) however many came, and then joined
 * "(departed)" with one group per device, forever: memory grew with every
 * process. Gone processes now keep at most 65,536 groups (the oldest retire
 * early) and "(departed)" at most --max-groups-per-client. */
static void processes_that_come_and_go_hold_bounded_memory(void **state) {
    (void)state;
    pid_t srv = at_start(NULL);
    long rss0 = hs_rss_kb(srv);
    for (uint32_t k = 0; k < 48; k++) {
        device_base = 1000000 + k * 4096;
        pid_t c = test_fork(groups_then_exits);
        waitpid(c, NULL, 0);
    }
    assert_int_equal(at_wait_total("frees", 48u * 4096), 48u * 4096);
    char *j = NULL;
    uint64_t groups = UINT64_MAX;
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end;
         test_sleep_ms(100)) { /* until the server has seen every process gone */
        free(j);
        j = at_query(1, NULL);
        groups = groups_in(j);
        if (hs_num(j, "processes_gone") >= 48 && hs_num(j, "processes_gone") != UINT64_MAX)
            break;
    }
    long rss = hs_rss_kb(srv);
    print_message("48 processes x 4096 devices, gone: %llu groups kept, RSS %ld -> %ld kB\n",
                  (unsigned long long)groups, rss0, rss);
    assert_int_equal(hs_num(j, "allocs"), 48u * 4096); /* totals stay whole */
    assert_true(groups <= 65536 + 2 * 4096);
    free(j);
    test_server_stop_clean(srv);
}

/* 100 connections that never say HELLO, against a server with 64
 * descriptors: 0.2 let them sit forever and new clients waited in its
 * backlog. Over-cap connections are refused at once, idle ones time out. */
static void idle_connections_are_capped_refused_and_timed_out(void **state) {
    (void)state;
    at_nofile = 64;
    const char *extra[] = {"--handshake-timeout-ms", "1000", NULL};
    pid_t srv = at_start(extra);
    int fds[100];
    for (int i = 0; i < 100; i++)
        fds[i] = hs_connect(at_paths.sock);
    /* Every connection ends: refused at once (an ERROR, then EOF) or closed
     * when its handshake times out. */
    double t0 = test_now_s();
    int closed = 0, open_fds = 0;
    for (int i = 0; i < 100; i++)
        open_fds += fds[i] >= 0;
    while (test_now_s() - t0 < TEST_HANG_S && closed < open_fds) {
        closed = 0;
        for (int i = 0; i < 100; i++) {
            uint8_t b[256];
            if (fds[i] >= 0 && recv(fds[i], b, sizeof(b), MSG_DONTWAIT) == 0)
                closed++;
        }
        test_sleep_ms(100);
    }
    /* The server's own count tells refused from timed out: no clock here. */
    char *j = at_query(1, NULL);
    uint64_t refused = hs_num(j, "refused_connections"), timeouts = hs_num(j, "timeouts");
    print_message(
        "100 idle connections, 64 fds: %llu refused at once, %llu timed out, %d closed by the server, "
        "stats answered: %s\n",
        (unsigned long long)refused, (unsigned long long)timeouts, closed, j != NULL ? "yes" : "no");
    assert_non_null(j); /* and then it serves a bystander */
    assert_true(refused > 0 && refused != UINT64_MAX);
    assert_true(timeouts > 0);
    assert_int_equal(closed, open_fds);
    free(j);
    for (int i = 0; i < 100; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    test_server_stop_clean(srv);
}

/* 150 connections each leave a 1 MiB RESYNC_CHUNK half-sent: 0.2 held them
 * all (300 of them: 302 MiB). */
static void half_sent_frames_are_capped_and_timed_out(void **state) {
    (void)state;
    const char *extra[] = {"--max-connections-per-uid", "16", "--frame-timeout-ms", "1000", NULL};
    pid_t srv = at_start(extra);
    long rss0 = hs_rss_kb(srv);
    static uint8_t frame[BH_WIRE_HEADER + 8 + 43690 * BH_WIRE_RESYNC_ENTRY];
    uint32_t len = 8 + 43690 * BH_WIRE_RESYNC_ENTRY;
    memset(frame, 0, sizeof(frame));
    bh_wire_header(frame, BH_WIRE_RESYNC_CHUNK, len);
    bh_put32(frame + BH_WIRE_HEADER, 1);
    bh_put32(frame + BH_WIRE_HEADER + 4, 43690);
    int fds[150];
    for (int i = 0; i < 150; i++) {
        fds[i] = hs_connect(at_paths.sock);
        if (fds[i] < 0)
            continue;
        struct timeval tv = {0, 200000};
        setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        uint8_t h[64];
        hs_send_all(fds[i], h, hs_hello(h, 0));
        hs_send_all(fds[i], frame, sizeof(frame) - 1);
    }
    /* The server's RSS at its highest while it holds what it holds, until
     * the frames have timed out. */
    long rss1 = hs_rss_kb(srv);
    double t0 = test_now_s();
    char *j = NULL;
    uint64_t open_conns = UINT64_MAX;
    while (test_now_s() - t0 < TEST_HANG_S) {
        long r = hs_rss_kb(srv);
        rss1 = r > rss1 ? r : rss1;
        free(j);
        j = at_query(1, NULL);
        open_conns = hs_num(j, "open_connections");
        if (open_conns <= 1)
            break;
        test_sleep_ms(100);
    }
    print_message(
        "150 half-sent 1 MiB frames: server RSS %ld -> %ld kB, open connections after %.1f s: %llu\n", rss0,
        rss1, test_now_s() - t0, (unsigned long long)open_conns);
    assert_true(rss1 - rss0 < 48 * 1024);
    assert_true(open_conns <= 1); /* the stats query itself */
    free(j);
    for (int i = 0; i < 150; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    test_server_stop_clean(srv);
}

static void fifteen_hundred_streams(void) {
    int fd = hs_reporter(at_paths.sock);
    for (uint32_t s = 1; s <= 1500; s++)
        hs_events(fd, s, BH_EVENT_ALLOC, 0, 0, 0x1000 * (uint64_t)s, 64, 1);
    close(fd);
}

/* Exits 0 if the server cut it off (ERROR) for 50 streams x 50 live under a
 * limit of 2,000. */
static void fifty_streams_over_the_limit(void) {
    int fd = hs_reporter(at_paths.sock);
    for (uint32_t s = 1; s <= 50; s++)
        hs_events(fd, s, BH_EVENT_ALLOC, 0, 0, 0x1000, 64, 50);
    uint8_t reply[256];
    size_t got = at_read_some(fd, reply, sizeof(reply), TEST_HANG_S);
    _exit(got >= BH_WIRE_HEADER + 4 && bh_get16(reply + 6) == BH_WIRE_ERROR ? 0 : 1);
}

/* 0.2 applied --max-live-per-client per stream (50 streams held 5,000
 * under a limit of 100), cut stream ids to 16 bits
 * (a RESYNC of stream 65537 wiped stream 1) and cleaned up 1,024 streams of
 * an exiting process. */
static void limits_and_cleanup_hold_per_process_over_every_stream(void **state) {
    (void)state;
    const char *extra[] = {"--max-live-per-client", "2000", NULL};
    pid_t srv = at_start(extra);
    int status;
    waitpid(test_fork(fifty_streams_over_the_limit), &status, 0);
    int cut_off = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    assert_int_equal(at_wait_total("live", 0), 0); /* that process is gone */

    int fd = hs_reporter(at_paths.sock); /* stays open: this process keeps its one allocation */
    hs_events(fd, 1, BH_EVENT_ALLOC, 0, 0, 0x7000, 64, 1);
    uint8_t rb[16];
    hs_send_all(fd, rb, at_stream_frame(rb, BH_WIRE_RESYNC_BEGIN, 65537));
    hs_send_all(fd, rb, at_stream_frame(rb, BH_WIRE_RESYNC_END, 65537));
    at_wait_total("resyncs", 1);
    char *j = at_query(1, NULL);
    uint64_t live_after_resync = hs_num(j, "live");
    free(j);

    uint64_t leaks0 = hs_num(j = at_query(1, NULL), "leaks");
    free(j);
    waitpid(test_fork(fifteen_hundred_streams), NULL, 0);
    uint64_t leaks = at_wait_total("leaks", leaks0 + 1500) - leaks0;
    j = at_query(1, NULL);
    uint64_t live_end = hs_num(j, "live");
    free(j);
    close(fd);
    print_message("per process: 50 streams x 50 under a limit of 2,000 %s; stream 1 after a RESYNC of 65537: "
                  "%llu live; 1,500 streams gone: %llu leaks, %llu live left\n",
                  cut_off ? "cut off" : "NOT cut off", (unsigned long long)live_after_resync,
                  (unsigned long long)leaks, (unsigned long long)live_end - 1);
    assert_true(cut_off);
    assert_int_equal(live_after_resync, 1);
    assert_int_equal(leaks, 1500);
    assert_int_equal(live_end, 1);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        AT_TEST(memory_follows_what_is_live),
        AT_TEST(processes_that_come_and_go_hold_bounded_memory),
        AT_TEST(idle_connections_are_capped_refused_and_timed_out),
        AT_TEST(half_sent_frames_are_capped_and_timed_out),
        AT_TEST(limits_and_cleanup_hold_per_process_over_every_stream),
    };
    return at_main(argc, argv, "hostile_memory", tests, sizeof(tests) / sizeof(tests[0]));
}
