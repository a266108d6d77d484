/*
 * tt_table.c - TT-Metal's allocation server's bookkeeping (tt_table.h says
 * what it keeps and why), and who gives way when it is full.
 *
 * Owns: the entries (objects of their own, found by (device, space, id)
 * through a table of the tracker's open-addressing type, otab.h), the
 * per-device sums, the processes that own entries (objects too, by a serial
 * number per process incarnation: a pid the kernel reuses is another owner),
 * each owner's entries in the order they give way (zero-byte entries first,
 * then oldest first), and the owners that are gone while still owning
 * entries (gone longest first).
 * Must never: walk a table outside td_tt_each and a full table's share
 * check (over owners, not entries), let an entry outlive the counts that
 * include it (every change of an entry updates its device's sums and its
 * owner's counts in the same call), or make room by dropping the entry of a
 * process that holds no more than its share.
 */
#include <stdlib.h>

#include "otab.h"
#include "track.h" /* BH_TRACK_MAX_SIZE, BH_TRACK_MAX_GROUP_BYTES */
#include "tt_table.h"

typedef struct owner owner;

/* A sum of sizes over devices or processes: each device's kind is bounded
 * (2^50), their sum is not (2^14 of them make 2^64), so it carries into a
 * second word, exact both ways, and reads as UINT64_MAX past 2^64 - 1 (as
 * the tracker's sums saturate). Summed modulo 2^64, 2^64 + 4 KiB read
 * 4096. */
typedef struct wide {
    uint64_t lo, hi;
} wide;

static void wide_add(wide *w, uint64_t n) {
    w->hi += w->lo > UINT64_MAX - n;
    w->lo += n;
}

static void wide_sub(wide *w, uint64_t n) {
    w->hi -= w->lo < n;
    w->lo -= n;
}

static uint64_t wide_get(wide w) { return w.hi != 0 ? UINT64_MAX : w.lo; }

typedef struct entry {
    uint64_t id, size, since_ms;
    int32_t device;
    uint32_t space, kind, refs;
    owner *o;
    struct entry *prev, *next; /* in o's list: the next to give way first */
} entry;

struct owner {
    uint64_t serial;
    pid_t pid;
    int gone;
    uint64_t entries;
    wide bytes;
    entry *first, *last;
    owner *gprev, *gnext; /* gone and still owning entries: gone longest first */
};

typedef struct ref { /* entries: a id, b device, c space; owners: a serial */
    okey k;
    void *obj;
} ref;

typedef struct device_sum {
    okey k; /* a: device */
    uint64_t bytes[16];
    uint64_t entries;
} device_sum;

typedef struct current {
    okey k; /* a: pid */
    uint64_t serial;
} current;

typedef struct view_sum {
    okey k; /* a: device */
    uint64_t bytes[16];
} view_sum;

struct td_tt_table {
    otab entries, owners, devices, current, view;
    owner *gone_first, *gone_last;
    uint64_t max_entries, next_serial;
    uint64_t holders; /* owners not gone that own entries: a full table's shares */
    td_tt_counts c;   /* but its live_bytes and leaked_bytes: */
    wide live_bytes, leaked_bytes;
};

td_tt_table *td_tt_new(uint64_t max_entries) {
    td_tt_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    ot_init(&t->entries, sizeof(ref));
    ot_init(&t->owners, sizeof(ref));
    ot_init(&t->devices, sizeof(device_sum));
    ot_init(&t->current, sizeof(current));
    ot_init(&t->view, sizeof(view_sum));
    t->max_entries = max_entries;
    return t;
}

static void free_objects(otab *refs) {
    for (size_t i = 0; i < refs->cap; i++) {
        ref *r = (ref *)(void *)ot_slot(refs, i);
        if (r->k.used)
            free(r->obj);
    }
    ot_free(refs);
}

void td_tt_free(td_tt_table *t) {
    if (t == NULL)
        return;
    free_objects(&t->entries);
    free_objects(&t->owners);
    ot_free(&t->devices);
    ot_free(&t->current);
    ot_free(&t->view);
    free(t);
}

static uint64_t dkey(int32_t device) { return (uint32_t)device; }

static void *ref_find(const otab *refs, uint64_t a, uint32_t b, uint64_t c) {
    const ref *r = ot_find(refs, a, b, c);
    return r != NULL ? r->obj : NULL;
}

/* obj under (a, b, c) in refs; -1 (ENOMEM). */
static int ref_add(otab *refs, uint64_t a, uint32_t b, uint64_t c, void *obj) {
    ref *r = ot_insert(refs, a, b, c);
    if (r == NULL)
        return -1;
    r->obj = obj;
    return 0;
}

/* ======================== Owners ======================== */

static void gone_unlink(td_tt_table *t, owner *o) {
    *(o->gprev != NULL ? &o->gprev->gnext : &t->gone_first) = o->gnext;
    *(o->gnext != NULL ? &o->gnext->gprev : &t->gone_last) = o->gprev;
    o->gprev = o->gnext = NULL;
}

static void owner_free(td_tt_table *t, owner *o) {
    if (o->gone)
        gone_unlink(t, o);
    ot_remove(&t->owners, ot_find(&t->owners, o->serial, 0, 0));
    free(o);
}

/* pid's current incarnation, made on its first ALLOC. NULL: ENOMEM. */
static owner *owner_of(td_tt_table *t, pid_t pid) {
    current *cur = ot_find(&t->current, (uint32_t)pid, 0, 0);
    if (cur != NULL)
        return ref_find(&t->owners, cur->serial, 0, 0);
    owner *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->serial = t->next_serial + 1;
    o->pid = pid;
    if (ref_add(&t->owners, o->serial, 0, 0, o) != 0) {
        free(o);
        return NULL;
    }
    if ((cur = ot_insert(&t->current, (uint32_t)pid, 0, 0)) == NULL) {
        owner_free(t, o);
        return NULL;
    }
    cur->serial = ++t->next_serial;
    return o;
}

/* ======================== Entries ======================== */

/* e joins o's list: a zero-byte entry (nothing in any QUERY answer) first,
 * any other last, so the first is always the one to give way. */
static void link_entry(td_tt_table *t, owner *o, entry *e) {
    e->o = o;
    e->prev = e->next = NULL;
    if (e->size == 0) {
        e->next = o->first;
        *(o->first != NULL ? &o->first->prev : &o->last) = e;
        o->first = e;
    } else {
        e->prev = o->last;
        *(o->last != NULL ? &o->last->next : &o->first) = e;
        o->last = e;
    }
    if (o->entries++ == 0 && !o->gone)
        t->holders++;
    wide_add(&o->bytes, e->size);
}

/* Takes e out of every count and frees it. */
static void drop_entry(td_tt_table *t, entry *e) {
    owner *o = e->o;
    device_sum *d = ot_find(&t->devices, dkey(e->device), 0, 0);
    d->bytes[e->kind] -= e->size;
    if (--d->entries == 0)
        ot_remove(&t->devices, d);
    *(e->prev != NULL ? &e->prev->next : &o->first) = e->next;
    *(e->next != NULL ? &e->next->prev : &o->last) = e->prev;
    wide_sub(&o->bytes, e->size);
    if (o->gone) {
        t->c.leaks--;
        wide_sub(&t->leaked_bytes, e->size);
    }
    if (--o->entries == 0 && o->gone)
        owner_free(t, o);
    else if (o->entries == 0)
        t->holders--;
    t->c.live--;
    wide_sub(&t->live_bytes, e->size);
    ot_remove(&t->entries, ot_find(&t->entries, e->id, (uint32_t)e->device, e->space));
    free(e);
}

/* The table is full and o (whose process allocates) wants one more entry:
 * the entry that gives way, counted, or NULL (refused). First an entry of
 * the process gone longest (its leaks: TT's server keeps them until they
 * are freed, but no one is left to free them); else, when o holds less than
 * an equal share (the table divided among the processes holding entries),
 * the first entry of the process holding the most (over its share, so never
 * a process's only or newest entries while it holds no more than o). */
static entry *give_way(td_tt_table *t, const owner *o) {
    if (t->gone_first != NULL) {
        t->c.evicted_departed++;
        return t->gone_first->first;
    }
    uint64_t share = t->max_entries / (t->holders + (o->entries == 0));
    if (o->entries >= share)
        return NULL;
    const owner *big = NULL;
    for (size_t i = 0; i < t->owners.cap; i++) { /* the owners, not the entries: bounded by processes */
        const ref *r = (const ref *)(const void *)ot_slot(&t->owners, i);
        const owner *x = r->obj;
        if (r->k.used && x != o && (big == NULL || x->entries > big->entries))
            big = x;
    }
    if (big == NULL || big->entries <= share)
        return NULL;
    t->c.evicted_over_share++;
    return big->first;
}

int td_tt_alloc(td_tt_table *t, int32_t device, uint32_t space, uint64_t id, uint64_t size, uint32_t kind,
                pid_t pid, uint64_t now_ms) {
    /* Sums of one client's sizes must not wrap another's (one ALLOC of
     * 2^64 - 8 GiB took a device's 8 GiB to 0): the tracker's bounds, on
     * this device's sum of kind, before anything is counted. */
    device_sum *d = ot_find(&t->devices, dkey(device), 0, 0);
    if (size > BH_TRACK_MAX_SIZE || (d != NULL && d->bytes[kind & 15u] > BH_TRACK_MAX_GROUP_BYTES - size))
        return TD_TT_TOO_LARGE;
    entry *e = ref_find(&t->entries, id, (uint32_t)device, space);
    if (e != NULL) { /* TT's server: one more reference, the bytes are counted once */
        e->refs++;
        t->c.allocs++;
        t->c.references++;
        return TD_TT_REFERENCE;
    }
    owner *o = owner_of(t, pid);
    int rc = TD_TT_NEW;
    if (o != NULL && t->c.live >= t->max_entries) {
        entry *victim = give_way(t, o);
        if (victim != NULL) {
            rc = victim->o->gone ? TD_TT_EVICTED_DEPARTED : TD_TT_EVICTED_SHARE;
            drop_entry(t, victim);
        }
    }
    int room = o != NULL && t->c.live < t->max_entries; /* after the eviction, if any */
    if (rc != TD_TT_NEW || !room)                       /* a drop may have moved or removed d */
        d = room ? ot_find(&t->devices, dkey(device), 0, 0) : NULL;
    if (room && d == NULL)
        d = ot_insert(&t->devices, dkey(device), 0, 0);
    if (d != NULL && (e = calloc(1, sizeof(*e))) != NULL &&
        ref_add(&t->entries, id, (uint32_t)device, space, e) != 0) {
        free(e);
        e = NULL;
    }
    if (d == NULL || e == NULL) {
        t->c.refused++; /* an owner or device record without entries is harmless: it is reused */
        if (d != NULL && d->entries == 0)
            ot_remove(&t->devices, d);
        return TD_TT_FULL;
    }
    *e = (entry){.id = id,
                 .size = size,
                 .since_ms = now_ms,
                 .device = device,
                 .space = space,
                 .kind = kind & 15u,
                 .refs = 1};
    link_entry(t, o, e);
    d->bytes[kind & 15u] += size;
    d->entries++;
    t->c.allocs++;
    t->c.live++;
    wide_add(&t->live_bytes, size);
    return rc;
}

int td_tt_release(td_tt_table *t, int32_t device, uint32_t space, uint64_t id, int *last) {
    entry *e = ref_find(&t->entries, id, (uint32_t)device, space);
    *last = 0;
    if (e == NULL) {
        t->c.unknown_frees++;
        return -1;
    }
    t->c.frees++;
    if (--e->refs > 0)
        return 0;
    *last = 1;
    drop_entry(t, e);
    return 0;
}

void td_tt_device_bytes(const td_tt_table *t, int32_t device, uint64_t bytes[16]) {
    const device_sum *d = ot_find(&t->devices, dkey(device), 0, 0);
    for (int k = 0; k < 16; k++)
        bytes[k] = d != NULL ? d->bytes[k] : 0;
}

void td_tt_view_add(td_tt_table *t, int32_t device, uint32_t kind, int64_t delta) {
    view_sum *v = ot_find(&t->view, dkey(device), 0, 0);
    if (v == NULL && delta > 0 && (v = ot_insert(&t->view, dkey(device), 0, 0)) == NULL)
        return; /* out of memory: QUERY may count these bytes twice */
    if (v == NULL)
        return;
    uint64_t *b = &v->bytes[kind & 15u];
    *b = delta >= 0 || (uint64_t)-delta <= *b ? *b + (uint64_t)delta : 0;
    for (int k = 0; k < 16; k++)
        if (v->bytes[k] != 0)
            return;
    ot_remove(&t->view, v);
}

void td_tt_view_bytes(const td_tt_table *t, int32_t device, uint64_t bytes[16]) {
    const view_sum *v = ot_find(&t->view, dkey(device), 0, 0);
    for (int k = 0; k < 16; k++)
        bytes[k] = v != NULL ? v->bytes[k] : 0;
}

void td_tt_process_gone(td_tt_table *t, pid_t pid) {
    current *cur = ot_find(&t->current, (uint32_t)pid, 0, 0);
    if (cur == NULL)
        return;
    owner *o = ref_find(&t->owners, cur->serial, 0, 0);
    ot_remove(&t->current, cur);
    if (o == NULL)
        return;
    if (o->entries == 0) {
        owner_free(t, o);
        return;
    }
    t->holders--;
    o->gone = 1;
    o->gprev = t->gone_last;
    *(t->gone_last != NULL ? &t->gone_last->gnext : &t->gone_first) = o;
    t->gone_last = o;
    t->c.leaks += o->entries;
    wide_add(&t->leaked_bytes, o->bytes.lo);
    t->leaked_bytes.hi += o->bytes.hi;
}

void td_tt_counts_get(const td_tt_table *t, td_tt_counts *out) {
    *out = t->c;
    out->live_bytes = wide_get(t->live_bytes);
    out->leaked_bytes = wide_get(t->leaked_bytes);
}

void td_tt_each(const td_tt_table *t, int space, int (*fn)(void *ctx, const td_tt_entry *e), void *ctx) {
    for (size_t i = 0; i < t->entries.cap; i++) {
        const ref *r = (const ref *)(const void *)ot_slot(&t->entries, i);
        const entry *e = r->obj;
        if (!r->k.used || (space >= 0 && e->space != (uint32_t)space))
            continue;
        td_tt_entry x = {e->device, e->space,    e->kind,   e->refs,   e->id,
                         e->size,   e->since_ms, e->o->pid, e->o->gone};
        if (fn(ctx, &x))
            return;
    }
}
