/*
 * workers.h - bh-bench's measured loops and the threads that run them.
 *
 * Owns: what one measurement does (a work kind over a key set, or a
 * baseline counter), each thread's own 128-byte region, and the timing of a
 * run in wall-clock and thread CPU time.
 * Must never: allocate, draw random numbers or print inside a measured
 * loop beyond what its baselines do as well.
 */
#ifndef BH_BENCH_WORKERS_H
#define BH_BENCH_WORKERS_H

#include <pthread.h>

#include "keys.h"

typedef enum work {
    W_PAIR,      /* retain+release of one handle (ks NULL: the counter baselines) */
    W_CAS_PAIR,  /* baseline: CAS-loop increment + decrement */
    W_XADD_PAIR, /* baseline: lock xadd increment + decrement */
    W_LOOKUP,    /* lookup of a random live key + release */
    W_INTERN,    /* intern alias of a random live key + release */
    W_MIXED,     /* 7/16 intern alias + release, 7/16 lookup + release, 1/8 churn */
    W_CHURN,     /* churn only: the owner of a random key releases, a free address is interned */
    W_PORT,      /* a port's cycle at a random free address (ks_port_cycle) */
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
    size_t part, parts; /* this thread's number and the thread count (a power of two) */
    pthread_barrier_t *start;
    double ns;     /* wall-clock time of the loop */
    double cpu_ns; /* this thread's CPU time in the loop: excludes time it waited for a CPU */
} worker;

/* What a run took besides its wall-clock figure. */
typedef struct cpu_view {
    double ns;   /* the mean of each thread's ns per operation, in thread CPU time */
    double cpus; /* CPU time of all threads / wall time of the longest: how many ran at once, on average */
} cpu_view;

/* Runs n copies of proto on n threads started together; each thread gets its
 * own seed (and its own handle from hs, if given). Returns the mean over the
 * threads of each thread's ns per operation (the latency view: with a shared
 * lock, every thread waits); *cpu (if not NULL) gets the CPU-time view. */
double run_workers(int n, const worker *proto, const bh_handle *hs, cpu_view *cpu);

/* An implementation and, for bufhandle, its registry flags. */
typedef struct variant {
    enum impl impl;
    uint32_t flags;
} variant;

#define MAX_VARIANTS 4

/* medians[i]: the median ns per operation of `what` on `threads` threads
 * over reps repetitions, on n live keys of variant v[i]; every variant's
 * keys are built first, and the repetitions interleave the variants so
 * that machine noise hits them alike. */
void compare(int reps, long ops, const variant *v, int nv, size_t n, work what, int threads, double *medians);

#endif
