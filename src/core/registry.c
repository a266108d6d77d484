/*
 * registry.c - a registry's creation and destruction, and what it takes from
 * the environment.
 *
 * Owns: bh_registry_create / bh_registry_destroy (shards, range index, slab,
 * the registry's tag and generation salt, the diagnostics' attach and
 * detach), the reporter the environment asks for, and bh_stats_get.
 * Must never: tear a registry down while a block is live (BH_EBUSY), or fail
 * creation because tracking from the environment could not be opened.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "diag/diag.h"
#include "internal.h"

/* Process-wide count of registries made, the source of registry tags. */
static AO_t registries_made;

/* ======================== Registry ======================== */

/* Opens the reporter the environment asks for (see bufhandle.h, TRACKING FROM
 * THE ENVIRONMENT). Tracking is optional: if it cannot be opened, the registry
 * works without reports rather than failing. */
static void reporter_from_env(bh_registry *reg) {
    const char *sock = getenv("BH_TRACK_SOCKET");
    const char *tt = getenv("TT_ALLOC_TRACKING_ENABLED");
    const char *log = getenv("BH_TRACK_LOG");
    bh_status st = BH_EINVAL;
    if (sock != NULL && sock[0] != '\0') {
        st = bh__socket_reporter_open_env("BH_TRACK_SOCKET", sock, NULL, &reg->env_reporter);
    } else if (tt != NULL && strcmp(tt, "1") == 0) {
        bh_socket_options opt;
        memset(&opt, 0, sizeof(opt));
        opt.flags = BH_SOCKET_COMPAT_TT;
        const char *path = getenv("BH_TT_SOCKET");
        st = bh__socket_reporter_open_env("TT_ALLOC_TRACKING_ENABLED",
                                          path != NULL && path[0] != '\0' ? path : NULL, &opt,
                                          &reg->env_reporter);
    } else if (log != NULL && log[0] != '\0') {
        st = bh_log_reporter_open(log, &reg->env_reporter);
    }
    if (st != BH_OK)
        memset(&reg->env_reporter, 0, sizeof(reg->env_reporter));
}

/* 32 random bits for bh__handle_of. getrandom() does not block once the
 * kernel's pool is initialised (always, after early boot); if it cannot answer,
 * the clock, the pid, the registry's address and its creation number, mixed,
 * still differ between any two registries of one process. */
static uint32_t generation_salt(const bh_registry *reg, AO_t made) {
    uint32_t salt;
    if (getrandom(&salt, sizeof(salt), GRND_NONBLOCK) == (ssize_t)sizeof(salt))
        return salt;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mix = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 40) ^
                   (uint64_t)(uintptr_t)reg;
    return (uint32_t)bh__key_hash((uint32_t)made, mix);
}

static void close_owned_reporter(bh_registry *reg) {
    if (bh__is_socket_reporter(&reg->env_reporter))
        bh_socket_reporter_close(&reg->env_reporter);
    else if (bh__is_log_reporter(&reg->env_reporter))
        bh_log_reporter_close(&reg->env_reporter);
}

bh_status bh_registry_create(const bh_config *cfg, bh_registry **out) {
    if (out == NULL)
        return BH_EINVAL;
    if (cfg != NULL &&
        (cfg->flags & ~(uint32_t)(BH_CONFIG_NO_ENV | BH_CONFIG_ALLOC_EX | BH_CONFIG_NO_OVERLAP_CHECK |
                                  BH_CONFIG_STRICT_INTERN | BH__DIAG_ROUTE)) != 0)
        return BH_EINVAL;
    if (cfg != NULL && (cfg->flags & BH_CONFIG_ALLOC_EX) && cfg->alloc_ex == NULL)
        return BH_EINVAL;
    bh_registry *reg = bh__zalloc_aligned(_Alignof(bh_registry), sizeof(*reg)); /* stats: 128-byte stripes */
    if (reg == NULL)
        return BH_ENOMEM;
    for (unsigned i = 0; i < BH__SHARDS; i++) {
        if (bh__shard_init(&reg->shards[i], &reg->slab) != BH_OK) {
            while (i-- > 0)
                bh__shard_fini(&reg->shards[i]);
            bh__free(reg);
            return BH_ENOMEM;
        }
    }
    bh__slab_init(&reg->slab);
    if (cfg != NULL) {
        reg->allocator = cfg->allocator;
        reg->reporter = cfg->reporter;
        reg->flags = cfg->flags;
        if (cfg->flags & BH_CONFIG_ALLOC_EX)
            reg->alloc_ex = cfg->alloc_ex;
    }
    if (!(reg->flags & BH_CONFIG_NO_ENV))
        reporter_from_env(reg); /* also beside the application's reporter: a tee */
    /* Relaxed: tags need only differ, they publish nothing. */
    AO_t made = AO_fetch_and_add1(&registries_made);
    reg->tag = (uint32_t)(made % 255u) + 1u;
    reg->gen_salt = generation_salt(reg, made);
    bh__ranges_init(&reg->ranges, &reg->slab);
    reg->refs_max = UINT32_MAX;
    if (bh__diag_attach(reg, reg->flags) != BH_OK) {
        close_owned_reporter(reg);
        for (unsigned i = 0; i < BH__SHARDS; i++)
            bh__shard_fini(&reg->shards[i]);
        bh__ranges_fini(&reg->ranges);
        bh__slab_fini(&reg->slab);
        bh__free(reg);
        return BH_ENOMEM;
    }
    *out = reg;
    return BH_OK;
}

bh_status bh_registry_destroy(bh_registry *reg) {
    if (reg == NULL)
        return BH_EINVAL;
    /* Acquire: pairs with the release decrement in bh__live_sub(), so the
     * teardown below sees everything the last retiring thread wrote. The
     * caller guarantees that no other call is running (see the header): this
     * check is about references still held, not about threads. */
    if (AO_load_acquire(&reg->stats.live_blocks) != 0)
        return BH_EBUSY;
    bh__diag_detach(reg);
    close_owned_reporter(reg); /* flushes what is queued */
    for (unsigned i = 0; i < BH__SHARDS; i++)
        bh__shard_fini(&reg->shards[i]);
    bh__ranges_fini(&reg->ranges);
    bh__slab_fini(&reg->slab);
    bh__free(reg);
    return BH_OK;
}

bh_status bh_stats_get(bh_registry *reg, bh_stats *out) {
    if (reg == NULL || out == NULL)
        return BH_EINVAL;
    bh__stats_sum(&reg->stats, out);
    const bh_reporter *both[2] = {&reg->reporter, &reg->env_reporter};
    for (int i = 0; i < 2; i++) {
        bh_reporter_stats rs;
        if (bh_socket_reporter_stats(both[i], &rs) == BH_OK) {
            out->reports_dropped += rs.dropped;
            out->resyncs += rs.resyncs;
        }
    }
    return BH_OK;
}

/* ======================== Test hooks ======================== */

void bh__registry_set_refs_max(bh_registry *reg, uint32_t refs_max) { reg->refs_max = refs_max; }
