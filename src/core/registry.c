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

#if defined(BH_VALGRIND_ANNOTATIONS) && BH_VALGRIND_ANNOTATIONS
int bh__under_valgrind; /* atomics.h; written once by the constructor below */
#endif

/* ======================== fork() ======================== */

/* Every registry of the process, so that a fork child can mark the ones its
 * parent made (BH__FORKED): their locks may be held by parent threads that
 * do not exist in the child, their device memory is the parent's, and their
 * reports would be the parent's events again. The lock is taken before fork
 * and released after it on both sides, so the list is whole in the child;
 * no other lock is held with it, and nothing calls out while holding it. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static bh_registry *live_list; /* under live_lock */

static void fork_prepare(void) { pthread_mutex_lock(&live_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&live_lock); }
/* The child has one thread (this one) until it makes more. */
static void fork_child(void) {
    for (bh_registry *r = live_list; r != NULL; r = r->live_next)
        r->flags |= BH__FORKED;
    pthread_mutex_unlock(&live_lock);
}

/* Before any registry can exist; glibc drops the handlers when the library
 * is unloaded. */
__attribute__((constructor)) static void fork_hooks(void) {
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
#if defined(BH_VALGRIND_ANNOTATIONS) && BH_VALGRIND_ANNOTATIONS
    bh__under_valgrind = RUNNING_ON_VALGRIND != 0; /* before any thread, any registry */
#endif
}

static void live_add(bh_registry *reg) {
    pthread_mutex_lock(&live_lock);
    reg->live_prev = NULL;
    reg->live_next = live_list;
    if (live_list != NULL)
        live_list->live_prev = reg;
    live_list = reg;
    pthread_mutex_unlock(&live_lock);
}

static void live_remove(bh_registry *reg) {
    pthread_mutex_lock(&live_lock);
    if (reg->live_prev != NULL)
        reg->live_prev->live_next = reg->live_next;
    else
        live_list = reg->live_next;
    if (reg->live_next != NULL)
        reg->live_next->live_prev = reg->live_prev;
    pthread_mutex_unlock(&live_lock);
}

/* ======================== Registry ======================== */

/* Opens the reporter the environment asks for (see bufhandle.h, TRACKING FROM
 * THE ENVIRONMENT). Tracking is optional: if it cannot be opened, the registry
 * works without reports rather than failing. */
static void reporter_from_env(bh_registry *reg) {
    const char *sock = getenv("BH_TRACK_SOCKET");
    const char *tt = getenv("TT_ALLOC_TRACKING_ENABLED");
    const char *log = getenv("BH_TRACK_LOG");
    bh_status st = BH_EINVAL;
    /* Set to nothing, or the TT switch set to neither 0 nor 1: the user
     * meant to track, and nothing else would say that it is off. */
    if (sock != NULL && sock[0] == '\0')
        bh__env_note_once(BH__NOTE_TRACK_EMPTY,
                          "bufhandle: BH_TRACK_SOCKET is empty: no tracking through it "
                          "(give bh-trackd's path, e.g. $XDG_RUNTIME_DIR/bh-trackd.sock)\n");
    if (tt != NULL && tt[0] != '\0' && strcmp(tt, "0") != 0 && strcmp(tt, "1") != 0)
        bh__env_note_once(BH__NOTE_TT_VALUE,
                          "bufhandle: TT_ALLOC_TRACKING_ENABLED=%.64s: only 1 turns TT tracking on\n", tt);
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

/* The host memory of the registry, for every teardown. */
/* The counters are written and summed with relaxed atomics while other
 * threads count (bh_stats_get's racy sum, by design), and no lock or
 * happens-before edge orders them: for helgrind and drd, which cannot tell
 * an atomic access from a plain one, they are atomic-only memory. */
static bh_registry *alloc_registry(void) {
    bh_registry *reg = bh__zalloc_aligned(_Alignof(bh_registry), sizeof(*reg)); /* stats: 128-byte stripes */
    if (reg != NULL)
        BH__ATOMIC_RANGE(&reg->stats, sizeof(reg->stats));
    return reg;
}

static void free_registry(bh_registry *reg) {
    BH__ATOMIC_RANGE_END(&reg->stats, sizeof(reg->stats));
    bh__free(reg);
}

static void free_tables(bh_registry *reg) {
    for (unsigned i = 0; i < BH__SHARDS; i++)
        bh__shard_fini(&reg->shards[i]);
    bh__ranges_fini(&reg->ranges);
    bh__slab_fini(&reg->slab);
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
    bh_registry *reg = alloc_registry();
    if (reg == NULL)
        return BH_ENOMEM;
    for (unsigned i = 0; i < BH__SHARDS; i++) {
        if (bh__shard_init(&reg->shards[i], &reg->slab) != BH_OK) {
            while (i-- > 0)
                bh__shard_fini(&reg->shards[i]);
            free_registry(reg);
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
    reg->handle_floor = (uint32_t)bh__handle_make(1, reg->tag, 0).bits;
    reg->gen_salt = generation_salt(reg, made);
    bh__ranges_init(&reg->ranges, &reg->slab);
    reg->refs_max = UINT32_MAX;
    if (bh__diag_attach(reg, reg->flags) != BH_OK) {
        close_owned_reporter(reg);
        free_tables(reg);
        free_registry(reg);
        return BH_ENOMEM;
    }
    live_add(reg); /* last: a fork from here on marks it in the child */
    *out = reg;
    return BH_OK;
}

/* In a fork child: 1 if no parent thread was inside any lock of the
 * registry's tables at the fork, so that they are whole and may be freed.
 * trylock never waits: a lock held by a parent thread stays held for good
 * in the child (EBUSY). Leaves every lock as it found it. */
static int tables_whole(bh_registry *reg) {
    unsigned got = 0;
    while (got < BH__SHARDS && bh__stripe_lock_try(&reg->shards[got].lock))
        got++;
    for (unsigned i = 0; i < got; i++)
        bh__stripe_lock_give(&reg->shards[i].lock);
    if (got < BH__SHARDS || pthread_mutex_trylock(&reg->slab.lock) != 0)
        return 0;
    pthread_mutex_unlock(&reg->slab.lock);
    return bh__ranges_unlocked(&reg->ranges); /* the shards' and stripes' locks are range_lock.h's */
}

/* bh_registry_destroy in a fork child of a registry the parent made: frees
 * host memory only. Its live blocks are the parent's device memory (no
 * allocator call, no FREE report), and any of its locks may have been held
 * by a parent thread at the fork, in the middle of changing what it guards:
 * nothing here waits for one. The tables are freed when no lock of theirs
 * was held (else they stay: they may be half-changed); the diagnostics'
 * structures stay (their locks are not looked at, and a growth caught half
 * done would be freed twice); the registry itself is freed unless the
 * at-exit leak report lists it (that list's lock is not fork-safe; the
 * report skips a forked registry). The reporter the environment opened is
 * closed: the socket reporter's inherited connections are dead in a child
 * (report_socket.c's fork handler) and close sends nothing; the log reporter
 * only closes the child's copy of its descriptor. */
static void destroy_forked(bh_registry *reg) {
    close_owned_reporter(reg);
    if (tables_whole(reg))
        free_tables(reg);
    if (reg->diag != NULL && reg->diag->leak_report)
        return;
    live_remove(reg); /* live_lock is the child's: its fork handler released it */
    free_registry(reg);
}

bh_status bh_registry_destroy(bh_registry *reg) {
    if (reg == NULL)
        return BH_EINVAL;
    if (bh__forked(reg)) {
        destroy_forked(reg);
        return BH_OK;
    }
    /* Acquire: pairs with the release store of each shard's live count
     * (bh__shard_live_add), so the teardown below sees everything each
     * shard's last retiring thread wrote. The caller guarantees that no
     * other call is running (see the header): this check is about
     * references still held, not about threads. */
    for (unsigned i = 0; i < BH__SHARDS; i++)
        if (AO_load_acquire(&reg->shards[i].live) != 0)
            return BH_EBUSY;
    live_remove(reg);
    bh__diag_detach(reg);
    close_owned_reporter(reg); /* flushes what is queued */
    free_tables(reg);
    free_registry(reg);
    return BH_OK;
}

bh_status bh_stats_get(bh_registry *reg, bh_stats *out) {
    if (reg == NULL || out == NULL)
        return BH_EINVAL;
    if (bh__forked(reg))
        return BH_EFORKED;
    bh__stats_sum(&reg->stats, out);
    for (unsigned i = 0; i < BH__SHARDS; i++)
        out->live_handles += (uint64_t)AO_load(&reg->shards[i].live); /* relaxed: a statistic */
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
