/*
 * test_report_close.c - a socket reporter's close while its ring is
 * offered to a server that has not answered yet, against a scripted server
 * (a thread of this test speaking the wire protocol, docs/protocol.md).
 *
 * The reporter offers its ring (RING, the memfd riding along); the server
 * answers RING_ACK (0: it drains the ring; else the sender drains it and
 * sends over the socket) or ERROR BH_EINVAL (a server that takes no rings:
 * bh-trackd short of descriptors says that since df2e9e9; the reporter then
 * sends over the socket from its next connection). A close in that window
 * must deliver the ring's events or count them as dropped:
 *
 * 1. ERROR BH_EINVAL while the close's flush waits: the events should go
 *    over the socket on the next connection (the flush has time left), not
 *    be let go as lost.
 * 2. No answer until the flush's deadline passed and the close returned,
 *    then RING_ACK refusing the ring: the events are neither delivered nor
 *    counted (c->lost), unless the close counted them.
 * 3. (Not the window above: the RING_CLOSE a close queues for a ring the
 *    server took.) More than 16 closes while the sender is held in a write:
 *    a fixed queue of 16 (c->closed) sent only 16 RING_CLOSE frames; the
 *    server kept the other rings mapped, counted against the process's
 *    ring limits, until the connection ended.
 *
 * White-box (report/report_socket.h) only to know when the close's flush
 * waits (c->flushers) and when the stream left the connection, and to read
 * c->lost. Bounded by conditions, each waited for TEST_HANG_S at most.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "report/report_socket.h"
#include "support/server.h"

#define EVENTS 100

static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-report-close");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(paths.sock);
    return test_paths_remove(&paths);
}

/* The next connection on lfd, waiting TEST_HANG_S at most (-1: none came),
 * its reads bounded by TEST_HANG_S too. */
static int accept_one(int lfd, int wait_ms) {
    struct pollfd p = {lfd, POLLIN, 0};
    if (poll(&p, 1, wait_ms) != 1)
        return -1;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    struct timeval tv = {(time_t)TEST_HANG_S, 0};
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static int read_full(int fd, uint8_t *p, size_t n, int *passed) {
    for (size_t done = 0; done < n;) {
        union {
            char b[CMSG_SPACE(4 * sizeof(int))];
            struct cmsghdr align;
        } cm;
        struct iovec iov = {p + done, n - done};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
        ssize_t r = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h)) {
            if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
                continue;
            for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                int x;
                memcpy(&x, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
                if (passed != NULL && *passed < 0)
                    *passed = x; /* the ring: kept by the caller */
                else
                    close(x);
            }
        }
        done += (size_t)r;
    }
    return 0;
}

/* One frame: its type, payload into p (cap bytes), length in *len; -1 at
 * the peer's end, after TEST_HANG_S without a byte, or past cap. (The
 * scripted servers run on threads of their own: they report, the test
 * thread asserts.) */
static int read_frame(int fd, uint16_t *type, uint8_t *p, size_t cap, uint32_t *len, int *passed) {
    uint8_t h[BH_WIRE_HEADER];
    if (read_full(fd, h, sizeof(h), passed) != 0)
        return -1;
    *type = bh_get16(h + 6);
    *len = bh_get32(h + 8);
    if (*len > cap)
        return -1;
    return read_full(fd, p, *len, passed);
}

static int send_all(int fd, const uint8_t *p, size_t n) {
    return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int send_error(int fd, int32_t code) {
    static const char msg[] = "takes no rings";
    uint8_t f[BH_WIRE_HEADER + 4 + sizeof(msg) - 1];
    size_t h = bh_wire_header(f, BH_WIRE_ERROR, (uint32_t)(4 + sizeof(msg) - 1));
    bh_put32(f + h, (uint32_t)code);
    memcpy(f + h + 4, msg, sizeof(msg) - 1);
    return send_all(fd, f, sizeof(f));
}

static int send_ring_ack(int fd, uint32_t stream_id, int32_t status) {
    uint8_t f[BH_WIRE_HEADER + 8];
    size_t h = bh_wire_header(f, BH_WIRE_RING_ACK, 8);
    bh_put32(f + h, stream_id);
    bh_put32(f + h + 4, (uint32_t)status);
    return send_all(fd, f, sizeof(f));
}

/* Reads frames until n RINGs came (their stream ids into ids); -1 if the
 * connection ended first. */
static int await_rings(int fd, uint32_t *ids, int n) {
    for (int got = 0; got < n;) {
        uint16_t type;
        uint32_t len;
        uint8_t p[BH_WIRE_HELLO_MAX];
        int ring = -1;
        int rc = read_frame(fd, &type, p, sizeof(p), &len, &ring);
        if (ring >= 0)
            close(ring);
        if (rc != 0)
            return -1;
        if (type == BH_WIRE_RING)
            ids[got++] = bh_get32(p);
    }
    return 0;
}

/* Counts EVENT frames of stream_id until the peer's end. */
static uint64_t count_events(int fd, uint32_t stream_id) {
    uint64_t n = 0;
    for (;;) {
        uint16_t type;
        uint32_t len;
        uint8_t p[BH_WIRE_HEADER + 8 + CHUNK * BH_WIRE_RESYNC_TIMED_ENTRY];
        if (read_frame(fd, &type, p, sizeof(p), &len, NULL) != 0)
            return n;
        n += type == BH_WIRE_EVENT && bh_get32(p) == stream_id;
    }
}

static void report_allocs(const bh_reporter *rep, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        bh_event ev = {BH_EVENT_ALLOC, 1, 0x100000 + i * 4096, 64, i + 1};
        rep->report(rep->ctx, &ev);
    }
}

/* Waits (under nothing) until cond(c) holds, TEST_HANG_S at most. */
static int wait_for(conn *c, int (*cond)(conn *, uint32_t), uint32_t arg) {
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(1)) {
        pthread_mutex_lock(&c->lock);
        int ok = cond(c, arg);
        pthread_mutex_unlock(&c->lock);
        if (ok)
            return 1;
    }
    return 0;
}

static int flushing(conn *c, uint32_t unused) {
    (void)unused;
    return c->flushers > 0;
}

static int stream_gone(conn *c, uint32_t id) { return rs_stream_by_id(c, id) == NULL; }

static int stream_self(conn *c, uint32_t id) {
    const stream *s = rs_stream_by_id(c, id);
    return s != NULL && s->mode == RING_SELF;
}

/* ---------------------------------------------------------------- 1 */

typedef struct script1 {
    int lfd;
    conn *c;
    uint32_t id;
    int refused;          /* the ring offer came and was refused while the close's flush waited */
    int accepted;         /* a second connection came */
    uint64_t received;    /* EVENT frames on it */
    pthread_mutex_t lock; /* closed's (a lock, not an atomic: helgrind and drd see it) */
    int closed;           /* the close returned */
} script1;

/* Takes the ring offer, answers ERROR BH_EINVAL once the close's flush waits,
 * then serves the next connection (the reporter sends over the socket) to
 * its end, if one comes before the close returns. */
static void *server1(void *arg) {
    script1 *sc = arg;
    int fd = accept_one(sc->lfd, (int)(TEST_HANG_S * 1000));
    if (fd < 0)
        return NULL;
    if (await_rings(fd, &sc->id, 1) == 0 && wait_for(sc->c, flushing, 0) && send_error(fd, BH_EINVAL) == 0)
        sc->refused = 1;
    close(fd);
    /* A close that tries again connects while it runs (a connection made
     * by it is in the backlog by the time it returns); one that lets its
     * events go returns without one. */
    fd = -1;
    for (double end = test_now_s() + TEST_HANG_S; fd < 0 && test_now_s() < end;) {
        pthread_mutex_lock(&sc->lock);
        int last = sc->closed;
        pthread_mutex_unlock(&sc->lock);
        fd = accept_one(sc->lfd, 10);
        if (last)
            break;
    }
    if (fd >= 0) {
        sc->accepted = 1;
        sc->received = count_events(fd, sc->id);
        close(fd);
    }
    return NULL;
}

static void a_close_after_a_ring_refusal_sends_over_the_socket(void **state) {
    (void)state;
    script1 sc = {.lfd = test_unix_listen(paths.sock, 8), .lock = PTHREAD_MUTEX_INITIALIZER};
    bh_socket_options opt = {0};
    opt.flush_timeout_ms = (uint32_t)(TEST_HANG_S * 1000 / 2);
    bh_reporter rep;
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &rep), BH_OK);
    sc.c = ((stream *)rep.ctx)->c;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, server1, &sc), 0);
    report_allocs(&rep, EVENTS);
    bh_reporter_stats st;
    assert_int_equal(bh_socket_reporter_stats(&rep, &st), BH_OK);
    assert_int_equal(st.dropped, 0);
    bh_socket_reporter_close(&rep);
    pthread_mutex_lock(&sc.lock);
    sc.closed = 1;
    pthread_mutex_unlock(&sc.lock);
    assert_int_equal(pthread_join(t, NULL), 0);
    close(sc.lfd);
    assert_true(sc.refused);
    assert_true(sc.accepted);
    assert_int_equal(sc.received, EVENTS);
}

/* ---------------------------------------------------------------- 2 */

typedef struct script2 {
    int lfd, fd;
    uint32_t ids[2];
    int offered; /* both rings were offered */
} script2;

/* Takes both ring offers and answers nothing (the test answers later). */
static void *server2(void *arg) {
    script2 *sc = arg;
    sc->fd = accept_one(sc->lfd, (int)(TEST_HANG_S * 1000));
    sc->offered = sc->fd >= 0 && await_rings(sc->fd, sc->ids, 2) == 0;
    return NULL;
}

static void a_ring_refused_after_its_close_is_counted(void **state) {
    (void)state;
    script2 sc = {.lfd = test_unix_listen(paths.sock, 8), .fd = -1};
    bh_socket_options opt = {0};
    opt.flush_timeout_ms = 200; /* the close gives up before any answer: what is asserted */
    bh_reporter keep, closing;
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &keep), BH_OK);
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &closing), BH_OK);
    conn *c = ((stream *)keep.ctx)->c;
    assert_ptr_equal(((stream *)closing.ctx)->c, c); /* one connection: keep holds it open */
    uint32_t closing_id = ((stream *)closing.ctx)->id, keep_id = ((stream *)keep.ctx)->id;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, server2, &sc), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(sc.offered); /* both rings offered, neither answered */
    report_allocs(&closing, EVENTS);
    bh_socket_reporter_close(&closing); /* its flush gives up: the ring is still offered */
    assert_true(wait_for(c, stream_gone, closing_id));
    assert_int_equal(send_ring_ack(sc.fd, closing_id, BH_ENOMEM), 0);
    assert_int_equal(send_ring_ack(sc.fd, keep_id, BH_ENOMEM), 0);
    assert_true(wait_for(c, stream_self, keep_id)); /* both answers were read, in order */
    pthread_mutex_lock(&c->lock);
    uint64_t lost = c->lost;
    pthread_mutex_unlock(&c->lock);
    /* Never drained by anyone (the server refused the ring, the sender no
     * longer has it): every one of its events must be counted. */
    assert_int_equal(lost, EVENTS);
    bh_socket_reporter_close(&keep);
    close(sc.fd);
    close(sc.lfd);
}

/* ---------------------------------------------------------------- 3 */

enum { RINGS = 20 };

typedef struct reader3 {
    int fd;
    uint32_t ids[RINGS];
    int closes[RINGS]; /* RING_CLOSE frames seen per ring stream */
} reader3;

/* Reads everything to the peer's end, counting RING_CLOSE frames. */
static void *read_to_end(void *arg) {
    reader3 *r = arg;
    for (;;) {
        uint16_t type;
        uint32_t len;
        uint8_t p[BH_WIRE_HEADER + 8 + CHUNK * BH_WIRE_RESYNC_TIMED_ENTRY];
        if (read_frame(r->fd, &type, p, sizeof(p), &len, NULL) != 0)
            return NULL;
        for (int i = 0; type == BH_WIRE_RING_CLOSE && i < RINGS; i++)
            r->closes[i] += bh_get32(p) == r->ids[i];
    }
}

static int modes_settled(conn *c, uint32_t busy_id) {
    for (const stream *s = c->streams; s != NULL; s = s->next)
        if (s->mode != (s->id == busy_id ? RING_SELF : RING_SERVER))
            return 0;
    return 1;
}

static int sending(conn *c, uint32_t unused) {
    (void)unused;
    return c->in_flight > 0;
}

/* RINGS reporters whose rings the server took close while the sender is
 * held in a write (the server reads nothing for a while: a slow server; the
 * events of a stream whose ring it refused fill the socket): each close
 * queues its RING_CLOSE (c->gone) for the sender's next turn.
 * Every one must reach the server, or it keeps the ring mapped, counted
 * against the process's ring limits, until the connection ends. */
static void ring_closes_queued_past_sixteen_all_reach_the_server(void **state) {
    (void)state;
    int lfd = test_unix_listen(paths.sock, 8);
    bh_socket_options opt = {.flush_timeout_ms = 10, .send_timeout_ms = (uint32_t)(TEST_HANG_S * 1000)};
    bh_reporter busy, rings[RINGS];
    assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &busy), BH_OK);
    for (int i = 0; i < RINGS; i++)
        assert_int_equal(bh_socket_reporter_open(paths.sock, &opt, &rings[i]), BH_OK);
    conn *c = ((stream *)busy.ctx)->c;
    uint32_t busy_id = ((stream *)busy.ctx)->id;
    reader3 r = {.fd = accept_one(lfd, (int)(TEST_HANG_S * 1000))};
    assert_true(r.fd >= 0);
    uint32_t offered[RINGS + 1];
    assert_int_equal(await_rings(r.fd, offered, RINGS + 1), 0);
    for (int i = 0; i < RINGS + 1; i++)
        assert_int_equal(send_ring_ack(r.fd, offered[i], offered[i] == busy_id ? BH_ENOMEM : 0), 0);
    assert_true(wait_for(c, modes_settled, busy_id));
    for (int i = 0; i < RINGS; i++)
        r.ids[i] = ((stream *)rings[i].ctx)->id;

    report_allocs(&busy, 20000); /* about 1 MB over the socket: the sender's write waits for the reader */
    assert_true(wait_for(c, sending, 0));
    for (int i = 0; i < RINGS; i++)
        bh_socket_reporter_close(&rings[i]); /* each flush gives up after 10 ms */
    pthread_mutex_lock(&c->lock);
    uint64_t in_flight = c->in_flight;
    pthread_mutex_unlock(&c->lock);
    assert_true(in_flight > 0); /* the sender was held in its write all along */

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_to_end, &r), 0);
    /* Everything delivered first (the close's own flush gives up after 10 ms),
     * then the connection ends. */
    assert_int_equal(bh_socket_reporter_flush(&busy, (uint32_t)(TEST_HANG_S * 1000)), BH_OK);
    bh_socket_reporter_close(&busy);
    assert_int_equal(pthread_join(t, NULL), 0);
    close(r.fd);
    close(lfd);
    int sent = 0;
    for (int i = 0; i < RINGS; i++)
        sent += r.closes[i] == 1;
    print_message("%d rings closed while the sender was held: %d RING_CLOSE frames reached the server\n",
                  RINGS, sent);
    assert_int_equal(sent, RINGS);
}

/* usage: test_report_close [valgrind]: under valgrind the third test is left
 * out (the sender, at valgrind's pace, was found between writes rather than
 * held in one, its premise: 1 of 1 helgrind runs). */
int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_close_after_a_ring_refusal_sends_over_the_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(a_ring_refused_after_its_close_is_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(ring_closes_queued_past_sixteen_all_reach_the_server, setup,
                                        teardown),
    };
    size_t n = sizeof(tests) / sizeof(tests[0]);
    if (argc > 1 && strcmp(argv[1], "valgrind") == 0)
        n--;
    return _cmocka_run_group_tests("test_report_close", tests, n, NULL, NULL);
}
