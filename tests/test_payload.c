/*
 * test_payload.c - the orderings the library promises, checked on the
 * memory an application keeps beside each allocation.
 *
 *   test_payload [total_ops [threads]]
 *
 * Every allocation carries a plain (non-atomic) payload in host memory:
 * its creator writes it inside allocator.alloc (before the block exists),
 * every holder reads the creator's words and writes a word of its own (one
 * per thread, so holders never race each other), and allocator.free reads
 * all of it and clears it for the next owner. The only thing that orders
 * these plain accesses across threads is the library: the release that
 * publishes a new block (go_live) before a lock-free hit reads it, and the
 * acq_rel release CAS that hands every holder's writes to the thread that
 * frees. Under ThreadSanitizer (the tsan preset) a weakened ordering is a
 * reported race; natively the test checks that every holder saw its
 * creator's words and every free saw its holders'. Addresses come back
 * through the allocator's own mutex, as a real allocator's would.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/checker.h" /* stress_args */

#define ADDRESSES 16
#define MAX_THREADS 64
#define HELD 4 /* references a thread keeps at most */
#define SPACING 0x1000u

typedef struct payload {
    uint64_t creator;           /* written in allocator.alloc: thread + 1 */
    uint64_t stamp;             /* written in allocator.alloc: the address's incarnation, from 1 */
    uint64_t seen[MAX_THREADS]; /* holder t's word: written only by thread t while it holds a reference */
} payload;

static payload payloads[ADDRESSES];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* the allocator's own */
static unsigned pool[ADDRESSES], pool_n;                      /* under pool_lock */
static uint64_t incarnations[ADDRESSES];                      /* under pool_lock */
static __thread unsigned me;                                  /* this thread's number */
static long bad_frees;                                        /* under pool_lock */

static int pool_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)ctx, (void)device, (void)size;
    pthread_mutex_lock(&pool_lock);
    if (pool_n == 0) {
        pthread_mutex_unlock(&pool_lock);
        return -1;
    }
    unsigned i = pool[--pool_n];
    uint64_t stamp = ++incarnations[i];
    pthread_mutex_unlock(&pool_lock);
    /* The creator's plain writes: no lock, published by the library. */
    payloads[i].creator = me + 1;
    payloads[i].stamp = stamp;
    *address = SPACING * (uint64_t)(i + 1);
    return 0;
}

static void pool_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)size;
    unsigned i = (unsigned)(address / SPACING) - 1;
    payload *p = &payloads[i];
    /* The freeing thread reads every holder's word and the creator's, then
     * clears them: plain accesses, ordered only by the release CAS chain. */
    uint64_t sum = 0;
    for (unsigned t = 0; t < MAX_THREADS; t++) {
        sum += p->seen[t];
        p->seen[t] = 0;
    }
    int bad = p->creator == 0 || p->stamp == 0 || sum == 0;
    p->creator = 0;
    p->stamp = 0;
    pthread_mutex_lock(&pool_lock);
    bad_frees += bad;
    pool[pool_n++] = i;
    pthread_mutex_unlock(&pool_lock);
}

/* A reference this thread holds: the holder's read and write. */
static int hold(unsigned i) {
    payload *p = &payloads[i];
    int ok = p->creator != 0 && p->stamp != 0;
    p->seen[me]++;
    return ok;
}

typedef struct worker_arg {
    bh_registry *reg;
    unsigned number;
    long ops;
    long bad;
} worker_arg;

static uint64_t next_random(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void *worker(void *arg) {
    worker_arg *w = arg;
    me = w->number;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (w->number + 1);
    bh_handle held[HELD];
    unsigned n = 0;
    uint32_t dom = BH_DOMAIN(1, BH_MEM_DRAM);
    for (long k = 0; k < w->ops; k++) {
        uint64_t r = next_random(&rng);
        unsigned i = (unsigned)(r >> 8) % ADDRESSES;
        uint64_t address = SPACING * (uint64_t)(i + 1);
        bh_handle h;
        bh_status st;
        switch (r % 4) {
        case 0: /* create (the allocator chooses the address) */
            st = n < HELD ? bh_alloc_addr(w->reg, dom, 64, &h, &address) : BH_EALLOC;
            break;
        case 1: /* alias: the lock-free hit when the address is live */
            st = n < HELD ? bh_intern(w->reg, dom, address, 64, &h) : BH_EALLOC;
            break;
        case 2:
            st = n < HELD ? bh_lookup(w->reg, dom, address, &h) : BH_EALLOC;
            break;
        default:
            st = BH_EALLOC;
            if (n > 0) {
                if (bh_release(w->reg, held[--n]) != BH_OK)
                    w->bad++;
            }
            break;
        }
        if (st == BH_OK) {
            w->bad += !hold((unsigned)(address / SPACING) - 1);
            held[n++] = h;
        }
    }
    while (n > 0)
        if (bh_release(w->reg, held[--n]) != BH_OK)
            w->bad++;
    return NULL;
}

static long total_ops = 400000;
static int threads = 4;

static void holders_and_the_free_see_the_creators_payload_through_the_librarys_orderings(void **state) {
    (void)state;
    pool_n = 0;
    for (unsigned i = 0; i < ADDRESSES; i++)
        pool[pool_n++] = i;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){pool_alloc, pool_free, NULL};
    /* Strict: bh_intern only ever aliases, so every owner came from the pool. */
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_STRICT_INTERN;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    pthread_t t[MAX_THREADS];
    worker_arg w[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_arg){reg, (unsigned)i, total_ops / threads, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    long bad = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        bad += w[i].bad;
    }
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    printf("%ld ops on %d threads: %llu creations, %llu aliases, %llu lookup hits, %llu frees\n", total_ops,
           threads, (unsigned long long)st.allocs, (unsigned long long)st.interns_alias,
           (unsigned long long)st.lookups_hit, (unsigned long long)st.frees);
    assert_int_equal(bad, 0);
    assert_int_equal(bad_frees, 0);
    assert_int_equal(st.live_handles, 0);
    assert_int_equal(st.frees, st.allocs);
    assert_true(st.interns_alias > 0 && st.lookups_hit > 0); /* the lock-free hits were exercised */
    assert_int_equal(pool_n, ADDRESSES);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(int argc, char **argv) {
    if (stress_args(argc, argv, "test_payload", &total_ops, &threads) != 0)
        return 2;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(holders_and_the_free_see_the_creators_payload_through_the_librarys_orderings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
