/*
 * bh-bench - bufhandle against hand-written baselines, in one run.
 *
 *   bh-bench [--quick] [--reps N] [--ops N] [--only SECTION] [--live N] [--config KEY]
 *            [--json | --json-out FILE] [--trackd PATH]
 *
 * Every figure is the median of --reps repetitions, and every bufhandle figure
 * is shown next to its baselines measured in the same run, repetitions
 * interleaved so that machine noise hits both alike: compare the ratios,
 * absolute nanoseconds are not comparable across runs or machines.
 * --quick shrinks everything (a smoke run of a few seconds); its figures are
 * not meant to be quoted. --only and --live (the mixed workload at one size)
 * select what to run, for profiling under callgrind; --config runs every
 * figure with one line of the configuration table (e.g. no-overlap). Targets are printed next to the figures
 * as information: the exit status never depends on speed.
 *
 * Owns: the workloads and the report. Baselines live in baseline.c, the
 * reporter-cost comparison in report_cost.c.
 * Must never: exit non-zero because something was slow.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baseline.h"
#include "bench_util.h"
#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "report_cost.h"

#define MAX_REPS 99

/* ======================== Configurations ======================== */

/* The registry flags whose cost is measured, one line each; the first is
 * the default configuration every other line is compared with. Flags that
 * turn a default check off and flags that turn a diagnostic on both belong
 * here (a line per flag, guarded so the table follows the header). */
static const struct {
    const char *name;
    const char *key; /* for --config */
    uint32_t flags;
} configs[] = {
    {"defaults (diagnostics off)", "defaults", 0},
#ifdef BH_CONFIG_NO_OVERLAP_CHECK
    {"overlap check off", "no-overlap", BH_CONFIG_NO_OVERLAP_CHECK},
#endif
#ifdef BH_CONFIG_DEBUG_REFS
    {"debug references on", "debug-refs", BH_CONFIG_DEBUG_REFS},
#endif
#ifdef BH_CONFIG_HISTORY
    {"history on", "history", BH_CONFIG_HISTORY},
#endif
#ifdef BH_CONFIG_STACKS
    {"stacks on", "stacks", BH_CONFIG_STACKS},
#endif
};
enum { NCONFIGS = sizeof(configs) / sizeof(configs[0]) };

/* The configuration of every bufhandle registry outside the configuration
 * table (--config KEY): index into configs[]. */
static int figure_config;

/* ======================== Key sets ======================== */

enum impl { IMPL_BH, IMPL_HASH, IMPL_TREE };
static const char *const impl_names[] = {"bufhandle", "global mutex + open-addressing hash",
                                         "global mutex + tsearch"};

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
static void ks_init(keyset *ks, enum impl impl, uint32_t flags, size_t n) {
    memset(ks, 0, sizeof(*ks));
    ks->impl = impl;
    ks->n = n;
    ks->addr = calloc(n, sizeof(uint64_t));
    ks->own = calloc(n, sizeof(uint64_t));
    ks->spare = calloc(n, sizeof(uint64_t));
    if (ks->addr == NULL || ks->own == NULL || ks->spare == NULL)
        bench_die("out of memory");
    memset(ks->own, 0xff, n * sizeof(uint64_t));
    /* Live and free pages interleaved at random (a fixed seed: the same for
     * every implementation). */
    uint64_t s = 0x243f6a8885a308d3ull;
    for (size_t i = 0; i < n; i++) {
        uint64_t a = 0x10000000 + 2 * i * PAGE, b = a + PAGE;
        int swap = (int)(rng_next(&s) & 1);
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
    } else {
        ks->tree = base_tree_create();
    }
    if (ks->reg == NULL && ks->hash == NULL && ks->tree == NULL)
        bench_die("out of memory");
}

static void ks_populate(keyset *ks) {
    for (size_t i = 0; i < ks->n; i++)
        ks->own[i] = ks_take(ks, ks->impl, ks->addr[i], 1);
}

static void ks_create(keyset *ks, enum impl impl, uint32_t flags, size_t n) {
    ks_init(ks, impl, flags, n);
    ks_populate(ks);
}

static void ks_destroy(keyset *ks) {
    for (size_t i = 0; i < ks->n; i++)
        if (ks->own[i] != UINT64_MAX)
            ks_drop(ks, ks->impl, ks->addr[i], ks->own[i]);
    if (ks->reg != NULL && bh_registry_destroy(ks->reg) != BH_OK)
        bench_die("bh_registry_destroy: handles left");
    if (ks->hash != NULL)
        base_hash_destroy(ks->hash);
    if (ks->tree != NULL)
        base_tree_destroy(ks->tree);
    free(ks->addr);
    free(ks->own);
    free(ks->spare);
}

/* ======================== Workers ======================== */

typedef enum work {
    W_PAIR,      /* retain+release of one handle (ks NULL: the counter baselines) */
    W_CAS_PAIR,  /* baseline: CAS-loop increment + decrement */
    W_XADD_PAIR, /* baseline: lock xadd increment + decrement */
    W_LOOKUP,    /* lookup of a random live key + release */
    W_INTERN,    /* intern alias of a random live key + release */
    W_MIXED,     /* 7/16 intern alias + release, 7/16 lookup + release, 1/8 churn */
    W_CHURN,     /* churn only: the owner of a random key releases, a free address is interned */
} work;

/* Each thread's worker, and the baseline counter in it, on its own 128-byte
 * aligned region: the workers sit side by side in run_workers' array, and two
 * threads' counters in one line (or in one 128-byte pair, which x86's
 * spatial prefetcher fetches together) would make the 2-thread baseline pay
 * for false sharing that a runtime's counters need not have. */
#define PAIR_BYTES 128

typedef struct worker {
    _Alignas(PAIR_BYTES) work what;
    keyset *ks;
    bh_handle h;          /* W_PAIR */
    base_counter counter; /* W_CAS_PAIR, W_XADD_PAIR */
    long ops;
    uint64_t seed;
    pthread_barrier_t *start;
    double ns;     /* wall-clock time of the loop */
    double cpu_ns; /* this thread's CPU time in the loop: excludes time it waited for a CPU */
} worker;

/* The loops are written once; impl is a constant in each call from
 * run_loop(), so the compiler drops the switches of ks_take / ks_drop. Only
 * the workloads over many keys draw random numbers: the pair loops must not
 * carry a cost their baselines do not. */
static inline __attribute__((always_inline)) void loop(worker *w, enum impl impl) {
    keyset *ks = w->ks;
    uint64_t s = w->seed;
    switch (w->what) {
    case W_PAIR:
        for (long i = 0; i < w->ops; i++)
            if (bh_retain(ks->reg, w->h) != BH_OK || bh_release(ks->reg, w->h) != BH_OK)
                bench_die("retain/release failed");
        break;
    case W_CAS_PAIR:
        for (long i = 0; i < w->ops; i++)
            base_cas_pair(&w->counter);
        break;
    case W_XADD_PAIR:
        for (long i = 0; i < w->ops; i++)
            base_xadd_pair(&w->counter);
        break;
    case W_LOOKUP:
    case W_INTERN:
        for (long i = 0; i < w->ops; i++) {
            uint64_t a = ks->addr[rng_next(&s) & (ks->n - 1)];
            ks_drop(ks, impl, a, ks_take(ks, impl, a, w->what == W_INTERN));
        }
        break;
    case W_MIXED:
    case W_CHURN:
        for (long i = 0; i < w->ops; i++) {
            uint64_t r = rng_next(&s);
            size_t k = (size_t)(r & (ks->n - 1));
            if (w->what == W_CHURN || ((r >> 40) & 7) == 0) { /* the owner lets go, a free address is taken */
                size_t j = (size_t)(r >> 32) & (ks->n - 1);
                uint64_t freed = ks->addr[k];
                ks_drop(ks, impl, freed, ks->own[k]);
                ks->addr[k] = ks->spare[j];
                ks->spare[j] = freed;
                ks->own[k] = ks_take(ks, impl, ks->addr[k], 1);
            } else {
                ks_drop(ks, impl, ks->addr[k], ks_take(ks, impl, ks->addr[k], (r >> 40) & 1));
            }
        }
        break;
    }
    w->seed = s;
}

static void run_loop(worker *w) {
    switch (w->ks != NULL ? w->ks->impl : IMPL_BH) {
    case IMPL_BH:
        loop(w, IMPL_BH);
        break;
    case IMPL_HASH:
        loop(w, IMPL_HASH);
        break;
    case IMPL_TREE:
        loop(w, IMPL_TREE);
        break;
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(w->start);
    double t0 = bench_now_ns(), c0 = bench_thread_cpu_ns();
    run_loop(w);
    w->ns = bench_now_ns() - t0;
    w->cpu_ns = bench_thread_cpu_ns() - c0;
    return NULL;
}

/* What a run took besides its wall-clock figure. */
typedef struct cpu_view {
    double ns;   /* the mean of each thread's ns per operation, in thread CPU time */
    double cpus; /* CPU time of all threads / wall time of the longest: how many ran at once, on average */
} cpu_view;

/* Runs n copies of proto on n threads started together; each thread gets its
 * own seed (and its own handle from hs, if given). Returns the mean over the
 * threads of each thread's ns per operation (the latency view: with a shared
 * lock, every thread waits); *cpu (if not NULL) gets the CPU-time view. */
static double run_workers(int n, const worker *proto, const bh_handle *hs, cpu_view *cpu) {
    worker w[8];
    pthread_t tid[8];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int t = 0; t < n; t++) {
        w[t] = *proto;
        w[t].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1) + (uint64_t)proto->ops;
        w[t].start = &start;
        if (hs != NULL)
            w[t].h = hs[t];
        if (pthread_create(&tid[t], NULL, worker_main, &w[t]) != 0)
            bench_die("pthread_create failed");
    }
    double sum = 0, cpu_sum = 0, cpu_total = 0, longest = 0;
    for (int t = 0; t < n; t++) {
        pthread_join(tid[t], NULL);
        sum += w[t].ns / (double)w[t].ops;
        cpu_sum += w[t].cpu_ns / (double)w[t].ops;
        cpu_total += w[t].cpu_ns;
        longest = w[t].ns > longest ? w[t].ns : longest;
    }
    pthread_barrier_destroy(&start);
    if (cpu != NULL)
        *cpu = (cpu_view){cpu_sum / n, longest > 0 ? cpu_total / longest : 0};
    return sum / n;
}

/* ======================== Figures ======================== */

/* One line of the result table. Targets come from issue 11: either on the
 * speedup over a baseline (baseline ns / bufhandle ns) or on the value. */
typedef struct figure {
    char name[80];
    const char *unit; /* "ns", "B", "x" (a ratio), "cpu" (CPUs in use) */
    double bh;
    int nbase;
    const char *base_name[2];
    double base[2];
    double min_speedup[2]; /* 0: no target on that baseline */
    double max_value;      /* 0: no target on the value itself */
} figure;

#define MAX_FIGURES 16
static figure figures[MAX_FIGURES];
static int nfigures;

static figure *add_figure(const char *name, const char *unit) {
    if (nfigures == MAX_FIGURES)
        bench_die("too many figures");
    figure *f = &figures[nfigures++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->unit = unit;
    return f;
}

static void add_base(figure *f, const char *name, double value, double min_speedup) {
    f->base_name[f->nbase] = name;
    f->base[f->nbase] = value;
    f->min_speedup[f->nbase] = min_speedup;
    f->nbase++;
}

/* 1 met, 0 not met, -1 no target. */
static int figure_met(const figure *f) {
    int met = -1;
    for (int b = 0; b < f->nbase; b++)
        if (f->min_speedup[b] > 0)
            met = (met != 0) && f->base[b] / f->bh >= f->min_speedup[b];
    if (f->max_value > 0)
        met = (met != 0) && f->bh <= f->max_value;
    return met;
}

typedef struct opts {
    int reps, quick, json;
    long ops;
    const char *only;
    size_t live; /* mixed workload at this size only (0: the standard curve) */
} opts;

static int wanted(const opts *o, const char *section) {
    return o->only == NULL || strcmp(o->only, section) == 0;
}

/* ======================== Sections ======================== */

/* retain+release, 1 thread, against the counter pairs; and 2 threads each on
 * its own handle, per pair, relative to 1 thread in the same repetition,
 * next to the same ratio for the CAS-loop pair on 2 threads each with its own
 * counter: what this machine's two CPUs give two threads that share nothing.
 * On a loaded machine the two threads often do not run at once, and the
 * wall-clock ratio says so for both; the same ratios in thread CPU time
 * count only the time each thread ran, so what remains above 1.0 there is
 * the cost of what the threads share (cache lines), which is what the
 * target is about. No other figure gets a CPU-time view: a mutex baseline
 * sleeps while it waits, and CPU time would hide its waits. */
static void section_pairs(const opts *o) {
    double bh1[MAX_REPS], cas[MAX_REPS], xadd[MAX_REPS], scale[MAX_REPS], cas_scale[MAX_REPS];
    double scale_cpu[MAX_REPS], cas_scale_cpu[MAX_REPS], cpus[MAX_REPS], cas_cpus[MAX_REPS];
    cpu_view bh1_cpu, cas_cpu, two;
    keyset ks;
    ks_create(&ks, IMPL_BH, configs[figure_config].flags, 2);
    bh_handle hs[2] = {{ks.own[0]}, {ks.own[1]}};
    worker bh = {.what = W_PAIR, .ks = &ks, .ops = o->ops};
    worker c = {.what = W_CAS_PAIR, .counter = {1}, .ops = o->ops};
    worker x = {.what = W_XADD_PAIR, .counter = {1}, .ops = o->ops};
    for (int r = 0; r < o->reps; r++) {
        bh1[r] = run_workers(1, &bh, hs, &bh1_cpu);
        cas[r] = run_workers(1, &c, NULL, &cas_cpu);
        xadd[r] = run_workers(1, &x, NULL, NULL);
        scale[r] = run_workers(2, &bh, hs, &two) / bh1[r];
        scale_cpu[r] = two.ns / bh1_cpu.ns;
        cpus[r] = two.cpus;
        cas_scale[r] = run_workers(2, &c, NULL, &two) / cas[r];
        cas_scale_cpu[r] = two.ns / cas_cpu.ns;
        cas_cpus[r] = two.cpus;
    }
    ks_destroy(&ks);
    figure *f = add_figure("retain+release, 1 thread", "ns");
    f->bh = bench_median(bh1, o->reps);
    add_base(f, "CAS-loop pair", bench_median(cas, o->reps), 1 / 1.1);
    add_base(f, "xadd pair", bench_median(xadd, o->reps), 0);
    f = add_figure("2 threads, own handles: per pair / 1 thread", "x");
    f->bh = bench_median(scale, o->reps);
    f->max_value = 1.2;
    add_base(f, "CAS-loop pair, own counters (floor)", bench_median(cas_scale, o->reps), 0);
    /* Below about 1.5 the threads mostly took turns, and the CPU-time ratio
     * cannot show what sharing costs (there was little sharing). */
    f = add_figure("2 threads: CPUs in use while they ran (of 2)", "cpu");
    f->bh = bench_median(cpus, o->reps);
    add_base(f, "CAS-loop pair, own counters", bench_median(cas_cpus, o->reps), 0);
    f = add_figure("2 threads, own handles, in thread CPU time", "x");
    f->bh = bench_median(scale_cpu, o->reps);
    f->max_value = 1.2;
    add_base(f, "CAS-loop pair, own counters (floor)", bench_median(cas_scale_cpu, o->reps), 0);
}

/* Median ns per operation of `what` on `threads` threads, for the keys of
 * each implementation in turn (n live keys each); repetitions interleaved
 * across the implementations. */
static void compare(const opts *o, int nimpl, size_t n, work what, int threads, double *medians) {
    double v[3][MAX_REPS];
    keyset ks[3];
    for (int i = 0; i < nimpl; i++)
        ks_create(&ks[i], (enum impl)i, configs[figure_config].flags, n);
    for (int r = 0; r < o->reps; r++)
        for (int i = 0; i < nimpl; i++)
            v[i][r] = run_workers(threads,
                                  &(worker){.what = what, .ks = &ks[i], .ops = o->ops, .h = {ks[i].own[0]}},
                                  NULL, NULL);
    for (int i = 0; i < nimpl; i++) {
        ks_destroy(&ks[i]);
        medians[i] = bench_median(v[i], o->reps);
    }
}

/* lookup hit + release, 2 threads, 1K live, random keys. */
static void section_lookup(const opts *o) {
    double m[3];
    compare(o, 3, 1024, W_LOOKUP, 2, m);
    figure *f = add_figure("lookup hit + release, 2 threads, 1K live", "ns");
    f->bh = m[IMPL_BH];
    add_base(f, impl_names[IMPL_TREE], m[IMPL_TREE], 4);
    add_base(f, impl_names[IMPL_HASH], m[IMPL_HASH], 2);
}

static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f == NULL || fscanf(f, "%lu %lu", &size, &resident) != 2)
        bench_die("cannot read /proc/self/statm");
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* Host bytes per live key: resident-set growth while n keys are populated,
 * measured in a child process so that memory the benchmark freed earlier
 * cannot be reused (and hide the growth). */
static double bytes_per_live(enum impl impl, size_t n) {
    int fd[2];
    if (pipe(fd) != 0)
        bench_die("pipe failed");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork failed");
    if (pid == 0) {
        keyset ks;
        ks_init(&ks, impl, configs[figure_config].flags, n);
        double before = rss_bytes();
        ks_populate(&ks);
        double per = (rss_bytes() - before) / (double)n;
        ssize_t w = write(fd[1], &per, sizeof(per));
        _exit(w == (ssize_t)sizeof(per) ? 0 : 1);
    }
    double per = -1;
    if (read(fd[0], &per, sizeof(per)) != (ssize_t)sizeof(per))
        bench_die("memory measurement child failed");
    waitpid(pid, NULL, 0);
    close(fd[0]);
    close(fd[1]);
    return per;
}

static void section_memory(const opts *o) {
    size_t n = o->quick ? 65536 : 1048576;
    char name[80];
    snprintf(name, sizeof(name), "host bytes per live handle, %zuK live (RSS)", n / 1024);
    figure *f = add_figure(name, "B");
    f->bh = bytes_per_live(IMPL_BH, n);
    f->max_value = 64;
    add_base(f, impl_names[IMPL_HASH], bytes_per_live(IMPL_HASH, n), 0);
}

/* The mixed workload at each size, 1 thread. Both structures are built once
 * per size and the repetitions run on them alternately. */
static void section_mixed(const opts *o) {
    static const size_t full[] = {1024, 16384, 262144, 1048576}, quick[] = {1024, 16384};
    const size_t *sizes = o->live ? &o->live : o->quick ? quick : full;
    int nsizes = o->live ? 1 : o->quick ? 2 : 4;
    for (int s = 0; s < nsizes; s++) {
        double m[2];
        compare(o, 2, sizes[s], W_MIXED, 1, m);
        char name[80];
        snprintf(name, sizeof(name), "mixed, 1/8 churn, 1 thread, %zuK live", sizes[s] / 1024);
        figure *f = add_figure(name, "ns");
        f->bh = m[IMPL_BH];
        add_base(f, impl_names[IMPL_HASH], m[IMPL_HASH], sizes[s] == 1048576 ? 1.5 : 0);
    }
}

/* intern alias + release of one live key, 1 thread: against one uncontended
 * global mutex (around the hash). */
static void section_intern(const opts *o) {
    double m[2];
    compare(o, 2, 1, W_INTERN, 1, m);
    figure *f = add_figure("intern alias + release, 1 thread", "ns");
    f->bh = m[IMPL_BH];
    add_base(f, impl_names[IMPL_HASH], m[IMPL_HASH], 1.0);
}

/* The hot path in each configuration, 1 thread, 1K live. */
enum { CW_PAIR, CW_INTERN, CW_LOOKUP, CW_CHURN, CW_COUNT };
static const char *const cw_names[] = {"retain+release", "intern alias+release", "lookup+release",
                                       "last release+intern new"};
static const char *const cw_keys[] = {"retain_release", "intern_alias_release", "lookup_release",
                                      "last_release_intern_new"};
static double config_ns[NCONFIGS][CW_COUNT];

static void section_configs(const opts *o) {
    static const work works[] = {W_PAIR, W_INTERN, W_LOOKUP, W_CHURN};
    double v[NCONFIGS][CW_COUNT][MAX_REPS];
    keyset ks[NCONFIGS];
    for (int c = 0; c < NCONFIGS; c++)
        ks_create(&ks[c], IMPL_BH, configs[c].flags, 1024);
    for (int r = 0; r < o->reps; r++)
        for (int c = 0; c < NCONFIGS; c++)
            for (int k = 0; k < CW_COUNT; k++) {
                worker w = {.what = works[k], .ks = &ks[c], .ops = o->ops, .h = {ks[c].own[0]}};
                v[c][k][r] = run_workers(1, &w, NULL, NULL);
            }
    for (int c = 0; c < NCONFIGS; c++) {
        ks_destroy(&ks[c]);
        for (int k = 0; k < CW_COUNT; k++)
            config_ns[c][k] = bench_median(v[c][k], o->reps);
    }
}

/* ======================== Output ======================== */

static void cpu_model(char *out, size_t len) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    snprintf(out, len, "unknown");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            snprintf(out, len, "%s", colon + 2);
            out[strcspn(out, "\n\"\\")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
}

static const char *met_text(int met) { return met < 0 ? "" : met ? "met" : "NOT met"; }

/* A figure's targets as text: on its own line (b == 0) the target on its
 * value, and on each baseline's line the speedup target over that baseline. */
static void target_text(const figure *f, int b, char *out, size_t len) {
    int n = 0;
    out[0] = '\0';
    if (b == 0 && f->max_value > 0)
        n = snprintf(out, len, "<= %.3g %s", f->max_value, f->unit);
    if (b < f->nbase && f->min_speedup[b] > 0)
        snprintf(out + n, len - (size_t)n, "%s>= %.2fx", n ? "; " : "", f->min_speedup[b]);
}

static void print_text(const opts *o, const char *cpu, const report_cost *rc) {
    printf("bh-bench%s: %s; medians of %d repetitions, %ld operations per thread per measurement\n",
           o->quick ? " --quick" : "", cpu, o->reps, o->ops);
    printf("bufhandle registries: %s; speedup = baseline / bufhandle (above 1: bufhandle is faster)\n",
           configs[figure_config].name);
    printf("a figure's verdict (met / NOT met: every target on its lines) is on its first line\n\n");
    printf("%-48s %13s  %-36s %11s %8s  %-16s %s\n", "figure", "bufhandle", "baseline", "", "speedup",
           "target", "verdict");
    for (int i = 0; i < nfigures; i++) {
        const figure *f = &figures[i];
        int prec = strcmp(f->unit, "ns") == 0 || strcmp(f->unit, "B") == 0 ? 1 : 2;
        for (int b = 0; b < (f->nbase ? f->nbase : 1); b++) {
            char line[256], target[48], speedup[16] = "-"; /* only times have a speedup */
            size_t n = 0;
            target_text(f, b, target, sizeof(target));
            if (b == 0)
                n += (size_t)snprintf(line, sizeof(line), "%-48s %9.*f %-3s", f->name, prec, f->bh, f->unit);
            else
                n += (size_t)snprintf(line, sizeof(line), "%-48s %13s", "", "");
            if (f->nbase > 0 && strcmp(f->unit, "ns") == 0)
                snprintf(speedup, sizeof(speedup), "%.2fx", f->base[b] / f->bh);
            if (f->nbase == 0)
                n += (size_t)snprintf(line + n, sizeof(line) - n, "  %-36s %11s %8s", "-", "", "");
            else
                n += (size_t)snprintf(line + n, sizeof(line) - n, "  %-36s %7.*f %-3s %8s", f->base_name[b],
                                      prec, f->base[b], f->unit, speedup);
            n += (size_t)snprintf(line + n, sizeof(line) - n, "  %-16s %s", target,
                                  b == 0 ? met_text(figure_met(f)) : "");
            while (n > 0 && line[n - 1] == ' ')
                line[--n] = '\0';
            puts(line);
        }
    }
    if (config_ns[0][0] > 0) {
        printf("\nhot path per configuration, 1 thread, 1K live (ns; x = relative to the first line)\n");
        printf("%-32s", "configuration");
        for (int k = 0; k < CW_COUNT; k++)
            printf(" %22s", cw_names[k]);
        printf("\n");
        for (int c = 0; c < NCONFIGS; c++) {
            printf("%-32s", configs[c].name);
            for (int k = 0; k < CW_COUNT; k++)
                printf(" %13.1f (%5.2fx)", config_ns[c][k], config_ns[c][k] / config_ns[0][k]);
            printf("\n");
        }
    }
    if (rc != NULL) {
        printf("\nreporting cost on the application thread at 100,000 reports/s (server: %s)\n", rc->server);
        printf("%-48s %12s %12s\n", "", "mean ns", "p99 ns");
        printf("%-48s %12.1f %12.1f\n", "socket reporter (ring + background sender)", rc->reporter_mean_ns,
               rc->reporter_p99_ns);
        printf("%-48s %12.1f %12.1f\n", "baseline: one blocking send per report", rc->send_mean_ns,
               rc->send_p99_ns);
    }
}

static void print_json(FILE *out, const opts *o, const char *cpu, const report_cost *rc) {
    fprintf(out, "{\"cpu\":\"%s\",\"quick\":%s,\"reps\":%d,\"ops\":%ld,\"config\":\"%s\",\"figures\":[", cpu,
            o->quick ? "true" : "false", o->reps, o->ops, configs[figure_config].key);
    for (int i = 0; i < nfigures; i++) {
        const figure *f = &figures[i];
        int met = figure_met(f);
        fprintf(out, "%s{\"name\":\"%s\",\"unit\":\"%s\",\"bufhandle\":%.3f,\"baselines\":[", i ? "," : "",
                f->name, f->unit, f->bh);
        for (int b = 0; b < f->nbase; b++) {
            fprintf(out, "%s{\"name\":\"%s\",\"value\":%.3f", b ? "," : "", f->base_name[b], f->base[b]);
            if (strcmp(f->unit, "ns") == 0)
                fprintf(out, ",\"speedup\":%.3f", f->base[b] / f->bh);
            if (f->min_speedup[b] > 0)
                fprintf(out, ",\"target_min_speedup\":%.3f", f->min_speedup[b]);
            fprintf(out, "}");
        }
        fprintf(out, "]");
        if (f->max_value > 0)
            fprintf(out, ",\"target_max\":%.3f", f->max_value);
        fprintf(out, ",\"target_met\":%s}", met < 0 ? "null" : met ? "true" : "false");
    }
    fprintf(out, "],\"configs\":[");
    for (int c = 0; c < NCONFIGS && config_ns[0][0] > 0; c++) {
        fprintf(out, "%s{\"name\":\"%s\",\"flags\":%" PRIu32, c ? "," : "", configs[c].name,
                configs[c].flags);
        for (int k = 0; k < CW_COUNT; k++)
            fprintf(out, ",\"%s_ns\":%.3f", cw_keys[k], config_ns[c][k]);
        fprintf(out, "}");
    }
    fprintf(out, "]");
    if (rc != NULL)
        fprintf(
            out,
            ",\"reporter\":{\"rate_per_s\":100000,\"server\":\"%s\",\"socket_reporter_mean_ns\":%.1f,"
            "\"socket_reporter_p99_ns\":%.1f,\"blocking_send_mean_ns\":%.1f,\"blocking_send_p99_ns\":%.1f}",
            rc->server, rc->reporter_mean_ns, rc->reporter_p99_ns, rc->send_mean_ns, rc->send_p99_ns);
    fprintf(out, "}\n");
}

/* ======================== main ======================== */

static void *nothing(void *arg) { return arg; }

/* The configs[] line named key, or -1. */
static int config_index(const char *key) {
    for (int c = 0; c < NCONFIGS; c++)
        if (strcmp(configs[c].key, key) == 0)
            return c;
    return -1;
}

static const char usage[] =
    "usage: bh-bench [--quick] [--reps N] [--ops N] [--json | --json-out FILE] [--trackd PATH]\n"
    "                [--only memory|pairs|lookup|mixed|intern|configs|reporter] [--live N]\n"
    "                [--config defaults|no-overlap|debug-refs|history|stacks]\n";

int main(int argc, char **argv) {
    opts o = {.reps = 5, .ops = 1000000};
    long ops = 0;
    int reps = 0;
    const char *trackd = bh_trackd_next_to_self();
    const char *json_out = NULL; /* the text on stdout, and the same run's JSON in this file */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o.json = 1;
        else if (strcmp(argv[i], "--json-out") == 0 && i + 1 < argc)
            json_out = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0)
            o.quick = 1;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
            ops = atol(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            o.only = argv[++i];
        else if (strcmp(argv[i], "--live") == 0 && i + 1 < argc)
            o.live = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            figure_config = config_index(argv[++i]);
        else if (strcmp(argv[i], "--trackd") == 0 && i + 1 < argc)
            trackd = argv[++i];
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    if (o.quick) {
        o.reps = 3;
        o.ops = 20000;
    }
    o.reps = reps ? reps : o.reps;
    o.ops = ops ? ops : o.ops;
    if (figure_config < 0) {
        fprintf(stderr, "bh-bench: --config is one of:");
        for (int c = 0; c < NCONFIGS; c++)
            fprintf(stderr, " %s", configs[c].key);
        fprintf(stderr, "\n");
        return 2;
    }
    if (o.reps < 1 || o.reps > MAX_REPS || o.ops < 1000 || (o.live & (o.live - 1)) != 0) {
        fprintf(stderr, "bh-bench: --reps 1..%d, --ops >= 1000, --live a power of two\n", MAX_REPS);
        return 2;
    }

    /* First, before anything is freed: the resident-set measurement. */
    if (wanted(&o, "memory"))
        section_memory(&o);
    /* glibc skips the lock prefix of mutexes while a process has never had a
     * second thread; runtimes are threaded, so the baselines must not be
     * measured in that flattering mode. */
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) != 0)
        bench_die("pthread_create failed");
    pthread_join(t, NULL);

    static const struct {
        const char *name;
        void (*run)(const opts *);
    } sections[] = {
        {"pairs", section_pairs},   {"lookup", section_lookup},   {"mixed", section_mixed},
        {"intern", section_intern}, {"configs", section_configs},
    };
    for (size_t s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
        if (!wanted(&o, sections[s].name))
            continue;
        sections[s].run(&o);
        if (!o.json)
            fprintf(stderr, "bh-bench: %s done\n", sections[s].name);
    }

    report_cost rc;
    int have_rc = wanted(&o, "reporter") &&
                  report_cost_measure(trackd, o.reps, o.quick ? 2000 : 100000, 100000, &rc) == 0;
    char cpu[128];
    cpu_model(cpu, sizeof(cpu));
    if (o.json)
        print_json(stdout, &o, cpu, have_rc ? &rc : NULL);
    else
        print_text(&o, cpu, have_rc ? &rc : NULL);
    if (json_out != NULL) {
        FILE *f = fopen(json_out, "w");
        if (f == NULL)
            bench_die("cannot write the --json-out file");
        print_json(f, &o, cpu, have_rc ? &rc : NULL);
        if (fclose(f) != 0)
            bench_die("cannot write the --json-out file");
    }
    return 0;
}
