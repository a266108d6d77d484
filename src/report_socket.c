/*
 * report_socket.c - the socket reporter: events to bh-trackd, off the
 * application's threads.
 *
 * Owns: the process-wide connections (one per socket path and format), each
 * with a sender thread; and the streams (one per reporter, i.e. per registry),
 * each with its seq-indexed ring, its late list and its shadow live set.
 * Must never: do socket I/O on a reporting thread, block a reporting thread
 * longer than max_block_us, raise SIGPIPE, or lose an event silently (every
 * undelivered event is counted and covered by a resync).
 *
 * Ordering. A registry hands out seq 1, 2, 3, ... to its reporter, but two
 * threads may call the reporter out of order. An event waits in its stream's
 * ring at ring[seq % capacity]; the sender takes the ring from base upwards,
 * so the wire carries each stream's events in seq order. A reporter whose seq
 * is capacity or more ahead of base waits up to max_block_us for room, then
 * drops. If a seq stays missing for STALL_MS (its reporting thread stalled),
 * the sender moves on and that event, when it comes, goes out late (counted
 * in out_of_order). That never breaks the server's live set: events of one
 * address are causally ordered (the next one cannot be reported before the
 * previous report returned), so a late event has no successor on the wire.
 *
 * Resync. Each stream also keeps a shadow of its live set, updated for every
 * event, delivered or not. When events had to be dropped (not connected, ring
 * full) or the connection is a reconnection, the sender discards what waits
 * and sends the shadow sets instead: RESYNC_BEGIN, chunks, RESYNC_END per
 * stream. The server swaps that stream's live set for the snapshot. Each
 * stream restarts after the highest seq seen; events after the snapshot follow
 * it, so the server's view is exact again. A reporter that applied its event
 * to the shadow before a snapshot and then waited for room does not send it
 * (the snapshot has it): the connection's epoch tells.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "rundir.h"
#include "wire.h"

#define STALL_MS 50 /* a seq missing this long is skipped; it goes out late */
#define BATCH 256   /* events per send */
/* Reporters never signal the sender (a futex wake per report would cost more
 * than the report); it polls. The period starts at IDLE_MIN_MS after work and
 * doubles while idle up to IDLE_MAX_MS, so an idle process wakes ~16 times a
 * second and the first event after a pause waits at most IDLE_MAX_MS. A ring
 * half full, a flush or a close wakes it at once. */
#define IDLE_MIN_MS 2
#define IDLE_MAX_MS 64
#define RETRY_MS 100 /* reconnect period */

/* ======================== Shadow live set ======================== */

/* Open addressing, linear probing, backward-shift deletion (no tombstones:
 * the set sees as many deletions as insertions). */
typedef struct shadow_entry {
    uint64_t address, size;
    uint32_t device, used;
} shadow_entry;

typedef struct shadow {
    shadow_entry *e;
    size_t cap, n;
} shadow;

static size_t shadow_home(const shadow *s, uint32_t device, uint64_t address) {
    return (size_t)bh__key_hash(device, address) & (s->cap - 1);
}

static int shadow_grow(shadow *s) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    shadow_entry *e = bh__calloc(cap, sizeof(*e));
    if (e == NULL)
        return -1;
    shadow old = *s;
    s->e = e;
    s->cap = cap;
    s->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.e[i].used)
            continue;
        size_t j = shadow_home(s, old.e[i].device, old.e[i].address);
        while (s->e[j].used)
            j = (j + 1) & (cap - 1);
        s->e[j] = old.e[i];
        s->n++;
    }
    bh__free(old.e);
    return 0;
}

/* Returns 0, or -1 when host memory ran out (the set is then incomplete, and
 * the caller must not claim a resync is exact). */
static int shadow_put(shadow *s, uint32_t device, uint64_t address, uint64_t size) {
    if ((s->n + 1) * 2 > s->cap && shadow_grow(s) != 0)
        return -1;
    size_t i = shadow_home(s, device, address);
    while (s->e[i].used && !(s->e[i].device == device && s->e[i].address == address))
        i = (i + 1) & (s->cap - 1);
    if (!s->e[i].used)
        s->n++;
    s->e[i] = (shadow_entry){address, size, device, 1};
    return 0;
}

static void shadow_del(shadow *s, uint32_t device, uint64_t address) {
    if (s->cap == 0)
        return;
    size_t i = shadow_home(s, device, address);
    while (s->e[i].used && !(s->e[i].device == device && s->e[i].address == address))
        i = (i + 1) & (s->cap - 1);
    if (!s->e[i].used)
        return;
    s->e[i].used = 0;
    s->n--;
    /* Backward shift: pull later members of the probe run into the hole. */
    for (size_t j = (i + 1) & (s->cap - 1); s->e[j].used; j = (j + 1) & (s->cap - 1)) {
        size_t h = shadow_home(s, s->e[j].device, s->e[j].address);
        /* Move e[j] to i if its home is not in the cyclic range (i, j]. */
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            s->e[i] = s->e[j];
            s->e[j].used = 0;
            i = j;
        }
    }
}

/* ======================== Connections and streams ======================== */

typedef struct conn conn;

/* An event on its way to the wire, with its stream. */
typedef struct qitem {
    uint32_t stream;
    bh_event ev;
} qitem;

#define LATE_CAP 4096u /* late events a stream keeps before it drops and resyncs */

typedef struct stream {
    conn *c;
    uint32_t id;
    /* All under c->lock. The event with seq s waits in ring[s % cap] (valid
     * while ring[...].seq == s); the ring holds seqs [base, base + cap). */
    bh_event *ring;
    uint64_t base;         /* next seq to send */
    uint64_t max_seq;      /* highest seq placed */
    uint64_t gap_since_ms; /* when the sender found ring[base] empty below max_seq; 0: no gap */
    bh_event *late;        /* FIFO of events older than base: sent as soon as possible */
    uint32_t late_head, late_count;
    shadow live;
    uint64_t reported, dropped, out_of_order;
    struct stream *next;
} stream;

struct conn {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* sender: urgent work; flushers: progress */
    pthread_cond_t room; /* reporters waiting for ring space */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bh_socket_options opt;
    int refs;    /* under conns_lock: open streams */
    conn *next;  /* under conns_lock */
    pid_t owner; /* the process whose sender thread this is (a fork child's copy is not its own) */
    pthread_t thread;
    /* under lock: */
    stream *streams;
    uint32_t next_stream;
    int fd; /* sender thread only, once started */
    int connected;
    int need_resync;
    int stop;
    uint64_t epoch;     /* bumped by every snapshot */
    uint64_t in_flight; /* events taken by the sender, not yet written */
    uint64_t sent, resyncs, connects;
    uint8_t *wire; /* sender thread only: encoded batch, BATCH * MAX_RECORD */
    qitem *batch;  /* sender thread only: events being sent */
};

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static conn *conns;

static void report_cb(void *ctx, const bh_event *ev);

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timespec deadline_in(uint64_t us) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (us % 1000000u) * 1000u;
    ts.tv_sec += (time_t)(us / 1000000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

/* ======================== Socket I/O (sender thread only) ======================== */

/* Writes all of buf within timeout_ms. MSG_NOSIGNAL: a dead server is EPIPE,
 * never SIGPIPE. Returns 0 or -1. */
static int write_all(int fd, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
    uint64_t deadline = now_ms() + timeout_ms;
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        uint64_t now = now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            return -1;
    }
    return 0;
}

/* The program's name for HELLO (Linux: /proc/self/comm), else "libbufhandle".
 * Returns its length, without a terminator. */
static size_t program_name(char *buf, size_t cap) {
    size_t n = 0;
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, buf, cap);
        n = r > 0 ? (size_t)r : 0;
        close(fd);
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\0'))
        n--;
    if (n == 0) {
        n = sizeof("libbufhandle") - 1;
        memcpy(buf, "libbufhandle", n);
    }
    return n;
}

static int try_connect(conn *c) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    /* A Unix socket connect completes at once or fails (EAGAIN: backlog full,
     * treated as a failure and retried later). */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    if (!(c->opt.flags & BH_SOCKET_COMPAT_TT)) {
        char name[64];
        size_t len = program_name(name, sizeof(name));
        uint8_t hello[BH_WIRE_HEADER + 10 + sizeof(name)];
        size_t n = bh_wire_header(hello, BH_WIRE_HELLO, (uint32_t)(10 + len));
        bh_put32(hello + n, (uint32_t)getpid());
        bh_put16(hello + n + 4, BH_WIRE_VERSION);
        bh_put16(hello + n + 6, 0);
        bh_put16(hello + n + 8, (uint16_t)len);
        memcpy(hello + n + 10, name, len);
        if (write_all(fd, hello, n + 10 + len, c->opt.send_timeout_ms) != 0) {
            close(fd);
            return -1;
        }
    }
    c->fd = fd;
    return 0;
}

static void disconnect(conn *c) {
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Encodes one event for the wire; returns bytes written to p. */
static size_t encode_event(const conn *c, uint8_t *p, uint32_t stream_id, const bh_event *ev) {
    if (c->opt.flags & BH_SOCKET_COMPAT_TT) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int alloc = ev->kind == BH_EVENT_ALLOC;
        bh_tt_record(p, alloc ? BH_TT_ALLOC : BH_TT_FREE, (int32_t)ev->device, alloc ? ev->size : 0, 0,
                     (int32_t)getpid(), ev->address,
                     alloc ? (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec : 0);
        return BH_TT_RECORD;
    }
    return bh_wire_event(p, stream_id, (uint8_t)ev->kind, ev->device, ev->address, ev->size, ev->seq);
}

#define MAX_RECORD                                                                                           \
    (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN > BH_TT_RECORD ? BH_WIRE_HEADER + BH_WIRE_EVENT_LEN : BH_TT_RECORD)

/* One stream's snapshot, taken under the lock, sent without it. */
typedef struct snapshot {
    uint32_t stream;
    shadow_entry *e;
    size_t n;
} snapshot;

static int send_resync(conn *c, const snapshot *snaps, size_t nsnaps) {
    enum { PER_CHUNK = 4096 };
    uint8_t *buf = bh__calloc(1, BH_WIRE_HEADER + 8 + (size_t)PER_CHUNK * BH_WIRE_RESYNC_ENTRY);
    if (buf == NULL)
        return -1;
    int rc = 0;
    for (size_t s = 0; s < nsnaps && rc == 0; s++) {
        const snapshot *sn = &snaps[s];
        if (c->opt.flags & BH_SOCKET_COMPAT_TT) {
            /* The TT format has no resync: announce the live set as ALLOCs. */
            for (size_t i = 0; i < sn->n && rc == 0; i++) {
                bh_event ev = {BH_EVENT_ALLOC, sn->e[i].device, sn->e[i].address, sn->e[i].size, 0};
                rc = write_all(c->fd, buf, encode_event(c, buf, sn->stream, &ev), c->opt.send_timeout_ms);
            }
            continue;
        }
        size_t n = bh_wire_header(buf, BH_WIRE_RESYNC_BEGIN, 4);
        bh_put32(buf + n, sn->stream);
        rc = write_all(c->fd, buf, n + 4, c->opt.send_timeout_ms);
        for (size_t i = 0; i < sn->n && rc == 0; i += PER_CHUNK) {
            uint32_t k = (uint32_t)(sn->n - i < PER_CHUNK ? sn->n - i : PER_CHUNK);
            n = bh_wire_header(buf, BH_WIRE_RESYNC_CHUNK, 8 + k * BH_WIRE_RESYNC_ENTRY);
            bh_put32(buf + n, sn->stream);
            bh_put32(buf + n + 4, k);
            uint8_t *p = buf + n + 8;
            for (uint32_t j = 0; j < k; j++, p += BH_WIRE_RESYNC_ENTRY) {
                memset(p, 0, BH_WIRE_RESYNC_ENTRY);
                bh_put32(p, sn->e[i + j].device);
                bh_put64(p + 8, sn->e[i + j].address);
                bh_put64(p + 16, sn->e[i + j].size);
            }
            rc = write_all(c->fd, buf, (size_t)(p - buf), c->opt.send_timeout_ms);
        }
        if (rc == 0) {
            n = bh_wire_header(buf, BH_WIRE_RESYNC_END, 4);
            bh_put32(buf + n, sn->stream);
            rc = write_all(c->fd, buf, n + 4, c->opt.send_timeout_ms);
        }
    }
    bh__free(buf);
    return rc;
}

/* ======================== Sender thread ======================== */

/* Under c->lock: everything waiting is covered by the snapshot about to be
 * taken, so it is discarded: its effect on the live set reaches the server
 * through the resync, the events themselves do not, and count as dropped.
 * Each stream restarts after the highest seq seen; a report still on its way
 * with a smaller seq arrives late and is sent after the resync. Returns the
 * snapshots, or NULL on host memory failure. */
static snapshot *take_snapshots(conn *c, size_t *nsnaps) {
    size_t n = 0;
    for (stream *s = c->streams; s != NULL; s = s->next)
        n++;
    snapshot *snaps = bh__calloc(n ? n : 1, sizeof(*snaps));
    if (snaps == NULL)
        return NULL;
    size_t k = 0;
    for (stream *s = c->streams; s != NULL; s = s->next, k++) {
        snaps[k].stream = s->id;
        snaps[k].e = bh__calloc(s->live.n ? s->live.n : 1, sizeof(shadow_entry));
        if (snaps[k].e == NULL) {
            while (k-- > 0)
                bh__free(snaps[k].e);
            bh__free(snaps);
            return NULL;
        }
        for (size_t i = 0; i < s->live.cap; i++)
            if (s->live.e[i].used)
                snaps[k].e[snaps[k].n++] = s->live.e[i];
    }
    for (stream *s = c->streams; s != NULL; s = s->next) {
        /* Every occupied slot (seq != 0) waits to be sent: the sender clears
         * what it takes. One pass over the ring, however far max_seq ran
         * ahead while events were being dropped. */
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
    c->epoch++;
    pthread_cond_broadcast(&c->room);
    *nsnaps = n;
    return snaps;
}

static void free_snapshots(snapshot *snaps, size_t n) {
    for (size_t i = 0; i < n; i++)
        bh__free(snaps[i].e);
    bh__free(snaps);
}

/* Under c->lock: nothing waits to be sent. */
static int all_sent(const conn *c) {
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
            /* Give up waiting for this run of missing seqs. */
            while (s->base <= s->max_seq && s->ring[s->base % c->opt.queue_capacity].seq != s->base)
                s->base++;
            s->gap_since_ms = 0;
        }
    }
    return n;
}

static void *sender(void *arg) {
    conn *c = arg;
    uint8_t *buf = c->wire;
    qitem *batch = c->batch;
    uint64_t idle_ms = IDLE_MIN_MS;
    uint64_t next_try = 0;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        if (c->stop && (!c->connected || all_sent(c)))
            break;
        if (!c->connected) {
            uint64_t now = now_ms();
            if (now < next_try) {
                struct timespec dl = deadline_in((next_try - now) * 1000u);
                pthread_cond_timedwait(&c->wake, &c->lock, &dl);
                continue;
            }
            pthread_mutex_unlock(&c->lock);
            int ok = try_connect(c) == 0;
            pthread_mutex_lock(&c->lock);
            next_try = now_ms() + RETRY_MS;
            if (ok) {
                c->connected = 1;
                c->connects++;
                c->need_resync = 1; /* a new connection always starts from the live set */
            }
            continue;
        }
        if (c->need_resync) {
            size_t nsnaps = 0;
            snapshot *snaps = take_snapshots(c, &nsnaps);
            if (snaps == NULL) { /* retry later; keep need_resync */
                struct timespec dl = deadline_in(RETRY_MS * 1000u);
                pthread_cond_timedwait(&c->wake, &c->lock, &dl);
                continue;
            }
            c->need_resync = 0;
            pthread_mutex_unlock(&c->lock);
            int rc = send_resync(c, snaps, nsnaps);
            free_snapshots(snaps, nsnaps);
            pthread_mutex_lock(&c->lock);
            if (rc != 0) {
                disconnect(c);
                c->connected = 0;
            } else {
                c->resyncs++;
            }
            pthread_cond_broadcast(&c->wake);
            continue;
        }
        uint32_t n = take_batch(c, batch, BATCH, now_ms());
        if (n == 0) {
            pthread_cond_broadcast(&c->wake); /* flushers: progress */
            struct timespec dl = deadline_in(idle_ms * 1000u);
            if (idle_ms < IDLE_MAX_MS)
                idle_ms *= 2;
            pthread_cond_timedwait(&c->wake, &c->lock, &dl);
            continue;
        }
        c->in_flight = n;
        idle_ms = IDLE_MIN_MS;
        pthread_cond_broadcast(&c->room);
        pthread_mutex_unlock(&c->lock);

        size_t len = 0;
        for (uint32_t i = 0; i < n; i++)
            len += encode_event(c, buf + len, batch[i].stream, &batch[i].ev);
        int rc = write_all(c->fd, buf, len, c->opt.send_timeout_ms);

        pthread_mutex_lock(&c->lock);
        c->in_flight = 0;
        if (rc == 0) {
            c->sent += n;
        } else {
            /* Some of the batch may have reached the server; the resync after
             * reconnecting makes its view exact either way. */
            for (uint32_t i = 0; i < n; i++)
                for (stream *s = c->streams; s != NULL; s = s->next)
                    if (s->id == batch[i].stream)
                        s->dropped++;
            disconnect(c);
            c->connected = 0;
        }
    }
    disconnect(c);
    c->connected = 0;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ======================== Reporting (application threads) ======================== */

/* Under c->lock. If the shadow cannot grow (host memory), a later resync
 * would miss this allocation: that loss is counted as a drop. */
static void apply_shadow(stream *s, const bh_event *ev) {
    if (ev->kind == BH_EVENT_ALLOC) {
        if (shadow_put(&s->live, ev->device, ev->address, ev->size) != 0)
            s->dropped++;
    } else {
        shadow_del(&s->live, ev->device, ev->address);
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

static void report_cb(void *ctx, const bh_event *ev) {
    stream *s = ctx;
    conn *c = s->c;
    pthread_mutex_lock(&c->lock);
    s->reported++;
    if (ev->seq > s->max_seq) /* seen, placed or not: a resync restarts after it */
        s->max_seq = ev->seq;
    apply_shadow(s, ev);
    uint64_t epoch = c->epoch;
    int timed_out = c->opt.max_block_us == 0;
    struct timespec deadline = deadline_in(c->opt.max_block_us);
    for (;;) {
        if (!c->connected) {
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
        timed_out = pthread_cond_timedwait(&c->room, &c->lock, &deadline) != 0;
    }
    pthread_mutex_unlock(&c->lock);
}

/* ======================== Open / close ======================== */

static void conn_destroy(conn *c) {
    bh__free(c->wire);
    bh__free(c->batch);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->room);
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

/* Stops the sender of a retired connection and frees it. */
static void conn_stop(conn *c) {
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    conn_destroy(c);
}

/* Under conns_lock: the connection for (path, format), made if needed. */
static conn *conn_get(const char *path, const bh_socket_options *opt) {
    for (conn *c = conns; c != NULL; c = c->next)
        if (strcmp(c->path, path) == 0 && c->opt.flags == opt->flags)
            return c;
    conn *c = bh__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->wire = bh__calloc(BATCH, MAX_RECORD);
    c->batch = bh__calloc(BATCH, sizeof(qitem));
    if (c->wire == NULL || c->batch == NULL) {
        bh__free(c->wire);
        bh__free(c->batch);
        bh__free(c);
        return NULL;
    }
    c->opt = *opt;
    memcpy(c->path, path, strlen(path) + 1);
    c->fd = -1;
    c->owner = getpid();
    c->next_stream = 1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->room, NULL);
    /* Connect once now, so that events right after opening are not dropped
     * while a server is up. Failure is fine: the sender keeps trying. */
    if (try_connect(c) == 0) { /* nothing reported yet: no resync needed */
        c->connected = 1;
        c->connects = 1;
    }
    int fd = c->fd;
    if (pthread_create(&c->thread, NULL, sender, c) != 0) {
        if (fd >= 0)
            close(fd);
        conn_destroy(c);
        return NULL;
    }
    c->next = conns;
    conns = c;
    return c;
}

/* ======================== Exit ======================== */

/* A process that ends without closing its reporters (a registry never
 * destroyed: the usual shape of a leak, or of a registry meant to live as long
 * as the process) would lose what still waits in the rings, so the server
 * would miss the leak it runs for, or take freed allocations for leaks. At
 * exit every connection of this process is flushed, each within its
 * flush_timeout_ms as a close is. A child of fork() skips its parent's
 * connections (their sender threads exist only in the parent), and waits at
 * most 2 s for conns_lock, in case the thread holding it was lost to fork. */
static bh_status conn_flush(conn *c, uint32_t timeout_ms);

static void flush_at_exit(void) {
    struct timespec dl = deadline_in(2000u * 1000u);
    if (pthread_mutex_timedlock(&conns_lock, &dl) != 0)
        return;
    for (conn *c = conns; c != NULL; c = c->next)
        if (c->owner == getpid())
            (void)conn_flush(c, c->opt.flush_timeout_ms);
    pthread_mutex_unlock(&conns_lock);
}

static pthread_once_t exit_flush_once = PTHREAD_ONCE_INIT;
static void install_exit_flush(void) { (void)atexit(flush_at_exit); }

bh_status bh_socket_reporter_open(const char *path, const bh_socket_options *opts, bh_reporter *out) {
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
    memset(&opt, 0, sizeof(opt));
    if (opts != NULL)
        opt = *opts;
    if (opt.flags & ~BH_SOCKET_COMPAT_TT)
        return BH_EINVAL;
    if (opt.queue_capacity == 0)
        opt.queue_capacity = 16384;
    if (opt.send_timeout_ms == 0)
        opt.send_timeout_ms = 1000;
    if (opt.flush_timeout_ms == 0)
        opt.flush_timeout_ms = 2000;

    stream *s = bh__calloc(1, sizeof(*s));
    if (s != NULL)
        s->late = bh__calloc(LATE_CAP, sizeof(bh_event));
    if (s == NULL || s->late == NULL) {
        bh__free(s);
        return BH_ENOMEM;
    }
    pthread_once(&exit_flush_once, install_exit_flush);
    pthread_mutex_lock(&conns_lock);
    conn *c = conn_get(path, &opt);
    /* The ring follows the connection's options (its first opener's). */
    if (c != NULL)
        s->ring = bh__calloc(c->opt.queue_capacity, sizeof(bh_event));
    if (c == NULL || s->ring == NULL) {
        int unused = c != NULL && c->refs == 0; /* made just now, for us */
        if (unused)
            conn_retire(c);
        pthread_mutex_unlock(&conns_lock);
        if (unused)
            conn_stop(c);
        bh__free(s->late);
        bh__free(s);
        return BH_ENOMEM;
    }
    c->refs++;
    pthread_mutex_lock(&c->lock);
    s->c = c;
    s->id = c->next_stream++;
    s->base = 1; /* a registry's first seq */
    s->next = c->streams;
    c->streams = s;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&conns_lock);
    out->report = report_cb;
    out->ctx = s;
    return BH_OK;
}

int bh__is_socket_reporter(const bh_reporter *rep) { return rep != NULL && rep->report == report_cb; }

bh_status bh_socket_reporter_flush(const bh_reporter *rep, uint32_t timeout_ms) {
    if (!bh__is_socket_reporter(rep))
        return BH_EINVAL;
    return conn_flush(((stream *)rep->ctx)->c, timeout_ms);
}

static bh_status conn_flush(conn *c, uint32_t timeout_ms) {
    uint64_t deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&c->lock);
    pthread_cond_broadcast(&c->wake);
    bh_status st = BH_OK;
    while (c->connected && (!all_sent(c) || c->in_flight > 0 || c->need_resync)) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            st = BH_EBUSY;
            break;
        }
        struct timespec dl = deadline_in((deadline - now) * 1000u);
        pthread_cond_timedwait(&c->wake, &c->lock, &dl);
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

void bh_socket_reporter_close(bh_reporter *rep) {
    if (!bh__is_socket_reporter(rep))
        return;
    stream *s = rep->ctx;
    conn *c = s->c;
    (void)bh_socket_reporter_flush(rep, c->opt.flush_timeout_ms);

    pthread_mutex_lock(&conns_lock);
    pthread_mutex_lock(&c->lock);
    for (stream **p = &c->streams; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    int last = --c->refs == 0;
    if (last)
        conn_retire(c);
    pthread_mutex_unlock(&conns_lock);
    if (last)
        conn_stop(c);
    bh__free(s->live.e);
    bh__free(s->ring);
    bh__free(s->late);
    bh__free(s);
    rep->report = NULL;
    rep->ctx = NULL;
}

bh_status bh_socket_reporter_stats(const bh_reporter *rep, bh_reporter_stats *out) {
    if (!bh__is_socket_reporter(rep) || out == NULL)
        return BH_EINVAL;
    stream *s = rep->ctx;
    conn *c = s->c;
    pthread_mutex_lock(&c->lock);
    out->reported = s->reported;
    out->sent = c->sent;
    out->dropped = s->dropped;
    out->out_of_order = s->out_of_order;
    out->resyncs = c->resyncs;
    out->connects = c->connects;
    out->connected = (uint32_t)c->connected;
    pthread_mutex_unlock(&c->lock);
    return BH_OK;
}
