/*
 * report_socket.h - the socket reporter's private header: events to bh-trackd,
 * off the application's threads. The state and the functions its files share
 * (prefix rs_; everything else in those files is static).
 *
 * Files, one concern each (each says what it owns and what it must never do):
 *   report_socket.c  open, close, flush, stats, fork and exit handling
 *   report_stream.c  a report on an application thread: shadow, number, ring
 *   report_ring.c    the event ring: memfd, producer and consumer ends
 *   report_shadow.c  each stream's shadow live set, the source of resyncs
 *   report_keyset.c  key sets (sender thread only)
 *   report_sender.c  the sender thread: rings offered, snapshot points, resync
 *                    steps, and draining rings the server does not take
 *   report_conn.c    connection I/O: connect, HELLO, RING, bounded writes, the
 *                    server's frames
 *   report_tt.c      TT-Metal records and what the TT server is told
 *
 * Owns: the process-wide connections (one per socket path, format and
 * send_timeout_ms: a stalled send ends the connection for all its streams,
 * so reporters that want different bounds do not share one), each with a
 * sender thread; and the streams (one per reporter, i.e. per registry),
 * each with its event ring and its shadow live set.
 * Must never: do socket I/O on a reporting thread, let a reporting thread wait
 * for anything but its stream's short critical section (or, by choice,
 * max_block_us for ring room), hold a lock for work that grows with the live
 * set, raise SIGPIPE, send to a server of another user, or lose an event
 * silently (every undelivered event is counted and covered by a resync).
 *
 * Events. A report takes its stream's lock, updates the shadow live set,
 * gives the event the stream's next number n (1, 2, 3, ...) and writes it to
 * the stream's ring (docs/protocol.md, "The event ring"): a memfd that
 * bh-trackd maps and drains itself, so no event crosses the socket. The ring
 * holds events in number order. One that finds the ring full (the consumer a
 * whole ring behind) keeps its number and is dropped and counted: the server
 * sees the gap and counts exactly as many lost. A server that takes no ring
 * (an older one, or TT's) is served by the sender thread, which drains the
 * ring itself and sends the events over the socket.
 *
 * Resync. The shadow is updated for every event, delivered or not. When
 * events were dropped or the connection is a reconnection, the sender takes a
 * snapshot point T: under each stream's lock it writes a MARK record to the
 * ring (a ring always keeps one record free for it) and opens a snapshot of
 * the shadow as of T. It then sends each stream's live set as it was at T,
 * RESYNC_BEGIN (naming the mark), chunks with each allocation's age, and
 * RESYNC_END, copying CHUNK entries per lock hold while the application goes
 * on. Entries changed after T are kept apart: a node inserted after T carries
 * the new snapshot epoch and is skipped; a node of T deleted before the
 * sender reached its bucket moves to the stream's owed list and is sent from
 * there. The server applies ring records before the mark before the BEGIN and
 * those after it after the END, so its view is exact again. Resyncs are
 * spaced (RESYNC_GAP_MS, or 8 times the last one's duration): a ring that
 * keeps overflowing costs drops, not a storm of live-set copies.
 *
 * Undelivered at the end. While disconnected, events wait in the ring (up
 * to its size; past it they are dropped and counted as above) for the next
 * connection, which drains them and resyncs; a flush (a close's, the
 * exit's) asks for that connection at once; a flush that finds none
 * returns BH_EBUSY. A stream that closes, or a process that exits, while no
 * server takes its ring (disconnected, or a ring the sender drains itself
 * and could not finish within the flush timeout) loses what is still there:
 * those events, those parked beside its lock (applied first), and at exit
 * the batch the sender is writing (given up, settle_in_flight), are counted
 * as dropped in the stream, and summed over the process, which says the sum
 * in one line on stderr at exit (a line per closed reporter would repeat
 * for a program that makes registries in a loop without a server). A ring
 * the server took is not lost at close: the server drains it to its head
 * (RING_CLOSE, or the connection's end); nor, after a connection that ended
 * without an ERROR while the server had the ring, the records up to
 * s->handed, which that server drains when it handles the end, however late
 * (a server killed meanwhile drains nothing: those are then lost uncounted,
 * and its successor gets the live set by resync).
 *
 * TT records have no resync (see rs_resync_finish_tt): the sender remembers
 * what the TT server was told, never re-announces anything, and after a loss
 * only sends the FREEs the server is owed.
 *
 * Refusals. A server that closes the connection with an ERROR frame is read,
 * reported once on stderr, and retried with back-off; one that refuses the
 * process for its live-set limit (BH_ENOMEM) gets an empty resync of every
 * stream (so it does not count what it holds as leaks) and nothing more.
 *
 * Locks: c->lock (connection state, the stream list) before s->lock (one
 * stream: shadow, numbers, ring head); a reporting thread takes only s->lock.
 * A reporting thread that cannot take s->lock within LOCK_WAIT_US parks its
 * event on the stream's side stack; every later holder applies the stack
 * first (rs_stream_lock), so a flush, which looks at every stream under its
 * lock, sees parked events as events still to deliver.
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

#define BATCH 256 /* events per send (when the sender drains a ring itself) */
/* The sender polls (a futex wake per report would cost more than the
 * report). The period starts at IDLE_MIN_MS after work and doubles while idle
 * up to IDLE_MAX_MS, so an idle process wakes ~16 times a second. A flush or
 * a close wakes it at once. */
#define IDLE_MIN_MS 2
#define IDLE_MAX_MS 64
#define RETRY_MS 100        /* reconnect period after a failed connect (cheap) */
#define BACKOFF_MAX_MS 5000 /* after a refusal the period doubles up to this */
#define RESYNC_GAP_MS 1000  /* least time between the starts of two resyncs */
#define CHUNK 4096          /* live-set entries copied per lock hold, and per RESYNC_CHUNK */
#define MIGRATE 1024        /* buckets the sender moves per lock hold while a shadow grows */
#define SLICE_MS 20         /* a blocked send looks at the close deadline this often */
#define EXIT_SETTLE_MS 200  /* at exit, a batch being written is waited for this long, then counted lost */
/* Events a ring holds unless set: 2^21 records (80 MiB of shared memory,
 * touched as it is written), 4.6 s of 450K events/s: enough for a server
 * on a machine loaded 8 times over to fall behind and catch up. */
#define RING_DEFAULT ((1u << 21) - 1)
/* What a close and the exit wait for queued events unless set
 * (flush_timeout_ms, BH_TRACK_FLUSH_MS), and the most that may be set from the
 * environment (an hour: a value past it is a typo more likely than a wish). */
#define FLUSH_DEFAULT_MS 2000u
#define FLUSH_MAX_MS (3600u * 1000u)
#define MAX_BLOCK_US_MAX (10u * 1000u * 1000u) /* BH_TRACK_MAX_BLOCK_US at most (10 s) */
#define SERVER_IN 4096                         /* buffered input from the server (its frames are small) */
/* A reporting thread spins for its stream's lock at most this long, then
 * parks the event for the next holder rather than sleep behind a preempted
 * one. */
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

/* ======================== Shadow live set (under s->lock) ======================== */

/* Chained buckets, so that a node stays in one bucket until it is deleted
 * (the resync walks buckets with a cursor while the set changes), and grown
 * incrementally: every put or delete moves two old buckets, the sender moves
 * MIGRATE per lock hold, so no caller ever rehashes the whole set. */
typedef struct snode {
    struct snode *next;
    uint64_t address, size;
    uint64_t since; /* CLOCK_MONOTONIC ms of its report (a resync sends its age) */
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

/* An event whose reporter could not take the stream's lock within
 * LOCK_WAIT_US (its holder was preempted: on a loaded machine it can hold it
 * for milliseconds). The next holder applies it first. */
typedef struct side_ev {
    struct side_ev *next;
    bh_event ev;
} side_ev;

/* Who drains a stream's ring on the current connection. */
enum { RING_NONE, RING_OFFERED, RING_SERVER, RING_SELF };

/* A closed stream's ring that the server of the current connection took or
 * was offered: its RING_CLOSE is still to be sent, or the server's answer
 * to its RING still to be read (a refusal makes its events lost, counted in
 * c->lost). Made with its stream, so that a close needs no memory and
 * queues every one (a fixed array of 16 left the rest mapped in the server,
 * counted against the process's ring limits, until the connection ended);
 * the sender frees it once nothing is due, or at the connection's end. */
typedef struct ring_gone {
    struct ring_gone *next;
    uint32_t id;
    int close_due;   /* RING_CLOSE not sent yet */
    int answer_due;  /* offered: its RING_ACK (or an ERROR) not read yet */
    uint64_t events; /* answer_due: events its ring held at the close */
} ring_gone;

struct stream {
    conn *c;
    uint32_t id;
    /* The producer's: everything below up to "sender". A spin lock: its
     * release is a plain store where a mutex's is a locked instruction that
     * also checks for sleepers (58 instructions of the report's 328 went to
     * pthread_mutex_trylock and _unlock). Reporting threads never sleep on
     * it anyway (lock_soon); the others wait in rs_stream_wait. */
    pthread_spinlock_t lock;
    uint8_t *ring;       /* the mapped ring (report_ring.c) */
    int ring_fd;         /* its memfd; -1: private memory (the sender drains it) */
    uint32_t cap;        /* records, a power of two */
    uint64_t head;       /* records written (the copy in the ring is published) */
    uint64_t tail_seen;  /* the consumer's tail when last read */
    uint64_t prefaulted; /* sender: records whose pages were made present */
    uint64_t n;          /* the last event number given */
    uint64_t mark;       /* the last mark id written */
    uint32_t max_block_us;
    uint32_t flush_ms; /* its reporter's flush_timeout_ms: what its close waits, whoever opened c */
    shadow live;
    /* The snapshot being sent (see the file comment). */
    int snap_active;     /* a snapshot point was taken and its END is not sent yet */
    int snap_begun;      /* RESYNC_BEGIN sent */
    uint32_t snap_epoch; /* bumped at every snapshot point */
    size_t snap_cursor;  /* buckets of live.tab below this were sent */
    snode *owed;         /* nodes of the snapshot deleted before the cursor reached them */
    uint64_t snap_mark;  /* the mark of the snapshot */
    /* Records before this position belong to the server of a connection
     * that ended without an ERROR while it had the ring: it drains them when
     * it handles that end (lose_connection), so they are not lost, whoever
     * else takes them or not. */
    uint64_t handed;
    uint64_t reported, dropped, sent;
    uint64_t withheld; /* TT: not sent on purpose (rs_tt_admit), unlike dropped: not lost */
    /* ATOMIC: a stack of side_ev pushed without the lock. Whoever takes the
     * lock applies them before touching the stream (rs_stream_lock; a report
     * after lock_soon), so the shadow and the numbers see every event in an
     * order consistent with causality, and a flush (rs_all_sent) or a close
     * never leaves one behind. */
    AO_t side;
    AO_t side_lost; /* ATOMIC: events that could not even be pushed (host memory) */
    /* sender thread, under c->lock: */
    int mode;            /* RING_*, on the current connection */
    ring_gone *gone;     /* queued on c->gone at its close if the server has its ring */
    uint64_t stale_mark; /* marks up to this one belong to resyncs that were cut short */
    stream *next;
};

struct conn {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* sender: urgent work; flushers: progress */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char var[32]; /* the environment variable that named path ("": the API) */
    /* flags and send_timeout_ms are the connection's (reporters that differ
     * in either get connections of their own); the other fields are the
     * first opener's and not used: each stream has its own ring size,
     * max_block_us and flush_ms. */
    bh_socket_options opt;
    int refs;   /* under conns_lock: open streams */
    conn *next; /* under conns_lock */
    pthread_t thread;
    int has_thread; /* a sender thread runs (0 in a child after fork) */
    /* ATOMIC: 0, or the CLOCK_MONOTONIC ms at which a closing connection
     * gives up sending; read by the sender inside blocked sends. */
    AO_t give_up_ms;
    /* ATOMIC: events were dropped: a snapshot point is due. Set by reporting
     * threads, taken by the sender (relaxed: it looks every turn, and the
     * shadow it then reads is under s->lock). */
    AO_t need_resync;
    /* ATOMIC: 1 when nobody will send this connection's events and no resync
     * will follow (forked, or refused and withdrawn): reports are counted as
     * dropped and go nowhere. Relaxed: a flag read under s->lock. */
    AO_t dead;
    /* under lock: */
    stream *streams;
    ring_gone *gone; /* rings of closed streams with a RING_CLOSE or an answer due */
    int fd; /* set and cleared under lock by the sender (the opener before it starts), read by it without; a
               socket being connected too (rs_try_connect) */
    int connected;
    int resyncing; /* a snapshot is being sent */
    int stop;
    int flushers;       /* threads in flush: resyncs are not spaced while one waits */
    int forked;         /* inherited by a child through fork() */
    int refused;        /* the server refused this process for its live-set limit */
    int quiet;          /* refused and withdrawn: nothing more is sent */
    int no_ring;        /* the server takes no rings (it said so, or it is a TT server) */
    uint64_t in_flight; /* events taken by the sender, not yet written */
    int exiting;        /* the process's exit flushed it: a batch lost from now on is added to lost */
    /* Events of streams that closed (or of a process that exits) before a
     * server took them: lost, summed over the process and said on stderr
     * at exit (rs_say_lost). */
    uint64_t lost;
    uint64_t resyncs, connects;
    uint64_t tries;       /* connection attempts made (a flusher waits for the next one's outcome) */
    uint64_t next_try_ms; /* when to connect again; UINT64_MAX: never (refused and withdrawn) */
    uint32_t backoff_ms;  /* next reconnect delay after a refusal */
    /* sender thread only: */
    int got_error;           /* GOT_*: the server closed the connection with an ERROR frame */
    uint64_t next_resync_ms; /* resync spacing */
    uint64_t resync_started_ms;
    uint64_t drain_sent_ms; /* when DRAIN was last sent for a flusher */
    unsigned said;          /* SAID_* messages already printed */
    pid_t server_pid;       /* the TT server the known set belongs to */
    unsigned tt_record;     /* TT: 72, 112 or 144 bytes a record (BH_TT_RECORD_SIZE); 0 native */
    keyset known;           /* TT: keys whose ALLOC the server got and no FREE yet */
    keyset live_at_t;       /* TT: the live set at the snapshot point */
    uint8_t *wire;          /* encoded batch, BATCH * MAX_RECORD */
    uint8_t *encoded;       /* TT: 1 for each batch item that was encoded (not skipped) */
    qitem *batch;           /* events being sent */
    uint64_t *batch_n;      /* their numbers */
    uint8_t *rbuf;          /* RESYNC_CHUNK_TIMED frame */
    kentry *snap;           /* keys copied from a snapshot chunk */
    uint64_t *snap_size;    /* sizes of the entries in snap */
    uint64_t *snap_since;   /* report times of the entries in snap */
    size_t snap_cap;
    uint8_t in[SERVER_IN]; /* the server's frames, parsed as they complete */
    size_t in_len;
};

enum { SAID_UNREACHABLE = 1, SAID_FOREIGN = 2, SAID_REFUSED = 4, SAID_ERROR = 8 };
/* c->got_error: none; an ERROR (retried with back-off); BH_EINVAL to a RING
 * (no rings from now on: reconnected at once). */
enum { GOT_NONE, GOT_ERROR, GOT_NO_RING };

#define MAX_RECORD                                                                                           \
    (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN > BH_TT_RECORD_144 ? BH_WIRE_HEADER + BH_WIRE_EVENT_LEN              \
                                                           : BH_TT_RECORD_144)

/* report_keyset.c */
const kentry *rs_key_get(const keyset *s, uint32_t device, uint64_t address);
int rs_key_add(keyset *s, uint32_t device, uint64_t address, uint32_t domain);
void rs_key_del(keyset *s, uint32_t device, uint64_t address);
void rs_key_clear(keyset *s);

/* report_shadow.c (under s->lock) */
int rs_shadow_put(stream *s, uint32_t device, uint64_t address, uint64_t size, uint64_t since);
void rs_shadow_del(stream *s, uint32_t device, uint64_t address);
void rs_node_give(shadow *sh, snode *x);
void rs_migrate(shadow *sh, size_t buckets);
size_t rs_copy_chunk(conn *c, stream *s);
void rs_shadow_free(shadow *sh);

/* report_ring.c */
uint64_t rs_clock_ms(void); /* CLOCK_MONOTONIC_COARSE ms: cheap, what records carry */
int rs_ring_make(stream *s, uint32_t cap);
void rs_ring_free(stream *s);
void rs_ring_prefault(stream *s); /* sender: pages ahead of the producer made present */
/* Under s->lock: writes one record; 0, or -1 when the ring has no room
 * (events leave one record free for a MARK). */
int rs_ring_put(stream *s, uint8_t kind, const bh_event *ev, uint64_t n, uint64_t time_ms);
uint64_t rs_ring_tail(const stream *s);
/* Sender, draining a ring itself: the record at the tail, if any, into *ev
 * and *n (returns its kind, BH_RING_*; 0: the ring is empty); rs_ring_pop
 * consumes it. */
uint8_t rs_ring_peek(const stream *s, bh_event *ev, uint64_t *n);
void rs_ring_pop(stream *s, uint64_t n);
/* Under s->lock: the event records (marks aside) not consumed yet. */
uint64_t rs_ring_events(const stream *s);

/* report_conn.c */
uint64_t rs_now_ms(void);
struct timespec rs_deadline_in(uint64_t us);
size_t rs_write_some(conn *c, int fd, const uint8_t *buf, size_t len, uint32_t timeout_ms);
int rs_write_all(conn *c, const uint8_t *buf, size_t len);
int rs_try_connect(conn *c);
/* Under c->lock (or alone): the connection ends. The server lets each of its
 * rings go after draining it, so the closed streams' ring_gone are freed. */
void rs_disconnect(conn *c);
void rs_gone_free(conn *c);
/* The line on stderr about n events lost (once, at exit). */
void rs_say_lost(uint64_t n);
int rs_read_server(conn *c);
size_t rs_encode_event(const conn *c, uint8_t *p, uint32_t stream_id, const bh_event *ev);
int rs_send_stream_frame(conn *c, uint16_t type, uint32_t stream_id);
int rs_send_begin(conn *c, uint32_t stream_id, uint64_t mark);
int rs_send_chunk(conn *c, uint32_t stream_id, size_t n);
int rs_send_ring(conn *c, stream *s);
stream *rs_stream_by_id(conn *c, uint32_t id);

/* report_tt.c (sender thread) */
/* The record size BH_TT_RECORD_SIZE asks for: 72 (unset or not 112/144), 112, 144. */
unsigned rs_tt_record_size(void);
size_t rs_tt_encode(const conn *c, uint8_t *p, const bh_event *ev);
int rs_tt_admit(conn *c, const bh_event *ev);
void rs_unwind_tt(conn *c, uint32_t n, size_t done, size_t records);
int rs_resync_finish_tt(conn *c);

/* report_sender.c */
void *rs_sender(void *arg);
/* Under c->lock: nothing waits to be delivered (rings consumed, nothing
 * parked, no resync due or under way). */
int rs_all_sent(conn *c);
/* Under c->lock: every ring consumed and nothing parked (a resync may be due). */
int rs_rings_consumed(conn *c);

/* report_stream.c */
void rs_report_cb(void *ctx, const bh_event *ev);
/* Takes s->lock and applies what was parked (in the order it was parked):
 * how every holder but fork_prepare takes a stream's lock. */
void rs_stream_lock(stream *s);
/* Takes s->lock as it is (nothing applied), spinning a while, then napping
 * between tries: for the threads that are not reporting (the sender, close,
 * flush, stats, fork_prepare), which may wait for a preempted holder. */
void rs_stream_wait(stream *s);
void rs_side_free(stream *s); /* nobody reports any more: what is parked is freed */

#endif
