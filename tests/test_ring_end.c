/*
 * test_ring_end.c - an event ring at the end of its stream or connection,
 * against a real bh-trackd: a connection that ends (or a stream that closes)
 * at a resync's mark, before its RESYNC_BEGIN or between its BEGIN and END,
 * and a ring a process hands again on a new connection while the server
 * still drains it for the old one (ended, or its end unread behind a DRAIN). In each, the process's last
 * events are applied once, a resync cut short is given up and counted, and
 * a correct program shows no leak, duplicate or unknown FREE.
 *
 * usage: test_ring_end PATH-TO-bh-trackd
 *
 * Each test starts its own server and speaks the protocol by hand (a ring
 * of its own, support/rings.h), so that it ends a connection or a stream
 * exactly where the case needs. Work is bounded by counts; waits poll for a
 * condition (TEST_HANG_S at most).
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
#include <sys/mman.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/rings.h"
#include "support/server.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-ring-end-test");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

/* HELLO on sock, then a ring of 1,024 records handed over (mapped at *ring)
 * holding ALLOC 0x5000 (number 1), ALLOC 0x6000 (number 2 + gap: gap events
 * lost before it), a MARK with id 9, and the FREEs of both. Returns its
 * descriptor. */
static int ring_with_mark(int sock, uint64_t gap, uint8_t **ring) {
    tr_hello(sock);
    int fd = tr_taken_ring(sock, 1024, ring);
    tr_put_record(*ring, 1024, 0, 1, BH_RING_ALLOC, 0x5000);
    tr_put_record(*ring, 1024, 1, 2 + gap, BH_RING_ALLOC, 0x6000);
    tr_put_record(*ring, 1024, 2, 2 + gap, BH_RING_MARK, 9);
    tr_put_record(*ring, 1024, 3, 3 + gap, BH_RING_FREE, 0x5000);
    tr_put_record(*ring, 1024, 4, 4 + gap, BH_RING_FREE, 0x6000);
    tr_publish(*ring, 5);
    return fd;
}

/* A process whose connection ends between its MARK and the RESYNC_BEGIN
 * naming it (killed there, or its socket broke): that BEGIN can never come,
 * so the mark is stale and the FREEs after it are its real last events,
 * drained with the rest. main before this test stopped the disconnect's
 * drain at the mark: the FREEs were neither applied nor lost, and both
 * allocations they freed were counted as leaks of the gone process. */
static void a_mark_left_by_a_connection_that_ended_holds_no_free_back(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);
    int sock = test_connect(paths.sock);
    uint8_t *ring;
    int fd = ring_with_mark(sock, 0, &ring); /* no event lost before the mark */
    /* Drained up to the mark, held there: it waits for its RESYNC_BEGIN. */
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "allocs", 2), 2);
    close(sock);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "server", "processes_gone", 1), 1);
    char buf[1 << 16];
    const char *j = test_stats_json(trackd, paths.sock, buf, sizeof(buf));
    assert_int_equal(test_json_u64(j, "totals", "frees"), 2);
    assert_int_equal(test_json_u64(j, "totals", "leaks"), 0);
    assert_int_equal(test_json_u64(j, "totals", "unverified_leaks"), 0);
    assert_int_equal(test_json_u64(j, "totals", "lost"), 0);
    munmap(ring, bh_ring_bytes(1024));
    close(fd);
    test_server_stop_clean(srv);
}

/* RESYNC_BEGIN naming mark for stream 1 (a stream with a ring). */
static void send_begin_mark(int fd, uint64_t mark) {
    uint8_t f[BH_WIRE_HEADER + BH_WIRE_RESYNC_BEGIN_MARK];
    size_t h = bh_wire_header(f, BH_WIRE_RESYNC_BEGIN, BH_WIRE_RESYNC_BEGIN_MARK);
    memset(f + h, 0, BH_WIRE_RESYNC_BEGIN_MARK);
    bh_put32(f + h, 1);
    bh_put64(f + h + 8, mark);
    tr_send(fd, f, sizeof(f));
}

/* A RESYNC_CHUNK_TIMED of one entry (device 1, size 64, reported now). */
static void send_chunk_one(int fd, uint32_t stream, uint64_t address) {
    uint8_t f[BH_WIRE_HEADER + 8 + BH_WIRE_RESYNC_TIMED_ENTRY];
    size_t h = bh_wire_header(f, BH_WIRE_RESYNC_CHUNK_TIMED, 8 + BH_WIRE_RESYNC_TIMED_ENTRY);
    memset(f + h, 0, 8 + BH_WIRE_RESYNC_TIMED_ENTRY);
    bh_put32(f + h, stream);
    bh_put32(f + h + 4, 1);
    bh_put32(f + h + 8, 1);
    bh_put64(f + h + 16, address);
    bh_put64(f + h + 24, 64);
    tr_send(fd, f, sizeof(f));
}

/* An EVENT of stream numbered n (device 1, size 64). */
static void send_event(int fd, uint32_t stream, uint8_t kind, uint64_t address, uint64_t n) {
    uint8_t f[BH_WIRE_HEADER + BH_WIRE_EVENT_LEN];
    tr_send(fd, f, bh_wire_event(f, stream, kind, 1, address, kind == BH_EVENT_ALLOC ? 64 : 0, n));
}

/* What the server says of a process gone after a resync was cut short. */
typedef struct end_figures {
    uint64_t frees, leaks, unverified, lost, cut;
} end_figures;

/* Asserts the server's figures are want's (and that no FREE was unknown,
 * no resync ended). */
static void the_end_is(const end_figures *want) {
    char buf[1 << 16];
    const char *j = test_stats_json(trackd, paths.sock, buf, sizeof(buf));
    end_figures got = {test_json_u64(j, "totals", "frees"), test_json_u64(j, "totals", "leaks"),
                       test_json_u64(j, "totals", "unverified_leaks"), test_json_u64(j, "totals", "lost"),
                       test_json_u64(j, "server", "resyncs_cut")};
    print_message("frees %llu, leaks %llu, unverified leaks %llu, lost %llu, resyncs cut %llu\n",
                  (unsigned long long)got.frees, (unsigned long long)got.leaks,
                  (unsigned long long)got.unverified, (unsigned long long)got.lost,
                  (unsigned long long)got.cut);
    assert_int_equal(got.frees, want->frees);
    assert_int_equal(got.leaks, want->leaks);
    assert_int_equal(got.unverified, want->unverified);
    assert_int_equal(got.lost, want->lost);
    assert_int_equal(got.cut, want->cut);
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 0);
    assert_int_equal(test_json_u64(j, "server", "resyncs"), 0);
}

/* Connections that end between RESYNC_BEGIN and RESYNC_END (the process
 * killed there, or its reporter's connection lost): the END never comes.
 * Stream 1 has a ring: ALLOCs numbered 1 and 3 (2 was lost: an ALLOC only
 * the resync names), the resync's mark, then the FREEs of both; the resync
 * restores the lost allocation and is cut. Stream 2 sends over the socket:
 * two ALLOCs and a FREE, then a resync naming what is still live, cut. The
 * process then goes. A resync cut short is given up (counted: resyncs_cut):
 * the FREEs after the mark apply, the stream with the gap stays unsynced
 * (its one allocation left is an unverified leak), and the stream without
 * one is synced (its allocation left is a real leak). main before this test
 * left both streams resyncing for good and the ring held at the taken mark:
 * the FREEs never applied, all four allocations unverified leaks, nothing
 * said. */
static void a_resync_cut_short_is_given_up_and_the_last_events_apply(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);
    int sock = test_connect(paths.sock);
    uint8_t *ring;
    int fd = ring_with_mark(sock, 1, &ring);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "allocs", 2), 2); /* held at the mark */
    send_begin_mark(sock, 9);
    send_chunk_one(sock, 1, 0x7000); /* the allocation whose ALLOC (number 2) was lost */
    assert_int_equal(test_wait_stat_is(trackd, paths.sock, "totals", "live", 3), 3);

    int other = test_connect(paths.sock);
    tr_hello(other);
    send_event(other, 2, BH_EVENT_ALLOC, 0xa000, 1);
    send_event(other, 2, BH_EVENT_ALLOC, 0xb000, 2);
    send_event(other, 2, BH_EVENT_FREE, 0xa000, 3);
    tr_send_stream_frame(other, BH_WIRE_RESYNC_BEGIN, 2);
    send_chunk_one(other, 2, 0xb000);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "frees", 1), 1);
    close(other);
    close(sock);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "server", "processes_gone", 1), 1);
    /* 0xb000 a leak, 0x7000 unverified (its stream lost number 2) */
    the_end_is(&(const end_figures){.frees = 3, .leaks = 1, .unverified = 1, .lost = 1, .cut = 2});
    munmap(ring, bh_ring_bytes(1024));
    close(fd);
    test_server_stop_clean(srv);
}

/* A stream closed (RING_CLOSE) with its ring at a mark: a snapshot point
 * taken and its RESYNC_BEGIN not sent yet (begin 0), or sent and the resync
 * half done (begin 1), when the registry is destroyed. Its FREEs after the
 * mark are its last events: applied, the resync given up. Nothing was lost,
 * so nothing may be a leak. main before this test let the ring go at the
 * mark: the FREEs never applied and both allocations were counted as leaks
 * of a correct program (verified: the stream was synced). */
static void close_at_a_mark(int begin) {
    pid_t srv = test_server_start(trackd, &paths, NULL);
    int sock = test_connect(paths.sock);
    uint8_t *ring;
    int fd = ring_with_mark(sock, 0, &ring);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "totals", "allocs", 2), 2);
    if (begin) {
        send_begin_mark(sock, 9);
        send_chunk_one(sock, 1, 0x5000);
    }
    tr_send_stream_frame(sock, BH_WIRE_RING_CLOSE, 1);
    close(sock);
    assert_int_equal(test_wait_stat(trackd, paths.sock, "server", "processes_gone", 1), 1);
    the_end_is(&(const end_figures){.frees = 2, .cut = (uint64_t)begin});
    munmap(ring, bh_ring_bytes(1024));
    close(fd);
    test_server_stop_clean(srv);
}

static void a_stream_closed_at_a_mark_applies_its_last_events(void **state) {
    (void)state;
    close_at_a_mark(0);
}

static void a_stream_closed_during_its_resync_applies_its_last_events(void **state) {
    (void)state;
    close_at_a_mark(1);
}

/* A process back on a new connection hands the same memfd while the server
 * still drains it for the old connection (the server stopped meanwhile, so
 * that the drain is far from done): the new connection takes it over from
 * where the old one stopped, and each record is applied once. The old
 * connection has ended (its end read), or, with drain_first, sent a DRAIN
 * before it ended: its input is held behind the drain, its end unread.
 * Before the first case was handled, the ring was drained on both: of
 * 20,000 ALLOCs of a correct program, 15,904 were applied twice. Before the
 * second was, the new connection's RING was answered BH_EBUSY (its memfd
 * "another connection's ring"), and the library's reporter then drained the
 * ring itself and sent its events over the socket while the server drained
 * them for the old connection: 100,000 ALLOCs applied 212,800 times. */
#define HANDED 20000
static void hand_again(int drain_first) {
    pid_t srv = test_server_start(trackd, &paths, NULL);
    int a = test_connect(paths.sock);
    tr_hello(a);
    uint8_t *ring;
    int fd = tr_taken_ring(a, 32768, &ring);
    assert_int_equal(kill(srv, SIGSTOP), 0);
    for (uint64_t i = 0; i < HANDED; i++)
        tr_put_record(ring, 32768, i, i + 1, BH_RING_ALLOC, 0x100000 + i * 64);
    tr_publish(ring, HANDED);
    if (drain_first) {
        uint8_t f[BH_WIRE_HEADER];
        tr_send(a, f, bh_wire_header(f, BH_WIRE_DRAIN, 0));
    }
    close(a);
    int b = test_connect(paths.sock); /* accepted by the kernel while the server is stopped */
    tr_hello(b);
    tr_send_ring(b, 32768, fd);
    assert_int_equal(kill(srv, SIGCONT), 0);
    uint32_t status = 1;
    assert_int_equal(tr_await_frame(b, BH_WIRE_RING_ACK, &status), 1);
    assert_int_equal(status, 0);
    /* Both drains over: the ended connection is closed (b and the stats
     * query are what is open), and the ring is drained to its head. */
    test_wait_stat_is(trackd, paths.sock, "server", "open_connections", 2);
    for (double end = test_now_s() + TEST_HANG_S;
         bh_ring_load(ring, BH_RING_OFF_TAIL) != HANDED && test_now_s() < end;)
        test_sleep_ms(1);
    assert_int_equal(bh_ring_load(ring, BH_RING_OFF_TAIL), HANDED);
    char buf[1 << 16];
    const char *j = test_stats_json(trackd, paths.sock, buf, sizeof(buf));
    print_message("%d ALLOCs: %llu applied, %llu duplicates\n", HANDED,
                  (unsigned long long)test_json_u64(j, "totals", "allocs"),
                  (unsigned long long)test_json_u64(j, "totals", "duplicate_allocs"));
    assert_int_equal(test_json_u64(j, "totals", "allocs"), HANDED);
    assert_int_equal(test_json_u64(j, "totals", "duplicate_allocs"), 0);
    assert_int_equal(test_json_u64(j, "totals", "live"), HANDED);
    close(b);
    munmap(ring, bh_ring_bytes(32768));
    close(fd);
    test_server_stop_clean(srv);
}

static void a_ring_handed_to_a_new_connection_is_drained_once(void **state) {
    (void)state;
    hand_again(0);
}

static void a_ring_handed_again_behind_a_held_drain_is_drained_once(void **state) {
    (void)state;
    hand_again(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_ring_end PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_mark_left_by_a_connection_that_ended_holds_no_free_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_resync_cut_short_is_given_up_and_the_last_events_apply, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_stream_closed_at_a_mark_applies_its_last_events, setup, teardown),
        cmocka_unit_test_setup_teardown(a_stream_closed_during_its_resync_applies_its_last_events, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_ring_handed_to_a_new_connection_is_drained_once, setup, teardown),
        cmocka_unit_test_setup_teardown(a_ring_handed_again_behind_a_held_drain_is_drained_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("ring_end", tests, NULL, NULL);
}
