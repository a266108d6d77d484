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
 * Owns: the sections (which figures, on which key sets, with which targets)
 * and the command line. Key sets live in keys.c, the measured loops in
 * workers.c, the table and its printing in output.c, baselines in
 * baseline.c, the reporter-cost comparison in report_cost.c.
 * Must never: exit non-zero because something was slow.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "annotations.h"
#include "bench.h"
#include "bench_util.h"
#include "keys.h"
#include "output.h"
#include "proc.h"
#include "report_cost.h"
#include "workers.h"

/* ======================== Configurations ======================== */

/* The registry flags whose cost is measured, one line each; the first is
 * the default configuration every other line is compared with. Flags that
 * turn a default check off and flags that turn a diagnostic on both belong
 * here (a line per flag, guarded so the table follows the header). */
const bench_config configs[] = {
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
const int nconfigs = sizeof(configs) / sizeof(configs[0]);
_Static_assert(sizeof(configs) / sizeof(configs[0]) <= MAX_CONFIGS, "MAX_CONFIGS too small");

int figure_config;

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

/* The variants most rows compare: bufhandle in the run's configuration, and
 * each baseline. */
static variant bh_variant(void) { return (variant){IMPL_BH, configs[figure_config].flags}; }
static const variant hash_variant = {IMPL_HASH, 0}, tree_variant = {IMPL_TREE, 0},
                     peer_variant = {IMPL_PEER, 0};

/* A figure of bufhandle against the hash and the C++ peer: `what` on
 * `threads` threads with n live keys; hash_target is the speedup wanted
 * over the hash (0: none), and 2x over the peer. */
static void against_hash_and_peer(const opts *o, const char *name, size_t n, work what, int threads,
                                  double hash_target) {
    double m[3];
    variant v[3] = {bh_variant(), hash_variant, peer_variant};
    compare(o->reps, o->ops, v, 3, n, what, threads, m);
    figure *f = add_figure(name, "ns");
    f->bh = m[0];
    add_base(f, impl_names[IMPL_HASH], m[1], hash_target);
    add_base(f, impl_names[IMPL_PEER], m[2], 2);
}

/* lookup hit + release, 2 threads, 1K live, random keys. */
static void section_lookup(const opts *o) {
    double m[4];
    variant v[4] = {bh_variant(), tree_variant, hash_variant, peer_variant};
    compare(o->reps, o->ops, v, 4, 1024, W_LOOKUP, 2, m);
    figure *f = add_figure("lookup hit + release, 2 threads, 1K live", "ns");
    f->bh = m[0];
    add_base(f, impl_names[IMPL_TREE], m[1], 4);
    add_base(f, impl_names[IMPL_HASH], m[2], 2);
    add_base(f, impl_names[IMPL_PEER], m[3], 2);
}

static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f == NULL || fscanf(f, "%lu %lu", &size, &resident) != 2)
        bench_die("cannot read /proc/self/statm");
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* Host bytes per live key: resident-set growth while n keys are populated
 * and then churn_ops random churns run on them (the owner of a random key
 * lets go, a random free address is interned), measured in a child process
 * so that memory the benchmark freed earlier cannot be reused (and hide the
 * growth). */
static double bytes_per_live(variant v, size_t n, long churn_ops) {
    int fd[2];
    if (pipe(fd) != 0)
        bench_die("pipe failed");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork failed");
    if (pid == 0) {
        keyset ks;
        ks_init(&ks, v.impl, v.flags, n);
        double before = rss_bytes();
        ks_populate(&ks);
        if (churn_ops > 0)
            run_workers(1, &(worker){.what = W_CHURN, .ks = &ks, .ops = churn_ops}, NULL, NULL);
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
    /* In order (populated only), and after as many random churns as there
     * are keys: churn leaves the range index's leaves part full. Against
     * the C++ peer the target is on the ratio (<= 0.5x its bytes). */
    for (int churned = 0; churned < 2; churned++) {
        char name[80];
        snprintf(name, sizeof(name), "host bytes per live handle, %zuK%s (RSS)", n / 1024,
                 churned ? ", after churn" : " live");
        long churn = churned ? (long)n : 0;
        figure *f = add_figure(name, "B");
        f->bh = bytes_per_live(bh_variant(), n, churn);
        f->max_value = 64;
        add_base(f, impl_names[IMPL_HASH], bytes_per_live(hash_variant, n, churn), 0);
        add_base(f, impl_names[IMPL_PEER], bytes_per_live(peer_variant, n, churn), 2);
    }
}

/* The mixed workload at each size, 1 thread. Both structures are built once
 * per size and the repetitions run on them alternately. */
static void section_mixed(const opts *o) {
    static const size_t full[] = {1024, 16384, 262144, 1048576}, quick[] = {1024, 16384};
    const size_t *sizes = o->live ? &o->live : o->quick ? quick : full;
    int nsizes = o->live ? 1 : o->quick ? 2 : 4;
    for (int s = 0; s < nsizes; s++) {
        char name[80];
        snprintf(name, sizeof(name), "mixed, 1/8 churn, 1 thread, %zuK live", sizes[s] / 1024);
        against_hash_and_peer(o, name, sizes[s], W_MIXED, 1, sizes[s] == 1048576 ? 1.0 : 0);
    }
}

/* intern alias + release of one live key, 1 thread: against one uncontended
 * global mutex (around the hash). */
static void section_intern(const opts *o) {
    against_hash_and_peer(o, "intern alias + release, 1 thread", 1, W_INTERN, 1, 1.0);
}

/* Last release + new intern (churn), 1 thread, at 1K and 1M live: the
 * overlap check's cost is the ratio to the same registry with the check off,
 * measured in the same run. */
static void section_creation(const opts *o) {
    static const size_t full[] = {1024, 1048576}, quick[] = {1024, 16384};
    const size_t *sizes = o->live ? &o->live : o->quick ? quick : full;
    for (int s = 0; s < (o->live ? 1 : 2); s++) {
        double m[4];
        variant v[4] = {bh_variant(),
                        {IMPL_BH, configs[figure_config].flags | BH_CONFIG_NO_OVERLAP_CHECK},
                        hash_variant,
                        peer_variant};
        compare(o->reps, o->ops, v, 4, sizes[s], W_CHURN, 1, m);
        char name[80];
        snprintf(name, sizeof(name), "last release + new intern, 1 thread, %zuK live", sizes[s] / 1024);
        figure *f = add_figure(name, "ns");
        f->bh = m[0];
        add_base(f, "bufhandle, overlap check off", m[1], 1 / 1.25);
        add_base(f, impl_names[IMPL_HASH], m[2], 0);
        add_base(f, impl_names[IMPL_PEER], m[3], 2);
    }
}

/* A port's cycle (ks_port_cycle: create, create at the address, a view at
 * an offset, three destroys), 1 thread, 1K other allocations live. */
static void section_port(const opts *o) {
    against_hash_and_peer(o, "port cycle (6 calls), 1 thread, 1K live", 1024, W_PORT, 1, 1.0);
}

/* The mixed workload on 2 threads sharing one registry (each churns only
 * its own keys; see workers.c), at 1M live. Where lock-free hits must win:
 * the baselines' threads take turns at one mutex. */
static void section_threads(const opts *o) {
    size_t n = o->live ? o->live : o->quick ? 16384 : 1048576;
    char name[80];
    snprintf(name, sizeof(name), "mixed, 1/8 churn, 2 threads, %zuK live", n / 1024);
    against_hash_and_peer(o, name, n, W_MIXED, 2, 2);
}

static void section_configs(const opts *o) {
    static const work works[] = {W_PAIR, W_INTERN, W_LOOKUP, W_CHURN};
    double v[MAX_CONFIGS][CW_COUNT][MAX_REPS];
    keyset ks[MAX_CONFIGS];
    for (int c = 0; c < nconfigs; c++)
        ks_create(&ks[c], IMPL_BH, configs[c].flags, 1024);
    for (int r = 0; r < o->reps; r++)
        for (int c = 0; c < nconfigs; c++)
            for (int k = 0; k < CW_COUNT; k++) {
                worker w = {.what = works[k], .ks = &ks[c], .ops = o->ops, .h = {ks[c].own[0]}};
                v[c][k][r] = run_workers(1, &w, NULL, NULL);
            }
    for (int c = 0; c < nconfigs; c++) {
        ks_destroy(&ks[c]);
        for (int k = 0; k < CW_COUNT; k++)
            config_ns[c][k] = bench_median(v[c][k], o->reps);
    }
}

/* ======================== main ======================== */

static void *nothing(void *arg) { return arg; }

/* The configs[] line named key, or -1. */
static int config_index(const char *key) {
    for (int c = 0; c < nconfigs; c++)
        if (strcmp(configs[c].key, key) == 0)
            return c;
    return -1;
}

static const char usage[] =
    "usage: bh-bench [--quick] [--reps N] [--ops N] [--json | --json-out FILE] [--trackd PATH]\n"
    "                [--only "
    "memory|pairs|lookup|mixed|intern|creation|port|threads|configs|annotations|reporter] "
    "[--live N]\n"
    "                [--config defaults|no-overlap|debug-refs|history|stacks]\n";

int main(int argc, char **argv) {
    opts o = {.reps = 5, .ops = 1000000};
    long ops = 0;
    int reps = 0, probe = 0;
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
        else if (strcmp(argv[i], "--probe-hot-path") == 0) /* the annotations row's other side */
            probe = 1;
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
        for (int c = 0; c < nconfigs; c++)
            fprintf(stderr, " %s", configs[c].key);
        fprintf(stderr, "\n");
        return 2;
    }
    if (o.reps < 1 || o.reps > MAX_REPS || o.ops < 1000 || (o.live & (o.live - 1)) != 0) {
        fprintf(stderr, "bh-bench: --reps 1..%d, --ops >= 1000, --live a power of two\n", MAX_REPS);
        return 2;
    }

    /* First, before anything is freed: the resident-set measurement. */
    if (!probe && wanted(&o, "memory"))
        section_memory(&o);
    /* glibc skips the lock prefix of mutexes while a process has never had a
     * second thread; runtimes are threaded, so the baselines must not be
     * measured in that flattering mode (nor one side of the annotations row). */
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) != 0)
        bench_die("pthread_create failed");
    pthread_join(t, NULL);
    if (probe)
        return annotations_probe_main(o.ops);

    static const struct {
        const char *name;
        void (*run)(const opts *);
    } sections[] = {
        {"pairs", section_pairs},     {"lookup", section_lookup},     {"mixed", section_mixed},
        {"intern", section_intern},   {"creation", section_creation}, {"port", section_port},
        {"threads", section_threads}, {"configs", section_configs},   {"annotations", section_annotations},
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
