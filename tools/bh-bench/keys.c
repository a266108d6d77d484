/*
 * keys.c - setting up and tearing down bh-bench's key sets (see keys.h).
 *
 * Owns: the fixed-seed layout of live and free addresses, registry or
 * baseline creation for a set, and its population.
 * Must never: choose a layout that differs between implementations (their
 * figures would not compare).
 */
#include "keys.h"

#include <stdlib.h>
#include <string.h>

const char *const impl_names[] = {"bufhandle", "global mutex + open-addressing hash",
                                  "global mutex + tsearch", "C++ shared_ptr, mutex + weak_ptr map"};

void ks_init(keyset *ks, enum impl impl, uint32_t flags, size_t n) {
    memset(ks, 0, sizeof(*ks));
    ks->impl = impl;
    ks->n = n;
    ks->addr = calloc(n, sizeof(uint64_t));
    ks->own = calloc(n, sizeof(uint64_t));
    ks->spare = calloc(n, sizeof(uint64_t));
    /* Every implementation's: the loops take its elements' addresses. Only
     * the peer's is written (and touched here, for the memory figure). */
    ks->pown = calloc(n, sizeof(peer_ref));
    if (ks->addr == NULL || ks->own == NULL || ks->spare == NULL || ks->pown == NULL)
        bench_die("out of memory");
    memset(ks->own, 0xff, n * sizeof(uint64_t));
    if (impl == IMPL_PEER)
        memset(ks->pown, 0, n * sizeof(peer_ref));
    /* Live and free pages interleaved at random (a fixed seed: the same for
     * every implementation). */
    uint64_t s = 0x243f6a8885a308d3ull;
    for (size_t i = 0; i < n; i++) {
        uint64_t a = 0x10000000 + 2 * i * PAGE, b = a + PAGE;
        int swap = (int)(bh__xorshift64s(&s) & 1);
        ks->addr[i] = swap ? b : a;
        ks->spare[i] = swap ? a : b;
    }
    if (impl == IMPL_BH) {
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.flags = BH_CONFIG_NO_ENV | flags;
        if (bh_registry_create(&cfg, &ks->reg) != BH_OK)
            bench_die("bh_registry_create failed");
    } else if (impl == IMPL_HASH) {
        ks->hash = base_hash_create(n);
    } else if (impl == IMPL_TREE) {
        ks->tree = base_tree_create();
    } else {
        ks->peer = peer_create(n);
    }
    if (ks->reg == NULL && ks->hash == NULL && ks->tree == NULL && ks->peer == NULL)
        bench_die("out of memory");
}

void ks_populate(keyset *ks) {
    for (size_t i = 0; i < ks->n; i++)
        ks->own[i] = ks_take(ks, ks->impl, ks->addr[i], 1, &ks->pown[i]);
}

void ks_create(keyset *ks, enum impl impl, uint32_t flags, size_t n) {
    ks_init(ks, impl, flags, n);
    ks_populate(ks);
}

void ks_destroy(keyset *ks) {
    for (size_t i = 0; i < ks->n; i++)
        if (ks->own[i] != UINT64_MAX)
            ks_drop(ks, ks->impl, ks->addr[i], ks->own[i], &ks->pown[i]);
    if (ks->reg != NULL && bh_registry_destroy(ks->reg) != BH_OK)
        bench_die("bh_registry_destroy: handles left");
    if (ks->hash != NULL)
        base_hash_destroy(ks->hash);
    if (ks->tree != NULL)
        base_tree_destroy(ks->tree);
    if (ks->peer != NULL)
        peer_destroy(ks->peer);
    free(ks->pown);
    free(ks->addr);
    free(ks->own);
    free(ks->spare);
}
