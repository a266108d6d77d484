/*
 * test_api_ranges.c - ranges: overlap refusals, bh_lookup_containing, dying
 * ranges, and bh_intern: every status they can return.
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

/* ------------------------------------------------------------ ranges and sizes */

/* Ranges past 2^64 were accepted in 0.2, and two 2^63-byte blocks wrapped
 * live_bytes to 0. */
static void ranges_past_2_64_and_live_bytes_overflow_are_einval(void **state) {
    fixture *f = *state;
    bh_handle a, b, h = BH_HANDLE_NULL;
    const uint64_t half = 1ull << 63;
    assert_int_equal(bh_intern(f->reg, 3, UINT64_MAX - 10, 100, &h), BH_EINVAL);
    assert_int_equal(bh_adopt(f->reg, 3, UINT64_MAX - 10, 12, &h), BH_EINVAL);
    assert_int_equal(bh_intern(f->reg, 3, 2, UINT64_MAX, &h), BH_EINVAL);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_alloc_reports(f->chk), 0);

    /* Ending exactly at 2^64 is a valid range; the two halves fill the space. */
    bh_registry *reg = registry_with(BH_CONFIG_NO_ENV);
    assert_int_equal(bh_intern(reg, 0, half, half, &a), BH_OK);
    assert_int_equal(bh_intern(reg, 1, 0, half, &b), BH_EINVAL); /* live_bytes would wrap */
    assert_int_equal(bh_adopt(reg, 1, 0, half, &b), BH_EINVAL);
    assert_int_equal(bh_intern(reg, 1, 0, half - 1, &b), BH_OK);
    bh_stats s = stats_of(reg);
    assert_int_equal(s.live_handles, 2);
    assert_true(s.live_bytes == UINT64_MAX);
    assert_true(s.peak_live_bytes == UINT64_MAX);
    assert_int_equal(bh_release(reg, a), BH_OK);
    assert_int_equal(bh_release(reg, b), BH_OK);
    s = stats_of(reg);
    assert_int_equal(s.live_bytes, 0);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ------------------------------------------------------------ overlaps */

/* The porting bug found in 0.2: a buffer "at address + offset" of a live 8 KiB
 * allocation was interned as a new owner (0.2: BH_OK, ALLOC reported, and the
 * interior address later freed into the allocator). */
static void intern_inside_a_live_allocation_is_eoverlap_and_changes_nothing(void **state) {
    fixture *f = *state;
    const uint64_t w = BASE + ALIGN; /* [w, w + 8 KiB) */
    bh_handle whole, h = BH_HANDLE_NULL;
    assert_int_equal(bh_intern(f->reg, 3, w, 8192, &whole), BH_OK);
    assert_int_equal(bh_intern(f->reg, 3, w + 4096, 4096, &h), BH_EOVERLAP);     /* interior */
    assert_int_equal(bh_intern(f->reg, 3, w + 8191, 1, &h), BH_EOVERLAP);        /* last byte */
    assert_int_equal(bh_intern(f->reg, 3, w - 4096, 4097, &h), BH_EOVERLAP);     /* reaches its start */
    assert_int_equal(bh_intern(f->reg, 3, w - 4096, 3 * 4096, &h), BH_EOVERLAP); /* covers it */
    assert_int_equal(bh_adopt(f->reg, 3, w + 4096, 64, &h), BH_EOVERLAP);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.overlaps, 5);
    assert_int_equal(s.live_handles, 1);
    assert_int_equal(s.live_bytes, 8192);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, whole, &info), BH_OK);
    assert_int_equal(info.refs, 1);

    /* Neighbours that only touch it, and other domains, are separate. */
    bh_handle before, after, other;
    assert_int_equal(bh_intern(f->reg, 3, w - 4096, 4096, &before), BH_OK);
    assert_int_equal(bh_intern(f->reg, 3, w + 8192, 4096, &after), BH_OK);
    assert_int_equal(bh_alloc(f->reg, 0, 8192, &other), BH_OK); /* device 0: [BASE, BASE + 8 KiB) */
    assert_int_equal(bh_release(f->reg, other), BH_OK);
    assert_int_equal(bh_release(f->reg, before), BH_OK);
    assert_int_equal(bh_release(f->reg, after), BH_OK);

    /* Once the allocation is gone the interior address is free to own. */
    assert_int_equal(bh_release(f->reg, whole), BH_OK);
    assert_int_equal(bh_intern(f->reg, 3, w + 4096, 4096, &h), BH_OK);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
}

static void alloc_of_a_range_overlapping_a_live_allocation_is_eexist(void **state) {
    fixture *f = *state;
    bh_handle live, h = BH_HANDLE_NULL;
    assert_int_equal(bh_alloc(f->reg, 0, 2 * ALIGN, &live), BH_OK); /* BASE, two slots wide */
    checker_force_next(f->chk, BASE + ALIGN);                       /* inside it */
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_EEXIST);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_free_calls(f->chk), 0);
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    assert_int_equal(stats_of(f->reg).conflicts, 1);
    assert_int_equal(bh_release(f->reg, live), BH_OK);
}

static void lookup_containing_finds_the_allocation_around_an_address(void **state) {
    fixture *f = *state;
    bh_handle whole, h;
    assert_int_equal(bh_lookup_containing(NULL, 3, BASE, &h), BH_EINVAL);
    assert_int_equal(bh_lookup_containing(f->reg, 3, BASE, NULL), BH_EINVAL);
    assert_int_equal(bh_lookup_containing(f->reg, 3, BASE, &h), BH_ENOTFOUND);
    assert_int_equal(bh_intern(f->reg, 3, BASE, 8192, &whole), BH_OK);
    const uint64_t inside[] = {BASE, BASE + 1, BASE + 4096, BASE + 8191};
    for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
        assert_int_equal(bh_lookup_containing(f->reg, 3, inside[i], &h), BH_OK);
        assert_true(bh_handle_eq(h, whole));
    }
    const uint64_t outside[] = {BASE - 1, BASE + 8192, 0, UINT64_MAX};
    for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++)
        assert_int_equal(bh_lookup_containing(f->reg, 3, outside[i], &h), BH_ENOTFOUND);
    assert_int_equal(bh_lookup_containing(f->reg, 2, BASE + 4096, &h), BH_ENOTFOUND); /* other domain */
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, whole, &info), BH_OK);
    assert_int_equal(info.refs, 5);
    assert_int_equal(info.address, BASE);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.lookups_hit, 4);
    assert_int_equal(s.lookups_miss, 6);
    for (int i = 0; i < 5; i++)
        assert_int_equal(bh_release(f->reg, whole), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 1);
    assert_int_equal(bh_lookup_containing(f->reg, 3, BASE + 4096, &h), BH_ENOTFOUND);
}

/* While the allocation dies: until its free has returned its range is still
 * taken for bh_intern (an interior intern is BH_EBUSY, as at the exact
 * address; lookups miss); once its free has started, bh_adopt of memory the
 * allocator may have handed out again takes the range over. */
static void probe_interior_during_report(fixture *f, const bh_event *ev) {
    f->on_free_report = NULL;
    bh_handle h = BH_HANDLE_NULL;
    f->hook_status[0] = bh_intern(f->reg, ev->device, ev->address + 4096, 64, &h);
    f->hook_status[1] = bh_lookup_containing(f->reg, ev->device, ev->address + 4096, &h);
}

static void probe_interior_during_free(fixture *f, uint32_t device, uint64_t address) {
    f->on_allocator_free = NULL;
    bh_handle h = BH_HANDLE_NULL;
    f->hook_status[2] = bh_intern(f->reg, device, address + 4096, 64, &h);
    f->hook_status[3] = bh_adopt(f->reg, device, address + 4096, 64, &f->hook_handle);
}

static void a_dying_allocation_keeps_its_range_until_its_free(void **state) {
    fixture *f = *state;
    bh_handle whole;
    assert_int_equal(bh_intern(f->reg, 3, BASE, 8192, &whole), BH_OK);
    f->on_free_report = probe_interior_during_report;
    f->on_allocator_free = probe_interior_during_free;
    assert_int_equal(bh_release(f->reg, whole), BH_OK);
    assert_int_equal(f->hook_status[0], BH_EBUSY);
    assert_int_equal(f->hook_status[1], BH_ENOTFOUND);
    assert_int_equal(f->hook_status[2], BH_EBUSY);
    assert_int_equal(f->hook_status[3], BH_OK);
    assert_int_equal(bh_release(f->reg, f->hook_handle), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 2);
}

/* With debug references, a containing lookup hands out its own token, like
 * every other acquisition. */
static void lookup_containing_with_debug_refs_gives_its_own_token(void **state) {
    (void)state;
    bh_registry *reg = registry_with(BH_CONFIG_NO_ENV | BH_CONFIG_DEBUG_REFS);
    bh_handle whole, view;
    assert_int_equal(bh_intern(reg, 0, BASE, 8192, &whole), BH_OK);
    assert_int_equal(bh_lookup_containing(reg, 0, BASE + 100, &view), BH_OK);
    assert_false(bh_handle_eq(whole, view));
    bh_info info;
    assert_int_equal(bh_info_get(reg, view, &info), BH_OK);
    assert_int_equal(info.address, BASE);
    assert_int_equal(info.refs, 2);
    assert_int_equal(bh_release(reg, view), BH_OK);
    /* (A second release of view would be BH_ESTALE, and an error under
     * memcheck and ASan by design: see test_diag.) */
    assert_int_equal(bh_info_get(reg, whole, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(reg, whole), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* With the check off, 0.2's behaviour: only exact keys are compared. */
static void no_overlap_check_restores_exact_keys_only(void **state) {
    (void)state;
    bh_registry *reg = registry_with(BH_CONFIG_NO_ENV | BH_CONFIG_NO_OVERLAP_CHECK);
    bh_handle whole, inner, h;
    assert_int_equal(bh_intern(reg, 0, BASE, 8192, &whole), BH_OK);
    assert_int_equal(bh_intern(reg, 0, BASE + 4096, 64, &inner), BH_OK);
    assert_false(bh_handle_eq(whole, inner));
    assert_int_equal(bh_lookup_containing(reg, 0, BASE + 4096, &h), BH_EINVAL);
    assert_int_equal(bh_release(reg, inner), BH_OK);
    assert_int_equal(bh_release(reg, whole), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ------------------------------------------------------------ bh_intern */

static void intern_rejects_bad_arguments(void **state) {
    fixture *f = *state;
    bh_handle h;
    assert_int_equal(bh_intern(NULL, 3, BASE, 64, &h), BH_EINVAL);
    assert_int_equal(bh_intern(f->reg, 3, BASE, 64, NULL), BH_EINVAL);
    assert_int_equal(bh_intern(f->reg, 3, BASE, 0, &h), BH_EINVAL);
    assert_int_equal(checker_alloc_reports(f->chk), 0);
}

static void intern_of_a_new_address_owns_it_and_frees_it_last(void **state) {
    fixture *f = *state;
    bh_handle a, b;
    assert_int_equal(bh_intern(f->reg, 3, BASE + ALIGN, 512, &a), BH_OK);
    assert_int_equal(checker_alloc_reports(f->chk), 1);
    assert_int_equal(bh_intern(f->reg, 3, BASE + ALIGN, 512, &b), BH_OK);
    assert_true(bh_handle_eq(a, b));
    assert_int_equal(checker_alloc_reports(f->chk), 1); /* an alias reports nothing */
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.interns_new, 1);
    assert_int_equal(s.interns_alias, 1);
    assert_int_equal(bh_release(f->reg, a), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 0);
    assert_int_equal(bh_release(f->reg, b), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 1);
    assert_int_equal(checker_free_reports(f->chk), 1);
}

static void intern_larger_than_the_live_allocation_is_erange(void **state) {
    fixture *f = *state;
    bh_handle a, b = BH_HANDLE_NULL;
    assert_int_equal(bh_alloc(f->reg, 0, 4096, &a), BH_OK);
    assert_int_equal(bh_intern(f->reg, 0, BASE, 4097, &b), BH_ERANGE);
    assert_true(bh_handle_is_null(b));
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, a, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(f->reg, a), BH_OK);
}

/* While the last release runs its FREE report, the address is dying. */
static void probe_dying_address(fixture *f, const bh_event *ev) {
    bh_handle h = BH_HANDLE_NULL;
    f->hook_status[0] = bh_intern(f->reg, ev->device, ev->address, 1, &h);
    f->hook_status[1] = bh_lookup(f->reg, ev->device, ev->address, &h);
    f->hook_status[2] = bh_retain(f->reg, f->hook_handle);
    bh_info info;
    f->hook_status[3] = bh_info_get(f->reg, f->hook_handle, &info);
    f->hook_calls++;
}

static void a_dying_address_is_busy_for_intern_and_missing_for_lookup(void **state) {
    fixture *f = *state;
    assert_int_equal(bh_alloc(f->reg, 2, 64, &f->hook_handle), BH_OK);
    f->on_free_report = probe_dying_address;
    assert_int_equal(bh_release(f->reg, f->hook_handle), BH_OK);
    assert_int_equal(f->hook_calls, 1);
    assert_int_equal(f->hook_status[0], BH_EBUSY);
    assert_int_equal(f->hook_status[1], BH_ENOTFOUND);
    assert_int_equal(f->hook_status[2], BH_ESTALE);
    assert_int_equal(f->hook_status[3], BH_ESTALE);
    assert_int_equal(stats_of(f->reg).busy, 1);
    assert_int_equal(checker_free_calls(f->chk), 1);
}

/* Inside allocator.free the LIFO allocator can hand the address out at once:
 * bh_alloc must take the key over from the dying block, not call it a conflict. */
static void realloc_inside_free(fixture *f, uint32_t device, uint64_t address) {
    (void)address;
    f->on_allocator_free = NULL; /* once */
    f->hook_status[0] = bh_alloc(f->reg, device, 64, &f->hook_handle);
}

static void alloc_may_take_over_an_address_whose_free_has_run(void **state) {
    fixture *f = *state;
    bh_handle h;
    assert_int_equal(bh_alloc(f->reg, 1, 64, &h), BH_OK);
    f->on_allocator_free = realloc_inside_free;
    assert_int_equal(bh_release(f->reg, h), BH_OK);
    assert_int_equal(f->hook_status[0], BH_OK);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, f->hook_handle, &info), BH_OK);
    assert_int_equal(info.address, BASE);
    assert_int_equal(bh_retain(f->reg, h), BH_ESTALE);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.takeovers, 1);
    assert_int_equal(s.conflicts, 0);
    assert_int_equal(s.live_handles, 1);
    /* The new block is interned and findable. */
    bh_handle again;
    assert_int_equal(bh_lookup(f->reg, 1, BASE, &again), BH_OK);
    assert_true(bh_handle_eq(again, f->hook_handle));
    assert_int_equal(bh_release(f->reg, again), BH_OK);
    assert_int_equal(bh_release(f->reg, f->hook_handle), BH_OK);
    assert_int_equal(checker_free_calls(f->chk), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        T(ranges_past_2_64_and_live_bytes_overflow_are_einval),
        T(intern_inside_a_live_allocation_is_eoverlap_and_changes_nothing),
        T(alloc_of_a_range_overlapping_a_live_allocation_is_eexist),
        T(lookup_containing_finds_the_allocation_around_an_address),
        T(a_dying_allocation_keeps_its_range_until_its_free),
        cmocka_unit_test(no_overlap_check_restores_exact_keys_only),
        cmocka_unit_test(lookup_containing_with_debug_refs_gives_its_own_token),
        T(intern_rejects_bad_arguments),
        T(intern_of_a_new_address_owns_it_and_frees_it_last),
        T(intern_larger_than_the_live_allocation_is_erange),
        T(a_dying_address_is_busy_for_intern_and_missing_for_lookup),
        T(alloc_may_take_over_an_address_whose_free_has_run),
    };
    return cmocka_run_group_tests_name("api_ranges", tests, NULL, NULL);
}
