/*
 * report_stream.c - the socket reporter on the application's threads
 * (report_socket.h): what one report does.
 *
 * Owns: placing an event in its stream (shadow, seq-indexed ring, late list
 * or drop), parking events whose reporter could not take the lock soon.
 * Must never: do socket I/O, wait for anything but a short critical section
 * (or, by choice, max_block_us for ring room), or lose an event without
 * counting it and asking for a resync.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report_socket.h"

static void place(stream *s, const bh_event *ev, const struct timespec *deadline);

/* Under c->lock. If the shadow cannot take the event (host memory), a later
 * resync would miss this allocation: that loss is counted as a drop. */
static void apply_shadow(stream *s, const bh_event *ev) {
    if (ev->kind == BH_EVENT_ALLOC) {
        if (rs_shadow_put(s, ev->device, ev->address, ev->size) != 0)
            s->dropped++;
    } else {
        rs_shadow_del(s, ev->device, ev->address);
    }
}

/* Under c->lock: the event is not sent. Its slot, if the ring covers it,
 * gets a tombstone (kind 0) so the sender passes it without waiting. */
static void drop(stream *s, const bh_event *ev) {
    conn *c = s->c;
    s->dropped++;
    c->need_resync = 1;
    if (ev->seq >= s->base && ev->seq - s->base < c->opt.queue_capacity) {
        bh_event *slot = &s->ring[ev->seq % c->opt.queue_capacity];
        slot->seq = ev->seq;
        slot->kind = (bh_event_kind)0;
    }
}

/* Without the lock: parks an event for the next lock holder. Release CAS:
 * pairs with the acquire CAS in drain_side, which then reads x->ev and
 * x->next as written here. */
static void side_push(stream *s, const bh_event *ev) {
    side_ev *x = bh__calloc(1, sizeof(*x));
    if (x == NULL) {
        /* Relaxed: a count, taken by drain_side with an RMW. */
        AO_fetch_and_add1(&s->side_lost);
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

/* Under c->lock: sees the parked events as their reporters would have (in
 * the order they were pushed), without waiting for ring room. The peek is relaxed: a push that happens-before
 * this lock holder's report is seen by coherence; a concurrent one is unordered with it and is drained by the
 * next holder. */
void rs_drain_side(stream *s) {
    if (AO_load(&s->side) == 0 && AO_load(&s->side_lost) == 0)
        return;
    AO_t list = AO_load(&s->side); /* relaxed: the CAS below checks it */
    for (;;) {                     /* take the whole stack; acquire pairs with side_push's release */
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
        place(s, &x->ev, NULL); /* placed late, or dropped if there is no room */
        bh__free(x);
    }
    AO_t lost = AO_load(&s->side_lost);
    while (lost != 0) { /* relaxed: only the count matters */
        AO_t seen = AO_fetch_compare_and_swap(&s->side_lost, lost, 0);
        if (seen == lost) {
            s->reported += lost;
            s->dropped += lost;
            s->c->need_resync = 1;
            break;
        }
        lost = seen;
    }
}

/* Under c->lock (the sender): every stream's parked events. */
void rs_drain_all(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        rs_drain_side(s);
}

/* Takes c->lock, spinning up to LOCK_WAIT_US: a reporting thread that went
 * to sleep on the lock would, on a loaded machine, wait for a CPU after its
 * wake-up as well, which no bound can promise. A reporter that allows
 * itself a longer max_block_us then sleeps until deadline. Returns 1 with
 * the lock held. */
static int lock_soon(conn *c, const struct timespec *deadline) {
    if (pthread_mutex_trylock(&c->lock) == 0)
        return 1;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (int i = 0; i < 64; i++)
            if (pthread_mutex_trylock(&c->lock) == 0)
                return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t us = (int64_t)(t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000;
        if (us >= LOCK_WAIT_US)
            break;
    }
    return c->opt.max_block_us > LOCK_WAIT_US && pthread_mutex_timedlock(&c->lock, deadline) == 0;
}

/* Under c->lock: one event is seen by the stream (shadow, counters) and put
 * in its ring, waiting for room until *deadline (NULL: not at all). */
static void place(stream *s, const bh_event *ev, const struct timespec *deadline) {
    conn *c = s->c;
    s->reported++;
    if (c->forked || c->quiet) { /* nobody will send it, and no resync will follow */
        s->dropped++;
        return;
    }
    if (ev->seq > s->max_seq) /* seen, placed or not: a resync restarts after it */
        s->max_seq = ev->seq;
    apply_shadow(s, ev);
    uint64_t epoch = c->epoch;
    int timed_out = deadline == NULL || c->opt.max_block_us == 0;
    for (;;) {
        if (!c->connected || c->need_resync) {
            /* A snapshot point is due and will discard the rings: waiting for
             * room would buy nothing. */
            drop(s, ev);
            break;
        }
        if (c->epoch != epoch) /* a snapshot taken while we waited has our effect */
            break;
        if (ev->seq < s->base) {
            /* Late: its slot was skipped or a resync moved on. Sending it now
             * is still right for the live set: no later event of its address
             * can have been reported before this call returns. It is only out
             * of seq order. */
            if (s->late_count == LATE_CAP) {
                drop(s, ev);
                break;
            }
            s->late[(s->late_head + s->late_count++) % LATE_CAP] = *ev;
            s->out_of_order++;
            break;
        }
        if (ev->seq - s->base < c->opt.queue_capacity) {
            s->ring[ev->seq % c->opt.queue_capacity] = *ev;
            if (ev->seq - s->base == c->opt.queue_capacity / 2)
                pthread_cond_broadcast(&c->wake); /* half full: do not wait for the idle poll */
            break;
        }
        if (timed_out) { /* the ring is full ahead of us */
            drop(s, ev);
            break;
        }
        pthread_cond_broadcast(&c->wake);
        timed_out = pthread_cond_timedwait(&c->room, &c->lock, deadline) != 0;
    }
}

void rs_report_cb(void *ctx, const bh_event *ev) {
    stream *s = ctx;
    conn *c = s->c;
    /* One deadline for the lock and the ring: the call waits at most
     * max(max_block_us, LOCK_WAIT_US). */
    struct timespec deadline = rs_deadline_in(c->opt.max_block_us);
    if (!lock_soon(c, &deadline)) {
        side_push(s, ev);
        return;
    }
    rs_drain_side(s);
    place(s, ev, &deadline);
    pthread_mutex_unlock(&c->lock);
}
