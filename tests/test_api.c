/*
 * test_api.c - the registry, bh_alloc, bh_alloc_ex and bh_adopt: every status they can return.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "support/api_fixture.h"

/* ------------------------------------------------------------ registry */

static void create_rejects_null_out_and_unknown_flags(void **state) {
    (void)state;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(NULL, NULL), BH_EINVAL);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = 0x80000000u;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_EINVAL);
    assert_null(reg);
}

static void create_with_null_config_gives_a_registry_without_allocator(void **state) {
    (void)state;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(NULL, &reg), BH_OK);
    bh_handle h;
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_EINVAL); /* no allocator */
    /* Interning works: nothing to free, nothing to report. */
    assert_int_equal(bh_intern(reg, 0, 0x1000, 64, &h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_EBUSY);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

static void destroy_rejects_null_and_is_busy_while_handles_live(void **state) {
    fixture *f = *state;
    assert_int_equal(bh_registry_destroy(NULL), BH_EINVAL);
    bh_handle h;
    assert_int_equal(bh_alloc(f->reg, 0, 100, &h), BH_OK);
    assert_int_equal(bh_registry_destroy(f->reg), BH_EBUSY);
    /* Still usable after EBUSY. */
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, h, &info), BH_OK);
    assert_int_equal(bh_stats_get(f->reg, &(bh_stats){0}), BH_OK);
    assert_int_equal(stats_of(f->reg).live_handles, 1);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
}

/* ------------------------------------------------------------ bh_alloc */

static void alloc_rejects_bad_arguments(void **state) {
    fixture *f = *state;
    bh_handle h;
    assert_int_equal(bh_alloc(NULL, 0, 64, &h), BH_EINVAL);
    assert_int_equal(bh_alloc(f->reg, 0, 64, NULL), BH_EINVAL);
    assert_int_equal(bh_alloc(f->reg, 0, 0, &h), BH_EINVAL);
    assert_int_equal(checker_alloc_calls(f->chk), 0);
}

static void alloc_reports_alloc_and_returns_one_reference(void **state) {
    fixture *f = *state;
    bh_handle h;
    assert_int_equal(bh_alloc(f->reg, 1, 300, &h), BH_OK);
    assert_false(bh_handle_is_null(h));
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, h, &info), BH_OK);
    assert_int_equal(info.device, 1);
    assert_int_equal(info.address, BASE);
    assert_int_equal(info.size, 300);
    assert_int_equal(info.refs, 1);
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.allocs, 1);
    assert_int_equal(s.live_handles, 1);
    assert_int_equal(s.live_bytes, 300);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
    s = stats_of(f->reg);
    assert_int_equal(s.live_bytes, 0);
    assert_int_equal(s.peak_live_bytes, 300);
    assert_int_equal(s.frees, 1);
}

static void alloc_failure_is_ealloc_and_reports_nothing(void **state) {
    fixture *f = *state;
    checker_fail_alloc_at(f->chk, 1);
    bh_handle h = BH_HANDLE_NULL;
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_EALLOC);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_alloc_reports(f->chk), 0);
    assert_int_equal(stats_of(f->reg).live_handles, 0);
}

static void alloc_of_a_live_address_is_eexist_and_frees_nothing(void **state) {
    fixture *f = *state;
    bh_handle live, h = BH_HANDLE_NULL;
    assert_int_equal(bh_alloc(f->reg, 0, 64, &live), BH_OK);
    checker_force_next(f->chk, BASE); /* the buggy allocator repeats itself */
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_EEXIST);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_free_calls(f->chk), 0);
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    assert_int_equal(stats_of(f->reg).conflicts, 1);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, live, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(f->reg, live), BH_OK);
}

/* A buggy allocator answering a range that runs past 2^64: BH_EALLOC, and the
 * address is not trusted with a free. */
static void alloc_of_a_range_past_2_64_is_ealloc_and_frees_nothing(void **state) {
    fixture *f = *state;
    bh_handle h = BH_HANDLE_NULL;
    checker_force_next(f->chk, UINT64_MAX - 63);
    assert_int_equal(bh_alloc(f->reg, 0, 128, &h), BH_EALLOC);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_free_calls(f->chk), 0);
    assert_int_equal(checker_alloc_reports(f->chk), 0);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.live_bytes, 0);
    assert_int_equal(s.live_handles, 0);
}

/* ------------------------------------------------------------ bh_alloc_ex */

typedef struct ex_alloc {
    void *last_arg;
    uint32_t last_device;
    uint64_t next;
    int calls, frees;
} ex_alloc;

static int ex_alloc_cb(void *ctx, uint32_t device, uint64_t size, void *arg, uint64_t *address) {
    ex_alloc *a = ctx;
    a->calls++;
    a->last_arg = arg;
    a->last_device = device;
    *address = a->next;
    a->next += size;
    return 0;
}

static void ex_free_cb(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)device, (void)address, (void)size;
    ((ex_alloc *)ctx)->frees++;
}

static void alloc_ex_hands_its_argument_to_the_allocator(void **state) {
    (void)state;
    ex_alloc a = {NULL, 0, 0x1000, 0, 0};
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator.free = ex_free_cb;
    cfg.allocator.ctx = &a;
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_ALLOC_EX;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_EINVAL); /* the flag without the function */
    cfg.alloc_ex = ex_alloc_cb;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);

    struct page_layout {
        uint32_t page_size, interleaved;
    } layout = {2048, 1};
    bh_handle h1, h2;
    assert_int_equal(bh_alloc_ex(reg, BH_DOMAIN(2, BH_MEM_L1), 4096, &layout, &h1), BH_OK);
    assert_ptr_equal(a.last_arg, &layout);
    assert_int_equal(a.last_device, BH_DOMAIN(2, BH_MEM_L1));
    /* bh_alloc goes through alloc_ex too, with no argument. */
    assert_int_equal(bh_alloc(reg, 0, 64, &h2), BH_OK);
    assert_null(a.last_arg);
    assert_int_equal(a.calls, 2);
    bh_info info;
    assert_int_equal(bh_info_get(reg, h1, &info), BH_OK);
    assert_int_equal(info.address, 0x1000);
    assert_int_equal(bh_info_get(reg, h2, &info), BH_OK);
    assert_int_equal(info.address, 0x2000);
    assert_int_equal(bh_alloc_ex(reg, 0, 0, &layout, &h2), BH_EINVAL);
    assert_int_equal(bh_alloc_ex(NULL, 0, 64, &layout, &h2), BH_EINVAL);
    assert_int_equal(bh_alloc_ex(reg, 0, 64, &layout, NULL), BH_EINVAL);
    assert_int_equal(a.calls, 2);
    assert_int_equal(bh_release(reg, h1), BH_OK);
    assert_int_equal(bh_release(reg, h2), BH_OK);
    assert_int_equal(a.frees, 2);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* A 0.2 allocator cannot take an argument: passing one is refused rather
 * than silently dropped; NULL works as bh_alloc. */
static void alloc_ex_without_an_ex_allocator_takes_no_argument(void **state) {
    fixture *f = *state;
    int layout = 1;
    bh_handle h;
    assert_int_equal(bh_alloc_ex(f->reg, 0, 64, &layout, &h), BH_EINVAL);
    assert_int_equal(checker_alloc_calls(f->chk), 0);
    assert_int_equal(bh_alloc_ex(f->reg, 0, 64, NULL, &h), BH_OK);
    assert_int_equal(checker_alloc_calls(f->chk), 1);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
}

/* The 0.2 layout of bh_config still works: positional initialisation and
 * the reserved words (ignored without a flag). */
static void config_keeps_its_0_2_size_and_reserved_words(void **state) {
    (void)state;
    assert_int_equal(sizeof(bh_config), sizeof(bh_allocator) + sizeof(bh_reporter) + 8 + 4 * sizeof(void *));
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
    cfg.reserved[0] = &cfg; /* junk a 0.2 caller may have left there */
    cfg.reserved[3] = &cfg;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh_handle h;
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_EINVAL); /* still: no allocator */
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ------------------------------------------------------------ bh_adopt */

static void adopt_owns_a_new_address_and_frees_it_last(void **state) {
    fixture *f = *state;
    bh_handle a, b;
    assert_int_equal(bh_adopt(NULL, 3, BASE, 64, &a), BH_EINVAL);
    assert_int_equal(bh_adopt(f->reg, 3, BASE, 64, NULL), BH_EINVAL);
    assert_int_equal(bh_adopt(f->reg, 3, BASE, 0, &a), BH_EINVAL);
    assert_int_equal(bh_adopt(f->reg, 3, BASE, 256, &a), BH_OK);
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    assert_int_equal(stats_of(f->reg).adopts, 1);
    /* An alias through bh_intern is a reference to the adopted block. */
    assert_int_equal(bh_intern(f->reg, 3, BASE, 256, &b), BH_OK);
    assert_true(bh_handle_eq(a, b));
    assert_int_equal(bh_release(f->reg, a), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 0);
    assert_int_equal(bh_release(f->reg, b), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 1);
    assert_int_equal(checker_free_reports(f->chk), 1);
}

static void adopt_of_a_live_address_is_eexist_and_frees_nothing(void **state) {
    fixture *f = *state;
    bh_handle live, h = BH_HANDLE_NULL;
    assert_int_equal(bh_intern(f->reg, 3, BASE, 64, &live), BH_OK);
    assert_int_equal(bh_adopt(f->reg, 3, BASE, 64, &h), BH_EEXIST);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(stats_of(f->reg).conflicts, 1);
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, live, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(f->reg, live), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 1);
}

/* The lock-step reuse of a mesh port: the caller's own allocator hands the
 * address out again once its free has run, before the registry has unlinked
 * the dying block. bh_intern says BH_EBUSY there (0.2 had nothing else);
 * bh_adopt takes the address over. During the FREE report (free not run yet)
 * the address is still the old allocation's: adopt is a conflict. */
static void adopt_during_free(fixture *f, uint32_t device, uint64_t address) {
    f->on_allocator_free = NULL; /* once */
    bh_handle h = BH_HANDLE_NULL;
    f->hook_status[0] = bh_intern(f->reg, device, address, 64, &h);
    f->hook_status[1] = bh_adopt(f->reg, device, address, 64, &f->hook_handle);
}

static void adopt_during_free_report(fixture *f, const bh_event *ev) {
    f->on_free_report = NULL;
    bh_handle h = BH_HANDLE_NULL;
    f->hook_status[2] = bh_adopt(f->reg, ev->device, ev->address, 64, &h);
}

static void adopt_takes_over_an_address_whose_free_has_run(void **state) {
    fixture *f = *state;
    bh_handle h;
    assert_int_equal(bh_intern(f->reg, 3, BASE, 64, &h), BH_OK);
    f->on_allocator_free = adopt_during_free;
    f->on_free_report = adopt_during_free_report;
    assert_int_equal(bh_release(f->reg, h), BH_OK);
    assert_int_equal(f->hook_status[0], BH_EBUSY);
    assert_int_equal(f->hook_status[1], BH_OK);
    assert_int_equal(f->hook_status[2], BH_EEXIST);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.takeovers, 1);
    assert_int_equal(s.adopts, 1);
    assert_int_equal(s.live_handles, 1);
    assert_int_equal(bh_retain(f->reg, h), BH_ESTALE);
    bh_handle again;
    assert_int_equal(bh_lookup(f->reg, 3, BASE, &again), BH_OK);
    assert_true(bh_handle_eq(again, f->hook_handle));
    assert_int_equal(bh_release(f->reg, again), BH_OK);
    assert_int_equal(bh_release(f->reg, f->hook_handle), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 2);
    assert_int_equal(checker_free_reports(f->chk), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_rejects_null_out_and_unknown_flags),
        cmocka_unit_test(create_with_null_config_gives_a_registry_without_allocator),
        T(destroy_rejects_null_and_is_busy_while_handles_live),
        T(alloc_rejects_bad_arguments),
        T(alloc_reports_alloc_and_returns_one_reference),
        T(alloc_failure_is_ealloc_and_reports_nothing),
        T(alloc_of_a_live_address_is_eexist_and_frees_nothing),
        T(alloc_of_a_range_past_2_64_is_ealloc_and_frees_nothing),
        cmocka_unit_test(alloc_ex_hands_its_argument_to_the_allocator),
        T(alloc_ex_without_an_ex_allocator_takes_no_argument),
        cmocka_unit_test(config_keeps_its_0_2_size_and_reserved_words),
        T(adopt_owns_a_new_address_and_frees_it_last),
        T(adopt_of_a_live_address_is_eexist_and_frees_nothing),
        T(adopt_takes_over_an_address_whose_free_has_run),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
