/*
 * test_stress.c - many threads, few addresses, every operation mixed.
 *
 * Threads allocate, look up, intern aliases, retain and release over a key set
 * small enough that aliases collide constantly and freed addresses come
 * straight back (LIFO). The checker fails the test on any free of something
 * not allocated, second free, FREE without its ALLOC, ALLOC of a live address,
 * or anything left at the end.
 *
 * usage: test_stress [total_ops [threads]]   (defaults: 2000000 ops, 4 threads)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <pthread.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/checker.h"
#include "xorshift.h"

#define BASE 0x20000000ull
#define ALIGN 0x2000ull
#define POOL_DEVICES 2u /* devices 0 and 1: allocated by the allocator */
#define ADOPT_DEVICE 2u /* device 2: created by bh_intern, per-thread addresses */
#define SLOTS 64u       /* addresses per device */
#define PER_THREAD_ADOPT 8u
#define MAX_HELD 48

static long total_ops = 2000000;
static int nthreads = 4;

typedef struct worker {
    bh_registry *reg;
    int id;
    long ops;
    uint64_t rng;
    long unexpected; /* statuses the contract rules out here */
    bh_status first_unexpected;
    const char *where;
} worker;

static void unexpected(worker *w, const char *where, bh_status st) {
    if (w->unexpected++ == 0) {
        w->first_unexpected = st;
        w->where = where;
    }
}

static void *run(void *arg) {
    worker *w = arg;
    bh_handle held[MAX_HELD];
    int n = 0;
    for (long i = 0; i < w->ops; i++) {
        uint64_t r = bh__xorshift64s(&w->rng);
        unsigned op = (unsigned)(r % 100);
        if (n == MAX_HELD)
            op = 99; /* make room */
        bh_handle h;
        bh_status st;
        if (op < 15) { /* allocate */
            st = bh_alloc(w->reg, (uint32_t)((r >> 8) % POOL_DEVICES), 1 + (r >> 16) % ALIGN, &h);
            if (st == BH_OK)
                held[n++] = h;
            else if (st != BH_EALLOC) /* EALLOC: the device is full, fine */
                unexpected(w, "bh_alloc", st);
        } else if (op < 35) { /* look up any address of any device */
            uint32_t dev = (uint32_t)((r >> 8) % (POOL_DEVICES + 1));
            st = bh_lookup(w->reg, dev, BASE + ((r >> 16) % SLOTS) * ALIGN, &h);
            if (st == BH_OK)
                held[n++] = h;
            else if (st != BH_ENOTFOUND)
                unexpected(w, "bh_lookup", st);
        } else if (op < 50) { /* re-create a held buffer at its address: an alias */
            if (n == 0)
                continue;
            bh_handle src = held[(r >> 8) % (unsigned)n];
            bh_info info;
            st = bh_info_get(w->reg, src, &info);
            if (st != BH_OK) {
                unexpected(w, "bh_info_get", st);
                continue;
            }
            st = bh_intern(w->reg, info.device, info.address, 1 + (r >> 16) % info.size, &h);
            if (st != BH_OK || !bh_handle_eq(h, src))
                unexpected(w, "bh_intern alias", st);
            else
                held[n++] = h;
        } else if (op < 60) { /* intern one of this thread's own adopted addresses */
            uint64_t slot = (uint64_t)w->id * PER_THREAD_ADOPT + (r >> 8) % PER_THREAD_ADOPT;
            st = bh_intern(w->reg, ADOPT_DEVICE, BASE + slot * ALIGN, 256, &h);
            if (st == BH_OK)
                held[n++] = h;
            else if (st != BH_EBUSY) /* another thread may be freeing it right now */
                unexpected(w, "bh_intern new", st);
        } else if (op < 70) { /* retain */
            if (n == 0)
                continue;
            h = held[(r >> 8) % (unsigned)n];
            st = bh_retain(w->reg, h);
            if (st == BH_OK)
                held[n++] = h;
            else
                unexpected(w, "bh_retain", st);
        } else { /* release */
            if (n == 0)
                continue;
            unsigned k = (unsigned)((r >> 8) % (unsigned)n);
            st = bh_release(w->reg, held[k]);
            if (st != BH_OK)
                unexpected(w, "bh_release", st);
            held[k] = held[--n];
        }
    }
    while (n > 0) {
        bh_status st = bh_release(w->reg, held[--n]);
        if (st != BH_OK)
            unexpected(w, "final bh_release", st);
    }
    return NULL;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void threads_hammering_few_addresses_free_each_allocation_exactly_once(void **state) {
    (void)state;
    checker *chk = checker_new(ADOPT_DEVICE + 1, ADOPT_DEVICE, SLOTS, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_true(nthreads >= 1 && (unsigned)nthreads * PER_THREAD_ADOPT <= SLOTS);

    worker *w = calloc((size_t)nthreads, sizeof(*w));
    pthread_t *tid = calloc((size_t)nthreads, sizeof(*tid));
    double t0 = now_seconds();
    for (int i = 0; i < nthreads; i++) {
        w[i] = (worker){.reg = reg,
                        .id = i,
                        .ops = total_ops / nthreads,
                        .rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
        assert_int_equal(pthread_create(&tid[i], NULL, run, &w[i]), 0);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(tid[i], NULL);
    double dt = now_seconds() - t0;

    for (int i = 0; i < nthreads; i++) {
        if (w[i].unexpected)
            fail_msg("thread %d: %ld unexpected statuses, first %s from %s", i, w[i].unexpected,
                     bh_status_name(w[i].first_unexpected), w[i].where);
    }
    if (checker_errors(chk))
        fail_msg("%llu violations, first: %s", (unsigned long long)checker_errors(chk),
                 checker_first_error(chk));
    assert_int_equal(checker_leaks(chk), 0);
    assert_int_equal(checker_alloc_reports(chk), checker_free_reports(chk));

    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, 0);
    assert_int_equal(s.live_bytes, 0);
    assert_int_equal(s.frees, s.allocs + s.interns_new);
    assert_int_equal(s.conflicts, 0);
    assert_int_equal(s.frees, checker_free_calls(chk));
    print_message("stress: %ld ops on %d threads in %.3f s (%.2f Mops/s); %llu allocs, %llu interns "
                  "(%llu aliases), %llu lookups hit, %llu frees, %llu takeovers, %llu busy\n",
                  (total_ops / nthreads) * nthreads, nthreads, dt, (double)total_ops / dt / 1e6,
                  (unsigned long long)s.allocs, (unsigned long long)(s.interns_new + s.interns_alias),
                  (unsigned long long)s.interns_alias, (unsigned long long)s.lookups_hit,
                  (unsigned long long)s.frees, (unsigned long long)s.takeovers, (unsigned long long)s.busy);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    checker_free(chk);
    free(w);
    free(tid);
}

int main(int argc, char **argv) {
    if (stress_args(argc, argv, "test_stress", &total_ops, &nthreads) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_hammering_few_addresses_free_each_allocation_exactly_once),
    };
    return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
