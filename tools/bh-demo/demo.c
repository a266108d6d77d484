/*
 * bh-demo - a simulated device runtime, run the old way and the handle way.
 *
 * The workload is inference-like: each thread owns some layers whose weights
 * are mesh buffers (one backing buffer plus one buffer per device at the same
 * address) that live for the whole run, with extra per-device aliases held by a
 * "program cache". Every step, each layer makes an activation mesh buffer; other
 * subsystems take a view of it and re-create buffers at its address; then every
 * object is destroyed, in a shuffled order.
 *
 * Run 1, raw: each object deallocates and reports on its own, as the original
 * runtime does. Run 2, handles: the same workload through the shim. Both report
 * to an allocation tracker and use a lock-step simulated allocator that counts
 * double frees. The exit status is 0 only if the handle run is clean (no double
 * free, no unknown FREE, no duplicate ALLOC, no leak) and the raw run shows the
 * problem.
 */
#define _POSIX_C_SOURCE 200809L
#include <atomic_ops.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bufhandle/bufhandle.h"
#include "shim.h"
#include "simdev.h"
#include "proc.h"
#include "track.h"

/* ======================== Options ======================== */

typedef struct options {
    uint32_t devices, threads, layers, steps, aliases;
    uint64_t seed;
    int json, quiet;
    const char *trackd; /* bh-trackd binary; NULL: in-process tracker only */
} options;

static void usage(FILE *f) {
    fprintf(f, "usage: bh-demo [--devices N] [--threads N] [--layers N] [--steps N] [--aliases N]\n"
               "               [--seed N] [--json] [--quiet] [--trackd PATH | --no-trackd]\n"
               "  --devices  devices in the mesh (default 8)\n"
               "  --threads  runtime threads (default 4)\n"
               "  --layers   layers per thread (default 12)\n"
               "  --steps    inference steps (default 200)\n"
               "  --aliases  extra aliases per activation (default 3)\n"
               "  --seed     workload seed (default 1)\n"
               "  --json     print the result as JSON\n"
               "  --quiet    no progress on stderr\n"
               "  --trackd   the bh-trackd to report to (default: the one next to bh-demo)\n"
               "  --no-trackd  count with an in-process tracker instead of bh-trackd\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > max || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, options *o) {
    *o = (options){.devices = 8,
                   .threads = 4,
                   .layers = 12,
                   .steps = 200,
                   .aliases = 3,
                   .seed = 1,
                   .trackd = bh_trackd_next_to_self()};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
            continue;
        }
        if (strcmp(a, "--no-trackd") == 0) {
            o->trackd = NULL;
            continue;
        }
        if (strcmp(a, "--trackd") == 0 && i + 1 < argc) {
            o->trackd = argv[++i];
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        struct {
            const char *name;
            uint64_t min, max;
            void *dst;
            int wide;
        } opts[] = {{"--devices", 1, 64, &o->devices, 0}, {"--threads", 1, 64, &o->threads, 0},
                    {"--layers", 1, 64, &o->layers, 0},   {"--steps", 1, 10000000, &o->steps, 0},
                    {"--aliases", 0, 16, &o->aliases, 0}, {"--seed", 0, UINT64_MAX, &o->seed, 1}};
        int matched = 0;
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strcmp(a, opts[k].name) != 0)
                continue;
            uint64_t v;
            if (i + 1 >= argc || parse_u64(argv[++i], opts[k].max, &v) != 0 || v < opts[k].min) {
                fprintf(stderr, "bh-demo: %s needs a number from %" PRIu64 " to %" PRIu64 "\n", a,
                        opts[k].min, opts[k].max);
                return -1;
            }
            if (opts[k].wide)
                *(uint64_t *)opts[k].dst = v;
            else
                *(uint32_t *)opts[k].dst = (uint32_t)v;
            matched = 1;
        }
        if (!matched) {
            fprintf(stderr, "bh-demo: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    /* Weights of every layer of every thread must fit the DRAM slots. */
    if ((uint64_t)o->threads * o->layers > 512) {
        fprintf(stderr, "bh-demo: threads * layers must be at most 512\n");
        return -1;
    }
    return 0;
}

/* ======================== Tracker (in process) ======================== */

/* Every report goes to an in-process history (for the "freed most often"
 * table) and, when bh-trackd runs, to it through the library's socket
 * reporter. The raw runtime has no registry to number its reports, so the
 * tracker numbers them, under its lock, in the order they happen. */
typedef struct tracker {
    pthread_mutex_t lock;
    bh_track *t;
    bh_reporter sock; /* report NULL: no bh-trackd */
    uint64_t seq;
    uint64_t alloc_reports, free_reports;
} tracker;

/* Under tr->lock. */
static void tracker_record(tracker *tr, const bh_event *ev) {
    if (ev->kind == BH_EVENT_ALLOC) {
        tr->alloc_reports++;
        bh_track_on_alloc(tr->t, 1, ev->device, ev->address, ev->size, 0, 0);
    } else {
        tr->free_reports++;
        bh_track_on_free(tr->t, 1, ev->device, ev->address);
    }
}

/* The raw runtime: numbered and sent under the lock, so always in order. */
static void tracker_event(tracker *tr, bh_event_kind kind, uint32_t domain, uint64_t address, uint64_t size) {
    pthread_mutex_lock(&tr->lock);
    bh_event ev = {kind, domain, address, size, ++tr->seq};
    tracker_record(tr, &ev);
    if (tr->sock.report != NULL)
        tr->sock.report(tr->sock.ctx, &ev);
    pthread_mutex_unlock(&tr->lock);
}

/* The registry's reporter: numbered by the registry; the socket reporter
 * puts concurrent reports back in seq order itself, so it is called outside
 * our lock (a thread starved on our lock would hold up everyone's reports). */
static void tracker_report_cb(void *ctx, const bh_event *ev) {
    tracker *tr = ctx;
    pthread_mutex_lock(&tr->lock);
    tracker_record(tr, ev);
    pthread_mutex_unlock(&tr->lock);
    if (tr->sock.report != NULL)
        tr->sock.report(tr->sock.ctx, ev);
}

/* ======================== Two runtimes behind one interface ======================== */

/* The workload talks to buffers through this table, so the same steps run on
 * raw objects and on the shim. */
typedef struct runtime runtime;
typedef struct rt_ops {
    /* A mesh buffer: objects[0] backing, objects[1 + d] device d. */
    int (*mesh_create)(runtime *rt, uint64_t size, bh_sim_mem mem, void **objects);
    void *(*create_at)(runtime *rt, void *like, uint32_t device);
    void *(*view)(runtime *rt, void *of, uint64_t offset, uint64_t size);
    void (*destroy)(runtime *rt, void *obj);
} rt_ops;

struct runtime {
    const rt_ops *ops;
    bh_sim *sim;
    tracker *tr;
    uint32_t devices;
    bh_registry *reg; /* handle run only */
    bh_shim_mesh *mesh;
    uint64_t failures; /* operations the runtime could not do (pool full, ...) */
};

/* --- raw: each object frees and reports on its own ------------------------ */

typedef struct raw_buffer {
    uint32_t domain;
    uint64_t address, size;
    int allocated;
} raw_buffer;

static raw_buffer *raw_new(uint32_t domain, uint64_t address, uint64_t size) {
    raw_buffer *b = malloc(sizeof(*b));
    if (b != NULL)
        *b = (raw_buffer){domain, address, size, 1};
    return b;
}

static int raw_mesh_create(runtime *rt, uint64_t size, bh_sim_mem mem, void **objects) {
    uint64_t address;
    uint32_t domain0 = bh_sim_domain(0, mem);
    if (bh_sim_alloc(rt->sim, domain0, size, &address) != 0)
        return -1;
    tracker_event(rt->tr, BH_EVENT_ALLOC, domain0, address, size);
    objects[0] = raw_new(domain0, address, size);
    /* Per-device buffers "at the address": no allocation, no ALLOC report, but
     * each has its own allocated flag and will free and report. */
    for (uint32_t d = 0; d < rt->devices; d++)
        objects[1 + d] = raw_new(bh_sim_domain(d, mem), address, size);
    return 0;
}

static void *raw_create_at(runtime *rt, void *like, uint32_t device) {
    (void)rt;
    raw_buffer *b = like;
    return raw_new(bh_sim_domain(device, bh_sim_domain_mem(b->domain)), b->address, b->size);
}

static void *raw_view(runtime *rt, void *of, uint64_t offset, uint64_t size) {
    (void)rt;
    raw_buffer *b = of;
    raw_buffer *v = raw_new(b->domain, b->address + offset, size);
    /* The runtime frees a view through the allocation it views. */
    if (v != NULL)
        v->address = b->address;
    return v;
}

static void raw_destroy(runtime *rt, void *obj) {
    raw_buffer *b = obj;
    if (b == NULL)
        return;
    if (b->allocated) { /* per-object flag: cannot see the other objects */
        tracker_event(rt->tr, BH_EVENT_FREE, b->domain, b->address, b->size);
        bh_sim_free(rt->sim, b->domain, b->address, b->size);
        b->allocated = 0;
    }
    free(b);
}

static const rt_ops raw_ops = {raw_mesh_create, raw_create_at, raw_view, raw_destroy};

/* --- handles: the same calls through the shim ----------------------------- */

static int shim_mesh_create(runtime *rt, uint64_t size, bh_sim_mem mem, void **objects) {
    bh_shim_mesh_buffer *mb;
    if (bh_shim_mesh_buffer_create(rt->mesh, size, mem, &mb) != BH_OK)
        return -1;
    /* The objects leave the container so that they can die in any order. */
    bh_shim_mesh_buffer_detach(mb, (bh_shim_buffer **)objects);
    return 0;
}

static void *shim_create_at(runtime *rt, void *like, uint32_t device) {
    bh_shim_buffer *b = like, *out;
    if (bh_shim_buffer_create_at(bh_shim_mesh_device(rt->mesh, device), bh_shim_buffer_address(b),
                                 bh_shim_buffer_size(b), bh_shim_buffer_mem(b), &out) != BH_OK)
        return NULL;
    return out;
}

static void *shim_view(runtime *rt, void *of, uint64_t offset, uint64_t size) {
    (void)rt;
    bh_shim_buffer *out;
    return bh_shim_buffer_view(of, offset, size, &out) == BH_OK ? out : NULL;
}

static void shim_destroy(runtime *rt, void *obj) {
    (void)rt;
    if (obj != NULL)
        bh_shim_buffer_destroy(obj);
}

static const rt_ops shim_ops = {shim_mesh_create, shim_create_at, shim_view, shim_destroy};

/* ======================== Workload ======================== */

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

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static void shuffle(void **v, size_t n, uint64_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand(rng) % i);
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
        uint64_t r = next_rand(&w->rng);
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
        uint64_t size = (1 + next_rand(&w->rng) % 64) << 20; /* 1..64 MiB */
        if (make_group(w, &weights[l], size, BH_SIM_DRAM, 0) == 0)
            for (uint32_t d = 0; d < rt->devices; d++) /* the program cache's aliases */
                group_add(&weights[l], rt->ops->create_at(rt, weights[l].obj[1 + d], d));
    }
    for (uint32_t s = 0; s < o->steps; s++) {
        for (uint32_t l = 0; l < o->layers; l++) {
            uint64_t r = next_rand(&w->rng);
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

typedef struct result {
    const char *name;
    uint64_t reports_dropped; /* socket reporter: should be 0 */
    int from_trackd;          /* track counts came from bh-trackd */
    bh_sim_stats sim;
    uint64_t sim_live;
    bh_track_counts track;
    uint64_t alloc_reports, free_reports;
    uint64_t failures;
    uint64_t meshes, objects;
    double seconds;
    bh_track_entry worst[5];
    size_t nworst;
} result;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(const options *o, int handles, const char *sock_path, result *res) {
    memset(res, 0, sizeof(*res));
    res->name = handles ? "handles (shim)" : "raw Buffer objects";
    bh_sim_config sc = bh_sim_default_config(o->devices, 1);
    sc.slots[BH_SIM_L1] = 1024;
    bh_sim *sim;
    if (bh_sim_create(&sc, &sim) != BH_OK)
        return -1;
    tracker tr = {.t = bh_track_new(0)};
    pthread_mutex_init(&tr.lock, NULL);
    if (sock_path != NULL) {
        /* The demo would rather wait for the server than drop reports: its
         * table is about counts. */
        bh_socket_options so = {.max_block_us = 5000000, .flush_timeout_ms = 30000};
        if (bh_socket_reporter_open(sock_path, &so, &tr.sock) != BH_OK)
            return -1;
    }
    runtime rt = {.ops = handles ? &shim_ops : &raw_ops, .sim = sim, .tr = &tr, .devices = o->devices};
    if (handles) {
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.allocator = bh_sim_allocator(sim);
        cfg.reporter = (bh_reporter){tracker_report_cb, &tr};
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
        bh_socket_reporter_stats(&tr.sock, &rs);
        res->reports_dropped = rs.dropped;
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
    bh_track_free(tr.t);
    pthread_mutex_destroy(&tr.lock);
    bh_sim_destroy(sim);
    free(w);
    free(tid);
    return 0;
}

/* ======================== Output ======================== */

static uint64_t leaks_of(const result *r) { return r->track.leaks + r->sim_live; }

/* "DRAM" or "L1" for a domain (BH_DOMAIN_KIND); the simulated device has no others. */
static const char *mem_name(uint32_t domain) { return BH_DOMAIN_KIND(domain) == BH_MEM_L1 ? "L1" : "DRAM"; }

/* One table row: the two runs' values and one line saying what it counts. */
typedef struct row {
    const char *label;
    uint64_t v[2];
    const char *why;
} row;

static void print_table(const options *o, const result *r) {
    printf("bh-demo: %u devices, %u threads, %u layers, %u steps, %u aliases, seed %" PRIu64 "\n", o->devices,
           o->threads, o->layers, o->steps, o->aliases, o->seed);
    printf("tracker: %s\n\n", r[0].from_trackd
                                  ? "bh-trackd (each run a client process, through the socket reporter)"
                                  : "in-process");
    /* The lines that carry this run's numbers, where they show how a row comes
     * about. Each line fits 80 columns after the label. */
    char per_device[96], objects[96], alloc_reports[96];
    snprintf(per_device, sizeof(per_device),
             "per device: %" PRIu64 " mesh buffers x %u devices, each on every device", r[0].meshes,
             o->devices);
    snprintf(objects, sizeof(objects),
             "raw: each of the %" PRIu64 " Buffer objects frees; handles: once, at the last release",
             r[0].objects);
    snprintf(alloc_reports, sizeof(alloc_reports),
             "raw: %" PRIu64 ", one per mesh buffer, on device 0 only; handles: one per allocation",
             r[0].meshes);
    const row rows[] = {
        {"device allocations", {r[0].sim.allocs, r[1].sim.allocs}, per_device},
        {"allocator frees", {r[0].sim.frees, r[1].sim.frees}, objects},
        {"double frees (allocator)",
         {r[0].sim.double_frees, r[1].sim.double_frees},
         "frees of an address already free on its device (= frees - allocations)"},
        {"ALLOC reports", {r[0].alloc_reports, r[1].alloc_reports}, alloc_reports},
        {"FREE reports",
         {r[0].free_reports, r[1].free_reports},
         "raw: one per Buffer object; handles: one per allocation, after its ALLOC"},
        {"unknown buffer (tracker)",
         {r[0].track.unknown_frees, r[1].track.unknown_frees},
         "FREEs with no live ALLOC at that device+address (raw: FREE - ALLOC reports)"},
        {"duplicate ALLOC (tracker)",
         {r[0].track.duplicate_allocs, r[1].track.duplicate_allocs},
         "ALLOCs of a device+address the tracker already holds live"},
        {"leaks",
         {leaks_of(&r[0]), leaks_of(&r[1])},
         "allocations still live at the end (tracker or allocator)"},
        {"peak live MiB (allocator)",
         {r[0].sim.peak_live_bytes >> 20, r[1].sim.peak_live_bytes >> 20},
         "most reserved at once, in whole slots: varies with how the threads overlap"},
        {"skipped (pool full etc.)",
         {r[0].failures, r[1].failures},
         "mesh buffers or aliases not made (allocator slots full)"},
        {"reports dropped",
         {r[0].reports_dropped, r[1].reports_dropped},
         "events the socket reporter could not deliver (server gone or too slow)"},
    };
    size_t i;
    printf("%-27s %20s %20s\n", "", r[0].name, r[1].name);
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf("%-27s %20" PRIu64 " %20" PRIu64 "\n", rows[i].label, rows[i].v[0], rows[i].v[1]);
    printf("%-27s %20.3f %20.3f\n", "time (s)", r[0].seconds, r[1].seconds);
    printf("\nwhat each row counts:\n");
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf("  %-27s %s\n", rows[i].label, rows[i].why);
    printf("  %-27s %s\n", "time (s)", "wall time; not a benchmark (tools/bh-bench measures costs)");

    if (r[0].nworst > 0) {
        printf("\nraw run: addresses freed most often relative to their allocations\n");
        printf("  %-6s %-4s %-12s %10s %10s\n", "device", "mem", "address", "allocs", "frees");
        for (i = 0; i < r[0].nworst; i++) {
            const bh_track_entry *e = &r[0].worst[i];
            printf("  %-6u %-4s 0x%010" PRIx64 " %10" PRIu64 " %10" PRIu64 "\n", BH_DOMAIN_DEVICE(e->device),
                   mem_name(e->device), e->address, e->allocs, e->frees);
        }
        printf("  allocs, frees: the ALLOC and FREE reports the tracker got for that device and address.\n"
               "  frees > allocs: the allocation, its views and its re-created buffers each reported FREE.\n"
               "  allocs 0 on a device other than 0: a mesh buffer's part on that device; the raw runtime\n"
               "  reports the mesh's ALLOC on device 0 only, so every FREE there is an unknown buffer.\n");
    }
    printf("\nhandles run: %s\n", r[1].nworst == 0 ? "no address was freed more often than it was allocated"
                                                   : "some addresses were freed more often than allocated");
}

static void print_json_run(const result *r) {
    printf("{\"name\":\"%s\",\"device_allocations\":%" PRIu64 ",\"allocator_frees\":%" PRIu64
           ",\"double_frees\":%" PRIu64 ",\"unknown_allocator_frees\":%" PRIu64 ",\"alloc_reports\":%" PRIu64
           ",\"free_reports\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
           ",\"leaks\":%" PRIu64 ",\"peak_live_bytes\":%" PRIu64 ",\"skipped\":%" PRIu64 ",\"seconds\":%.6f"
           ",\"reports_dropped\":%" PRIu64 ",\"tracker\":\"%s\",\"mesh_buffers\":%" PRIu64
           ",\"buffer_objects\":%" PRIu64,
           r->name, r->sim.allocs, r->sim.frees, r->sim.double_frees, r->sim.unknown_frees, r->alloc_reports,
           r->free_reports, r->track.unknown_frees, r->track.duplicate_allocs, leaks_of(r),
           r->sim.peak_live_bytes, r->failures, r->seconds, r->reports_dropped,
           r->from_trackd ? "bh-trackd" : "in-process", r->meshes, r->objects);
    printf(",\"most_overfreed\":[");
    for (size_t i = 0; i < r->nworst; i++)
        printf("%s{\"device\":%u,\"mem\":\"%s\",\"address\":%" PRIu64 ",\"allocs\":%" PRIu64
               ",\"frees\":%" PRIu64 "}",
               i ? "," : "", BH_DOMAIN_DEVICE(r->worst[i].device), mem_name(r->worst[i].device),
               r->worst[i].address, r->worst[i].allocs, r->worst[i].frees);
    printf("]}");
}

/* ======================== bh-trackd ======================== */

/* `bh-trackd stats --json`; malloc'd, NULL on failure. */
static char *trackd_stats(const char *trackd, const char *sock) {
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "'%s' stats --json --socket '%s'", trackd, sock);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
            }
        }
    }
    if (pclose(f) != 0 || buf == NULL) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Sums "field" over the client objects of pid in the stats JSON. Only the
 * "clients" array counts: the leak and over-freed lists after it have objects
 * with a pid and "allocs"/"frees" too (counting them inflated the raw run's
 * report counts). Client objects are flat, so the array ends at the first ']'. */
static uint64_t sum_for_pid(const char *json, pid_t pid, const char *field) {
    char key[64];
    snprintf(key, sizeof(key), "\"%s\":", field);
    uint64_t sum = 0;
    const char *clients = strstr(json, "\"clients\":[");
    const char *clients_end = clients != NULL ? strchr(clients, ']') : NULL;
    if (clients_end == NULL)
        return 0;
    for (const char *p = strstr(clients, "{\"pid\":"); p != NULL && p < clients_end;
         p = strstr(p + 1, "{\"pid\":")) {
        const char *end = strchr(p, '}');
        if (end == NULL || atol(p + 7) != (long)pid)
            continue;
        const char *f = strstr(p, key);
        if (f != NULL && f < end)
            sum += strtoull(f + strlen(key), NULL, 10);
    }
    return sum;
}

/* Runs one side in a child process (the server keys clients by process, and a
 * process's end is when it counts leaks); the track counts come from the
 * server. */
static int run_in_child(const options *o, int handles, const char *sock, result *res) {
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        result r;
        int rc = run(o, handles, sock, &r);
        ssize_t w = write(fds[1], &r, sizeof(r));
        _exit(rc == 0 && w == (ssize_t)sizeof(r) ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], res, sizeof(*res));
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof(*res) || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    res->name = handles ? "handles (shim)" : "raw Buffer objects";
    /* Wait until the server has settled the ended process: nothing live. */
    char *json = NULL;
    for (int i = 0; i < 300; i++) {
        free(json);
        json = trackd_stats(o->trackd, sock);
        if (json != NULL && sum_for_pid(json, pid, "live") == 0 && strstr(json, "\"clients\":[") != NULL)
            break;
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    if (json == NULL)
        return -1;
    res->from_trackd = 1;
    res->alloc_reports = sum_for_pid(json, pid, "allocs");
    res->free_reports = sum_for_pid(json, pid, "frees");
    res->track.unknown_frees = sum_for_pid(json, pid, "unknown_frees");
    res->track.duplicate_allocs = sum_for_pid(json, pid, "duplicate_allocs");
    res->track.leaks = sum_for_pid(json, pid, "leaks");
    free(json);
    return 0;
}

int main(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    result r[2];
    char dir[] = "/tmp/bh-demo-XXXXXX", sock[64];
    pid_t server = -1;
    if (o.trackd != NULL) {
        char log[64];
        snprintf(sock, sizeof(sock), "%s/trackd.sock", mkdtemp(dir) != NULL ? dir : "/tmp");
        snprintf(log, sizeof(log), "%s/trackd.log", dir);
        if ((server = bh_trackd_start(o.trackd, sock, log, "200")) < 0) {
            fprintf(stderr, "bh-demo: could not start %s; use --no-trackd for the in-process tracker\n",
                    o.trackd);
            return 2;
        }
    }
    int rc = 0;
    for (int h = 0; h < 2 && rc == 0; h++)
        rc = server > 0 ? run_in_child(&o, h, sock, &r[h]) : run(&o, h, NULL, &r[h]);
    if (server > 0) {
        bh_trackd_stop(server);
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bh-demo: could not remove %s\n", dir);
    }
    if (rc != 0) {
        fprintf(stderr, "bh-demo: a run failed (out of memory, or the tracker did not answer)\n");
        return 2;
    }
    int handles_clean = r[1].reports_dropped == 0 && r[1].sim.double_frees == 0 &&
                        r[1].sim.unknown_frees == 0 && r[1].track.unknown_frees == 0 &&
                        r[1].track.duplicate_allocs == 0 && leaks_of(&r[1]) == 0 && r[1].sim.allocs > 0;
    int raw_shows_bug = r[0].sim.double_frees > 0 || r[0].track.unknown_frees > 0;
    if (o.json) {
        printf("{\"config\":{\"devices\":%u,\"threads\":%u,\"layers\":%u,\"steps\":%u,\"aliases\":%u,"
               "\"seed\":%" PRIu64 "},\"raw\":",
               o.devices, o.threads, o.layers, o.steps, o.aliases, o.seed);
        print_json_run(&r[0]);
        printf(",\"handles\":");
        print_json_run(&r[1]);
        printf(",\"handles_clean\":%s,\"raw_shows_bug\":%s}\n", handles_clean ? "true" : "false",
               raw_shows_bug ? "true" : "false");
    } else {
        print_table(&o, r);
        printf("\n%s\n", handles_clean && raw_shows_bug
                             ? "result: the handle run freed and reported every allocation exactly once."
                         : !handles_clean ? "result: FAILED: the handle run is not clean."
                                          : "result: FAILED: the raw run did not show the problem.");
    }
    return handles_clean && raw_shows_bug ? 0 : 1;
}
