/*
 * report_stream.c - the socket reporter on the application's threads
 * (report_socket.h): what one report does.
 *
 * Owns: one event's way into its stream: the shadow live set, the event's
 * number, its record in the ring, or its drop.
 * Must never: do socket I/O, take any lock but the stream's, wait for
 * anything but that short critical section (or, by choice, max_block_us for
 * ring room), or lose an event without counting it and asking for a resync.
 */
#include <time.h>

#include "report_socket.h"

/* Under s->lock: waits for ring room up to the stream's max_block_us, polling
 * the consumer's tail (the consumer is another process or the sender: there
 * is nothing to sleep on). Returns 0 once the record is written. */
static int put_waiting(stream *s, const bh_event *ev, uint64_t n, uint64_t now) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec nap = {0, 20000};
        nanosleep(&nap, NULL);
        if (rs_ring_put(s, (uint8_t)ev->kind, ev, n, now) == 0)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t us = (int64_t)(t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000;
        if (us >= (int64_t)s->max_block_us)
            return -1;
    }
}

void rs_report_cb(void *ctx, const bh_event *ev) {
    stream *s = ctx;
    conn *c = s->c;
    pthread_mutex_lock(&s->lock);
    s->reported++;
    /* Relaxed: a flag set once (fork, withdrawal); a report that misses it
     * writes a record nobody drains, which is counted the same way. */
    if (AO_load(&c->dead)) {
        s->dropped++;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    uint64_t now = 0;
    if (ev->kind == BH_EVENT_ALLOC) {
        now = rs_clock_ms();
        /* Host memory ran out: a resync would miss this allocation. Counted
         * as a drop (its record still goes out). */
        if (rs_shadow_put(s, ev->device, ev->address, ev->size, now) != 0) {
            s->dropped++;
            AO_store(&c->need_resync, 1);
        }
    } else {
        rs_shadow_del(s, ev->device, ev->address);
    }
    uint64_t n = ++s->n;
    /* Waiting for room is for a consumer that is briefly behind; once events
     * were dropped (a resync is due) it would buy nothing. Relaxed: a hint. */
    if (rs_ring_put(s, (uint8_t)ev->kind, ev, n, now) == 0 ||
        (s->max_block_us > 0 && !AO_load(&c->need_resync) && put_waiting(s, ev, n, now) == 0)) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    /* No room: the number stays given, so the consumer sees the gap. */
    s->dropped++;
    pthread_mutex_unlock(&s->lock);
    /* Relaxed: the sender polls it every turn. */
    AO_store(&c->need_resync, 1);
}
