/*
 * report_cost.c - reporting cost on the application thread (see report_cost.h).
 *
 * Owns: a discarding reader (the baseline's server, and the socket
 * reporter's when no bh-trackd is installed), the pacing loop, and the
 * baseline: one blocking send(2) of a 72-byte record per report.
 * Must never: measure anything but the time spent in the reporting thread.
 */
#define _GNU_SOURCE
#include "report_cost.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Paces n reports at rate per second; returns the mean ns spent in the
 * application thread per report (the callback, or the blocking send). */
static double paced_reports(bh_reporter *rep, int fd, long n, double rate, double *p99) {
    double *lat = malloc((size_t)n * sizeof(double));
    double period = 1e9 / rate, t_next = bench_now_ns(), sum = 0;
    uint8_t rec[72];
    memset(rec, 0, sizeof(rec));
    if (lat == NULL)
        bench_die("out of memory");
    for (long i = 0; i < n; i++) {
        while (bench_now_ns() < t_next) {
        }
        t_next += period;
        bh_event ev = {i % 2 ? BH_EVENT_FREE : BH_EVENT_ALLOC, 0, 0x1000 + (uint64_t)(i / 2) * 64, 64,
                       (uint64_t)i + 1};
        double t0 = bench_now_ns();
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
        lat[i] = bench_now_ns() - t0;
        sum += lat[i];
    }
    *p99 = bench_percentile(lat, (size_t)n, 0.99);
    free(lat);
    return sum / (double)n;
}

/* One socket-reporter run against target; -1 if it could not be opened. */
static int reporter_run(const char *target, long n, double rate, double *mean, double *p99) {
    bh_reporter rep;
    bh_socket_options so = {.max_block_us = 1000};
    if (bh_socket_reporter_open(target, &so, &rep) != BH_OK)
        return -1;
    *mean = paced_reports(&rep, -1, n, rate, p99);
    bh_reporter_stats rs;
    bh_socket_reporter_stats(&rep, &rs);
    bh_socket_reporter_close(&rep);
    if (rs.dropped != 0)
        fprintf(stderr, "bh-bench: warning: %" PRIu64 " reports dropped\n", rs.dropped);
    return 0;
}

/* One run against a discarding reader at path: the socket reporter
 * (for_reporter) or the blocking-send baseline. -1 if it could not be set up. */
static int with_sink(const char *path, int for_reporter, long n, double rate, double *mean, double *p99) {
    int lfd = sink_listen(path), rc = 0;
    pthread_t st;
    if (lfd < 0)
        return -1;
    pthread_create(&st, NULL, sink, (void *)(intptr_t)lfd);
    if (for_reporter) {
        rc = reporter_run(path, n, rate, mean, p99);
        if (rc != 0) { /* nobody connected: wake the reader's accept */
            int fd = bh_unix_connect(path);
            if (fd >= 0)
                close(fd);
        }
    } else {
        int fd = bh_unix_connect(path);
        *mean = paced_reports(NULL, fd, n, rate, p99);
        close(fd);
    }
    pthread_join(st, NULL);
    close(lfd);
    return rc;
}

int report_cost_measure(const char *trackd, int reps, long n, double rate, report_cost *out) {
    char dir[] = "/tmp/bh-bench-XXXXXX", sock[64], sink_path[64];
    double rm[99], rp[99], sm[99], sp[99];
    int ok = mkdtemp(dir) != NULL;
    if (!ok)
        return -1;
    snprintf(sock, sizeof(sock), "%s/trackd.sock", dir);
    snprintf(sink_path, sizeof(sink_path), "%s/sink.sock", dir);
    pid_t server = trackd != NULL ? bh_trackd_start(trackd, sock, "/dev/null", NULL) : -1;
    for (int r = 0; r < reps && ok; r++) {
        if (server > 0)
            ok = reporter_run(sock, n, rate, &rm[r], &rp[r]) == 0;
        else
            ok = with_sink(sink_path, 1, n, rate, &rm[r], &rp[r]) == 0;
        ok = ok && with_sink(sink_path, 0, n, rate, &sm[r], &sp[r]) == 0;
    }
    bh_trackd_stop(server);
    unlink(sink_path);
    rmdir(dir);
    if (!ok)
        return -1;
    out->server = server > 0 ? "bh-trackd" : "discarding reader";
    out->reporter_mean_ns = bench_median(rm, reps);
    out->reporter_p99_ns = bench_median(rp, reps);
    out->send_mean_ns = bench_median(sm, reps);
    out->send_p99_ns = bench_median(sp, reps);
    return 0;
}
