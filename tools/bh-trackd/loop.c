/*
 * loop.c - bh-trackd's event loop.
 *
 * Owns: the listening sockets (creating, probing for a live server, removing
 * at exit), accepting clients and checking their credentials, the signals
 * that stop the server, one epoll loop dispatching to conn.c, and shutdown.
 * Must never: take over a socket a live server listens on, accept a peer
 * that is not this user, root or --allow-uid, or block in anything but
 * epoll_wait.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "trackd.h"

/* ======================== Accepting ======================== */

static int peer_allowed(const td_server *s, uid_t uid) {
    if (uid == 0 || uid == geteuid())
        return 1;
    for (int i = 0; i < s->nallow; i++)
        if (s->allow[i] == uid)
            return 1;
    return 0;
}

static void accept_clients(td_server *s, int lfd, int compat) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: the pending connection keeps the
                 * listener readable; pause instead of spinning on it. */
                td_log(s, "out of file descriptors; not accepting for 100 ms");
                nanosleep(&(struct timespec){0, 100000000}, NULL);
            }
            return;
        }
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || !peer_allowed(s, cred.uid)) {
            s->rejected++;
            td_log(s, "rejected peer (uid %d): not this user, not root, not --allow-uid", (int)cred.uid);
            close(fd);
            continue;
        }
        td_client *c = calloc(1, sizeof(*c));
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

/* ======================== Listening sockets ======================== */

static int listen_on(td_server *s, const char *path) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        td_log(s, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            td_log(s, "%s exists and is not a socket; not touching it", path);
            return -1;
        }
        /* A live server answers; a stale file from a dead one refuses. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            td_log(s, "another server is listening on %s; not stealing it", path);
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
        td_log(s, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int add_fd(td_server *s, int fd, void *tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* ======================== Loop ======================== */

/* Tags for the fixed descriptors in epoll (clients carry their td_client*). */
static char tag_listen, tag_compat, tag_signal, tag_http;

static void shutdown_server(td_server *s) {
    while (s->clients != NULL)
        td_close_client(s, s->clients);
}

int td_serve(td_server *s) {
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
    if (td_web_open(s, &tag_http) != 0) {
        unlink(s->socket_path);
        if (s->compat)
            unlink(s->compat_path);
        return 1;
    }
    td_log(s, "listening on %s%s%s", s->socket_path, s->compat ? " and (compat) " : "",
           s->compat ? s->compat_path : "");

    int running = 1;
    while (running) {
        struct epoll_event evs[64];
        int n = epoll_wait(s->epfd, evs, 64, td_web_timeout(s, s->orphans ? 50 : 1000));
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
            } else if (tag == &tag_http) {
                continue; /* served below, once per wakeup */
            } else {
                td_client *c = tag;
                if (evs[i].events & EPOLLOUT)
                    td_flush_out(s, c);
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    td_read_client(s, c);
                if (c->closing && c->out_off >= c->out_len)
                    td_close_client(s, c);
            }
        }
        td_check_orphans(s);
        td_check_departed(s);
        td_web_run(s);
    }
    td_log(s, "shutting down");
    shutdown_server(s);
    td_web_close(s);
    int rc = s->summary_path != NULL ? td_write_summary(s) : 0;
    unlink(s->socket_path);
    if (s->compat)
        unlink(s->compat_path);
    td_free_orphans(s);
    bh_track_free(s->track);
    close(s->lfd);
    if (s->cfd >= 0)
        close(s->cfd);
    close(s->epfd);
    close(s->sigfd);
    return rc == 0 ? 0 : 1;
}
