/*
 * test_report_timeouts.c - reporters of one process on one socket path with
 * different settings, against a real bh-trackd: each gets what it asked
 * for, not the first opener's settings.
 *
 * 1. flush_timeout_ms is each reporter's own, on a shared connection: a
 *    close waits by its reporter's timeout (main before this test used the
 *    first opener's for every close on the connection: a close asked for
 *    1.5 s gave up after 50 ms, one asked for 100 ms waited an hour).
 * 2. send_timeout_ms is a connection's (a stalled send ends it for all its
 *    streams): a reporter that asks for another one gets a connection of
 *    its own (main shared the first opener's); a third with the first's
 *    setting shares the first's.
 * 3. Stream ids are unique in the process, not per connection: bh-trackd
 *    keys a live set by (pid, stream), so the two connections of 2, or a
 *    connection made again after the last reporter closed, must not both
 *    say stream 1 (main: the second's ALLOC of an address the first leaked
 *    was a duplicate ALLOC, and its FREE took the leak away).
 *
 * usage: test_report_timeouts PATH-TO-bh-trackd
 *
 * White-box (report/report_socket.h) only to see which connection a
 * reporter has. Bounded by conditions: a stopped server (SIGSTOP) drains
 * nothing however loaded the machine, so a close waits its whole timeout (a
 * lower bound on its time, which load only lengthens); a close that should
 * return long before the first opener's hour is waited for TEST_HANG_S.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "report/report_socket.h"
#include "support/server.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-report-timeouts");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

static conn *conn_of(const bh_reporter *rep) { return ((stream *)rep->ctx)->c; }

static void report(const bh_reporter *rep, bh_event_kind kind, uint64_t address) {
    bh_event ev = {kind, 1, address, 64, 0};
    rep->report(rep->ctx, &ev);
}

static bh_reporter open_with(const bh_socket_options *opt) {
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(paths.sock, opt, &rep), BH_OK);
    return rep;
}

/* ------------------------------------------------------------ flush */

typedef struct closing {
    bh_reporter rep;
    pthread_mutex_t lock; /* a mutex, not an atomic: helgrind and drd see it */
    int done;             /* under lock: the close returned */
} closing;

static void *close_it(void *arg) {
    closing *c = arg;
    bh_socket_reporter_close(&c->rep);
    pthread_mutex_lock(&c->lock);
    c->done = 1;
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static int closed(closing *c) {
    pthread_mutex_lock(&c->lock);
    int done = c->done;
    pthread_mutex_unlock(&c->lock);
    return done;
}

/* The first opener asks for 50 ms, the second for 1.5 s: with the server
 * stopped, the second's close waits its 1.5 s (main: 50 ms). Then the
 * first opener asks for an hour and the second for 100 ms: the second's
 * close returns (main: it would wait the hour; the server is resumed after
 * TEST_HANG_S so that the test ends). */
static void a_close_waits_by_its_own_flush_timeout(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);

    bh_reporter first = open_with(&(bh_socket_options){.flush_timeout_ms = 50});
    bh_reporter second = open_with(&(bh_socket_options){.flush_timeout_ms = 1500});
    assert_ptr_equal(conn_of(&first), conn_of(&second)); /* one connection, two flush timeouts */
    report(&second, BH_EVENT_ALLOC, 0x10000);
    assert_int_equal(bh_socket_reporter_flush(&second, TEST_HANG_MS), BH_OK);
    assert_int_equal(kill(srv, SIGSTOP), 0);
    report(&second, BH_EVENT_ALLOC, 0x20000); /* waits in the ring: the close's flush cannot finish */
    double t0 = test_now_s();
    bh_socket_reporter_close(&second);
    double waited = test_now_s() - t0;
    print_message("close asked for 1500 ms beside a first opener's 50 ms: waited %.0f ms\n", waited * 1e3);
    assert_true(waited >= 1.4);

    bh_reporter hour = open_with(&(bh_socket_options){.flush_timeout_ms = 3600u * 1000u});
    closing brief = {.rep = open_with(&(bh_socket_options){.flush_timeout_ms = 100}),
                     .lock = PTHREAD_MUTEX_INITIALIZER};
    assert_ptr_equal(conn_of(&hour), conn_of(&brief.rep));
    report(&brief.rep, BH_EVENT_ALLOC, 0x30000);
    pthread_t t;
    t0 = test_now_s();
    assert_int_equal(pthread_create(&t, NULL, close_it, &brief), 0);
    while (!closed(&brief) && test_now_s() - t0 < TEST_HANG_S)
        test_sleep_ms(5);
    int returned = closed(&brief);
    print_message("close asked for 100 ms beside a first opener's hour: %s after %.0f ms\n",
                  returned ? "returned" : "still waiting", (test_now_s() - t0) * 1e3);
    assert_int_equal(kill(srv, SIGCONT), 0); /* so that a close still waiting ends too */
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(returned);
    bh_socket_reporter_close(&first);
    bh_socket_reporter_close(&hour);
    test_server_stop_clean(srv);
}

/* ------------------------------------------------------------ send timeout, stream ids */

/* Three reporters, the second with another send_timeout_ms, each ALLOC of
 * one address (one process, three registries): the second has a connection
 * of its own, the third shares the first's, and the server holds three
 * live allocations, no duplicate (main: one connection; with two, both
 * would have said stream 1). */
static void another_send_timeout_gets_its_own_connection(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);
    bh_reporter a = open_with(&(bh_socket_options){.send_timeout_ms = 100});
    bh_reporter b = open_with(&(bh_socket_options){.send_timeout_ms = 5000});
    bh_reporter c = open_with(&(bh_socket_options){.send_timeout_ms = 100});
    print_message("connections: a %p, b %p, c %p\n", (void *)conn_of(&a), (void *)conn_of(&b),
                  (void *)conn_of(&c));
    assert_ptr_not_equal(conn_of(&a), conn_of(&b));
    assert_ptr_equal(conn_of(&a), conn_of(&c));
    assert_int_equal(conn_of(&a)->opt.send_timeout_ms, 100);
    assert_int_equal(conn_of(&b)->opt.send_timeout_ms, 5000);
    const bh_reporter *all[] = {&a, &b, &c};
    for (int i = 0; i < 3; i++) {
        report(all[i], BH_EVENT_ALLOC, 0x40000);
        assert_int_equal(bh_socket_reporter_flush(all[i], TEST_HANG_MS), BH_OK);
    }
    char buf[1 << 15];
    const char *json = test_stats_json(trackd, paths.sock, buf, sizeof(buf));
    print_message("server: live %llu, duplicate ALLOCs %llu\n",
                  (unsigned long long)test_json_u64(json, "totals", "live"),
                  (unsigned long long)test_json_u64(json, "totals", "duplicate_allocs"));
    assert_int_equal(test_json_u64(json, "totals", "duplicate_allocs"), 0);
    assert_int_equal(test_json_u64(json, "totals", "live"), 3);
    bh_socket_reporter_close(&a);
    bh_socket_reporter_close(&b);
    bh_socket_reporter_close(&c);
    test_server_stop_clean(srv);
}

/* A registry leaks an address and closes its reporter (the connection
 * ends with it); the next registry's reporter (a new connection) allocates
 * and frees that address. The server still holds the first one's leak, and
 * saw no duplicate ALLOC (main: both were stream 1 of the process). */
static void a_reporter_opened_after_the_last_close_is_a_new_stream(void **state) {
    (void)state;
    pid_t srv = test_server_start(trackd, &paths, NULL);
    bh_reporter first = open_with(NULL);
    conn *c1 = conn_of(&first);
    uint32_t id1 = ((stream *)first.ctx)->id;
    report(&first, BH_EVENT_ALLOC, 0x50000);
    assert_int_equal(bh_socket_reporter_flush(&first, TEST_HANG_MS), BH_OK);
    bh_socket_reporter_close(&first);

    bh_reporter next = open_with(NULL);
    uint32_t id2 = ((stream *)next.ctx)->id;
    print_message("stream ids: %u, then %u (connection %s)\n", id1, id2,
                  conn_of(&next) == c1 ? "the same address" : "another");
    report(&next, BH_EVENT_ALLOC, 0x50000);
    report(&next, BH_EVENT_FREE, 0x50000);
    assert_int_equal(bh_socket_reporter_flush(&next, TEST_HANG_MS), BH_OK);
    char buf[1 << 15];
    const char *json = test_stats_json(trackd, paths.sock, buf, sizeof(buf));
    print_message("server: live %llu, duplicate ALLOCs %llu\n",
                  (unsigned long long)test_json_u64(json, "totals", "live"),
                  (unsigned long long)test_json_u64(json, "totals", "duplicate_allocs"));
    assert_int_not_equal(id1, id2);
    assert_int_equal(test_json_u64(json, "totals", "duplicate_allocs"), 0);
    assert_int_equal(test_json_u64(json, "totals", "live"), 1); /* the first one's leak */
    bh_socket_reporter_close(&next);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_report_timeouts PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_close_waits_by_its_own_flush_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(another_send_timeout_gets_its_own_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(a_reporter_opened_after_the_last_close_is_a_new_stream, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("report_timeouts", tests, NULL, NULL);
}
