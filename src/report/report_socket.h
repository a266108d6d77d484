/*
 * report_socket.h - the socket reporter's private header: events to bh-trackd,
 * off the application's threads. The state and the functions its files share
 * (prefix rs_; everything else in those files is static).
 *
 * Files, one concern each (each says what it owns and what it must never do):
 *   report_socket.c  open, close, flush, stats, fork and exit handling
 *   report_stream.c  a report on an application thread: ring, late list, drop
 *   report_shadow.c  each stream's shadow live set, the source of resyncs
 *   report_keyset.c  key sets (sender thread only)
 *   report_sender.c  the sender thread: batches, snapshot points, resync steps
 *   report_conn.c    connection I/O: connect, HELLO, bounded writes, ERROR
 *   report_tt.c      TT-Metal records and what the TT server is told
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

#ifndef BH_REPORT_SOCKET_H
#define BH_REPORT_SOCKET_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>

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
    uint64_t withheld; /* TT: not sent on purpose (rs_tt_admit), unlike dropped: not lost */
    /* ATOMIC: a stack of side_ev pushed without the lock. Whoever takes the
     * lock applies them (drain_side) before touching the stream, so the shadow
     * sees every event in an order consistent with causality. */
    AO_t side;
    AO_t side_lost; /* ATOMIC: events that could not even be pushed (host memory) */
    stream *next;
};

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
    unsigned tt_record;  /* TT: 72, 112 or 144 bytes a record (BH_TT_RECORD_SIZE); 0 native */
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

#define MAX_RECORD                                                                                           \
    (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN > BH_TT_RECORD_144 ? BH_WIRE_HEADER + BH_WIRE_EVENT_LEN : BH_TT_RECORD_144)

/* report_keyset.c */
const kentry *rs_key_get(const keyset *s, uint32_t device, uint64_t address);
int rs_key_add(keyset *s, uint32_t device, uint64_t address, uint32_t domain);
void rs_key_del(keyset *s, uint32_t device, uint64_t address);
void rs_key_clear(keyset *s);

/* report_shadow.c (under c->lock) */
int rs_shadow_put(stream *s, uint32_t device, uint64_t address, uint64_t size);
void rs_shadow_del(stream *s, uint32_t device, uint64_t address);
void rs_node_give(shadow *sh, snode *x);
void rs_migrate(shadow *sh, size_t buckets);
size_t rs_copy_chunk(conn *c, stream *s);
void rs_shadow_free(shadow *sh);

/* report_conn.c */
uint64_t rs_now_ms(void);
struct timespec rs_deadline_in(uint64_t us);
size_t rs_write_some(conn *c, int fd, const uint8_t *buf, size_t len, uint32_t timeout_ms);
int rs_write_all(conn *c, const uint8_t *buf, size_t len);
int rs_try_connect(conn *c);
void rs_disconnect(conn *c);
int rs_read_server(conn *c);
size_t rs_encode_event(const conn *c, uint8_t *p, uint32_t stream_id, const bh_event *ev);
int rs_send_stream_frame(conn *c, uint16_t type, uint32_t stream_id);
int rs_send_chunk(conn *c, uint32_t stream_id, size_t n);

/* report_tt.c (sender thread) */
/* The record size BH_TT_RECORD_SIZE asks for: 72 (unset or not 112/144), 112, 144. */
unsigned rs_tt_record_size(void);
size_t rs_tt_encode(const conn *c, uint8_t *p, const bh_event *ev);
int rs_tt_admit(conn *c, const bh_event *ev);
void rs_unwind_tt(conn *c, uint32_t n, size_t done, size_t records);
int rs_resync_finish_tt(conn *c);

/* report_sender.c */
void *rs_sender(void *arg);
int rs_all_sent(const conn *c);

/* report_stream.c */
void rs_report_cb(void *ctx, const bh_event *ev);
void rs_drain_side(stream *s);
void rs_drain_all(conn *c);

#endif
