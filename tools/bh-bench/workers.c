/*
 * workers.c - the measured loops (see workers.h).
 *
 * Owns: the loops, compiled once per implementation, and starting n threads
 * together behind a barrier.
 * Must never: let a pair loop carry a cost (a random number, a branch on
 * the implementation) that its baselines do not.
 */
#define _GNU_SOURCE
#include "workers.h"

#include "bench.h"

/* The loops are written once; impl is a constant in each call from
 * run_loop(), so the compiler drops the switches of ks_take / ks_drop. Only
 * the workloads over many keys draw random numbers: the pair loops must not
 * carry a cost their baselines do not. */
static inline __attribute__((always_inline)) void loop(worker *w, enum impl impl) {
    keyset *ks = w->ks;
    uint64_t s = w->seed;
    /* Threads that change keys (churn) or use free addresses (port cycles)
     * each keep to their own keys: key i belongs to thread i % parts, so the
     * threads' keys lie interleaved over one registry's table and ranges. */
    size_t own_keys = ks != NULL ? (ks->n - 1) & ~(size_t)(w->parts - 1) : 0;
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
        for (long i = 0; i < w->ops; i++)
            ks_hit(ks, impl, ks->addr[bh__xorshift64s(&s) & (ks->n - 1)], w->what == W_INTERN);
        break;
    case W_MIXED:
    case W_CHURN:
        for (long i = 0; i < w->ops; i++) {
            uint64_t r = bh__xorshift64s(&s);
            size_t k = ((size_t)r & own_keys) | w->part;
            if (w->what == W_CHURN || ((r >> 40) & 7) == 0) /* the owner lets go, a free address is taken */
                ks_replace(ks, impl, k, ((size_t)(r >> 32) & own_keys) | w->part);
            else
                ks_hit(ks, impl, ks->addr[k], (r >> 40) & 1);
        }
        break;
    case W_PORT:
        for (long i = 0; i < w->ops; i++)
            ks_port_cycle(ks, impl, ks->spare[((size_t)bh__xorshift64s(&s) & own_keys) | w->part]);
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
    case IMPL_PEER:
        loop(w, IMPL_PEER);
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

double run_workers(int n, const worker *proto, const bh_handle *hs, cpu_view *cpu) {
    worker w[8];
    pthread_t tid[8];
    pthread_barrier_t start;
    if (n < 1 || n > 8 || (n & (n - 1)) != 0)
        bench_die("run_workers: 1, 2, 4 or 8 threads");
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int t = 0; t < n; t++) {
        w[t] = *proto;
        w[t].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1) + (uint64_t)proto->ops;
        w[t].start = &start;
        w[t].part = (size_t)t;
        w[t].parts = (size_t)n;
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

void compare(int reps, long ops, const variant *v, int nv, size_t n, work what, int threads,
             double *medians) {
    double t[MAX_VARIANTS][MAX_REPS];
    keyset ks[MAX_VARIANTS];
    if (nv > MAX_VARIANTS || reps > MAX_REPS)
        bench_die("compare: too many variants or repetitions");
    for (int i = 0; i < nv; i++)
        ks_create(&ks[i], v[i].impl, v[i].flags, n);
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < nv; i++)
            t[i][r] = run_workers(
                threads, &(worker){.what = what, .ks = &ks[i], .ops = ops, .h = {ks[i].own[0]}}, NULL, NULL);
    for (int i = 0; i < nv; i++) {
        ks_destroy(&ks[i]);
        medians[i] = bench_median(t[i], reps);
    }
}
