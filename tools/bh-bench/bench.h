/*
 * bench.h - what bh-bench's files share: the options of a run and the table
 * of registry configurations every figure can be measured with.
 *
 * Owns: the declarations only (the table itself is in bench.c).
 * Must never: hold a workload, a baseline or a printer (keys.c, workers.c,
 * baseline.c, output.c).
 */
#ifndef BH_BENCH_BENCH_H
#define BH_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#define MAX_REPS 99
#define MAX_CONFIGS 8

typedef struct opts {
    int reps, quick, json;
    long ops;
    const char *only;
    size_t live; /* mixed workload at this size only (0: the standard curve) */
} opts;

/* The registry flags whose cost is measured, one line each; the first is
 * the default configuration every other line is compared with. */
typedef struct bench_config {
    const char *name;
    const char *key; /* for --config */
    uint32_t flags;
} bench_config;
extern const bench_config configs[];
extern const int nconfigs;

/* The configuration of every bufhandle registry outside the configuration
 * table (--config KEY): index into configs[]. */
extern int figure_config;

#endif
