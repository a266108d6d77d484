/*
 * report_sender.c - the socket reporter's sender thread (report_socket.h):
 * one per connection, a state machine of connect, resync, send batches.
 *
 * Owns: the order events take to the wire (each stream's seq order, late
 * events after), snapshot points and the resync steps, the reaction to a
 * lost or refused connection (retry, back-off, withdrawal).
 * Must never: do I/O with the connection lock held, hold the lock for work
 * that grows with the live set (a chunk per hold), or let an event go
 * unsent without counting it as dropped.
 */
#include <stdlib.h>
#include <string.h>

#include "report_socket.h"

/* ======================== Sender thread ======================== */

static stream *stream_by_id(conn *c, uint32_t id) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

/* Under c->lock: what waits in the rings and late lists will never be sent
 * (the connection is gone, or a snapshot covers it): counted as dropped, and
 * each stream restarts after its highest seq. One pass over each ring, however
 * far max_seq ran ahead while events were being dropped. */
static void discard_waiting(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next) {
        /* Every occupied slot (seq != 0) waits to be sent: the sender clears
         * what it takes. */
        for (uint32_t i = 0; i < c->opt.queue_capacity; i++) {
            bh_event *slot = &s->ring[i];
            if (slot->seq != 0) {
                s->dropped += slot->kind != 0; /* tombstones were counted already */
                slot->seq = 0;
            }
        }
        s->dropped += s->late_count;
        s->late_count = 0;
        s->base = s->max_seq + 1;
        s->gap_since_ms = 0;
    }
}

/* Under c->lock: the snapshot point. Everything waiting is covered by the
 * live sets as they are now, so it is discarded (counted as dropped); each
 * stream restarts after its highest seq; a report still on its way with a
 * smaller seq arrives late and is sent after the resync. O(streams + ring):
 * the live sets themselves are copied later, a chunk per lock hold. Returns
 * 0 if a shadow is still growing (the caller moves buckets and retries). */
static int snapshot_point(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        if (s->live.old != NULL)
            return 0;
    discard_waiting(c);
    for (stream *s = c->streams; s != NULL; s = s->next) {
        while (s->owed != NULL) { /* owed to an abandoned snapshot: not live now */
            snode *x = s->owed;
            s->owed = x->next;
            rs_node_give(&s->live, x);
        }
        s->snap_epoch++;
        s->snap_active = 1;
        s->snap_begun = 0;
        s->snap_cursor = 0;
    }
    c->epoch++;
    c->need_resync = 0;
    c->resyncing = 1;
    pthread_cond_broadcast(&c->room);
    return 1;
}

/* Under c->lock: moves growing shadows' buckets, MIGRATE per stream. */
static void migrate_some(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        rs_migrate(&s->live, MIGRATE);
}

/* The next connect after a refusal or an ERROR: backoff_ms from now, and the
 * period doubles up to BACKOFF_MAX_MS (a completed resync resets it). */
static void back_off(conn *c, uint64_t now) {
    c->next_try_ms = now + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Under c->lock: the connection is over (write failed, server closed or
 * refused). A pending ERROR frame is read first (a server that refuses us
 * writes it, then closes). The next connect: at once after a refusal (to
 * withdraw), with doubling back-off after an ERROR, else after RETRY_MS. A
 * resync cut short spaces the next one like a completed one. */
static void lose_connection(conn *c) {
    if (c->fd >= 0 && !c->got_error)
        (void)rs_read_server(c);
    rs_disconnect(c);
    c->connected = 0;
    discard_waiting(c);
    uint64_t now = rs_now_ms();
    if (c->resyncing) {
        uint64_t took = now - c->resync_started_ms;
        c->next_resync_ms = now + (8 * took > RESYNC_GAP_MS ? 8 * took : RESYNC_GAP_MS);
    }
    c->resyncing = 0;
    c->need_resync = 1;
    if (c->refused) {
        c->next_try_ms = now;
    } else if (c->got_error) {
        back_off(c, now);
    } else {
        c->next_try_ms = now + RETRY_MS;
    }
    c->got_error = 0;
    pthread_cond_broadcast(&c->wake);
}

/* One step of the resync: BEGIN, a chunk, or END of the first stream whose
 * snapshot is not sent yet; or the end of the resync. Called with c->lock
 * held; releases it around I/O. */
static void resync_step(conn *c) {
    int tt = (c->opt.flags & BH_SOCKET_COMPAT_TT) != 0;
    stream *s = c->streams;
    while (s != NULL && !s->snap_active)
        s = s->next;
    if (s == NULL) {
        int rc = 0;
        if (tt) {
            pthread_mutex_unlock(&c->lock);
            rc = rs_resync_finish_tt(c);
            pthread_mutex_lock(&c->lock);
        }
        if (rc != 0) {
            lose_connection(c);
            return;
        }
        c->resyncing = 0;
        c->resyncs++;
        uint64_t now = rs_now_ms(), took = now - c->resync_started_ms;
        c->next_resync_ms = c->resync_started_ms + (8 * took > RESYNC_GAP_MS ? 8 * took : RESYNC_GAP_MS);
        c->backoff_ms = RETRY_MS; /* a completed resync: the server takes us */
        pthread_cond_broadcast(&c->wake);
        return;
    }
    uint32_t id = s->id;
    int rc = 0;
    if (!s->snap_begun) {
        s->snap_begun = 1;
        if (!tt) {
            pthread_mutex_unlock(&c->lock);
            rc = rs_send_stream_frame(c, BH_WIRE_RESYNC_BEGIN, id);
            pthread_mutex_lock(&c->lock);
        }
    } else {
        size_t n = rs_copy_chunk(c, s);
        if (n == 0 && s->snap_cursor >= s->live.nb && s->owed == NULL) {
            s->snap_active = 0;
            if (!tt) {
                pthread_mutex_unlock(&c->lock);
                rc = rs_send_stream_frame(c, BH_WIRE_RESYNC_END, id);
                pthread_mutex_lock(&c->lock);
            }
        } else if (n > 0) {
            pthread_mutex_unlock(&c->lock);
            if (tt) {
                for (size_t i = 0; i < n && rc == 0; i++)
                    rc = rs_key_add(&c->live_at_t, c->snap[i].device, c->snap[i].address, c->snap[i].domain);
            } else {
                rc = rs_send_chunk(c, id, n);
            }
            pthread_mutex_lock(&c->lock);
        }
    }
    if (rc != 0)
        lose_connection(c);
}

/* After a refusal: tells the server the process holds nothing (an empty
 * resync of each stream), so that it does not count what it had as leaks
 * when the process goes, then sends nothing more. Under c->lock; releases it
 * around I/O. */
static void withdraw(conn *c) {
    size_t n = 0;
    for (stream *s = c->streams; s != NULL; s = s->next)
        n++;
    uint32_t *ids = bh__calloc(n ? n : 1, sizeof(*ids));
    if (ids == NULL)
        return; /* retried on the next loop */
    n = 0;
    for (stream *s = c->streams; s != NULL; s = s->next)
        ids[n++] = s->id;
    pthread_mutex_unlock(&c->lock);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = rs_send_stream_frame(c, BH_WIRE_RESYNC_BEGIN, ids[i]);
        if (rc == 0)
            rc = rs_send_stream_frame(c, BH_WIRE_RESYNC_END, ids[i]);
    }
    bh__free(ids);
    pthread_mutex_lock(&c->lock);
    if (rc == 0) {
        c->quiet = 1;
        c->need_resync = 0;
        c->resyncing = 0;
        for (stream *s = c->streams; s != NULL; s = s->next)
            s->snap_active = 0;
    } else { /* try again later, spaced: the server may keep closing on us */
        rs_disconnect(c);
        c->connected = 0;
        back_off(c, rs_now_ms());
    }
    pthread_cond_broadcast(&c->wake);
}

/* Under c->lock: nothing waits to be sent. */
int rs_all_sent(const conn *c) {
    if (c->need_resync || c->resyncing)
        return 0;
    for (const stream *s = c->streams; s != NULL; s = s->next)
        if (s->late_count > 0 || s->base <= s->max_seq)
            return 0;
    return 1;
}

/* Under c->lock: takes up to max events to send, late ones first, then each
 * stream's ring in seq order. A seq missing below max_seq is waited for
 * STALL_MS, then skipped (its report is stalled; it will come late). */
static uint32_t take_batch(conn *c, qitem *batch, uint32_t max, uint64_t now) {
    uint32_t n = 0;
    for (stream *s = c->streams; s != NULL && n < max; s = s->next) {
        while (s->late_count > 0 && n < max) {
            batch[n++] = (qitem){s->id, s->late[s->late_head]};
            s->late_head = (s->late_head + 1) % LATE_CAP;
            s->late_count--;
        }
        while (n < max && s->base <= s->max_seq) {
            bh_event *slot = &s->ring[s->base % c->opt.queue_capacity];
            if (slot->seq == s->base) {
                if (slot->kind != 0) /* tombstones of dropped events are passed */
                    batch[n++] = (qitem){s->id, *slot};
                slot->seq = 0;
                s->base++;
                s->gap_since_ms = 0;
                continue;
            }
            if (s->gap_since_ms == 0) {
                s->gap_since_ms = now;
                break;
            }
            if (now - s->gap_since_ms < STALL_MS)
                break;
            /* Give up waiting for this run of missing seqs; at most one ring's
             * worth per lock hold (seqs past the ring were dropped anyway). */
            uint64_t limit = s->base + c->opt.queue_capacity;
            while (s->base <= s->max_seq && s->base < limit &&
                   s->ring[s->base % c->opt.queue_capacity].seq != s->base)
                s->base++;
            s->gap_since_ms = 0;
        }
    }
    return n;
}

/* Without the lock: encodes the batch. TT: a FREE whose ALLOC the server
 * never got is not sent (see resync_finish_tt), and the known set follows
 * what is encoded; c->encoded[i] says whether item i was. Returns the bytes
 * to write and, in *records, how many records they hold. */
static size_t encode_batch(conn *c, uint32_t n, size_t *records) {
    size_t len = 0;
    int tt = (c->opt.flags & BH_SOCKET_COMPAT_TT) != 0;
    *records = 0;
    for (uint32_t i = 0; i < n; i++) {
        const bh_event *ev = &c->batch[i].ev;
        c->encoded[i] = 0;
        if (tt && !rs_tt_admit(c, ev))
            continue;
        c->encoded[i] = 1;
        (*records)++;
        len += rs_encode_event(c, c->wire + len, c->batch[i].stream, ev);
    }
    return len;
}

/* Under c->lock: waits on c->wake up to ms (at most IDLE_MAX_MS). */
static void wait_wake(conn *c, uint64_t ms) {
    struct timespec dl = rs_deadline_in((ms < IDLE_MAX_MS ? ms : IDLE_MAX_MS) * 1000u);
    pthread_cond_timedwait(&c->wake, &c->lock, &dl);
}

/* Under c->lock, not connected: waits for the next try, or tries (a new
 * connection always starts from the live set). */
static void step_connect(conn *c, uint64_t now) {
    if (now < c->next_try_ms) {
        wait_wake(c, c->next_try_ms - now);
        return;
    }
    pthread_mutex_unlock(&c->lock);
    int rc = rs_try_connect(c);
    pthread_mutex_lock(&c->lock);
    now = rs_now_ms();
    if (rc == 0) {
        c->connected = 1;
        c->connects++;
        c->need_resync = 1;
    } else if (rc == -2) {
        back_off(c, now);
    } else {
        c->next_try_ms = now + RETRY_MS;
    }
}

/* Under c->lock, refused and withdrawn: only notices the server going. */
static void step_quiet(conn *c) {
    if (rs_read_server(c) == -1) {
        rs_disconnect(c);
        c->connected = 0;
        c->next_try_ms = UINT64_MAX;
    }
    pthread_cond_broadcast(&c->wake);
    wait_wake(c, IDLE_MAX_MS);
}

/* Under c->lock, a resync is due: takes the snapshot point when spacing
 * allows. Returns 1 if the caller should go round the loop again first. */
static int step_snapshot(conn *c, uint64_t now) {
    if (now < c->next_resync_ms && !c->stop && c->flushers == 0) {
        /* Spaced: until then events are dropped (counted), not queued. */
        wait_wake(c, c->next_resync_ms - now);
        return 1;
    }
    if (!snapshot_point(c)) {
        migrate_some(c);
        return 1;
    }
    c->resync_started_ms = now;
    if (c->opt.flags & BH_SOCKET_COMPAT_TT)
        rs_key_clear(&c->live_at_t);
    return 0;
}

/* Under c->lock; releases it around the write. Sends n events taken into
 * c->batch and counts what did not go out. */
static void step_send(conn *c, uint32_t n) {
    int tt = (c->opt.flags & BH_SOCKET_COMPAT_TT) != 0;
    c->in_flight = n;
    pthread_cond_broadcast(&c->room);
    pthread_mutex_unlock(&c->lock);

    size_t records;
    size_t len = encode_batch(c, n, &records);
    size_t done = rs_write_some(c, c->fd, c->wire, len, c->opt.send_timeout_ms);
    if (tt && done < len)
        rs_unwind_tt(c, n, done / c->tt_record, records);

    pthread_mutex_lock(&c->lock);
    c->in_flight = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* Not sent: withheld on purpose (TT, see rs_tt_admit: not a loss),
         * or lost with the connection (dropped). Some of a failed batch may
         * have reached the server; the resync after reconnecting makes its
         * view exact either way. */
        if (!c->encoded[i] || done < len) {
            stream *s = stream_by_id(c, c->batch[i].stream);
            if (s != NULL && !c->encoded[i])
                s->withheld++;
            else if (s != NULL)
                s->dropped++;
        }
    }
    if (done == len)
        c->sent += records;
    else
        lose_connection(c);
}

/* The sender thread: one step per turn (connect, withdraw, resync step or
 * batch), the lock held except around I/O and waits. */
void *rs_sender(void *arg) {
    conn *c = arg;
    uint64_t idle_ms = IDLE_MIN_MS;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        uint64_t now = rs_now_ms();
        rs_drain_all(c);
        if (c->stop) {
            /* Relaxed: stored by the closer before it set stop under the lock
             * we hold, so this load sees it. */
            uint64_t give_up = (uint64_t)AO_load(&c->give_up_ms);
            if (!c->connected || c->quiet || rs_all_sent(c) || now >= give_up)
                break;
        }
        if (!c->connected) {
            step_connect(c, now);
            continue;
        }
        if (c->quiet) {
            step_quiet(c);
            continue;
        }
        if (rs_read_server(c) == -1) {
            lose_connection(c);
            continue;
        }
        if (c->refused) {
            withdraw(c);
            continue;
        }
        if (c->need_resync && !c->resyncing && step_snapshot(c, now))
            continue;
        if (c->resyncing) {
            resync_step(c);
            continue;
        }
        uint32_t n = take_batch(c, c->batch, BATCH, now);
        if (n == 0) {
            migrate_some(c);                  /* idle: finish growing shadows */
            pthread_cond_broadcast(&c->wake); /* flushers: progress */
            struct timespec dl = rs_deadline_in(idle_ms * 1000u);
            if (idle_ms < IDLE_MAX_MS)
                idle_ms *= 2;
            pthread_cond_timedwait(&c->wake, &c->lock, &dl);
            continue;
        }
        idle_ms = IDLE_MIN_MS;
        step_send(c, n);
    }
    rs_disconnect(c);
    c->connected = 0;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}
