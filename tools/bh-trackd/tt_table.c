/*
 * tt_table.c - TT-Metal's allocation server's bookkeeping (tt_table.h says
 * what it keeps and why).
 *
 * Owns: three tables of the tracker's open-addressing type (otab.h): the
 * entries by (device, space, id), the per-device sums by device, and the
 * processes that own entries, by a serial number per process incarnation (a
 * pid the kernel reuses is another owner), with the pid's current serial.
 * Must never: walk a table outside td_tt_each, or let an entry outlive the
 * counts that include it (every change of an entry updates its device's sums
 * and its owner's counts in the same call).
 */
#include <stdlib.h>

#include "otab.h"
#include "tt_table.h"

typedef struct entry {
    okey k; /* a: id, b: device, c: space */
    uint64_t size, since_ms, owner;
    uint32_t kind, refs;
    pid_t pid;
} entry;

typedef struct device_sum {
    okey k; /* a: device */
    uint64_t bytes[16];
    uint64_t entries;
} device_sum;

typedef struct owner {
    okey k; /* a: serial */
    pid_t pid;
    int gone;
    uint64_t entries, bytes;
} owner;

typedef struct current {
    okey k; /* a: pid */
    uint64_t serial;
} current;

typedef struct view_sum {
    okey k; /* a: device */
    uint64_t bytes[16];
} view_sum;

struct td_tt_table {
    otab entries, devices, owners, current, view;
    uint64_t max_entries, next_serial;
    td_tt_counts c;
};

td_tt_table *td_tt_new(uint64_t max_entries) {
    td_tt_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    ot_init(&t->entries, sizeof(entry));
    ot_init(&t->devices, sizeof(device_sum));
    ot_init(&t->owners, sizeof(owner));
    ot_init(&t->current, sizeof(current));
    ot_init(&t->view, sizeof(view_sum));
    t->max_entries = max_entries;
    return t;
}

void td_tt_free(td_tt_table *t) {
    if (t == NULL)
        return;
    ot_free(&t->entries);
    ot_free(&t->devices);
    ot_free(&t->owners);
    ot_free(&t->current);
    ot_free(&t->view);
    free(t);
}

static uint64_t dkey(int32_t device) { return (uint32_t)device; }

/* The serial of pid's current incarnation, made on its first ALLOC. 0: ENOMEM. */
static uint64_t serial_of(td_tt_table *t, pid_t pid) {
    current *cur = ot_find(&t->current, (uint32_t)pid, 0, 0);
    if (cur != NULL)
        return cur->serial;
    owner *o = ot_insert(&t->owners, t->next_serial + 1, 0, 0);
    if (o == NULL)
        return 0;
    if ((cur = ot_insert(&t->current, (uint32_t)pid, 0, 0)) == NULL) {
        ot_remove(&t->owners, o);
        return 0;
    }
    o->pid = pid;
    cur->serial = ++t->next_serial;
    return cur->serial;
}

int td_tt_alloc(td_tt_table *t, int32_t device, uint32_t space, uint64_t id, uint64_t size, uint32_t kind,
                pid_t pid, uint64_t now_ms) {
    entry *e = ot_find(&t->entries, id, (uint32_t)device, space);
    if (e != NULL) { /* TT's server: one more reference, the bytes are counted once */
        e->refs++;
        t->c.allocs++;
        t->c.references++;
        return TD_TT_REFERENCE;
    }
    if (t->c.live >= t->max_entries) {
        t->c.refused++;
        return TD_TT_FULL;
    }
    uint64_t serial = serial_of(t, pid);
    device_sum *d = serial != 0 ? ot_find(&t->devices, dkey(device), 0, 0) : NULL;
    if (serial != 0 && d == NULL)
        d = ot_insert(&t->devices, dkey(device), 0, 0);
    if (d == NULL || (e = ot_insert(&t->entries, id, (uint32_t)device, space)) == NULL) {
        t->c.refused++; /* an owner or device record without entries is harmless: it is reused */
        return TD_TT_FULL;
    }
    *e = (entry){e->k, size, now_ms, serial, kind & 15u, 1, pid};
    d->bytes[kind & 15u] += size;
    d->entries++;
    owner *o = ot_find(&t->owners, serial, 0, 0);
    o->entries++;
    o->bytes += size;
    t->c.allocs++;
    t->c.live++;
    t->c.live_bytes += size;
    return TD_TT_NEW;
}

int td_tt_release(td_tt_table *t, int32_t device, uint32_t space, uint64_t id, int *last) {
    entry *e = ot_find(&t->entries, id, (uint32_t)device, space);
    *last = 0;
    if (e == NULL) {
        t->c.unknown_frees++;
        return -1;
    }
    t->c.frees++;
    if (--e->refs > 0)
        return 0;
    *last = 1;
    device_sum *d = ot_find(&t->devices, dkey(device), 0, 0);
    d->bytes[e->kind] -= e->size;
    if (--d->entries == 0)
        ot_remove(&t->devices, d);
    owner *o = ot_find(&t->owners, e->owner, 0, 0);
    o->entries--;
    o->bytes -= e->size;
    if (o->gone) {
        t->c.leaks--;
        t->c.leaked_bytes -= e->size;
        if (o->entries == 0)
            ot_remove(&t->owners, o);
    }
    t->c.live--;
    t->c.live_bytes -= e->size;
    ot_remove(&t->entries, e);
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
    owner *o = ot_find(&t->owners, cur->serial, 0, 0);
    ot_remove(&t->current, cur);
    if (o == NULL)
        return;
    if (o->entries == 0) {
        ot_remove(&t->owners, o);
        return;
    }
    o->gone = 1;
    t->c.leaks += o->entries;
    t->c.leaked_bytes += o->bytes;
}

void td_tt_counts_get(const td_tt_table *t, td_tt_counts *out) { *out = t->c; }

void td_tt_each(const td_tt_table *t, int space, int (*fn)(void *ctx, const td_tt_entry *e), void *ctx) {
    for (size_t i = 0; i < t->entries.cap; i++) {
        const entry *e = (const entry *)(const void *)ot_slot(&t->entries, i);
        if (!e->k.used || (space >= 0 && e->k.c != (uint64_t)space))
            continue;
        const owner *o = ot_find(&t->owners, e->owner, 0, 0);
        td_tt_entry x = {(int32_t)e->k.b, (uint32_t)e->k.c,    e->kind, e->refs, e->k.a, e->size, e->since_ms,
                         e->pid,          o != NULL && o->gone};
        if (fn(ctx, &x))
            return;
    }
}
