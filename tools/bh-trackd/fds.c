/*
 * fds.c - bh-trackd's descriptor headroom: a connection is read only when
 * the descriptors its next message may carry (SCM_RIGHTS, up to
 * TD_SCM_MAX_FD) are free.
 *
 * The kernel installs a message's descriptors when recvmsg takes the
 * message's first byte; those past the free ones it cuts (MSG_CTRUNC) and
 * releases in the reading thread, where the last close of a lingering TCP
 * socket among them waits its linger time: the loop held for it. Whether a
 * read is safe is counted, never assumed: the descriptors open after start
 * (whatever the server inherited, its listeners, libmicrohttpd's) are
 * counted once (/proc/self/fd), and what opens later is bookkept (the
 * connections, ring descriptors waiting, descriptors waiting to be closed
 * and the closer thread's own, the HTTP connections at their cap; the
 * closer reserves for a take under a lock the loop holds from its count to
 * the end of its read, so no take slips in between). When the
 * bookkeeping leaves less than a message's worth, the open ones are counted
 * again; when they too do, the descriptors the connection's input carries
 * are counted (the kernel's scm_fds; where it does not show it, the input
 * is peeked at without taking anything, MSG_PEEK, no control buffer: the
 * kernel's copies it then drops are references the queued message still
 * holds, so nothing is released, and any descriptor met is taken for a
 * message's worth). Input whose descriptors have room is read; only the
 * bytes that carry none are read otherwise. Input that carries more
 * descriptors than are free waits while the closer's backlog alone takes the
 * room (its connection out of epoll, looked at again every tick), and is
 * refused (ERROR BH_EINVAL, as for a ring not taken: a reporter then sends
 * over the socket; counted in refused_connections) when nothing
 * pending would make room: its connection's close, with the message unread,
 * is the closer thread's.
 *
 * Owns: raising the soft RLIMIT_NOFILE to the hard one at start, counting the
 * open descriptors, the connection caps within the limit (--max-connections
 * and the HTTP connections; a message's worth is kept apart when the limit
 * has room for it), and that decision before every read of a connection.
 * Must never: let a read take descriptors past the free ones, read bytes
 * queued after its count or peek when short, or block.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "trackd.h"

/* libmicrohttpd's own (listener, epoll, its wake-up pipe's two ends): opened
 * after the first count, which sizes the HTTP connections. */
#define TD_HTTP_FIXED_FDS 4u
/* Held by the loop from its count to the end of its read, and by the closer
 * thread while it reserves for a take (closer.c): no take starts between
 * the two unseen. Never held across anything that waits (the loop's read
 * cannot be cut, so it releases nothing). Taken before closer.c's queue
 * lock, never after. */
static pthread_mutex_t intake = PTHREAD_MUTEX_INITIALIZER;

void td_fds_intake(int take) {
    if (take)
        pthread_mutex_lock(&intake);
    else
        pthread_mutex_unlock(&intake);
}

/* A Unix stream socket takes one byte out of band (MSG_OOB, Linux 5.15 and
 * later), and descriptors ride with it as with any byte. A read without
 * MSG_OOB steps over that byte, and the kernel drops its descriptors in the
 * reading thread unseen (no SCM_RIGHTS, no MSG_CTRUNC; a peek skips it
 * too): a TCP socket lingering among them held the loop, or the closer
 * thread, its linger time, and no count saw them. In line, the byte is read
 * as any other, its descriptors installed (or cut, seen) with it, and a
 * peek sees them. Set before the first read; a kernel without it ignores
 * the option (nothing can be sent out of band there). */
void td_fds_oob_inline(int fd) {
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &on, sizeof(on));
}

/* Counted by probing each descriptor when /proc cannot tell: at most this
 * many (a higher limit leaves room enough that a miss is harmless). */
#define TD_FD_PROBE_MAX 65536u

long td_fds_open(void) {
    struct stat st;
    if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0)
        return (long)st.st_size; /* the count itself, since Linux 6.2 */
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

uint64_t td_fds_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return UINT64_MAX;
    return (uint64_t)rl.rlim_cur;
}

/* The soft limit is a compatibility default (select(2) cannot see past
 * descriptor 1023; systemd's services get 1024 under a hard limit of
 * 524288): a server that does not use select raises its own, as systemd
 * recommends and Go's runtime does. */
static void raise_limit(td_server *s) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    uint64_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        td_log(s, TD_INFO, "descriptor limit raised from %" PRIu64 " to %" PRIu64 " (the hard limit)", was,
               (uint64_t)rl.rlim_max);
    else
        td_log(s, TD_WARN, "cannot raise the descriptor limit from %" PRIu64 " to the hard limit: %s", was,
               strerror(errno));
}

/* The descriptors open now: /proc's count, else each descriptor probed. */
static uint64_t count_open(uint64_t limit) {
    long n = td_fds_open();
    if (n >= 0)
        return (uint64_t)n;
    uint64_t open = 0;
    for (uint64_t fd = 0; fd < limit && fd < TD_FD_PROBE_MAX; fd++)
        open += fcntl((int)fd, F_GETFD) >= 0;
    return open;
}

static int no_room(td_server *s, uint64_t open) {
    td_log(s, TD_ERROR,
           "descriptor limit %" PRIu64 " leaves no descriptor for a connection (%" PRIu64
           " open at start); raise it (ulimit -n, LimitNOFILE=)",
           s->fd_limit, open);
    return -1;
}

int td_fds_fit(td_server *s, int phase) {
    if (phase == 0) {
        raise_limit(s);
        s->fd_limit = td_fds_limit();
        return 0;
    }
    uint64_t open = count_open(s->fd_limit), limit = s->fd_limit;
    int web = s->http_spec != NULL || s->act_http >= 0;
    if (phase == 1) { /* before libmicrohttpd starts: its fixed ones are yet to come */
        uint64_t fixed =
            open + TD_FD_SLACK + (web ? TD_HTTP_FIXED_FDS : 0u) + 2u; /* 2: a connection, an HTTP one */
        if (fixed > limit)
            return no_room(s, open);
        s->fd_reserve = limit - fixed >= TD_SCM_MAX_FD;
        uint64_t room = limit - fixed + 2u - (s->fd_reserve ? TD_SCM_MAX_FD : 0u);
        s->http_conns = web ? (unsigned)(room / 2 < TD_HTTP_CONNECTIONS ? room / 2 : TD_HTTP_CONNECTIONS) : 0;
        return 0;
    }
    s->fd_base = open;
    uint64_t taken = open + TD_FD_SLACK + s->http_conns + (s->fd_reserve ? TD_SCM_MAX_FD : 0u);
    if (taken >= limit)
        return no_room(s, open);
    if (!s->fd_reserve)
        td_log(s, TD_WARN,
               "descriptor limit %" PRIu64 " with %" PRIu64 " open at start leaves fewer than %d free: "
               "connections passing descriptors (event rings) are refused when that many are not free; "
               "raise the hard limit (ulimit -Hn, LimitNOFILE=)",
               limit, open, TD_SCM_MAX_FD);
    if (s->max_conns > limit - taken) {
        s->max_conns = limit - taken;
        td_log(s, TD_INFO,
               "at most %" PRIu64 " connections and %u HTTP connections (descriptor limit %" PRIu64
               ", %" PRIu64 " open at start)",
               s->max_conns, s->http_conns, limit, open);
    }
    return 0;
}

/* 1 if the next recvmsg of c, up to *len bytes, carries descriptors; else 0
 * with *len cut to the bytes that do not (0 bytes: the peer's end), or -1
 * (errno: nothing to read now, or the error the read would give). Taking
 * no descriptor, it can neither cut nor release one. */
static int carries_descriptors(const td_client *c, void *buf, size_t *len) {
    struct iovec iov = {buf, *len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n = recvmsg(c->fd, &m, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return -1;
    if (m.msg_flags & MSG_CTRUNC)
        return 1;
    /* A read of these bytes touches the messages the peek did, and no
     * more: a message sent since cannot join it. */
    *len = (size_t)n;
    return 0;
}

/* The descriptors riding in c's input, in all its messages queued now: the
 * kernel's count (scm_fds in /proc/self/fdinfo), or -1 where it does not
 * show it. */
static long queued_fds(int fd) {
    char path[64], text[512];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    ssize_t n = read(f, text, sizeof(text) - 1);
    close(f);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    const char *p = strstr(text, "\nscm_fds:");
    return p != NULL ? strtol(p + 9, NULL, 10) : -1;
}

static td_fds_verdict gate(td_server *s, td_client *c, void *buf, size_t *len) {
    uint64_t closing = td_closing_of(NULL);
    uint64_t used = s->fd_base + TD_FD_SLACK + s->nclients + s->ring_fds + closing + s->http_conns;
    if (used + TD_SCM_MAX_FD <= s->fd_limit)
        return TD_FDS_READ;
    long open = td_fds_open(); /* the bookkeeping's upper bound may be far off: count */
    if (open >= 0) {
        /* The closer thread's descriptors are open ones, but for what it
         * reserved for a take under way. */
        used = (uint64_t)open + TD_FD_SLACK + td_closer_reserved();
        if (used + TD_SCM_MAX_FD <= s->fd_limit)
            return TD_FDS_READ;
    }
    /* What the input carries, exactly where the kernel tells: the bytes
     * queued, then the descriptors in all of them (only this thread reads
     * c, so the queue only grows between the two: a read of those bytes
     * takes no more descriptors than counted). Else a peek, which tells
     * only whether they carry any: a message's worth is assumed. A peek
     * cannot tell where the first message with descriptors starts (the
     * kernel's peek walks on past its length to it), so with it events sent
     * before a RING frame were refused, or waited, with the RING. */
    uint64_t need = TD_SCM_MAX_FD;
    int queued = 0;
    long fds = -1;
    if (ioctl(c->fd, FIONREAD, &queued) == 0 && queued > 0 && (fds = queued_fds(c->fd)) >= 0) {
        need = (uint64_t)fds;
        if (*len > (size_t)queued)
            *len = (size_t)queued;
    } else {
        int carries = carries_descriptors(c, buf, len);
        if (carries < 0)
            return TD_FDS_NONE;
        if (carries == 0)
            return TD_FDS_READ;
    }
    if (used + need <= s->fd_limit)
        return TD_FDS_READ;
    /* Room comes back as the closer catches up, if what it holds is enough. */
    used -= closing < used ? closing : used;
    return used + need <= s->fd_limit ? TD_FDS_WAIT : TD_FDS_REFUSE;
}

ssize_t td_fds_recv(td_server *s, td_client *c, void *buf, size_t len, td_fds_verdict *v) {
    pthread_mutex_lock(&intake);
    *v = gate(s, c, buf, &len);
    ssize_t n = *v == TD_FDS_READ ? td_ring_recv(s, c, buf, len) : -1;
    int e = errno;
    pthread_mutex_unlock(&intake);
    errno = e; /* the read's, or the peek's */
    return n;
}
