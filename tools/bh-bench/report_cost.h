/*
 * report_cost.h - what reporting an event costs the application thread.
 *
 * Owns: the paced comparison, in one run, of the socket reporter (events
 * into the shared-memory ring bh-trackd drains), 0.3.1's socket reporter
 * (when BH_BENCH_LEGACY_LIB names a 0.3.1 libbufhandle.so, loaded beside
 * this one) and the runtime's blocking-send tracking client.
 * Must never: leave a server process, socket file or temp directory behind.
 */
#ifndef BH_BENCH_REPORT_COST_H
#define BH_BENCH_REPORT_COST_H

#include <stdio.h>

/* One way of reporting: ns per report on the application thread, over the
 * calls during which the thread was not preempted (excluded counts the
 * others) and that did not follow the bench's own system call (p50_cold:
 * the median of those). */
typedef struct cost_row {
    int measured;
    double mean, p50, p99, p999, p50_cold;
    long excluded, calls;
} cost_row;

typedef struct report_cost {
    const char *server; /* "bh-trackd" or "discarding reader" */
    double rate;        /* reports per second */
    cost_row ring, legacy, send;
} report_cost;

/* Medians over reps runs of n reports paced at rate per second. Returns 0,
 * or -1 if no socket could be set up (the figures are then not measured). */
int report_cost_measure(const char *trackd, int reps, long n, double rate, report_cost *out);
/* The table (text) and the "reporter" member (JSON, with its leading comma). */
void report_cost_print_text(const report_cost *rc);
void report_cost_print_json(FILE *out, const report_cost *rc);

#endif
