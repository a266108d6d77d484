/*
 * state.h - bh-trackd's state: td_server and the types it holds (clients,
 * connections, names, leaks, counters), shared by every file through
 * trackd.h.
 *
 * Owns: the layouts. Must never: be included on its own (trackd.h includes
 * it where the includes and limits it builds on are declared), or declare a
 * function that is not a one-line accessor of these types.
 */
#ifndef BH_TRACKD_STATE_H
#define BH_TRACKD_STATE_H

typedef struct td_ring td_ring;

typedef struct td_client {
    int fd;
    int compat;       /* TT records */
    unsigned tt_size; /* compat: 72, 112 or 144 once known, 0 while detecting, TD_TT_UNREADABLE */
    int control;      /* a stats/dump query connection */
    int hello;        /* native: HELLO received */
    pid_t pid;
    uid_t uid;
    char name[BH_WIRE_MAX_NAME + 1];
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_off;
    int closing;         /* close once out is flushed (or the closing timeout passed) */
    int dead;            /* close now, unsent output dropped */
    int held;            /* compat: not read while its unsent replies are over TD_COMPAT_HOLD_OUT */
    int deaf;            /* compat: reads no more replies (a send failed): they are dropped, its input read */
    uint64_t since_ms;   /* accepted */
    uint64_t accepted;   /* accepted, in clock ticks since boot (td_boot_ticks): its process started before */
    uint64_t start;      /* its process's start time (/proc, clock ticks since boot) when it said who it is;
                            0: unknown (a peer whose pid this server cannot see, or already ended) */
    uint64_t partial_ms; /* a frame or record started arriving (0: none pending) */
    uint64_t closing_ms; /* closing was set */

    /* native: the streams whose resync began (the tracker's) and whose END
     * has not come (the library's reporter resyncs one at a time) */
    uint32_t resyncs[TD_RESYNCS_OPEN];
    unsigned nresyncs;

    td_ring *rings;       /* native: the event rings it handed over (ring.c) */
    int fds[TD_RING_FDS]; /* descriptors received, waiting for their RING frame */
    int nfds;
    int ring_wait; /* ring.c: 0 or TD_RING_WAIT_*: out of epoll, no timeouts, input not parsed */
    int starved;   /* not read while the descriptors its input carries have no room (td_fds_recv) */
    struct td_client *next;
} td_client;

/* A process's program name (from HELLO, or /proc for compat clients). */
typedef struct td_name {
    pid_t pid;
    uint64_t gone_ms; /* when it was counted gone (its slot may be reused then), 0: not gone */
    char name[BH_WIRE_MAX_NAME + 1];
} td_name;

/* A process whose last connection closed: leaks are reported when it is gone. */
typedef struct td_orphan {
    pid_t pid;
    uint64_t since_ms;
    uint64_t ticks, start; /* when it was left, in clock ticks since boot; its start time (0: unknown) */
    struct td_orphan *next;
} td_orphan;

/* One leaked allocation, kept for stats and the summary (the tracker drops it). */
typedef struct td_leak {
    pid_t pid;
    uint32_t stream, domain;
    uint64_t address, size;
    uint64_t age_ms; /* how long it had been live when its process was gone */
    int unverified;  /* pid is what its client stated (peer.c) */
    char name[32];
} td_leak;

struct bh_http;
struct td_timeline;

/* A process gone whose live allocations are still being dropped (as leaks,
 * TD_GONE_SLICE per loop turn): liveness.c. Oldest first. */
typedef struct td_going {
    pid_t pid;
    uint64_t start;        /* its start time (0: unknown), for its departed entry */
    uint64_t since_ms;     /* it was seen gone: its leaks' age is taken then */
    uint64_t total, leaks; /* live allocations it had; leaks among those dropped so far */
    struct td_going *next;
} td_going;

/* A process that is gone: its figures age out of stats after --forget-ms. */
typedef struct td_departed {
    pid_t pid;
    uint64_t since_ms;
    uint64_t ticks, start; /* the same in clock ticks since boot; its start time (0: unknown) */
    size_t groups;         /* its (stream, device) groups when it went, at least 1 */
    struct td_departed *next;
} td_departed;

enum td_level { TD_INFO, TD_WARN, TD_ERROR };

/* One rate-limit slot per distinct message (its format string). */
typedef struct td_rate {
    const char *fmt;
    uint64_t window_ms;
    uint64_t lines, suppressed;
    char sample[128]; /* the first line held back in this window, as it would have read */
} td_rate;

/* A listening socket and what proves it is still ours. */
typedef struct td_listener {
    const char *path;
    int fd, lockfd;
    dev_t dev;
    ino_t ino;
} td_listener;

/* --tt-devices: what DEVICE_INFO_RESPONSE says (tt_devices.c); count 0: no devices. */
typedef struct td_tt_devices {
    uint32_t count, arch, dram_channels, l1_per_core;
    uint64_t dram, l1; /* bytes per device */
} td_tt_devices;

struct td_tt_table;
struct td_peers;
struct td_fair;

typedef struct td_server {
    /* configuration (main.c) */
    const char *socket_path, *compat_path, *summary_path, *log_path;
    int compat;
    unsigned tt_size; /* --compat-record-size: 72, 112, 144, or 0 (detect per connection) */
    td_tt_devices tt_devs;
    uint64_t max_live, max_groups;
    uid_t allow[TD_MAX_ALLOW_UIDS];
    int nallow;
    uint64_t grace_ms, handshake_ms, frame_ms, summary_ms;
    uint64_t forget_ms; /* --forget-ms: a gone process's figures join "(departed)" after this */
    uint64_t max_conns, max_conns_per_uid;
    /* runtime */
    FILE *log;
    int epfd, sigfd, spare;
    td_listener native, tt;
    int act_native, act_compat, act_http; /* from the service manager (activation.c), or -1 */
    bh_track *track;
    td_client *clients;
    uint64_t nclients;
    td_orphan *orphans;
    td_going *going, *going_last;          /* processes gone still being dropped, oldest first (liveness.c) */
    uint64_t going_ms;                     /* the since_ms of the one being dropped: its leaks' age */
    td_departed *departed, *departed_last; /* oldest first */
    size_t departed_groups;                /* their groups, bounded by TD_DEPARTED_GROUPS */
    struct td_tt_table *tt_table;          /* TT's server's view of the compat clients (tt_table.h) */
    struct td_peers *peers;                /* unverified process keys (peer.c), NULL until the first */
    struct td_fair *fair;                  /* fair.c's scratch, NULL until the first stats */
    uint64_t next_summary_ms;
    uint64_t last_dump_ms, dumps_logged, dumps_skipped; /* DUMP_REMAINING excerpts (tt.c) */
    pid_t summary_pid;                                  /* the summary writer running, or 0 */
    uint64_t summaries_skipped;
    /* counters */
    uint64_t connections, reporter_connections, rejected, malformed, resyncs, compat_records,
        unsupported_records, compat_ignored, limit_disconnects, refused, timeouts, output_overflows,
        processes_gone;        /* client processes seen gone (their leaks counted): what tests wait for */
    uint64_t unverified_peers; /* reporter connections whose pid this server cannot see (peer.c) */
    uint64_t resyncs_cut;      /* resyncs begun whose connection ended before their END (native.c) */
    uint64_t drop_slices;      /* loop turns that dropped live allocations of gone processes */
    /* ring.c: rings taken and refused, records drained, events their gaps lost (saturating) */
    uint64_t rings_attached, rings_refused, ring_records, ring_events_lost;
    uint64_t ring_fds; /* descriptors waiting for their RING frame: count as connections */
    uint64_t fds_refused, closes_parked, closes_lost; /* closer.c: not memfds; queue full; no memory */
    int rings_busy;      /* the last drain: 0 nothing, 1 records, 2 a full slice (more waiting) */
    uint64_t ring_rotor; /* which connection's rings go first this turn (ring.c) */
    int stopping;        /* the loop is over: rings left are drained at once */
    int tt_waiting;      /* the compat listener is not accepted from: the connection cap is reached */
    int starving;        /* some connection is starved (td_fds_recv): the tick reads it again */
    uint64_t compat_holds,
        compat_waits; /* compat input held for unread replies; accepts put off at the cap */
    td_rate rates[TD_LOG_KINDS];
    /* pid -> program name, from HELLO (liveness.c): TD_MAX_NAMES, more while
     * more processes than that are not gone */
    td_name *names;
    size_t nnames, names_cap;
    /* leaks: a ring of the latest TD_LEAKS_KEPT */
    td_leak leaks[TD_LEAKS_KEPT];
    uint64_t nleaks; /* recorded so far; the ring holds the last min(nleaks, TD_LEAKS_KEPT) */
    /* --http (web.c) */
    const char *http_spec;                     /* NULL: off */
    const char *http_hosts[TD_MAX_HTTP_HOSTS]; /* --http-allow-host */
    int nhttp_hosts;
    unsigned http_conns; /* HTTP connections, within the descriptor reservation */
    /* descriptors (fds.c) */
    uint64_t fd_limit;         /* the soft RLIMIT_NOFILE, raised to the hard one at start */
    uint64_t fd_base;          /* open at start, once every fixed one was (counted) */
    int fd_reserve;            /* the caps keep a message's TD_SCM_MAX_FD apart (the limit has room) */
    bh_metrics_limits metrics; /* per-domain and per-client series in /metrics before "other" */
    struct bh_http *http;
    struct td_timeline *timeline;
    uint64_t next_sample_ms;
    double start_time_s;
} td_server;

/* Tracker key: process and reporter stream (compat clients use stream 0). */
static inline uint64_t td_client_key(pid_t pid, uint32_t stream) { return BH_TRACK_CLIENT(pid, stream); }
static inline pid_t td_key_pid(uint64_t key) { return (pid_t)BH_TRACK_PROCESS(key); }
static inline uint32_t td_key_stream(uint64_t key) { return BH_TRACK_STREAM(key); }

#endif /* BH_TRACKD_STATE_H */
