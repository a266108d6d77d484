/*
 * ring.c - bh-trackd's end of the event rings (docs/protocol.md, "The event
 * ring"): a client's memfd per stream, drained directly.
 *
 * Owns: the RING / DRAIN / RING_CLOSE frames (the descriptors that come
 * with a connection's bytes are ring_fds.c's), mapping and checking a ring, draining it
 * into the tracker (counting gaps in the numbers as lost events), holding a
 * ring at a resync's mark until RESYNC_END, the poll period of the loop while
 * rings are attached, and what one process's rings may cost; what waits for
 * a ring to be drained so far (DRAIN, RING_CLOSE, RESYNC_BEGIN naming a
 * mark, a connection's end) and the connection's input held meanwhile.
 * Must never: trust anything in a ring: the producer's head is checked
 * against the consumer's own tail and the capacity, numbers must increase,
 * kinds and marks must be known, the mapping's size comes from fstat of a
 * descriptor sealed against shrinking; never touch a byte outside the
 * mapping, never block (a passed descriptor that is not a memfd is closed by
 * closer.c), never drain more than TD_RING_SLICE records
 * of one connection's rings or TD_RING_TURN of all in one loop turn, whatever
 * waits for them (a whole ring of 2^22 records held the loop 6 s in 0.4's
 * ring audit): what waits is held until the rings are drained far enough,
 * and the loop serves everybody else meanwhile.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trackd.h"

/* What waits for a ring (the connection's input is held until it is done).
 * A connection that ended drains with OP_DRAIN too: what is different about
 * it (its leaks are counted only once the drain ends) is the connection's
 * TD_RING_WAIT_GONE, which finish() reads, and its marks, all stale then
 * (marks_stale): no drain of it waits at one. */
enum { OP_NONE, OP_DRAIN, OP_CLOSE, OP_BEGIN };

struct td_ring {
    uint32_t stream;
    uint32_t cap;
    uint8_t *map;
    size_t len;
    dev_t dev; /* the memfd's: one ring per memfd (attached_elsewhere) */
    ino_t ino;
    uint64_t tail;   /* ours: the producer's copy is never read back */
    uint64_t last_n; /* the last number drained */
    uint64_t stale;  /* marks up to this id belong to resyncs cut short */
    uint64_t held;   /* a mark id: the ring waits there for its RESYNC_BEGIN */
    int resyncing;   /* the mark was taken: nothing is drained until RESYNC_END */
    int op;          /* OP_*: what waits for this ring */
    uint64_t target; /* the head when op began: drained up to there, not what came after */
    uint64_t until;  /* OP_BEGIN: the mark to take */
    struct td_ring *next;
};

/* ======================== Attaching ======================== */

static void unmap(td_ring *r) {
    munmap(r->map, r->len);
    free(r);
}

static td_ring *find(td_client *c, uint32_t stream) {
    for (td_ring *r = c->rings; r != NULL; r = r->next)
        if (r->stream == stream)
            return r;
    return NULL;
}

/* What pid's rings map now (all its connections), and how many there are. */
static size_t process_rings(const td_server *s, pid_t pid, size_t *bytes) {
    size_t n = 0;
    *bytes = 0;
    for (const td_client *c = s->clients; c != NULL; c = c->next) {
        if (c->pid != pid)
            continue;
        for (const td_ring *r = c->rings; r != NULL; r = r->next, n++)
            *bytes += r->len;
    }
    return n;
}

/* The rings uid's connections have attached: at most TD_RING_UID_FACTOR
 * per connection it may have (--max-connections-per-uid). Idle rings are polled every
 * TD_RING_POLL_MS; without this one user's processes could attach 64 rings
 * each, on every connection the caps let them have, for the loop to poll. */
static uint64_t uid_rings(const td_server *s, uid_t uid) {
    uint64_t n = 0;
    for (const td_client *c = s->clients; c != NULL; c = c->next)
        for (const td_ring *r = c->uid == uid ? c->rings : NULL; r != NULL; r = r->next)
            n++;
    return n;
}

/* 1 if the memfd st is another live connection's ring already, one of
 * another process (take_over lets its own process's go): one memfd
 * attached by N connections was drained N times, N times the CPU for one
 * set of records the client wrote (16 processes: 3.65 s of server CPU for
 * what one drains in 0.23 s), and as many drains left for the shutdown. A
 * connection that ended (its rings drained up to where it left them) or
 * was refused does not count. c's own other rings do: one memfd as two of
 * its streams is a client's mistake, refused. */
static int attached_elsewhere(const td_server *s, const td_client *c, const struct stat *st) {
    for (const td_client *o = s->clients; o != NULL; o = o->next) {
        if (o->closing || o->dead || o->ring_wait == TD_RING_WAIT_GONE || (o != c && o->pid == c->pid))
            continue;
        for (const td_ring *r = o->rings; r != NULL; r = r->next)
            if (r->dev == st->st_dev && r->ino == st->st_ino)
                return 1;
    }
    return 0;
}

/* The memfd st as the ring of another connection of c's process (its
 * process back on a new connection, handing the same memfd): let go there,
 * so that the new connection alone drains it, from where the old one
 * stopped (drain stores its tail and last number in the ring after every
 * call, and map_ring reads them from there). That old connection may have
 * ended (drained up to the heads it left) or not be known to have ended
 * yet: its input held behind a DRAIN, its end unread. Refused instead
 * (BH_EBUSY), the reporter drained the ring itself while we drained it
 * for the old connection: 100,000 ALLOCs applied 212,800 times. Drained by
 * both connections, the records between the new one's start and the old
 * one's target were applied twice (20,000 ALLOCs of a correct program made
 * 15,904 duplicate findings). The old connection is over for its process
 * (a reporter hands its rings again only on a connection it made after
 * losing that one): its resyncs are given up now and it is closed without
 * parsing what it still holds, whose resync chunks would otherwise restore
 * the stream's live set as of a snapshot the ring's records since then
 * repeat (2,471 duplicate ALLOCs of 100,000, the old connection's input
 * held behind a DRAIN and a RESYNC_BEGIN when the process came back). One
 * that ended is still drained to the heads it left (its other rings). */
static void take_over(td_server *s, const td_client *c, const struct stat *st) {
    for (td_client *o = s->clients; o != NULL; o = o->next) {
        if (o == c || o->pid != c->pid)
            continue;
        for (td_ring **q = &o->rings; *q != NULL; q = &(*q)->next) {
            td_ring *r = *q;
            if (r->dev == st->st_dev && r->ino == st->st_ino) {
                *q = r->next;
                unmap(r);
                td_native_cut(s, o);
                if (o->ring_wait != TD_RING_WAIT_GONE)
                    o->dead = 1;
                return;
            }
        }
    }
}

/* Maps fd as the ring of stream with cap records; a bh_status (BH_OK with
 * *out set). The descriptor is the client's: closed here either way. */
static bh_status map_ring(td_server *s, td_client *c, int fd, uint32_t stream, uint32_t cap, td_ring **out) {
    struct stat st;
    size_t bytes;
    int seals = fcntl(fd, F_GET_SEALS);
    bh_status rc = BH_OK;
    if (cap < BH_RING_MIN_CAP || cap > BH_RING_MAX_CAP || (cap & (cap - 1)) != 0 || seals < 0 ||
        !(seals & F_SEAL_SHRINK) || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size != bh_ring_bytes(cap))
        rc = BH_EINVAL; /* not a sealed memfd of the size it claims */
    else if (attached_elsewhere(s, c, &st))
        rc = BH_EBUSY;
    if (rc == BH_OK) {
        take_over(s, c, &st); /* before the limits: the old mapping counts there */
        if (process_rings(s, c->pid, &bytes) >= TD_RING_MAX ||
            bytes + bh_ring_bytes(cap) > TD_RING_MAX_BYTES ||
            uid_rings(s, c->uid) >= s->max_conns_per_uid * TD_RING_UID_FACTOR)
            rc = BH_ENOMEM; /* this process's, or this user's, rings cost enough */
    }
    td_ring *r = rc == BH_OK ? calloc(1, sizeof(*r)) : NULL;
    void *m =
        r != NULL ? mmap(NULL, bh_ring_bytes(cap), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd); /* a memfd (take_fd) */
    if (rc == BH_OK && m == MAP_FAILED) {
        free(r);
        return BH_ENOMEM;
    }
    if (rc != BH_OK)
        return rc;
    r->map = m;
    r->len = bh_ring_bytes(cap);
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->cap = cap;
    r->stream = stream;
    if (bh_get32(r->map + BH_RING_OFF_MAGIC) != BH_RING_MAGIC ||
        bh_get16(r->map + BH_RING_OFF_VERSION) != BH_RING_VERSION ||
        bh_get16(r->map + BH_RING_OFF_RECSZ) != BH_RING_RECORD || bh_get32(r->map + BH_RING_OFF_CAP) != cap ||
        bh_get32(r->map + BH_RING_OFF_STREAM) != stream) {
        unmap(r);
        return BH_EINVAL;
    }
    /* Where the last consumer stopped (a reconnection, a restarted server):
     * read once; from here on the tail is ours. */
    r->tail = bh_ring_load(r->map, BH_RING_OFF_TAIL);
    r->last_n = bh_ring_load(r->map, BH_RING_OFF_LAST_N);
    *out = r;
    return BH_OK;
}

static void ring_ack(td_server *s, td_client *c, uint32_t stream, bh_status st) {
    uint8_t p[8];
    bh_put32(p, stream);
    bh_put32(p + 4, (uint32_t)st);
    td_send_frame(s, c, BH_WIRE_RING_ACK, p, sizeof(p));
}

static void attach(td_server *s, td_client *c, const uint8_t *p, uint32_t len) {
    if (len != BH_WIRE_RING_LEN || c->nfds == 0) {
        td_malformed(s, c, c->nfds == 0 ? "RING without a descriptor" : "RING length");
        return;
    }
    uint32_t stream = bh_get32(p), cap = bh_get32(p + 4);
    int fd = c->fds[0];
    memmove(c->fds, c->fds + 1, (size_t)--c->nfds * sizeof(int));
    s->ring_fds--;
    if (find(c, stream) != NULL) {
        close(fd);
        td_malformed(s, c, "RING for a stream that has one");
        return;
    }
    td_ring *r = NULL;
    bh_status st = map_ring(s, c, fd, stream, cap, &r);
    if (st == BH_OK) {
        r->stale = bh_get64(p + 8);
        r->next = c->rings;
        c->rings = r;
        s->rings_attached++;
    } else {
        s->rings_refused++;
        td_log(s, TD_WARN, "pid %d stream %u: ring refused (%s); its events come over the socket",
               (int)c->pid, stream,
               st == BH_ENOMEM  ? "over this process's or this uid's ring limits"
               : st == BH_EBUSY ? "its memfd is another connection's ring"
                                : "not a sealed memfd of its size");
    }
    ring_ack(s, c, stream, st);
}

/* ======================== Draining ======================== */

/* A ring that broke a rule: the connection is refused (its rings go with it). */
static int hostile(td_server *s, td_client *c, const char *why) {
    td_malformed(s, c, why);
    return -1;
}

/* One event record into the tracker. */
static void apply(td_server *s, td_client *c, td_ring *r, const uint8_t *rec, uint64_t now) {
    uint8_t kind = rec[8];
    uint64_t t = bh_get64(rec + 32);
    bh_track_event ev = {td_client_key(c->pid, r->stream),
                         bh_get64(rec + 16),
                         kind == BH_RING_ALLOC ? bh_get64(rec + 24) : 0,
                         0, /* numbers are checked here: the tracker is told the gaps */
                         t != 0 && t <= now ? t : now,
                         bh_get32(rec + 12),
                         0,
                         kind == BH_RING_ALLOC ? BH_TRACK_ALLOC : BH_TRACK_FREE};
    td_track_result(s, c, bh_track_on_event(s->track, &ev), kind == BH_RING_ALLOC ? "ALLOC" : "FREE",
                    ev.device, ev.address);
}

/* Events numbered after last_n and before n never came: lost. */
static void count_gap(td_server *s, td_client *c, td_ring *r, uint64_t gap) {
    if (gap == 0)
        return;
    s->ring_events_lost = bh__sat_add(s->ring_events_lost, gap); /* a gap may be near 2^64: no wrap */
    bh_track_lost(s->track, td_client_key(c->pid, r->stream), gap);
}

/* Drains up to budget records, or up to the mark `until` (0: none) which is
 * then taken. Stops at a mark that waits for its BEGIN. Returns the records
 * drained, or -1 if the ring broke a rule (the client is refused). */
static long drain(td_server *s, td_client *c, td_ring *r, uint64_t budget, uint64_t until) {
    if (r->resyncing || c->closing)
        return 0;
    uint64_t head = bh_ring_load(r->map, BH_RING_OFF_HEAD); /* acquire: records before it are written */
    if (head - r->tail > r->cap) /* behind our tail (wrapped) or more than a ring ahead */
        return hostile(s, c, "ring head out of bounds");
    long done = 0;
    uint64_t now = td_now_ms();
    while (r->tail != head && (uint64_t)done < budget && !c->closing) {
        uint8_t rec[BH_RING_RECORD]; /* one read of the record: the producer may scribble on it */
        memcpy(rec, r->map + BH_RING_HEADER + (size_t)(r->tail & (r->cap - 1)) * BH_RING_RECORD, sizeof(rec));
        uint64_t n = bh_get64(rec);
        uint8_t kind = rec[8];
        if (kind == BH_RING_MARK) {
            uint64_t id = bh_get64(rec + 16);
            if (n < r->last_n)
                return hostile(s, c, "ring mark number goes back");
            if (id > r->stale && id != until) {
                if (until != 0)
                    return hostile(s, c, "ring mark other than RESYNC_BEGIN's");
                r->held = id;
                break; /* records after it wait for its resync */
            }
            count_gap(s, c, r, n - r->last_n);
            r->last_n = n;
            r->tail++;
            done++;
            if (id == until) {
                r->held = 0;
                r->resyncing = 1;
                break;
            }
            continue;
        }
        if ((kind != BH_RING_ALLOC && kind != BH_RING_FREE) || n <= r->last_n)
            return hostile(s, c,
                           kind == BH_RING_ALLOC || kind == BH_RING_FREE ? "ring number goes back"
                                                                         : "ring record kind");
        count_gap(s, c, r, n - r->last_n - 1);
        r->last_n = n;
        apply(s, c, r, rec, now);
        r->tail++;
        done++;
    }
    /* Release: the producer reuses the records before the tail once it sees it. */
    bh_ring_store(r->map, BH_RING_OFF_LAST_N, r->last_n);
    bh_ring_store(r->map, BH_RING_OFF_TAIL, r->tail);
    s->ring_records += (uint64_t)done;
    return done;
}

/* ======================== Waiting for a drain ======================== */

/* op waits for r: drained up to the head it has now. */
static void want(td_ring *r, int op, uint64_t until) {
    r->op = op;
    r->until = until;
    r->target = bh_ring_load(r->map, BH_RING_OFF_HEAD); /* acquire, as in drain */
}

/* The connection's input waits (unread, out of epoll, no timeouts) until
 * its rings are drained as far as what it sent asked: frames after a DRAIN,
 * RING_CLOSE or RESYNC_BEGIN are handled in order, after it. */
static void hold(td_server *s, td_client *c, int how) {
    c->ring_wait = how;
    td_rewatch(s, c);
}

/* 1 once r's op has what it waits for: the tail reached the target, or the
 * ring can give no more now (caught up with a head that went no further, held
 * at a mark that waits for its RESYNC_BEGIN, or resyncing until RESYNC_END),
 * or the connection was refused (its rings are drained no more). A BEGIN's
 * own mark may be where the ring is held: it is done once that is taken. */
static int op_done(const td_client *c, const td_ring *r) {
    if (r->op == OP_NONE || c->closing || r->resyncing || (r->held != 0 && r->op != OP_BEGIN))
        return 1;
    return (int64_t)(r->tail - r->target) >= 0 || r->tail == bh_ring_load(r->map, BH_RING_OFF_HEAD);
}

/* r's stream was closed (RING_CLOSE) and r goes: what it still holds
 * unread (its connection was refused before the drain got there, say over
 * --max-live-per-client) nobody will drain (a reporter hands a closed
 * stream's ring to no one), so the events it numbers are lost, counted for
 * the process like any gap (its last record's number less the last one
 * drained: a mark's number is that of the event before it). main before
 * this let them go uncounted: a loss accounting that said exact was not. */
static void close_unread(td_server *s, td_client *c, td_ring *r) {
    uint64_t head = bh_ring_load(r->map, BH_RING_OFF_HEAD); /* acquire, as in drain */
    if (r->op != OP_CLOSE || head == r->tail || head - r->tail > r->cap)
        return; /* nothing unread, or a head out of bounds: numbers it shows mean nothing */
    uint64_t n = bh_get64(r->map + BH_RING_HEADER + (size_t)((head - 1) & (r->cap - 1)) * BH_RING_RECORD);
    if (n > r->last_n) {
        count_gap(s, c, r, n - r->last_n);
        r->last_n = n;
    }
}

static void release_all(td_server *s, td_client *c) {
    while (c->rings != NULL) {
        td_ring *r = c->rings;
        c->rings = r->next;
        close_unread(s, c, r);
        unmap(r);
    }
}

/* Everything that waited for c's rings is done: RING_CLOSE lets its ring
 * go, RESYNC_BEGIN starts the tracker's resync (or was a lie), the input
 * held is handled; a connection that ended is closed for good. */
static void finish(td_server *s, td_client *c) {
    if (c->ring_wait == TD_RING_WAIT_GONE) {
        release_all(s, c);
        c->ring_wait = 0;
        td_close_client(s, c); /* c is freed */
        return;
    }
    c->ring_wait = 0;
    for (td_ring **q = &c->rings; *q != NULL;) {
        td_ring *r = *q;
        int op = r->op;
        r->op = OP_NONE;
        if (op == OP_BEGIN && !c->closing && r->resyncing)
            td_native_resync_began(s, c, r->stream);
        else if (op == OP_BEGIN && !c->closing)
            td_malformed(s, c, "RESYNC_BEGIN's mark is not in the ring");
        if (op == OP_CLOSE) {
            *q = r->next;
            r->op = OP_CLOSE;
            close_unread(s, c, r);
            unmap(r);
        } else {
            q = &r->next;
        }
    }
    td_rewatch(s, c);
    td_parse_input(s, c);
    if (c->dead || (c->closing && c->out_off >= c->out_len))
        td_close_client(s, c);
}

/* One turn of c's rings, at most TD_RING_SLICE records of them and *left in
 * all (taken off it); then what waits for them, if it is done. The loop's
 * pace: 2 the share was used up or something waits (go round at once), 1
 * some records, 0 none. */
static int run_client(td_server *s, td_client *c, uint64_t *left) {
    uint64_t share = *left < TD_RING_SLICE ? *left : TD_RING_SLICE, used = 0;
    for (td_ring *r = c->rings; r != NULL && !c->closing; r = r->next) {
        long n = drain(s, c, r, share - used, r->op == OP_BEGIN ? r->until : 0);
        if (n < 0)
            break;
        used += (uint64_t)n;
    }
    *left -= used;
    int busy = share > 0 && used == share ? 2 : used > 0;
    if (c->ring_wait == 0)
        return busy;
    for (td_ring *r = c->rings; r != NULL; r = r->next)
        if (!op_done(c, r))
            return 2;
    finish(s, c);
    return busy;
}

/* The connection ended (or the stream, RING_CLOSE): no RESYNC_BEGIN can
 * come for a mark in r, so every mark there is stale, like one of a resync
 * a reconnection's RING says was cut short: passed over (a gap before it
 * still counted as lost), and the records after it, the last real events,
 * applied. Held at one instead, the drain would end there and the FREEs
 * after it would turn what they freed into false leaks of a gone process.
 * Nor can a RESYNC_END come: a ring held at a mark already taken is let go
 * too (its resync was given up, td_native_cut). */
static void marks_stale(td_ring *r) {
    r->stale = UINT64_MAX;
    r->held = 0;
    r->resyncing = 0;
}

int td_ring_begin(td_server *s, td_client *c, uint32_t stream, uint64_t mark) {
    td_ring *r = find(c, stream);
    if (r == NULL || mark <= r->stale || r->resyncing) {
        td_malformed(s, c, "RESYNC_BEGIN names no mark of a ring");
        return -1;
    }
    /* Everything before the mark goes first, in slices; the tracker's
     * resync starts when the mark is taken (finish). */
    want(r, OP_BEGIN, mark);
    hold(s, c, TD_RING_WAIT_INPUT);
    return 0;
}

void td_ring_end(td_client *c, uint32_t stream) {
    td_ring *r = find(c, stream);
    if (r != NULL)
        r->resyncing = 0;
}

void td_ring_frame(td_server *s, td_client *c, uint16_t type, const uint8_t *p, uint32_t len) {
    if (type == BH_WIRE_RING) {
        attach(s, c, p, len);
    } else if (type == BH_WIRE_DRAIN) {
        if (len != 0) {
            td_malformed(s, c, "DRAIN length");
            return;
        }
        for (td_ring *r = c->rings; r != NULL; r = r->next)
            want(r, OP_DRAIN, 0);
        if (c->rings != NULL)
            hold(s, c, TD_RING_WAIT_INPUT);
    } else if (len != 4) {
        td_malformed(s, c, "RING_CLOSE length");
    } else {
        td_ring *r = find(c, bh_get32(p));
        if (r == NULL) {
            td_malformed(s, c, "RING_CLOSE of no ring");
            return;
        }
        /* The stream ends: no RESYNC_BEGIN or RESYNC_END of it can follow
         * (its reporter closed it), so, as at a connection's end, its marks
         * are stale and a resync it began is given up. Else the drain would
         * stop at the mark and the ring go with the stream's last events
         * (the FREEs of a registry destroyed during a resync) unapplied. */
        td_native_cut_stream(s, c, r->stream);
        marks_stale(r);
        want(r, OP_CLOSE, 0);
        hold(s, c, TD_RING_WAIT_INPUT);
    }
}

int td_rings_run(td_server *s) {
    td_closer_run();
    /* Connections with rings take turns at the front (the overall budget
     * may run out before the last): a rotating start. */
    uint64_t n = 0, left = TD_RING_TURN;
    for (const td_client *c = s->clients; c != NULL; c = c->next)
        n += c->rings != NULL || c->ring_wait != 0;
    int busy = 0;
    uint64_t first = n > 0 ? s->ring_rotor++ % n : 0;
    for (int pass = 0; pass < 2 && n > 0; pass++) {
        uint64_t i = 0;
        for (td_client *c = s->clients, *next; c != NULL; c = next) {
            next = c->next; /* run_client may free c */
            if (c->rings == NULL && c->ring_wait == 0)
                continue;
            if ((pass == 0) == (i++ >= first)) {
                /* A full share: more is waiting (go round at once); some:
                 * the client is busy (poll soon); none: poll slowly. Never
                 * spin on a ring that only trickles: that would take a core
                 * the clients need, and bounce their cache lines. */
                int b = run_client(s, c, &left);
                busy = b > busy ? b : busy;
            }
        }
    }
    s->rings_busy = busy;
    return busy;
}

int td_rings_timeout(const td_server *s, int cap_ms) {
    for (const td_client *c = s->clients; c != NULL; c = c->next) {
        if (c->rings != NULL) { /* records arrive without waking us: poll */
            int ms = s->rings_busy == 2 ? 0 : s->rings_busy == 1 ? 1 : TD_RING_POLL_MS;
            return cap_ms < ms ? cap_ms : ms;
        }
    }
    return cap_ms;
}

int td_ring_close_client(td_server *s, td_client *c) {
    for (int i = 0; i < c->nfds; i++)
        close(c->fds[i]); /* memfds (take_fd) */
    s->ring_fds -= (uint64_t)c->nfds;
    c->nfds = 0;
    td_native_cut(s, c); /* before the drain: what follows the mark is not part of the resync */
    for (td_ring *r = c->rings; r != NULL; r = r->next)
        marks_stale(r);
    if (s->stopping) { /* the loop is over: what is left is drained here, once, up to TD_RING_STOP */
        static uint64_t left = TD_RING_STOP;
        for (td_ring *r = c->rings; r != NULL && left > 0; r = r->next) {
            long n = drain(s, c, r, r->cap < left ? r->cap : left, 0);
            left -= n > 0 ? (uint64_t)n : 0;
        }
    } else if (c->ring_wait == TD_RING_WAIT_GONE) {
        return 1; /* still being drained */
    } else if (c->rings != NULL && !c->closing) {
        /* What the process wrote before its connection ended is still its
         * (the last events before an exit): drained up to the heads it left,
         * in slices; the connection stays listed (its process connected, so
         * no leak is counted early) until then. */
        for (td_ring *r = c->rings; r != NULL; r = r->next)
            want(r, OP_DRAIN, 0);
        c->ring_wait = TD_RING_WAIT_GONE;
        c->partial_ms = 0;
        return 1;
    }
    release_all(s, c);
    return 0;
}
