/*
 * report_wait.h - white-box waits on the socket reporter's connection, for
 * the tests that reach its state (report/report_socket.h, and cmocka,
 * included first). Owns nothing; must never change the state it waits on.
 */
#ifndef BH_TEST_REPORT_WAIT_H
#define BH_TEST_REPORT_WAIT_H

#include "support/server.h"

/* Under c->lock: waits (TEST_HANG_S at most) until the connection is up
 * with s's ring taken by the server (up 1), or down (up 0). */
static inline void test_wait_ring_taken(conn *c, const stream *s, int up) {
    for (double end = test_now_s() + TEST_HANG_S;
         (up ? !(c->connected && s->mode == RING_SERVER) : c->connected) && test_now_s() < end;) {
        pthread_mutex_unlock(&c->lock);
        test_sleep_ms(1);
        pthread_mutex_lock(&c->lock);
    }
    assert_int_equal(c->connected, up);
}

#endif
