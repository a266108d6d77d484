/*
 * ring_fds.c - the descriptors that come with a connection's bytes
 * (SCM_RIGHTS): memfds kept for the RING frame that names them (ring.c maps
 * them), anything else refused.
 *
 * Owns: td_ring_recv and what it keeps per connection (c->fds, at most
 * TD_RING_FDS, counted in s->ring_fds against the connection caps).
 * Must never: keep a descriptor that is not a memfd, close one that may
 * wait on the loop (closer.c closes those), or keep more than the caps let.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trackd.h"

/* ======================== Descriptors ======================== */

/* A descriptor a client passed: kept (at most TD_RING_FDS wait for their
 * RING frame, within the connection caps; a compat or query connection gets
 * none), or closed. 0, or -1 if it is not a memfd (only memfds are passed on
 * purpose: anything else refuses the connection, and its close, which may
 * wait, is closer.c's). F_GET_SEALS answers from the file's kind alone (no
 * I/O, nothing that can wait), and only memfds and other shmem files have
 * seals; such a file's close never waits (shmem has no flush: a last close
 * only frees its pages), so every close of one in this file is in place. */
static int take_fd(td_server *s, td_client *c, int fd) {
    if (fcntl(fd, F_GET_SEALS) < 0) {
        s->fds_refused++;
        td_close_passed(s, c->uid, fd);
        return -1;
    }
    /* A waiting descriptor counts as a connection: the caps fit the
     * descriptor limit. */
    if (c->nfds < TD_RING_FDS && !c->compat && !c->control && !td_conns_full(s) &&
        td_descriptors_of(s, c->uid) < s->max_conns_per_uid) {
        c->fds[c->nfds++] = fd;
        s->ring_fds++;
    } else {
        close(fd); /* a memfd (above); the RING frame that wanted it is then malformed */
    }
    return 0;
}

ssize_t td_ring_recv(td_server *s, td_client *c, void *buf, size_t len) {
    union {
        char b[CMSG_SPACE(TD_SCM_MAX_FD * sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = {buf, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    ssize_t n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    int foreign = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
            foreign |= take_fd(s, c, fd) != 0;
        }
    }
    /* Cut descriptors (out of descriptors ourselves): the kernel closed them
     * already; the client is refused all the same, it sent what we cannot take. */
    if (m.msg_flags & MSG_CTRUNC)
        td_malformed(s, c, "descriptors cut (server out of descriptors)");
    else if (foreign)
        td_malformed(s, c, "passed a descriptor that is not a memfd");
    return n;
}
