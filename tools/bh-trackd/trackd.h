/*
 * trackd.h - bh-trackd's private header: the server's state and the functions
 * its files share (prefix td_; everything else in those files is static).
 *
 * Files, one concern each (each says what it owns and what it must never do):
 *   state.h     the server's state (td_server and what it holds), included here
 *   main.c      command line: options, usage, picks serve or a query command
 *   loop.c      the event loop: listening sockets, accept, signals, shutdown
 *   conn.c      one connection: input buffering, output buffering, close
 *   native.c    native frames (docs/protocol.md) into the tracker
 *   ring.c      event rings (memfds of client streams) drained into the tracker
 *   ring_fds.c  descriptors that come with a connection's bytes (SCM_RIGHTS)
 *   closer.c    descriptors clients passed, closed by a thread of its own
 *   tt.c        TT-Metal records (--compat-tt): record size, answers
 *   tt_table.c  TT's server's bookkeeping (tt_table.h): its QUERY answers
 *   tt_devices.c  the devices DEVICE_INFO describes (--tt-devices)
 *   liveness.c  client processes: names, orphans, leaks when a process is gone
 *   peer.c      peers whose pid this server cannot see: their process keys
 *   render.c    the one renderer: stats and dump (text, JSON)
 *   fair.c      the order of the stats rows, without sorting every group
 *   summary.c   the --summary file, written atomically, off the loop
 *   log.c       the log stream and its rate limit
 *   query.c     `bh-trackd stats|dump`: the client side of a QUERY
 *   web.c       --http: routes, the timeline of live bytes, the dashboard page
 *   http.c      libmicrohttpd driven from the event loop (http.h)
 *   metrics.c   the Prometheus exposition (metrics.h)
 *
 * Not thread-safe: one event loop owns all of it (closer.c's thread shares
 * only its own queue, under its own lock).
 */
#ifndef BH_TRACKD_H
#define BH_TRACKD_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "bufhandle/bufhandle.h"
#include "metrics.h"
#include "sat.h"
#include "track.h"
#include "wire.h"

#define TD_MAX_ALLOW_UIDS 16
#define TD_MAX_NAMES                                                                                         \
    256 /* pid -> program name: past this many, a new name takes the slot of the process gone longest; with  \
           none gone the table grows (it holds every process not counted gone) */
#define TD_MAX_HTTP_HOSTS 16    /* --http-allow-host names */
#define TD_HTTP_CONNECTIONS 64u /* at most, fewer when descriptors are short */

/* Fixed limits (docs/protocol.md, "Limits and security", lists them all). */
#define TD_MAX_OUT (4u << 20)         /* unsent output per connection; past it the connection is closed */
#define TD_COMPAT_HOLD_OUT (1u << 20) /* compat: unsent replies past which its input is not read */
#define TD_READ_SLICE (256u << 10)    /* bytes read from one connection per loop turn (fairness) */
#define TD_ACCEPT_SLICE 64            /* connections accepted per loop turn */
#define TD_REPLY_LIMIT                                                                                       \
    (BH_WIRE_MAX_PAYLOAD -                                                                                   \
     (64u << 10)) /* rows of a reply (the rest counted as omitted); 64 KiB left for leaks and totals */
#define TD_LOG_DUMP_LIMIT (64u << 10) /* of a DUMP_REMAINING in the log */
#define TD_SUMMARY_LIMIT (256u << 20) /* the --summary file; further rows counted in omitted_clients */
#define TD_DUMP_INTERVAL_MS 10000u    /* one DUMP_REMAINING excerpt in the log per this, for all clients */
#define TD_TICK_MS 100                /* timers: timeouts, orphans, periodic summary */
#define TD_LOG_BURST 100              /* lines per message per TD_LOG_WINDOW_MS; the rest are counted */
#define TD_LOG_WINDOW_MS 60000u
#define TD_LOG_KINDS 64 /* distinct messages the rate limit tells apart */
#define TD_SCM_MAX_FD                                                                                        \
    253 /* descriptors one message can carry (the kernel's SCM_MAX_FD): control buffers take them all, as    \
           one cut would be closed by the kernel in the reading thread */
#define TD_FD_SLACK                                                                                          \
    8u /* descriptors kept free beyond what is counted (a library opening one of its own): fds.c */
#define TD_RING_FDS 4                  /* descriptors a connection may have waiting for their RING frame */
#define TD_RING_MAX 64                 /* rings of one process */
#define TD_RING_MAX_BYTES (1ull << 30) /* what one process's rings may map */
#define TD_RING_UID_FACTOR 4u /* rings of one uid: this many per connection it may have (256 by default) */
#define TD_RING_POLL_MS 4     /* rings are polled this often while attached and idle */
#define TD_RING_SLICE 4096u   /* records drained from one connection's rings per loop turn */
#define TD_RING_TURN 16384u   /* records drained from all rings per loop turn */
#define TD_RING_STOP                                                                                         \
    (1u << 20)             /* records drained from all rings at shutdown; the rest stay for the next server */
#define TD_RESYNCS_OPEN 16 /* streams one connection may resync at once; past it, refused */
#define TD_GONE_SLICE                                                                                        \
    4096u /* live allocations of gone processes dropped per loop turn (as leaks); the rest on the next turns \
           */
#define TD_GOING_SHOWN 16    /* processes being dropped listed in stats (all are counted) */
#define TD_RING_WAIT_INPUT 1 /* c->ring_wait: input held until its rings are drained so far */
#define TD_RING_WAIT_GONE 2  /* c->ring_wait: the connection ended, its rings are still drained */

#define TD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TD_LEAKS_KEPT 256     /* the latest leaks, listed in stats and the summary */
#define TD_OVERFREED_SHOWN 10 /* addresses in the "freed more often than allocated" list */
#define TD_LEAKS_SHOWN 10     /* the latest leaks in the text stats' "leaked" list */
#define TD_DEPARTED_GROUPS                                                                                   \
    65536u /* groups gone processes keep until --forget-ms; past it the oldest go early */

/* ======================== State ======================== */

#include "state.h" /* the server's state: its types and td_server */

uint64_t td_now_ms(void);

/* ======================== activation.c ======================== */

/* Takes the listening sockets systemd passed (names native, compat, http)
 * into act_*; none passed: all -1, returns 0. -1 (logged) on a descriptor it
 * cannot place. */
int td_take_activated(td_server *s);

/* ======================== log.c ======================== */

/* One line "TIMESTAMP LEVEL message", at most TD_LOG_BURST per format string
 * per TD_LOG_WINDOW_MS; the rest are counted and reported once the window ends. */
void td_log(td_server *s, int level, const char *fmt, ...) TD_PRINTF(3, 4);
/* Opens path for appending: never through a symbolic link, only a regular
 * file (created with mode 0600) or a character device. NULL (errno set) if not. */
FILE *td_open_log(const char *path);
/* Reports held-back lines of windows that ended (the loop's tick), or of
 * all windows (all set: at exit). */
void td_log_tick(td_server *s, int all);
/* SIGHUP: opens --log again (after rotation); keeps the old stream on failure. */
void td_reopen_log(td_server *s);

/* ======================== conn.c ======================== */

#define TD_ERROR_FRAME_MAX (BH_WIRE_HEADER + 4 + 200)

void td_flush_out(td_server *s, td_client *c);
void td_send_bytes(td_server *s, td_client *c, const void *p, size_t n);
void td_send_frame(td_server *s, td_client *c, uint16_t type, const void *payload, uint32_t len);
/* An ERROR frame (code, message cut to 200 bytes) into out
 * (TD_ERROR_FRAME_MAX bytes); returns its size. */
size_t td_error_frame(uint8_t *out, bh_status code, const char *msg);
/* An ERROR frame (native only), then the connection closes. */
void td_send_error(td_server *s, td_client *c, bh_status code, const char *msg);
/* No more input from c; it closes once its output is out (or times out). */
void td_set_closing(td_server *s, td_client *c);
/* What epoll waits for on c, after its state changed (out of epoll while
 * c->ring_wait, back in after). */
void td_rewatch(td_server *s, td_client *c);
void td_malformed(td_server *s, td_client *c, const char *why);
/* Logs or refuses what the tracker answered for one ALLOC/FREE/resync entry. */
void td_track_result(td_server *s, td_client *c, bh_track_result r, const char *kind, uint32_t domain,
                     uint64_t address);
/* Parses what is buffered; keeps a partial frame for the next read. */
void td_parse_input(td_server *s, td_client *c);
/* Reads at most TD_READ_SLICE bytes, parsing as it goes. */
void td_read_client(td_server *s, td_client *c);
/* A held compat connection (c->held) after events: its replies are read
 * down to half the mark, or its peer hung up (its replies dropped). 1 if it
 * is to be read again now (what it sent meanwhile is parsed first). */
int td_compat_resume(td_server *s, td_client *c, uint32_t events);
/* Marks c dead if it overstayed a handshake, a half-sent frame or its last reply. */
void td_check_timeouts(td_server *s, td_client *c, uint64_t now);
void td_close_client(td_server *s, td_client *c);

/* ======================== native.c / tt.c ======================== */

void td_native_frame(td_server *s, td_client *c, uint16_t type, const uint8_t *p, uint32_t len);
/* The tracker's resync of stream began on c (RESYNC_BEGIN, or a ring's mark
 * taken for it). */
void td_native_resync_began(td_server *s, td_client *c, uint32_t stream);
/* RING_CLOSE of stream: a resync of it c began is given up (as td_native_cut). */
void td_native_cut_stream(td_server *s, td_client *c, uint32_t stream);
/* c's connection ended: every resync it began and did not end is given up
 * (bh_track_resync_cut), counted and logged. Idempotent. */
void td_native_cut(td_server *s, td_client *c);
#define TD_TT_UNREADABLE 1u /* c->tt_size of a stream of no known record size: dropped unread */
/* One record of the connection's size (c->tt_size) at r. */
void td_tt_record(td_server *s, td_client *c, const uint8_t *r);
/* Compat input at p (avail bytes; first: p is the start of c->in): the bytes
 * used (one record, or everything of an unreadable stream), 0 until a whole
 * record is there. */
size_t td_tt_input(td_server *s, td_client *c, const uint8_t *p, size_t avail, int first);
/* The connection's record size: known, or detected from what is buffered
 * (at_rest: the peer has nothing more in flight) and checked against the
 * configured one. 0 while it cannot tell yet; TD_TT_UNREADABLE when reading
 * on would misparse. */
size_t td_tt_record_size(td_server *s, td_client *c, int at_rest);
/* 72, 112 or 144 when the len bytes at p prove that record size, 0 when they
 * do not yet, -1 when the first record's header is not TT's. */
int td_tt_detect(const uint8_t *p, size_t len, int at_rest);
/* --tt-devices SPEC / --tt-devices-file FILE: 0, or -1 with err filled. */
int td_tt_devices_parse(td_tt_devices *d, const char *spec, char *err, size_t cap);
int td_tt_devices_file(td_tt_devices *d, const char *path, char *err, size_t cap);
/* The DEVICE_INFO_RESPONSE fields for device (-1: all) into out, a record of rec bytes. */
void td_tt_device_info(const td_server *s, int32_t device, size_t rec, uint8_t *out);

/* ======================== ring.c / ring_fds.c ======================== */

/* recv(2) of a connection's bytes that keeps the descriptors sent with them
 * (at most TD_RING_FDS waiting, within the connection caps; more are closed). */
ssize_t td_ring_recv(td_server *s, td_client *c, void *buf, size_t len);
/* RING, DRAIN, RING_CLOSE. */
void td_ring_frame(td_server *s, td_client *c, uint16_t type, const uint8_t *p, uint32_t len);
/* RESYNC_BEGIN naming a mark: the stream's ring is drained up to it (in
 * slices, the connection's input held meanwhile), then the tracker's resync
 * begins and the ring is held until RESYNC_END. 0, or -1 (the client was
 * refused). */
int td_ring_begin(td_server *s, td_client *c, uint32_t stream, uint64_t mark);
void td_ring_end(td_client *c, uint32_t stream);
/* One slice of the rings (TD_RING_SLICE per connection, TD_RING_TURN in
 * all), then whatever waited for them and is done; 1 if any had records, 2
 * if more is waiting. Also moves parked descriptors to the closer. */
int td_rings_run(td_server *s);
/* The loop's wait: cap_ms, or less while rings are attached. */
int td_rings_timeout(const td_server *s, int cap_ms);
/* The connection ends: its waiting descriptors are closed, its rings
 * are drained up to their heads now and let go. 0 when done; 1 while they
 * are still being drained (in slices, by td_rings_run, which then calls
 * td_close_client again). */
int td_ring_close_client(td_server *s, td_client *c);

/* ======================== closer.c ======================== */

/* Closes fd, a descriptor that is not a memfd a connection of uid passed, on
 * the closer thread: never blocks (a full queue parks it, counted). */
void td_close_passed(td_server *s, uid_t uid, int fd);
/* Closes a connection's socket (accepted, refused or done): on the loop if
 * nothing is queued in it, else on the closer thread (what a peer passed
 * with input never read would be released by this close). */
void td_close_conn(td_server *s, int fd);
/* Parked descriptors into the queue as it empties: every loop turn. */
void td_closer_run(void);
/* The loop's wait: cap_ms, or 1 ms while descriptors are parked (the queue
 * takes them as it empties, which nothing else wakes the loop for). */
int td_closer_timeout(int cap_ms);
/* Passed descriptors not closed yet, of *uid (NULL: of everybody), with
 * those the closer thread took out of them and reserved for a take under
 * way: they count against the connection caps, like the connections
 * themselves. */
uint64_t td_closing_of(const uid_t *uid);
/* Of those, the ones reserved for a take under way (not open yet). */
uint64_t td_closer_reserved(void);

/* ======================== liveness.c ======================== */

/* The program name of pid ("" if unknown, "(departed)" for pid 0). */
const char *td_name_of(const td_server *s, pid_t pid);
/* Names a client that sent none (compat) after its process's comm. */
void td_name_from_proc(td_server *s, pid_t pid);
/* Replaces what logs and JSON cannot show verbatim with '?'. */
void td_printable(char *name);
/* Gone processes older than --forget-ms leave the client list (their
 * figures are kept under pid 0). */
void td_check_departed(td_server *s);
void td_remember_name(td_server *s, pid_t pid, const char *name);
/* 1 while a reporter connection of pid is open. */
int td_pid_connected(const td_server *s, pid_t pid);
/* Processes with a reporter connection open. */
uint64_t td_clients_connected(const td_server *s);
/* c's last connection of its process closed: wait for it to end or come back. */
void td_orphan_add(td_server *s, const td_client *c);
/* Orphans that ended or did not come back within --grace-ms have leaked what they held. */
void td_check_orphans(td_server *s);
void td_free_orphans(td_server *s); /* and the departed, the drops under way and the names */
/* The process is gone: everything it still held leaked. Its live set is
 * dropped in slices (td_gone_run); until then it is "going": listed with
 * what it has still to drop, which counts as live everywhere. A process of
 * the same pid gone again first finishes the earlier drop. start: its
 * process's start time (0: unknown). */
void td_process_gone(td_server *s, pid_t pid, uint64_t start);
/* c said who it is and its process is the one at its pid now (c->start):
 * connections and an orphan of that pid that are of an earlier process
 * there (a pid the kernel reused) are that process's end, not c's. */
void td_pid_incarnation(td_server *s, td_client *c);
/* One slice of the drops under way: TD_GONE_SLICE live allocations at most
 * (a process's end counts as one); each process done is counted gone
 * (processes_gone) and logged. Every loop turn. */
void td_gone_run(td_server *s);
/* Every drop under way, to its end (shutdown: the summary's counts are final). */
void td_gone_finish(td_server *s);
/* The loop's wait: 0 while a drop is under way, else cap_ms. */
int td_gone_timeout(const td_server *s, int cap_ms);
/* The drop under way of pid, or NULL. */
const td_going *td_going_of(const td_server *s, pid_t pid);

/* ======================== peer.c ======================== */

/* Process keys of peers whose pid this server cannot see start here: bit 30,
 * never a pid (PID_MAX_LIMIT is 2^22), so the tracker and every table keyed
 * by pid keep them apart from real pids. */
#define TD_UNVERIFIED_BASE 0x40000000u
static inline int td_unverified(pid_t pid) { return (uint32_t)pid >= TD_UNVERIFIED_BASE; }
/* A reporter (at HELLO: the pid and start time it states, 0: none) or a
 * compat peer (before its first record: the pid that record states, 0). If c->pid (SO_PEERCRED) is not this
 * server's view of that process, c->pid becomes its unverified key: the
 * stated process's (pid, start, uid), or one of its own. 0, or -1 (ENOMEM). */
int td_peer_identify(td_server *s, td_client *c, uint32_t stated, uint64_t start);
/* The pid to show for a process key: the stated pid of an unverified one. */
pid_t td_shown_pid(const td_server *s, pid_t pid);
/* The same as text, "4242" or "4242*" (unverified), in buf. */
const char *td_pid_text(const td_server *s, pid_t pid, char buf[16]);
/* c's pid is another process's now (liveness.c): c gets a key of its own,
 * as a peer that states no start time. 0, or -1 (ENOMEM). */
int td_peer_detach(td_server *s, td_client *c);
/* CLOCK_BOOTTIME in clock ticks, the unit of a process's start time in /proc. */
uint64_t td_boot_ticks(void);
/* The process left the client list: its key may go to another. */
void td_peer_forget(td_server *s, pid_t pid);
void td_peer_free(td_server *s);

/* ======================== render.c ======================== */

typedef struct td_strbuf {
    char *p;
    size_t len, cap;
    size_t limit; /* 0: none; else td_sb_printf refuses to grow past it */
    int failed;   /* out of memory: the text is incomplete */
} td_strbuf;

/* Appends; -1 (nothing appended) past b->limit or out of memory. */
int td_sb_printf(td_strbuf *b, const char *fmt, ...) TD_PRINTF(2, 3);

/* Rows past limit bytes (0: TD_REPLY_LIMIT) are counted as omitted, so a
 * reply always fits one frame. */
void td_render_stats(td_server *s, td_strbuf *b, int json, size_t limit);
void td_render_dump(td_server *s, td_strbuf *b, int json, size_t limit);
/* The TT figures in stats, text or the JSON member "tt" (tt_render.c). */
void td_tt_render(td_server *s, td_strbuf *b, int json);
/* A domain as its device and memory kind: "D KIND" columns (text) or
 * "device":D,"kind":"K" (JSON). */
void td_render_domain(td_strbuf *b, int json, uint32_t domain);
/* A domain for a log line ("device D kind K"), into buf. */
const char *td_domain_text(char *buf, size_t cap, uint32_t domain);
/* ======================== fair.c ======================== */

/* A group for td_each_group_fair; nonzero stops the walk. */
typedef int (*td_group_fn)(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c);
/* Calls fn for the tracker's (stream, device) groups in the stats rows'
 * fair order (every process's biggest before any process's second; each
 * round biggest first) until fn returns nonzero; returns the groups not
 * handed out then (0 when fn never stopped). O(groups) plus O(log groups)
 * per group handed out, never a sort of all of them. */
uint64_t td_each_group_fair(td_server *s, td_group_fn fn, void *ctx);
/* The stats rows: td_each_group_fair chooses them (fn renders each into b;
 * a row it keeps makes b grow, one past the limit leaves b as it was), then
 * the rows kept are put biggest first (live bytes, then peak bytes): a reply
 * cut at its limit shows what the fair order chose, in the order a reader
 * expects. sep: what fn put before every row but the first ("," in JSON).
 * Without memory for the sort, the rows stay in the fair order. */
uint64_t td_each_group_shown(td_server *s, td_strbuf *b, const char *sep, td_group_fn fn, void *ctx);
void td_fair_free(td_server *s);

/* ======================== summary.c ======================== */

/* The stats JSON into --summary, atomically (temporary file, then rename).
 * 0, or -1 (logged). */
int td_write_summary(td_server *s);
/* The same off the loop: a forked copy of the server writes it (one at a
 * time; a periodic write due while one runs is skipped and counted). */
void td_summary_start(td_server *s);
/* Collects a finished writer (wait: waits for it), logging its failure. */
void td_summary_reap(td_server *s, int wait);

/* ======================== render.c (continued) ======================== */

/* The live allocations from offset on, at most limit of them (paged /api/live). */
void td_render_dump_page(td_server *s, td_strbuf *b, uint64_t offset, uint64_t limit);
/* Every entry the tracker has for address (any client, device); costs the
 * groups and the bounded history, not the live set. */
void td_render_history(td_server *s, td_strbuf *b, uint64_t address, int json);
/* A number as every output prints it: decimal, or hexadecimal after 0x.
 * 0, or -1 (anything else: a sign, blanks, octal, an overflow). */
int td_parse_u64(const char *v, uint64_t *out);
/* Memory kind name of a domain, shared by every output. */
const char *td_kind_name(uint32_t domain, char buf[16]);

/* ======================== web.c ======================== */

/* Opens --http (if set) and adds it to the loop's epoll under tag. 0, or -1 (logged). */
int td_web_open(td_server *s, void *tag);
/* The loop's epoll timeout: at most cap_ms, less when HTTP or a sample is due. */
int td_web_timeout(td_server *s, int cap_ms);
/* HTTP work that is ready, and the timeline sample when due; never blocks. */
void td_web_run(td_server *s);
void td_web_close(td_server *s);

/* ======================== loop.c / query.c ======================== */

/* Serves until SIGINT/SIGTERM; the process exit status. */
int td_serve(td_server *s);
/* A uid's connections plus the ring descriptors they hold waiting. */
uint64_t td_descriptors_of(const td_server *s, uid_t uid);
/* At --max-connections: clients, ring descriptors waiting for their frame
 * and descriptors waiting to be closed all count (loop.c). */
int td_conns_full(const td_server *s);

/* ======================== fds.c ======================== */

/* Start: phase 0 raises the soft descriptor limit to the hard one (before
 * anything is opened); phase 1, before libmicrohttpd starts, sizes its
 * connections; phase 2, with every fixed descriptor open, counts them and
 * fits --max-connections. 0, or -1 (no room for a connection, logged). */
int td_fds_fit(td_server *s, int phase);
/* The descriptors open in this process now (/proc), or -1. */
long td_fds_open(void);
/* The soft RLIMIT_NOFILE (UINT64_MAX: none). */
uint64_t td_fds_limit(void);
/* A read of up to len bytes of c into buf, as far as the descriptors its
 * input carries have room (td_ring_recv's result and errno) with *v
 * TD_FDS_READ; or no read: *v TD_FDS_NONE (errno says why, as the read
 * would: nothing there now), TD_FDS_WAIT (the closer's backlog takes the
 * room: starve it) or TD_FDS_REFUSE (its input carries descriptors nothing
 * would make room for). Fewer bytes than len when only those carry no
 * descriptor. */
typedef enum { TD_FDS_READ, TD_FDS_NONE, TD_FDS_WAIT, TD_FDS_REFUSE } td_fds_verdict;
ssize_t td_fds_recv(td_server *s, td_client *c, void *buf, size_t len, td_fds_verdict *v);
/* A Unix socket of a peer's (a connection, one passed) is read with its
 * byte out of band in line, so the descriptors riding with it are seen. */
void td_fds_oob_inline(int fd);
/* The closer thread's side of td_fds_recv's lock (1 take, 0 release): held
 * while it reserves for a take. */
void td_fds_intake(int take);

/* QUERY kinds: stats, dump, and the history of one address (docs/protocol.md). */
enum { TD_QUERY_STATS = 1, TD_QUERY_DUMP = 2, TD_QUERY_HISTORY = 3 };
/* `bh-trackd stats|dump|history`: what is a TD_QUERY_* (address: history's);
 * gives up after timeout_ms. The process exit status. */
int td_query(const char *path, uint16_t what, int json, uint64_t address, uint64_t timeout_ms);

#endif
