/* checker.c - see checker.h. One mutex guards everything: it is a test tool. */
#include "checker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 256

struct checker {
    pthread_mutex_t lock;
    uint32_t devices, adopt_from, slots;
    uint64_t base, align;
    uint8_t *allocated; /* [device * slots + i]: handed out by the allocator */
    uint8_t *reported;  /* ALLOC reported, FREE not yet */
    uint64_t *last_seq; /* last seq reported for the address */
    uint32_t *stack;    /* per device: free slot indices, top at the end */
    uint32_t *depth;    /* per device: entries in stack */
    long fail_at;
    int forced;
    uint64_t forced_address;
    uint64_t errors, alloc_calls, free_calls, alloc_reports, free_reports;
    char first_error[256];
    checker_event events[MAX_EVENTS];
    size_t nevents;
};

static void fail(checker *c, const char *what, uint32_t device, uint64_t address) {
    if (c->errors++ == 0)
        snprintf(c->first_error, sizeof(c->first_error), "%s (device %u, address %llu)", what,
                 (unsigned)device, (unsigned long long)address);
}

/* Index of (device, address) in the state arrays, or -1 if out of range. */
static long index_of(const checker *c, uint32_t device, uint64_t address) {
    if (device >= c->devices || address < c->base || (address - c->base) % c->align != 0)
        return -1;
    uint64_t i = (address - c->base) / c->align;
    if (i >= c->slots)
        return -1;
    return (long)(device * c->slots + i);
}

checker *checker_new(uint32_t devices, uint32_t adopt_from, uint32_t slots, uint64_t base, uint64_t align) {
    checker *c = calloc(1, sizeof(*c));
    size_t n = (size_t)devices * slots;
    c->allocated = calloc(n, 1);
    c->reported = calloc(n, 1);
    c->last_seq = calloc(n, sizeof(uint64_t));
    c->stack = calloc(n, sizeof(uint32_t));
    c->depth = calloc(devices, sizeof(uint32_t));
    c->devices = devices;
    c->adopt_from = adopt_from;
    c->slots = slots;
    c->base = base;
    c->align = align;
    for (uint32_t d = 0; d < devices; d++) {
        /* Push the highest first so the first alloc returns base. */
        for (uint32_t i = slots; i-- > 0;)
            c->stack[d * slots + c->depth[d]++] = i;
    }
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void checker_free(checker *c) {
    pthread_mutex_destroy(&c->lock);
    free(c->allocated);
    free(c->reported);
    free(c->last_seq);
    free(c->stack);
    free(c->depth);
    free(c);
}

static int on_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    checker *c = ctx;
    (void)size;
    pthread_mutex_lock(&c->lock);
    c->alloc_calls++;
    int rc = 0;
    if (c->fail_at > 0 && --c->fail_at == 0) {
        rc = 1;
    } else if (c->forced) {
        c->forced = 0;
        *address = c->forced_address;
    } else if (device >= c->adopt_from || c->depth[device] == 0) {
        rc = 1; /* adopted devices are never allocated; a full device fails */
    } else {
        uint32_t i = c->stack[device * c->slots + --c->depth[device]];
        c->allocated[device * c->slots + i] = 1;
        *address = c->base + i * c->align;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static void on_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    checker *c = ctx;
    (void)size;
    pthread_mutex_lock(&c->lock);
    c->free_calls++;
    long k = index_of(c, device, address);
    if (k < 0) {
        fail(c, "free of an address never handed out", device, address);
    } else if (c->reported[k]) {
        fail(c, "free before the FREE report", device, address);
    } else if (device >= c->adopt_from) {
        /* Adopted: ownership was the ALLOC report; on_report cleared it. */
        if (!c->allocated[k])
            fail(c, "free of an adopted address that was not interned", device, address);
        c->allocated[k] = 0;
    } else if (!c->allocated[k]) {
        fail(c, "double free (or free of an address not allocated)", device, address);
    } else {
        c->allocated[k] = 0;
        c->stack[device * c->slots + c->depth[device]++] = (uint32_t)(k - (long)device * c->slots);
    }
    pthread_mutex_unlock(&c->lock);
}

static void on_report(void *ctx, const bh_event *ev) {
    checker *c = ctx;
    pthread_mutex_lock(&c->lock);
    if (c->nevents < MAX_EVENTS)
        c->events[c->nevents++] = (checker_event){ev->kind, ev->device, ev->address, ev->seq};
    long k = index_of(c, ev->device, ev->address);
    if (k < 0) {
        fail(c, "report for an address outside the device", ev->device, ev->address);
    } else {
        if (c->last_seq[k] >= ev->seq)
            fail(c, "seq not increasing for one address", ev->device, ev->address);
        c->last_seq[k] = ev->seq;
        if (ev->kind == BH_EVENT_ALLOC) {
            c->alloc_reports++;
            if (c->reported[k])
                fail(c, "ALLOC of an address already live", ev->device, ev->address);
            if (ev->device >= c->adopt_from)
                c->allocated[k] = 1;
            else if (!c->allocated[k])
                fail(c, "ALLOC reported for an address the allocator did not hand out", ev->device,
                     ev->address);
            c->reported[k] = 1;
        } else {
            c->free_reports++;
            if (!c->reported[k])
                fail(c, "FREE without its ALLOC (unknown buffer)", ev->device, ev->address);
            c->reported[k] = 0;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

bh_allocator checker_allocator(checker *c) { return (bh_allocator){on_alloc, on_free, c}; }
bh_reporter checker_reporter(checker *c) { return (bh_reporter){on_report, c}; }

bh_config checker_config(checker *c) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = checker_allocator(c);
    cfg.reporter = checker_reporter(c);
    cfg.flags = BH_CONFIG_NO_ENV;
    return cfg;
}

void checker_fail_alloc_at(checker *c, long k) {
    pthread_mutex_lock(&c->lock);
    c->fail_at = k;
    pthread_mutex_unlock(&c->lock);
}

void checker_force_next(checker *c, uint64_t address) {
    pthread_mutex_lock(&c->lock);
    c->forced = 1;
    c->forced_address = address;
    pthread_mutex_unlock(&c->lock);
}

uint64_t checker_errors(const checker *c) { return c->errors; }
const char *checker_first_error(const checker *c) { return c->first_error; }

uint64_t checker_leaks(const checker *c) {
    uint64_t n = 0;
    for (size_t k = 0; k < (size_t)c->devices * c->slots; k++)
        n += c->allocated[k] + c->reported[k];
    return n;
}

uint64_t checker_alloc_calls(const checker *c) { return c->alloc_calls; }
uint64_t checker_free_calls(const checker *c) { return c->free_calls; }
uint64_t checker_alloc_reports(const checker *c) { return c->alloc_reports; }
uint64_t checker_free_reports(const checker *c) { return c->free_reports; }

size_t checker_events(const checker *c, const checker_event **events) {
    *events = c->events;
    return c->nevents;
}

int checker_finish(checker *c, bh_registry *reg) {
    int ok = bh_registry_destroy(reg) == BH_OK && checker_errors(c) == 0 && checker_leaks(c) == 0;
    if (!ok && c->errors > 0)
        fprintf(stderr, "checker: %s\n", c->first_error);
    checker_free(c);
    return ok ? 0 : -1;
}

int stress_args(int argc, char **argv, const char *name, long *total_ops, int *threads) {
    if (argc > 1)
        *total_ops = atol(argv[1]);
    if (argc > 2)
        *threads = atoi(argv[2]);
    if (*total_ops < 1 || *threads < 1 || *threads > 64) {
        fprintf(stderr, "usage: %s [total_ops [threads 1..64]]\n", name);
        return -1;
    }
    return 0;
}
