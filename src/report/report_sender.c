/*
 * report_sender.c - the socket reporter's sender thread (report_socket.h):
 * one per connection, a state machine of connect, offer rings, resync, and
 * (for rings the server does not take) send events.
 *
 * Owns: the connection's state (connected, resyncing, refused, quiet), which
 * rings the server drains, snapshot points and the resync steps, the
 * reaction to a lost or refused connection (retry, back-off, withdrawal).
 * Must never: do long I/O with a lock held (the RING and DRAIN frames are a
 * few bytes on a fresh socket; everything else is written with c->lock
 * released), hold a lock for work that grows with the live set (a chunk per
 * hold), or let an event go unsent without counting it as dropped.
 */
#include <stdlib.h>
#include <string.h>

#include "report_socket.h"

/* Under c->lock: applies parked events, and moves growing shadows' buckets,
 * MIGRATE per stream. */
static void migrate_some(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next) {
        rs_stream_lock(s);
        rs_migrate(&s->live, MIGRATE);
        pthread_spin_unlock(&s->lock);
    }
}

/* Under c->lock and s->lock: the snapshot point of one stream. A MARK record
 * goes into the ring (records before it are in the snapshot, records after
 * it are not), and the shadow as it is now becomes the snapshot. Returns 0
 * if the shadow is growing or the ring has no room for the mark (retried). */
static int stream_snapshot(stream *s) {
    if (s->live.old != NULL)
        return 0;
    bh_event mark = {(bh_event_kind)BH_RING_MARK, 0, s->mark + 1, 0, 0};
    if (rs_ring_put(s, BH_RING_MARK, &mark, s->n, 0) != 0)
        return 0;
    s->mark++;
    while (s->owed != NULL) { /* owed to an abandoned snapshot: not live now */
        snode *x = s->owed;
        s->owed = x->next;
        rs_node_give(&s->live, x);
    }
    s->snap_epoch++;
    s->snap_active = 1;
    s->snap_begun = 0;
    s->snap_cursor = 0;
    s->snap_mark = s->mark;
    return 1;
}

/* Under c->lock: the snapshot point of every stream that has none in this
 * resync yet. Returns 1 when all have one (the resync starts), 0 to retry
 * (a shadow growing, a ring without room). */
static int snapshot_point(conn *c) {
    /* Relaxed: drops from now on ask for the next resync. */
    AO_store(&c->need_resync, 0);
    int all = 1;
    for (stream *s = c->streams; s != NULL; s = s->next) {
        rs_stream_lock(s); /* parked before the point: in the snapshot */
        if (!(s->snap_active && s->snap_mark == s->mark) && !stream_snapshot(s)) {
            rs_migrate(&s->live, MIGRATE);
            all = 0;
        }
        pthread_spin_unlock(&s->lock);
    }
    if (!all) {
        AO_store(&c->need_resync, 1);
        return 0;
    }
    c->resyncing = 1;
    return 1;
}

/* The next connect after a refusal or an ERROR: backoff_ms from now, and the
 * period doubles up to BACKOFF_MAX_MS (a completed resync resets it). */
static void back_off(conn *c, uint64_t now) {
    c->next_try_ms = now + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Under c->lock: the next resync starts at least RESYNC_GAP_MS, and 8 times
 * the last one's duration, after the last one started. */
static void space_resyncs(conn *c, uint64_t now) {
    uint64_t took = now - c->resync_started_ms;
    c->next_resync_ms = c->resync_started_ms + (8 * took > RESYNC_GAP_MS ? 8 * took : RESYNC_GAP_MS);
}

/* Under c->lock: the connection is over (write failed, server closed or
 * refused). A pending ERROR frame is read first (a server that refuses us
 * writes it, then closes). The next connect: at once after a refusal (to
 * withdraw), with doubling back-off after an ERROR, else after RETRY_MS. A
 * resync cut short spaces the next one like a completed one; its marks are
 * stale for the next connection (RING says so). A server that did not end
 * the connection with an ERROR drains every ring it took (or was offered:
 * the RING frame is read before the end) up to the head it finds when it
 * handles the end, however late (docs/protocol.md, "What waits for a
 * drain"): the records up to the head now are its (s->handed), not lost if
 * the stream closes before the next connection; counted lost as well, each
 * was counted twice (a close while disconnected). One that ends it with
 * an ERROR drains nothing more. */
static void lose_connection(conn *c) {
    if (c->fd >= 0 && !c->got_error)
        (void)rs_read_server(c);
    int handed = c->fd >= 0 && !c->got_error;
    rs_disconnect(c);
    c->connected = 0;
    uint64_t now = rs_now_ms();
    if (c->resyncing)
        space_resyncs(c, now);
    c->resyncing = 0;
    for (stream *s = c->streams; s != NULL; s = s->next) {
        rs_stream_lock(s);
        if (handed && (s->mode == RING_SERVER || s->mode == RING_OFFERED))
            s->handed = s->head;
        s->snap_active = 0;
        s->mode = RING_NONE;
        pthread_spin_unlock(&s->lock);
    }
    AO_store(&c->need_resync, 1); /* relaxed: the sender's own flag from here */
    if (c->refused || c->got_error == GOT_NO_RING) {
        c->next_try_ms = now;
    } else if (c->got_error) {
        back_off(c, now);
    } else {
        c->next_try_ms = now + RETRY_MS;
    }
    c->got_error = GOT_NONE;
    pthread_cond_broadcast(&c->wake);
}

/* Under c->lock: takes up to max events of the rings the sender drains
 * itself (only: that stream alone, else all), in number order, stopping at a
 * MARK of the snapshot being sent (skipping stale ones). */
static uint32_t take_batch(conn *c, stream *only, uint32_t max) {
    uint32_t k = 0;
    for (stream *s = only != NULL ? only : c->streams; s != NULL && k < max;
         s = only != NULL ? NULL : s->next) {
        if (s->mode != RING_SELF)
            continue;
        bh_event ev;
        uint64_t n;
        uint8_t kind;
        while (k < max && (kind = rs_ring_peek(s, &ev, &n)) != 0) {
            if (kind == BH_RING_MARK) {
                if (s->snap_active && ev.address == s->snap_mark)
                    break; /* the resync of this stream goes first */
                rs_ring_pop(s, n);
                continue;
            }
            c->batch[k] = (qitem){s->id, ev};
            c->batch_n[k++] = n;
            rs_ring_pop(s, n);
        }
    }
    return k;
}

/* Under c->lock, TT aside: whether the event goes to the server; encodes the
 * batch. TT: a FREE whose ALLOC the server never got is not sent (see
 * rs_resync_finish_tt), and the known set follows what is encoded;
 * c->encoded[i] says whether item i was. Returns the bytes to write and, in
 * *records, how many records they hold. */
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

/* Under c->lock; releases it around the write. Sends n events taken into
 * c->batch and counts what did not go out. */
static void step_send(conn *c, uint32_t n) {
    int tt = (c->opt.flags & BH_SOCKET_COMPAT_TT) != 0;
    c->in_flight = n;
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
        stream *s = rs_stream_by_id(c, c->batch[i].stream);
        if (s == NULL) { /* closed meanwhile: its counts are gone, the connection keeps the loss */
            c->lost += c->encoded[i] && done < len;
            continue;
        }
        rs_stream_lock(s);
        if (!c->encoded[i]) {
            s->withheld++;
        } else if (done < len) {
            s->dropped++;
            c->lost += c->exiting != 0; /* the exit says it (settle_in_flight) */
        } else {
            s->sent++;
        }
        pthread_spin_unlock(&s->lock);
    }
    if (done < len)
        lose_connection(c);
}

/* Under c->lock: the first step of s's resync, RESYNC_BEGIN. A server that
 * drains the ring is told the mark; for a ring the sender drains, the events
 * before the mark go first. Returns 0 or -1 (connection lost). */
static int begin_stream(conn *c, stream *s) {
    int tt = (c->opt.flags & BH_SOCKET_COMPAT_TT) != 0;
    uint64_t mark = 0;
    if (s->mode == RING_SELF) {
        uint32_t n = take_batch(c, s, BATCH);
        if (n > 0) {
            step_send(c, n);
            return 0; /* begun once the mark is at the tail */
        }
        bh_event ev;
        uint64_t num;
        if (rs_ring_peek(s, &ev, &num) != BH_RING_MARK || ev.address != s->snap_mark)
            return 0; /* not written yet (cannot be) or events still coming */
        rs_ring_pop(s, num);
    } else {
        mark = s->snap_mark;
    }
    s->snap_begun = 1;
    if (tt)
        return 0;
    uint32_t id = s->id;
    pthread_mutex_unlock(&c->lock);
    int rc = rs_send_begin(c, id, mark);
    pthread_mutex_lock(&c->lock);
    return rc;
}

/* Under c->lock: the resync is complete. */
static void resync_done(conn *c) {
    int rc = 0;
    if (c->opt.flags & BH_SOCKET_COMPAT_TT) {
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
    space_resyncs(c, rs_now_ms());
    c->backoff_ms = RETRY_MS; /* a completed resync: the server takes us */
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
        resync_done(c);
        return;
    }
    if (!s->snap_begun) {
        if (begin_stream(c, s) != 0 && c->connected)
            lose_connection(c);
        return;
    }
    uint32_t id = s->id;
    int rc = 0;
    rs_stream_lock(s);
    size_t n = rs_copy_chunk(c, s);
    int end = n == 0 && s->snap_cursor >= s->live.nb && s->owed == NULL;
    if (end)
        s->snap_active = 0;
    pthread_spin_unlock(&s->lock);
    if (end && !tt) {
        pthread_mutex_unlock(&c->lock);
        rc = rs_send_stream_frame(c, BH_WIRE_RESYNC_END, id);
        pthread_mutex_lock(&c->lock);
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
    if (rc != 0 && c->connected)
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
        AO_store(&c->dead, 1); /* relaxed: reports from now on are dropped and counted */
        AO_store(&c->need_resync, 0);
        c->resyncing = 0;
        for (stream *s = c->streams; s != NULL; s = s->next) {
            rs_stream_lock(s);
            s->snap_active = 0;
            pthread_spin_unlock(&s->lock);
        }
    } else { /* try again later, spaced: the server may keep closing on us */
        rs_disconnect(c);
        c->connected = 0;
        back_off(c, rs_now_ms());
    }
    pthread_cond_broadcast(&c->wake);
}

/* Under c->lock: every ring consumed, nothing parked. Events parked beside a
 * held lock were reported before this call, so each stream's lock is taken
 * here, which applies them to the ring first (and makes the ring's head as
 * the last holder left it visible). */
int rs_rings_consumed(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next) {
        rs_stream_lock(s);
        int consumed = rs_ring_tail(s) == bh_ring_load(s->ring, BH_RING_OFF_HEAD);
        pthread_spin_unlock(&s->lock);
        if (!consumed)
            return 0;
    }
    return 1;
}

int rs_all_sent(conn *c) {
    /* After the streams: applying a parked event may have asked for a
     * resync. Relaxed: a flag. */
    return rs_rings_consumed(c) && !AO_load(&c->need_resync) && !c->resyncing;
}

/* Under c->lock: waits on c->wake up to ms (at most IDLE_MAX_MS). */
static void wait_wake(conn *c, uint64_t ms) {
    struct timespec dl = rs_deadline_in((ms < IDLE_MAX_MS ? ms : IDLE_MAX_MS) * 1000u);
    pthread_cond_timedwait(&c->wake, &c->lock, &dl);
}

/* Under c->lock, not connected: waits for the next try, or tries (a
 * reconnection always starts from the live set). */
static void step_connect(conn *c, uint64_t now) {
    if (now < c->next_try_ms) {
        /* Parked events wait for the next holder of their stream's lock: a
         * reporting thread that never reports again (or a close) would leave
         * them out of the ring, the shadow and the counts all the while. */
        migrate_some(c);
        wait_wake(c, c->next_try_ms - now);
        return;
    }
    int rc = rs_try_connect(c); /* releases c->lock around its I/O */
    c->tries++;
    pthread_cond_broadcast(&c->wake); /* a flusher waits for this attempt (flush_until) */
    now = rs_now_ms();
    if (rc == 0) {
        c->connected = 1;
        c->connects++;
        AO_store(&c->need_resync, 1); /* relaxed: the sender's own flag here */
    } else if (rc == -2) {
        back_off(c, now);
    } else {
        c->next_try_ms = now + RETRY_MS;
    }
}

/* Under c->lock, connected: every stream without a consumer on this
 * connection gets one: the server (RING, answered by RING_ACK), or the sender
 * itself (TT, a server that takes no rings, no memfd, a refused process).
 * Then RING_CLOSE for the rings of streams that closed; each is forgotten
 * once its RING_ACK was read too. Returns -1 if the connection was lost. */
static int offer_rings(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next) {
        if (s->mode != RING_NONE)
            continue;
        if (c->no_ring || c->refused || s->ring_fd < 0) {
            s->mode = RING_SELF;
            continue;
        }
        if (rs_send_ring(c, s) != 0)
            return -1;
        s->mode = RING_OFFERED;
    }
    for (ring_gone **p = &c->gone; *p != NULL;) {
        ring_gone *g = *p;
        if (g->close_due && rs_send_stream_frame(c, BH_WIRE_RING_CLOSE, g->id) != 0)
            return -1;
        g->close_due = 0;
        if (g->answer_due) {
            p = &g->next;
        } else {
            *p = g->next;
            bh__free(g);
        }
    }
    return 0;
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
    for (stream *s = c->streams; s != NULL; s = s->next)
        if (s->mode == RING_OFFERED)
            return 0; /* the server has not said yet who drains it */
    if (now < c->next_resync_ms && !c->stop && c->flushers == 0) {
        /* Spaced: until then lost events are only counted. */
        wait_wake(c, c->next_resync_ms - now);
        return 1;
    }
    if (!snapshot_point(c)) { /* a ring without room: its consumer is behind */
        wait_wake(c, IDLE_MIN_MS);
        return 1;
    }
    c->resync_started_ms = now;
    if (c->opt.flags & BH_SOCKET_COMPAT_TT)
        rs_key_clear(&c->live_at_t);
    return 0;
}

/* Under c->lock, idle: a flusher waits for a server that drains our rings:
 * DRAIN asks it not to wait for its next poll (at most every IDLE_MIN_MS). */
static int nudge_server(conn *c, uint64_t now) {
    if (c->flushers == 0 || now < c->drain_sent_ms + IDLE_MIN_MS)
        return 0;
    for (stream *s = c->streams; s != NULL; s = s->next) {
        if (s->mode == RING_SERVER && rs_ring_tail(s) != bh_ring_load(s->ring, BH_RING_OFF_HEAD)) {
            c->drain_sent_ms = now;
            uint8_t f[BH_WIRE_HEADER];
            return rs_write_all(c, f, bh_wire_header(f, BH_WIRE_DRAIN, 0));
        }
    }
    return 0;
}

/* The sender thread: one step per turn (connect, offer rings, withdraw,
 * resync step or batch), c->lock held except around I/O and waits. */
void *rs_sender(void *arg) {
    conn *c = arg;
    uint64_t idle_ms = IDLE_MIN_MS;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        uint64_t now = rs_now_ms();
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
        if (rs_read_server(c) == -1 || offer_rings(c) != 0) {
            lose_connection(c);
            continue;
        }
        if (c->refused) {
            withdraw(c);
            continue;
        }
        /* Relaxed: a flag; the shadows it concerns are read under s->lock. */
        if (AO_load(&c->need_resync) && !c->resyncing && step_snapshot(c, now))
            continue;
        if (c->resyncing) {
            resync_step(c);
            continue;
        }
        uint32_t n = take_batch(c, NULL, BATCH);
        if (n > 0) {
            idle_ms = IDLE_MIN_MS;
            step_send(c, n);
            continue;
        }
        for (stream *s = c->streams; s != NULL; s = s->next)
            rs_ring_prefault(s);
        if (nudge_server(c, now) != 0) {
            lose_connection(c);
            continue;
        }
        migrate_some(c);                  /* idle: finish growing shadows */
        pthread_cond_broadcast(&c->wake); /* flushers: progress */
        wait_wake(c, c->flushers > 0 ? IDLE_MIN_MS : idle_ms);
        if (idle_ms < IDLE_MAX_MS)
            idle_ms *= 2;
    }
    rs_disconnect(c);
    c->connected = 0;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}
