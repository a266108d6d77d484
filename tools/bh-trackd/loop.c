/*
 * loop.c - bh-trackd's event loop.
 *
 * Owns: the listening sockets (a lock file per socket path, so two servers
 * never both bind it; a liveness probe that only calls a socket stale when
 * connect() says nobody listens; removing at exit only the file this server
 * bound), accepting clients (credentials, connection caps per uid and in
 * total, a spare descriptor to refuse cleanly when descriptors run out; TT
 * clients at the total cap are left in the listen backlog instead), the
 * signals (SIGINT/SIGTERM stop, SIGHUP reopens the log and writes the
 * summary), the loop's tick (timeouts, orphans, periodic summary), shutdown.
 * Must never: take over or remove a socket it did not bind, accept a peer
 * that is not this user, root or --allow-uid, or block in anything but
 * epoll_wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "trackd.h"
#include "tt_table.h"

/* ======================== Accepting ======================== */

static int peer_allowed(const td_server *s, uid_t uid) {
    if (uid == 0 || uid == geteuid())
        return 1;
    for (int i = 0; i < s->nallow; i++)
        if (s->allow[i] == uid)
            return 1;
    return 0;
}

/* A uid's descriptors: its connections, the ring descriptors they hold
 * waiting for their RING frame and the ones they passed that are not closed
 * yet (all within --max-connections-per-uid). */
uint64_t td_descriptors_of(const td_server *s, uid_t uid) {
    uint64_t n = td_closing_of(&uid);
    for (const td_client *c = s->clients; c != NULL; c = c->next)
        n += c->uid == uid ? 1u + (unsigned)c->nfds : 0u;
    return n;
}

/* Tells a native peer why (one ERROR frame, if the socket takes it now) and
 * closes. */
static void refuse(td_server *s, int fd, int compat, bh_status code, const char *why) {
    s->refused++;
    if (!compat) {
        uint8_t f[TD_ERROR_FRAME_MAX];
        (void)send(fd, f, td_error_frame(f, code, why), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    td_close_conn(s, fd);
}

/* Out of descriptors: the spare one makes room to accept the pending
 * connection and refuse it, instead of leaving it to spin the loop. */
static void refuse_with_spare(td_server *s, int lfd, int compat) {
    if (s->spare < 0)
        return;
    close(s->spare);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        refuse(s, fd, compat, BH_EBUSY, "server out of file descriptors");
    s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    td_log(s, TD_WARN, "out of file descriptors; refused a connection");
}

static void on_client(td_server *s, td_client *c, uint32_t events);

/* Tags for the fixed descriptors in epoll (clients carry their td_client*). */
static char tag_listen, tag_compat, tag_signal, tag_http;

int td_conns_full(const td_server *s) {
    return s->nclients + s->ring_fds + td_closing_of(NULL) >= s->max_conns;
}

/* Starved connections are read again every tick: each is let in again,
 * waits again or is refused (fds.c's gate at its next read). */
static void feed_starved(td_server *s) {
    if (!s->starving)
        return;
    s->starving = 0;
    for (td_client *c = s->clients; c != NULL; c = c->next) {
        if (c->starved) {
            c->starved = 0;
            td_rewatch(s, c);
        }
    }
}

/* At the connection cap (or out of descriptors), TT clients are left in the
 * listen backlog instead of being accepted and closed: a TT client whose
 * socket is closed dies of SIGPIPE on its next send, one that waits only
 * waits (its connect returns, its first records sit in the socket; with the
 * backlog full, its connect waits or fails). Accepting resumes when there
 * is room again (tick). */
static void compat_wait(td_server *s, int waiting) {
    if (s->tt_waiting == waiting)
        return;
    struct epoll_event ev = {.events = waiting ? 0 : EPOLLIN, .data.ptr = &tag_compat};
    (void)epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->tt.fd, &ev);
    s->tt_waiting = waiting;
    if (waiting) {
        s->compat_waits++;
        td_log(s, TD_WARN, "connection cap reached (%" PRIu64 " open): TT clients wait in the backlog",
               s->nclients);
    }
}

static void accept_clients(td_server *s, int lfd, int compat) {
    for (int i = 0; i < TD_ACCEPT_SLICE; i++) {
        if (compat && td_conns_full(s)) {
            compat_wait(s, 1);
            return;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if ((errno == EMFILE || errno == ENFILE) && compat)
                compat_wait(s, 1);
            else if (errno == EMFILE || errno == ENFILE)
                refuse_with_spare(s, lfd, compat);
            return;
        }
        td_fds_oob_inline(fd); /* before anything reads it (fds.c) */
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || !peer_allowed(s, cred.uid)) {
            s->rejected++;
            td_log(s, TD_WARN, "rejected peer (uid %d): not this user, not root, not --allow-uid",
                   (int)cred.uid);
            td_close_conn(s, fd);
            continue;
        }
        if (td_conns_full(s) || td_descriptors_of(s, cred.uid) >= s->max_conns_per_uid) {
            td_log(s, TD_WARN,
                   "refused a connection of uid %d (pid %d): %" PRIu64 " open, limits %" PRIu64
                   " per uid and %" PRIu64 " in total",
                   (int)cred.uid, (int)cred.pid, s->nclients, s->max_conns_per_uid, s->max_conns);
            refuse(s, fd, compat, BH_EBUSY, "too many connections");
            continue;
        }
        td_client *c = calloc(1, sizeof(*c));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (c == NULL || epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            td_close_conn(s, fd);
            free(c);
            continue;
        }
        c->fd = fd;
        c->compat = compat;
        c->pid = cred.pid;
        c->uid = cred.uid;
        c->since_ms = td_now_ms();
        c->accepted = td_boot_ticks();
        c->next = s->clients;
        s->clients = c;
        s->nclients++;
        s->connections++;
        /* Clients send as soon as they are connected: what is there is read
         * now, not a loop turn later. */
        on_client(s, c, EPOLLIN);
    }
}

/* ======================== Listening sockets ======================== */

/* Holds path.lock (flock) for the server's lifetime: of two servers started
 * together on one path, exactly one gets past here. The lock file stays
 * (removing it would let a third server lock a new file while the second
 * still holds the old one). */
static int lock_path(td_server *s, const char *path) {
    char lock[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
    snprintf(lock, sizeof(lock), "%s.lock", path);
    int fd = open(lock, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        td_log(s, TD_ERROR, "cannot use lock file %s: %s", lock,
               fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        td_log(s, TD_ERROR, "another server holds %s; not starting a second one on %s", lock, path);
        close(fd);
        return -1;
    }
    return fd;
}

/* 1 if path is a socket some server listens on (or might: any answer but
 * "nobody listens" counts as live, so a socket we cannot probe, say another
 * user's, is never taken), 0 if stale. */
static int socket_live(const struct sockaddr_un *sa) {
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return 1;
    int rc = connect(probe, (const struct sockaddr *)sa, sizeof(*sa));
    int e = errno;
    close(probe);
    return rc == 0 || (e != ECONNREFUSED && e != ENOENT);
}

/* A socket the service manager bound: used as it is (its file, mode and
 * removal are the manager's), only made non-blocking like our own. */
static int adopt_listener(td_listener *l, int fd) {
    l->path = NULL;
    l->lockfd = -1;
    l->fd = fd;
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ? -1 : 0;
}

static int listen_on(td_server *s, td_listener *l, const char *path, int activated) {
    if (activated >= 0)
        return adopt_listener(l, activated);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    l->path = path;
    l->fd = l->lockfd = -1;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        td_log(s, TD_ERROR, "socket path too long (at most %zu bytes): %s", sizeof(sa.sun_path) - 1, path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if ((l->lockfd = lock_path(s, path)) < 0)
        return -1;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            td_log(s, TD_ERROR, "%s exists and is not a socket; not touching it", path);
            return -1;
        }
        if (socket_live(&sa)) {
            td_log(s, TD_ERROR, "a server is (or may be) listening on %s; not taking it over", path);
            return -1;
        }
        unlink(path);
    }
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0)
        return -1;
    /* Without --allow-uid only this user (and root) may connect: 0600. With
     * it, the file is 0666 and the peer check in accept_clients decides. */
    mode_t mode = s->nallow > 0 ? 0666 : 0600;
    mode_t old = umask(0177);
    int rc = bind(l->fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || chmod(path, mode) != 0 || lstat(path, &st) != 0 || listen(l->fd, 128) != 0) {
        td_log(s, TD_ERROR, "cannot listen on %s: %s", path, strerror(errno));
        return -1;
    }
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    return 0;
}

/* Removes the socket file only if it is still the one this server bound. */
static void close_listener(td_listener *l) {
    struct stat st;
    if (l->fd >= 0 && l->path != NULL && lstat(l->path, &st) == 0 && st.st_dev == l->dev &&
        st.st_ino == l->ino)
        unlink(l->path);
    if (l->fd >= 0)
        close(l->fd);
    if (l->lockfd >= 0)
        close(l->lockfd);
    l->fd = l->lockfd = -1;
}

static int add_fd(td_server *s, int fd, void *tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* ======================== Loop ======================== */

static void tick(td_server *s) {
    uint64_t now = td_now_ms();
    for (td_client *c = s->clients, *next; c != NULL; c = next) {
        next = c->next;
        td_check_timeouts(s, c, now);
        if (c->dead)
            td_close_client(s, c);
    }
    if (s->tt_waiting && !td_conns_full(s))
        compat_wait(s, 0);
    feed_starved(s);
    td_check_orphans(s);
    td_check_departed(s);
    td_log_tick(s, 0);
    td_summary_reap(s, 0);
    if (s->summary_path != NULL && s->summary_ms != 0 && now >= s->next_summary_ms) {
        td_summary_start(s);
        s->next_summary_ms = now + s->summary_ms;
    }
}

/* Reads the pending signals; returns 0 to stop. */
static int on_signals(td_server *s) {
    struct signalfd_siginfo si;
    int running = 1;
    while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            td_reopen_log(s);
            if (s->summary_path != NULL)
                td_summary_start(s);
        } else {
            running = 0;
        }
    }
    return running;
}

static void on_client(td_server *s, td_client *c, uint32_t events) {
    if (events & EPOLLOUT)
        td_flush_out(s, c);
    int resumed = td_compat_resume(s, c, events);
    if ((events & EPOLLIN) || resumed)
        td_read_client(s, c);
    if ((events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLIN) && !resumed)
        c->dead = 1; /* nothing left to read, nobody to write to */
    if (c->dead || (c->closing && c->out_off >= c->out_len))
        td_close_client(s, c);
}

static int start(td_server *s) {
    signal(SIGPIPE, SIG_IGN);
    (void)td_fds_fit(s, 0); /* the limit raised before anything is opened */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->track = bh_track_new(s->max_live);
    s->tt_table = td_tt_new(s->max_live); /* one bound for TT's table as for a client's live set */
    s->native.fd = s->native.lockfd = s->tt.fd = s->tt.lockfd = -1;
    if (s->sigfd < 0 || s->epfd < 0 || s->track == NULL || s->tt_table == NULL || td_take_activated(s) != 0)
        return -1;
    bh_track_set_max_groups(s->track, (size_t)s->max_groups);
    if (listen_on(s, &s->native, s->socket_path, s->act_native) != 0 ||
        add_fd(s, s->native.fd, &tag_listen) != 0)
        return -1;
    if (s->compat &&
        (listen_on(s, &s->tt, s->compat_path, s->act_compat) != 0 || add_fd(s, s->tt.fd, &tag_compat) != 0))
        return -1;
    if (add_fd(s, s->sigfd, &tag_signal) != 0)
        return -1;
    /* The caps from the descriptors counted open, not assumed: whatever the
     * server inherited counts (150 inherited left too few for a message's
     * descriptors under caps that assumed 24). */
    if (td_fds_fit(s, 1) != 0 || td_web_open(s, &tag_http) != 0)
        return -1;
    return td_fds_fit(s, 2);
}

static void stop(td_server *s) {
    s->stopping = 1;
    while (s->clients != NULL)
        td_close_client(s, s->clients);
    td_web_close(s);
    close_listener(&s->native);
    close_listener(&s->tt);
    td_free_orphans(s);
    td_peer_free(s);
    td_fair_free(s);
    bh_track_free(s->track);
    s->track = NULL;
    td_tt_free(s->tt_table);
    s->tt_table = NULL;
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->sigfd >= 0)
        close(s->sigfd);
    if (s->spare >= 0)
        close(s->spare);
}

int td_serve(td_server *s) {
    if (start(s) != 0) {
        stop(s);
        return 1;
    }
    td_log(s, TD_INFO, "listening on %s%s%s", s->act_native >= 0 ? "(socket activation)" : s->socket_path,
           s->compat ? " and (compat) " : "",
           !s->compat           ? ""
           : s->act_compat >= 0 ? "(socket activation)"
                                : s->compat_path);
    s->next_summary_ms = td_now_ms() + s->summary_ms;
    int running = 1;
    uint64_t last_tick = 0;
    while (running) {
        struct epoll_event evs[64];
        int n = epoll_wait(
            s->epfd, evs, 64,
            td_gone_timeout(s, td_web_timeout(s, td_rings_timeout(s, td_closer_timeout(TD_TICK_MS)))));
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &tag_signal)
                running = on_signals(s) && running;
            else if (tag == &tag_listen)
                accept_clients(s, s->native.fd, 0);
            else if (tag == &tag_compat)
                accept_clients(s, s->tt.fd, 1);
            else if (tag == &tag_http)
                continue; /* served below, once per wakeup */
            else
                on_client(s, tag, evs[i].events);
        }
        td_web_run(s);
        td_rings_run(s);
        td_gone_run(s); /* between two of its slices every client is served */
        uint64_t now = td_now_ms();
        if (now - last_tick >= TD_TICK_MS / 2) {
            tick(s);
            last_tick = now;
        }
    }
    td_log_tick(s, 1);
    td_log(s, TD_INFO, "shutting down");
    s->stopping = 1; /* rings left are drained at once: no loop turn follows */
    while (s->clients != NULL)
        td_close_client(s, s->clients);
    td_gone_finish(s);     /* drops under way end: the summary's counts are final */
    td_summary_reap(s, 1); /* then the last one, complete, written here */
    int rc = s->summary_path != NULL ? td_write_summary(s) : 0;
    stop(s);
    return rc == 0 ? 0 : 1;
}
