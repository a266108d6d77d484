/*
 * test_ring_handover.c - the library's reporter back on a new connection
 * while bh-trackd still holds the old connection's input behind a drain,
 * end to end (the reporter's own code, a real bh-trackd).
 *
 * Tests: every record of the ring is applied once. bh-trackd takes the
 * ring over from the old connection of the same process (test_ring_end has
 * the protocol-level case) and ends that connection without parsing what
 * it still holds. Before the take-over, the new connection's RING was
 * answered BH_EBUSY and the reporter drained the ring itself while the
 * server drained it for the old connection: 100,000 ALLOCs applied
 * 212,800-221,504 times. With the take-over but the old connection's input
 * still parsed, its resync chunks (the reporter's snapshot, sent while the
 * server held that connection) restored the live set and the new
 * connection's drain then repeated 1,475-3,777 of the ALLOCs.
 * Must never: depend on timing for its outcome: the server is stopped
 * (SIGSTOP) while the ring fills, the flush's DRAIN is written, the
 * reporter's connection ends (its socket shut down under the connection's
 * lock) and a flush reconnects (the stopped server's backlog takes it) and
 * offers the ring again; then it is continued. Every event is an ALLOC of
 * its own address, so totals.duplicate_allocs counts the records applied
 * twice. Waits poll for a state, TEST_HANG_S at most each.
 *
 * usage: test_ring_handover PATH-TO-bh-trackd
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "report/report_socket.h"
#include "support/server.h"

#define EVENTS 100000u /* 25 slices of the old connection's drain */

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-handover");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

/* Under c->lock: waits until cond holds, TEST_HANG_S at most. */
static int wait_locked(conn *c, const stream *s, int (*cond)(const conn *, const stream *)) {
    for (double end = test_now_s() + TEST_HANG_S; !cond(c, s) && test_now_s() < end;) {
        pthread_mutex_unlock(&c->lock);
        test_sleep_ms(1);
        pthread_mutex_lock(&c->lock);
    }
    return cond(c, s);
}

static int ring_taken(const conn *c, const stream *s) { return c->connected && s->mode == RING_SERVER; }
static int drain_sent(const conn *c, const stream *s) { return (void)s, c->drain_sent_ms != 0; }
static int down(const conn *c, const stream *s) { return (void)s, !c->connected; }
static int offered(const conn *c, const stream *s) { return c->connected && s->mode == RING_OFFERED; }

static void a_ring_handed_again_behind_a_held_drain_is_applied_once(void **state) {
    (void)state;
    const char *base[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "600000", NULL};
    pid_t srv = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.sock);
    bh_socket_options opt = {.queue_capacity = 1u << 17, .flush_timeout_ms = (uint32_t)(TEST_HANG_S * 1000)};
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &rep), BH_OK);
    stream *s = rep.ctx;
    conn *c = s->c;
    pthread_mutex_lock(&c->lock);
    assert_true(wait_locked(c, s, ring_taken));
    pthread_mutex_unlock(&c->lock);

    assert_int_equal(kill(srv, SIGSTOP), 0);
    for (uint64_t i = 0; i < EVENTS; i++) {
        bh_event ev = {BH_EVENT_ALLOC, 1, 0x40000000ull + i * 4096, 64, i + 1};
        rep.report(rep.ctx, &ev);
    }
    /* The flush gives up (the server is stopped); its DRAIN is out by then. */
    pthread_mutex_lock(&c->lock);
    c->drain_sent_ms = 0;
    pthread_mutex_unlock(&c->lock);
    (void)bh_socket_reporter_flush(&rep, 500);
    pthread_mutex_lock(&c->lock);
    assert_true(wait_locked(c, s, drain_sent));
    assert_int_equal(shutdown(c->fd, SHUT_RDWR), 0); /* the sender reads the end */
    assert_true(wait_locked(c, s, down));
    pthread_mutex_unlock(&c->lock);
    (void)bh_socket_reporter_flush(&rep, 50); /* reconnects at once (try_now): the backlog takes it */
    pthread_mutex_lock(&c->lock);
    assert_true(wait_locked(c, s, offered));
    pthread_mutex_unlock(&c->lock);
    assert_int_equal(kill(srv, SIGCONT), 0);

    /* The reporter may lose the connection it came back on (its resync's
     * chunks wait while the server holds that connection's input) and make
     * another: a flush without a connection is BH_EBUSY. Bounded by tries. */
    bh_status flushed = BH_EBUSY;
    for (int tries = 0; tries < 8 && flushed != BH_OK; tries++)
        flushed = bh_socket_reporter_flush(&rep, (uint32_t)(TEST_HANG_S * 1000));
    assert_int_equal(flushed, BH_OK);
    uint64_t allocs = test_wait_stat(trackd, paths.sock, "totals", "allocs", EVENTS);
    char buf[1 << 16];
    const char *j = test_stats_json(trackd, paths.sock, buf, sizeof(buf));
    uint64_t dup = test_json_u64(j, "totals", "duplicate_allocs");
    pthread_mutex_lock(&c->lock);
    int mode = s->mode;
    pthread_mutex_unlock(&c->lock);
    print_message("%u ALLOCs: %llu applied, %llu duplicates; the ring's mode on the new connection: %s\n",
                  EVENTS, (unsigned long long)allocs, (unsigned long long)dup,
                  mode == RING_SERVER ? "server"
                  : mode == RING_SELF ? "self (refused)"
                                      : "other");
    assert_int_equal(allocs, EVENTS);
    assert_int_equal(dup, 0);
    bh_socket_reporter_close(&rep);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_ring_handed_again_behind_a_held_drain_is_applied_once, setup,
                                        teardown),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &trackd, "ring_handover",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
