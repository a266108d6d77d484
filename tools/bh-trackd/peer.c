/*
 * peer.c - which process a bh-trackd connection is, when the server cannot
 * see its pid.
 *
 * A server in its own PID namespace (a container beside host processes, the
 * socket bind-mounted) gets pid 0 from SO_PEERCRED for every peer outside
 * it; a server whose /proc is another namespace's finds another process, or
 * none, under a peer's pid. Such a peer is "unverified": it gets a process
 * key of its own, at or above TD_UNVERIFIED_BASE (never a pid: Linux pids
 * stay below 2^22), from what it states in HELLO, (pid, start time, uid),
 * so its reconnections come back to the same key; a peer that states no
 * start time (an older library, a TT client) gets a key per connection.
 *
 * A pid the kernel gave to another process is not visible either for a
 * connection accepted before that process started (the one that connected
 * ended): liveness.c's td_pid_incarnation makes the earlier process's
 * connections clients of their own (td_peer_detach) when the new one says
 * who it is.
 *
 * Owns: the visibility check, the unverified keys and what each stands for
 * (the pid the client stated), until its process leaves the client list.
 * Must never: give two connections that state different processes one key,
 * merge an unverified peer with a visible pid, or let /proc or a signal
 * decide whether an unverified process is alive (liveness.c asks
 * td_unverified first).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "otab.h"
#include "procstart.h"
#include "trackd.h"

/* What an unverified key stands for (table by key). */
typedef struct by_key {
    okey k; /* a: the key */
    pid_t stated;
    uint64_t start; /* 0: a key of one connection */
    uid_t uid;
} by_key;

/* The key of a stated process (table by identity). */
typedef struct by_id {
    okey k; /* a: start time, b: stated pid, c: uid */
    uint32_t key;
} by_id;

typedef struct td_peers {
    otab keys, ids;
    uint32_t next; /* the next key to try, below TD_UNVERIFIED_BASE */
} td_peers;

/* 1 if /proc is this server's PID namespace's (its own entry is its pid):
 * only then is any pid there a process's. Asked once: it does not change. */
static int proc_ours(void) {
    static int ours = -1;
    if (ours < 0) {
        char buf[32];
        ssize_t n = readlink("/proc/self", buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        ours = n > 0 && strtol(buf, NULL, 10) == (long)getpid();
    }
    return ours;
}

uint64_t td_boot_ticks(void) {
    struct timespec ts;
    long hz = sysconf(_SC_CLK_TCK);
    clock_gettime(CLOCK_BOOTTIME, &ts);
    hz = hz > 0 ? hz : 100;
    /* Rounded down, as the kernel rounds a start time: a process that
     * started before an instant never reads as later than it. */
    return (uint64_t)ts.tv_sec * (uint64_t)hz + (uint64_t)ts.tv_nsec / (1000000000u / (uint64_t)hz);
}

/* 1 if c->pid (SO_PEERCRED) is the peer's pid as this server sees it: not 0
 * (the kernel's answer for a process outside our PID namespace), /proc is
 * ours, and the process there now is the one that connected: the start
 * time the peer stated (0: none) does not contradict /proc, and it did not
 * start after the connection was accepted (then the process that connected
 * ended and the kernel gave its pid to another, whose figures this peer
 * would write: a descendant of any user's process that keeps its
 * connection can wait for a pid to be reused). *seen: the start time in
 * /proc, 0 if none. A pid no longer in /proc is a process that already
 * ended: still its pid. */
static int visible(const td_client *c, uint64_t start, uint64_t *seen) {
    *seen = 0;
    if (c->pid <= 0 || !proc_ours())
        return 0;
    if (bh_proc_start(c->pid, seen) != 0) {
        *seen = 0;
        return 1;
    }
    return (start == 0 || *seen == start) && *seen <= c->accepted;
}

static td_peers *peers(td_server *s) {
    if (s->peers == NULL && (s->peers = calloc(1, sizeof(*s->peers))) != NULL) {
        ot_init(&s->peers->keys, sizeof(by_key));
        ot_init(&s->peers->ids, sizeof(by_id));
    }
    return s->peers;
}

/* A key no process holds (after 2^30 of them the counter wraps: keys still
 * held are skipped). */
static uint32_t fresh_key(td_peers *t) {
    for (;;) {
        uint32_t key = TD_UNVERIFIED_BASE + (t->next++ & (TD_UNVERIFIED_BASE - 1));
        if (ot_find(&t->keys, key, 0, 0) == NULL)
            return key;
    }
}

/* c (whose pid this server cannot see, or is not its process's) gets the
 * key of the process it states, or a fresh one. 0, or -1 (ENOMEM). */
static int unverified(td_server *s, td_client *c, uint32_t stated, uint64_t start) {
    td_peers *t = peers(s);
    if (t == NULL)
        return -1;
    if (stated >= TD_UNVERIFIED_BASE)
        stated = 0; /* no pid: its key must not read as one */
    s->unverified_peers++;
    by_id *id = start != 0 ? ot_find(&t->ids, start, stated, c->uid) : NULL;
    if (id != NULL) { /* the same process, back */
        c->pid = (pid_t)id->key;
        return 0;
    }
    uint32_t key = fresh_key(t);
    by_key *k = ot_insert(&t->keys, key, 0, 0);
    if (k == NULL)
        return -1;
    k->stated = (pid_t)stated;
    k->start = start;
    k->uid = c->uid;
    if (start != 0) {
        if ((id = ot_insert(&t->ids, start, stated, c->uid)) == NULL) {
            ot_remove(&t->keys, ot_find(&t->keys, key, 0, 0));
            return -1;
        }
        id->key = key;
    }
    td_log(s, TD_INFO,
           "pid %u (as it states; unverified: this server cannot see that process) is %u in this log "
           "and pid %u* in stats",
           stated, key, stated);
    c->pid = (pid_t)key;
    return 0;
}

int td_peer_identify(td_server *s, td_client *c, uint32_t stated, uint64_t start) {
    uint64_t seen;
    if (!visible(c, start, &seen))
        return unverified(s, c, stated, start);
    c->start = seen;
    td_pid_incarnation(s, c);
    return 0;
}

int td_peer_detach(td_server *s, td_client *c) {
    c->start = 0;
    return unverified(s, c, (uint32_t)c->pid, 0);
}

pid_t td_shown_pid(const td_server *s, pid_t pid) {
    if (!td_unverified(pid))
        return pid;
    const by_key *k = s->peers != NULL ? ot_find(&s->peers->keys, (uint32_t)pid, 0, 0) : NULL;
    return k != NULL ? k->stated : 0;
}

const char *td_pid_text(const td_server *s, pid_t pid, char buf[16]) {
    snprintf(buf, 16, "%d%s", (int)td_shown_pid(s, pid), td_unverified(pid) ? "*" : "");
    return buf;
}

void td_peer_forget(td_server *s, pid_t pid) {
    by_key *k = td_unverified(pid) && s->peers != NULL ? ot_find(&s->peers->keys, (uint32_t)pid, 0, 0) : NULL;
    if (k == NULL)
        return;
    if (k->start != 0) {
        by_id *id = ot_find(&s->peers->ids, k->start, (uint32_t)k->stated, k->uid);
        if (id != NULL)
            ot_remove(&s->peers->ids, id); /* moves slots of ids only: k stays valid */
    }
    ot_remove(&s->peers->keys, k);
}

void td_peer_free(td_server *s) {
    if (s->peers == NULL)
        return;
    ot_free(&s->peers->keys);
    ot_free(&s->peers->ids);
    free(s->peers);
    s->peers = NULL;
}
