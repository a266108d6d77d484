/*
 * test_report_side.c - events a reporting thread parks beside its stream's
 * held lock (the socket reporter's side stack, src/report/report_stream.c)
 * against a real bh-trackd: a flush or a close must deliver them (or count
 * them as dropped), never report "all sent" while they wait. And without a
 * server: parked events are applied all the same, and what a close or an
 * exit cannot deliver (the ring's events, the parked ones) is counted and
 * said once on stderr, never lost silently.
 *
 * usage: test_report_side PATH-TO-bh-trackd
 *
 * White-box: the test holds the connection's and the stream's locks itself,
 * so a reporting thread parks every event it reports (it spins
 * LOCK_WAIT_US on a lock nobody releases, then parks), and counts the parked
 * events. Work is bounded by counts, never by time: every event parks
 * however loaded the machine, and what is still parked, and the server's
 * view, are read once, right after the call that promised delivery (waiting
 * would let the sender's next idle turn deliver them and hide a flush that
 * returned too early).
 */
#define _GNU_SOURCE
#include <pthread.h>
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
#include <time.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "report/report_socket.h"
#include "support/report_wait.h"
#include "support/server.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-side-test");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

#define PARKED 16 /* events parked per round */
#define ROUNDS 8  /* even rounds flush then close, odd ones close at once */

typedef struct reporting {
    bh_reporter rep;
    uint64_t base; /* the round's first address */
} reporting;

/* A reporting thread: PARKED allocations, each of which finds the stream's
 * lock held and parks. */
static void *report_parked(void *arg) {
    reporting *r = arg;
    for (uint64_t i = 0; i < PARKED; i++) {
        bh_event ev = {BH_EVENT_ALLOC, 1, r->base + i * 4096, 64, i + 1};
        r->rep.report(r->rep.ctx, &ev);
    }
    return NULL;
}

/* Events on the stream's side stack (the caller holds s->lock: only a lock
 * holder takes the stack). */
static uint64_t parked(stream *s) {
    uint64_t n = 0;
    for (side_ev *x = (side_ev *)AO_load(&s->side); x != NULL; x = x->next) /* relaxed: under s->lock */
        n++;
    return n;
}

/* Under the stream's connection lock: PARKED allocations reported by another
 * thread while this one holds the stream's lock too, so that every one
 * parks. */
static void park(reporting *r) {
    stream *s = r->rep.ctx;
    rs_stream_wait(s);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, report_parked, r), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(parked(s), PARKED);
    pthread_spin_unlock(&s->lock);
}

static uint64_t server_allocs(void) {
    char buf[1 << 15];
    return test_json_u64(test_stats_json(trackd, paths.sock, buf, sizeof(buf)), "totals", "allocs");
}

static pid_t serve(void) {
    const char *base[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "600000", NULL};
    pid_t srv = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.sock);
    return srv;
}

/* Under c->lock: waits until the server has taken s's ring and the sender
 * has made IDLE_TURNS idle turns since (each ends with a broadcast of
 * c->wake and doubles its next sleep, up to IDLE_MAX_MS), so that it now
 * sleeps its longest and applies nothing parked until a flush or a close
 * wakes it: the moment an application's flush or close most often meets.
 * Nothing is asserted about the time this takes. */
#define IDLE_TURNS 8
static void wait_sender_idle(conn *c, stream *s) {
    int turns = 0;
    for (double end = test_now_s() + TEST_HANG_S; turns < IDLE_TURNS && test_now_s() < end;) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        if (pthread_cond_timedwait(&c->wake, &c->lock, &dl) == 0 && s->mode == RING_SERVER)
            turns++;
    }
    assert_int_equal(turns, IDLE_TURNS);
}

/* Each round opens a reporter and waits for its sender to go idle. Then, under
 * c->lock and s->lock, another thread reports PARKED allocations, which all
 * park. With them parked, the connection must not count as all sent unless
 * they reached the server (rs_all_sent: what a flush, a close and the
 * sender's last turn ask; deterministic, as c->lock is held throughout, so
 * the sender cannot apply them meanwhile). The locks are let
 * go, and at once a flush (even rounds) or a close (odd rounds) follows.
 * After the flush nothing may still be parked and the server has every event;
 * after the close the server has every event (none is dropped: the server is
 * up and drains the ring). Before the fix "all sent" was said in every round,
 * a flush returned before the sender's next turn applied the parked events,
 * and a close freed them: never sent, never counted. */
static void parked_events_reach_the_server_through_flush_and_close(void **state) {
    (void)state;
    pid_t srv = serve();
    uint64_t said_all_sent = 0, left_parked = 0, flushed_short = 0, closed_short = 0, expected = 0;
    for (int round = 0; round < ROUNDS; round++) {
        reporting r = {.base = 0x10000000ull * (uint64_t)(round + 1)};
        bh_socket_options opt = {.queue_capacity = 1000};
        assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &r.rep), BH_OK);
        stream *s = r.rep.ctx;
        conn *c = s->c;

        pthread_mutex_lock(&c->lock); /* c->lock before s->lock, as the library takes them */
        wait_sender_idle(c, s);
        park(&r);
        if (rs_all_sent(c)) { /* true only if nothing is parked and the server has it all */
            rs_stream_wait(s);
            said_all_sent += parked(s) + (rs_ring_tail(s) != bh_ring_load(s->ring, BH_RING_OFF_HEAD)) > 0;
            pthread_spin_unlock(&s->lock);
        }
        pthread_mutex_unlock(&c->lock);

        expected += PARKED;
        if (round % 2 == 0) {
            assert_int_equal(bh_socket_reporter_flush(&r.rep, (uint32_t)(TEST_HANG_S * 1000)), BH_OK);
            /* Relaxed: nothing reports any more; events a flush left parked
             * stay there until the sender's next turn. */
            for (side_ev *x = (side_ev *)AO_load(&s->side); x != NULL; x = x->next)
                left_parked++;
            uint64_t got = server_allocs();
            flushed_short += got < expected ? expected - got : 0;
            bh_reporter_stats st;
            assert_int_equal(bh_socket_reporter_stats(&r.rep, &st), BH_OK);
            assert_int_equal(st.reported, PARKED);
            assert_int_equal(st.dropped, 0);
        }
        bh_socket_reporter_close(&r.rep);
        uint64_t got = server_allocs();
        closed_short += got < expected ? expected - got : 0;
        expected = got; /* each miss counted once */
    }
    print_message("%d rounds of %d parked events: \"all sent\" said in %llu with events parked; %llu still "
                  "parked after "
                  "a flush; missing at the server: %llu after a flush, %llu after a close\n",
                  ROUNDS, PARKED, (unsigned long long)said_all_sent, (unsigned long long)left_parked,
                  (unsigned long long)flushed_short, (unsigned long long)closed_short);
    assert_int_equal(said_all_sent, 0);
    assert_int_equal(left_parked, 0);
    assert_int_equal(flushed_short, 0);
    assert_int_equal(closed_short, 0);
    assert_int_equal(server_allocs(), (uint64_t)ROUNDS * PARKED);
    test_server_stop_clean(srv);
}

/* ------------------------------------------------------------ no server */

#define IN_RING 100 /* events reported into the ring while no server listens */

/* n allocations from base, reported straight into the ring (nothing holds
 * the stream's lock). */
static void report_some(const bh_reporter *rep, uint64_t base, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        bh_event ev = {BH_EVENT_ALLOC, 1, base + i * 4096, 64, i + 1};
        rep->report(rep->ctx, &ev);
    }
}

/* The reporter's line about events it lost ("N events of this process were
 * never delivered"), or NULL. */
static const char *lost_line(const char *err) {
    return strstr(err, " events of this process were never delivered");
}

/* Events parked while no server listens are applied by the sender: with
 * no further report and no close, nothing else takes the stream's lock.
 * main before this test left them parked (out of the ring, the shadow and
 * the counts) until the next holder; a close then freed them uncounted. */
static void parked_events_are_applied_while_no_server_listens(void **state) {
    (void)state;
    reporting r = {.base = 0x10000000ull};
    bh_socket_options opt = {.queue_capacity = 1000};
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &r.rep), BH_OK); /* nobody listens */
    stream *s = r.rep.ctx;
    pthread_mutex_lock(&s->c->lock);
    park(&r);
    pthread_mutex_unlock(&s->c->lock);
    uint64_t left = PARKED, in_ring = 0;
    for (double end = test_now_s() + TEST_HANG_S; left > 0 && test_now_s() < end; test_sleep_ms(1)) {
        rs_stream_wait(s); /* not rs_stream_lock: that would apply them itself */
        left = parked(s);
        in_ring = s->head;
        pthread_spin_unlock(&s->lock);
    }
    print_message("%d parked without a server: %llu still parked, %llu in the ring\n", PARKED,
                  (unsigned long long)left, (unsigned long long)in_ring);
    assert_int_equal(left, 0);
    assert_int_equal(in_ring, PARKED);
    bh_socket_reporter_close(&r.rep);
}

/* A parked event applied by a thread that is not reporting (here, without
 * a server: the sender, or the stats call) into a full ring: it is dropped
 * and counted at once. The wait for ring room (max_block_us) is a reporting
 * thread's choice; main before this test made whoever applied it wait, the
 * sender (the ring's only consumer, when it drains the ring itself) or a
 * stats, flush or close call, all holding the connection's lock: here 10 s,
 * BH_TRACK_MAX_BLOCK_US's most, for an event no consumer could take. */
static void a_parked_event_into_a_full_ring_does_not_stall_the_sender(void **state) {
    (void)state;
    reporting r = {.base = 0x20000000ull};
    bh_socket_options opt = {.queue_capacity = 1, .max_block_us = 10u * 1000u * 1000u};
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &r.rep), BH_OK); /* nobody listens */
    stream *s = r.rep.ctx;
    report_some(&r.rep, 0x10000000ull, BH_RING_MIN_CAP - 1); /* the ring full but the mark's record */
    pthread_mutex_lock(&s->c->lock);
    rs_stream_wait(s);
    assert_int_equal(s->head, BH_RING_MIN_CAP - 1);
    pthread_spin_unlock(&s->lock);
    park(&r); /* PARKED events beside the held locks */
    pthread_mutex_unlock(&s->c->lock);
    double t0 = test_now_s();
    bh_reporter_stats rs;
    assert_int_equal(bh_socket_reporter_stats(&r.rep, &rs), BH_OK); /* every parked event applied */
    double took = test_now_s() - t0;
    print_message("%d parked into a full ring, max_block_us 10 s: stats after %.0f ms (reported %llu, "
                  "dropped %llu)\n",
                  PARKED, took * 1e3, (unsigned long long)rs.reported, (unsigned long long)rs.dropped);
    assert_int_equal(rs.reported, BH_RING_MIN_CAP - 1 + PARKED);
    assert_int_equal(rs.dropped, PARKED);
    assert_true(took < 5.0); /* 10 s or more: a wait for room nobody can make */
    bh_socket_reporter_close(&r.rep);
}

/* A reporter whose server went and came back, closed before its sender's
 * next retry (here: an hour away, as after a long back-off; by default
 * RETRY_MS): the close tries the server once more and delivers the ring's
 * events, where main before this test found no connection and lost them. */
static void a_close_tries_a_server_that_came_back(void **state) {
    (void)state;
    pid_t srv = serve();
    reporting r = {.base = 0x10000000ull};
    bh_socket_options opt = {.queue_capacity = 1000, .flush_timeout_ms = (uint32_t)(TEST_HANG_S * 1000)};
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &r.rep), BH_OK);
    stream *s = r.rep.ctx;
    conn *c = s->c;
    pthread_mutex_lock(&c->lock);
    test_wait_ring_taken(c, s, 1);
    pthread_mutex_unlock(&c->lock);
    test_server_stop_clean(srv);
    pthread_mutex_lock(&c->lock);
    test_wait_ring_taken(c, s, 0);
    c->next_try_ms = rs_now_ms() + 3600u * 1000u;
    pthread_mutex_unlock(&c->lock);
    report_some(&r.rep, r.base, IN_RING);
    srv = serve();
    bh_socket_reporter_close(&r.rep);
    uint64_t got = server_allocs();
    print_message("%d events reported while the server was away: %llu reached its successor at close\n",
                  IN_RING, (unsigned long long)got);
    assert_int_equal(got, IN_RING);
    test_server_stop_clean(srv);
}

static int child_err = -1; /* the child's stderr: a file the parent reads back */

/* A child without a server: one reporter gets IN_RING allocations and
 * PARKED parked ones and is closed; another, sharing the connection, gets
 * IN_RING allocations and is left open when the child exits (stderr into
 * child_err). */
static void lose_at_close_and_at_exit(void) {
    if (dup2(child_err, 2) != 2)
        _exit(3);
    bh_socket_options opt = {.queue_capacity = 1000};
    bh_reporter keep;
    reporting r = {.base = 0x10000000ull};
    if (bh_socket_reporter_open(paths.sock, &opt, &keep) != BH_OK ||
        bh_socket_reporter_open(paths.sock, &opt, &r.rep) != BH_OK)
        _exit(4);
    conn *c = ((stream *)r.rep.ctx)->c;
    report_some(&r.rep, 0x20000000ull, IN_RING);
    pthread_mutex_lock(&c->lock);
    park(&r);
    pthread_mutex_unlock(&c->lock);
    bh_socket_reporter_close(&r.rep);
    report_some(&keep, 0x30000000ull, IN_RING);
    exit(0); /* keep open; not test_fork's _exit, which runs no exit handler */
}

/* What a close and an exit cannot deliver without a server (the ring's
 * events, and the parked ones) is counted and said, once, at exit: here
 * IN_RING + PARKED at the close, IN_RING at the exit. main before this test
 * said nothing: the close freed the parked events and unmapped the ring,
 * the exit left the ring as it was, neither counted. */
static void a_close_and_an_exit_without_a_server_say_what_they_lost(void **state) {
    (void)state;
    char path[128], err[4096];
    snprintf(path, sizeof(path), "%s/stderr", paths.dir);
    child_err = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(child_err >= 0);
    assert_int_equal(test_reap(test_fork(lose_at_close_and_at_exit)), 0);
    ssize_t n = pread(child_err, err, sizeof(err) - 1, 0);
    assert_true(n >= 0);
    err[n] = '\0';
    close(child_err);
    print_message("said: %s", lost_line(err) != NULL ? err : "nothing\n");
    assert_int_equal(test_said_lost(err), 2 * IN_RING + PARKED);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_report_side PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(parked_events_reach_the_server_through_flush_and_close, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(parked_events_are_applied_while_no_server_listens, setup, teardown),
        cmocka_unit_test_setup_teardown(a_close_and_an_exit_without_a_server_say_what_they_lost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_close_tries_a_server_that_came_back, setup, teardown),
        cmocka_unit_test_setup_teardown(a_parked_event_into_a_full_ring_does_not_stall_the_sender, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("report_side", tests, NULL, NULL);
}
