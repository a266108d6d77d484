/*
 * liveness.c - bh-trackd's client processes.
 *
 * Owns: the pid -> program name table (from HELLO), the orphans (processes
 * whose last connection closed), deciding when one is gone (exited, checked
 * in /proc, --grace-ms passed, or another process at its pid said who it
 * is) and reporting what it still held as leaks,
 * in slices (the going list: 1M live dropped at once took 1.47 s, no other
 * client served meanwhile).
 * Must never: report leaks of a process that still has a reporter connection
 * open, ask /proc about an unverified process (peer.c: its pid is not ours
 * to look up), or signal or otherwise touch the client processes.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "trackd.h"
#include "tt_table.h"

void td_printable(char *name) {
    for (char *q = name; *q; q++) /* keep logs and JSON printable */
        if (*q < 0x20 || *q == '"' || *q == '\\' || (unsigned char)*q >= 0x7f)
            *q = '?';
}

const char *td_name_of(const td_server *s, pid_t pid) {
    if (pid == 0)
        return "(departed)"; /* the clients that aged out, summed */
    for (size_t i = 0; i < s->nnames; i++)
        if (s->names[i].pid == pid)
            return s->names[i].name;
    return "";
}

/* The slot a new pid's name goes to: a new one while fewer than
 * TD_MAX_NAMES are kept, else the slot of the process gone longest, else a
 * new one (the table grows: every name it holds is a process not gone,
 * which its connection or --grace-ms bounds). Never a process's that is not
 * gone: main before this took slot pid % 256 once 256 were kept, whoever's
 * it was, and a live process's rows showed another program's name. NULL:
 * out of memory (the name is not kept). */
static td_name *name_slot(td_server *s) {
    size_t oldest = s->nnames;
    for (size_t i = 0; s->nnames >= TD_MAX_NAMES && i < s->nnames; i++)
        if (s->names[i].gone_ms != 0 &&
            (oldest == s->nnames || s->names[i].gone_ms < s->names[oldest].gone_ms))
            oldest = i;
    if (oldest < s->nnames)
        return &s->names[oldest];
    if (s->nnames == s->names_cap) {
        size_t cap = s->names_cap != 0 ? s->names_cap * 2 : TD_MAX_NAMES;
        td_name *n = realloc(s->names, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        s->names = n;
        s->names_cap = cap;
    }
    return &s->names[s->nnames++];
}

void td_remember_name(td_server *s, pid_t pid, const char *name) {
    td_name *n = NULL;
    for (size_t i = 0; i < s->nnames && n == NULL; i++)
        if (s->names[i].pid == pid)
            n = &s->names[i];
    if (n == NULL && (n = name_slot(s)) == NULL)
        return;
    n->pid = pid;
    n->gone_ms = 0; /* back, or a new process */
    snprintf(n->name, sizeof(n->name), "%s", name);
}

/* pid was counted gone: its name stays (its rows are listed until
 * --forget-ms) but its slot may go to a new process's. */
static void name_gone(td_server *s, pid_t pid) {
    for (size_t i = 0; i < s->nnames; i++)
        if (s->names[i].pid == pid)
            s->names[i].gone_ms = td_now_ms() | 1; /* never 0 */
}

void td_name_from_proc(td_server *s, pid_t pid) {
    if (td_name_of(s, pid)[0] != '\0' || td_unverified(pid))
        return;
    char path[64], name[BH_WIRE_MAX_NAME + 1];
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    size_t n = fread(name, 1, sizeof(name) - 1, f);
    fclose(f);
    while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == ' '))
        n--;
    name[n] = '\0';
    td_printable(name);
    if (n > 0)
        td_remember_name(s, pid, name);
}

static void forget_name(td_server *s, pid_t pid) {
    for (size_t i = 0; i < s->nnames; i++) {
        if (s->names[i].pid == pid) {
            s->names[i] = s->names[--s->nnames];
            return;
        }
    }
}

static void on_leak(void *ctx, const bh_track_entry *e) {
    td_server *s = ctx;
    td_leak *l = &s->leaks[s->nleaks++ % TD_LEAKS_KEPT];
    l->pid = td_shown_pid(s, td_key_pid(e->client));
    l->unverified = td_unverified(td_key_pid(e->client));
    l->stream = td_key_stream(e->client);
    l->domain = e->device;
    l->address = e->address;
    l->size = e->size;
    l->age_ms = s->going_ms - e->since;
    /* Truncated to the leak record's 31 characters on purpose (a name is up to 255). */
    snprintf(l->name, sizeof(l->name), "%.*s", (int)sizeof(l->name) - 1,
             td_name_of(s, td_key_pid(e->client)));
    if (l->stream == 0 && s->tt_table != NULL) /* a compat client's: out of their share of the sums */
        td_tt_view_add(s->tt_table, (int32_t)BH_DOMAIN_DEVICE(e->device), BH_DOMAIN_KIND(e->device),
                       -(int64_t)e->size);
    char dom[64];
    char who[16];
    td_log(s, TD_WARN, "leak: pid %s stream %u %s address 0x%" PRIx64 " size %" PRIu64,
           td_pid_text(s, td_key_pid(e->client), who), td_key_stream(e->client),
           td_domain_text(dom, sizeof(dom), e->device), e->address, e->size);
}

/* Its process gone for --forget-ms: the client's figures join the
 * "(departed)" group (pid 0), so totals and counters stay whole while the
 * list of clients stays short, and everything else of it is freed. */
static void age_out(td_server *s, pid_t pid) {
    bh_track_retire_process(s->track, (uint32_t)pid, td_client_key(0, 0));
    forget_name(s, pid);
    td_peer_forget(s, pid);
}

/* The first of the departed list (oldest first) leaves it. */
static void retire_oldest(td_server *s) {
    td_departed *d = s->departed;
    /* A reused pid reporting again, or gone and being dropped, keeps its figures. */
    if (!td_pid_connected(s, d->pid) && td_going_of(s, d->pid) == NULL)
        age_out(s, d->pid);
    s->departed = d->next;
    if (s->departed == NULL)
        s->departed_last = NULL;
    s->departed_groups -= d->groups;
    free(d);
}

/* The drop of a process is over: counted gone, logged, and its figures
 * start aging out (the departed list). */
static void gone_done(td_server *s, pid_t pid, uint64_t n, uint64_t start) {
    s->processes_gone++;
    name_gone(s, pid);
    char who[16];
    if (n > 0)
        td_log(s, TD_WARN, "pid %s (%s) ended with %" PRIu64 " live allocation%s", td_pid_text(s, pid, who),
               td_name_of(s, pid), n, n == 1 ? " (a leak)" : "s (leaks)");
    td_departed *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return; /* it stays listed: only its aging out is lost */
    d->pid = pid;
    d->since_ms = td_now_ms();
    d->ticks = td_boot_ticks();
    d->start = start;
    size_t groups = bh_track_process_groups(s->track, (uint32_t)pid);
    d->groups = groups > 0 ? groups : 1;
    if (s->departed_last != NULL)
        s->departed_last->next = d;
    else
        s->departed = d;
    s->departed_last = d;
    s->departed_groups += d->groups;
    /* Processes that come and go, each with its own devices, must not hold
     * --forget-ms worth of groups: past the bound the oldest retire early. */
    while (s->departed_groups > TD_DEPARTED_GROUPS && s->departed != d)
        retire_oldest(s);
}

const td_going *td_going_of(const td_server *s, pid_t pid) {
    for (const td_going *g = s->going; g != NULL; g = g->next)
        if (g->pid == pid)
            return g;
    return NULL;
}

/* Drops at most budget of g's; 1 when its drop is over (g unlinked and
 * freed, the process counted gone). */
static int drop_slice(td_server *s, td_going *g, uint64_t budget) {
    uint64_t left;
    s->going_ms = g->since_ms;
    g->leaks += bh_track_drop_some(s->track, (uint32_t)g->pid, budget, on_leak, s, &left);
    if (left > 0)
        return 0;
    td_going **p = &s->going, *prev = NULL;
    while (*p != g) {
        prev = *p;
        p = &(*p)->next;
    }
    *p = g->next;
    if (s->going_last == g) /* the list's new last is the one before g */
        s->going_last = prev;
    pid_t pid = g->pid;
    uint64_t leaks = g->leaks, start = g->start;
    free(g);
    gone_done(s, pid, leaks, start);
    return 1;
}

void td_process_gone(td_server *s, pid_t pid, uint64_t start) {
    const td_going *earlier = td_going_of(s, pid);
    if (earlier != NULL) /* gone again (a reused pid): the earlier drop ends first, never mixed */
        (void)drop_slice(s, (td_going *)earlier, UINT64_MAX);
    td_going *g = calloc(1, sizeof(*g));
    s->going_ms = td_now_ms();
    /* Every stream of the process, however many, and all of its memory: set
     * aside now, O(streams); events of a process reusing the pid meet none of it. */
    uint64_t n = bh_track_process_going(s->track, (uint32_t)pid, on_leak, s);
    if (s->tt_table != NULL)
        td_tt_process_gone(s->tt_table, pid); /* what it owns in TT's table counts as leaked */
    if (g == NULL) {                          /* no memory for the list: all at once, as before */
        uint64_t left;
        gone_done(s, pid, bh_track_drop_some(s->track, (uint32_t)pid, UINT64_MAX, on_leak, s, &left), start);
        return;
    }
    g->pid = pid;
    g->start = start;
    g->since_ms = s->going_ms;
    g->total = n;
    if (s->going_last != NULL)
        s->going_last->next = g;
    else
        s->going = g;
    s->going_last = g;
}

void td_gone_run(td_server *s) {
    uint64_t budget = TD_GONE_SLICE;
    if (s->going == NULL)
        return;
    s->drop_slices++;
    while (s->going != NULL && budget > 0) {
        td_going *g = s->going;
        uint64_t before = bh_track_process_doomed(s->track, (uint32_t)g->pid);
        int done = drop_slice(s, g, budget);
        uint64_t after = done ? 0 : bh_track_process_doomed(s->track, (uint32_t)g->pid);
        uint64_t used = before - after + (uint64_t)done; /* a process's end costs one */
        budget -= used < budget ? used : budget;
        if (!done)
            break; /* the slots it may pass over per allocation ran out first */
    }
}

void td_gone_finish(td_server *s) {
    while (s->going != NULL)
        (void)drop_slice(s, s->going, UINT64_MAX);
}

int td_gone_timeout(const td_server *s, int cap_ms) { return s->going != NULL ? 0 : cap_ms; }

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

/* A reporter connection of pid: one that said HELLO as a reporter (or a
 * compat one). A connection before its HELLO may be a query, and a query's
 * close keeps no orphan: taken for a reporter, it left the process never
 * counted gone. One closing (refused, or its last reply unread) counts
 * until it is closed: its own close makes the orphan then. Not counted, the
 * process was counted gone while it was still open (after --grace-ms, which
 * may be shorter than the closing timeout) and once more when it closed. */
static int reporter_of(const td_client *c) { return !c->control && c->hello + c->compat > 0; }

int td_pid_connected(const td_server *s, pid_t pid) {
    for (const td_client *c = s->clients; c != NULL; c = c->next)
        if (reporter_of(c) && c->pid == pid)
            return 1;
    return 0;
}

/* The processes td_pid_connected tells connected: a connection before its
 * HELLO (a query being made, a silent probe) is none's, as it keeps no
 * process from being counted gone. */
uint64_t td_clients_connected(const td_server *s) {
    uint64_t n = 0;
    for (const td_client *c = s->clients; c != NULL; c = c->next) {
        if (!reporter_of(c))
            continue;
        const td_client *d = s->clients; /* count each process once: its first connection */
        while (d != c && (!reporter_of(d) || d->pid != c->pid))
            d = d->next;
        n += d == c;
    }
    return n;
}

void td_orphan_add(td_server *s, const td_client *c) {
    pid_t pid = c->pid;
    if (pid == 0) /* "(departed)": a peer we cannot see that never got a key (a TT probe) */
        return;
    /* One orphan per pid: a process whose connections end one after another
     * within a tick (registries opened and closed in turn) is left without
     * one several times before td_check_orphans sees it back, and each
     * entry would count it gone once more (processes_gone 3 for one exit,
     * a wait for n processes ending after fewer). Its grace starts again
     * from this, its latest leaving, as if the tick had seen it back. */
    for (td_orphan *o = s->orphans; o != NULL; o = o->next) {
        if (o->pid == pid) {
            o->since_ms = td_now_ms();
            o->ticks = td_boot_ticks();
            return;
        }
    }
    td_orphan *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        td_process_gone(s, pid, c->start);
        return;
    }
    o->pid = pid;
    o->since_ms = td_now_ms();
    o->ticks = td_boot_ticks();
    o->start = c->start;
    o->next = s->orphans;
    s->orphans = o;
}

/* 1 if what was seen of an earlier connection of c's pid (accepted, or
 * left as an orphan, at ticks; its process's start time, 0: unknown) says
 * it was another process's: one alive before c's process started, or one
 * that started at another time. */
static int earlier_process(const td_client *c, uint64_t ticks, uint64_t start) {
    return ticks < c->start || (start != 0 && start != c->start);
}

/* The departed entries of an earlier process at c's pid (all of them: all
 * is set when that process ended just now) leave the list, its figures
 * retired into "(departed)" now: kept under the pid, they were shown as
 * c's process's (its leaks, its peak, its allocations). A drop still under
 * way keeps them (its leaks are still being counted there). */
static void retire_earlier(td_server *s, const td_client *c, int all) {
    td_departed *prev = NULL;
    for (td_departed *d = s->departed, *next; d != NULL; d = next) {
        next = d->next;
        if (d->pid != c->pid || !(all || earlier_process(c, d->ticks, d->start)) ||
            td_going_of(s, c->pid) != NULL) {
            prev = d;
            continue;
        }
        *(prev != NULL ? &prev->next : &s->departed) = next;
        if (s->departed_last == d)
            s->departed_last = prev;
        s->departed_groups -= d->groups;
        free(d);
        age_out(s, c->pid);
    }
}

void td_pid_incarnation(td_server *s, td_client *c) {
    int ended = 0;
    uint64_t start = 0;
    if (c->start == 0)
        return;
    for (td_client *o = s->clients; o != NULL; o = o->next) {
        if (o == c || o->pid != c->pid || !reporter_of(o) || !earlier_process(c, o->accepted, o->start))
            continue;
        /* Kept under the pid, what the connection sends (a descendant of
         * the ended process holds it) would be taken for c's process's:
         * from here on it is a client of its own, its resyncs given up. */
        ended = 1;
        start = o->start;
        td_log(s, TD_WARN,
               "pid %d is another process now: a connection of the one that ended (uid %d) is a client of "
               "its own from here on",
               (int)c->pid, (int)o->uid);
        td_native_cut(s, o);
        if (td_peer_detach(s, o) != 0)
            td_send_error(s, o, BH_ENOMEM, "out of memory");
        else
            td_remember_name(s, o->pid, o->name);
    }
    for (td_orphan **p = &s->orphans; *p != NULL; p = &(*p)->next) {
        td_orphan *o = *p;
        if (o->pid == c->pid && earlier_process(c, o->ticks, o->start)) {
            *p = o->next; /* not back: another process in its place */
            start = o->start;
            free(o);
            ended = 1;
            break; /* one per pid */
        }
    }
    /* Its end, before c's figures begin under the same pid. What it held
     * is dropped as leaks under its own name; a drop of one slice or less
     * ends here, so that its figures are retired before c's first event
     * (a longer one is dropped in slices: its figures stay under the pid
     * until --forget-ms). */
    if (ended) {
        td_process_gone(s, c->pid, start);
        td_going *g = (td_going *)td_going_of(s, c->pid);
        if (g != NULL && bh_track_process_doomed(s->track, (uint32_t)c->pid) <= TD_GONE_SLICE)
            (void)drop_slice(s, g, UINT64_MAX);
    }
    retire_earlier(s, c, ended);
}

void td_check_orphans(td_server *s) {
    uint64_t now = td_now_ms();
    for (td_orphan **p = &s->orphans; *p != NULL;) {
        td_orphan *o = *p;
        int back = td_pid_connected(s, o->pid);
        /* An unverified process is not in our /proc: only --grace-ms tells. */
        int ended = !td_unverified(o->pid) && !process_alive(o->pid);
        if (back || ended || now - o->since_ms >= s->grace_ms) {
            if (!back)
                td_process_gone(s, o->pid, o->start);
            *p = o->next;
            free(o);
        } else {
            p = &o->next;
        }
    }
}

void td_check_departed(td_server *s) {
    uint64_t now = td_now_ms();
    while (s->departed != NULL && now - s->departed->since_ms >= s->forget_ms)
        retire_oldest(s);
}

void td_free_orphans(td_server *s) {
    while (s->going != NULL) { /* the tracker goes with them: nothing more to drop */
        td_going *g = s->going;
        s->going = g->next;
        free(g);
    }
    s->going_last = NULL;
    free(s->names);
    s->names = NULL;
    s->nnames = s->names_cap = 0;
    while (s->departed != NULL) {
        td_departed *d = s->departed;
        s->departed = d->next;
        free(d);
    }
    s->departed_last = NULL;
    s->departed_groups = 0;
    while (s->orphans != NULL) {
        td_orphan *o = s->orphans;
        s->orphans = o->next;
        free(o);
    }
}
