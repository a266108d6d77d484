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
#include "peer.h"
#include "xorshift.h"

enum impl { IMPL_BH, IMPL_HASH, IMPL_TREE, IMPL_PEER };
extern const char *const impl_names[];

#define DEVICE 0u
#define PAGE 4096u

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
    peer_map *peer;
    size_t n;
    uint64_t *addr;
    uint64_t *own;   /* owner reference: handle bits, tree entry; unused by the hash; UINT64_MAX: none */
    peer_ref *pown;  /* the C++ peer's owner references (a shared_ptr is 16 bytes); own[] says which */
    uint64_t *spare; /* free addresses */
} keyset;

/* A reference: a handle's bits, a tree entry; the hash releases by key; the
 * C++ peer's is a shared_ptr, which goes to *pr. */
static inline uint64_t ks_take(keyset *ks, enum impl impl, uint64_t address, int create, peer_ref *pr) {
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
    case IMPL_PEER:
        if (create)
            peer_intern(ks->peer, DEVICE, address, 64, pr);
        else if (!peer_lookup(ks->peer, DEVICE, address, pr))
            bench_die("C++ peer lookup missed");
        return 0;
    }
    return 0;
}

static inline void ks_drop(keyset *ks, enum impl impl, uint64_t address, uint64_t ref, peer_ref *pr) {
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
    case IMPL_PEER:
        peer_release(pr);
        break;
    }
}

/* A reference to a random live key, dropped at once (lookup or intern
 * alias). */
static inline void ks_hit(keyset *ks, enum impl impl, uint64_t address, int create) {
    peer_ref pr = {{NULL, NULL}};
    ks_drop(ks, impl, address, ks_take(ks, impl, address, create, &pr), &pr);
}

/* Churn: key k's owner lets go, which frees its address, and free address j
 * is interned in its place (as an allocator reusing memory hands it out). */
static inline void ks_replace(keyset *ks, enum impl impl, size_t k, size_t j) {
    uint64_t freed = ks->addr[k];
    ks_drop(ks, impl, freed, ks->own[k], &ks->pown[k]);
    ks->addr[k] = ks->spare[j];
    ks->spare[j] = freed;
    ks->own[k] = ks_take(ks, impl, ks->addr[k], 1, &ks->pown[k]);
}

/* Bytes of a port cycle's allocation, and the offset of its view. */
#define PORT_SIZE PAGE
#define PORT_VIEW (PAGE / 2)

/* A port's cycle at free address a: create (the runtime allocated the
 * memory itself), create at the address (an alias of the same buffer), a
 * view at an offset into it, then three destroys. bufhandle: bh_adopt,
 * bh_intern, bh_lookup_containing. The hash: the same key twice and the
 * view's address as a key of its own (a hash cannot find the allocation
 * that contains an address). The C++ peer: intern twice through its map,
 * and the view an aliasing shared_ptr (what the idiom does). */
static inline void ks_port_cycle(keyset *ks, enum impl impl, uint64_t a) {
    switch (impl) {
    case IMPL_BH: {
        bh_handle h[3];
        if (bh_adopt(ks->reg, DEVICE, a, PORT_SIZE, &h[0]) != BH_OK ||
            bh_intern(ks->reg, DEVICE, a, PORT_SIZE, &h[1]) != BH_OK ||
            bh_lookup_containing(ks->reg, DEVICE, a + PORT_VIEW, &h[2]) != BH_OK)
            bench_die("bufhandle port cycle: create failed");
        for (int i = 2; i >= 0; i--)
            if (bh_release(ks->reg, h[i]) != BH_OK)
                bench_die("bufhandle port cycle: destroy failed");
        break;
    }
    case IMPL_HASH:
        base_hash_intern(ks->hash, DEVICE, a);
        base_hash_intern(ks->hash, DEVICE, a);
        base_hash_intern(ks->hash, DEVICE, a + PORT_VIEW);
        base_hash_release(ks->hash, DEVICE, a + PORT_VIEW);
        base_hash_release(ks->hash, DEVICE, a);
        base_hash_release(ks->hash, DEVICE, a);
        break;
    case IMPL_TREE:
        bench_die("no port cycle on the tsearch baseline");
    case IMPL_PEER: {
        peer_ref r[3] = {{{NULL, NULL}}, {{NULL, NULL}}, {{NULL, NULL}}};
        peer_intern(ks->peer, DEVICE, a, PORT_SIZE, &r[0]);
        peer_intern(ks->peer, DEVICE, a, PORT_SIZE, &r[1]);
        peer_view(&r[1], &r[2]);
        for (int i = 2; i >= 0; i--)
            peer_release(&r[i]);
        break;
    }
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
