/*
 * report_socket.c - the socket reporter: events to bh-trackd, off the
 * application's threads.
 *
 * Owns: the process-wide connections (one per socket path and format), each
 * with a sender thread; and the streams (one per reporter, i.e. per registry),
 * each with its seq-indexed ring, its late list and its shadow live set.
 * Must never: do socket I/O on a reporting thread, let a reporting thread wait
 * for anything but a short critical section (or, by choice, max_block_us for
 * ring room), hold the connection lock for work that grows with the live set,
 * raise SIGPIPE, send to a server of another user, or lose an event silently
 * (every undelivered event is counted and covered by a resync).
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
 * full) or the connection is a reconnection, the sender takes a snapshot
 * point T (in O(streams) under the lock: the rings are discarded, each stream
 * restarts after its highest seq) and then sends each stream's live set as it
 * was at T, RESYNC_BEGIN, chunks, RESYNC_END, copying CHUNK entries per lock
 * hold while the application goes on. Entries changed after T are kept
 * apart: a node inserted after T carries the new snapshot epoch and is
 * skipped; a node of T that is deleted before the sender reached its bucket
 * moves to the stream's owed list and is sent from there. Events after T
 * follow RESYNC_END, so the server's view is exact again. Resyncs are spaced
 * (RESYNC_GAP_MS, or 8 times the last one's duration): a ring that keeps
 * overflowing costs drops, not a storm of live-set copies.
 *
 * TT records have no resync (see resync_finish_tt): the sender remembers what
 * the TT server was told, never re-announces anything, and after a loss only
 * sends the FREEs the server is owed.
 *
 * Refusals. A server that closes the connection with an ERROR frame is read,
 * reported once on stderr, and retried with back-off; one that refuses the
 * process for its live-set limit (BH_ENOMEM) gets an empty resync of every
 * stream (so it does not count what it holds as leaks) and nothing more.
 */
#define _GNU_SOURCE /* struct ucred for SO_PEERCRED */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "common/rundir.h"
#include "common/wire.h"

#define STALL_MS 50 /* a seq missing this long is skipped; it goes out late */
#define BATCH 256   /* events per send */
/* Reporters never signal the sender (a futex wake per report would cost more
 * than the report); it polls. The period starts at IDLE_MIN_MS after work and
 * doubles while idle up to IDLE_MAX_MS, so an idle process wakes ~16 times a
 * second and the first event after a pause waits at most IDLE_MAX_MS. A ring
 * half full, a flush or a close wakes it at once. */
#define IDLE_MIN_MS 2
#define IDLE_MAX_MS 64
#define RETRY_MS 100        /* reconnect period after a failed connect (cheap) */
#define BACKOFF_MAX_MS 5000 /* after a refusal the period doubles up to this */
#define RESYNC_GAP_MS 1000  /* least time between the starts of two resyncs */
#define CHUNK 4096          /* live-set entries copied per lock hold, and per RESYNC_CHUNK */
#define MIGRATE 1024        /* buckets the sender moves per lock hold while a shadow grows */
#define SLICE_MS 20         /* a blocked send looks at the close deadline this often */
/* A reporting thread waits for the connection lock at most this long.
 * Critical sections are a few microseconds; only a holder preempted by the
 * machine's load takes longer, and then the event is parked (side_push)
 * rather than waited for. */
#define LOCK_WAIT_US 200

#if defined(BH_VALGRIND_ANNOTATIONS) && BH_VALGRIND_ANNOTATIONS
/* (atomics.h included helgrind.h.) For helgrind and drd, which do not see
 * atomic operations: a field read and written with relaxed atomics, or one
 * that fork_child touches in the child, where the thread that used it
 * without the lock no longer exists. */
#define BENIGN_RACE(addr, why) ANNOTATE_BENIGN_RACE_SIZED(addr, sizeof(*(addr)), why)
#else
#define BENIGN_RACE(addr, why) ((void)(addr))
#endif

/* ======================== Key sets (sender thread only) ======================== */

/* Open addressing, linear probing, backward-shift deletion. Used for what
 * only the sender touches (the TT server's known set), so growing it costs
 * the sender, never an application thread. */
typedef struct kentry {
    uint64_t address;
    uint32_t device, used;
    uint32_t domain; /* the registry's domain (the TT known set keys by its device) */
} kentry;

typedef struct keyset {
    kentry *e;
    size_t cap, n;
} keyset;

static size_t key_home(const keyset *s, uint32_t device, uint64_t address) {
    return (size_t)bh__key_hash(device, address) & (s->cap - 1);
}

static int key_grow(keyset *s) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    kentry *e = bh__calloc(cap, sizeof(*e));
    if (e == NULL)
        return -1;
    keyset old = *s;
    s->e = e;
    s->cap = cap;
    s->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.e[i].used)
            continue;
        size_t j = key_home(s, old.e[i].device, old.e[i].address);
        while (s->e[j].used)
            j = (j + 1) & (cap - 1);
        s->e[j] = old.e[i];
        s->n++;
    }
    bh__free(old.e);
    return 0;
}

static size_t key_slot(const keyset *s, uint32_t device, uint64_t address) {
    size_t i = key_home(s, device, address);
    while (s->e[i].used && !(s->e[i].device == device && s->e[i].address == address))
        i = (i + 1) & (s->cap - 1);
    return i;
}

static const kentry *key_get(const keyset *s, uint32_t device, uint64_t address) {
    if (s->cap == 0)
        return NULL;
    const kentry *e = &s->e[key_slot(s, device, address)];
    return e->used ? e : NULL;
}

/* Returns 0, or -1 when host memory ran out. */
static int key_add(keyset *s, uint32_t device, uint64_t address, uint32_t domain) {
    if ((s->n + 1) * 2 > s->cap && key_grow(s) != 0)
        return -1;
    size_t i = key_slot(s, device, address);
    if (!s->e[i].used)
        s->n++;
    s->e[i] = (kentry){address, device, 1, domain};
    return 0;
}

static void key_del(keyset *s, uint32_t device, uint64_t address) {
    if (s->cap == 0)
        return;
    size_t i = key_slot(s, device, address);
    if (!s->e[i].used)
        return;
    s->e[i].used = 0;
    s->n--;
    /* Backward shift: pull later members of the probe run into the hole. */
    for (size_t j = (i + 1) & (s->cap - 1); s->e[j].used; j = (j + 1) & (s->cap - 1)) {
        size_t h = key_home(s, s->e[j].device, s->e[j].address);
        /* Move e[j] to i if its home is not in the cyclic range (i, j]. */
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            s->e[i] = s->e[j];
            s->e[j].used = 0;
            i = j;
        }
    }
}

static void key_clear(keyset *s) {
    bh__free(s->e);
    *s = (keyset){NULL, 0, 0};
}

/* ======================== Shadow live set (under c->lock) ======================== */

/* Chained buckets, so that a node stays in one bucket until it is deleted
 * (the resync walks buckets with a cursor while the set changes), and grown
 * incrementally: every put or delete moves two old buckets, the sender moves
 * MIGRATE per lock hold, so no caller ever rehashes the whole set. */
typedef struct snode {
    struct snode *next;
    uint64_t address, size;
    uint32_t device;
    /* The stream's snap_epoch when inserted. A node inserted after the last
     * snapshot point carries the current epoch and is not part of it. (A node
     * older by exactly 2^32 snapshots would be skipped; at most one snapshot
     * per RESYNC_GAP_MS makes that 136 years.) */
    uint32_t epoch;
} snode;

#define NODE_BLOCK 256
typedef struct nblock {
    struct nblock *next;
    snode n[NODE_BLOCK];
} nblock;

typedef struct shadow {
    snode **tab;
    size_t nb; /* buckets in tab, a power of two; 0: nothing yet */
    snode **old;
    size_t old_nb, moved; /* growing: old buckets [moved, old_nb) still hold nodes */
    size_t n;
    snode *spare;   /* free nodes, reused before new blocks are made */
    nblock *blocks; /* all node memory, freed at close */
} shadow;

typedef struct stream stream;
static void owe(stream *s, snode *x, size_t bucket, int in_tab);

static snode *node_take(shadow *sh) {
    if (sh->spare == NULL) {
        nblock *b = bh__calloc(1, sizeof(*b));
        if (b == NULL)
            return NULL;
        b->next = sh->blocks;
        sh->blocks = b;
        for (int i = 0; i < NODE_BLOCK; i++) {
            b->n[i].next = sh->spare;
            sh->spare = &b->n[i];
        }
    }
    snode *x = sh->spare;
    sh->spare = x->next;
    return x;
}

static void node_give(shadow *sh, snode *x) {
    x->next = sh->spare;
    sh->spare = x;
}

static void migrate(shadow *sh, size_t buckets) {
    while (sh->old != NULL && buckets-- > 0) {
        snode *x = sh->old[sh->moved];
        while (x != NULL) {
            snode *next = x->next;
            size_t b = (size_t)bh__key_hash(x->device, x->address) & (sh->nb - 1);
            x->next = sh->tab[b];
            sh->tab[b] = x;
            x = next;
        }
        sh->old[sh->moved] = NULL;
        if (++sh->moved == sh->old_nb) {
            bh__free(sh->old);
            sh->old = NULL;
            sh->old_nb = sh->moved = 0;
        }
    }
}

/* The head of the chain that holds (or would hold) the key; *bucket is its
 * index and *in_tab says whether that is an index into tab (else old). */
static snode **chain_of(shadow *sh, uint32_t device, uint64_t address, size_t *bucket, int *in_tab) {
    uint64_t h = bh__key_hash(device, address);
    if (sh->old != NULL && (size_t)(h & (sh->old_nb - 1)) >= sh->moved) {
        *bucket = (size_t)(h & (sh->old_nb - 1));
        *in_tab = 0;
        return &sh->old[*bucket];
    }
    *bucket = (size_t)(h & (sh->nb - 1));
    *in_tab = 1;
    return &sh->tab[*bucket];
}

static snode **find(shadow *sh, uint32_t device, uint64_t address, size_t *bucket, int *in_tab) {
    snode **p = chain_of(sh, device, address, bucket, in_tab);
    while (*p != NULL && !((*p)->device == device && (*p)->address == address))
        p = &(*p)->next;
    return p;
}

static void shadow_free(shadow *sh) {
    while (sh->blocks != NULL) {
        nblock *b = sh->blocks;
        sh->blocks = b->next;
        bh__free(b);
    }
    bh__free(sh->tab);
    bh__free(sh->old);
    memset(sh, 0, sizeof(*sh));
}

/* ======================== Connections and streams ======================== */

typedef struct conn conn;

/* An event on its way to the wire, with its stream. */
typedef struct qitem {
    uint32_t stream;
    bh_event ev;
} qitem;

#define LATE_CAP 4096u /* late events a stream keeps before it drops and resyncs */

/* An event whose reporter could not take the connection lock within
 * max_block_us (the sender, or another reporter, held it: on a loaded machine
 * a preempted holder can hold it for milliseconds). */
typedef struct side_ev {
    struct side_ev *next;
    bh_event ev;
} side_ev;

struct stream {
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
    /* The snapshot being sent (see the file comment). */
    int snap_active;     /* a snapshot point was taken and its END is not sent yet */
    int snap_begun;      /* RESYNC_BEGIN sent */
    uint32_t snap_epoch; /* bumped at every snapshot point */
    size_t snap_cursor;  /* buckets of live.tab below this were sent */
    snode *owed;         /* nodes of the snapshot deleted before the cursor reached them */
    uint64_t reported, dropped, out_of_order;
    /* ATOMIC: a stack of side_ev pushed without the lock. Whoever takes the
     * lock applies them (drain_side) before touching the stream, so the shadow
     * sees every event in an order consistent with causality. */
    AO_t side;
    AO_t side_lost; /* ATOMIC: events that could not even be pushed (host memory) */
    stream *next;
};

/* A node of the snapshot being sent, deleted (or replaced) before the cursor
 * reached its bucket: the snapshot still owes it, so it is parked on the owed
 * list instead of being reused. No growth runs during a snapshot, so the
 * bucket is a tab index. */
static void owe(stream *s, snode *x, size_t bucket, int in_tab) {
    if (s->snap_active && in_tab && x->epoch != s->snap_epoch && bucket >= s->snap_cursor) {
        x->next = s->owed;
        s->owed = x;
    } else {
        node_give(&s->live, x);
    }
}

/* Under c->lock. Returns 0, or -1 when host memory ran out (the set is then
 * incomplete, and the caller counts a drop). */
static int shadow_put(stream *s, uint32_t device, uint64_t address, uint64_t size) {
    shadow *sh = &s->live;
    migrate(sh, 2);
    if (sh->tab == NULL) {
        sh->tab = bh__calloc(64, sizeof(snode *));
        if (sh->tab == NULL)
            return -1;
        sh->nb = 64;
    } else if (sh->old == NULL && !s->snap_active && sh->n >= sh->nb) {
        /* Start growing (no growth during a snapshot: its cursor walks tab).
         * The new table is one calloc; moving the nodes is spread out. */
        snode **tab = bh__calloc(sh->nb * 2, sizeof(snode *));
        if (tab != NULL) { /* else chains just get longer */
            sh->old = sh->tab;
            sh->old_nb = sh->nb;
            sh->moved = 0;
            sh->tab = tab;
            sh->nb *= 2;
        }
    }
    size_t bucket;
    int in_tab;
    snode **p = find(sh, device, address, &bucket, &in_tab);
    snode *x = *p;
    if (x != NULL) { /* ALLOC of a live key (a naive client): replace */
        *p = x->next;
        sh->n--;
        owe(s, x, bucket, in_tab);
    }
    x = node_take(sh);
    if (x == NULL)
        return -1;
    *x = (snode){*chain_of(sh, device, address, &bucket, &in_tab), address, size, device, s->snap_epoch};
    *chain_of(sh, device, address, &bucket, &in_tab) = x;
    sh->n++;
    return 0;
}

/* Under c->lock. */
static void shadow_del(stream *s, uint32_t device, uint64_t address) {
    shadow *sh = &s->live;
    if (sh->tab == NULL)
        return;
    migrate(sh, 2);
    size_t bucket;
    int in_tab;
    snode **p = find(sh, device, address, &bucket, &in_tab);
    snode *x = *p;
    if (x == NULL)
        return;
    *p = x->next;
    sh->n--;
    owe(s, x, bucket, in_tab);
}

struct conn {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* sender: urgent work; flushers: progress */
    pthread_cond_t room; /* reporters waiting for ring space */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char var[32]; /* the environment variable that named path ("": the API) */
    bh_socket_options opt;
    int refs;   /* under conns_lock: open streams */
    conn *next; /* under conns_lock */
    pthread_t thread;
    int has_thread; /* a sender thread runs (0 in a child after fork) */
    /* ATOMIC: 0, or the CLOCK_MONOTONIC ms at which a closing connection
     * gives up sending; read by the sender inside blocked sends. */
    AO_t give_up_ms;
    /* under lock: */
    stream *streams;
    uint32_t next_stream;
    int fd; /* sender thread only, once started */
    int connected;
    int need_resync; /* events were lost: a snapshot point is due */
    int resyncing;   /* a snapshot is being sent: the rings wait */
    int stop;
    int flushers;       /* threads in flush: resyncs are not spaced while one waits */
    int forked;         /* inherited by a child through fork(): dead, reports are dropped */
    int refused;        /* the server refused this process for its live-set limit */
    int quiet;          /* refused and withdrawn: nothing more is sent */
    uint64_t epoch;     /* bumped by every snapshot point */
    uint64_t in_flight; /* events taken by the sender, not yet written */
    uint64_t sent, resyncs, connects;
    /* sender thread only: */
    uint64_t next_try_ms;    /* when to connect again; UINT64_MAX: never (refused and withdrawn) */
    int got_error;           /* the server closed the connection with an ERROR frame */
    uint64_t next_resync_ms; /* resync spacing */
    uint64_t resync_started_ms;
    uint32_t backoff_ms; /* next reconnect delay after a refusal */
    unsigned said;       /* SAID_* messages already printed */
    pid_t server_pid;    /* the TT server the known set belongs to */
    keyset known;        /* TT: keys whose ALLOC the server got and no FREE yet */
    keyset live_at_t;    /* TT: the live set at the snapshot point */
    uint8_t *wire;       /* encoded batch, BATCH * MAX_RECORD */
    uint8_t *encoded;    /* TT: 1 for each batch item that was encoded (not skipped) */
    qitem *batch;        /* events being sent */
    uint8_t *rbuf;       /* RESYNC_CHUNK frame */
    kentry *snap;        /* TT: keys copied from a snapshot chunk */
    uint64_t *snap_size; /* sizes of the entries in snap */
    size_t snap_cap;
};

enum { SAID_UNREACHABLE = 1, SAID_FOREIGN = 2, SAID_REFUSED = 4, SAID_ERROR = 8 };

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static conn *conns;
static AO_t said_unreachable; /* ATOMIC: the unreachable-server line was printed */

static void report_cb(void *ctx, const bh_event *ev);
static void drain_all(conn *c);
static void place(stream *s, const bh_event *ev, const struct timespec *deadline);
static bh_status flush_until(conn *c, uint64_t deadline);

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

/* One line on stderr per connection and kind (the library never writes to
 * stdout). */
static void say_once(conn *c, unsigned what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say_once(conn *c, unsigned what, const char *fmt, ...) {
    if (c->said & what)
        return;
    c->said |= what;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(2, line, len); /* one write: lines of several processes do not mix */
    (void)w;
}

/* The label of the connection in messages: the variable that named it, or
 * the path. */
static const char *who(const conn *c, char *buf, size_t cap) {
    if (c->var[0] != '\0')
        snprintf(buf, cap, "%s=%s", c->var, c->path);
    else
        snprintf(buf, cap, "%s", c->path);
    return buf;
}

/* ======================== Socket I/O (sender thread only) ======================== */

/* Writes buf within timeout_ms, and within the close deadline if one is set.
 * MSG_NOSIGNAL: a dead server is EPIPE, never SIGPIPE. Returns the bytes
 * written: len on success. */
static size_t write_some(conn *c, int fd, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
    uint64_t deadline = now_ms() + timeout_ms;
    size_t done = 0;
    while (done < len) {
        ssize_t n = send(fd, buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            break;
        uint64_t now = now_ms();
        /* Relaxed: a deadline, read again every slice; nothing else is
         * published through it. */
        uint64_t give_up = (uint64_t)AO_load(&c->give_up_ms);
        if (now >= deadline || (give_up != 0 && now >= give_up))
            break;
        uint64_t wait = deadline - now < SLICE_MS ? deadline - now : SLICE_MS;
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, (int)wait) < 0 && errno != EINTR)
            break;
    }
    return done;
}

static int write_all(conn *c, const uint8_t *buf, size_t len) {
    return write_some(c, c->fd, buf, len, c->opt.send_timeout_ms) == len ? 0 : -1;
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

/* Connects, checks who listens, says HELLO. Returns 0; -1 (no server: retry
 * soon); -2 (a server we must not talk to, or it refused: back off). */
static int try_connect(conn *c) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    char label[256];
    /* A Unix socket connect completes at once or fails (EAGAIN: backlog full,
     * treated as a failure and retried later). */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        /* Once per process, not per connection: registries come and go, each
         * making the connection anew. Relaxed CAS: a flag, nothing to order. */
        if (c->var[0] != '\0' && AO_fetch_compare_and_swap(&said_unreachable, 0, 1) == 0)
            say_once(c, SAID_UNREACHABLE,
                     "bufhandle: %s: no tracking server reachable (%s); events are counted as dropped "
                     "until one listens there",
                     who(c, label, sizeof(label)), strerror(errno));
        close(fd);
        return -1;
    }
    /* Nothing is sent before we know the listener runs as us or as root:
     * anyone else may have bound a path we were given. */
    struct ucred cred = {0, (uid_t)-1, (gid_t)-1};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
        say_once(c, SAID_FOREIGN,
                 "bufhandle: %s is served by uid %u, not by this user or root: nothing is sent there",
                 who(c, label, sizeof(label)), (unsigned)cred.uid);
        close(fd);
        return -2;
    }
    c->fd = fd;
    if (!(c->opt.flags & BH_SOCKET_COMPAT_TT)) {
        char name[64];
        size_t n_name = program_name(name, sizeof(name));
        uint8_t hello[BH_WIRE_HEADER + 10 + sizeof(name)];
        size_t n = bh_wire_header(hello, BH_WIRE_HELLO, (uint32_t)(10 + n_name));
        bh_put32(hello + n, (uint32_t)getpid());
        bh_put16(hello + n + 4, BH_WIRE_VERSION);
        bh_put16(hello + n + 6, 0);
        bh_put16(hello + n + 8, (uint16_t)n_name);
        memcpy(hello + n + 10, name, n_name);
        if (write_all(c, hello, n + 10 + n_name) != 0) {
            close(fd);
            c->fd = -1;
            return -1;
        }
    } else if (cred.pid != c->server_pid) {
        /* Another TT server than the one the known set was built with: it
         * knows nothing of ours. */
        key_clear(&c->known);
        c->server_pid = cred.pid;
    }
    return 0;
}

static void disconnect(conn *c) {
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Reads what the server sent, without blocking. An ERROR frame is reported
 * once; BH_ENOMEM (the process is over the server's live-set limit) marks
 * the connection refused. Returns 0 (nothing, or nothing that matters), -1
 * (the server closed or sent an ERROR: the connection is over). */
static int read_server(conn *c) {
    uint8_t in[512];
    ssize_t n = recv(c->fd, in, sizeof(in), MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    if (c->opt.flags & BH_SOCKET_COMPAT_TT)
        return 0; /* a TT server sends only answers to queries, which we never ask */
    if ((size_t)n < BH_WIRE_HEADER + 4 || bh_get32(in) != BH_WIRE_MAGIC || bh_get16(in + 6) != BH_WIRE_ERROR)
        return 0;
    int32_t code = (int32_t)bh_get32(in + BH_WIRE_HEADER);
    size_t mlen = bh_get32(in + 8) - 4;
    size_t have = (size_t)n - BH_WIRE_HEADER - 4;
    int mshow = (int)(mlen < have ? mlen : have);
    char label[256];
    c->got_error = 1;
    if (code == BH_ENOMEM) {
        c->refused = 1;
        say_once(c, SAID_REFUSED,
                 "bufhandle: %s refused this process (%.*s): its live set is withdrawn there and nothing "
                 "more is sent",
                 who(c, label, sizeof(label)), mshow, (const char *)in + BH_WIRE_HEADER + 4);
    } else {
        say_once(c, SAID_ERROR, "bufhandle: %s closed the connection: %s (%.*s); retrying with back-off",
                 who(c, label, sizeof(label)), bh_strerror((bh_status)code), mshow,
                 (const char *)in + BH_WIRE_HEADER + 4);
    }
    return -1;
}

/* Encodes one event for the wire; returns bytes written to p. */
static size_t encode_event(const conn *c, uint8_t *p, uint32_t stream_id, const bh_event *ev) {
    if (c->opt.flags & BH_SOCKET_COMPAT_TT) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int alloc = ev->kind == BH_EVENT_ALLOC;
        /* The domain split as the TT server keys it: device id, and the
         * memory kind as buffer_type (tt_admit passes kinds 0..3 only). */
        bh_tt_record(p, alloc ? BH_TT_ALLOC : BH_TT_FREE, (int32_t)BH_DOMAIN_DEVICE(ev->device),
                     alloc ? ev->size : 0, alloc ? (uint8_t)BH_DOMAIN_KIND(ev->device) : 0, (int32_t)getpid(),
                     ev->address, alloc ? (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec : 0);
        return BH_TT_RECORD;
    }
    return bh_wire_event(p, stream_id, (uint8_t)ev->kind, ev->device, ev->address, ev->size, ev->seq);
}

#define MAX_RECORD                                                                                           \
    (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN > BH_TT_RECORD ? BH_WIRE_HEADER + BH_WIRE_EVENT_LEN : BH_TT_RECORD)

/* Sends a frame carrying only a stream id (RESYNC_BEGIN, RESYNC_END). */
static int send_stream_frame(conn *c, uint16_t type, uint32_t stream_id) {
    uint8_t buf[BH_WIRE_HEADER + 4];
    size_t n = bh_wire_header(buf, type, 4);
    bh_put32(buf + n, stream_id);
    return write_all(c, buf, n + 4);
}

/* ======================== Sender thread ======================== */

static stream *stream_by_id(conn *c, uint32_t id) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

/* Under c->lock: the snapshot point. Everything waiting is covered by the
 * live sets as they are now, so it is discarded (counted as dropped); each
 * stream restarts after its highest seq; a report still on its way with a
 * smaller seq arrives late and is sent after the resync. O(streams + ring):
 * the live sets themselves are copied later, a chunk per lock hold. Returns
 * 0 if a shadow is still growing (the caller moves buckets and retries). */
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

static int snapshot_point(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        if (s->live.old != NULL)
            return 0;
    discard_waiting(c);
    for (stream *s = c->streams; s != NULL; s = s->next) {
        while (s->owed != NULL) { /* owed to an abandoned snapshot: not live now */
            snode *x = s->owed;
            s->owed = x->next;
            node_give(&s->live, x);
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
        migrate(&s->live, MIGRATE);
}

/* Under c->lock: copies up to CHUNK entries of s's snapshot into c->snap
 * (owed nodes first, then buckets from the cursor). Returns the count; 0
 * means the snapshot is complete. */
static size_t copy_chunk(conn *c, stream *s) {
    size_t n = 0;
    while (s->owed != NULL && n < CHUNK) {
        snode *x = s->owed;
        s->owed = x->next;
        c->snap[n] = (kentry){x->address, x->device, 1, x->device};
        c->snap_size[n++] = x->size;
        node_give(&s->live, x);
    }
    shadow *sh = &s->live;
    size_t scanned = 0;
    while (s->snap_cursor < sh->nb && n < CHUNK && scanned++ < 4 * CHUNK) {
        size_t len = 0;
        for (snode *x = sh->tab[s->snap_cursor]; x != NULL; x = x->next)
            len += x->epoch != s->snap_epoch;
        if (n + len > c->snap_cap) {
            if (n > 0)
                break; /* the next chunk takes this bucket whole */
            /* A chain longer than a chunk (only with colliding keys): make room. */
            kentry *e = bh__calloc(len, sizeof(*e));
            uint64_t *sz = bh__calloc(len, sizeof(*sz));
            if (e == NULL || sz == NULL) {
                bh__free(e);
                bh__free(sz);
                break; /* retried next step */
            }
            bh__free(c->snap);
            bh__free(c->snap_size);
            c->snap = e;
            c->snap_size = sz;
            c->snap_cap = len;
        }
        for (snode *x = sh->tab[s->snap_cursor]; x != NULL; x = x->next) {
            if (x->epoch == s->snap_epoch)
                continue; /* inserted after the snapshot point */
            c->snap[n] = (kentry){x->address, x->device, 1, x->device};
            c->snap_size[n++] = x->size;
        }
        s->snap_cursor++;
    }
    return n;
}

/* Without the lock: one RESYNC_CHUNK of c->snap[0..n). */
static int send_chunk(conn *c, uint32_t stream_id, size_t n) {
    size_t h = bh_wire_header(c->rbuf, BH_WIRE_RESYNC_CHUNK, (uint32_t)(8 + n * BH_WIRE_RESYNC_ENTRY));
    bh_put32(c->rbuf + h, stream_id);
    bh_put32(c->rbuf + h + 4, (uint32_t)n);
    uint8_t *p = c->rbuf + h + 8;
    for (size_t j = 0; j < n; j++, p += BH_WIRE_RESYNC_ENTRY) {
        memset(p, 0, BH_WIRE_RESYNC_ENTRY);
        bh_put32(p, c->snap[j].device);
        bh_put64(p + 8, c->snap[j].address);
        bh_put64(p + 16, c->snap_size[j]);
    }
    return write_all(c, c->rbuf, (size_t)(p - c->rbuf));
}

/* Without the lock. Writes TT FREE records for n keys, updating the known
 * set by what was written. Returns 0 or -1. */
static int send_tt_frees(conn *c, const kentry *keys, size_t n) {
    for (size_t i = 0; i < n; i += BATCH) {
        size_t k = n - i < BATCH ? n - i : BATCH;
        for (size_t j = 0; j < k; j++) {
            bh_event ev = {BH_EVENT_FREE, keys[i + j].domain, keys[i + j].address, 0, 0};
            encode_event(c, c->wire + j * BH_TT_RECORD, 0, &ev);
        }
        size_t done = write_some(c, c->fd, c->wire, k * BH_TT_RECORD, c->opt.send_timeout_ms) / BH_TT_RECORD;
        for (size_t j = 0; j < done; j++)
            key_del(&c->known, keys[i + j].device, keys[i + j].address); /* device: the TT key's */
        if (done < k)
            return -1;
    }
    return 0;
}

/* Without the lock. The TT protocol has no resync: the server cannot be told
 * "this is the live set". Re-announcing the live set as ALLOCs made duplicate
 * ALLOCs (the server had most of them) and, when a FREE had been lost, false
 * leaks. Instead the sender keeps the set of keys whose ALLOC the server got
 * and whose FREE it did not (known), never announces anything twice, and at
 * a snapshot point sends FREE for every known key that is no longer live.
 * Live keys the server never heard of stay unannounced, and their FREE is not
 * sent either (see take_tt). So the server may under-count after a loss, but
 * never sees a duplicate ALLOC, an unknown FREE or a leak that is not one. */
static int resync_finish_tt(conn *c) {
    size_t n = 0;
    kentry *gone = c->known.n ? bh__calloc(c->known.n, sizeof(*gone)) : NULL;
    if (c->known.n && gone == NULL)
        return -1;
    for (size_t i = 0; i < c->known.cap; i++)
        if (c->known.e[i].used && key_get(&c->live_at_t, c->known.e[i].domain, c->known.e[i].address) == NULL)
            gone[n++] = c->known.e[i];
    int rc = send_tt_frees(c, gone, n);
    bh__free(gone);
    key_clear(&c->live_at_t);
    return rc;
}

/* Under c->lock: the connection is over (write failed, server closed or
 * refused). A pending ERROR frame is read first (a server that refuses us
 * writes it, then closes). The next connect: at once after a refusal (to
 * withdraw), with doubling back-off after an ERROR, else after RETRY_MS. A
 * resync cut short spaces the next one like a completed one. */
static void lose_connection(conn *c) {
    if (c->fd >= 0 && !c->got_error)
        (void)read_server(c);
    disconnect(c);
    c->connected = 0;
    discard_waiting(c);
    uint64_t now = now_ms();
    if (c->resyncing) {
        uint64_t took = now - c->resync_started_ms;
        c->next_resync_ms = now + (8 * took > RESYNC_GAP_MS ? 8 * took : RESYNC_GAP_MS);
    }
    c->resyncing = 0;
    c->need_resync = 1;
    if (c->refused) {
        c->next_try_ms = now;
    } else if (c->got_error) {
        c->next_try_ms = now + c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
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
            rc = resync_finish_tt(c);
            pthread_mutex_lock(&c->lock);
        }
        if (rc != 0) {
            lose_connection(c);
            return;
        }
        c->resyncing = 0;
        c->resyncs++;
        uint64_t now = now_ms(), took = now - c->resync_started_ms;
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
            rc = send_stream_frame(c, BH_WIRE_RESYNC_BEGIN, id);
            pthread_mutex_lock(&c->lock);
        }
    } else {
        size_t n = copy_chunk(c, s);
        if (n == 0 && s->snap_cursor >= s->live.nb && s->owed == NULL) {
            s->snap_active = 0;
            if (!tt) {
                pthread_mutex_unlock(&c->lock);
                rc = send_stream_frame(c, BH_WIRE_RESYNC_END, id);
                pthread_mutex_lock(&c->lock);
            }
        } else if (n > 0) {
            pthread_mutex_unlock(&c->lock);
            if (tt) {
                for (size_t i = 0; i < n && rc == 0; i++)
                    rc = key_add(&c->live_at_t, c->snap[i].device, c->snap[i].address, c->snap[i].domain);
            } else {
                rc = send_chunk(c, id, n);
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
        rc = send_stream_frame(c, BH_WIRE_RESYNC_BEGIN, ids[i]);
        if (rc == 0)
            rc = send_stream_frame(c, BH_WIRE_RESYNC_END, ids[i]);
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
        disconnect(c);
        c->connected = 0;
        c->next_try_ms = now_ms() + c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    }
    pthread_cond_broadcast(&c->wake);
}

/* Under c->lock: nothing waits to be sent. */
static int all_sent(const conn *c) {
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

/* Without the lock, TT: whether the event goes to the server, updating the
 * known set (keyed as the TT server keys: device id and address). An ALLOC is
 * announced only if the server holds nothing at that key (two domains of one
 * device at one address collide there: the second is not announced) and its
 * kind has a TT buffer_type; a FREE is sent only for the very ALLOC the server
 * got. */
static int tt_admit(conn *c, const bh_event *ev) {
    uint32_t dev = BH_DOMAIN_DEVICE(ev->device);
    const kentry *k = key_get(&c->known, dev, ev->address);
    if (ev->kind == BH_EVENT_FREE) {
        if (k == NULL || k->domain != ev->device)
            return 0;
        key_del(&c->known, dev, ev->address);
        return 1;
    }
    if (k != NULL || BH_DOMAIN_KIND(ev->device) > BH_MEM_TRACE)
        return 0;
    return key_add(&c->known, dev, ev->address, ev->device) == 0; /* cannot remember it: not announced */
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
        if (tt && !tt_admit(c, ev))
            continue;
        c->encoded[i] = 1;
        (*records)++;
        len += encode_event(c, c->wire + len, c->batch[i].stream, ev);
    }
    return len;
}

/* Without the lock, TT: records from index done on were not written; undo
 * their effect on the known set, last first. */
static void unwind_tt(conn *c, uint32_t n, size_t done, size_t records) {
    size_t r = records;
    for (uint32_t i = n; i-- > 0 && r > done;) {
        if (!c->encoded[i])
            continue;
        r--;
        const bh_event *ev = &c->batch[i].ev;
        uint32_t dev = BH_DOMAIN_DEVICE(ev->device);
        if (ev->kind == BH_EVENT_FREE)
            (void)key_add(&c->known, dev, ev->address, ev->device);
        else
            key_del(&c->known, dev, ev->address);
    }
}

static void *sender(void *arg) {
    conn *c = arg;
    int tt = (c->opt.flags & BH_SOCKET_COMPAT_TT) != 0;
    uint64_t idle_ms = IDLE_MIN_MS;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        uint64_t now = now_ms();
        drain_all(c);
        if (c->stop) {
            /* Relaxed: stored by the closer before it set stop under the lock
             * we hold, so this load sees it. */
            uint64_t give_up = (uint64_t)AO_load(&c->give_up_ms);
            if (!c->connected || c->quiet || all_sent(c) || now >= give_up)
                break;
        }
        if (!c->connected) {
            if (now < c->next_try_ms) {
                uint64_t wait = c->next_try_ms - now < IDLE_MAX_MS ? c->next_try_ms - now : IDLE_MAX_MS;
                struct timespec dl = deadline_in(wait * 1000u);
                pthread_cond_timedwait(&c->wake, &c->lock, &dl);
                continue;
            }
            pthread_mutex_unlock(&c->lock);
            int rc = try_connect(c);
            pthread_mutex_lock(&c->lock);
            now = now_ms();
            if (rc == 0) {
                c->connected = 1;
                c->connects++;
                c->need_resync = 1; /* a new connection always starts from the live set */
            } else if (rc == -2) {
                c->next_try_ms = now + c->backoff_ms;
                c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
            } else {
                c->next_try_ms = now + RETRY_MS;
            }
            continue;
        }
        if (c->quiet) { /* refused and withdrawn: only notice the server going */
            if (read_server(c) == -1) {
                disconnect(c);
                c->connected = 0;
                c->next_try_ms = UINT64_MAX;
            }
            pthread_cond_broadcast(&c->wake);
            struct timespec dl = deadline_in(IDLE_MAX_MS * 1000u);
            pthread_cond_timedwait(&c->wake, &c->lock, &dl);
            continue;
        }
        if (read_server(c) == -1) {
            lose_connection(c);
            continue;
        }
        if (c->refused) {
            withdraw(c);
            continue;
        }
        if (c->need_resync && !c->resyncing) {
            if (now < c->next_resync_ms && !c->stop && c->flushers == 0) {
                /* Spaced: until then events are dropped (counted), not queued. */
                uint64_t wait = c->next_resync_ms - now < IDLE_MAX_MS ? c->next_resync_ms - now : IDLE_MAX_MS;
                struct timespec dl = deadline_in(wait * 1000u);
                pthread_cond_timedwait(&c->wake, &c->lock, &dl);
                continue;
            }
            if (!snapshot_point(c)) {
                migrate_some(c);
                continue;
            }
            c->resync_started_ms = now;
            if (tt)
                key_clear(&c->live_at_t);
        }
        if (c->resyncing) {
            resync_step(c);
            continue;
        }
        uint32_t n = take_batch(c, c->batch, BATCH, now);
        if (n == 0) {
            migrate_some(c);                  /* idle: finish growing shadows */
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

        size_t records;
        size_t len = encode_batch(c, n, &records);
        size_t done = write_some(c, c->fd, c->wire, len, c->opt.send_timeout_ms);
        if (tt && done < len)
            unwind_tt(c, n, done / BH_TT_RECORD, records);

        pthread_mutex_lock(&c->lock);
        c->in_flight = 0;
        for (uint32_t i = 0; i < n; i++) {
            /* Not sent: skipped (TT), or lost with the connection. Some of a
             * failed batch may have reached the server; the resync after
             * reconnecting makes its view exact either way. */
            if (!c->encoded[i] || done < len) {
                stream *s = stream_by_id(c, c->batch[i].stream);
                if (s != NULL)
                    s->dropped++;
            }
        }
        if (done == len)
            c->sent += records;
        else
            lose_connection(c);
    }
    disconnect(c);
    c->connected = 0;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ======================== Reporting (application threads) ======================== */

/* Under c->lock. If the shadow cannot take the event (host memory), a later
 * resync would miss this allocation: that loss is counted as a drop. */
static void apply_shadow(stream *s, const bh_event *ev) {
    if (ev->kind == BH_EVENT_ALLOC) {
        if (shadow_put(s, ev->device, ev->address, ev->size) != 0)
            s->dropped++;
    } else {
        shadow_del(s, ev->device, ev->address);
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
static void drain_side(stream *s) {
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
static void drain_all(conn *c) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        drain_side(s);
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

static void report_cb(void *ctx, const bh_event *ev) {
    stream *s = ctx;
    conn *c = s->c;
    /* One deadline for the lock and the ring: the call waits at most
     * max(max_block_us, LOCK_WAIT_US). */
    struct timespec deadline = deadline_in(c->opt.max_block_us);
    if (!lock_soon(c, &deadline)) {
        side_push(s, ev);
        return;
    }
    drain_side(s);
    place(s, ev, &deadline);
    pthread_mutex_unlock(&c->lock);
}

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
    for (conn *c = conns; c != NULL; c = c->next)
        pthread_mutex_lock(&c->lock);
}

static void fork_parent(void) {
    for (conn *c = conns; c != NULL; c = c->next)
        pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&conns_lock);
}

static void fork_child(void) {
    for (conn *c = conns; c != NULL; c = c->next) {
        pthread_mutex_unlock(&c->lock); /* taken by fork_prepare in this (the only) thread */
        /* The parent's sender may have been waiting on these: nobody waits on
         * a dead connection's conditions in the child. */
        pthread_cond_init(&c->wake, NULL);
        pthread_cond_init(&c->room, NULL);
        if (c->fd >= 0)
            close(c->fd); /* the parent's connection: never written by the child */
        c->fd = -1;
        c->connected = 0;
        c->has_thread = 0;
        c->forked = 1;
        c->in_flight = 0;
    }
    conns = NULL;
    pthread_mutex_unlock(&conns_lock);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void install_atfork(void) { (void)pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* ======================== Open / close ======================== */

static void conn_destroy(conn *c) {
    bh__free(c->wire);
    bh__free(c->encoded);
    bh__free(c->batch);
    bh__free(c->rbuf);
    bh__free(c->snap);
    bh__free(c->snap_size);
    key_clear(&c->known);
    key_clear(&c->live_at_t);
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

/* Stops the sender of a retired connection (it gives up sending at
 * give_up_ms) and frees it. */
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
    conn_destroy(c);
}

/* Under conns_lock: the connection for (path, format), made if needed. */
static conn *conn_get(const char *path, const bh_socket_options *opt, const char *var) {
    for (conn *c = conns; c != NULL; c = c->next)
        if (strcmp(c->path, path) == 0 && c->opt.flags == opt->flags)
            return c;
    pthread_once(&atfork_once, install_atfork);
    conn *c = bh__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->wire = bh__calloc(BATCH, MAX_RECORD);
    c->encoded = bh__calloc(BATCH, 1);
    c->batch = bh__calloc(BATCH, sizeof(qitem));
    c->rbuf = bh__calloc(1, BH_WIRE_HEADER + 8 + (size_t)CHUNK * BH_WIRE_RESYNC_ENTRY);
    c->snap = bh__calloc(CHUNK, sizeof(kentry));
    c->snap_size = bh__calloc(CHUNK, sizeof(uint64_t));
    if (c->wire == NULL || c->encoded == NULL || c->batch == NULL || c->rbuf == NULL || c->snap == NULL ||
        c->snap_size == NULL) {
        bh__free(c->wire);
        bh__free(c->encoded);
        bh__free(c->batch);
        bh__free(c->rbuf);
        bh__free(c->snap);
        bh__free(c->snap_size);
        bh__free(c);
        return NULL;
    }
    c->snap_cap = CHUNK;
    c->opt = *opt;
    memcpy(c->path, path, strlen(path) + 1);
    snprintf(c->var, sizeof(c->var), "%s", var != NULL ? var : "");
    c->fd = -1;
    BENIGN_RACE(&c->fd, "sender only; fork_child in the child");
    BENIGN_RACE(&c->give_up_ms, "relaxed atomic deadline");
    c->next_stream = 1;
    c->backoff_ms = RETRY_MS;
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
    c->has_thread = 1;
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
 * flush_timeout_ms as a close is. (A child of fork() has only its own
 * connections on the list: fork_child took the parent's off.) conns_lock is
 * waited for at most 2 s, in case a thread exits the process while another
 * holds it. */
static void flush_at_exit(void) {
    struct timespec dl = deadline_in(2000u * 1000u);
    if (pthread_mutex_timedlock(&conns_lock, &dl) != 0)
        return;
    for (conn *c = conns; c != NULL; c = c->next)
        (void)flush_until(c, now_ms() + c->opt.flush_timeout_ms);
    pthread_mutex_unlock(&conns_lock);
}

static pthread_once_t exit_flush_once = PTHREAD_ONCE_INIT;
static void install_exit_flush(void) { (void)atexit(flush_at_exit); }

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
    conn *c = conn_get(path, &opt, var);
    /* The ring follows the connection's options (its first opener's). */
    if (c != NULL)
        s->ring = bh__calloc(c->opt.queue_capacity, sizeof(bh_event));
    if (c == NULL || s->ring == NULL) {
        int unused = c != NULL && c->refs == 0; /* made just now, for us */
        if (unused)
            conn_retire(c);
        pthread_mutex_unlock(&conns_lock);
        if (unused)
            conn_stop(c, now_ms());
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

bh_status bh_socket_reporter_open(const char *path, const bh_socket_options *opts, bh_reporter *out) {
    return bh__socket_reporter_open_env(NULL, path, opts, out);
}

int bh__is_socket_reporter(const bh_reporter *rep) { return rep != NULL && rep->report == report_cb; }

/* Waits until everything queued was sent, or the connection is down, or
 * deadline (CLOCK_MONOTONIC ms) passed. */
static bh_status flush_until(conn *c, uint64_t deadline) {
    pthread_mutex_lock(&c->lock);
    drain_all(c);
    c->flushers++;
    pthread_cond_broadcast(&c->wake);
    bh_status st = BH_OK;
    while (c->connected && !c->quiet && !c->forked && (!all_sent(c) || c->in_flight > 0)) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            st = BH_EBUSY;
            break;
        }
        struct timespec dl = deadline_in((deadline - now) * 1000u);
        pthread_cond_timedwait(&c->wake, &c->lock, &dl);
    }
    c->flushers--;
    pthread_mutex_unlock(&c->lock);
    return st;
}

bh_status bh_socket_reporter_flush(const bh_reporter *rep, uint32_t timeout_ms) {
    if (!bh__is_socket_reporter(rep))
        return BH_EINVAL;
    return flush_until(((stream *)rep->ctx)->c, now_ms() + timeout_ms);
}

void bh_socket_reporter_close(bh_reporter *rep) {
    if (!bh__is_socket_reporter(rep))
        return;
    stream *s = rep->ctx;
    conn *c = s->c;
    /* One deadline for the flush and for the sender's last sends: close
     * returns within flush_timeout_ms (plus one SLICE_MS), however slow the
     * server and however large the live set. */
    uint64_t deadline = now_ms() + c->opt.flush_timeout_ms;
    (void)flush_until(c, deadline);

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
    if (last && !c->forked)
        conn_retire(c); /* a forked one is on no list */
    pthread_mutex_unlock(&conns_lock);
    if (last)
        conn_stop(c, deadline);
    /* No reporter runs any more (the caller's promise): what is still parked
     * is freed. Relaxed: this thread is the last to touch the stream. */
    for (side_ev *x = (side_ev *)AO_load(&s->side); x != NULL;) {
        side_ev *next = x->next;
        bh__free(x);
        x = next;
    }
    shadow_free(&s->live);
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
    drain_side(s);
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
