/*
 * conn.c - one client connection of bh-trackd.
 *
 * Owns: a connection's input buffer (bounded: one frame plus slack), its
 * output buffer, reading and cutting input into frames or records (handed to
 * native.c or tt.c), refusing a connection (ERROR, malformed input, over a
 * limit) and closing it.
 * Must never: size an allocation from a length on the wire beyond
 * BH_WIRE_MAX_PAYLOAD, or block on a peer (every socket call is non-blocking).
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

static int watch(td_server *s, td_client *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
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
            watch(s, c, EPOLLIN | EPOLLOUT);
            return;
        }
        c->out_off = c->out_len; /* peer gone: drop the reply */
        c->closing = 1;
    }
    c->out_off = c->out_len = 0;
    watch(s, c, EPOLLIN);
}

void td_send_bytes(td_server *s, td_client *c, const void *p, size_t n) {
    if (c->out_len + n > (256u << 20)) { /* a reader that never reads is cut off */
        c->closing = 1;
        return;
    }
    uint8_t *nb = realloc(c->out, c->out_len + n);
    if (nb == NULL) {
        c->closing = 1;
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

void td_send_error(td_server *s, td_client *c, bh_status code, const char *msg) {
    uint8_t p[4 + 200];
    size_t n = strlen(msg) < 200 ? strlen(msg) : 200;
    bh_put32(p, (uint32_t)code);
    memcpy(p + 4, msg, n);
    if (!c->compat)
        td_send_frame(s, c, BH_WIRE_ERROR, p, (uint32_t)(4 + n));
    c->closing = 1;
}

/* ======================== Refusals ======================== */

void td_malformed(td_server *s, td_client *c, const char *why) {
    s->malformed++;
    td_log(s, "malformed input from pid %d (%s): %s; disconnecting it", (int)c->pid,
           c->compat ? "compat" : "native", why);
    td_send_error(s, c, BH_EINVAL, why);
}

void td_track_result(td_server *s, td_client *c, bh_track_result r, const char *kind, uint32_t device,
                     uint64_t address) {
    switch (r) {
    case BH_TRACK_OK:
        break;
    case BH_TRACK_UNKNOWN_FREE:
        td_log_event(s, TD_LOG_UNKNOWN_FREE, "FREE of unknown buffer: pid %d device %u address 0x%" PRIx64,
                     (int)c->pid, device, address);
        break;
    case BH_TRACK_DUPLICATE_ALLOC:
        td_log_event(s, TD_LOG_DUPLICATE, "ALLOC of a live buffer: pid %d device %u address 0x%" PRIx64,
                     (int)c->pid, device, address);
        break;
    case BH_TRACK_LIMIT:
    case BH_TRACK_NOMEM:
        s->limit_disconnects++;
        td_log(s, "pid %d over its live-allocation limit (%" PRIu64 ") at %s; disconnecting it", (int)c->pid,
               s->max_live, kind);
        td_send_error(s, c, BH_ENOMEM, "over the live-allocation limit (--max-live-per-client)");
        break;
    }
}

/* ======================== Input ======================== */

void td_parse_input(td_server *s, td_client *c) {
    size_t off = 0;
    while (!c->closing) {
        size_t avail = c->in_len - off;
        const uint8_t *p = c->in + off;
        if (c->compat) {
            size_t rec = off == 0 ? td_tt_record_size(s, c, 0) : c->tt_size;
            if (rec == 0 || avail < rec)
                break;
            td_tt_record(s, c, p);
            off += rec;
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
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

/* The peer has nothing more in flight (EAGAIN or EOF): what a compat peer sent
 * so far may now tell its record size. */
static void settle_compat(td_server *s, td_client *c) {
    if (c->compat && c->tt_size == 0 && c->in_len > 0 && !c->closing && td_tt_record_size(s, c, 1) != 0)
        td_parse_input(s, c);
}

void td_read_client(td_server *s, td_client *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 131072;
            if (cap > BH_WIRE_MAX_PAYLOAD * 2 + 65536 + BH_WIRE_HEADER) /* one frame plus slack is enough */
                cap = BH_WIRE_MAX_PAYLOAD * 2 + 65536 + BH_WIRE_HEADER;
            if (cap > c->in_cap) {
                uint8_t *nb = realloc(c->in, cap);
                if (nb == NULL) {
                    c->closing = 1;
                    return;
                }
                c->in = nb;
                c->in_cap = cap;
            }
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n > 0) {
            c->in_len += (size_t)n;
            td_parse_input(s, c);
            if (c->closing)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            settle_compat(s, c);
            return;
        }
        if (n == 0)
            settle_compat(s, c);
        if (c->closing) /* refused while settling */
            return;
        if (c->in_len > 0 && !c->compat)
            td_malformed(s, c, "connection closed inside a frame");
        else if (c->in_len > 0)
            td_malformed(s, c, "connection closed inside a record");
        c->closing = 1; /* EOF or error */
        return;
    }
}

/* ======================== Close ======================== */

void td_close_client(td_server *s, td_client *c) {
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (td_client **p = &s->clients; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    if (!c->control && !td_pid_connected(s, c->pid))
        td_orphan_add(s, c->pid);
    free(c->in);
    free(c->out);
    free(c);
}
