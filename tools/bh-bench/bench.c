/*
 * bh-bench - bufhandle against honest baselines, in one run.
 *
 *   bh-bench [--reps N] [--ops N] [--threads N] [--json] [--trackd PATH]
 *
 * Every figure is the median of --reps repetitions, and every bufhandle figure
 * is shown next to a baseline measured in the same run, as a ratio: machines
 * are shared and noisy, absolute nanoseconds are not comparable across runs.
 *
 * Baselines:
 *  - "global lock": the obvious implementation of the same semantics, one
 *    pthread mutex around a hash map of (device, address) -> refcounted entry.
 *  - "blocking send": the runtime's existing tracking client, one blocking
 *    send(2) of a 72-byte record per report, to a server that reads them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"

/* ======================== Timing ======================== */

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ======================== Baseline: one global lock ======================== */

typedef struct naive_entry {
    uint64_t address;
    uint32_t device, refs, used;
} naive_entry;

typedef struct naive {
    pthread_mutex_t lock;
    naive_entry *e;
    size_t cap;
} naive;

static size_t naive_find(naive *n, uint32_t device, uint64_t address) {
    uint64_t h = (address ^ device * 0x9e3779b97f4a7c15ull) * 0xff51afd7ed558ccdull;
    size_t i = (size_t)(h >> 20) & (n->cap - 1);
    while (n->e[i].used && !(n->e[i].device == device && n->e[i].address == address))
        i = (i + 1) & (n->cap - 1);
    return i;
}

/* Get-or-insert with a reference, like bh_intern. Returns the slot as handle. */
static size_t naive_intern(naive *n, uint32_t device, uint64_t address) {
    pthread_mutex_lock(&n->lock);
    size_t i = naive_find(n, device, address);
    if (!n->e[i].used)
        n->e[i] = (naive_entry){address, device, 0, 1};
    n->e[i].refs++;
    pthread_mutex_unlock(&n->lock);
    return i;
}

static void naive_retain(naive *n, size_t h) {
    pthread_mutex_lock(&n->lock);
    n->e[h].refs++;
    pthread_mutex_unlock(&n->lock);
}

/* Drops a reference; the last one removes the entry (no tombstones needed:
 * the benchmark's keys are never removed while others collide with them). */
static void naive_release(naive *n, size_t h) {
    pthread_mutex_lock(&n->lock);
    if (--n->e[h].refs == 0)
        n->e[h].used = 0;
    pthread_mutex_unlock(&n->lock);
}

/* ======================== Workloads ======================== */

static int fake_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device, (void)size;
    *address = __atomic_add_fetch((uint64_t *)ctx, 4096, __ATOMIC_RELAXED);
    return 0;
}
static void fake_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)address, (void)size;
}

typedef struct job {
    int kind; /* 0 retain/release, 1 intern alias + release, 2 lookup + release */
    int baseline;
    long ops;
    bh_registry *reg;
    naive *nv;
    uint32_t device;
    uint64_t address;
    bh_handle h;
    size_t nh;
    pthread_barrier_t *start;
    double ns;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->start);
    double t0 = now_ns();
    for (long i = 0; i < j->ops; i++) {
        if (j->baseline) {
            size_t h = j->kind == 0 ? (naive_retain(j->nv, j->nh), j->nh)
                                    : naive_intern(j->nv, j->device, j->address);
            naive_release(j->nv, h);
        } else {
            bh_handle h = j->h;
            if (j->kind == 0)
                bh_retain(j->reg, h);
            else if (j->kind == 1)
                bh_intern(j->reg, j->device, j->address, 64, &h);
            else
                bh_lookup(j->reg, j->device, j->address, &h);
            bh_release(j->reg, h);
        }
    }
    j->ns = now_ns() - t0;
    return NULL;
}

/* ns per operation pair for one configuration: threads each on their own
 * allocation (shared = 0) or all on one (shared = 1). */
static double measure(int kind, int baseline, int threads, int shared, long ops) {
    uint64_t next = 0x100000;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){fake_alloc, fake_free, &next};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg = NULL;
    naive nv = {PTHREAD_MUTEX_INITIALIZER, calloc(1024, sizeof(naive_entry)), 1024};
    if (bh_registry_create(&cfg, &reg) != BH_OK || nv.e == NULL) {
        fprintf(stderr, "bh-bench: setup failed\n");
        exit(2);
    }
    job *jobs = calloc((size_t)threads, sizeof(job));
    pthread_t *tid = calloc((size_t)threads, sizeof(pthread_t));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    bh_handle owners[64];
    for (int t = 0; t < threads; t++) {
        job *j = &jobs[t];
        *j = (job){.kind = kind,
                   .baseline = baseline,
                   .ops = ops,
                   .reg = reg,
                   .nv = &nv,
                   .device = 0,
                   .start = &start};
        if (shared && t > 0) {
            j->h = jobs[0].h;
            j->nh = jobs[0].nh;
            j->address = jobs[0].address;
            continue;
        }
        bh_info info;
        if (bh_alloc(reg, 0, 64, &owners[t]) != BH_OK || bh_info_get(reg, owners[t], &info) != BH_OK)
            exit(2);
        j->h = owners[t];
        j->address = info.address;
        j->nh = naive_intern(&nv, 0, info.address); /* the baseline's owner reference */
    }
    for (int t = 0; t < threads; t++)
        pthread_create(&tid[t], NULL, run_job, &jobs[t]);
    double worst = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        if (jobs[t].ns > worst)
            worst = jobs[t].ns;
    }
    for (int t = 0; t < (shared ? 1 : threads); t++)
        bh_release(reg, owners[t]);
    bh_registry_destroy(reg);
    pthread_barrier_destroy(&start);
    free(jobs);
    free(tid);
    free(nv.e);
    /* Throughput view: wall time of the slowest thread over all operations. */
    return worst / ((double)ops * threads);
}

/* ======================== Reporter cost ======================== */

/* A listening socket at path (shorter than sun_path), or -1. */
static int sink_listen(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0)
        return -1;
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

/* Paces n reports at rate per second; returns the mean ns spent in the
 * application thread per report (the callback, or the blocking send). */
static double paced_reports(bh_reporter *rep, int fd, long n, double rate, double *p99) {
    double *lat = malloc((size_t)n * sizeof(double));
    double period = 1e9 / rate, t_next = now_ns(), sum = 0;
    uint8_t rec[72];
    memset(rec, 0, sizeof(rec));
    for (long i = 0; i < n; i++) {
        while (now_ns() < t_next) {
        }
        t_next += period;
        bh_event ev = {i % 2 ? BH_EVENT_FREE : BH_EVENT_ALLOC, 0, 0x1000 + (uint64_t)(i / 2) * 64, 64,
                       (uint64_t)i + 1};
        double t0 = now_ns();
        if (rep != NULL) {
            rep->report(rep->ctx, &ev);
        } else {
            rec[0] = (uint8_t)ev.kind;
            memcpy(rec + 24, &ev.address, 8);
            size_t off = 0;
            while (off < sizeof(rec)) { /* the TT client: blocking send until all 72 bytes are out */
                ssize_t w = send(fd, rec + off, sizeof(rec) - off, MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                off += (size_t)w;
            }
        }
        lat[i] = now_ns() - t0;
        sum += lat[i];
    }
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    *p99 = lat[(size_t)((double)n * 0.99)];
    free(lat);
    return sum / (double)n;
}

/* ======================== main ======================== */

typedef struct row {
    const char *name;
    double bh, base; /* ns per op, medians */
} row;

int main(int argc, char **argv) {
    int reps = 5, threads = 4, json = 0;
    long ops = 1000000;
    const char *trackd = bh_trackd_next_to_self();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
            ops = atol(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--trackd") == 0 && i + 1 < argc)
            trackd = argv[++i];
        else {
            fprintf(stderr, "usage: bh-bench [--reps N] [--ops N] [--threads N] [--json] [--trackd PATH]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 99 || ops < 1000 || threads < 1 || threads > 64) {
        fprintf(stderr, "bh-bench: --reps 1..99, --ops >= 1000, --threads 1..64\n");
        return 2;
    }

    static const struct {
        const char *name;
        int kind, threads, shared;
    } cfgs[] = {
        {"retain+release, 1 thread", 0, 1, 0},
        {"retain+release, N threads, own allocations", 0, -1, 0},
        {"retain+release, N threads, one allocation", 0, -1, 1},
        {"intern alias+release, 1 thread", 1, 1, 0},
        {"intern alias+release, N threads, own allocations", 1, -1, 0},
        {"lookup+release, N threads, own allocations", 2, -1, 0},
    };
    enum { NCFG = sizeof(cfgs) / sizeof(cfgs[0]) };
    row rows[NCFG + 1];
    double samples[2][99];
    for (int c = 0; c < NCFG; c++) {
        int t = cfgs[c].threads < 0 ? threads : cfgs[c].threads;
        long per = ops / t;
        for (int r = 0; r < reps; r++) { /* interleaved, so drift hits both alike */
            samples[0][r] = measure(cfgs[c].kind, 0, t, cfgs[c].shared, per);
            samples[1][r] = measure(cfgs[c].kind, 1, t, cfgs[c].shared, per);
        }
        rows[c] = (row){cfgs[c].name, median(samples[0], reps), median(samples[1], reps)};
        if (!json)
            fprintf(stderr, "bh-bench: %s done\n", cfgs[c].name);
    }

    /* Reporter cost at 100K reports per second. */
    char dir[] = "/tmp/bh-bench-XXXXXX", sock[64], sink_path[64];
    double rep_mean[99], rep_p99[99], send_mean[99], send_p99[99];
    long nrep = 100000; /* one second at 100K/s */
    int have_reporter = mkdtemp(dir) != NULL;
    pid_t server = -1;
    if (have_reporter) {
        snprintf(sock, sizeof(sock), "%s/trackd.sock", dir);
        snprintf(sink_path, sizeof(sink_path), "%s/sink.sock", dir);
        server = trackd != NULL ? bh_trackd_start(trackd, sock, "/dev/null", NULL) : -1;
        for (int r = 0; r < reps && have_reporter; r++) {
            bh_reporter rep;
            bh_socket_options so = {.max_block_us = 1000};
            const char *target = sock;
            pthread_t st = 0;
            int lfd = -1;
            if (server < 0) { /* no bh-trackd: a discarding reader stands in */
                lfd = sink_listen(sink_path);
                pthread_create(&st, NULL, sink, (void *)(intptr_t)lfd);
                target = sink_path;
            }
            if (bh_socket_reporter_open(target, &so, &rep) != BH_OK) {
                have_reporter = 0;
                break;
            }
            rep_mean[r] = paced_reports(&rep, -1, nrep, 100000, &rep_p99[r]);
            bh_reporter_stats rs;
            bh_socket_reporter_stats(&rep, &rs);
            bh_socket_reporter_close(&rep);
            if (rs.dropped != 0)
                fprintf(stderr, "bh-bench: warning: %" PRIu64 " reports dropped\n", rs.dropped);
            if (lfd >= 0) {
                pthread_join(st, NULL);
                close(lfd);
            }
            /* Baseline: one blocking send per report to a reader. */
            lfd = sink_listen(sink_path);
            pthread_create(&st, NULL, sink, (void *)(intptr_t)lfd);
            int fd = bh_unix_connect(sink_path);
            send_mean[r] = paced_reports(NULL, fd, nrep, 100000, &send_p99[r]);
            close(fd);
            pthread_join(st, NULL);
            close(lfd);
        }
        bh_trackd_stop(server);
        unlink(sink_path);
        rmdir(dir);
    }

    if (json) {
        printf("{\"reps\":%d,\"ops\":%ld,\"threads\":%d,\"results\":[", reps, ops, threads);
        for (int c = 0; c < NCFG; c++)
            printf("%s{\"name\":\"%s\",\"bufhandle_ns\":%.2f,\"global_lock_ns\":%.2f,\"speedup\":%.2f}",
                   c ? "," : "", rows[c].name, rows[c].bh, rows[c].base, rows[c].base / rows[c].bh);
        printf("]");
        if (have_reporter)
            printf(",\"reporter\":{\"rate_per_s\":100000,\"server\":\"%s\",\"socket_reporter_mean_ns\":%.1f,"
                   "\"socket_reporter_p99_ns\":%.1f,\"blocking_send_mean_ns\":%.1f,\"blocking_send_p99_ns\":%"
                   ".1f}",
                   server > 0 ? "bh-trackd" : "discarding reader", median(rep_mean, reps),
                   median(rep_p99, reps), median(send_mean, reps), median(send_p99, reps));
        printf("}\n");
        return 0;
    }
    printf("bh-bench: medians of %d repetitions, %ld operation pairs per measurement, N = %d threads\n\n",
           reps, ops, threads);
    printf("%-50s %14s %14s %9s\n", "operation pair", "bufhandle ns", "global lock ns", "speedup");
    for (int c = 0; c < NCFG; c++)
        printf("%-50s %14.1f %14.1f %8.2fx\n", rows[c].name, rows[c].bh, rows[c].base,
               rows[c].base / rows[c].bh);
    if (have_reporter) {
        printf("\nreporting cost on the application thread at 100,000 reports/s (server: %s)\n",
               server > 0 ? "bh-trackd" : "discarding reader");
        printf("%-50s %14s %14s\n", "", "mean ns", "p99 ns");
        printf("%-50s %14.1f %14.1f\n", "socket reporter (ring + background sender)", median(rep_mean, reps),
               median(rep_p99, reps));
        printf("%-50s %14.1f %14.1f\n", "baseline: one blocking send per report", median(send_mean, reps),
               median(send_p99, reps));
    }
    return 0;
}
