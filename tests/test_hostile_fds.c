/*
 * test_hostile_fds.c - attacks on a real bh-trackd through the descriptors a
 * client passes where the server does not look for them: out of band.
 *
 * usage: test_hostile_fds PATH-TO-bh-trackd [TEST-NAME-PATTERN]
 *
 * A Unix stream socket takes one byte out of band (send with MSG_OOB, Linux
 * 5.15 and later), and descriptors ride with it like with any byte. A read
 * that is not MSG_OOB steps over that byte, and with it over its
 * descriptors: the kernel drops them in the reading thread, unseen (no
 * SCM_RIGHTS, no MSG_CTRUNC, not even when peeking), and a lingering TCP
 * socket among them holds that thread for its linger time.
 *
 * Each test starts its own server. What a test checks is an order of events
 * the machine's load cannot change (an answer that arrives, or a descriptor
 * closed, while a close that waits 60 s is still pending), never a
 * wall-clock bound.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <cmocka.h>

#include "proc.h"
#include "support/hostile.h"
#include "support/rings.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-hostile-fds");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* 1 if this kernel's Unix stream sockets take bytes out of band. */
static int oob_supported(void) {
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    int ok = send(sp[0], "x", 1, MSG_OOB | MSG_DONTWAIT) == 1;
    close(sp[0]);
    close(sp[1]);
    return ok;
}

/* One byte out of band on sock, carrying a TCP socket that lingers 60 s
 * (its own copy let go, so the server's is the last); *l its listener:
 * closing it resets the socket, whose close then ends at once. */
static void send_lingering_out_of_band(int sock, int *l) {
    int lingering = hs_lingering_socket(l, 60);
    uint8_t one = 0xee;
    tr_send_fds_flags(sock, &one, 1, &lingering, 1, MSG_OOB);
    close(lingering);
}

/* On the connection the loop reads: main before this test stepped over the
 * byte, the kernel released the lingering socket in the loop's recvmsg,
 * and the owner's stats waited the linger time (the wait here ends after
 * TEST_HANG_S). The byte is read in line now, its descriptor taken like any
 * other and refused (not a memfd), its close the closer thread's. */
static void a_descriptor_passed_out_of_band_never_holds_the_loop(void **state) {
    (void)state;
    if (!oob_supported())
        skip();
    pid_t srv = hs_start(trackd, &paths, NULL, 0);
    double control = hs_stats_latency(paths.sock, 5, NULL);
    int sock = hs_reporter(paths.sock), l;
    tr_await_read(sock); /* its HELLO read: the byte comes alone */
    send_lingering_out_of_band(sock, &l);
    tr_await_read(sock);
    double took = 0;
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, &took);
    printf("# stats with a 60 s lingering socket passed out of band: %.4f s (control %.4f s)\n", took,
           control);
    assert_non_null(j); /* answered while the close is pending: the listener is still open */
    free(j);
    assert_int_equal(tr_await_frame(sock, BH_WIRE_ERROR, NULL), BH_EINVAL); /* not a memfd */
    assert_int_equal(hs_wait_total(paths.sock, "passed_fds_refused", 1, TEST_HANG_S), 1);
    close(sock);
    close(l);
    test_server_stop_clean(srv);
}

/* Inside a Unix socket passed as a ring, whose queue the closer thread
 * takes out before closing it: main before this test stepped over the byte
 * there, the lingering socket was released in the closer thread, and every
 * descriptor passed after it waited open for the linger time (here a pipe
 * end: not closed within TEST_HANG_S). Or behind a connection's input the
 * server refused unread, which the closer takes out the same way. */
static void out_of_band_in_a_queue_the_closer_takes(int behind_input) {
    if (!oob_supported())
        skip();
    pid_t srv = hs_start(trackd, &paths, NULL, 0);
    int l, sock;
    if (behind_input) { /* a bad magic, then the byte: the server reads no further */
        assert_int_equal(kill(srv, SIGSTOP), 0);
        sock = hs_reporter(paths.sock);
        static const uint8_t junk[BH_WIRE_HEADER] = {0xee};
        hs_send_all(sock, junk, sizeof(junk));
        send_lingering_out_of_band(sock, &l);
        assert_int_equal(kill(srv, SIGCONT), 0);
    } else {
        int pair[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        send_lingering_out_of_band(pair[1], &l);
        close(pair[1]);
        sock = hs_reporter(paths.sock);
        tr_send_ring(sock, 1024, pair[0]);
        close(pair[0]);
    }
    assert_int_equal(tr_await_frame(sock, BH_WIRE_ERROR, NULL), BH_EINVAL); /* bad magic, not a memfd */
    close(sock);
    int closed = hs_passed_pipe_closed(paths.sock); /* while the lingering close would be pending */
    printf("# a pipe passed after a lingering socket out of band %s: %s\n",
           behind_input ? "behind unread input" : "in a passed socket", closed ? "closed" : "still open");
    assert_true(closed);
    close(l);
    test_server_stop_clean(srv);
}

static void a_descriptor_out_of_band_in_a_passed_socket_never_holds_the_closer(void **state) {
    (void)state;
    out_of_band_in_a_queue_the_closer_takes(0);
}

static void a_descriptor_out_of_band_behind_unread_input_never_holds_the_closer(void **state) {
    (void)state;
    out_of_band_in_a_queue_the_closer_takes(1);
}

/* ------------------------------------------------------------ no room to take a queue */

/* One end of a Unix socket pair whose queue holds a TCP socket lingering
 * 60 s (the other end and the test's copy let go: the queue holds the last
 * reference); *l its listener: closing it resets the lingering socket. */
static int socket_holding_a_lingering_one(int *l) {
    int pair[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    int lingering = hs_lingering_socket(l, 60);
    uint8_t one = 1;
    tr_send_fds(pair[1], &one, 1, &lingering, 1);
    close(lingering);
    close(pair[1]);
    return pair[0];
}

/* One message of 253 descriptors to a server with 300 (soft and hard): a
 * Unix socket whose queue holds a TCP socket lingering 60 s, then 252 pipe
 * ends. The loop has room to read it; the closer thread then has none to
 * take that socket's queue out (its 253 beside the 252 still open). main
 * before this test closed the socket with its queue in it: the lingering
 * socket was released in the closer thread, held there the linger time,
 * and the 252 pipe ends waited behind it (not closed within TEST_HANG_S),
 * counted against the uid's connection cap (the owner's stats refused).
 * The socket is closed after them now, when their closes have made room
 * to take its queue out. */
static void a_queue_without_room_never_holds_the_closer(void **state) {
    (void)state;
    pid_t srv = hs_start(trackd, &paths, NULL, 300);
    int l, p[2];
    int held_socket = socket_holding_a_lingering_one(&l);
    assert_int_equal(pipe(p), 0);
    int fds[253];
    fds[0] = held_socket;
    for (int k = 1; k < 253; k++)
        fds[k] = p[0];
    int sock = hs_reporter(paths.sock);
    uint8_t f[BH_WIRE_HEADER];
    tr_send_fds(sock, f, bh_wire_header(f, BH_WIRE_DRAIN, 0), fds, 253);
    close(held_socket);
    close(p[0]);
    assert_int_equal(tr_await_frame(sock, BH_WIRE_ERROR, NULL), BH_EINVAL); /* not memfds */
    close(sock);
    /* The pipe ends closed while the lingering close would be pending; then
     * nothing of that client's waits, and the owner is served. */
    int pipes_closed = hs_closed_in_time(p[1]);
    double took = 0;
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, &took);
    printf(
        "# 300 descriptors, a queue with a 60 s lingering socket then 252 pipe ends: pipe ends %s, stats %s "
        "(%.4f s)\n",
        pipes_closed ? "closed" : "open", j != NULL ? "answered" : "not answered", took);
    assert_true(pipes_closed);
    assert_non_null(j);
    free(j);
    assert_true(hs_passed_pipe_closed(paths.sock));
    close(p[1]);
    close(l);
    test_server_stop_clean(srv);
}

/* ------------------------------------------------------------ short of descriptors */

/* Events, then a RING frame with its memfd, queued together on a server
 * with 128 descriptors (no message's 253 can be kept free: every read
 * looks at what the input carries first). The kernel counts one descriptor
 * queued, which has room: the events are applied and the ring taken. main
 * before this test peeked, and the peek met the memfd past the events (a
 * peek walks on to the first message with descriptors, whatever its
 * length), so it refused the whole input as if 253 rode in it: the
 * connection was refused with its 100 events never read (0 applied). */
static void events_before_a_ring_are_read_when_descriptors_are_short(void **state) {
    (void)state;
    enum { EVENTS = 100 };
    pid_t srv = hs_start(trackd, &paths, NULL, 128);
    int sock = hs_reporter(paths.sock);
    tr_await_read(sock); /* its HELLO read */
    assert_int_equal(kill(srv, SIGSTOP), 0);
    hs_events(sock, 1, BH_EVENT_ALLOC, BH_DOMAIN(0, BH_MEM_DRAM), 0, 0x100000, 64, EVENTS);
    uint8_t *map;
    int ring = tr_make_ring(1024, 1, 0, &map);
    tr_send_ring(sock, 1024, ring);
    assert_int_equal(kill(srv, SIGCONT), 0);
    uint32_t status = 1;
    int64_t acked = tr_await_frame(sock, BH_WIRE_RING_ACK, &status);
    /* Read in order: whatever came before the RING is applied by now. */
    uint64_t allocs = hs_stat(paths.sock, "allocs");
    printf("# %d events then a RING, 128 descriptors: %" PRIu64 " applied, ring %s (status %d), %" PRIu64
           " connections refused\n",
           EVENTS, allocs, acked == 1 ? "answered" : "not answered", (int)status,
           hs_stat(paths.sock, "refused_connections"));
    assert_int_equal(allocs, EVENTS);
    assert_int_equal(acked, 1);
    assert_int_equal(status, BH_OK);
    munmap(map, bh_ring_bytes(1024));
    close(ring);
    close(sock);
    test_server_stop_clean(srv);
}

/* A connection that sends nothing: 1 if refused at accept (ERROR
 * BH_EBUSY), 0 if accepted (closed at the handshake timeout without one).
 * Refused with nothing unread, it is closed on the loop, not queued for
 * the closer (it would count against the uid itself). */
static int refused_at_accept(void) {
    int fd = bh_unix_connect(paths.sock);
    assert_true(fd >= 0);
    struct timeval tv = {(time_t)TEST_HANG_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int64_t code = tr_await_frame(fd, BH_WIRE_ERROR, NULL);
    close(fd);
    return code == BH_EBUSY;
}

/* 1 once a connection is accepted, within TEST_HANG_S. */
static int accepted_in_time(void) {
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end;)
        if (!refused_at_accept())
            return 1;
    return 0;
}

/* A Unix socket passed with a TCP socket lingering 60 s inside, then a pipe
 * end, under a limit of 128 (no room to take a queue out): the closer puts
 * the socket off behind the pipe end, closes that, then closes the socket
 * with its queue, held there the linger time. All the while the socket is
 * this uid's, within --max-connections-per-uid 2: with one connection open,
 * a second is refused. main before this test counted the sockets put off
 * for nobody once the thread was not busy with the queue (the second
 * accepted: 1 of 2 counted), or for the uid the thread was busy with. */
static void a_socket_put_off_counts_for_its_uid(void **state) {
    (void)state;
    pid_t srv = hs_start(
        trackd, &paths,
        (const char *const[]){"--max-connections-per-uid", "2", "--handshake-timeout-ms", "300", NULL}, 128);
    int l, p[2];
    int held_socket = socket_holding_a_lingering_one(&l);
    assert_int_equal(pipe(p), 0);
    int sock = hs_reporter(paths.sock);
    uint8_t f[BH_WIRE_HEADER];
    tr_send_fds(sock, f, bh_wire_header(f, BH_WIRE_DRAIN, 0), (const int[]){held_socket, p[0]}, 2);
    close(held_socket);
    close(p[0]);
    assert_int_equal(tr_await_frame(sock, BH_WIRE_ERROR, NULL), BH_EINVAL); /* not memfds */
    uint8_t rest[64];
    while (recv(sock, rest, sizeof(rest), 0) > 0) /* until the server closed it: no connection left */
        ;
    close(sock);
    /* The pipe end closed, after the socket was put off: the socket's
     * close, held, is all the closer has left. */
    assert_true(hs_closed_in_time(p[1]));
    /* A connection is accepted (1 of 2) once the closer is done with the
     * pipe end (counted until its close returned). */
    assert_true(accepted_in_time());
    int held = hs_reporter(paths.sock); /* one connection: 2 of 2 with the socket */
    int refused = refused_at_accept();
    printf("# a socket put off by the closer, one connection, per-uid cap 2: another connection %s\n",
           refused ? "refused" : "accepted");
    assert_true(refused);
    close(held); /* 1 of 2 once the server has seen that close: accepted */
    assert_true(accepted_in_time());
    close(p[1]);
    close(l); /* resets the lingering socket: the closer's close ends */
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_descriptor_passed_out_of_band_never_holds_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_descriptor_out_of_band_in_a_passed_socket_never_holds_the_closer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_descriptor_out_of_band_behind_unread_input_never_holds_the_closer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_queue_without_room_never_holds_the_closer, setup, teardown),
        cmocka_unit_test_setup_teardown(events_before_a_ring_are_read_when_descriptors_are_short, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_socket_put_off_counts_for_its_uid, setup, teardown),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &trackd, "hostile_fds",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
