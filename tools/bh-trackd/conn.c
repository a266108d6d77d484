/*
 * conn.c - one client connection of bh-trackd.
 *
 * Owns: a connection's input buffer (grown only as far as one frame plus
 * slack needs), its output buffer (capped at TD_MAX_OUT: a native peer that
 * does not read is closed, not buffered for; a compat peer is not read from
 * past TD_COMPAT_HOLD_OUT instead, as closing would kill it with SIGPIPE),
 * reading in bounded slices
 * (TD_READ_SLICE per loop turn, so one flooding client cannot starve the
 * others), cutting input into frames or records (handed to native.c or tt.c),
 * refusing a connection (ERROR, malformed input, over a limit), its timeouts
 * and closing it.
 * Must never: size an allocation from a length on the wire beyond
 * BH_WIRE_MAX_PAYLOAD, read from a connection that is closing, or block on a
 * peer (every socket call is non-blocking).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trackd.h"

/* ======================== Output ======================== */

/* What to wait for: a closing connection is never read again (its input
 * would only pile up), only written to until its reply is out; a held
 * compat one is not read either. One whose input waits for its rings
 * (ring.c), or for descriptors (starved), is out of epoll until they are
 * drained far enough: its hangup must not be seen before the frames it sent
 * first. */
void td_rewatch(td_server *s, td_client *c) {
    if (s->epfd < 0 || c->fd < 0)
        return;
    if (c->ring_wait || c->starved) {
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        return;
    }
    uint32_t out = c->out_off < c->out_len ? EPOLLOUT : 0u;
    struct epoll_event ev = {.events = c->closing ? out : (c->held ? 0u : EPOLLIN) | out, .data.ptr = c};
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0 && errno == ENOENT)
        (void)epoll_ctl(s->epfd, EPOLL_CTL_ADD, c->fd, &ev); /* back from a ring wait */
}

void td_set_closing(td_server *s, td_client *c) {
    if (!c->closing)
        c->closing_ms = td_now_ms();
    c->closing = 1;
    td_rewatch(s, c);
}

void td_flush_out(td_server *s, td_client *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            td_rewatch(s, c);
            return;
        }
        /* Peer gone: drop the reply. A compat peer may only have stopped
         * reading: what it sends still counts (its FREEs). */
        *(c->compat ? &c->deaf : &c->dead) = 1;
        break;
    }
    c->out_off = c->out_len = 0;
    if (c->out != NULL) { /* replies are rare: give the memory back */
        free(c->out);
        c->out = NULL;
    }
    td_rewatch(s, c);
}

void td_send_bytes(td_server *s, td_client *c, const void *p, size_t n) {
    if (c->dead || c->deaf)
        return;
    if (c->out_len - c->out_off + n > TD_MAX_OUT) {
        s->output_overflows++;
        td_log(s, TD_WARN, "pid %d does not read its replies (%zu bytes unsent); disconnecting it",
               (int)c->pid, c->out_len - c->out_off);
        c->dead = 1;
        return;
    }
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    uint8_t *nb = realloc(c->out, c->out_len + n);
    if (nb == NULL) {
        c->dead = 1;
        return;
    }
    c->out = nb;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    td_flush_out(s, c);
}

void td_send_frame(td_server *s, td_client *c, uint16_t type, const void *payload, uint32_t len) {
    uint8_t h[BH_WIRE_HEADER];
    bh_wire_header(h, type, len);
    td_send_bytes(s, c, h, sizeof(h));
    if (len > 0)
        td_send_bytes(s, c, payload, len);
}

size_t td_error_frame(uint8_t *out, bh_status code, const char *msg) {
    size_t n = strlen(msg) < 200 ? strlen(msg) : 200;
    size_t h = bh_wire_header(out, BH_WIRE_ERROR, (uint32_t)(4 + n));
    bh_put32(out + h, (uint32_t)code);
    memcpy(out + h + 4, msg, n);
    return h + 4 + n;
}

void td_send_error(td_server *s, td_client *c, bh_status code, const char *msg) {
    uint8_t f[TD_ERROR_FRAME_MAX];
    if (!c->compat)
        td_send_bytes(s, c, f, td_error_frame(f, code, msg));
    td_set_closing(s, c);
}

/* ======================== Refusals ======================== */

void td_malformed(td_server *s, td_client *c, const char *why) {
    s->malformed++;
    td_log(s, TD_WARN, "malformed input from pid %d (%s): %s; disconnecting it", (int)c->pid,
           c->compat ? "compat" : "native", why);
    td_send_error(s, c, BH_EINVAL, why);
}

void td_track_result(td_server *s, td_client *c, bh_track_result r, const char *kind, uint32_t domain,
                     uint64_t address) {
    char dom[64];
    switch (r) {
    case BH_TRACK_OK:
        break;
    case BH_TRACK_UNKNOWN_FREE:
        td_log(s, TD_WARN, "FREE of unknown buffer: pid %d %s address 0x%" PRIx64, (int)c->pid,
               td_domain_text(dom, sizeof(dom), domain), address);
        break;
    case BH_TRACK_DUPLICATE_ALLOC:
        td_log(s, TD_WARN, "ALLOC of a live buffer: pid %d %s address 0x%" PRIx64, (int)c->pid,
               td_domain_text(dom, sizeof(dom), domain), address);
        break;
    case BH_TRACK_GROUP_LIMIT:
        s->limit_disconnects++;
        td_log(s, TD_WARN,
               "pid %d over its limit of %" PRIu64 " (stream, device) groups at %s; disconnecting it",
               (int)c->pid, s->max_groups, kind);
        td_send_error(s, c, BH_ENOMEM, "over the (stream, device) group limit (--max-groups-per-client)");
        break;
    case BH_TRACK_SIZE:
        s->limit_disconnects++;
        td_log(s, TD_WARN, "pid %d sent an allocation of %s too large to count at %s; disconnecting it",
               (int)c->pid, td_domain_text(dom, sizeof(dom), domain), kind);
        td_send_error(s, c, BH_EINVAL, "allocation size over 2^48 bytes, or 2^50 live on one device");
        break;
    case BH_TRACK_LIMIT:
    case BH_TRACK_NOMEM:
        s->limit_disconnects++;
        td_log(s, TD_WARN, "pid %d over its live-allocation limit (%" PRIu64 ") at %s; disconnecting it",
               (int)c->pid, s->max_live, kind);
        td_send_error(s, c, BH_ENOMEM, "over the live-allocation limit (--max-live-per-client)");
        break;
    }
}

/* ======================== Input ======================== */

/* A compat peer that does not read its replies is not closed (it would die
 * of SIGPIPE on its next send) but not read either, until it has read them
 * down to half the mark: its own sends then wait, as on a full pipe. */
static void hold(td_server *s, td_client *c) {
    c->held = 1;
    s->compat_holds++;
    td_log(s, TD_WARN, "pid %d does not read its TT replies (%zu bytes unsent); not reading it until it does",
           (int)c->pid, c->out_len - c->out_off);
    td_rewatch(s, c);
}

/* Nobody will read c's replies: they go, and it is read again. */
static void drop_replies(td_client *c) {
    c->deaf = 1;
    c->held = 0;
    c->out_off = c->out_len = 0;
}

int td_compat_resume(td_server *s, td_client *c, uint32_t events) {
    if (!c->held)
        return 0;
    if (events & (EPOLLHUP | EPOLLERR))
        drop_replies(c);
    else if (c->out_len - c->out_off > TD_COMPAT_HOLD_OUT / 2)
        return 0;
    c->held = 0;
    td_parse_input(s, c);
    td_rewatch(s, c);
    return !c->held;
}

void td_parse_input(td_server *s, td_client *c) {
    size_t off = 0;
    while (!c->closing && !c->dead && !c->ring_wait) {
        size_t avail = c->in_len - off;
        const uint8_t *p = c->in + off;
        if (c->compat) {
            if (c->out_len - c->out_off >= TD_COMPAT_HOLD_OUT) {
                hold(s, c); /* the rest waits, in c->in and the socket */
                break;
            }
            size_t used = td_tt_input(s, c, p, avail, off == 0);
            if (used == 0)
                break;
            off += used;
            continue;
        }
        if (avail < BH_WIRE_HEADER)
            break;
        if (bh_get32(p) != BH_WIRE_MAGIC) {
            td_malformed(s, c, "bad magic");
            break;
        }
        if (bh_get16(p + 4) != BH_WIRE_VERSION) {
            td_malformed(s, c, "bad frame version");
            break;
        }
        uint32_t len = bh_get32(p + 8);
        if (len > BH_WIRE_MAX_PAYLOAD) {
            td_malformed(s, c, "frame longer than the maximum");
            break;
        }
        if (avail < BH_WIRE_HEADER + (size_t)len)
            break;
        td_native_frame(s, c, bh_get16(p + 6), p + BH_WIRE_HEADER, len);
        off += BH_WIRE_HEADER + len;
    }
    if (c->closing || c->dead) { /* nothing more will be parsed */
        c->in_len = 0;
        return;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    /* A partial frame starts its clock; a complete one stops it. */
    if (c->in_len == 0)
        c->partial_ms = 0;
    else if (off > 0 || c->partial_ms == 0)
        c->partial_ms = td_now_ms();
}

/* Room for at least 64 KiB more; the buffer never exceeds one frame plus
 * that slack (what is left after parsing is less than one frame). */
static int make_room(td_client *c) {
    const size_t limit = BH_WIRE_HEADER + BH_WIRE_MAX_PAYLOAD + 65536;
    if (c->in_cap - c->in_len >= 65536)
        return 0;
    size_t cap = c->in_cap ? c->in_cap * 2 : 131072;
    if (cap > limit)
        cap = limit;
    if (cap <= c->in_cap)
        return 0;
    uint8_t *nb = realloc(c->in, cap);
    if (nb == NULL)
        return -1;
    c->in = nb;
    c->in_cap = cap;
    return 0;
}

/* The peer has nothing more in flight (EAGAIN or EOF): what a compat peer sent
 * so far may now tell its record size. */
static void settle_compat(td_server *s, td_client *c) {
    if (c->compat && c->tt_size == 0 && c->in_len > 0 && !c->closing && td_tt_record_size(s, c, 1) != 0)
        td_parse_input(s, c);
}

/* Its input carries descriptors, and there is no room for them even once
 * the closer has caught up (fds.c): refused unread. BH_EINVAL, as a server
 * that takes no rings answers a RING: the reporter then sends its events
 * over the socket (BH_EBUSY would have it offer its ring again after each
 * back-off, refused each time). Its close, with that input still queued, is
 * the closer thread's (td_close_conn). */
static void refuse_descriptors(td_server *s, td_client *c) {
    s->refused++;
    td_log(s, TD_WARN,
           "pid %d passed descriptors with no room for them (descriptor limit %" PRIu64 "); refusing it",
           (int)c->pid, s->fd_limit);
    td_send_error(s, c, BH_EINVAL, "server short of descriptors: cannot take passed descriptors");
}

void td_read_client(td_server *s, td_client *c) {
    size_t budget = TD_READ_SLICE;
    while (!c->closing && !c->dead && !c->held && !c->ring_wait && budget > 0) {
        if (make_room(c) != 0) {
            c->dead = 1;
            return;
        }
        size_t want = c->in_cap - c->in_len < budget ? c->in_cap - c->in_len : budget;
        td_fds_verdict v;
        ssize_t n = td_fds_recv(s, c, c->in + c->in_len, want, &v);
        if (v == TD_FDS_WAIT) { /* read again by the tick once the closer caught up */
            c->starved = s->starving = 1;
            td_rewatch(s, c);
            return;
        }
        if (v == TD_FDS_REFUSE) {
            refuse_descriptors(s, c);
            return;
        }
        if (n > 0) {
            c->in_len += (size_t)n;
            budget -= (size_t)n;
            td_parse_input(s, c);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            settle_compat(s, c);
            break;
        }
        if (n == 0)
            settle_compat(s, c);
        if (n == 0 && c->held) { /* at its end with replies unread: its records count all the same */
            drop_replies(c);
            td_parse_input(s, c);
        }
        if (c->closing || c->dead) /* refused while settling */
            return;
        if (c->in_len > 0 && !c->compat)
            td_malformed(s, c, "connection closed inside a frame");
        else if (c->in_len > 0 && c->tt_size != TD_TT_UNREADABLE)
            td_malformed(s, c, "connection closed inside a record");
        c->dead = 1; /* EOF or error: nobody reads a reply */
        return;
    }
    if (c->in_len == 0 && c->in_cap > 131072) { /* idle again: give the big buffer back */
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* ======================== Timeouts and close ======================== */

void td_check_timeouts(td_server *s, td_client *c, uint64_t now) {
    const char *why = NULL;
    if (c->ring_wait || c->starved) /* waits for the server (a drain, the closer), not for its peer */
        return;
    if (c->closing) {
        if (now - c->closing_ms >= s->handshake_ms)
            why = "did not read its last reply";
    } else if (!c->compat && (!c->hello || c->control)) {
        if (now - c->since_ms >= s->handshake_ms)
            why = c->hello ? "sent no QUERY in time" : "sent no HELLO in time";
    }
    /* A compat record half-sent holds less than a record in a buffer an
     * idle connection holds too, and closing would kill its sender with
     * SIGPIPE: only native frames (up to 1 MiB) have the timeout. */
    if (why == NULL && !c->compat && c->partial_ms != 0 && now - c->partial_ms >= s->frame_ms)
        why = "left a frame half-sent";
    if (why == NULL)
        return;
    s->timeouts++;
    td_log(s, TD_WARN, "pid %d %s; disconnecting it", (int)c->pid, why);
    c->dead = 1;
}

void td_close_client(td_server *s, td_client *c) {
    if (c->fd >= 0) {
        if (s->epfd >= 0)
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        td_close_conn(s, c->fd); /* its unread input may hold descriptors */
        c->fd = -1;
    }
    /* Rings still to drain keep it listed (ring.c calls here again after). */
    if (td_ring_close_client(s, c) != 0)
        return;
    for (td_client **p = &s->clients; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            s->nclients--;
            break;
        }
    }
    if (!c->control && c->hello + c->compat > 0 && !td_pid_connected(s, c->pid))
        td_orphan_add(s, c);
    free(c->in);
    free(c->out);
    free(c);
}
