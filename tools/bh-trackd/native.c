/*
 * native.c - bh-trackd's native frames (docs/protocol.md, "Native frames").
 *
 * Owns: checking each frame of a native connection (HELLO first, lengths
 * matching their type) and turning it into tracker calls, a QUERY into a
 * REPLY (rendered by render.c).
 * Must never: read past the payload length it was given (conn.c has checked
 * it against BH_WIRE_MAX_PAYLOAD), or trust the pid in HELLO where the peer's
 * credentials identify the client (peer.c keys, and marks unverified, the
 * peers whose pid this server cannot see).
 */
#include <stdlib.h>
#include <string.h>

#include "trackd.h"

static void handle_query(td_server *s, td_client *c, const uint8_t *p, uint32_t len) {
    uint16_t what = len >= 4 ? bh_get16(p) : 0, format = len >= 4 ? bh_get16(p + 2) : 0;
    if (len != (what == TD_QUERY_HISTORY ? 12u : 4u)) {
        td_malformed(s, c, "QUERY length");
        return;
    }
    td_strbuf b = {0};
    if (what == TD_QUERY_STATS)
        td_render_stats(s, &b, format == 1, 0);
    else if (what == TD_QUERY_DUMP)
        td_render_dump(s, &b, format == 1, 0);
    else if (what == TD_QUERY_HISTORY)
        td_render_history(s, &b, bh_get64(p + 4), format == 1);
    else {
        td_malformed(s, c, "QUERY kind");
        return;
    }
    if (b.failed)
        td_send_error(s, c, BH_ENOMEM, "out of memory rendering the reply");
    else
        td_send_frame(s, c, BH_WIRE_REPLY, b.p, (uint32_t)b.len);
    free(b.p);
    td_set_closing(s, c);
}

static void handle_hello(td_server *s, td_client *c, const uint8_t *p, uint32_t len) {
    if (c->hello || len < 10) {
        td_malformed(s, c, "HELLO repeated or short");
        return;
    }
    uint16_t version = bh_get16(p + 4), flags = bh_get16(p + 6), nlen = bh_get16(p + 8);
    if (version != BH_WIRE_VERSION) {
        s->malformed++;
        td_log(s, TD_WARN, "pid %d speaks protocol %u, this server %u", (int)c->pid, version,
               BH_WIRE_VERSION);
        td_send_error(s, c, BH_EINVAL, "unsupported protocol version");
        return;
    }
    if (nlen > BH_WIRE_MAX_NAME || (uint32_t)nlen + 10 != len) {
        td_malformed(s, c, "HELLO name length");
        return;
    }
    /* BH_WIRE_HELLO_START: the name ends at a NUL; the start time follows. */
    uint64_t start = 0;
    if (flags & BH_WIRE_HELLO_START) {
        if (nlen < 9 || p[10 + nlen - 9] != 0) {
            td_malformed(s, c, "HELLO start time");
            return;
        }
        nlen -= 9;
        start = bh_get64(p + 11 + nlen);
    }
    memcpy(c->name, p + 10, nlen);
    c->name[nlen] = '\0';
    td_printable(c->name);
    c->hello = 1;
    c->control = (flags & BH_WIRE_HELLO_CONTROL) != 0;
    if (c->control)
        return;
    /* A pid this server cannot see: keyed by what the client states. */
    if (td_peer_identify(s, c, bh_get32(p), start) != 0) {
        td_send_error(s, c, BH_ENOMEM, "out of memory");
        return;
    }
    s->reporter_connections++;
    td_remember_name(s, c->pid, c->name);
}

static void handle_event(td_server *s, td_client *c, const uint8_t *p, uint32_t len) {
    if (len != BH_WIRE_EVENT_LEN) {
        td_malformed(s, c, "EVENT length");
        return;
    }
    uint8_t kind = p[4];
    if (kind != BH_EVENT_ALLOC && kind != BH_EVENT_FREE) {
        td_malformed(s, c, "EVENT kind");
        return;
    }
    /* The seq lets the tracker count what the reporter could not deliver. */
    bh_track_event ev = {td_client_key(c->pid, bh_get32(p)),
                         bh_get64(p + 16),
                         kind == BH_EVENT_ALLOC ? bh_get64(p + 24) : 0,
                         bh_get64(p + 32),
                         td_now_ms(),
                         bh_get32(p + 8),
                         0,
                         kind == BH_EVENT_ALLOC ? BH_TRACK_ALLOC : BH_TRACK_FREE};
    td_track_result(s, c, bh_track_on_event(s->track, &ev), kind == BH_EVENT_ALLOC ? "ALLOC" : "FREE",
                    ev.device, ev.address);
}

/* RESYNC_CHUNK (entries of BH_WIRE_RESYNC_ENTRY bytes) or RESYNC_CHUNK_TIMED
 * (BH_WIRE_RESYNC_TIMED_ENTRY: each carries the CLOCK_MONOTONIC ms of its
 * report, so a leak keeps its real age across a resync, however long the
 * chunk waited in the socket; a time in the future or 0 reads as now). */
static void handle_resync_chunk(td_server *s, td_client *c, const uint8_t *p, uint32_t len, uint32_t entry) {
    if (len < 8) {
        td_malformed(s, c, "RESYNC_CHUNK length");
        return;
    }
    uint64_t key = td_client_key(c->pid, bh_get32(p));
    uint32_t n = bh_get32(p + 4);
    if ((uint64_t)n * entry + 8 != len) {
        td_malformed(s, c, "RESYNC_CHUNK count");
        return;
    }
    uint64_t now = td_now_ms();
    for (uint32_t i = 0; i < n && !c->closing; i++) {
        const uint8_t *e = p + 8 + (size_t)i * entry;
        uint64_t when = entry == BH_WIRE_RESYNC_TIMED_ENTRY ? bh_get64(e + 24) : 0;
        uint64_t since = when != 0 && when < now ? when : now;
        td_track_result(
            s, c, bh_track_restore(s->track, key, bh_get32(e), bh_get64(e + 8), bh_get64(e + 16), since),
            "RESYNC", bh_get32(e), bh_get64(e + 8));
    }
}

/* The index of stream among c's open resyncs, or c->nresyncs. */
static unsigned open_resync(const td_client *c, uint32_t stream) {
    unsigned i = 0;
    while (i < c->nresyncs && c->resyncs[i] != stream)
        i++;
    return i;
}

static void resync_closed(td_client *c, unsigned i) {
    if (i < c->nresyncs)
        c->resyncs[i] = c->resyncs[--c->nresyncs];
}

/* Each open resync is one the connection's end must give up: one kept per
 * stream (BEGIN again on an open one is the same), TD_RESYNCS_OPEN at once
 * (a stream's resync costs the tracker the stream already; this bounds what
 * the list costs). Before, only the latest was kept, and one begun before
 * it on another stream stayed resyncing for good when the connection
 * ended: its leaks all unverified, its findings never counted. */
void td_native_resync_began(td_server *s, td_client *c, uint32_t stream) {
    unsigned i = open_resync(c, stream);
    if (i == c->nresyncs && c->nresyncs == TD_RESYNCS_OPEN) {
        td_malformed(s, c, "more resyncs open at once than the server takes");
        return;
    }
    bh_track_resync_begin(s->track, td_client_key(c->pid, stream));
    if (i == c->nresyncs)
        c->resyncs[c->nresyncs++] = stream;
}

/* A resync cut short (the reporter's sender lost the connection, or the
 * process died between its BEGIN and END) would leave the stream resyncing
 * for good: its leaks all unverified, its findings never counted, and a
 * ring held at the resync's mark, so the process's last events (the FREEs
 * after the mark) never applied. Given up instead: what it restored stays
 * (each entry was live at the snapshot point) and the records after the
 * mark apply on top (ring.c drains them once the connection ended), which is
 * the stream as its numbers say, lost events counted as ever. */
static void cut(td_server *s, td_client *c, unsigned i) {
    uint32_t stream = c->resyncs[i];
    resync_closed(c, i);
    if (!bh_track_resync_cut(s->track, td_client_key(c->pid, stream)))
        return;
    s->resyncs_cut++;
    td_log(s, TD_WARN, "pid %d stream %u: connection ended during a resync; the resync is given up",
           (int)c->pid, stream);
}

void td_native_cut(td_server *s, td_client *c) {
    while (c->nresyncs > 0)
        cut(s, c, c->nresyncs - 1);
}

void td_native_cut_stream(td_server *s, td_client *c, uint32_t stream) {
    unsigned i = open_resync(c, stream);
    if (i < c->nresyncs)
        cut(s, c, i);
}

void td_native_frame(td_server *s, td_client *c, uint16_t type, const uint8_t *p, uint32_t len) {
    if (!c->hello && type != BH_WIRE_HELLO) {
        td_malformed(s, c, "first frame is not HELLO");
        return;
    }
    switch (type) {
    case BH_WIRE_HELLO:
        handle_hello(s, c, p, len);
        return;
    case BH_WIRE_QUERY:
        handle_query(s, c, p, len);
        return;
    default:
        break;
    }
    if (c->control) {
        td_malformed(s, c, "report frame on a query connection");
        return;
    }
    switch (type) {
    case BH_WIRE_EVENT:
        handle_event(s, c, p, len);
        return;
    case BH_WIRE_RESYNC_BEGIN:
        if (len != 4 && len != BH_WIRE_RESYNC_BEGIN_MARK) {
            td_malformed(s, c, "RESYNC_BEGIN length");
            return;
        }
        if (len == BH_WIRE_RESYNC_BEGIN_MARK) /* the resync begins once the ring reached the mark */
            (void)td_ring_begin(s, c, bh_get32(p), bh_get64(p + 8));
        else
            td_native_resync_began(s, c, bh_get32(p));
        return;
    case BH_WIRE_RESYNC_CHUNK:
        handle_resync_chunk(s, c, p, len, BH_WIRE_RESYNC_ENTRY);
        return;
    case BH_WIRE_RESYNC_CHUNK_TIMED:
        handle_resync_chunk(s, c, p, len, BH_WIRE_RESYNC_TIMED_ENTRY);
        return;
    case BH_WIRE_RESYNC_END:
        if (len != 4) {
            td_malformed(s, c, "RESYNC_END length");
            return;
        }
        bh_track_resync_end(s->track, td_client_key(c->pid, bh_get32(p)));
        td_ring_end(c, bh_get32(p));
        resync_closed(c, open_resync(c, bh_get32(p)));
        s->resyncs++;
        return;
    case BH_WIRE_RING:
    case BH_WIRE_DRAIN:
    case BH_WIRE_RING_CLOSE:
        td_ring_frame(s, c, type, p, len);
        return;
    default:
        td_malformed(s, c, "unknown frame type");
        return;
    }
}
