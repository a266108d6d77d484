/*
 * test_regression.c - the bug that started it all, pinned down.
 *
 * In the field, a buffer at device 4, address 695055872 had three aliases
 * (the allocation, a buffer re-created at its address, a view); each freed and
 * reported on its own, and the tracker answered "unknown buffer". Here the
 * three aliases are released in all 6 orders: the allocator free and the FREE
 * report must happen exactly once each time, FREE before the address's next
 * ALLOC, and every old handle must be stale afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/checker.h"

#define DEVICE 4u
#define ADDRESS 695055872ull
#define SIZE (1ull << 20)

typedef struct fixture {
    checker *chk;
    bh_registry *reg;
} fixture;

static int setup(void **state) {
    fixture *f = test_malloc(sizeof(*f));
    /* Devices 0..7 allocated, addresses ADDRESS + i * 1 MiB, four per device. */
    f->chk = checker_new(8, 8, 4, ADDRESS, SIZE);
    bh_config cfg = checker_config(f->chk);
    assert_int_equal(bh_registry_create(&cfg, &f->reg), BH_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    assert_int_equal(checker_finish(f->chk, f->reg), 0);
    test_free(f);
    return 0;
}

/* Makes aliases A (allocation), B (re-created at its address), C (a view of
 * its first page). All three name one block. */
static void make_three_aliases(fixture *f, bh_handle alias[3]) {
    assert_int_equal(bh_alloc(f->reg, DEVICE, SIZE, &alias[0]), BH_OK);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, alias[0], &info), BH_OK);
    assert_int_equal(info.address, ADDRESS);
    assert_int_equal(bh_intern(f->reg, DEVICE, ADDRESS, SIZE, &alias[1]), BH_OK);
    assert_int_equal(bh_intern(f->reg, DEVICE, ADDRESS, 4096, &alias[2]), BH_OK);
    assert_true(bh_handle_eq(alias[0], alias[1]));
    assert_true(bh_handle_eq(alias[0], alias[2]));
    assert_int_equal(bh_info_get(f->reg, alias[0], &info), BH_OK);
    assert_int_equal(info.refs, 3);
}

static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};

static void release_in_order(fixture *f, const bh_handle alias[3], const int order[3]) {
    for (int i = 0; i < 3; i++) {
        uint64_t frees_before = checker_free_calls(f->chk);
        assert_int_equal(bh_release(f->reg, alias[order[i]]), BH_OK);
        /* Nothing is freed until the last alias goes. */
        assert_int_equal(checker_free_calls(f->chk), frees_before + (i == 2 ? 1 : 0));
    }
}

static void three_aliases_released_in_every_order_free_once(void **state) {
    fixture *f = *state;
    for (int o = 0; o < 6; o++) {
        uint64_t frees = checker_free_calls(f->chk), free_reports = checker_free_reports(f->chk);
        bh_handle alias[3];
        make_three_aliases(f, alias);
        release_in_order(f, alias, orders[o]);
        assert_int_equal(checker_free_calls(f->chk) - frees, 1);
        assert_int_equal(checker_free_reports(f->chk) - free_reports, 1);
        /* Every alias is stale now: a fourth release changes nothing. */
        for (int i = 0; i < 3; i++)
            assert_int_equal(bh_release(f->reg, alias[i]), BH_ESTALE);
        assert_int_equal(checker_free_calls(f->chk) - frees, 1);
    }
    assert_int_equal(checker_errors(f->chk), 0);
}

static void reused_address_gets_a_new_block_and_free_precedes_alloc(void **state) {
    fixture *f = *state;
    bh_handle alias[3];
    make_three_aliases(f, alias);
    release_in_order(f, alias, orders[3]);

    /* The LIFO allocator hands the same address straight back. */
    bh_handle fresh;
    assert_int_equal(bh_alloc(f->reg, DEVICE, SIZE, &fresh), BH_OK);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, fresh, &info), BH_OK);
    assert_int_equal(info.address, ADDRESS);
    assert_int_equal(info.refs, 1);
    assert_false(bh_handle_eq(fresh, alias[0]));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bh_retain(f->reg, alias[i]), BH_ESTALE);
        assert_int_equal(bh_info_get(f->reg, alias[i], &info), BH_ESTALE);
    }

    /* Events: ALLOC(1), FREE(2), ALLOC(3), in the order received. */
    const checker_event *ev;
    size_t n = checker_events(f->chk, &ev);
    assert_int_equal(n, 3);
    assert_int_equal(ev[0].kind, BH_EVENT_ALLOC);
    assert_int_equal(ev[1].kind, BH_EVENT_FREE);
    assert_int_equal(ev[2].kind, BH_EVENT_ALLOC);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ev[i].device, DEVICE);
        assert_int_equal(ev[i].address, ADDRESS);
    }
    assert_true(ev[0].seq < ev[1].seq && ev[1].seq < ev[2].seq);
    assert_int_equal(bh_release(f->reg, fresh), BH_OK);
}

static void two_memory_domains_at_one_address_stay_independent(void **state) {
    fixture *f = *state;
    const uint32_t dram = 2, l1 = 3;
    bh_handle d, l;
    assert_int_equal(bh_alloc(f->reg, dram, SIZE, &d), BH_OK);
    assert_int_equal(bh_alloc(f->reg, l1, 4096, &l), BH_OK);
    bh_info di, li;
    assert_int_equal(bh_info_get(f->reg, d, &di), BH_OK);
    assert_int_equal(bh_info_get(f->reg, l, &li), BH_OK);
    assert_int_equal(di.address, li.address); /* same numeric address */
    assert_false(bh_handle_eq(d, l));

    /* An alias in one domain does not touch the other. */
    bh_handle alias;
    assert_int_equal(bh_intern(f->reg, l1, li.address, 4096, &alias), BH_OK);
    assert_true(bh_handle_eq(alias, l));
    assert_int_equal(bh_intern(f->reg, l1, li.address, SIZE, &alias), BH_ERANGE);

    uint64_t frees = checker_free_calls(f->chk);
    assert_int_equal(bh_release(f->reg, d), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), frees + 1);
    assert_int_equal(bh_lookup(f->reg, dram, di.address, &alias), BH_ENOTFOUND);
    assert_int_equal(bh_lookup(f->reg, l1, li.address, &alias), BH_OK);
    assert_int_equal(bh_info_get(f->reg, l, &li), BH_OK);
    assert_int_equal(li.refs, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bh_release(f->reg, l), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), frees + 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(three_aliases_released_in_every_order_free_once, setup, teardown),
        cmocka_unit_test_setup_teardown(reused_address_gets_a_new_block_and_free_precedes_alloc, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(two_memory_domains_at_one_address_stay_independent, setup, teardown),
    };
    return cmocka_run_group_tests_name("regression", tests, NULL, NULL);
}
