/*
 * test_lock_order.c - helgrind sees the futex-word lock of the table shards
 * and the range stripes (src/core/range_lock.h) as a lock: a stripe lock and
 * a shard's lock taken out of the documented order (a shard, then stripes)
 * is its "lock order violated", naming those two locks; the library's own
 * order is not.
 *
 *   test_lock_order VALGRIND SUPP   (the check: runs itself under helgrind)
 *   test_lock_order inverted|ordered   (the program helgrind runs)
 *
 * inverted: bh_intern makes a block (its shard's lock, then its stripe's),
 * then a second thread takes that stripe's lock and, under it, every
 * shard's lock: the order reversed, one thread after the other, so it
 * cannot deadlock, and helgrind, which checks orders rather than waits for
 * a deadlock, must say so. ordered: the same block's life and lookups in
 * two threads at once, in the library's order only: no error at all.
 * White-box: the test takes the library's locks itself.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "core/internal.h"
#include "support/run_output.h"

#define DOMAIN BH_DOMAIN(1, BH_MEM_DRAM)
#define ADDRESS 0x40000000ull

static bh_registry *make(void) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg = NULL;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        exit(3);
    return reg;
}

static bh_registry *reg;

/* The order reversed: the block's stripe, then (under it) every shard. */
static void *take_inverted(void *arg) {
    (void)arg;
    bh__stripe_lock *stripe = &bh__range_stripe_of(&reg->ranges, DOMAIN, ADDRESS)->lock;
    bh__stripe_lock_take(stripe);
    for (unsigned i = 0; i < BH__SHARDS; i++) {
        bh__stripe_lock_take(&reg->shards[i].lock);
        bh__stripe_lock_give(&reg->shards[i].lock);
    }
    bh__stripe_lock_give(stripe);
    return NULL;
}

/* The library's order: births, lookups (containing: the stripes alone) and
 * deaths of one range and of its neighbours. */
static void *churn(void *arg) {
    uint64_t base = ADDRESS + (uintptr_t)arg * 0x1000;
    for (int i = 0; i < 200; i++) {
        bh_handle h, in;
        if (bh_intern(reg, DOMAIN, base, 0x1000, &h) != BH_OK)
            exit(4);
        if (bh_lookup_containing(reg, DOMAIN, base + 8, &in) != BH_OK)
            exit(5);
        if (bh_release(reg, in) != BH_OK || bh_release(reg, h) != BH_OK)
            exit(6);
    }
    return NULL;
}

static int run_program(const char *mode) {
    reg = make();
    pthread_t t[2];
    if (strcmp(mode, "inverted") == 0) {
        bh_handle h;
        if (bh_intern(reg, DOMAIN, ADDRESS, 0x1000, &h) != BH_OK || bh_release(reg, h) != BH_OK)
            return 4;
        if (pthread_create(&t[0], NULL, take_inverted, NULL) != 0 || pthread_join(t[0], NULL) != 0)
            return 5;
        uint64_t hash = bh__key_hash(DOMAIN, ADDRESS);
        fprintf(stderr, "shard lock %p, stripe lock %p\n", (void *)&reg->shards[bh__shard_of(hash)].lock,
                (void *)&bh__range_stripe_of(&reg->ranges, DOMAIN, ADDRESS)->lock);
    } else {
        for (uintptr_t i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, churn, (void *)i) != 0)
                return 5;
        for (int i = 0; i < 2; i++)
            if (pthread_join(t[i], NULL) != 0)
                return 5;
    }
    return bh_registry_destroy(reg) == BH_OK ? 0 : 6;
}

/* ======================== The check ======================== */

static const char *valgrind, *suppressions;

typedef struct run {
    int exit_code; /* -1: killed by a signal */
    char out[1 << 16];
} run;

/* This program in mode under helgrind; stderr (helgrind's and ours). */
static void under_helgrind(const char *mode, run *r) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "%s --tool=helgrind --error-exitcode=42 --num-callers=30 --suppressions=%s /proc/%d/exe %s 2>&1",
             valgrind, suppressions, (int)getpid(), mode);
    r->exit_code = run_output(cmd, r->out, sizeof(r->out));
    assert_true(r->exit_code != -2);
}

static void a_stripe_lock_taken_before_a_shard_lock_is_a_lock_order_violation(void **state) {
    (void)state;
    static run r;
    under_helgrind("inverted", &r);
    void *shard, *stripe;
    const char *ours = strstr(r.out, "shard lock ");
    if (ours == NULL || sscanf(ours, "shard lock %p, stripe lock %p", &shard, &stripe) != 2)
        fail_msg("the program did not finish:\n%s", r.out);
    /* helgrind: 'lock order "A before B" violated', A the lock taken first
     * before (the shard, by bh_intern), B the one held now (the stripe). */
    const char *v = strstr(r.out, "lock order \"");
    void *first, *then;
    if (v == NULL || sscanf(v, "lock order \"%p before %p\" violated", &first, &then) != 2)
        fail_msg("no lock order violation reported:\n%s", r.out);
    if (first != shard || then != stripe)
        fail_msg("the violation names %p before %p, not the shard %p before the stripe %p:\n%s", first, then,
                 shard, stripe, r.out);
    assert_int_equal(r.exit_code, 42);
    assert_null(strstr(v + 1, "lock order \"")); /* that one pair, once */
}

static void the_librarys_own_order_is_clean(void **state) {
    (void)state;
    static run r;
    under_helgrind("ordered", &r);
    if (r.exit_code != 0)
        fail_msg("helgrind exit %d:\n%s", r.exit_code, r.out);
}

int main(int argc, char **argv) {
    if (argc == 2)
        return run_program(argv[1]);
    if (argc != 3) {
        fprintf(stderr, "usage: %s VALGRIND SUPPRESSIONS | inverted | ordered\n", argv[0]);
        return 2;
    }
    valgrind = argv[1];
    suppressions = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_stripe_lock_taken_before_a_shard_lock_is_a_lock_order_violation),
        cmocka_unit_test(the_librarys_own_order_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
