/*
 * simdev.c - see simdev.h.
 *
 * Owns: per-memory slot pools and per-(device, slot) allocation bits.
 * Must never: crash or corrupt itself on a bad free; it counts it instead.
 */
#include "simdev.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One pool per memory kind in lock-step mode, per (device, memory) otherwise. */
typedef struct pool {
    uint32_t *stack; /* free slot indices, top at the end */
    uint32_t depth;
} pool;

struct bh_sim {
    pthread_mutex_t lock;
    bh_sim_config cfg;
    pool *pools;           /* lockstep: [mem]; else [device * 2 + mem] */
    uint8_t *allocated[2]; /* [mem][device * slots[mem] + k] */
    uint32_t *holders[2];  /* lockstep: devices still holding slot k of mem */
    bh_sim_stats stats;
};

bh_sim_config bh_sim_default_config(uint32_t devices, int lockstep) {
    bh_sim_config c;
    memset(&c, 0, sizeof(c));
    c.devices = devices;
    c.lockstep = lockstep;
    c.base[BH_SIM_DRAM] = 0x20000000ull;
    c.slot[BH_SIM_DRAM] = 64ull << 20;
    c.slots[BH_SIM_DRAM] = 1024;
    c.base[BH_SIM_L1] = 0x10000ull;
    c.slot[BH_SIM_L1] = 64ull << 10;
    c.slots[BH_SIM_L1] = 64;
    return c;
}

static uint32_t pool_count(const bh_sim_config *c) { return c->lockstep ? 2u : c->devices * 2u; }

static pool *pool_of(bh_sim *sim, uint32_t device, uint32_t mem) {
    return &sim->pools[sim->cfg.lockstep ? mem : device * 2u + mem];
}

void bh_sim_destroy(bh_sim *sim) {
    if (sim == NULL)
        return;
    if (sim->pools != NULL)
        for (uint32_t p = 0; p < pool_count(&sim->cfg); p++)
            free(sim->pools[p].stack);
    for (int m = 0; m < 2; m++) {
        free(sim->allocated[m]);
        free(sim->holders[m]);
    }
    free(sim->pools);
    pthread_mutex_destroy(&sim->lock);
    free(sim);
}

bh_status bh_sim_create(const bh_sim_config *cfg, bh_sim **out) {
    if (cfg == NULL || out == NULL || cfg->devices == 0)
        return BH_EINVAL;
    for (int m = 0; m < 2; m++)
        if (cfg->slots[m] == 0 || cfg->slot[m] == 0 || (cfg->slot[m] & (cfg->slot[m] - 1)) != 0)
            return BH_EINVAL;
    bh_sim *sim = calloc(1, sizeof(*sim));
    if (sim == NULL)
        return BH_ENOMEM;
    pthread_mutex_init(&sim->lock, NULL);
    sim->cfg = *cfg;
    sim->pools = calloc(pool_count(cfg), sizeof(pool));
    int ok = sim->pools != NULL;
    for (int m = 0; ok && m < 2; m++) {
        sim->allocated[m] = calloc((size_t)cfg->devices * cfg->slots[m], 1);
        sim->holders[m] = calloc(cfg->slots[m], sizeof(uint32_t));
        ok = sim->allocated[m] != NULL && sim->holders[m] != NULL;
    }
    for (uint32_t p = 0; ok && p < pool_count(cfg); p++) {
        uint32_t mem = p % 2u, n = cfg->slots[mem];
        pool *pl = &sim->pools[p];
        pl->stack = malloc((size_t)n * sizeof(uint32_t));
        ok = pl->stack != NULL;
        /* Highest index pushed first, so the first allocation gets the base. */
        for (uint32_t k = n; ok && k-- > 0;)
            pl->stack[pl->depth++] = k;
    }
    if (!ok) {
        bh_sim_destroy(sim);
        return BH_ENOMEM;
    }
    *out = sim;
    return BH_OK;
}

int bh_sim_alloc(bh_sim *sim, uint32_t domain, uint64_t size, uint64_t *address) {
    uint32_t device = bh_sim_domain_device(domain), mem = bh_sim_domain_mem(domain);
    if (sim == NULL || address == NULL || device >= sim->cfg.devices || mem > BH_SIM_L1)
        return 1;
    pthread_mutex_lock(&sim->lock);
    pool *pl = pool_of(sim, device, mem);
    int rc = 1;
    if (size > 0 && size <= sim->cfg.slot[mem] && pl->depth > 0) {
        uint32_t k = pl->stack[--pl->depth];
        uint32_t n = sim->cfg.slots[mem];
        if (sim->cfg.lockstep) {
            for (uint32_t d = 0; d < sim->cfg.devices; d++)
                sim->allocated[mem][(size_t)d * n + k] = 1;
            sim->holders[mem][k] = sim->cfg.devices;
        } else {
            sim->allocated[mem][(size_t)device * n + k] = 1;
        }
        *address = sim->cfg.base[mem] + (uint64_t)k * sim->cfg.slot[mem];
        /* Counted per device: a lock-step allocation is one on every device. */
        uint32_t copies = sim->cfg.lockstep ? sim->cfg.devices : 1u;
        sim->stats.allocs += copies;
        sim->stats.live_bytes += sim->cfg.slot[mem] * copies;
        if (sim->stats.live_bytes > sim->stats.peak_live_bytes)
            sim->stats.peak_live_bytes = sim->stats.live_bytes;
        rc = 0;
    } else {
        sim->stats.alloc_failures++;
    }
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

void bh_sim_free(bh_sim *sim, uint32_t domain, uint64_t address, uint64_t size) {
    (void)size;
    uint32_t device = bh_sim_domain_device(domain), mem = bh_sim_domain_mem(domain);
    if (sim == NULL)
        return;
    pthread_mutex_lock(&sim->lock);
    sim->stats.frees++;
    uint32_t m = mem > BH_SIM_L1 ? 0 : mem; /* an unsimulated kind is unknown below */
    uint64_t base = sim->cfg.base[m], slot = sim->cfg.slot[m];
    uint32_t n = sim->cfg.slots[m];
    if (mem > BH_SIM_L1 || device >= sim->cfg.devices || address < base || (address - base) % slot != 0 ||
        (address - base) / slot >= n) {
        sim->stats.unknown_frees++;
    } else {
        uint32_t k = (uint32_t)((address - base) / slot);
        uint8_t *bit = &sim->allocated[mem][(size_t)device * n + k];
        if (!*bit) {
            sim->stats.double_frees++;
        } else {
            *bit = 0;
            sim->stats.live_bytes -= slot;
            /* Lock-step: the address is free again once every device let go. */
            if (!sim->cfg.lockstep || --sim->holders[mem][k] == 0) {
                pool *pl = pool_of(sim, device, mem);
                pl->stack[pl->depth++] = k;
            }
        }
    }
    pthread_mutex_unlock(&sim->lock);
}

static int alloc_cb(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    return bh_sim_alloc(ctx, device, size, address);
}

static void free_cb(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    bh_sim_free(ctx, device, address, size);
}

bh_allocator bh_sim_allocator(bh_sim *sim) { return (bh_allocator){alloc_cb, free_cb, sim}; }

void bh_sim_stats_get(bh_sim *sim, bh_sim_stats *out) {
    pthread_mutex_lock(&sim->lock);
    *out = sim->stats;
    pthread_mutex_unlock(&sim->lock);
}

uint64_t bh_sim_live_allocations(bh_sim *sim) {
    uint64_t live = 0;
    pthread_mutex_lock(&sim->lock);
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < (size_t)sim->cfg.devices * sim->cfg.slots[m]; i++)
            live += sim->allocated[m][i];
    pthread_mutex_unlock(&sim->lock);
    return live;
}
