/*
 * test_model_stress.c - randomized operations on several threads, each
 * checked exactly against its own reference model.
 *
 * Every thread drives a model (tests/support/model.c) that owns its own
 * devices of ONE shared registry: the threads contend on the registry's
 * shards, slab, counters and sequence numbers, while each thread's statuses,
 * handles, allocator calls and reports stay exactly predictable.
 *
 * usage: test_model_stress [total_ops [threads]]   (defaults: 10000000, 2)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/checker.h"
#include "support/model.h"
#include "xorshift.h"

static long total_ops = 10000000;
static int nthreads = 2;

typedef struct worker {
    bh_registry *reg;
    model *m;
    long ops;
    uint64_t rng;
    int failed;
} worker;

static void *run(void *arg) {
    worker *w = arg;
    for (long i = 0; i < w->ops; i++) {
        uint64_t r = bh__xorshift64s(&w->rng);
        /* About as many releases as references taken, so allocations are
         * born, aliased and freed all the time (and registers go stale);
         * forced allocator results stay rare. */
        /* 0x80 adopt, 0x81 lookup_containing, 0x82/0x83 wide intern/adopt. */
        static const uint8_t codes[20] = {0, 0, 0x80, 1, 1, 2, 3,    4,    4,    4,
                                          4, 4, 4,    5, 6, 7, 0x81, 0x82, 0x83, 4};
        uint8_t code = codes[(r >> 8) % 20];
        if (code == 6 && (r >> 40) % 8 != 0)
            code = 4;
        if (model_step(w->m, w->reg, code, (uint8_t)(r >> 16), (uint8_t)(r >> 24)) != 0) {
            w->failed = 1;
            return NULL;
        }
    }
    if (model_finish(w->m, w->reg) != 0)
        w->failed = 1;
    return NULL;
}

static void threads_on_one_registry_each_match_their_model_exactly(void **state) {
    (void)state;
    model **models = calloc((size_t)nthreads, sizeof(model *));
    for (int t = 0; t < nthreads; t++) {
        models[t] = model_new((uint32_t)t * MODEL_DEVS);
        assert_non_null(models[t]);
    }
    model_route route = {models, (size_t)nthreads};
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = model_route_allocator(&route);
    cfg.reporter = model_route_reporter(&route);
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);

    worker *w = calloc((size_t)nthreads, sizeof(worker));
    pthread_t *tid = calloc((size_t)nthreads, sizeof(pthread_t));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < nthreads; t++) {
        w[t] = (worker){reg, models[t], total_ops / nthreads, 0x9e3779b97f4a7c15ull * (uint64_t)(t + 7), 0};
        assert_int_equal(pthread_create(&tid[t], NULL, run, &w[t]), 0);
    }
    for (int t = 0; t < nthreads; t++)
        pthread_join(tid[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    uint64_t done = 0;
    for (int t = 0; t < nthreads; t++) {
        if (w[t].failed)
            fail_msg("thread %d: %s", t, model_error(models[t]));
        done += model_ops(models[t]);
    }
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_int_equal(st.live_handles, 0);
    print_message(
        "model stress: %llu operations on %d threads in %.2f s (%.2f Mops/s); %llu allocs, %llu interns, "
        "%llu frees, %llu conflicts, %llu stale\n",
        (unsigned long long)done, nthreads, dt, (double)done / dt / 1e6, (unsigned long long)st.allocs,
        (unsigned long long)(st.interns_new + st.interns_alias), (unsigned long long)st.frees,
        (unsigned long long)st.conflicts, (unsigned long long)st.stale_ops);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    for (int t = 0; t < nthreads; t++)
        model_free(models[t]);
    free(models);
    free(w);
    free(tid);
}

int main(int argc, char **argv) {
    if (stress_args(argc, argv, "test_model_stress", &total_ops, &nthreads) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_on_one_registry_each_match_their_model_exactly),
    };
    return cmocka_run_group_tests_name("model_stress", tests, NULL, NULL);
}
