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

double run_workers(int n, const worker *proto, const bh_handle *hs, cpu_view *cpu) {
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
