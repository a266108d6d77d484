/*
 * test_report_ring_twice.c - a ring the server took, on a connection that
 * ended, closed by its reporter before a reconnection: each event must be
 * applied by the server or counted as dropped by the reporter, not both.
 *
 * bh-trackd drains every ring of a connection that ended up to the heads it
 * left (docs/protocol.md, "What waits for a drain"; td_ring_close_client).
 * The reporter's close, disconnected (no server reachable at that moment),
 * lets the ring go (let_go in src/report/report_socket.c): it consumed the
 * records itself and counted them as lost. The server, still holding its
 * mapping of the memfd, drains the same records when it gets to the ended
 * connection. The order is made deterministic with SIGSTOP: the server is
 * stopped while the events are written and the reporter's connection ends
 * (its socket shut down under the connection's lock) and the socket path is
 * moved away (so the close's one more try fails), and continued after the
 * close returned.
 *
 * usage: test_report_ring_twice PATH-TO-bh-trackd
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
#include "support/report_wait.h"
#include "support/server.h"

#define EVENTS 200

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-ring-twice");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&paths);
}

static void a_ring_of_an_ended_connection_is_not_drained_twice(void **state) {
    (void)state;
    const char *base[] = {trackd, "--socket", paths.sock, "--log", paths.log, "--grace-ms", "600000", NULL};
    pid_t srv = test_server_spawn(base, NULL, 0);
    test_wait_accepting(paths.sock);
    bh_socket_options opt = {.flush_timeout_ms = (uint32_t)(TEST_HANG_S * 1000)};
    bh_reporter keep, closing; /* keep holds the connection (and its c->lost) past the close */
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &keep), BH_OK);
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &closing), BH_OK);
    stream *s = closing.ctx;
    conn *c = s->c;
    pthread_mutex_lock(&c->lock);
    test_wait_ring_taken(c, s, 1);
    pthread_mutex_unlock(&c->lock);

    assert_int_equal(kill(srv, SIGSTOP), 0);
    for (uint64_t i = 0; i < EVENTS; i++) {
        bh_event ev = {BH_EVENT_ALLOC, 1, 0x20000000ull + i * 4096, 64, i + 1};
        closing.report(closing.ctx, &ev);
    }
    char away[sizeof(paths.sock) + 8];
    snprintf(away, sizeof(away), "%s.away", paths.sock);
    assert_int_equal(rename(paths.sock, away), 0);
    pthread_mutex_lock(&c->lock);
    assert_int_equal(shutdown(c->fd, SHUT_RDWR), 0); /* the sender reads the end */
    test_wait_ring_taken(c, s, 0);
    pthread_mutex_unlock(&c->lock);

    bh_socket_reporter_close(&closing);
    pthread_mutex_lock(&c->lock);
    uint64_t lost = c->lost;
    pthread_mutex_unlock(&c->lock);

    assert_int_equal(rename(away, paths.sock), 0);
    assert_int_equal(kill(srv, SIGCONT), 0);
    /* The ended connection's drain: all of them, or what it applies stops
     * growing. */
    uint64_t applied = test_wait_stat(trackd, paths.sock, "totals", "allocs", EVENTS);
    print_message("%d events: %llu counted lost by the reporter's close, %llu applied by the server\n",
                  EVENTS, (unsigned long long)lost, (unsigned long long)applied);
    assert_int_equal(lost + applied, EVENTS);
    bh_socket_reporter_close(&keep);
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_ring_of_an_ended_connection_is_not_drained_twice, setup, teardown),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &trackd, "report_ring_twice",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
