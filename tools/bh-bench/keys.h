/*
 * keys.h - bh-bench's key sets: n live keys, each held by one owner
 * reference, in bufhandle or in one of the baselines.
 *
 * Owns: the keys' addresses (live and free pages interleaved at random, the
 * same for every implementation), their owner references, and the one call
 * per implementation that takes or drops a reference (inline: the workers'
 * loops are compiled once per implementation around them).
 * Must never: time anything (workers.c) or print (output.c).
 */
#ifndef BH_BENCH_KEYS_H
#define BH_BENCH_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "baseline.h"
#include "bench_util.h"
#include "bufhandle/bufhandle.h"

enum impl { IMPL_BH, IMPL_HASH, IMPL_TREE };
extern const char *const impl_names[];

#define DEVICE 0u
#define PAGE 4096u

static inline uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* n live keys (a power of two), each held by one owner reference, in one of
 * the implementations. addr[i] is key i's current address. Addresses come
 * from 2n pages: n live, n free in spare[]; churn frees a live one and
 * allocates a random free one, as an allocator reusing freed memory does
 * (new keys land anywhere among the live ones, not only past them). */
typedef struct keyset {
    enum impl impl;
    bh_registry *reg;
    base_hash *hash;
    base_tree *tree;
    size_t n;
    uint64_t *addr;
    uint64_t *own;   /* owner reference: handle bits, tree entry; unused by the hash */
    uint64_t *spare; /* free addresses */
} keyset;

/* A reference: a handle's bits, a tree entry; the hash releases by key. */
static inline uint64_t ks_take(keyset *ks, enum impl impl, uint64_t address, int create) {
    switch (impl) {
    case IMPL_BH: {
        bh_handle h = BH_HANDLE_NULL;
        bh_status st =
            create ? bh_intern(ks->reg, DEVICE, address, 64, &h) : bh_lookup(ks->reg, DEVICE, address, &h);
        if (st != BH_OK)
            bench_die("bufhandle intern/lookup failed");
        return h.bits;
    }
    case IMPL_HASH:
        if (create)
            base_hash_intern(ks->hash, DEVICE, address);
        else if (!base_hash_lookup(ks->hash, DEVICE, address))
            bench_die("baseline lookup missed");
        return 0;
    case IMPL_TREE: {
        void *e = create ? base_tree_intern(ks->tree, DEVICE, address)
                         : base_tree_lookup(ks->tree, DEVICE, address);
        if (e == NULL)
            bench_die("baseline tree failed");
        return (uint64_t)(uintptr_t)e;
    }
    }
    return 0;
}

static inline void ks_drop(keyset *ks, enum impl impl, uint64_t address, uint64_t ref) {
    switch (impl) {
    case IMPL_BH:
        if (bh_release(ks->reg, (bh_handle){ref}) != BH_OK)
            bench_die("bufhandle release failed");
        break;
    case IMPL_HASH:
        base_hash_release(ks->hash, DEVICE, address);
        break;
    case IMPL_TREE:
        base_tree_release(ks->tree, (void *)(uintptr_t)ref);
        break;
    }
}

/* The empty structure and the key arrays (touched, so that a memory
 * measurement taken after this counts only what populating adds). */
void ks_init(keyset *ks, enum impl impl, uint32_t flags, size_t n);
/* An owner reference to every key. */
void ks_populate(keyset *ks);
/* ks_init, then ks_populate. */
void ks_create(keyset *ks, enum impl impl, uint32_t flags, size_t n);
/* Drops the owner references left, then the structure. */
void ks_destroy(keyset *ks);

#endif
