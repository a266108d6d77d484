/*
 * load.c - tracking_load: a program that counts its own truth, for the
 * tracking stage (tests/test_tracking.c, mode "load").
 *
 * usage: tracking_load EVENTS RATE LEAKS
 *   EVENTS  ALLOC+FREE events to make in all (half of each), over 4 threads
 *   RATE    events per second to aim at, in all (0: as fast as it can)
 *   LEAKS   allocations made first and never freed (planted leaks)
 *
 * Tracking comes from the environment, as a user's program gets it
 * (BH_TRACK_SOCKET: the default socket reporter, default settings). Each
 * thread allocates and frees on a device of its own through the registry
 * (holding its last 256 allocations, so some are live across a resync);
 * the allocator (here, per device) counts what really happened. Nothing is
 * freed twice. At the end it prints one JSON line: its counts, the
 * reporter's drop count, and how long the planted leaks have been live; then
 * it exits (exit() flushes the reporter) with the leaks still held.
 * If TRACKING_LOAD_PROGRESS_FD is set, one byte is written to that
 * descriptor when a quarter of the events are made (a test stops the server
 * then). Work is bounded by EVENTS, not by time.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bufhandle/bufhandle.h"

#define THREADS 4
#define LEAK_DEVICE THREADS /* the leaks' own device */
#define STACK 1024          /* freed addresses a device hands out again */
#define PACE 256            /* events between two looks at the clock */

/* One device's addresses: used by one thread only, so no lock. */
typedef struct device {
    uint64_t next, stack[STACK];
    unsigned depth;
    uint64_t allocs, frees;
    char pad[64];
} device;

static device devices[THREADS + 1];
static uint64_t per_thread, rate_per_thread;
static int progress_fd = -1;
static uint64_t quarter;
static bh_registry *reg;

static int dev_alloc(void *ctx, uint32_t domain, uint64_t size, uint64_t *address) {
    (void)ctx;
    device *d = &devices[BH_DOMAIN_DEVICE(domain)];
    *address = d->depth > 0 ? d->stack[--d->depth] : (d->next += size);
    d->allocs++;
    return 0;
}

static void dev_free(void *ctx, uint32_t domain, uint64_t address, uint64_t size) {
    (void)ctx;
    (void)size;
    device *d = &devices[BH_DOMAIN_DEVICE(domain)];
    if (d->depth < STACK)
        d->stack[d->depth++] = address;
    d->frees++;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Each thread holds its last WINDOW allocations and frees the oldest as it
 * makes a new one, as a runtime's buffers come and go: allocations are live
 * across a resync, and freed addresses come back (the device's stack). */
#define WINDOW 256

static void *worker(void *arg) {
    uint32_t id = (uint32_t)(uintptr_t)arg;
    devices[id].next = ((uint64_t)id + 1) << 36;
    uint32_t domain = BH_DOMAIN(id, 0);
    bh_handle held[WINDOW];
    double start = now_s();
    for (uint64_t i = 0; i < per_thread + WINDOW; i++) {
        if (i >= WINDOW && bh_release(reg, held[i % WINDOW]) != BH_OK)
            exit(3);
        if (i < per_thread && bh_alloc(reg, domain, 4096, &held[i % WINDOW]) != BH_OK)
            exit(3);
        if (id == 0 && i + 1 == quarter && progress_fd >= 0 && write(progress_fd, "q", 1) != 1)
            exit(4);
        if (rate_per_thread > 0 && i % PACE == PACE - 1) { /* ahead of the pace: wait for it */
            double due = start + (double)(2 * (i + 1)) / (double)rate_per_thread, late = due - now_s();
            if (late > 0)
                nanosleep(&(struct timespec){(time_t)late, (long)((late - (double)(time_t)late) * 1e9)},
                          NULL);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: tracking_load EVENTS RATE LEAKS\n");
        return 2;
    }
    uint64_t events = strtoull(argv[1], NULL, 10), rate = strtoull(argv[2], NULL, 10);
    uint64_t leaks = strtoull(argv[3], NULL, 10);
    per_thread = events / 2 / THREADS;
    rate_per_thread = rate / THREADS;
    quarter = per_thread / 4;
    const char *fd = getenv("TRACKING_LOAD_PROGRESS_FD");
    progress_fd = fd != NULL ? atoi(fd) : -1;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator.alloc = dev_alloc;
    cfg.allocator.free = dev_free;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        return 3;
    devices[LEAK_DEVICE].next = (uint64_t)(LEAK_DEVICE + 1) << 36;
    for (uint64_t i = 0; i < leaks; i++) {
        bh_handle h;
        if (bh_alloc(reg, BH_DOMAIN(LEAK_DEVICE, 0), 8192, &h) != BH_OK)
            return 3;
    }
    double planted = now_s();
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
            return 3;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    double took = now_s() - planted;
    uint64_t allocs = 0, frees = 0;
    for (int i = 0; i <= THREADS; i++) {
        allocs += devices[i].allocs;
        frees += devices[i].frees;
    }
    bh_stats st;
    bh_stats_get(reg, &st);
    printf("{\"allocs\":%llu,\"frees\":%llu,\"unknown_frees\":0,\"duplicate_allocs\":0,\"leaks\":%llu,"
           "\"reports\":%llu,\"dropped\":%llu,\"resyncs\":%llu,\"leak_age_ms\":%llu,\"rate\":%.0f}\n",
           (unsigned long long)allocs, (unsigned long long)frees, (unsigned long long)(allocs - frees),
           (unsigned long long)st.reports, (unsigned long long)st.reports_dropped,
           (unsigned long long)st.resyncs, (unsigned long long)(took * 1000.0),
           (double)(allocs + frees - leaks) / took);
    fflush(stdout);
    /* The registry is not destroyed: the leaks stay live, and exit() flushes
     * the reporter so the server sees every event and then the process gone. */
    return 0;
}
