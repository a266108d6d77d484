/*
 * workload.c - bh-demo's workload and one run of it.
 *
 * Inference-like: each thread owns some layers whose weights are mesh buffers
 * (one backing buffer plus one buffer per device at the same address) that
 * live for the whole run, with extra per-device aliases held by a "program
 * cache". Every step, each layer makes an activation mesh buffer; other
 * subsystems take a view of it and re-create buffers at its address; then
 * every object is destroyed, in a shuffled order.
 * Owns: the worker threads, the simulated device of a run, the run's result.
 * Must never: print anything but progress on stderr (output.c prints), or
 * talk to a buffer other than through the runtime's rt_ops.
 */
#define _POSIX_C_SOURCE 200809L
#include <atomic_ops.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"
#include "wire.h"
#include "xorshift.h"

typedef struct worker {
    runtime *rt;
    const options *o;
    uint32_t id;
    uint64_t rng;
    uint64_t failures;
    uint64_t meshes;  /* mesh buffers made */
    uint64_t objects; /* buffer objects destroyed (mesh parts and aliases) */
    AO_t *progress;
} worker;

static void shuffle(void **v, size_t n, uint64_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(bh__xorshift64s(rng) % i);
        void *t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Objects of one mesh buffer plus its aliases. */
typedef struct group {
    void **obj;
    size_t n, cap;
} group;

static void group_add(group *g, void *o) {
    if (o != NULL && g->n < g->cap)
        g->obj[g->n++] = o;
}

static void group_destroy_shuffled(worker *w, group *g) {
    shuffle(g->obj, g->n, &w->rng);
    for (size_t i = 0; i < g->n; i++)
        w->rt->ops->destroy(w->rt, g->obj[i]);
    w->objects += g->n;
    g->n = 0;
}

/* A mesh buffer with n_alias extra aliases (views of the backing buffer and
 * buffers re-created at its address on random devices). */
static int make_group(worker *w, group *g, uint64_t size, bh_sim_mem mem, uint32_t n_alias) {
    runtime *rt = w->rt;
    if (rt->ops->mesh_create(rt, size, mem, g->obj) != 0) { /* made nothing: skip */
        g->n = 0;
        w->failures++;
        return -1;
    }
    g->n = 1 + rt->devices;
    w->meshes++;
    for (uint32_t a = 0; a < n_alias; a++) {
        uint64_t r = bh__xorshift64s(&w->rng);
        void *like = g->obj[1 + r % rt->devices];
        void *alias = (r >> 32) % 2 ? rt->ops->view(rt, g->obj[0], 0, size / 2)
                                    : rt->ops->create_at(rt, like, (uint32_t)((r >> 40) % rt->devices));
        if (alias == NULL)
            w->failures++;
        group_add(g, alias);
    }
    return 0;
}

static void *work(void *arg) {
    worker *w = arg;
    const options *o = w->o;
    runtime *rt = w->rt;
    size_t cap = 1 + rt->devices + o->aliases + rt->devices;
    group *weights = calloc(o->layers, sizeof(group));
    group act = {calloc(cap, sizeof(void *)), 0, cap};
    for (uint32_t l = 0; l < o->layers; l++) {
        weights[l] = (group){calloc(cap, sizeof(void *)), 0, cap};
        uint64_t size = (1 + bh__xorshift64s(&w->rng) % 64) << 20; /* 1..64 MiB */
        if (make_group(w, &weights[l], size, BH_SIM_DRAM, 0) == 0)
            for (uint32_t d = 0; d < rt->devices; d++) /* the program cache's aliases */
                group_add(&weights[l], rt->ops->create_at(rt, weights[l].obj[1 + d], d));
    }
    for (uint32_t s = 0; s < o->steps; s++) {
        for (uint32_t l = 0; l < o->layers; l++) {
            uint64_t r = bh__xorshift64s(&w->rng);
            bh_sim_mem mem = r % 4 == 0 ? BH_SIM_DRAM : BH_SIM_L1;
            uint64_t size = mem == BH_SIM_L1 ? (1 + (r >> 8) % 64) << 10 : (1 + (r >> 8) % 64) << 20;
            if (make_group(w, &act, size, mem, o->aliases) == 0)
                group_destroy_shuffled(w, &act);
        }
        if (w->progress != NULL)
            (void)AO_fetch_and_add1(w->progress); /* relaxed: a progress meter */
    }
    for (uint32_t l = 0; l < o->layers; l++) {
        group_destroy_shuffled(w, &weights[l]);
        free(weights[l].obj);
    }
    free(weights);
    free(act.obj);
    return NULL;
}

/* ======================== One run ======================== */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int demo_run(const options *o, int handles, const char *sock_path, result *res) {
    memset(res, 0, sizeof(*res));
    res->name = handles ? "handles (shim)" : "raw Buffer objects";
    bh_sim_config sc = bh_sim_default_config(o->devices, 1);
    sc.slots[BH_SIM_L1] = 1024;
    bh_sim *sim;
    if (bh_sim_create(&sc, &sim) != BH_OK)
        return -1;
    tracker tr = {.t = bh_track_new(0), .tt_fd = -1};
    pthread_mutex_init(&tr.lock, NULL);
    if (o->tt_server != NULL && !handles) { /* the raw runtime reports as TT's own client */
        tr.tt_size = bh_tt_record_size_of(getenv("BH_TT_RECORD_SIZE"));
        if ((tr.tt_fd = demo_tt_connect(o->tt_server)) < 0) {
            fprintf(stderr, "bh-demo: no TT allocation server accepts on %s\n", o->tt_server);
            return -1;
        }
    } else if (o->tt_server != NULL || sock_path != NULL) {
        /* The demo would rather wait for the server than drop reports: its
         * table is about counts. To a TT server: the library's TT reporter. */
        bh_socket_options so = {.max_block_us = 5000000,
                                .flush_timeout_ms = 30000,
                                .flags = o->tt_server != NULL ? BH_SOCKET_COMPAT_TT : 0};
        if (bh_socket_reporter_open(o->tt_server != NULL ? o->tt_server : sock_path, &so, &tr.sock) != BH_OK)
            return -1;
    }
    runtime rt = {
        .ops = handles ? &demo_shim_ops : &demo_raw_ops, .sim = sim, .tr = &tr, .devices = o->devices};
    if (handles) {
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.allocator = bh_sim_allocator(sim);
        cfg.reporter = (bh_reporter){demo_tracker_report, &tr};
        cfg.flags = BH_CONFIG_NO_ENV;
        if (bh_registry_create(&cfg, &rt.reg) != BH_OK ||
            bh_shim_mesh_open(rt.reg, o->devices, &rt.mesh) != BH_OK)
            return -1;
    }

    AO_t progress = 0;
    worker *w = calloc(o->threads, sizeof(worker));
    pthread_t *tid = calloc(o->threads, sizeof(pthread_t));
    double t0 = now_seconds();
    for (uint32_t i = 0; i < o->threads; i++) {
        w[i] = (worker){.rt = &rt,
                        .o = o,
                        .id = i,
                        .rng = (o->seed + 1) * 0x9e3779b97f4a7c15ull + i,
                        .progress = &progress};
        pthread_create(&tid[i], NULL, work, &w[i]);
    }
    if (!o->quiet) {
        /* Progress only for runs long enough to wonder about (over 1 s). */
        uint64_t total = (uint64_t)o->steps * o->threads;
        int shown = 0;
        for (;;) {
            uint64_t done = (uint64_t)AO_load(&progress);
            if (done >= total)
                break;
            if (now_seconds() - t0 > 1.0) {
                fprintf(stderr, "\rbh-demo: %-20s %3u%%", res->name, (unsigned)(done * 100 / total));
                shown = 1;
            }
            nanosleep(&(struct timespec){0, 100000000}, NULL);
        }
        if (shown)
            fprintf(stderr, "\rbh-demo: %-20s done\n", res->name);
    }
    for (uint32_t i = 0; i < o->threads; i++) {
        pthread_join(tid[i], NULL);
        res->failures += w[i].failures;
        res->meshes += w[i].meshes;
        res->objects += w[i].objects;
    }
    res->seconds = now_seconds() - t0;

    if (handles) {
        bh_shim_mesh_close(rt.mesh);
        if (bh_registry_destroy(rt.reg) != BH_OK)
            fprintf(stderr, "bh-demo: registry still has live handles at the end\n");
    }
    if (tr.sock.report != NULL) {
        bh_reporter_stats rs;
        (void)bh_socket_reporter_flush(&tr.sock, 30000); /* sent and withheld are final */
        bh_socket_reporter_stats(&tr.sock, &rs);
        res->reports_dropped = rs.dropped;
        res->reports_withheld = rs.withheld;
        res->tt_records = o->tt_server != NULL ? rs.sent : 0;
        bh_socket_reporter_close(&tr.sock); /* flushes */
    }
    /* The runtime "process" ends: whatever the tracker still holds leaked. */
    bh_track_client_gone(tr.t, 1, NULL, NULL);
    bh_track_totals(tr.t, UINT64_MAX, UINT32_MAX, &res->track);
    res->nworst = bh_track_most_overfreed(tr.t, res->worst, 5);
    res->alloc_reports = tr.alloc_reports;
    res->free_reports = tr.free_reports;
    bh_sim_stats_get(sim, &res->sim);
    res->sim_live = bh_sim_live_allocations(sim);
    if (tr.tt_fd >= 0) {
        res->tt_records = tr.tt_records;
        close(tr.tt_fd);
    }
    bh_track_free(tr.t);
    pthread_mutex_destroy(&tr.lock);
    bh_sim_destroy(sim);
    free(w);
    free(tid);
    return 0;
}
