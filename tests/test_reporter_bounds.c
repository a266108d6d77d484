/*
 * test_reporter_bounds.c - what the socket reporter costs the application:
 * the worst alloc + release (calls the machine preempted left out) stays
 * under 5 ms with 300,000 live while the server is stopped and resyncs
 * happen, spaced; a close returns within its flush timeout against a server
 * too slow to take the resync it is owed.
 *
 * usage: test_reporter_bounds PATH-TO-bh-trackd [slow|fast [basic|hostile]]
 *
 * Hostile (natively and in the hostile stage, not under valgrind). Must
 * never depend on a quiet machine: each phase ends on a count or a
 * condition, latency counts only unpreempted calls, and the close's bound
 * is in bytes the slow server took, not in seconds.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "wire.h"
#include "support/reporting.h"

/* The resync test's churn: alloc+release pairs, and what they measured. */
typedef struct churn_run {
    bh_registry *reg;
    const bh_reporter *rep;
    uint64_t pairs, preempted;
    double worst;
    bh_reporter_stats rs; /* the reporter's counters, read every 256 pairs */
} churn_run;

/* One pair. A call during which this thread was preempted measures the load
 * of the machine, not the library: only calls that ran or waited on their
 * own (a lock wait is a voluntary switch) count. */
static void churn_one(churn_run *c) {
    double dt = rp_pair(c->reg, 0x10000 + (c->pairs++ % 1024) * 64);
    if (dt < 0)
        c->preempted++;
    else if (dt > c->worst)
        c->worst = dt;
    if (c->pairs % 256 == 0)
        assert_int_equal(bh_socket_reporter_stats(c->rep, &c->rs), BH_OK);
}

static void the_application_thread_stays_fast_while_resyncs_happen(void **state) {
    (void)state;
    uint32_t live = rp_slack > 1 ? 20000 : 300000;
    uint64_t phase = rp_slack > 1 ? 5000 : 50000; /* pairs churned with the server up, before and after */
    rp_serve(NULL, rp_paths.sock);
    bh_reporter rep;
    bh_socket_options opt = {.queue_capacity = 256, .max_block_us = 0, .send_timeout_ms = 200};
    assert_int_equal(bh_socket_reporter_open(rp_paths.sock, &opt, &rep), BH_OK);
    bh_registry *reg = rp_registry_on(&rep);
    bh_handle *h = calloc(live, sizeof(*h));
    assert_non_null(h);
    double t0 = test_now_s(); /* every resync of this run starts after this */
    rp_hold(reg, h, live, 1u << 30);
    /* Churn with the server up; stop it until the small ring has overflowed
     * (sends stall, events are dropped) and for 0.4 s at least (past the
     * send timeout: the connection is dropped and made again), then let it
     * go on and churn until a resync has been completed (the hold's own
     * overflow owes one too; beside busy loops a resync after the stop was
     * cut short by one dropped connection after another for 50 s: the
     * rp_server, starved, stalls sends past 0.2 s), and as many pairs again. Each phase ends on a count or a
     * condition (TEST_HANG_S only guards against a hang; 0.4 s is a least time, which load only makes
     * longer): a loaded machine makes the run longer, never different. */
    churn_run c = {.reg = reg, .rep = &rep};
    while (c.pairs < phase)
        churn_one(&c);
    assert_int_equal(bh_socket_reporter_stats(&rep, &c.rs), BH_OK);
    uint64_t dropped0 = c.rs.dropped, resyncs0 = c.rs.resyncs;
    assert_int_equal(kill(rp_server, SIGSTOP), 0);
    double stopped = test_now_s(), hang = stopped + TEST_HANG_S;
    while ((c.rs.dropped == dropped0 || test_now_s() < stopped + 0.4) && test_now_s() < hang)
        churn_one(&c);
    assert_int_equal(kill(rp_server, SIGCONT), 0);
    uint64_t resumed = c.pairs;
    for (hang = test_now_s() + TEST_HANG_S;
         (c.rs.resyncs == 0 || c.pairs < resumed + phase) && test_now_s() < hang;)
        churn_one(&c);
    double took = test_now_s() - t0;
    bh_reporter_stats rs;
    assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
    print_message(
        "%u live, %llu pairs (%llu preempted): worst alloc+release %.2f ms; %llu resyncs (%llu after the "
        "stop) in %.1f s, %llu connects, %llu dropped (%llu during the stop)\n",
        live, (unsigned long long)c.pairs, (unsigned long long)c.preempted, c.worst * 1e3,
        (unsigned long long)rs.resyncs, (unsigned long long)(rs.resyncs - resyncs0), took,
        (unsigned long long)rs.connects, (unsigned long long)rs.dropped,
        (unsigned long long)(c.rs.dropped - dropped0));
    assert_true(c.preempted <= c.pairs / 2); /* most calls measured */
    assert_true(c.rs.dropped > dropped0);    /* the stop overflowed the ring */
    assert_true(rs.resyncs >= 1);            /* none at the first connection: these came from losses */
    /* Spaced (their starts RESYNC_GAP_MS, 1 s, apart), not one per
     * overflow: at most one per second of this same run. */
    assert_true((double)rs.resyncs <= 1 + took);
    /* Ours: under LOCK_WAIT_US (0.2 ms) plus the call's own work. 0.2 copied
     * the live set under the lock its reporters need (20-50 ms here). */
    assert_true(c.worst < 0.005 * rp_slack);
    rp_drop_all(reg, h, live);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    rp_wait_nothing_live();
    assert_int_equal(rp_stat_of("totals", "unknown_frees"), 0);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_socket_reporter_close(&rep);
    free(h);
}

/* A server that takes 16 KiB every 50 ms from whoever connects: a resync of
 * 200,000 entries (4.8 MB) would take it over 15 s. It declines the ring each
 * stream offers (RING_ACK, status -1), so the reporter sends its events on
 * the socket, at this pace: a server that never answered the offer would get
 * nothing past HELLO and RING, and no close would wait for it. slow_taken:
 * the bytes it has taken. */
static atomic_int slow_serving;

static atomic_ullong slow_taken;

/* The frames from a connection's start (HELLO, then a RING per stream,
 * nothing more until a RING_ACK): each RING whole in p[0, n) is declined.
 * Returns 1 once one was. */
static int decline_rings(int fd, const uint8_t *p, size_t n) {
    int declined = 0;
    for (size_t off = 0; n - off >= BH_WIRE_HEADER;) {
        uint32_t len = bh_get32(p + off + 8);
        if (n - off - BH_WIRE_HEADER < len)
            break;
        if (bh_get16(p + off + 6) == BH_WIRE_RING && len >= 4) {
            uint8_t ack[BH_WIRE_HEADER + 8];
            bh_wire_header(ack, BH_WIRE_RING_ACK, 8);
            bh_put32(ack + BH_WIRE_HEADER, bh_get32(p + off + BH_WIRE_HEADER));
            bh_put32(ack + BH_WIRE_HEADER + 4, (uint32_t)-1);
            declined = send(fd, ack, sizeof(ack), MSG_NOSIGNAL) == (ssize_t)sizeof(ack);
        }
        off += BH_WIRE_HEADER + len;
    }
    return declined;
}

static void *slow_reader(void *arg) {
    int lfd = *(int *)arg;
    struct pollfd p = {lfd, POLLIN, 0};
    int fd = -1, declined = 0;
    uint8_t buf[16384], head[4096];
    size_t head_len = 0;
    while (slow_serving) {
        if (poll(&p, 1, 0) == 1) {
            if (fd >= 0)
                close(fd);
            fd = accept(lfd, NULL, NULL);
            declined = 0;
            head_len = 0;
        }
        ssize_t n = fd >= 0 ? recv(fd, buf, sizeof(buf), MSG_DONTWAIT) : -1;
        if (n > 0) {
            atomic_fetch_add(&slow_taken, (unsigned long long)n);
            size_t keep = (size_t)n < sizeof(head) - head_len ? (size_t)n : sizeof(head) - head_len;
            memcpy(head + head_len, buf, keep);
            head_len += keep;
            if (!declined)
                declined = decline_rings(fd, head, head_len);
        }
        if (n == 0) {
            close(fd);
            fd = -1;
        }
        test_sleep_ms(50);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void close_is_bounded_by_the_flush_timeout_against_a_slow_server(void **state) {
    (void)state;
    uint32_t live = rp_slack > 1 ? 20000 : 200000;
    int lfd = test_unix_listen(rp_paths.sock, 16);
    slow_serving = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_reader, &lfd), 0);
    bh_reporter rep;
    bh_socket_options opt = {.queue_capacity = 1024, .flush_timeout_ms = 300};
    assert_int_equal(bh_socket_reporter_open(rp_paths.sock, &opt, &rep), BH_OK);
    for (uint64_t i = 1; i <= live; i++) {
        bh_event ev = {BH_EVENT_ALLOC, RP_DOMAIN, i * 4096, 4096, i};
        rep.report(rep.ctx, &ev);
    }
    /* The ring overflowed (events dropped) while connected: the sender owes
     * the slow server a resync of the whole live set. */
    bh_reporter_stats rs = {0};
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(10)) {
        assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
        if (rs.connected && rs.dropped > 0)
            break;
    }
    assert_true(rs.connected && rs.dropped > 0);
    double t0 = test_now_s();
    unsigned long long taken0 = atomic_load(&slow_taken);
    bh_socket_reporter_close(&rep);
    unsigned long long taken = atomic_load(&slow_taken) - taken0;
    double took = test_now_s() - t0;
    /* A close that waited for the resync would return only once the slow
     * server had taken the live set (24 bytes an entry), less what its
     * socket buffer holds. The bound is a third of that, in bytes the
     * server took, not in seconds: a loaded machine slows the server's
     * taking as much as the close, so only a close that waits for the
     * rp_server, not for its own timeout, can reach it. */
    double resync = live * 24.0;
    print_message("close with %u live against a slow server: %.3f s (flush timeout 0.3 s), the server took "
                  "%llu bytes meanwhile (the resync: %.0f)\n",
                  live, took, taken, resync);
    assert_true((double)taken < resync / 3);
    slow_serving = 0;
    pthread_join(t, NULL);
    close(lfd);
}

int main(int argc, char **argv) {
    const struct CMUnitTest hostile[] = {
        RP_TEST(the_application_thread_stays_fast_while_resyncs_happen),
        RP_TEST(close_is_bounded_by_the_flush_timeout_against_a_slow_server),
    };
    return rp_main(argc, argv, "reporter_bounds", NULL, 0, hostile, sizeof(hostile) / sizeof(hostile[0]));
}
