/*
 * report_cost.c - reporting cost on the application thread (see report_cost.h).
 *
 * Owns: a discarding reader (the baseline's server, and the socket
 * reporter's when no bh-trackd is installed), the pacing loop, the
 * percentiles over calls that ran unpreempted, 0.3.1's reporter loaded from
 * BH_BENCH_LEGACY_LIB, and the baseline: one blocking send(2) of a 72-byte
 * record per report.
 * Must never: measure anything but the time spent in the reporting thread.
 */
#define _GNU_SOURCE
#include "report_cost.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench_util.h"
#include "bufhandle/bufhandle.h"
#include "proc.h"

/* A listening socket at path (shorter than sun_path), or -1. */
static int sink_listen(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* A server that reads and discards (the baseline's counterpart of bh-trackd). */
static void *sink(void *arg) {
    int lfd = (int)(intptr_t)arg;
    int fd = accept(lfd, NULL, NULL);
    char buf[65536];
    while (fd >= 0 && read(fd, buf, sizeof(buf)) > 0) {
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* The socket reporter's entry points: this library's, or 0.3.1's. */
typedef struct reporter_api {
    bh_status (*open)(const char *path, const bh_socket_options *opts, bh_reporter *out);
    void (*close)(bh_reporter *rep);
    bh_status (*stats)(const bh_reporter *rep, bh_reporter_stats *out);
} reporter_api;

static const reporter_api this_api = {bh_socket_reporter_open, bh_socket_reporter_close,
                                      bh_socket_reporter_stats};

/* 0.3.1's reporter from BH_BENCH_LEGACY_LIB (RTLD_LOCAL: its symbols stay
 * apart from ours). 0 if it is not set or not usable. */
static int legacy_api(reporter_api *api) {
    const char *lib = getenv("BH_BENCH_LEGACY_LIB");
    void *h = lib != NULL ? dlopen(lib, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (h == NULL)
        return 0;
    *(void **)&api->open = dlsym(h, "bh_socket_reporter_open");
    *(void **)&api->close = dlsym(h, "bh_socket_reporter_close");
    *(void **)&api->stats = dlsym(h, "bh_socket_reporter_stats");
    return api->open != NULL && api->close != NULL && api->stats != NULL; /* kept loaded: its threads */
}

static long involuntary_switches(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nivcsw;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One report through rep, or (rep NULL) the baseline's blocking send on fd. */
static void report_one(bh_reporter *rep, int fd, uint8_t *rec, const bh_event *ev) {
    if (rep != NULL) {
        rep->report(rep->ctx, ev);
        return;
    }
    rec[0] = (uint8_t)ev->kind;
    memcpy(rec + 24, &ev->address, 8);
    size_t off = 0;
    while (off < 72) { /* the TT client: blocking send until all 72 bytes are out */
        ssize_t w = send(fd, rec + off, 72 - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

/* Calls per look at the thread's involuntary context switches: 1 ms at
 * 100000 reports/s. Looking costs a system call (getrusage, 11 us on this
 * machine's virtual machine), which is why it is not done around every call:
 * two per call cost more than the 10 us between calls (the loop never ran at
 * its rate), and each left the call after it cold (TLB, branch predictors:
 * 30 ns warm measured 50 ns). */
#define WINDOW 100

/* Paces n reports at rate per second into row: the ns each took on this
 * thread (the clock's own cost taken off), over the windows of WINDOW calls
 * during which the thread was not preempted. The first call of each window
 * follows the look's system call: it is timed apart (p50_cold), not with the
 * others. */
static void paced_reports(bh_reporter *rep, int fd, long n, double rate, cost_row *row) {
    double *lat = malloc((size_t)n * sizeof(double)), *cold = malloc((size_t)n * sizeof(double));
    double period = 1e9 / rate, t_next = bench_now_ns(), sum = 0, clock_ns = 1e9;
    uint8_t rec[72];
    memset(rec, 0, sizeof(rec));
    if (lat == NULL || cold == NULL)
        bench_die("out of memory");
    for (int i = 0; i < 1000; i++) { /* what two clock reads cost */
        double t0 = bench_now_ns(), t1 = bench_now_ns();
        if (t1 - t0 < clock_ns)
            clock_ns = t1 - t0;
    }
    long kept = 0, n_cold = 0;
    row->excluded = 0;
    for (long i = 0; i < n;) {
        long end = i + WINDOW < n ? i + WINDOW : n, first = i, kept0 = kept, cold0 = n_cold;
        double wsum = 0;
        long sw = involuntary_switches();
        for (; i < end; i++) {
            while (bench_now_ns() < t_next) {
            }
            t_next += period;
            bh_event ev = {i % 2 ? BH_EVENT_FREE : BH_EVENT_ALLOC, 0, 0x1000 + (uint64_t)(i / 2) * 64, 64,
                           (uint64_t)i + 1};
            double t0 = bench_now_ns();
            report_one(rep, fd, rec, &ev);
            double dt = bench_now_ns() - t0 - clock_ns;
            dt = dt > 0 ? dt : 0;
            if (i == first) {
                cold[n_cold++] = dt;
                continue;
            }
            lat[kept++] = dt;
            wsum += dt;
        }
        if (involuntary_switches() != sw) { /* preempted: the machine's load, not the calls */
            row->excluded += end - first;
            kept = kept0;
            n_cold = cold0;
            continue;
        }
        sum += wsum;
    }
    qsort(lat, (size_t)kept, sizeof(double), cmp_double);
    qsort(cold, (size_t)n_cold, sizeof(double), cmp_double);
    row->measured = kept > 0;
    row->calls = n;
    row->mean = kept ? sum / (double)kept : 0;
    row->p50 = kept ? lat[(size_t)((double)(kept - 1) * 0.5)] : 0;
    row->p99 = kept ? lat[(size_t)((double)(kept - 1) * 0.99)] : 0;
    row->p999 = kept ? lat[(size_t)((double)(kept - 1) * 0.999)] : 0;
    row->p50_cold = n_cold ? cold[(size_t)((double)(n_cold - 1) * 0.5)] : 0;
    free(lat);
    free(cold);
}

/* One socket-reporter run against target; -1 if it could not be opened. */
static int reporter_run(const reporter_api *api, const char *target, long n, double rate, cost_row *row) {
    bh_reporter rep;
    bh_socket_options so = {.max_block_us = 1000};
    if (api->open(target, &so, &rep) != BH_OK)
        return -1;
    paced_reports(&rep, -1, n, rate, row);
    bh_reporter_stats rs;
    api->stats(&rep, &rs);
    api->close(&rep);
    if (rs.dropped != 0)
        fprintf(stderr, "bh-bench: warning: %" PRIu64 " reports dropped\n", rs.dropped);
    return 0;
}

/* One run against a discarding reader at path: a socket reporter (api) or
 * the blocking-send baseline (api NULL). -1 if it could not be set up. */
static int with_sink(const char *path, const reporter_api *api, long n, double rate, cost_row *row) {
    int lfd = sink_listen(path), rc = 0;
    pthread_t st;
    if (lfd < 0)
        return -1;
    pthread_create(&st, NULL, sink, (void *)(intptr_t)lfd);
    if (api != NULL) {
        rc = reporter_run(api, path, n, rate, row);
        if (rc != 0) { /* nobody connected: wake the reader's accept */
            int fd = bh_unix_connect(path);
            if (fd >= 0)
                close(fd);
        }
    } else {
        int fd = bh_unix_connect(path);
        paced_reports(NULL, fd, n, rate, row);
        close(fd);
    }
    pthread_join(st, NULL);
    close(lfd);
    return rc;
}

/* The row whose p50 is the median of the runs' (the middle run). */
static void median_row(cost_row *runs, int reps, cost_row *out) {
    double p50[99];
    for (int r = 0; r < reps; r++)
        p50[r] = runs[r].p50;
    double m = bench_median(p50, reps);
    *out = runs[0];
    for (int r = 0; r < reps; r++)
        if (runs[r].p50 == m)
            *out = runs[r];
}

int report_cost_measure(const char *trackd, int reps, long n, double rate, report_cost *out) {
    char dir[] = "/tmp/bh-bench-XXXXXX", sock[64], sink_path[64];
    cost_row ring[99], legacy[99], send_[99];
    reporter_api old;
    int have_legacy = legacy_api(&old);
    int ok = mkdtemp(dir) != NULL;
    if (!ok)
        return -1;
    if (reps > 99)
        reps = 99;
    snprintf(sock, sizeof(sock), "%s/trackd.sock", dir);
    snprintf(sink_path, sizeof(sink_path), "%s/sink.sock", dir);
    pid_t server = trackd != NULL ? bh_trackd_start(trackd, sock, "/dev/null", NULL) : -1;
    for (int r = 0; r < reps && ok; r++) {
        if (server > 0)
            ok = reporter_run(&this_api, sock, n, rate, &ring[r]) == 0 &&
                 (!have_legacy || reporter_run(&old, sock, n, rate, &legacy[r]) == 0);
        else
            ok = with_sink(sink_path, &this_api, n, rate, &ring[r]) == 0 &&
                 (!have_legacy || with_sink(sink_path, &old, n, rate, &legacy[r]) == 0);
        ok = ok && with_sink(sink_path, NULL, n, rate, &send_[r]) == 0;
    }
    bh_trackd_stop(server);
    unlink(sink_path);
    rmdir(dir);
    if (!ok)
        return -1;
    memset(out, 0, sizeof(*out));
    out->server = server > 0 ? "bh-trackd" : "discarding reader";
    out->rate = rate;
    median_row(ring, reps, &out->ring);
    if (have_legacy)
        median_row(legacy, reps, &out->legacy);
    median_row(send_, reps, &out->send);
    return 0;
}

static const char *row_names[3] = {"socket reporter (shared-memory ring)", "0.3.1 socket reporter",
                                   "baseline: one blocking send per report"};
static const char *row_keys[3] = {"ring", "reporter_0_3_1", "blocking_send"};

void report_cost_print_text(const report_cost *rc) {
    const cost_row *rows[3] = {&rc->ring, &rc->legacy, &rc->send};
    printf("\nreporting cost on the application thread at %.0f reports/s, unpreempted calls (server: %s)\n",
           rc->rate, rc->server);
    printf("%-40s %10s %10s %10s %10s %10s %14s\n", "", "mean ns", "p50 ns", "p99 ns", "p99.9 ns",
           "preempted", "p50 after sys");
    for (int i = 0; i < 3; i++) {
        if (!rows[i]->measured) {
            printf("%-40s %10s (set BH_BENCH_LEGACY_LIB to a 0.3.1 libbufhandle.so)\n", row_names[i], "-");
            continue;
        }
        printf("%-40s %10.1f %10.1f %10.1f %10.1f %10ld %14.1f\n", row_names[i], rows[i]->mean, rows[i]->p50,
               rows[i]->p99, rows[i]->p999, rows[i]->excluded, rows[i]->p50_cold);
    }
    printf("(preempted: calls in windows of %d during which the thread was preempted; p50 after sys: the\n"
           " first call of each window, right after the system call that looks, timed apart)\n",
           WINDOW);
    printf("target for the ring: p50 < 50 ns, p99.9 < 2000 ns: %s\n",
           rc->ring.p50 < 50 && rc->ring.p999 < 2000 ? "met" : "NOT met");
}

void report_cost_print_json(FILE *out, const report_cost *rc) {
    const cost_row *rows[3] = {&rc->ring, &rc->legacy, &rc->send};
    fprintf(out, ",\"reporter\":{\"rate_per_s\":%.0f,\"server\":\"%s\"", rc->rate, rc->server);
    for (int i = 0; i < 3; i++) {
        if (!rows[i]->measured) {
            fprintf(out, ",\"%s\":null", row_keys[i]);
            continue;
        }
        fprintf(out,
                ",\"%s\":{\"mean_ns\":%.1f,\"p50_ns\":%.1f,\"p99_ns\":%.1f,\"p999_ns\":%.1f,\"calls\":%ld,"
                "\"preempted\":%ld,\"p50_after_syscall_ns\":%.1f}",
                row_keys[i], rows[i]->mean, rows[i]->p50, rows[i]->p99, rows[i]->p999, rows[i]->calls,
                rows[i]->excluded, rows[i]->p50_cold);
    }
    fprintf(out, ",\"ring_target_met\":%s}", rc->ring.p50 < 50 && rc->ring.p999 < 2000 ? "true" : "false");
}
