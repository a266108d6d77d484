/*
 * report_conn.c - the socket reporter's connection I/O (report_socket.h):
 * connect, who listens, HELLO, bounded writes, the server's ERROR frames.
 *
 * Owns: the socket of a connection and the one-line messages about it.
 * Must never: run on an application thread, raise SIGPIPE (MSG_NOSIGNAL),
 * send anything to a server of another user, block past a write's timeout or
 * the close deadline, or write to stdout.
 */
#define _GNU_SOURCE /* struct ucred for SO_PEERCRED */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "report_socket.h"
#include "common/procstart.h"

static AO_t said_unreachable; /* ATOMIC: the unreachable-server line was printed */

uint64_t rs_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct timespec rs_deadline_in(uint64_t us) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (us % 1000000u) * 1000u;
    ts.tv_sec += (time_t)(us / 1000000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

/* One line on stderr (the library never writes to stdout). */
static void say(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void say(const char *fmt, va_list ap) {
    char line[512];
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(2, line, len); /* one write: lines of several processes do not mix */
    (void)w;
}

/* One line per connection and kind (sender thread: c->said is its own). */
static void say_once(conn *c, unsigned what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say_once(conn *c, unsigned what, const char *fmt, ...) {
    if (c->said & what)
        return;
    c->said |= what;
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
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

static void say_lost(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say_lost(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
}

void rs_say_lost(uint64_t n) {
    say_lost("bufhandle: %llu events of this process were never delivered to a tracking server (none took "
             "them before their reporter closed or the process exited); they are lost",
             (unsigned long long)n);
}

/* ======================== Socket I/O (sender thread only) ======================== */

/* Writes buf within timeout_ms, and within the close deadline if one is set.
 * MSG_NOSIGNAL: a dead server is EPIPE, never SIGPIPE. Returns the bytes
 * written: len on success. */
size_t rs_write_some(conn *c, int fd, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
    uint64_t deadline = rs_now_ms() + timeout_ms;
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
        uint64_t now = rs_now_ms();
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

int rs_write_all(conn *c, const uint8_t *buf, size_t len) {
    return rs_write_some(c, c->fd, buf, len, c->opt.send_timeout_ms) == len ? 0 : -1;
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

/* With c->lock released: connects fd (c->fd already), checks who listens,
 * says HELLO. Returns as rs_try_connect; the caller closes fd on failure. */
static int connect_fd(conn *c, int fd) {
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
        return -2;
    }
    if (!(c->opt.flags & BH_SOCKET_COMPAT_TT)) {
        char name[64];
        size_t n_name = program_name(name, sizeof(name));
        /* Read at each connect, never kept: a forked child states its own.
         * With the pid it tells the server this process from another when
         * the server cannot see our pid (its own PID namespace). */
        uint64_t start = 0; /* 0: unknown; bh_proc_start writes only on success */
        (void)bh_proc_start(0, &start);
        uint8_t hello[BH_WIRE_HELLO_MAX];
        size_t n = bh_wire_hello(hello, (uint32_t)getpid(), 0, name, n_name, start);
        if (rs_write_all(c, hello, n) != 0)
            return -1;
    } else if (cred.pid != c->server_pid) {
        /* Another TT server than the one the known set was built with: it
         * knows nothing of ours. */
        rs_key_clear(&c->known);
        c->server_pid = cred.pid;
    }
    return 0;
}

/* Under c->lock, which it releases around the connect and HELLO. The socket
 * is c->fd from its making, under the lock, so that a fork() meanwhile
 * (fork_prepare takes this lock, so it never falls between the socket's
 * making and its publication, nor between its closing and c->fd = -1) has
 * fork_child close it in the child: published only once connected, a child
 * forked during the connect kept the connection open for as long as it
 * lived, and the server saw a dead connection alive. Only the sender, or
 * the opener before the sender runs, changes c->fd. */
int rs_try_connect(conn *c) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    c->fd = fd;
    pthread_mutex_unlock(&c->lock);
    int rc = connect_fd(c, fd);
    pthread_mutex_lock(&c->lock);
    if (rc != 0)
        rs_disconnect(c);
    return rc;
}

void rs_gone_free(conn *c) {
    while (c->gone != NULL) {
        ring_gone *g = c->gone;
        c->gone = g->next;
        bh__free(g);
    }
}

void rs_disconnect(conn *c) {
    rs_gone_free(c);
    c->in_len = 0;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* The server's answer to the RING of a closed stream (refused: status != 0):
 * nobody drains its ring now, so its events are lost. Returns 0 if id is no
 * closed stream's ring waiting for an answer. */
static int gone_answer(conn *c, uint32_t id, int refused) {
    for (ring_gone *g = c->gone; g != NULL; g = g->next) {
        if (g->id == id && g->answer_due) {
            g->answer_due = 0;
            c->lost += refused ? g->events : 0;
            return 1;
        }
    }
    return 0;
}

/* An ERROR frame: said once; BH_ENOMEM (the process is over the server's
 * live-set limit) marks the connection refused. An older server answers a
 * RING frame with BH_EINVAL, and so does bh-trackd short of descriptors: it
 * gets no rings from now on, and no message; a closed stream's ring offered
 * is then lost, and the next connection is made at once (GOT_NO_RING), not
 * after a back-off: that is no refusal of the process, and a close's flush
 * waits for it to send what waits over the socket. */
static void server_error(conn *c, const uint8_t *p, uint32_t len) {
    int32_t code = (int32_t)bh_get32(p);
    int mshow = (int)(len - 4);
    const char *msg = (const char *)p + 4;
    char label[256];
    c->got_error = GOT_ERROR;
    int offered = 0;
    for (stream *s = c->streams; s != NULL; s = s->next)
        offered |= s->mode == RING_OFFERED;
    for (ring_gone *g = c->gone; g != NULL; g = g->next)
        offered |= g->answer_due;
    if (code == BH_EINVAL && offered && !c->no_ring) {
        c->no_ring = 1;
        c->got_error = GOT_NO_RING;
        for (ring_gone *g = c->gone; g != NULL; g = g->next)
            (void)gone_answer(c, g->id, 1);
    } else if (code == BH_ENOMEM) {
        c->refused = 1;
        say_once(c, SAID_REFUSED,
                 "bufhandle: %s refused this process (%.*s): its live set is withdrawn there and nothing "
                 "more is sent",
                 who(c, label, sizeof(label)), mshow, msg);
    } else {
        say_once(c, SAID_ERROR, "bufhandle: %s closed the connection: %s (%.*s); retrying with back-off",
                 who(c, label, sizeof(label)), bh_strerror((bh_status)code), mshow, msg);
    }
}

/* Under c->lock: one frame from the server. RING_ACK says who drains a
 * stream's ring. Returns -1 if the connection is over (ERROR). */
static int server_frame(conn *c, uint16_t type, const uint8_t *p, uint32_t len) {
    if (type == BH_WIRE_ERROR && len >= 4) {
        server_error(c, p, len);
        return -1;
    }
    if (type == BH_WIRE_RING_ACK && len == 8) {
        stream *s = rs_stream_by_id(c, bh_get32(p));
        int32_t status = (int32_t)bh_get32(p + 4);
        if (s != NULL && s->mode == RING_OFFERED)
            s->mode = status == 0 ? RING_SERVER : RING_SELF;
        else if (s == NULL)
            (void)gone_answer(c, bh_get32(p), status != 0);
    }
    return 0; /* anything else is not ours to answer */
}

/* Under c->lock: reads what the server sent, without blocking, and handles
 * each complete frame. Returns 0 (nothing, or nothing that matters), -1 (the
 * server closed, sent an ERROR, or sent what no server sends: the connection
 * is over). */
int rs_read_server(conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        if (n == 0)
            return -1;
        if (c->opt.flags & BH_SOCKET_COMPAT_TT)
            continue; /* a TT server sends only answers to queries, which we never ask */
        c->in_len += (size_t)n;
        size_t off = 0;
        while (c->in_len - off >= BH_WIRE_HEADER) {
            const uint8_t *f = c->in + off;
            uint32_t len = bh_get32(f + 8);
            if (bh_get32(f) != BH_WIRE_MAGIC || len > sizeof(c->in) - BH_WIRE_HEADER)
                return -1;
            if (c->in_len - off < BH_WIRE_HEADER + len)
                break;
            if (server_frame(c, bh_get16(f + 6), f + BH_WIRE_HEADER, len) != 0)
                return -1;
            off += BH_WIRE_HEADER + len;
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

stream *rs_stream_by_id(conn *c, uint32_t id) {
    for (stream *s = c->streams; s != NULL; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

/* Encodes one event for the wire; returns bytes written to p. */
size_t rs_encode_event(const conn *c, uint8_t *p, uint32_t stream_id, const bh_event *ev) {
    if (c->opt.flags & BH_SOCKET_COMPAT_TT)
        return rs_tt_encode(c, p, ev);
    return bh_wire_event(p, stream_id, (uint8_t)ev->kind, ev->device, ev->address, ev->size, ev->seq);
}

/* Sends a frame carrying only a stream id (RESYNC_BEGIN, RESYNC_END). */
int rs_send_stream_frame(conn *c, uint16_t type, uint32_t stream_id) {
    uint8_t buf[BH_WIRE_HEADER + 4];
    size_t n = bh_wire_header(buf, type, 4);
    bh_put32(buf + n, stream_id);
    return rs_write_all(c, buf, n + 4);
}

/* RESYNC_BEGIN: naming the snapshot's mark when the server drains the
 * stream's ring (mark != 0), else the stream alone. */
int rs_send_begin(conn *c, uint32_t stream_id, uint64_t mark) {
    if (mark == 0)
        return rs_send_stream_frame(c, BH_WIRE_RESYNC_BEGIN, stream_id);
    uint8_t buf[BH_WIRE_HEADER + BH_WIRE_RESYNC_BEGIN_MARK];
    size_t n = bh_wire_header(buf, BH_WIRE_RESYNC_BEGIN, BH_WIRE_RESYNC_BEGIN_MARK);
    memset(buf + n, 0, BH_WIRE_RESYNC_BEGIN_MARK);
    bh_put32(buf + n, stream_id);
    bh_put64(buf + n + 8, mark);
    return rs_write_all(c, buf, sizeof(buf));
}

/* Without the lock: RESYNC_CHUNK_TIMED frames of c->snap[0..n), CHUNK
 * entries each, with each allocation's report time (CLOCK_MONOTONIC ms, a
 * clock the server on this host shares). */
int rs_send_chunk(conn *c, uint32_t stream_id, size_t n) {
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        size_t h = bh_wire_header(c->rbuf, BH_WIRE_RESYNC_CHUNK_TIMED,
                                  (uint32_t)(8 + k * BH_WIRE_RESYNC_TIMED_ENTRY));
        bh_put32(c->rbuf + h, stream_id);
        bh_put32(c->rbuf + h + 4, (uint32_t)k);
        uint8_t *p = c->rbuf + h + 8;
        for (size_t j = i; j < i + k; j++, p += BH_WIRE_RESYNC_TIMED_ENTRY) {
            memset(p, 0, BH_WIRE_RESYNC_TIMED_ENTRY);
            bh_put32(p, c->snap[j].device);
            bh_put64(p + 8, c->snap[j].address);
            bh_put64(p + 16, c->snap_size[j]);
            bh_put64(p + 24, c->snap_since[j]);
        }
        if (rs_write_all(c, c->rbuf, (size_t)(p - c->rbuf)) != 0)
            return -1;
    }
    return 0;
}

/* RING: the stream's memfd rides with the frame's bytes (SCM_RIGHTS). Marks
 * up to s->mark were written for resyncs of earlier connections: the server
 * skips them. Returns 0 or -1. */
int rs_send_ring(conn *c, stream *s) {
    uint8_t f[BH_WIRE_HEADER + BH_WIRE_RING_LEN];
    size_t h = bh_wire_header(f, BH_WIRE_RING, BH_WIRE_RING_LEN);
    bh_put32(f + h, s->id);
    bh_put32(f + h + 4, s->cap);
    bh_put64(f + h + 8, s->mark);
    struct iovec iov = {f, sizeof(f)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cm;
    memset(&cm, 0, sizeof(cm));
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&m);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &s->ring_fd, sizeof(int));
    for (int tries = 0; tries < 50; tries++) { /* the socket is fresh: room at once, or soon */
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) /* the descriptor went with the first byte; the rest is plain */
            return rs_write_all(c, f + n, sizeof(f) - (size_t)n);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        struct pollfd p = {c->fd, POLLOUT, 0};
        (void)poll(&p, 1, SLICE_MS);
    }
    return -1;
}
