/*
 * bh-trackd - the allocation tracking server.
 *
 *   bh-trackd [--socket PATH] [--compat-tt] [--compat-socket PATH]
 *             [--max-live-per-client N] [--allow-uid UID]... [--summary FILE]
 *             [--log FILE] [--grace-ms N]
 *   bh-trackd stats [--socket PATH] [--json]
 *   bh-trackd dump  [--socket PATH] [--json]
 *
 * One epoll loop serves every client. Native clients (the library's socket
 * reporter) speak the framed protocol of docs/protocol.md; with --compat-tt a
 * second socket takes TT-Metal's 72-byte records. The server keeps, per client
 * process (and reporter stream) and device, the live set, and logs one line
 * for each FREE of an unknown allocation, ALLOC of a live one, and allocation
 * still live when a client process is gone (a leak).
 *
 * A client is its process: when a connection closes, the server waits until
 * the process has exited (or --grace-ms passed without it reconnecting) and
 * then reports what it still held as leaks. A process that reconnects in
 * time continues where it was (its reporter resyncs the live set).
 */
#define _GNU_SOURCE /* SO_PEERCRED, struct ucred, accept4 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bufhandle/bufhandle.h"
#include "track.h"
#include "wire.h"

#define MAX_ALLOW_UIDS 16
#define LOG_FIRST 100 /* log lines per kind before suppressing */

/* ======================== State ======================== */

typedef struct client {
    int fd;
    int compat;  /* 72-byte records */
    int control; /* a stats/dump query connection */
    int hello;   /* native: HELLO received */
    pid_t pid;
    uid_t uid;
    char name[BH_WIRE_MAX_NAME + 1];
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_off;
    int closing; /* close once out is flushed */
    struct client *next;
} client;

/* A process whose last connection closed: leaks are reported when it is gone. */
typedef struct orphan {
    pid_t pid;
    uint64_t since_ms;
    struct orphan *next;
} orphan;

typedef struct server {
    const char *socket_path, *compat_path, *summary_path;
    int compat;
    uint64_t max_live;
    uid_t allow[MAX_ALLOW_UIDS];
    int nallow;
    uint64_t grace_ms;
    FILE *log;
    int epfd, lfd, cfd, sigfd;
    bh_track *track;
    client *clients;
    orphan *orphans;
    /* counters */
    uint64_t connections, reporter_connections, rejected, malformed, resyncs, compat_records, unsupported_records,
        limit_disconnects;
    uint64_t logged[4];
    /* pid -> program name, from HELLO */
    struct {
        pid_t pid;
        char name[BH_WIRE_MAX_NAME + 1];
    } names[256];
    int nnames;
} server;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void vlog(server *s, const char *fmt, va_list ap) {
    fprintf(s->log, "bh-trackd: ");
    vfprintf(s->log, fmt, ap);
    fputc('\n', s->log);
    fflush(s->log);
}

#define BH_PRINTF(f, a) __attribute__((format(printf, f, a)))

static void logf_(server *s, const char *fmt, ...) BH_PRINTF(2, 3);
static void log_event(server *s, int cls, const char *fmt, ...) BH_PRINTF(3, 4);

static void logf_(server *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(s, fmt, ap);
    va_end(ap);
}

/* Logs one event-class line, the first LOG_FIRST of each class only. */
static void log_event(server *s, int cls, const char *fmt, ...) {
    if (++s->logged[cls] > LOG_FIRST) {
        if (s->logged[cls] == LOG_FIRST + 1)
            logf_(s, "(further lines of this kind are counted, not logged)");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vlog(s, fmt, ap);
    va_end(ap);
}

/* Tracker key: process and reporter stream (compat clients use stream 0). */
static uint64_t client_key(pid_t pid, uint32_t stream) {
    return ((uint64_t)(uint32_t)pid << 16) | (stream & 0xffffu);
}
static pid_t key_pid(uint64_t key) { return (pid_t)(key >> 16); }
static uint32_t key_stream(uint64_t key) { return (uint32_t)(key & 0xffffu); }

static const char *name_of(const server *s, pid_t pid) {
    for (int i = 0; i < s->nnames; i++)
        if (s->names[i].pid == pid)
            return s->names[i].name;
    return "";
}

static void remember_name(server *s, pid_t pid, const char *name) {
    for (int i = 0; i < s->nnames; i++) {
        if (s->names[i].pid == pid) {
            snprintf(s->names[i].name, sizeof(s->names[i].name), "%s", name);
            return;
        }
    }
    int i = s->nnames < 256 ? s->nnames++ : (int)(pid % 256); /* a full table forgets the oldest-ish */
    s->names[i].pid = pid;
    snprintf(s->names[i].name, sizeof(s->names[i].name), "%s", name);
}

/* ======================== Output buffers ======================== */

static int watch(server *s, client *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void flush_out(server *s, client *c) {
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

static void send_bytes(server *s, client *c, const void *p, size_t n) {
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
    flush_out(s, c);
}

static void send_frame(server *s, client *c, uint16_t type, const void *payload, uint32_t len) {
    uint8_t h[BH_WIRE_HEADER];
    bh_wire_header(h, type, len);
    send_bytes(s, c, h, sizeof(h));
    if (len > 0)
        send_bytes(s, c, payload, len);
}

static void send_error(server *s, client *c, bh_status code, const char *msg) {
    uint8_t p[4 + 200];
    size_t n = strlen(msg) < 200 ? strlen(msg) : 200;
    bh_put32(p, (uint32_t)code);
    memcpy(p + 4, msg, n);
    if (!c->compat)
        send_frame(s, c, BH_WIRE_ERROR, p, (uint32_t)(4 + n));
    c->closing = 1;
}

/* ======================== Reports: stats, dump, summary ======================== */

typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) BH_PRINTF(2, 3);
static void sb_printf(strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p != NULL && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return;
        b->p = np;
        b->cap = cap;
    }
}

static void sb_append(strbuf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

typedef struct report_ctx {
    server *s;
    strbuf *b;
    int json, first;
    uint64_t now;
} report_ctx;

static void stats_group(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c) {
    report_ctx *r = ctx;
    if (r->json) {
        sb_printf(r->b,
                  "%s{\"pid\":%d,\"stream\":%u,\"name\":\"%s\",\"device\":%u,\"live\":%" PRIu64
                  ",\"live_bytes\":%" PRIu64 ",\"peak_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
                  ",\"frees\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
                  ",\"leaks\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64 "}",
                  r->first ? "" : ",", (int)key_pid(key), key_stream(key), name_of(r->s, key_pid(key)),
                  device, c->live, c->live_bytes, c->peak_bytes, c->allocs, c->frees, c->unknown_frees,
                  c->duplicate_allocs, c->leaks, c->leaked_bytes);
    } else {
        sb_printf(r->b,
                  "%8d %6u %-14.14s %6u %10" PRIu64 " %14" PRIu64 " %14" PRIu64 " %9" PRIu64 " %9" PRIu64
                  " %8" PRIu64 " %8" PRIu64 " %6" PRIu64 "\n",
                  (int)key_pid(key), key_stream(key), name_of(r->s, key_pid(key)), device, c->live,
                  c->live_bytes, c->peak_bytes, c->allocs, c->frees, c->unknown_frees, c->duplicate_allocs,
                  c->leaks);
    }
    r->first = 0;
}

static void render_stats(server *s, strbuf *b, int json) {
    bh_track_counts t;
    bh_track_totals(s->track, UINT64_MAX, UINT32_MAX, &t);
    report_ctx r = {s, b, json, 1, now_ms()};
    if (json) {
        sb_printf(b,
                  "{\"totals\":{\"live\":%" PRIu64 ",\"live_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
                  ",\"frees\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
                  ",\"leaks\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64 "},",
                  t.live, t.live_bytes, t.allocs, t.frees, t.unknown_frees, t.duplicate_allocs, t.leaks,
                  t.leaked_bytes);
        sb_printf(b,
                  "\"server\":{\"connections\":%" PRIu64 ",\"reporter_connections\":%" PRIu64
                  ",\"rejected_peers\":%" PRIu64
                  ",\"malformed\":%" PRIu64 ",\"resyncs\":%" PRIu64 ",\"compat_records\":%" PRIu64
                  ",\"unsupported_records\":%" PRIu64 ",\"limit_disconnects\":%" PRIu64 "},\"clients\":[",
                  s->connections, s->reporter_connections, s->rejected, s->malformed, s->resyncs,
                  s->compat_records, s->unsupported_records, s->limit_disconnects);
        bh_track_each_group(s->track, stats_group, &r);
        sb_printf(b, "]}\n");
        return;
    }
    sb_printf(b, "%8s %6s %-14s %6s %10s %14s %14s %9s %9s %8s %8s %6s\n", "pid", "stream", "name", "device",
              "live", "live bytes", "peak bytes", "allocs", "frees", "unknown", "dup", "leaks");
    bh_track_each_group(s->track, stats_group, &r);
    sb_printf(b,
              "total: %" PRIu64 " live (%" PRIu64 " bytes), %" PRIu64 " allocs, %" PRIu64 " frees, %" PRIu64
              " unknown FREEs, %" PRIu64 " duplicate ALLOCs, %" PRIu64 " leaks (%" PRIu64 " bytes)\n",
              t.live, t.live_bytes, t.allocs, t.frees, t.unknown_frees, t.duplicate_allocs, t.leaks,
              t.leaked_bytes);
    sb_printf(b,
              "server: %" PRIu64 " connections, %" PRIu64 " rejected peers, %" PRIu64 " malformed, %" PRIu64
              " resyncs, %" PRIu64 " compat records\n",
              s->connections, s->rejected, s->malformed, s->resyncs, s->compat_records);
}

static void dump_entry(void *ctx, const bh_track_entry *e) {
    report_ctx *r = ctx;
    double age = (double)(r->now - e->since) / 1000.0;
    if (r->json)
        sb_printf(r->b,
                  "%s{\"pid\":%d,\"stream\":%u,\"device\":%u,\"address\":%" PRIu64 ",\"size\":%" PRIu64
                  ",\"age_s\":%.3f}",
                  r->first ? "" : ",", (int)key_pid(e->client), key_stream(e->client), e->device, e->address,
                  e->size, age);
    else
        sb_printf(r->b, "%8d %6u %6u 0x%012" PRIx64 " %14" PRIu64 " %10.3f\n", (int)key_pid(e->client),
                  key_stream(e->client), e->device, e->address, e->size, age);
    r->first = 0;
}

static void render_dump(server *s, strbuf *b, int json) {
    report_ctx r = {s, b, json, 1, now_ms()};
    if (json)
        sb_printf(b, "{\"live\":[");
    else
        sb_printf(b, "%8s %6s %6s %14s %14s %10s\n", "pid", "stream", "device", "address", "size", "age (s)");
    bh_track_each_entry(s->track, 1, dump_entry, &r);
    if (json)
        sb_printf(b, "]}\n");
}

/* ======================== Clients ======================== */

static void on_leak(void *ctx, const bh_track_entry *e) {
    server *s = ctx;
    log_event(s, 3, "leak: pid %d stream %u device %u address 0x%" PRIx64 " size %" PRIu64,
              (int)key_pid(e->client), key_stream(e->client), e->device, e->address, e->size);
}

typedef struct keys {
    uint64_t k[1024];
    int n;
    pid_t pid;
} keys;

static void collect_key(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c) {
    keys *ks = ctx;
    (void)device;
    (void)c;
    if (key_pid(key) != ks->pid || ks->n == 1024)
        return;
    for (int i = 0; i < ks->n; i++)
        if (ks->k[i] == key)
            return;
    ks->k[ks->n++] = key;
}

/* The process is gone: everything it still held leaked. */
static void process_gone(server *s, pid_t pid) {
    keys ks = {.n = 0, .pid = pid};
    bh_track_each_group(s->track, collect_key, &ks);
    uint64_t n = 0;
    for (int i = 0; i < ks.n; i++)
        n += bh_track_client_gone(s->track, ks.k[i], on_leak, s);
    if (n > 0)
        logf_(s, "pid %d (%s) ended with %" PRIu64 " live allocations (leaks)", (int)pid, name_of(s, pid), n);
}

static int process_alive(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may contain spaces */
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static int pid_connected(const server *s, pid_t pid) {
    for (const client *c = s->clients; c != NULL; c = c->next)
        if (!c->control && c->pid == pid && !c->closing)
            return 1;
    return 0;
}

static void close_client(server *s, client *c) {
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (client **p = &s->clients; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    if (!c->control && !pid_connected(s, c->pid)) {
        orphan *o = calloc(1, sizeof(*o));
        if (o != NULL) {
            o->pid = c->pid;
            o->since_ms = now_ms();
            o->next = s->orphans;
            s->orphans = o;
        } else {
            process_gone(s, c->pid);
        }
    }
    free(c->in);
    free(c->out);
    free(c);
}

/* Orphans whose process ended, or that did not come back within the grace
 * period, have leaked what they held. */
static void check_orphans(server *s) {
    uint64_t now = now_ms();
    for (orphan **p = &s->orphans; *p != NULL;) {
        orphan *o = *p;
        int back = pid_connected(s, o->pid);
        if (back || !process_alive(o->pid) || now - o->since_ms >= s->grace_ms) {
            if (!back)
                process_gone(s, o->pid);
            *p = o->next;
            free(o);
        } else {
            p = &o->next;
        }
    }
}

static int peer_allowed(const server *s, uid_t uid) {
    if (uid == 0 || uid == geteuid())
        return 1;
    for (int i = 0; i < s->nallow; i++)
        if (s->allow[i] == uid)
            return 1;
    return 0;
}

static void accept_clients(server *s, int lfd, int compat) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: the pending connection keeps the
                 * listener readable; pause instead of spinning on it. */
                logf_(s, "out of file descriptors; not accepting for 100 ms");
                nanosleep(&(struct timespec){0, 100000000}, NULL);
            }
            return;
        }
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || !peer_allowed(s, cred.uid)) {
            s->rejected++;
            logf_(s, "rejected peer (uid %d): not this user, not root, not --allow-uid", (int)cred.uid);
            close(fd);
            continue;
        }
        client *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->compat = compat;
        c->pid = cred.pid;
        c->uid = cred.uid;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = s->clients;
        s->clients = c;
        s->connections++;
    }
}

static void malformed(server *s, client *c, const char *why) {
    s->malformed++;
    logf_(s, "malformed input from pid %d (%s): %s; disconnecting it", (int)c->pid,
          c->compat ? "compat" : "native", why);
    send_error(s, c, BH_EINVAL, why);
}

static void track_result(server *s, client *c, bh_track_result r, const char *kind, uint32_t device,
                         uint64_t address) {
    switch (r) {
    case BH_TRACK_OK:
        break;
    case BH_TRACK_UNKNOWN_FREE:
        log_event(s, 0, "FREE of unknown buffer: pid %d device %u address 0x%" PRIx64, (int)c->pid, device,
                  address);
        break;
    case BH_TRACK_DUPLICATE_ALLOC:
        log_event(s, 1, "ALLOC of a live buffer: pid %d device %u address 0x%" PRIx64, (int)c->pid, device,
                  address);
        break;
    case BH_TRACK_LIMIT:
    case BH_TRACK_NOMEM:
        s->limit_disconnects++;
        logf_(s, "pid %d over its live-allocation limit (%" PRIu64 ") at %s; disconnecting it", (int)c->pid,
              s->max_live, kind);
        send_error(s, c, BH_ENOMEM, "over the live-allocation limit (--max-live-per-client)");
        break;
    }
}

/* --- native frames --- */

static void handle_query(server *s, client *c, const uint8_t *p, uint32_t len) {
    if (len != 4) {
        malformed(s, c, "QUERY length");
        return;
    }
    uint16_t what = bh_get16(p), format = bh_get16(p + 2);
    strbuf b = {0};
    if (what == 1)
        render_stats(s, &b, format == 1);
    else if (what == 2)
        render_dump(s, &b, format == 1);
    else {
        malformed(s, c, "QUERY kind");
        return;
    }
    send_frame(s, c, BH_WIRE_REPLY, b.p, (uint32_t)b.len);
    free(b.p);
    c->closing = 1;
}

static void handle_frame(server *s, client *c, uint16_t type, const uint8_t *p, uint32_t len) {
    if (!c->hello && type != BH_WIRE_HELLO) {
        malformed(s, c, "first frame is not HELLO");
        return;
    }
    switch (type) {
    case BH_WIRE_HELLO: {
        if (c->hello || len < 10) {
            malformed(s, c, "HELLO repeated or short");
            return;
        }
        uint16_t version = bh_get16(p + 4), flags = bh_get16(p + 6), nlen = bh_get16(p + 8);
        if (version != BH_WIRE_VERSION) {
            s->malformed++;
            logf_(s, "pid %d speaks protocol %u, this server %u", (int)c->pid, version, BH_WIRE_VERSION);
            {
                send_error(s, c, BH_EINVAL, "unsupported protocol version");
                return;
            }
        }
        if (nlen > BH_WIRE_MAX_NAME || (uint32_t)nlen + 10 != len) {
            malformed(s, c, "HELLO name length");
            return;
        }
        memcpy(c->name, p + 10, nlen);
        c->name[nlen] = '\0';
        for (char *q = c->name; *q; q++) /* keep logs and JSON printable */
            if (*q < 0x20 || *q == '"' || *q == '\\' || (unsigned char)*q >= 0x7f)
                *q = '?';
        c->hello = 1;
        c->control = (flags & BH_WIRE_HELLO_CONTROL) != 0;
        if (!c->control) {
            s->reporter_connections++;
            remember_name(s, c->pid, c->name);
        }
        return;
    }
    case BH_WIRE_QUERY: {
        handle_query(s, c, p, len);
        return;
    }
    default:
        break;
    }
    if (c->control) {
        malformed(s, c, "report frame on a query connection");
        return;
    }
    switch (type) {
    case BH_WIRE_EVENT: {
        if (len != BH_WIRE_EVENT_LEN) {
            malformed(s, c, "EVENT length");
            return;
        }
        uint64_t key = client_key(c->pid, bh_get32(p));
        uint8_t kind = p[4];
        uint32_t device = bh_get32(p + 8);
        uint64_t address = bh_get64(p + 16), size = bh_get64(p + 24);
        if (kind == BH_EVENT_ALLOC)
            track_result(s, c, bh_track_on_alloc(s->track, key, device, address, size, 0, now_ms()), "ALLOC",
                         device, address);
        else if (kind == BH_EVENT_FREE)
            track_result(s, c, bh_track_on_free(s->track, key, device, address), "FREE", device, address);
        else
            malformed(s, c, "EVENT kind");
        return;
    }
    case BH_WIRE_RESYNC_BEGIN:
        if (len != 4) {
            malformed(s, c, "RESYNC_BEGIN length");
            return;
        }
        bh_track_client_reset(s->track, client_key(c->pid, bh_get32(p)));
        return;
    case BH_WIRE_RESYNC_CHUNK: {
        if (len < 8) {
            malformed(s, c, "RESYNC_CHUNK length");
            return;
        }
        uint64_t key = client_key(c->pid, bh_get32(p));
        uint32_t n = bh_get32(p + 4);
        if ((uint64_t)n * BH_WIRE_RESYNC_ENTRY + 8 != len) {
            malformed(s, c, "RESYNC_CHUNK count");
            return;
        }
        for (uint32_t i = 0; i < n && !c->closing; i++) {
            const uint8_t *e = p + 8 + (size_t)i * BH_WIRE_RESYNC_ENTRY;
            track_result(
                s, c,
                bh_track_restore(s->track, key, bh_get32(e), bh_get64(e + 8), bh_get64(e + 16), now_ms()),
                "RESYNC", bh_get32(e), bh_get64(e + 8));
        }
        return;
    }
    case BH_WIRE_RESYNC_END:
        if (len != 4) {
            malformed(s, c, "RESYNC_END length");
            return;
        }
        s->resyncs++;
        return;
    default: {
        malformed(s, c, "unknown frame type");
        return;
    }
    }
}

/* --- compat records --- */

typedef struct tt_sum {
    int32_t device;
    uint64_t bytes[4];
} tt_sum;

static void tt_add(void *ctx, const bh_track_entry *e) {
    tt_sum *t = ctx;
    if ((int32_t)e->device == t->device && e->type < 4)
        t->bytes[e->type] += e->size;
}

static void handle_record(server *s, client *c, const uint8_t *r) {
    uint8_t type = r[0];
    if (type == 0 || type > BH_TT_LAST_KNOWN || r[1] || r[2] || r[3] || r[17] || r[18] || r[19]) {
        malformed(s, c, "not a 72-byte TT record (bad type or padding)");
        return;
    }
    s->compat_records++;
    int32_t device = (int32_t)bh_get32(r + 4);
    uint64_t size = bh_get64(r + 8), address = bh_get64(r + 24);
    uint8_t btype = r[16];
    /* Keyed by the peer's pid, never the record's process_id (some clients
     * leave it 0 in FREE). */
    uint64_t key = client_key(c->pid, 0);
    switch (type) {
    case BH_TT_ALLOC:
        if (btype > 3) {
            malformed(s, c, "buffer_type");
            return;
        }
        track_result(s, c, bh_track_on_alloc(s->track, key, (uint32_t)device, address, size, btype, now_ms()),
                     "ALLOC", (uint32_t)device, address);
        return;
    case BH_TT_FREE:
        track_result(s, c, bh_track_on_free(s->track, key, (uint32_t)device, address), "FREE",
                     (uint32_t)device, address);
        return;
    case BH_TT_QUERY: {
        tt_sum t = {device, {0, 0, 0, 0}};
        bh_track_each_entry(s->track, 1, tt_add, &t);
        uint8_t out[BH_TT_RECORD];
        bh_tt_record(out, BH_TT_RESPONSE, device, 0, 0, 0, 0, 0);
        for (int i = 0; i < 4; i++)
            bh_put64(out + 40 + 8 * i, t.bytes[i]);
        send_bytes(s, c, out, sizeof(out));
        return;
    }
    case BH_TT_DUMP_REMAINING: {
        strbuf b = {0};
        render_dump(s, &b, 0);
        logf_(s, "DUMP_REMAINING requested by pid %d:\n%s", (int)c->pid, b.p ? b.p : "");
        free(b.p);
        return;
    }
    default: /* later variants' device-info, circular-buffer and kernel records */
        s->unsupported_records++;
        return;
    }
}

/* Parses what is buffered; keeps a partial frame for the next read. */
static void parse_input(server *s, client *c) {
    size_t off = 0;
    while (!c->closing) {
        size_t avail = c->in_len - off;
        const uint8_t *p = c->in + off;
        if (c->compat) {
            if (avail < BH_TT_RECORD)
                break;
            handle_record(s, c, p);
            off += BH_TT_RECORD;
            continue;
        }
        if (avail < BH_WIRE_HEADER)
            break;
        if (bh_get32(p) != BH_WIRE_MAGIC) {
            malformed(s, c, "bad magic");
            break;
        }
        if (bh_get16(p + 4) != BH_WIRE_VERSION) {
            malformed(s, c, "bad frame version");
            break;
        }
        uint32_t len = bh_get32(p + 8);
        if (len > BH_WIRE_MAX_PAYLOAD) {
            malformed(s, c, "frame longer than the maximum");
            break;
        }
        if (avail < BH_WIRE_HEADER + (size_t)len)
            break;
        handle_frame(s, c, bh_get16(p + 6), p + BH_WIRE_HEADER, len);
        off += BH_WIRE_HEADER + len;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static void read_client(server *s, client *c) {
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
            parse_input(s, c);
            if (c->closing)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (c->in_len > 0 && !c->compat)
            malformed(s, c, "connection closed inside a frame");
        else if (c->in_len > 0)
            malformed(s, c, "connection closed inside a record");
        c->closing = 1; /* EOF or error */
        return;
    }
}

/* ======================== Listening sockets ======================== */

static int listen_on(server *s, const char *path) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        logf_(s, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            logf_(s, "%s exists and is not a socket; not touching it", path);
            return -1;
        }
        /* A live server answers; a stale file from a dead one refuses. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            logf_(s, "another server is listening on %s; not stealing it", path);
            return -1;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    mode_t old = umask(0177); /* the socket file is created 0600 */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, 128) != 0) {
        logf_(s, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int add_fd(server *s, int fd, void *tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int write_summary(server *s) {
    strbuf b = {0};
    render_stats(s, &b, 1);
    FILE *f = fopen(s->summary_path, "w");
    int ok = f != NULL && b.p != NULL && fwrite(b.p, 1, b.len, f) == b.len;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    free(b.p);
    if (!ok)
        logf_(s, "cannot write summary to %s", s->summary_path);
    return ok ? 0 : -1;
}

/* Tags for the fixed descriptors in epoll (clients carry their client*). */
static char tag_listen, tag_compat, tag_signal;

static int serve(server *s) {
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->track = bh_track_new(s->max_live);
    s->cfd = -1;
    if (s->sigfd < 0 || s->epfd < 0 || s->track == NULL)
        return 1;
    s->lfd = listen_on(s, s->socket_path);
    if (s->lfd < 0)
        return 1;
    add_fd(s, s->lfd, &tag_listen);
    if (s->compat) {
        s->cfd = listen_on(s, s->compat_path);
        if (s->cfd < 0) {
            unlink(s->socket_path);
            return 1;
        }
        add_fd(s, s->cfd, &tag_compat);
    }
    add_fd(s, s->sigfd, &tag_signal);
    logf_(s, "listening on %s%s%s", s->socket_path, s->compat ? " and (compat) " : "",
          s->compat ? s->compat_path : "");

    int running = 1;
    while (running) {
        struct epoll_event evs[64];
        int n = epoll_wait(s->epfd, evs, 64, s->orphans ? 50 : 1000);
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &tag_signal) {
                struct signalfd_siginfo si;
                while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                    running = 0;
            } else if (tag == &tag_listen) {
                accept_clients(s, s->lfd, 0);
            } else if (tag == &tag_compat) {
                accept_clients(s, s->cfd, 1);
            } else {
                client *c = tag;
                if (evs[i].events & EPOLLOUT)
                    flush_out(s, c);
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    read_client(s, c);
                if (c->closing && c->out_off >= c->out_len)
                    close_client(s, c);
            }
        }
        check_orphans(s);
    }
    logf_(s, "shutting down");
    while (s->clients != NULL)
        close_client(s, s->clients);
    int rc = s->summary_path != NULL ? write_summary(s) : 0;
    unlink(s->socket_path);
    if (s->compat)
        unlink(s->compat_path);
    while (s->orphans != NULL) {
        orphan *o = s->orphans;
        s->orphans = o->next;
        free(o);
    }
    bh_track_free(s->track);
    close(s->lfd);
    if (s->cfd >= 0)
        close(s->cfd);
    close(s->epfd);
    close(s->sigfd);
    return rc == 0 ? 0 : 1;
}

/* ======================== Query commands ======================== */

static int query(const char *path, uint16_t what, int json) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "bh-trackd: no server on %s: %s\n", path, strerror(errno));
        return 1;
    }
    static const char name[] = "bh-trackd-query";
    uint8_t req[BH_WIRE_HEADER + 10 + sizeof(name) - 1 + BH_WIRE_HEADER + 4];
    size_t n = bh_wire_header(req, BH_WIRE_HELLO, (uint32_t)(10 + sizeof(name) - 1));
    bh_put32(req + n, (uint32_t)getpid());
    bh_put16(req + n + 4, BH_WIRE_VERSION);
    bh_put16(req + n + 6, BH_WIRE_HELLO_CONTROL);
    bh_put16(req + n + 8, (uint16_t)(sizeof(name) - 1));
    memcpy(req + n + 10, name, sizeof(name) - 1);
    n += 10 + sizeof(name) - 1;
    n += bh_wire_header(req + n, BH_WIRE_QUERY, 4);
    bh_put16(req + n, what);
    bh_put16(req + n + 2, (uint16_t)json);
    n += 4;
    if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n) {
        fprintf(stderr, "bh-trackd: cannot send the query\n");
        close(fd);
        return 1;
    }
    strbuf b = {0};
    char chunk[65536];
    ssize_t r;
    while ((r = recv(fd, chunk, sizeof(chunk), 0)) > 0)
        sb_append(&b, chunk, (size_t)r);
    close(fd);
    if (b.len < BH_WIRE_HEADER || bh_get32((uint8_t *)b.p) != BH_WIRE_MAGIC ||
        bh_get16((uint8_t *)b.p + 6) != BH_WIRE_REPLY ||
        bh_get32((uint8_t *)b.p + 8) != b.len - BH_WIRE_HEADER) {
        fprintf(stderr, "bh-trackd: bad reply from the server\n");
        free(b.p);
        return 1;
    }
    fwrite(b.p + BH_WIRE_HEADER, 1, b.len - BH_WIRE_HEADER, stdout);
    free(b.p);
    return 0;
}

/* ======================== main ======================== */

static void usage(FILE *f) {
    fprintf(f,
            "usage: bh-trackd [--socket PATH] [--compat-tt] [--compat-socket PATH]\n"
            "                 [--max-live-per-client N] [--allow-uid UID]... [--summary FILE]\n"
            "                 [--log FILE] [--grace-ms N]\n"
            "       bh-trackd stats [--socket PATH] [--json]\n"
            "       bh-trackd dump  [--socket PATH] [--json]\n"
            "defaults: --socket %s, --compat-socket %s, --max-live-per-client 10000000,\n"
            "          --grace-ms 2000, log to stderr\n",
            BH_TRACKD_DEFAULT_SOCKET, BH_TT_DEFAULT_SOCKET);
}

static int parse_num(const char *opt, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = v != NULL ? strtoull(v, &end, 10) : 0;
    if (v == NULL || errno != 0 || end == v || *end != '\0' || v[0] == '-') {
        fprintf(stderr, "bh-trackd: %s needs a non-negative number\n", opt);
        return -1;
    }
    *out = x;
    return 0;
}

#ifndef BH_TRACKD_NO_MAIN /* the fuzzer includes this file for its decoder */
int main(int argc, char **argv) {
    server s;
    memset(&s, 0, sizeof(s));
    s.socket_path = BH_TRACKD_DEFAULT_SOCKET;
    s.compat_path = BH_TT_DEFAULT_SOCKET;
    s.max_live = 10000000;
    s.grace_ms = 2000;
    s.log = stderr;
    int cmd = 0, json = 0; /* 0 serve, 1 stats, 2 dump */
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "stats") == 0)
        cmd = 1, i = 2;
    else if (argc > 1 && strcmp(argv[1], "dump") == 0)
        cmd = 2, i = 2;
    else if (argc > 1 && strcmp(argv[1], "serve") == 0)
        i = 2;
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0 && cmd != 0) {
            json = 1;
        } else if (strcmp(a, "--socket") == 0 && v != NULL) {
            s.socket_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--compat-tt") == 0) {
            s.compat = 1;
        } else if (cmd == 0 && strcmp(a, "--compat-socket") == 0 && v != NULL) {
            s.compat_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--summary") == 0 && v != NULL) {
            s.summary_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--log") == 0 && v != NULL) {
            s.log = fopen(v, "a");
            if (s.log == NULL) {
                fprintf(stderr, "bh-trackd: cannot open log %s: %s\n", v, strerror(errno));
                return 2;
            }
            i++;
        } else if (cmd == 0 && strcmp(a, "--max-live-per-client") == 0) {
            if (parse_num(a, v, &s.max_live) != 0)
                return 2;
            i++;
        } else if (cmd == 0 && strcmp(a, "--grace-ms") == 0) {
            if (parse_num(a, v, &s.grace_ms) != 0)
                return 2;
            i++;
        } else if (cmd == 0 && strcmp(a, "--allow-uid") == 0) {
            if (parse_num(a, v, &x) != 0 || s.nallow == MAX_ALLOW_UIDS) {
                fprintf(stderr, "bh-trackd: at most %d --allow-uid\n", MAX_ALLOW_UIDS);
                return 2;
            }
            s.allow[s.nallow++] = (uid_t)x;
            i++;
        } else {
            fprintf(stderr, "bh-trackd: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (cmd != 0)
        return query(s.socket_path, (uint16_t)cmd, json);
    return serve(&s);
}
#endif /* BH_TRACKD_NO_MAIN */
