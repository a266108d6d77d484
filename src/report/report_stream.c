/*
 * report_stream.c - the socket reporter on the application's threads
 * (report_socket.h): what one report does.
 *
 * Owns: one event's way into its stream: the shadow live set, the event's
 * number, its record in the ring, or its drop; events parked when the
 * stream's lock is held by a preempted thread.
 * Must never: do socket I/O, take any lock but the stream's, sleep on it
 * (it spins LOCK_WAIT_US, then parks the event), wait for anything else but,
 * by choice, max_block_us for ring room (the reporting thread's own wait:
 * another thread applying a parked event never waits), or lose an event
 * without counting it and asking for a resync.
 */
#include <time.h>

#include "report_socket.h"

/* Microseconds since t0 (CLOCK_MONOTONIC): the bound of both waits here. */
static int64_t us_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000000 + (t.tv_nsec - t0->tv_nsec) / 1000;
}

/* Under s->lock: waits for ring room up to the stream's max_block_us, polling
 * the consumer's tail (the consumer is another process or the sender: there
 * is nothing to sleep on). Returns 0 once the record is written. */
static int put_waiting(stream *s, const bh_event *ev, uint64_t n, uint64_t now) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec nap = {0, 20000};
        nanosleep(&nap, NULL);
        if (rs_ring_put(s, (uint8_t)ev->kind, ev, n, now) == 0)
            return 0;
        if (us_since(&t0) >= (int64_t)s->max_block_us)
            return -1;
    }
}

/* Under s->lock: one event through the shadow into the ring, or dropped.
 * may_wait: the caller is the reporting thread, which may wait for ring
 * room (max_block_us, its own choice). Any other holder applying a parked
 * event (the sender, which is the ring's only consumer when it drains it
 * itself; a flush, close or stats call) holds the connection's lock too:
 * it must not wait, and the event is dropped and counted at once. */
static void place(stream *s, const bh_event *ev, int may_wait) {
    conn *c = s->c;
    s->reported++;
    /* Relaxed: a flag set once (fork, withdrawal); a report that misses it
     * writes a record nobody drains, which is counted the same way. */
    if (AO_load(&c->dead)) {
        s->dropped++;
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
        (may_wait && s->max_block_us > 0 && !AO_load(&c->need_resync) && put_waiting(s, ev, n, now) == 0))
        return;
    /* No room: the number stays given, so the consumer sees the gap. */
    s->dropped++;
    AO_store(&c->need_resync, 1); /* relaxed: the sender polls it every turn */
}

/* Without the lock: parks an event for the next lock holder. Release CAS:
 * pairs with the acquire CAS in drain_side, which then reads x->ev and
 * x->next as written here. */
static void side_push(stream *s, const bh_event *ev) {
    side_ev *x = bh__calloc(1, sizeof(*x));
    if (x == NULL) {
        /* Relaxed: a count, taken with an RMW (drain_side subtracts what it
         * read); the resync asked for below covers the event. */
        AO_fetch_and_add1(&s->side_lost);
        AO_store(&s->c->need_resync, 1);
        return;
    }
    x->ev = *ev;
    AO_t old = AO_load(&s->side); /* relaxed: the CAS below checks it */
    for (;;) {
        x->next = (side_ev *)old;
        BH__HAPPENS_BEFORE(&s->side);
        AO_t seen = AO_fetch_compare_and_swap_release(&s->side, old, (AO_t)x);
        if (seen == old)
            break;
        old = seen;
    }
}

/* Under s->lock, something parked: applies the parked events, in the order
 * they were parked (may_wait: see place), and counts those that could not
 * be parked. */
static void drain_parked(stream *s, int may_wait) {
    AO_t list = AO_load(&s->side); /* relaxed: the CAS below checks it */
    for (;;) {                     /* the whole stack; acquire pairs with side_push's release */
        AO_t seen = AO_fetch_compare_and_swap_acquire(&s->side, list, 0);
        if (seen == list)
            break;
        list = seen;
    }
    BH__HAPPENS_AFTER(&s->side);
    side_ev *fifo = NULL; /* the stack is newest first */
    for (side_ev *x = (side_ev *)list; x != NULL;) {
        side_ev *next = x->next;
        x->next = fifo;
        fifo = x;
        x = next;
    }
    while (fifo != NULL) {
        side_ev *x = fifo;
        fifo = x->next;
        place(s, &x->ev, may_wait);
        bh__free(x);
    }
    /* Relaxed, both: only the count matters (side_push asked for the
     * resync). Pushers only add and only a lock holder subtracts, so taking
     * away what was read leaves exactly the adds that came after. */
    AO_t lost = AO_load(&s->side_lost);
    if (lost != 0) {
        AO_fetch_and_add(&s->side_lost, (AO_t)0 - lost);
        s->reported += lost;
        s->dropped += lost;
    }
}

/* Under s->lock: drain_parked if anything was parked (a test inline on the
 * report path, the work out of line). Relaxed peek: a push that
 * happens-before this holder's lock is seen by coherence; a concurrent one is
 * drained by the next holder. */
static inline void drain_side(stream *s, int may_wait) {
    if (AO_load(&s->side) != 0 || AO_load(&s->side_lost) != 0)
        drain_parked(s, may_wait);
}

void rs_stream_wait(stream *s) {
    for (unsigned tries = 0; pthread_spin_trylock(&s->lock) != 0; tries++) {
        if (tries >= 256) { /* the holder is likely preempted: let it run */
            struct timespec nap = {0, 20000};
            nanosleep(&nap, NULL);
        }
    }
}

void rs_stream_lock(stream *s) {
    rs_stream_wait(s);
    drain_side(s, 0); /* not a reporting thread: never waits for ring room */
}

void rs_side_free(stream *s) {
    for (side_ev *x = (side_ev *)AO_load(&s->side); x != NULL;) { /* relaxed: the last user */
        side_ev *next = x->next;
        bh__free(x);
        x = next;
    }
}

/* Takes s->lock, spinning up to LOCK_WAIT_US: a reporting thread that went
 * to sleep on the lock would, on a loaded machine, wait for a CPU after its
 * wake-up as well, which no bound can promise. Returns 1 with the lock held. */
static int lock_soon(stream *s) {
    if (pthread_spin_trylock(&s->lock) == 0)
        return 1;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (int i = 0; i < 64; i++)
            if (pthread_spin_trylock(&s->lock) == 0)
                return 1;
        if (us_since(&t0) >= LOCK_WAIT_US)
            return 0;
    }
}

void rs_report_cb(void *ctx, const bh_event *ev) {
    stream *s = ctx;
    if (!lock_soon(s)) {
        side_push(s, ev);
        return;
    }
    drain_side(s, 1);
    place(s, ev, 1);
    pthread_spin_unlock(&s->lock);
}
