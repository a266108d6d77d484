/*
 * report_socket.c - the socket reporter's public entry points and lifecycle
 * (report_socket.h has the design and the list of its files).
 *
 * Owns: the process-wide list of connections (one per socket path,
 * format and send timeout) and its lock, the process-wide stream ids, opening and closing streams, flush,
 * stats, and what fork() and exit() do to connections. Must never: do socket I/O itself (the sender does),
 * leave a lock held in a child of fork(), or wait at exit for a lock longer than 2 s.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "diag/diag.h"
#include "report_socket.h"

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static conn *conns;
/* Under conns_lock: the next stream's id, unique in the process (and its
 * forked children, which carry on from the parent's), not per connection:
 * bh-trackd keys a stream's live set by (pid, id) whatever connection it
 * came on, so two connections of the process to one server (different send
 * timeouts), or a connection made again after the last reporter closed the
 * previous one, must not both say stream 1: the second one's ALLOC of an
 * address the first one leaked was a duplicate ALLOC there, and its FREE
 * took the leak away. */
static uint32_t next_stream_id = 1;
/* ATOMIC: events of connections that ended (conn_stop) that no server took
 * (their c->lost). Relaxed: a count, read once at exit. */
static AO_t lost_ended;

static bh_status flush_until(conn *c, uint64_t deadline);

/* ======================== fork() ======================== */

/* A child of fork() has one thread: the sender threads of its connections are
 * gone, and a lock one of them held would stay held forever. So every
 * connection lock is taken before fork (conns_lock first, as everywhere) and
 * released after it in the parent; in the child each inherited connection is
 * re-initialised as dead (its socket closed, its reports dropped and counted)
 * and taken off the list, so that a reporter the child opens gets a fresh
 * connection of its own. The inherited live sets are not the child's to
 * report. */
static void fork_prepare(void) {
    pthread_mutex_lock(&conns_lock);
    for (conn *c = conns; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->lock);
        /* Only locked, not rs_stream_lock: parked events stay parked for
         * the next holder (the parent's; the child's reports through these
         * streams are dropped). */
        for (stream *s = c->streams; s != NULL; s = s->next)
            rs_stream_wait(s);
    }
}

static void unlock_all(void) {
    for (conn *c = conns; c != NULL; c = c->next) {
        for (stream *s = c->streams; s != NULL; s = s->next)
            pthread_spin_unlock(&s->lock);
        pthread_mutex_unlock(&c->lock);
    }
}

static void fork_parent(void) {
    unlock_all();
    pthread_mutex_unlock(&conns_lock);
}

static void fork_child(void) {
    unlock_all(); /* taken by fork_prepare in this (the only) thread */
    for (conn *c = conns; c != NULL; c = c->next) {
        /* The parent's sender may have been waiting on this: nobody waits on
         * a dead connection's conditions in the child. */
        pthread_cond_init(&c->wake, NULL);
        /* Relaxed: this is the only thread. The child's reports must not
         * reach the parent's rings (mapped shared) or its server. */
        AO_store(&c->dead, 1);
        if (c->fd >= 0)
            close(c->fd); /* the parent's connection: never written by the child */
        c->fd = -1;
        c->connected = 0;
        c->has_thread = 0;
        c->forked = 1;
        c->in_flight = 0;
    }
    conns = NULL;
    AO_store(&lost_ended, 0); /* relaxed, the only thread: the parent's losses are the parent's to say */
    pthread_mutex_unlock(&conns_lock);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void install_atfork(void) { (void)pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* ======================== Open / close ======================== */

static void conn_destroy(conn *c) {
    rs_gone_free(c); /* a forked child's: its sender never ran in it */
    bh__free(c->wire);
    bh__free(c->encoded);
    bh__free(c->batch);
    bh__free(c->batch_n);
    bh__free(c->rbuf);
    bh__free(c->snap);
    bh__free(c->snap_size);
    bh__free(c->snap_since);
    rs_key_clear(&c->known);
    rs_key_clear(&c->live_at_t);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->wake);
    bh__free(c);
}

/* Under conns_lock: takes a connection without streams off the list. */
static void conn_retire(conn *c) {
    for (conn **p = &conns; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
}

/* Stops the sender of a retired connection (it gives up sending at
 * give_up_ms), keeps its loss for the exit's line, and frees it. */
static void conn_stop(conn *c, uint64_t give_up_ms) {
    pthread_mutex_lock(&c->lock);
    /* Relaxed: the sender reads it under this lock (after stop) or, inside a
     * blocked send, as a deadline checked again every slice. */
    AO_store(&c->give_up_ms, (AO_t)(give_up_ms ? give_up_ms : 1));
    c->stop = 1;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    if (c->has_thread)
        pthread_join(c->thread, NULL);
    /* For helgrind only (valgrind 3.19, glibc 2.36): after the timed-out
     * wait's internal wake it is told to ignore (share/bufhandle-valgrind.supp)
     * it lost the join's ordering, and took the destroy below for a race with
     * the sender's last unlock. Once per connection's end. */
    pthread_mutex_lock(&c->lock);
    pthread_mutex_unlock(&c->lock);
    /* After the join: the sender's last batch may have added to c->lost. */
    AO_fetch_and_add(&lost_ended, (AO_t)c->lost); /* relaxed: a count (lost_ended) */
    conn_destroy(c);
}

/* Under c->lock: s's events that no server will take are let go. Parked
 * events are applied first (each then has its record, or was dropped and
 * counted); then, unless a server took the ring (it drains it to its head
 * itself, RING_CLOSE or the connection's end, however we end), every event
 * record left in it is lost: consumed here, counted as dropped and in
 * c->lost. Consumed, not just counted, so that a connection made later
 * (the exit's flush is not the last thing the sender does) sees a gap, the
 * same count, rather than events we said were lost (for a TT stream, every
 * event it ever dropped: that server cannot count them). Records before
 * s->handed are consumed but not lost: the server of the connection that
 * ended drains them at that end (the server keeps its own tail: our
 * consuming does not stop it). A forked child's inherited rings are the
 * parent's (shared memory): not touched. */
static void let_go(conn *c, stream *s) {
    rs_stream_lock(s);
    if (!c->forked && s->mode != RING_SERVER && s->mode != RING_OFFERED) {
        bh_event ev;
        uint64_t n, lost = 0;
        uint8_t kind;
        for (uint64_t at = rs_ring_tail(s); (kind = rs_ring_peek(s, &ev, &n)) != 0; at++) {
            lost += kind != BH_RING_MARK && at >= s->handed;
            rs_ring_pop(s, n);
        }
        s->dropped += lost;
        /* Ours counts the other drops itself (gaps in the numbers, and the
         * resyncs that follow); a TT server sees no numbers, so each of
         * the stream's drops goes into the line, whenever it happened. */
        c->lost += c->opt.flags & BH_SOCKET_COMPAT_TT ? s->dropped : lost;
    }
    pthread_spin_unlock(&s->lock);
}

/* Under c->lock, s off the list, its ring the server's or offered to it:
 * the server lets the ring go when told (RING_CLOSE, else when the
 * connection ends). Offered, the server's answer may still refuse it: the
 * events it holds now (parked ones applied first) are then lost. */
static void queue_gone(conn *c, stream *s) {
    ring_gone *g = s->gone;
    s->gone = NULL;
    rs_stream_lock(s);
    *g = (ring_gone){c->gone, s->id, 1, s->mode == RING_OFFERED, 0};
    g->events = g->answer_due ? rs_ring_events(s) : 0;
    pthread_spin_unlock(&s->lock);
    c->gone = g;
}

/* Under conns_lock: the connection for (path, format, send timeout), made
 * if needed. A reporter with another send_timeout_ms gets a connection of
 * its own: the sender's writes carry every stream's frames, so one bound
 * cannot honour two settings (the first opener's used to be everybody's). */
static conn *conn_get(const char *path, const bh_socket_options *opt, const char *var) {
    for (conn *c = conns; c != NULL; c = c->next)
        if (strcmp(c->path, path) == 0 && c->opt.flags == opt->flags &&
            c->opt.send_timeout_ms == opt->send_timeout_ms)
            return c;
    pthread_once(&atfork_once, install_atfork);
    conn *c = bh__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    c->wire = bh__calloc(BATCH, MAX_RECORD);
    c->encoded = bh__calloc(BATCH, 1);
    c->batch = bh__calloc(BATCH, sizeof(qitem));
    c->batch_n = bh__calloc(BATCH, sizeof(uint64_t));
    c->rbuf = bh__calloc(1, BH_WIRE_HEADER + 8 + (size_t)CHUNK * BH_WIRE_RESYNC_TIMED_ENTRY);
    c->snap = bh__calloc(CHUNK, sizeof(kentry));
    c->snap_size = bh__calloc(CHUNK, sizeof(uint64_t));
    c->snap_since = bh__calloc(CHUNK, sizeof(uint64_t));
    if (c->wire == NULL || c->encoded == NULL || c->batch == NULL || c->batch_n == NULL || c->rbuf == NULL ||
        c->snap == NULL || c->snap_size == NULL || c->snap_since == NULL) {
        conn_destroy(c);
        return NULL;
    }
    c->snap_cap = CHUNK;
    c->opt = *opt;
    c->tt_record = opt->flags & BH_SOCKET_COMPAT_TT ? rs_tt_record_size() : 0;
    memcpy(c->path, path, strlen(path) + 1);
    snprintf(c->var, sizeof(c->var), "%s", var != NULL ? var : "");
    c->fd = -1;
    BENIGN_RACE(&c->fd, "changed under c->lock by the sender alone, which reads it without");
    BENIGN_RACE(&c->give_up_ms, "relaxed atomic deadline");
    BENIGN_RACE(&c->need_resync, "relaxed atomic flag");
    BENIGN_RACE(&c->dead, "relaxed atomic flag");
    c->backoff_ms = RETRY_MS;
    c->no_ring = (opt->flags & BH_SOCKET_COMPAT_TT) != 0; /* TT servers drain nothing of ours */
    /* Connect once now, so that events right after opening are not dropped
     * while a server is up. Failure is fine: the sender keeps trying. Under
     * c->lock as rs_try_connect wants (no fork meanwhile: we hold
     * conns_lock). Nothing reported yet: no resync needed (rings are offered
     * by the sender). */
    pthread_mutex_lock(&c->lock);
    if (rs_try_connect(c) == 0) {
        c->connected = 1;
        c->connects = 1;
    }
    int fd = c->fd;
    pthread_mutex_unlock(&c->lock);
    if (pthread_create(&c->thread, NULL, rs_sender, c) != 0) {
        if (fd >= 0)
            close(fd);
        conn_destroy(c);
        return NULL;
    }
    c->has_thread = 1;
    c->next = conns;
    conns = c;
    return c;
}

/* ======================== Exit ======================== */

/* Under c->lock, at exit after the flush: a batch the sender is writing (it
 * drains that ring itself, and the server is slow) would be cut off by the
 * process's end, delivered or not, and counted nowhere. Its write is given
 * up now (it stops within SLICE_MS) and the sender counts what did not go
 * into c->lost (c->exiting). Returns the events still in flight if the
 * sender got no core within EXIT_SETTLE_MS: counted as lost by the caller
 * (a few perhaps delivered after all: counted, never lost silently). */
static uint64_t settle_in_flight(conn *c) {
    if (c->in_flight == 0)
        return 0;
    /* Relaxed: read by the sender inside its blocked send, every slice. */
    AO_store(&c->give_up_ms, (AO_t)rs_now_ms());
    for (uint64_t end = rs_now_ms() + EXIT_SETTLE_MS; c->in_flight > 0 && rs_now_ms() < end;) {
        struct timespec dl = rs_deadline_in(IDLE_MIN_MS * 1000u); /* step_send does not signal */
        pthread_cond_timedwait(&c->wake, &c->lock, &dl);
    }
    AO_store(&c->give_up_ms, 0); /* relaxed: later sends (reports after the exit's flush) are not cut */
    return c->in_flight;
}

/* A process that ends without closing its reporters (a registry never
 * destroyed: the usual shape of a leak, or of a registry meant to live as long
 * as the process) would lose what still waits in the rings, so the server
 * would miss the leak it runs for, or take freed allocations for leaks. At
 * exit every connection of this process is flushed, each within the longest
 * flush_timeout_ms of its open reporters (what the slowest of their closes
 * would have waited). (A child of fork() has only its own
 * connections on the list: fork_child took the parent's off.) What no
 * server will take then is lost: counted (let_go, settle_in_flight), and
 * said with what closed reporters lost, in one line on stderr. That is what
 * waits in a ring the sender drains itself (a server that takes no ring,
 * such as a TT server, too slow to take it all within the flush; or no
 * server connected), and the batch it is writing. A ring the server took is
 * not: the server drains it to its head when the connection ends, however
 * late. conns_lock is waited for at most 2 s, in case a thread exits the
 * process while another holds it. */
static void flush_at_exit(void) {
    struct timespec dl = rs_deadline_in(2000u * 1000u);
    if (pthread_mutex_timedlock(&conns_lock, &dl) != 0)
        return;
    uint64_t lost = (uint64_t)AO_load(&lost_ended); /* relaxed: lost_ended */
    for (conn *c = conns; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->lock);
        uint32_t ms = 0; /* the longest its reporters would wait at their close */
        for (stream *s = c->streams; s != NULL; s = s->next)
            ms = s->flush_ms > ms ? s->flush_ms : ms;
        pthread_mutex_unlock(&c->lock);
        (void)flush_until(c, rs_now_ms() + ms);
        pthread_mutex_lock(&c->lock);
        c->exiting = 1;
        for (stream *s = c->streams; s != NULL; s = s->next)
            let_go(c, s);
        lost += settle_in_flight(c);
        lost += c->lost;
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&conns_lock);
    if (lost > 0)
        rs_say_lost(lost);
}

static pthread_once_t exit_flush_once = PTHREAD_ONCE_INIT;
static void install_exit_flush(void) { (void)atexit(flush_at_exit); }

/* A setting from the environment: the variable's value if it is a decimal
 * number within [min, max], else fallback. Set to nothing is unset. Any other
 * value (not a number, negative, out of range) is named on stderr with the
 * value used instead, once per process and variable (a setting is read at
 * every reporter's opening): a typo must not silently give a ring 30 times
 * the size meant, or no flush time at all. */
static uint32_t env_u32(const char *name, bh__env_note note, uint32_t fallback, uint32_t min, uint32_t max) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return fallback;
    char *end = NULL;
    unsigned long long x = 0;
    if (*v >= '0' && *v <= '9') /* strtoull would take "-5" and " 5" */
        x = strtoull(v, &end, 10);
    if (end != NULL && *end == '\0' && x >= min && x <= max)
        return (uint32_t)x;
    bh__env_note_once(note, "bufhandle: %s=%.64s: not a whole number from %u to %u; using %u\n", name, v, min,
                      max, fallback);
    return fallback;
}

/* Options as given, what the code left 0 from the environment
 * (BH_TRACK_RING, BH_TRACK_MAX_BLOCK_US, BH_TRACK_FLUSH_MS), else the
 * defaults. Returns BH_EINVAL for unknown flags. */
static bh_status settle_options(const bh_socket_options *opts, bh_socket_options *opt) {
    memset(opt, 0, sizeof(*opt));
    if (opts != NULL)
        *opt = *opts;
    if (opt->flags & ~BH_SOCKET_COMPAT_TT)
        return BH_EINVAL;
    if (opt->queue_capacity == 0)
        opt->queue_capacity =
            env_u32("BH_TRACK_RING", BH__NOTE_TRACK_RING, RING_DEFAULT, 1, BH_RING_MAX_CAP - 1);
    if (opt->max_block_us == 0) /* 0, the default, is "drop at once" */
        opt->max_block_us =
            env_u32("BH_TRACK_MAX_BLOCK_US", BH__NOTE_TRACK_MAX_BLOCK, 0, 0, MAX_BLOCK_US_MAX);
    if (opt->send_timeout_ms == 0)
        opt->send_timeout_ms = 1000;
    if (opt->flush_timeout_ms == 0)
        opt->flush_timeout_ms =
            env_u32("BH_TRACK_FLUSH_MS", BH__NOTE_TRACK_FLUSH, FLUSH_DEFAULT_MS, 1, FLUSH_MAX_MS);
    return BH_OK;
}

/* Records in a ring for queue_capacity events: a power of two within the
 * bounds the server accepts (one record is kept for a resync's mark). */
static uint32_t ring_records(uint32_t events) {
    uint32_t cap = BH_RING_MIN_CAP;
    while (cap < BH_RING_MAX_CAP && cap - 1 < events)
        cap *= 2;
    return cap;
}

static void stream_free(stream *s) {
    bh__free(s->gone); /* not queued at its close */
    rs_side_free(s);
    rs_shadow_free(&s->live);
    rs_ring_free(s);
    pthread_spin_destroy(&s->lock);
    bh__free(s);
}

/* bh_socket_reporter_open, remembering which environment variable (if any)
 * named the server, for the one message about an unreachable one. */
bh_status bh__socket_reporter_open_env(const char *var, const char *path, const bh_socket_options *opts,
                                       bh_reporter *out) {
    if (out == NULL)
        return BH_EINVAL;
    char default_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (path == NULL && opts != NULL && (opts->flags & BH_SOCKET_COMPAT_TT)) {
        path = BH_TT_DEFAULT_SOCKET; /* TT clients hard-code it; the server checks it */
    } else if (path == NULL) {
        if (bh__default_socket_path(default_path, sizeof(default_path)) != 0)
            return BH_EINVAL; /* no private directory: refuse rather than report to a stranger */
        path = default_path;
    }
    if (path[0] == '\0' || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return BH_EINVAL;
    bh_socket_options opt;
    if (settle_options(opts, &opt) != BH_OK)
        return BH_EINVAL;

    stream *s = bh__calloc(1, sizeof(*s));
    if (s == NULL)
        return BH_ENOMEM;
    s->ring_fd = -1;
    s->max_block_us = opt.max_block_us;
    s->flush_ms = opt.flush_timeout_ms;
    s->gone = bh__calloc(1, sizeof(*s->gone)); /* its close needs no memory */
    if (s->gone == NULL) {
        bh__free(s);
        return BH_ENOMEM;
    }
    pthread_spin_init(&s->lock, PTHREAD_PROCESS_PRIVATE);
    pthread_once(&exit_flush_once, install_exit_flush);
    pthread_mutex_lock(&conns_lock);
    conn *c = conn_get(path, &opt, var);
    if (c != NULL) {
        s->id = next_stream_id++;
        if (next_stream_id == 0) /* after 2^32 opens: 0 is no stream's id */
            next_stream_id = 1;
    }
    if (c == NULL || rs_ring_make(s, ring_records(opt.queue_capacity)) != 0) {
        int unused = c != NULL && c->refs == 0; /* made just now, for us */
        if (unused)
            conn_retire(c);
        pthread_mutex_unlock(&conns_lock);
        if (unused)
            conn_stop(c, rs_now_ms());
        stream_free(s);
        return BH_ENOMEM;
    }
    c->refs++;
    pthread_mutex_lock(&c->lock);
    s->c = c;
    s->next = c->streams;
    c->streams = s;
    pthread_cond_broadcast(&c->wake); /* the sender offers its ring */
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&conns_lock);
    out->report = rs_report_cb;
    out->ctx = s;
    return BH_OK;
}

bh_status bh_socket_reporter_open(const char *path, const bh_socket_options *opts, bh_reporter *out) {
    return bh__socket_reporter_open_env(NULL, path, opts, out);
}

int bh__is_socket_reporter(const bh_reporter *rep) { return rep != NULL && rep->report == rs_report_cb; }

/* Under c->lock, disconnected with events waiting: the sender is asked to
 * try a connection now, not at its next retry, and its outcome is waited
 * for (up to deadline). A server that listens then takes what waits (and a
 * resync) before a close or an exit would lose it: the sender retries only
 * every RETRY_MS, so a close right after a server's restart found no
 * connection. Not while a back-off is in force (the server refused us
 * lately, or is another user's): a flush in a loop would hammer it. */
static void try_now(conn *c, uint64_t deadline) {
    if (c->connected || c->quiet || c->forked || !c->has_thread || c->backoff_ms > RETRY_MS ||
        c->next_try_ms == UINT64_MAX || rs_all_sent(c))
        return;
    uint64_t tries = c->tries;
    c->next_try_ms = 0;
    pthread_cond_broadcast(&c->wake);
    for (uint64_t now = rs_now_ms(); c->tries == tries && now < deadline; now = rs_now_ms()) {
        struct timespec dl = rs_deadline_in((deadline - now) * 1000u);
        pthread_cond_timedwait(&c->wake, &c->lock, &dl);
    }
}

/* Waits until every ring was consumed and no resync is due, or the
 * connection is down (after one more try, try_now), or deadline
 * (CLOCK_MONOTONIC ms) passed. A connection that ends on the server's "no
 * rings" (ERROR BH_EINVAL to a RING) is made again at once (next_try_ms
 * now, lose_connection) and waited for too: what waits goes over the socket
 * on it, where letting it go made a close count it all lost. */
static bh_status flush_until(conn *c, uint64_t deadline) {
    pthread_mutex_lock(&c->lock);
    c->flushers++;
    pthread_cond_broadcast(&c->wake);
    try_now(c, deadline);
    bh_status st = BH_OK;
    while (!c->quiet && !c->forked && (!rs_all_sent(c) || c->in_flight > 0)) {
        if (!c->connected) {
            uint64_t tries = c->tries;
            if (c->next_try_ms <= rs_now_ms())
                try_now(c, deadline);
            if (c->tries == tries || !c->connected)
                break;
            continue;
        }
        uint64_t now = rs_now_ms();
        if (now >= deadline) {
            st = BH_EBUSY;
            break;
        }
        struct timespec dl = rs_deadline_in((deadline - now) * 1000u);
        pthread_cond_timedwait(&c->wake, &c->lock, &dl);
    }
    /* Disconnected (try_now found no server, or none may be tried during a
     * back-off): what waits in the rings was not delivered, whatever time is
     * left. It stays there for the next connection. */
    if (st == BH_OK && !c->connected && !c->quiet && !c->forked && !rs_rings_consumed(c))
        st = BH_EBUSY;
    c->flushers--;
    pthread_mutex_unlock(&c->lock);
    return st;
}

bh_status bh_socket_reporter_flush(const bh_reporter *rep, uint32_t timeout_ms) {
    if (!bh__is_socket_reporter(rep))
        return BH_EINVAL;
    return flush_until(((stream *)rep->ctx)->c, rs_now_ms() + timeout_ms);
}

void bh_socket_reporter_close(bh_reporter *rep) {
    if (!bh__is_socket_reporter(rep))
        return;
    stream *s = rep->ctx;
    conn *c = s->c;
    /* One deadline for the flush and for the sender's last sends: close
     * returns within flush_timeout_ms (plus one SLICE_MS), however slow the
     * server and however large the live set. */
    uint64_t deadline = rs_now_ms() + s->flush_ms; /* its own, not the connection's first opener's */
    (void)flush_until(c, deadline);

    pthread_mutex_lock(&conns_lock);
    pthread_mutex_lock(&c->lock);
    for (stream **p = &c->streams; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    if (s->mode == RING_SERVER || s->mode == RING_OFFERED)
        queue_gone(c, s);
    let_go(c, s); /* off the list: the sender takes nothing more of it */
    pthread_mutex_unlock(&c->lock);
    int last = --c->refs == 0;
    if (last && !c->forked)
        conn_retire(c); /* a forked one is on no list */
    pthread_mutex_unlock(&conns_lock);
    if (last)
        conn_stop(c, deadline);
    stream_free(s); /* no reporter runs any more: the caller's promise */
    rep->report = NULL;
    rep->ctx = NULL;
}

bh_status bh_socket_reporter_stats(const bh_reporter *rep, bh_reporter_stats *out) {
    if (!bh__is_socket_reporter(rep) || out == NULL)
        return BH_EINVAL;
    stream *s = rep->ctx;
    conn *c = s->c;
    pthread_mutex_lock(&c->lock);
    rs_stream_lock(s);
    out->reported = s->reported;
    out->dropped = s->dropped;
    out->withheld = s->withheld;
    /* Delivered: neither dropped, withheld (TT) nor still waiting in the
     * ring (a waiting mark is counted as an event: at most one per resync). */
    uint64_t waiting = s->head - rs_ring_tail(s) + s->withheld, kept = s->reported - s->dropped;
    out->sent = waiting < kept ? kept - waiting : 0;
    out->out_of_order = 0; /* events go out in number order */
    out->resyncs = c->resyncs;
    out->connects = c->connects;
    out->connected = (uint32_t)c->connected;
    pthread_spin_unlock(&s->lock);
    pthread_mutex_unlock(&c->lock);
    return BH_OK;
}
