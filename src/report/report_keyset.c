/*
 * report_keyset.c - the socket reporter's key sets: open addressing, linear
 * probing, backward-shift deletion (report_socket.h).
 *
 * Owns: kentry/keyset storage for what only the sender thread touches (the
 * TT server's known set, the live set at a snapshot point).
 * Must never: be used from an application thread (growing a set rehashes it),
 * or lose a key silently (rs_key_add says when host memory ran out).
 */

#include "report_socket.h"

/* ======================== Key sets (sender thread only) ======================== */

static size_t key_home(const keyset *s, uint32_t device, uint64_t address) {
    return (size_t)bh__key_hash(device, address) & (s->cap - 1);
}

static int key_grow(keyset *s) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    kentry *e = bh__calloc(cap, sizeof(*e));
    if (e == NULL)
        return -1;
    keyset old = *s;
    s->e = e;
    s->cap = cap;
    s->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.e[i].used)
            continue;
        size_t j = key_home(s, old.e[i].device, old.e[i].address);
        while (s->e[j].used)
            j = (j + 1) & (cap - 1);
        s->e[j] = old.e[i];
        s->n++;
    }
    bh__free(old.e);
    return 0;
}

static size_t key_slot(const keyset *s, uint32_t device, uint64_t address) {
    size_t i = key_home(s, device, address);
    while (s->e[i].used && !(s->e[i].device == device && s->e[i].address == address))
        i = (i + 1) & (s->cap - 1);
    return i;
}

const kentry *rs_key_get(const keyset *s, uint32_t device, uint64_t address) {
    if (s->cap == 0)
        return NULL;
    const kentry *e = &s->e[key_slot(s, device, address)];
    return e->used ? e : NULL;
}

/* Returns 0, or -1 when host memory ran out. */
int rs_key_add(keyset *s, uint32_t device, uint64_t address, uint32_t domain) {
    if ((s->n + 1) * 2 > s->cap && key_grow(s) != 0)
        return -1;
    size_t i = key_slot(s, device, address);
    if (!s->e[i].used)
        s->n++;
    s->e[i] = (kentry){address, device, 1, domain};
    return 0;
}

void rs_key_del(keyset *s, uint32_t device, uint64_t address) {
    if (s->cap == 0)
        return;
    size_t i = key_slot(s, device, address);
    if (!s->e[i].used)
        return;
    s->e[i].used = 0;
    s->n--;
    /* Backward shift: pull later members of the probe run into the hole. */
    for (size_t j = (i + 1) & (s->cap - 1); s->e[j].used; j = (j + 1) & (s->cap - 1)) {
        size_t h = key_home(s, s->e[j].device, s->e[j].address);
        /* Move e[j] to i if its home is not in the cyclic range (i, j]. */
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            s->e[i] = s->e[j];
            s->e[j].used = 0;
            i = j;
        }
    }
}

void rs_key_clear(keyset *s) {
    bh__free(s->e);
    *s = (keyset){NULL, 0, 0};
}
