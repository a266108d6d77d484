/*
 * report_cost.h - what reporting an event costs the application thread.
 *
 * Owns: the paced comparison of the socket reporter with the runtime's
 * blocking-send tracking client.
 * Must never: leave a server process, socket file or temp directory behind.
 */
#ifndef BH_BENCH_REPORT_COST_H
#define BH_BENCH_REPORT_COST_H

typedef struct report_cost {
    const char *server; /* "bh-trackd" or "discarding reader" */
    double reporter_mean_ns, reporter_p99_ns;
    double send_mean_ns, send_p99_ns;
} report_cost;

/* Medians over reps runs of n reports paced at rate per second. Returns 0,
 * or -1 if no socket could be set up (the figures are then not measured). */
int report_cost_measure(const char *trackd, int reps, long n, double rate, report_cost *out);

#endif
