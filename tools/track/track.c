/*
 * track.c - see track.h.
 *
 * Owns: one open-addressing table type (linear probing, keyed hash, power-of-two
 * capacity, grows at 1/2 load, shrinks below 1/8, deletes by backward shift,
 * so no tombstones pile up), used for: processes by pid, each process's
 * streams by id, each stream's (device) groups and live entries by (device,
 * address), the per-device live bytes for TT QUERY, and the bounded
 * per-address history. Processes also sit on a list in first-seen order.
 * Must never: trust a size from its caller for anything but accounting, keep
 * an entry for an allocation that is not live, or walk another process's
 * data to answer for one process.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "track.h"
#include "fmix.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

/* ======================== Open-addressing table ======================== */

/* Every element starts with its key; used == 0 marks an empty slot. */
typedef struct okey {
    uint64_t a, c;
    uint32_t b, used;
} okey;

typedef struct otab {
    unsigned char *s;
    size_t cap, n, esize; /* cap 0: nothing allocated yet */
    uint64_t secret;      /* the hash key (ot_hash), fixed for the table's life */
} otab;

#define OT_MIN_CAP 16u

static okey *ot_slot(const otab *t, size_t i) { return (okey *)(void *)(t->s + i * t->esize); }

/* Keys come from the wire: with a hash anyone can compute (and invert), a
 * client picks addresses that share one home slot and every insert probes
 * past all the earlier ones (60,000 such ALLOCs cost 7.7 s of the event
 * loop). Each table hashes with its own secret, and each part of the key
 * goes through its own round, so no choice of (a, b, c) collides without the
 * secret. */
static size_t ot_hash(const otab *t, uint64_t a, uint32_t b, uint64_t c) {
    uint64_t h = bh__fmix64(a ^ t->secret);
    h = bh__fmix64(h ^ c);
    return (size_t)bh__fmix64(h ^ b);
}

static size_t ot_home(const otab *t, const okey *k) { return ot_hash(t, k->a, k->b, k->c) & (t->cap - 1); }

static void *ot_find(const otab *t, uint64_t a, uint32_t b, uint64_t c) {
    if (t->cap == 0)
        return NULL;
    for (size_t i = ot_hash(t, a, b, c) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        okey *k = ot_slot(t, i);
        if (!k->used)
            return NULL;
        if (k->a == a && k->b == b && k->c == c)
            return k;
    }
}

static int ot_resize(otab *t, size_t cap) {
    unsigned char *ns = calloc(cap, t->esize);
    if (ns == NULL)
        return -1;
    otab old = *t;
    t->s = ns;
    t->cap = cap;
    for (size_t i = 0; i < old.cap; i++) {
        okey *k = ot_slot(&old, i);
        if (!k->used)
            continue;
        size_t j = ot_home(t, k);
        while (ot_slot(t, j)->used)
            j = (j + 1) & (cap - 1);
        memcpy(ot_slot(t, j), k, t->esize);
    }
    free(old.s);
    return 0;
}

/* A new zeroed element with key (a, b, c), which must be absent. NULL: ENOMEM.
 * Invalidates pointers into t. */
static void *ot_insert(otab *t, uint64_t a, uint32_t b, uint64_t c) {
    if ((t->n + 1) * 2 > t->cap && ot_resize(t, t->cap ? t->cap * 2 : OT_MIN_CAP) != 0)
        return NULL;
    size_t i = ot_hash(t, a, b, c) & (t->cap - 1);
    while (ot_slot(t, i)->used)
        i = (i + 1) & (t->cap - 1);
    okey *k = ot_slot(t, i);
    memset(k, 0, t->esize);
    k->a = a;
    k->b = b;
    k->c = c;
    k->used = 1;
    t->n++;
    return k;
}

/* Removes the element elem points at; later elements of its probe run move
 * back so that lookups never need tombstones. Invalidates pointers into t. */
static void ot_remove(otab *t, void *elem) {
    size_t i = (size_t)((unsigned char *)elem - t->s) / t->esize, mask = t->cap - 1;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        okey *k = ot_slot(t, j);
        if (!k->used)
            break;
        size_t home = ot_home(t, k);
        /* k may fill the hole at i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            memcpy(ot_slot(t, i), k, t->esize);
            i = j;
        }
    }
    ot_slot(t, i)->used = 0;
    t->n--;
    if (t->n == 0) {
        free(t->s);
        t->s = NULL;
        t->cap = 0;
    } else if (t->cap > OT_MIN_CAP && t->n * 8 < t->cap) {
        (void)ot_resize(t, t->cap / 2); /* on ENOMEM the table just stays larger */
    }
}

static void ot_free(otab *t) {
    free(t->s);
    t->s = NULL;
    t->cap = t->n = 0;
}

/* ======================== State ======================== */

typedef struct entry { /* a live allocation: a address, b device */
    okey k;
    uint64_t size, since;
    uint32_t type;
} entry;

typedef struct group { /* a device */
    okey k;
    bh_track_counts c;
} group;

typedef struct stream {
    uint32_t id;
    otab entries, groups;
} stream;

/* A process or stream by its id: the object lives apart, so that pointers
 * to it survive the table's growth. */
typedef struct obj_ref {
    okey k;
    void *obj;
} obj_ref;

typedef struct proc {
    uint32_t pid;
    uint64_t live;  /* over all streams: the limit's count */
    size_t ngroups; /* over all streams: the group limit's count */
    otab streams;
    struct proc *prev, *next; /* first-seen order */
} proc;

typedef struct devsum { /* a device; kept once seen (bounded by BH_TRACK_MAX_DEVICES) */
    okey k;
    uint64_t live, bytes;
} devsum;

typedef struct hist { /* a address, b device, c client */
    okey k;
    uint64_t allocs, frees;
} hist;

struct bh_track {
    otab procs;
    proc *first, *last;
    otab devices, history;
    size_t history_cap, max_groups;
    uint64_t max_live;
    bh_track_counts gone; /* counts that could not be retired into a group (ENOMEM) */
};

/* A fresh secret per table (a syscall per process or stream created, none
 * per event). Without getrandom (an old kernel, a seccomp filter) the clock
 * and the table's address still differ between runs and tables; they are not
 * secret, but nothing else breaks. */
static uint64_t table_secret(const otab *t) {
    uint64_t k;
    if (getrandom(&k, sizeof(k), GRND_NONBLOCK) == (ssize_t)sizeof(k))
        return k;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return bh__fmix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)t);
}

static void otab_init(otab *t, size_t esize) {
    memset(t, 0, sizeof(*t));
    t->esize = esize;
    t->secret = table_secret(t);
}

bh_track *bh_track_new(uint64_t max_live_per_process) {
    bh_track *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    otab_init(&t->procs, sizeof(obj_ref));
    otab_init(&t->devices, sizeof(devsum));
    otab_init(&t->history, sizeof(hist));
    t->history_cap = BH_TRACK_DEFAULT_HISTORY;
    t->max_groups = BH_TRACK_DEFAULT_MAX_GROUPS;
    t->max_live = max_live_per_process;
    return t;
}

void bh_track_set_history(bh_track *t, size_t addresses) {
    t->history_cap = addresses;
    if (t->history.n > addresses)
        ot_free(&t->history);
}

void bh_track_set_max_groups(bh_track *t, size_t groups) { t->max_groups = groups; }

static void free_stream(stream *s) {
    ot_free(&s->entries);
    ot_free(&s->groups);
    free(s);
}

static void free_proc(proc *p) {
    for (size_t i = 0; i < p->streams.cap; i++) {
        obj_ref *r = (obj_ref *)ot_slot(&p->streams, i);
        if (r->k.used)
            free_stream(r->obj);
    }
    ot_free(&p->streams);
    free(p);
}

void bh_track_free(bh_track *t) {
    if (t == NULL)
        return;
    while (t->first != NULL) {
        proc *p = t->first;
        t->first = p->next;
        free_proc(p);
    }
    ot_free(&t->procs);
    ot_free(&t->devices);
    ot_free(&t->history);
    free(t);
}

/* ======================== Lookups ======================== */

static void *ref_find(const otab *refs, uint64_t id) {
    const obj_ref *r = ot_find(refs, id, 0, 0);
    return r != NULL ? r->obj : NULL;
}

/* A new zeroed object of size bytes under id (which must be absent); NULL on ENOMEM. */
static void *ref_new(otab *refs, uint64_t id, size_t size) {
    void *o = calloc(1, size);
    obj_ref *r = o != NULL ? ot_insert(refs, id, 0, 0) : NULL;
    if (r == NULL) {
        free(o);
        return NULL;
    }
    r->obj = o;
    return o;
}

static proc *proc_of(bh_track *t, uint32_t pid, int create) {
    proc *p = ref_find(&t->procs, pid);
    if (p != NULL || !create || (p = ref_new(&t->procs, pid, sizeof(*p))) == NULL)
        return p;
    p->pid = pid;
    otab_init(&p->streams, sizeof(obj_ref));
    p->prev = t->last;
    if (t->last != NULL)
        t->last->next = p;
    else
        t->first = p;
    t->last = p;
    return p;
}

static stream *stream_of(proc *p, uint32_t id, int create) {
    stream *s = ref_find(&p->streams, id);
    if (s != NULL || !create || (s = ref_new(&p->streams, id, sizeof(*s))) == NULL)
        return s;
    s->id = id;
    otab_init(&s->entries, sizeof(entry));
    otab_init(&s->groups, sizeof(group));
    return s;
}

/* The group of (stream, device), created under the process's group limit.
 * NULL with *why set: BH_TRACK_GROUP_LIMIT or BH_TRACK_NOMEM. */
static group *group_of(bh_track *t, proc *p, stream *s, uint32_t device, bh_track_result *why) {
    group *g = ot_find(&s->groups, device, 0, 0);
    if (g != NULL)
        return g;
    if (t->max_groups != 0 && p->ngroups >= t->max_groups) {
        *why = BH_TRACK_GROUP_LIMIT;
        return NULL;
    }
    g = ot_insert(&s->groups, device, 0, 0);
    if (g == NULL) {
        *why = BH_TRACK_NOMEM;
        return NULL;
    }
    p->ngroups++;
    return g;
}

typedef struct place {
    proc *p;
    stream *s;
    group *g;
} place;

/* Finds (or creates) the process, stream and group of an event. */
static bh_track_result place_of(bh_track *t, uint64_t client, uint32_t device, place *out) {
    bh_track_result why = BH_TRACK_NOMEM;
    out->p = proc_of(t, BH_TRACK_PROCESS(client), 1);
    out->s = out->p != NULL ? stream_of(out->p, BH_TRACK_STREAM(client), 1) : NULL;
    out->g = out->s != NULL ? group_of(t, out->p, out->s, device, &why) : NULL;
    return out->g != NULL ? BH_TRACK_OK : why;
}

/* The history record of an address, created while there is room; NULL if none. */
static hist *history_of(bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    if (t->history_cap == 0)
        return NULL;
    hist *h = ot_find(&t->history, address, device, client);
    if (h == NULL && t->history.n < t->history_cap)
        h = ot_insert(&t->history, address, device, client);
    return h;
}

/* The live entry of (client, device, address), or NULL. */
static const entry *live_entry(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    const proc *p = ref_find(&t->procs, BH_TRACK_PROCESS(client));
    const stream *s = p != NULL ? ref_find(&p->streams, BH_TRACK_STREAM(client)) : NULL;
    return s != NULL ? ot_find(&s->entries, address, device, 0) : NULL;
}

/* ======================== Live set ======================== */

static void device_add(bh_track *t, uint32_t device, uint64_t size, int sign) {
    devsum *d = ot_find(&t->devices, device, 0, 0);
    if (d == NULL && sign > 0 && t->devices.n < BH_TRACK_MAX_DEVICES)
        d = ot_insert(&t->devices, device, 0, 0);
    if (d == NULL)
        return; /* past the bound or ENOMEM: TT QUERY answers low, nothing else depends on it */
    d->live += sign > 0 ? 1 : (uint64_t)-1;
    d->bytes += sign > 0 ? size : (uint64_t)0 - size;
}

static bh_track_result make_live(bh_track *t, place *pl, uint32_t device, uint64_t address, uint64_t size,
                                 uint32_t type, uint64_t now) {
    if (t->max_live != 0 && pl->p->live >= t->max_live)
        return BH_TRACK_LIMIT;
    entry *e = ot_insert(&pl->s->entries, address, device, 0);
    if (e == NULL)
        return BH_TRACK_NOMEM;
    e->size = size;
    e->type = type;
    e->since = now;
    pl->p->live++;
    bh_track_counts *g = &pl->g->c;
    g->live++;
    g->live_bytes += size;
    if (g->live_bytes > g->peak_bytes)
        g->peak_bytes = g->live_bytes;
    device_add(t, device, size, 1);
    return BH_TRACK_OK;
}

/* Ends a live entry of stream s. */
static void end_live(bh_track *t, proc *p, stream *s, group *g, entry *e) {
    g->c.live--;
    g->c.live_bytes -= e->size;
    p->live--;
    device_add(t, (uint32_t)e->k.b, e->size, -1);
    ot_remove(&s->entries, e);
}

bh_track_result bh_track_on_alloc(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                  uint64_t size, uint32_t type, uint64_t now) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    hist *h = history_of(t, client, device, address);
    if (h != NULL)
        h->allocs++;
    pl.g->c.allocs++;
    if (ot_find(&pl.s->entries, address, device, 0) != NULL) {
        /* Keep the first allocation's record: the duplicate is the error. */
        pl.g->c.duplicate_allocs++;
        return BH_TRACK_DUPLICATE_ALLOC;
    }
    return make_live(t, &pl, device, address, size, type, now);
}

bh_track_result bh_track_restore(bh_track *t, uint64_t client, uint32_t device, uint64_t address,
                                 uint64_t size, uint64_t now) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    if (ot_find(&pl.s->entries, address, device, 0) != NULL)
        return BH_TRACK_OK;
    return make_live(t, &pl, device, address, size, 0, now);
}

bh_track_result bh_track_on_free(bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    place pl;
    bh_track_result r = place_of(t, client, device, &pl);
    if (r != BH_TRACK_OK)
        return r;
    /* An unknown FREE is counted (and kept in the bounded history: that is
     * the address people ask about), but creates no entry. */
    hist *h = history_of(t, client, device, address);
    if (h != NULL)
        h->frees++;
    pl.g->c.frees++;
    entry *e = ot_find(&pl.s->entries, address, device, 0);
    if (e == NULL) {
        pl.g->c.unknown_frees++;
        return BH_TRACK_UNKNOWN_FREE;
    }
    end_live(t, pl.p, pl.s, pl.g, e);
    return BH_TRACK_OK;
}

/* ======================== Clients leaving ======================== */

/* Ends every live entry of one stream (as leaks if as_leaks) and frees its table. */
static uint64_t drop_stream(bh_track *t, proc *p, stream *s, int as_leaks,
                            void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    uint64_t n = 0;
    for (size_t i = 0; i < s->entries.cap; i++) {
        entry *e = (entry *)ot_slot(&s->entries, i);
        if (!e->k.used)
            continue;
        group *g = ot_find(&s->groups, e->k.b, 0, 0);
        if (as_leaks && on_leak != NULL) {
            bh_track_entry pub = {BH_TRACK_CLIENT(p->pid, s->id),
                                  e->k.a,
                                  e->size,
                                  e->since,
                                  (uint32_t)e->k.b,
                                  1,
                                  e->type,
                                  0,
                                  0};
            on_leak(ctx, &pub);
        }
        /* end_live without the table removal: the whole table goes below. */
        g->c.live--;
        g->c.live_bytes -= e->size;
        if (as_leaks) {
            g->c.leaks++;
            g->c.leaked_bytes += e->size;
            n++;
        }
        p->live--;
        device_add(t, (uint32_t)e->k.b, e->size, -1);
    }
    ot_free(&s->entries);
    return n;
}

uint64_t bh_track_client_gone(bh_track *t, uint64_t client,
                              void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), 0);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), 0) : NULL;
    return s != NULL ? drop_stream(t, p, s, 1, on_leak, ctx) : 0;
}

void bh_track_client_reset(bh_track *t, uint64_t client) {
    proc *p = proc_of(t, BH_TRACK_PROCESS(client), 0);
    stream *s = p != NULL ? stream_of(p, BH_TRACK_STREAM(client), 0) : NULL;
    if (s != NULL)
        drop_stream(t, p, s, 0, NULL, NULL);
}

void bh_track_counts_add(bh_track_counts *sum, const bh_track_counts *c) {
    sum->allocs += c->allocs;
    sum->frees += c->frees;
    sum->unknown_frees += c->unknown_frees;
    sum->duplicate_allocs += c->duplicate_allocs;
    sum->leaks += c->leaks;
    sum->leaked_bytes += c->leaked_bytes;
    sum->live += c->live;
    sum->live_bytes += c->live_bytes;
    sum->peak_bytes += c->peak_bytes; /* sum of group peaks: an upper bound */
}

static void unlink_proc(bh_track *t, proc *p) {
    ot_remove(&t->procs, ot_find(&t->procs, p->pid, 0, 0));
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        t->first = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        t->last = p->prev;
}

uint64_t bh_track_process_gone(bh_track *t, uint32_t process,
                               void (*on_leak)(void *ctx, const bh_track_entry *e), void *ctx) {
    proc *p = proc_of(t, process, 0);
    uint64_t n = 0;
    for (size_t i = 0; p != NULL && i < p->streams.cap; i++) {
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, i);
        if (sr->k.used)
            n += drop_stream(t, p, sr->obj, 1, on_leak, ctx);
    }
    return n;
}

void bh_track_retire_process(bh_track *t, uint32_t process, uint64_t into) {
    proc *p = proc_of(t, process, 0);
    if (p == NULL || process == BH_TRACK_PROCESS(into))
        return;
    (void)bh_track_process_gone(t, process, NULL, NULL); /* nothing should be live: nothing to report */
    proc *dp = proc_of(t, BH_TRACK_PROCESS(into), 1);
    stream *ds = dp != NULL ? stream_of(dp, BH_TRACK_STREAM(into), 1) : NULL;
    for (size_t i = 0; i < p->streams.cap; i++) {
        obj_ref *sr = (obj_ref *)ot_slot(&p->streams, i);
        const stream *st = sr->obj;
        for (size_t j = 0; sr->k.used && j < st->groups.cap; j++) {
            group *g = (group *)ot_slot(&st->groups, j);
            if (!g->k.used)
                continue;
            /* One group per device, under the group limit like any process:
             * devices come from the wire, and each gone process could add
             * thousands that stay forever. Past it, only the totals count. */
            group *d = ds != NULL ? ot_find(&ds->groups, g->k.a, 0, 0) : NULL;
            if (d == NULL && ds != NULL && (t->max_groups == 0 || dp->ngroups < t->max_groups) &&
                (d = ot_insert(&ds->groups, g->k.a, 0, 0)) != NULL)
                dp->ngroups++;
            bh_track_counts_add(d != NULL ? &d->c : &t->gone, &g->c);
        }
    }
    unlink_proc(t, p);
    free_proc(p);
}

int bh_track_is_live(const bh_track *t, uint64_t client, uint32_t device, uint64_t address) {
    return live_entry(t, client, device, address) != NULL;
}

/* ======================== Reports ======================== */

void bh_track_each_group(const bh_track *t, bh_track_group_fn fn, void *ctx) {
    for (const proc *p = t->first; p != NULL; p = p->next) {
        for (size_t i = 0; i < p->streams.cap; i++) {
            const obj_ref *sr = (const obj_ref *)ot_slot(&p->streams, i);
            if (!sr->k.used)
                continue;
            const stream *s = sr->obj;
            for (size_t j = 0; j < s->groups.cap; j++) {
                const group *g = (const group *)ot_slot(&s->groups, j);
                if (g->k.used)
                    fn(ctx, BH_TRACK_CLIENT(p->pid, s->id), (uint32_t)g->k.a, &g->c);
            }
        }
    }
}

typedef struct totals_ctx {
    uint64_t client;
    uint32_t device;
    bh_track_counts *out;
} totals_ctx;

static void add_if_match(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c) {
    totals_ctx *tc = ctx;
    if ((tc->client == UINT64_MAX || tc->client == client) &&
        (tc->device == UINT32_MAX || tc->device == device))
        bh_track_counts_add(tc->out, c);
}

void bh_track_totals(const bh_track *t, uint64_t client, uint32_t device, bh_track_counts *out) {
    memset(out, 0, sizeof(*out));
    totals_ctx tc = {client, device, out};
    bh_track_each_group(t, add_if_match, &tc);
    if (client == UINT64_MAX && device == UINT32_MAX)
        bh_track_counts_add(out, &t->gone); /* retired without a group to go to */
}

uint64_t bh_track_device_bytes(const bh_track *t, uint32_t device, int *seen) {
    const devsum *d = ot_find(&t->devices, device, 0, 0);
    if (seen != NULL)
        *seen = d != NULL;
    return d != NULL ? d->bytes : 0;
}

uint64_t bh_track_process_live(const bh_track *t, uint32_t process) {
    const proc *p = ref_find(&t->procs, process);
    return p != NULL ? p->live : 0;
}

size_t bh_track_process_groups(const bh_track *t, uint32_t process) {
    const proc *p = ref_find(&t->procs, process);
    return p != NULL ? p->ngroups : 0;
}

/* The public view of a live entry of client. */
static void live_pub(const bh_track *t, uint64_t client, const entry *e, bh_track_entry *pub) {
    const hist *h = ot_find(&t->history, e->k.a, (uint32_t)e->k.b, client);
    *pub = (bh_track_entry){client, e->k.a,  e->size,           e->since,        (uint32_t)e->k.b,
                            1,      e->type, h ? h->allocs : 0, h ? h->frees : 0};
}

void bh_track_each_entry(const bh_track *t, uint64_t skip, int (*fn)(void *ctx, const bh_track_entry *e),
                         void *ctx) {
    for (const proc *p = t->first; p != NULL; p = p->next) {
        for (size_t i = 0; i < p->streams.cap; i++) {
            const obj_ref *sr = (const obj_ref *)ot_slot(&p->streams, i);
            if (!sr->k.used)
                continue;
            const stream *s = sr->obj;
            if (skip >= s->entries.n) { /* the whole stream is before the page */
                skip -= s->entries.n;
                continue;
            }
            for (size_t j = 0; j < s->entries.cap; j++) {
                const entry *e = (const entry *)ot_slot(&s->entries, j);
                if (!e->k.used)
                    continue;
                if (skip > 0) {
                    skip--;
                    continue;
                }
                bh_track_entry pub;
                live_pub(t, BH_TRACK_CLIENT(p->pid, s->id), e, &pub);
                if (fn(ctx, &pub) != 0)
                    return;
            }
        }
    }
}

typedef struct at_ctx {
    const bh_track *t;
    uint64_t address;
    void (*fn)(void *ctx, const bh_track_entry *e);
    void *ctx;
} at_ctx;

/* An address is live at most once per (stream, device): one lookup per
 * group instead of a walk of the entries. */
static void live_at(void *ctx, uint64_t client, uint32_t device, const bh_track_counts *c) {
    const at_ctx *x = ctx;
    (void)c;
    const entry *e = live_entry(x->t, client, device, x->address);
    if (e == NULL)
        return;
    bh_track_entry pub;
    live_pub(x->t, client, e, &pub);
    x->fn(x->ctx, &pub);
}

void bh_track_each_at(const bh_track *t, uint64_t address, void (*fn)(void *ctx, const bh_track_entry *e),
                      void *ctx) {
    at_ctx x = {t, address, fn, ctx};
    bh_track_each_group(t, live_at, &x);
    for (size_t i = 0; i < t->history.cap; i++) {
        const hist *h = (const hist *)ot_slot(&t->history, i);
        if (!h->k.used || h->k.a != address || live_entry(t, h->k.c, h->k.b, h->k.a) != NULL)
            continue;
        bh_track_entry pub = {h->k.c, h->k.a, 0, 0, h->k.b, 0, 0, h->allocs, h->frees};
        fn(ctx, &pub);
    }
}

static int worse(const bh_track_entry *a, const bh_track_entry *b) {
    int64_t ea = (int64_t)(a->frees - a->allocs), eb = (int64_t)(b->frees - b->allocs);
    return ea != eb ? ea > eb : a->frees > b->frees;
}

size_t bh_track_most_overfreed(const bh_track *t, bh_track_entry *out, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < t->history.cap && n > 0; i++) {
        const hist *h = (const hist *)ot_slot(&t->history, i);
        if (!h->k.used || h->frees <= h->allocs)
            continue;
        bh_track_entry e = {h->k.c, h->k.a, 0, 0, h->k.b, 0, 0, h->allocs, h->frees};
        /* Insertion into a sorted top-n list. */
        size_t pos = k < n ? k++ : n;
        while (pos > 0 && worse(&e, &out[pos - 1])) {
            if (pos < n)
                out[pos] = out[pos - 1];
            pos--;
        }
        if (pos < n)
            out[pos] = e;
    }
    return k;
}
