/*
 * output.h - bh-bench's result table and how it is printed.
 *
 * Owns: the figures of a run (a bufhandle value, its baselines and their
 * targets), their verdicts, the hot-path-per-configuration table, and the
 * text and JSON renderings of all of it.
 * Must never: measure anything, or let the exit status depend on a verdict.
 */
#ifndef BH_BENCH_OUTPUT_H
#define BH_BENCH_OUTPUT_H

#include <stdio.h>

#include "bench.h"
#include "report_cost.h"

/* One line of the result table. Each has a target (docs/benchmarks.md): either on the
 * speedup over a baseline (baseline ns / bufhandle ns) or on the value. */
typedef struct figure {
    char name[80];
    const char *unit; /* "ns", "B", "x" (a ratio), "cpu" (CPUs in use) */
    double bh;
    int nbase;
    const char *base_name[4];
    double base[4];
    double min_speedup[4]; /* 0: no target on that baseline */
    double max_value;      /* 0: no target on the value itself */
} figure;

/* A new line of the table, in the order figures are added. */
figure *add_figure(const char *name, const char *unit);
/* A baseline of f; min_speedup (baseline / bufhandle) 0: no target on it. */
void add_base(figure *f, const char *name, double value, double min_speedup);

/* The hot path in each configuration, 1 thread, 1K live: config_ns[c][k]
 * for configs[c] and work CW_*, filled by the configs section (all 0: not
 * measured, and not printed). */
enum { CW_PAIR, CW_INTERN, CW_LOOKUP, CW_CHURN, CW_COUNT };
extern double config_ns[MAX_CONFIGS][CW_COUNT];

/* The CPU's model name, for the table's heading. */
void cpu_model(char *out, size_t len);
void print_text(const opts *o, const char *cpu, const report_cost *rc);
void print_json(FILE *out, const opts *o, const char *cpu, const report_cost *rc);

#endif
