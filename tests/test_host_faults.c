/*
 * test_host_faults.c - white-box fault injection: every host allocation of
 * a registry's life (creation, slab chunks, table growth) failing in turn is
 * a clean BH_ENOMEM, the allocator failing on every k-th call a clean
 * BH_EALLOC, and the socket reporter's host allocations failing in turn
 * never crash or leak. After each failure nothing has leaked, nothing was
 * freed or reported twice, and the registry goes on.
 *
 * Must never depend on the machine's memory running out (failures are
 * injected through the host memory hook and the checking allocator) or on a
 * server (the socket reporter's has none). The range index's node failures:
 * test_range_nodes.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"
#include "support/checker.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

/* One scenario touching every path that allocates host memory: registry
 * creation, slab chunks for new blocks, shard growth. */
static bh_status scenario(checker *chk, int *stage) {
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    *stage = 0;
    bh_status st = bh_registry_create(&cfg, &reg);
    if (st != BH_OK)
        return st;
    enum { N = 200 };
    bh_handle h[N];
    int n = 0;
    for (; n < N; n++) {
        *stage = 1;
        st = n % 2 ? bh_alloc(reg, 0, 64, &h[n]) : bh_intern(reg, 1, BASE + (uint64_t)n * ALIGN, 64, &h[n]);
        if (st != BH_OK)
            break;
    }
    /* Whatever failed, the registry is consistent: release all, destroy. */
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, (uint64_t)n);
    for (int i = 0; i < n; i++)
        assert_int_equal(bh_release(reg, h[i]), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    return st;
}

static void every_host_allocation_failure_is_a_clean_enomem(void **state) {
    (void)state;
    /* Count the scenario's host allocations in a clean run, then fail each. */
    checker *chk = checker_new(2, 1, 256, BASE, ALIGN);
    int stage;
    long before = bh__hostmem_attempts();
    assert_int_equal(scenario(chk, &stage), BH_OK);
    long total = bh__hostmem_attempts() - before;
    checker_free(chk);
    assert_true(total >= BH__SHARDS + 2); /* registry, shard tables, slab chunks */

    int enomem = 0;
    for (long k = 1; k <= total; k++) {
        chk = checker_new(2, 1, 256, BASE, ALIGN);
        bh__hostmem_fail_at(k);
        bh_status st = scenario(chk, &stage);
        bh__hostmem_fail_at(0);
        /* A failed table growth is absorbed (longer chains); all else is ENOMEM. */
        assert_true(st == BH_OK || st == BH_ENOMEM);
        enomem += st == BH_ENOMEM;
        assert_int_equal(checker_errors(chk), 0);
        assert_int_equal(checker_leaks(chk), 0); /* ENOMEM in bh_alloc gave the address back */
        checker_free(chk);
    }
    assert_true(enomem >= BH__SHARDS + 2);
}

/* Allocator failing on the k-th call, for every k across a scenario: each
 * bh_alloc answers BH_EALLOC cleanly, nothing is reported for it, and the
 * registry goes on. */
static void every_allocator_failure_is_a_clean_ealloc(void **state) {
    (void)state;
    enum { CALLS = 40 };
    for (long k = 1; k <= CALLS; k++) {
        checker *chk = checker_new(2, 2, 64, BASE, ALIGN);
        bh_config cfg = checker_config(chk);
        bh_registry *reg;
        assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
        checker_fail_alloc_at(chk, k);
        bh_handle h[CALLS];
        int n = 0, failed = 0;
        for (int i = 0; i < CALLS; i++) {
            bh_status st = bh_alloc(reg, (uint32_t)(i % 2), 64, &h[n]);
            if (st == BH_OK)
                n++;
            else {
                assert_int_equal(st, BH_EALLOC);
                failed++;
            }
            if (i % 3 == 2 && n > 0) /* free some on the way: reuse after a failure */
                assert_int_equal(bh_release(reg, h[--n]), BH_OK);
        }
        assert_int_equal(failed, 1);
        assert_int_equal(checker_alloc_reports(chk), (uint64_t)(CALLS - 1));
        while (n > 0)
            assert_int_equal(bh_release(reg, h[--n]), BH_OK);
        assert_int_equal(checker_finish(chk, reg), 0);
    }
}

/* The socket reporter's host allocations failing in turn: open answers
 * BH_ENOMEM or works; reporting and closing never crash or leak. */
static void socket_reporter_survives_every_host_allocation_failure(void **state) {
    (void)state;
    for (long k = 1; k <= 12; k++) {
        bh_reporter rep;
        bh_socket_options opt = {.queue_capacity = 64, .flush_timeout_ms = 10};
        bh__hostmem_fail_at(k);
        bh_status st = bh_socket_reporter_open("/tmp/bh-no-such-server.sock", &opt, &rep);
        assert_true(st == BH_OK || st == BH_ENOMEM);
        if (st == BH_OK) {
            for (uint64_t i = 1; i <= 200; i++) { /* the shadow set grows and may fail */
                bh_event ev = {i % 3 ? BH_EVENT_ALLOC : BH_EVENT_FREE, 0, 0x1000 * (i / 3 + 1), 64, i};
                rep.report(rep.ctx, &ev);
            }
            bh_reporter_stats rs;
            assert_int_equal(bh_socket_reporter_stats(&rep, &rs), BH_OK);
            assert_int_equal(rs.reported, 200);
            bh_socket_reporter_close(&rep);
        }
        bh__hostmem_fail_at(0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_host_allocation_failure_is_a_clean_enomem),
        cmocka_unit_test(every_allocator_failure_is_a_clean_ealloc),
        cmocka_unit_test(socket_reporter_survives_every_host_allocation_failure),
    };
    return cmocka_run_group_tests_name("host_faults", tests, NULL, NULL);
}
