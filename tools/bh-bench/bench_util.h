/*
 * bench_util.h - clock, statistics and failure exit shared by bh-bench's files.
 */
#ifndef BH_BENCH_UTIL_H
#define BH_BENCH_UTIL_H

#include <stddef.h>

double bench_now_ns(void);
/* The calling thread's CPU time: the time it ran, not the time it waited. */
double bench_thread_cpu_ns(void);
/* Sorts v in place. */
double bench_median(double *v, int n);
double bench_percentile(double *v, size_t n, double p);
/* Prints "bh-bench: msg" and exits 2: a setup failure, not a result. */
_Noreturn void bench_die(const char *msg);

#endif
