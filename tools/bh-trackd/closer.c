/*
 * closer.c - closing the descriptors clients pass (SCM_RIGHTS) off the loop.
 *
 * A descriptor a client passed is its object: closing the last reference
 * runs that object's release in the closing thread, and some releases wait.
 * A TCP socket with SO_LINGER and unsent data to a peer that does not read
 * holds close() for the linger time (8 s measured on the loop in 0.4's ring
 * audit); a FUSE file waits for its daemon's answer to the flush. So every
 * descriptor a client passed that is not a memfd (ring.c's take_fd: only a
 * memfd's close is known never to wait) is handed here, and one thread of
 * its own closes them, one at a time: a close that waits holds that thread,
 * never the loop.
 *
 * Owns: the closer thread (started at the first descriptor handed over), its
 * bounded queue (TD_CLOSE_QUEUE), the descriptors parked while the queue is
 * full (moved to the queue again as it empties, on the loop's next turn),
 * and how many of each uid's descriptors are still waiting to be closed (they
 * count against the connection caps, like a connection), with those the
 * thread took out of a socket's queue and reserved for a take under way,
 * and the Unix sockets it put off until the queue's closes made room to
 * take their queue out: each counted for the uid that passed it (or the
 * socket it came out of), exactly, whatever the thread works on meanwhile.
 * Must never: take descriptors out of a socket without room for them,
 * reserved where the loop counts it (fds.c), close a client's descriptor on
 * the loop thread, block the loop
 * (the loop only takes the queue's lock, which the closer thread holds for a
 * few stores or to grow its list of sockets put off, never across a close), or lose a descriptor (one that
 * finds no room is parked and counted, never closed in place).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "trackd.h"

#define TD_CLOSE_QUEUE 256 /* descriptors waiting for the closer thread; past it they are parked */

typedef struct pending {
    int fd;
    uid_t uid; /* whose connection passed it: it counts against that uid's caps until closed */
} pending;

/* Shared between the loop and the closer thread: every field under q.lock.
 * The lock is never held across a close() or anything else that can wait,
 * so the loop taking it waits at most for a few stores. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* signalled (under lock) when the queue gets a descriptor */
    pending q[TD_CLOSE_QUEUE];
    unsigned head, n; /* the oldest entry and the count (a ring over q) */
    int busy;         /* the closer thread is closing busy_uid's descriptor now */
    uid_t busy_uid;
    /* What the thread works on (the busy descriptor, or one of later) is
     * root_uid's, and so is everything it takes out of it: */
    uid_t root_uid;
    uint64_t taken;    /* descriptors it took out of that one's queue, open until it closes them */
    uint64_t reserved; /* descriptors a take under way may install (not open yet) */
    /* Unix sockets whose queue found no room while other descriptors waited
     * in the queue: closed after those, whose closes make the room. Each
     * keeps the uid it came from (the thread may meanwhile work on another
     * uid's); written by the thread, counted by the loop. */
    pending *later;
    size_t nlater, later_cap;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* The loop's alone (no lock): descriptors that found the queue full, oldest
 * first, and whether the thread runs. */
static pending *parked;
static size_t nparked, parked_cap;
static int started;

/* ======================== The closer thread ======================== */

/* The closer thread's own: descriptors taken out of the Unix sockets it
 * closes, closed next, each the same way. */
static int *taken;
static size_t ntaken, taken_cap;

/* 1 if fd is kept to be closed later; 0 if it had to be closed now (no memory). */
static int keep(int fd) {
    if (ntaken == taken_cap) {
        size_t c = taken_cap ? taken_cap * 2 : 64;
        int *na = realloc(taken, c * sizeof(*na));
        if (na == NULL) {
            close(fd);
            return 0;
        }
        taken = na;
        taken_cap = c;
    }
    taken[ntaken++] = fd;
    return 1;
}

/* fd, taken out of root_uid's (first: the busy descriptor itself), waits
 * in later, counted there from now on. 0 without memory for it. */
static int put_later(int fd, int first) {
    pthread_mutex_lock(&q.lock);
    if (q.nlater == q.later_cap) { /* under the lock: the loop walks it */
        size_t c = q.later_cap ? q.later_cap * 2 : 64;
        pending *nl = realloc(q.later, c * sizeof(*nl));
        if (nl == NULL) {
            pthread_mutex_unlock(&q.lock);
            return 0;
        }
        q.later = nl;
        q.later_cap = c;
    }
    q.later[q.nlater++] = (pending){fd, q.root_uid};
    if (first)
        q.busy = 0;
    else
        q.taken--;
    pthread_mutex_unlock(&q.lock);
    return 1;
}

/* The most messages taken out of one socket (a datagram socket's queue,
 * shut, still reads 0 for ever): more than a socket buffer holds. */
#define TD_TAKE_MESSAGES 4096

/* Room for a take of up to n descriptors, reserved: the loop counts the
 * reservation (fds.c), and the take is not cut (a cut would release here
 * what the take was for: harmless to the loop, but this thread would wait).
 * Reserved under the loop's intake lock, so never between the loop's count
 * and its read. 1, or 0: no room. */
static int reserve(uint64_t n) {
    td_fds_intake(1);
    long open = td_fds_open();
    int room = open >= 0 && (uint64_t)open + n + TD_FD_SLACK <= td_fds_limit();
    if (room) {
        pthread_mutex_lock(&q.lock);
        q.reserved += n;
        pthread_mutex_unlock(&q.lock);
    }
    td_fds_intake(0);
    return room;
}

/* A take that reserved n installed got (kept: open until closed). */
static void took(uint64_t n, uint64_t got) {
    pthread_mutex_lock(&q.lock);
    q.reserved -= n;
    q.taken += got;
    pthread_mutex_unlock(&q.lock);
}

/* One it took is closed. */
static void closed_taken(void) {
    pthread_mutex_lock(&q.lock);
    q.taken--;
    pthread_mutex_unlock(&q.lock);
}

/* A Unix socket's close releases what its queue holds, in the thread that
 * closes it: a lingering TCP socket passed inside one the client passed (or
 * inside a connection's unread input) held this thread for its linger time,
 * whatever the outer socket's SO_LINGER said. So nothing more may arrive
 * (SHUT_RD), and what is queued is taken out (a listening socket's
 * connections accepted) to be closed like the socket itself. 1 once
 * nothing is left queued (or it is no Unix socket); 0 if there was no room
 * for the rest: what is left is released with the socket, here. */
static int take_queued(int fd) {
    int domain = 0, type = 0;
    socklen_t dl = sizeof(domain), tl = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0 || domain != AF_UNIX ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0)
        return 1;
    (void)shutdown(fd, SHUT_RD);
    td_fds_oob_inline(fd); /* a byte out of band is read, its descriptors taken */
    static char data[4096];
    for (int i = 0; i < TD_TAKE_MESSAGES; i++) {
        if (!reserve(TD_SCM_MAX_FD))
            return 0;
        union {
            char b[CMSG_SPACE(TD_SCM_MAX_FD * sizeof(int))];
            struct cmsghdr align;
        } cm;
        struct iovec iov = {data, sizeof(data)};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
        ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        int err = n < 0 ? errno : 0;
        if (err == EINVAL) { /* listening: its connections hold their clients' input */
            took(TD_SCM_MAX_FD, 0);
            for (int a = 0; a >= 0;) {
                if (!reserve(1))
                    return 0;
                a = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                took(1, a >= 0 ? (uint64_t)keep(a) : 0u);
            }
            return 1;
        }
        int fds = 0, kept = 0;
        for (struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; h != NULL; h = CMSG_NXTHDR(&m, h)) {
            if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
                continue;
            for (size_t k = 0; k < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++, fds++) {
                int got;
                memcpy(&got, CMSG_DATA(h) + k * sizeof(int), sizeof(int));
                kept += keep(got);
            }
        }
        took(TD_SCM_MAX_FD, (uint64_t)kept);
        if (n < 0 && err != EINTR)
            return 1; /* EAGAIN: nothing more */
        if (n == 0 && fds == 0 && type == SOCK_STREAM)
            return 1; /* its end */
    }
    return 1;
}

/* 1 if descriptors wait in the queue: closing them makes room. */
static int queue_waiting(void) {
    pthread_mutex_lock(&q.lock);
    int n = q.n > 0;
    pthread_mutex_unlock(&q.lock);
    return n;
}

/* Closes fd and everything it carries: a socket's lingering is turned off
 * first (a descriptor of another kind answers ENOTSOCK), a Unix socket's
 * queue taken out first. A Unix socket whose queue finds no room while
 * descriptors wait in the queue is closed after them (later): closed now,
 * what its queue holds was released here, and a lingering socket in it
 * held this thread its linger time (a message of that socket, then 252
 * pipe ends, under a limit of 300: the pipe ends, which made the room,
 * waited behind it). busy: fd is the queue's entry (counted busy), not one
 * taken (fd from later). */
static void defuse_and_close(int fd, int busy) {
    if (!keep(fd)) {
        if (!busy)
            closed_taken();
        return;
    }
    for (int first = busy; ntaken > 0; first = 0) { /* fd is popped first, alone on the stack */
        int d = taken[--ntaken];
        if (!take_queued(d) && queue_waiting() && put_later(d, first))
            continue;
        struct linger off = {0, 0};
        (void)setsockopt(d, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
        close(d);
        if (!first) /* one it took (fd itself is counted as busy) */
            closed_taken();
    }
}

static void *closer_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&q.lock);
    for (;;) {
        while (q.n == 0)
            pthread_cond_wait(&q.wake, &q.lock); /* releases the lock while it waits */
        pending p = q.q[q.head];
        q.head = (q.head + 1) % TD_CLOSE_QUEUE;
        q.n--;
        /* Still counted (busy) while it is being closed: it is open until
         * close() returns. */
        q.busy = 1;
        q.busy_uid = q.root_uid = p.uid;
        pthread_mutex_unlock(&q.lock);
        defuse_and_close(p.fd, 1);
        pthread_mutex_lock(&q.lock);
        q.busy = 0;
        while (q.n == 0 && q.nlater > 0) { /* the queue closed: room for them, if any comes */
            pending l = q.later[--q.nlater];
            q.taken++; /* the root of what the thread takes now, counted as taken */
            q.root_uid = l.uid;
            pthread_mutex_unlock(&q.lock);
            defuse_and_close(l.fd, 0);
            pthread_mutex_lock(&q.lock);
        }
    }
    return NULL;
}

/* Under q.lock: fd into the queue; 0, or -1 if it is full. */
static int push_locked(pending p) {
    if (q.n == TD_CLOSE_QUEUE)
        return -1;
    q.q[(q.head + q.n) % TD_CLOSE_QUEUE] = p;
    q.n++;
    return 0;
}

/* Starts the thread once. Its signal mask is the loop's (SIGINT, SIGTERM and
 * SIGHUP blocked: they are read from the signalfd), inherited at creation. */
static void start_closer(td_server *s) {
    if (started)
        return;
    pthread_t t;
    pthread_attr_t a;
    if (pthread_attr_init(&a) != 0)
        return;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED); /* it ends with the process */
    pthread_attr_setstacksize(&a, 64u << 10);
    if (pthread_create(&t, &a, closer_main, NULL) == 0)
        started = 1;
    else
        td_log(s, TD_ERROR, "cannot start the descriptor closer thread; passed descriptors wait open");
    pthread_attr_destroy(&a);
}

/* ======================== The loop's side ======================== */

/* Parked descriptors into the queue, oldest first, as far as it has room. */
static void unpark(void) {
    if (nparked == 0 || !started)
        return;
    size_t moved = 0;
    pthread_mutex_lock(&q.lock);
    while (moved < nparked && push_locked(parked[moved]) == 0)
        moved++;
    if (moved > 0)
        pthread_cond_signal(&q.wake);
    pthread_mutex_unlock(&q.lock);
    for (size_t i = moved; i < nparked; i++)
        parked[i - moved] = parked[i];
    nparked -= moved;
}

void td_close_passed(td_server *s, uid_t uid, int fd) {
    pending p = {fd, uid};
    start_closer(s);
    unpark(); /* the older ones first */
    int queued = -1;
    if (started && nparked == 0) {
        pthread_mutex_lock(&q.lock);
        queued = push_locked(p);
        if (queued == 0)
            pthread_cond_signal(&q.wake); /* under the lock: the thread cannot miss it */
        pthread_mutex_unlock(&q.lock);
    }
    if (queued == 0)
        return;
    /* No room (the thread is held by a close that waits): parked, open, and
     * counted against its uid until the queue takes it. */
    s->closes_parked++;
    if (nparked == parked_cap) {
        size_t cap = parked_cap ? parked_cap * 2 : 64;
        pending *np = realloc(parked, cap * sizeof(*np));
        if (np == NULL) {
            s->closes_lost++; /* left open for good: never closed on the loop */
            td_log(s, TD_ERROR, "out of memory parking a passed descriptor; it stays open");
            return;
        }
        parked = np;
        parked_cap = cap;
    }
    parked[nparked++] = p;
    td_log(s, TD_WARN, "descriptor closer busy: %zu passed descriptors parked", nparked);
}

void td_closer_run(void) { unpark(); }

int td_closer_timeout(int cap_ms) { return nparked > 0 && cap_ms > 1 ? 1 : cap_ms; }

void td_close_conn(td_server *s, int fd) {
    int queued = -1;
    (void)shutdown(fd, SHUT_RD); /* nothing more can be queued after this */
    if (ioctl(fd, SIOCINQ, &queued) == 0 && queued == 0) {
        close(fd); /* nothing was passed with input never read: its close is its own */
        return;
    }
    struct ucred cred = {0, 0, 0};
    socklen_t len = sizeof(cred);
    (void)getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    td_close_passed(s, cred.uid, fd);
}

uint64_t td_closing_of(const uid_t *uid) {
    /* Everybody's is the bookkeeping's sum (td_conns_full asks on every
     * accept and every descriptor passed): no walk of the queue. */
    if (uid == NULL) {
        pthread_mutex_lock(&q.lock);
        uint64_t all = (uint64_t)nparked + q.n + (q.busy != 0) + q.taken + q.reserved + q.nlater;
        pthread_mutex_unlock(&q.lock);
        return all;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < nparked; i++)
        n += parked[i].uid == *uid;
    pthread_mutex_lock(&q.lock);
    for (unsigned i = 0; i < q.n; i++)
        n += q.q[(q.head + i) % TD_CLOSE_QUEUE].uid == *uid;
    n += q.busy && q.busy_uid == *uid;
    n += q.root_uid == *uid ? q.taken + q.reserved : 0u; /* 0 but while it works on a root */
    for (size_t i = 0; i < q.nlater; i++)
        n += q.later[i].uid == *uid;
    pthread_mutex_unlock(&q.lock);
    return n;
}

uint64_t td_closer_reserved(void) {
    pthread_mutex_lock(&q.lock);
    uint64_t n = q.reserved;
    pthread_mutex_unlock(&q.lock);
    return n;
}
