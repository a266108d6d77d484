/*
 * test_api_handles.c - handles: bh_lookup, retain and release, stale, forged and
 * foreign handles, the domain macros, status names and the version.
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

/* ------------------------------------------------------------ bh_lookup */

static void lookup_finds_live_blocks_and_never_creates(void **state) {
    fixture *f = *state;
    bh_handle h, l;
    assert_int_equal(bh_lookup(NULL, 0, BASE, &l), BH_EINVAL);
    assert_int_equal(bh_lookup(f->reg, 0, BASE, NULL), BH_EINVAL);
    assert_int_equal(bh_lookup(f->reg, 0, BASE, &l), BH_ENOTFOUND);
    assert_int_equal(stats_of(f->reg).live_handles, 0);
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh_lookup(f->reg, 0, BASE, &l), BH_OK);
    assert_true(bh_handle_eq(h, l));
    assert_int_equal(bh_lookup(f->reg, 1, BASE, &l), BH_ENOTFOUND); /* other domain */
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.lookups_hit, 1);
    assert_int_equal(s.lookups_miss, 2);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
    assert_int_equal(bh_lookup(f->reg, 0, BASE, &l), BH_ENOTFOUND);
}

/* ------------------------------------------------------------ references */

static void retain_and_release_count_references(void **state) {
    fixture *f = *state;
    bh_handle h;
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh_retain(f->reg, h), BH_OK);
    assert_int_equal(bh_retain(f->reg, h), BH_OK);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, h, &info), BH_OK);
    assert_int_equal(info.refs, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(checker_free_calls(f->chk), 0);
        assert_int_equal(bh_release(f->reg, h), BH_OK);
    }
    assert_int_equal(checker_free_calls(f->chk), 1);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.retains, 2);
    assert_int_equal(s.releases, 3);
}

static void null_handles_and_registries_are_einval(void **state) {
    fixture *f = *state;
    bh_handle h;
    bh_info info;
    assert_int_equal(bh_retain(f->reg, BH_HANDLE_NULL), BH_EINVAL);
    assert_int_equal(bh_release(f->reg, BH_HANDLE_NULL), BH_EINVAL);
    assert_int_equal(bh_info_get(f->reg, BH_HANDLE_NULL, &info), BH_EINVAL);
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh_retain(NULL, h), BH_EINVAL);
    assert_int_equal(bh_release(NULL, h), BH_EINVAL);
    assert_int_equal(bh_info_get(NULL, h, &info), BH_EINVAL);
    assert_int_equal(bh_info_get(f->reg, h, NULL), BH_EINVAL);
    assert_int_equal(bh_stats_get(NULL, &(bh_stats){0}), BH_EINVAL);
    assert_int_equal(bh_stats_get(f->reg, NULL), BH_EINVAL);
    assert_int_equal(bh_release(f->reg, h), BH_OK);
}

static void stale_forged_and_foreign_handles_are_estale_and_change_nothing(void **state) {
    fixture *f = *state;
    bh_handle h, other_h;
    assert_int_equal(bh_alloc(f->reg, 0, 64, &h), BH_OK);

    /* Forged: every bit pattern near and far from the real one. */
    const uint64_t forged[] = {h.bits ^ (1ull << 32),
                               h.bits + 1,
                               h.bits ^ 0xffffffull,
                               h.bits & ~0xffffffull,
                               h.bits ^ (0x5aull << 24),
                               ~0ull,
                               0x1ull,
                               0xffffffull,
                               0x0123456789abcdefull};
    bh_info info;
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        bh_handle x = {forged[i]};
        assert_int_equal(bh_retain(f->reg, x), BH_ESTALE);
        assert_int_equal(bh_release(f->reg, x), BH_ESTALE);
        assert_int_equal(bh_info_get(f->reg, x, &info), BH_ESTALE);
    }

    /* Foreign: a live handle of another registry, same slot shape. */
    checker *chk2 = checker_new(1, 1, 1, BASE, ALIGN);
    bh_config cfg = checker_config(chk2);
    bh_registry *other;
    assert_int_equal(bh_registry_create(&cfg, &other), BH_OK);
    assert_int_equal(bh_alloc(other, 0, 64, &other_h), BH_OK);
    assert_int_equal(bh_retain(f->reg, other_h), BH_ESTALE);
    assert_int_equal(bh_release(f->reg, other_h), BH_ESTALE);
    assert_int_equal(bh_release(other, h), BH_ESTALE);
    assert_int_equal(bh_release(other, other_h), BH_OK);
    assert_int_equal(bh_registry_destroy(other), BH_OK);
    assert_int_equal(checker_errors(chk2), 0);
    checker_free(chk2);

    assert_int_equal(bh_info_get(f->reg, h, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(checker_free_calls(f->chk), 0);
    bh_stats s = stats_of(f->reg);
    assert_int_equal(s.stale_ops, 3 * (sizeof(forged) / sizeof(forged[0])) + 2);
    assert_int_equal(s.retains + s.releases, 0);

    /* Stale: retired. */
    assert_int_equal(bh_release(f->reg, h), BH_OK);
    assert_int_equal(bh_release(f->reg, h), BH_ESTALE);
    assert_int_equal(bh_retain(f->reg, h), BH_ESTALE);
    assert_int_equal(bh_info_get(f->reg, h, &info), BH_ESTALE);
    assert_int_equal(checker_free_calls(f->chk), 1);
}

/* 0.2 stamped an 8-bit tag (registries made % 255 + 1) and started every
 * slot at generation 0, so the 255th registry after A handed out A's handle
 * values bit for bit: bh_release(B, handle of A) freed B's buffer. Two
 * registries stay alive while 300 more come and go; no handle of one is ever
 * accepted by another. */
static void foreign_handles_stay_stale_across_300_registries(void **state) {
    (void)state;
    checker *chk[2] = {checker_new(1, 1, 4, BASE, ALIGN), checker_new(1, 1, 4, BASE, ALIGN)};
    bh_registry *alive[2];
    bh_handle held[2];
    for (int i = 0; i < 2; i++) {
        bh_config cfg = checker_config(chk[i]);
        assert_int_equal(bh_registry_create(&cfg, &alive[i]), BH_OK);
        assert_int_equal(bh_alloc(alive[i], 0, 64, &held[i]), BH_OK);
    }
    assert_int_equal(bh_release(alive[1], held[0]), BH_ESTALE);
    assert_int_equal(bh_release(alive[0], held[1]), BH_ESTALE);
    for (int r = 0; r < 300; r++) {
        bh_registry *reg = registry_with(BH_CONFIG_NO_ENV);
        bh_handle h;
        assert_int_equal(bh_intern(reg, 0, BASE, 64, &h), BH_OK); /* slot 1, first generation: like held[] */
        bh_info info;
        for (int i = 0; i < 2; i++) {
            assert_false(bh_handle_eq(h, held[i]));
            assert_int_equal(bh_retain(alive[i], h), BH_ESTALE);
            assert_int_equal(bh_info_get(alive[i], h, &info), BH_ESTALE);
            assert_int_equal(bh_release(alive[i], h), BH_ESTALE);
            assert_int_equal(bh_retain(reg, held[i]), BH_ESTALE);
            assert_int_equal(bh_release(reg, held[i]), BH_ESTALE);
        }
        assert_int_equal(bh_info_get(reg, h, &info), BH_OK);
        assert_int_equal(info.refs, 1);
        assert_int_equal(bh_release(reg, h), BH_OK);
        assert_int_equal(bh_registry_destroy(reg), BH_OK);
    }
    for (int i = 0; i < 2; i++) {
        bh_info info;
        assert_int_equal(bh_info_get(alive[i], held[i], &info), BH_OK);
        assert_int_equal(info.refs, 1);
        assert_int_equal(checker_free_calls(chk[i]), 0);
        assert_int_equal(bh_release(alive[i], held[i]), BH_OK);
        assert_int_equal(checker_finish(chk[i], alive[i]), 0);
    }
}

/* ------------------------------------------------------------ domains */

static void domain_macros_pack_device_and_kind(void **state) {
    (void)state;
    assert_int_equal(BH_DOMAIN(0, BH_MEM_DRAM), 0);
    assert_int_equal(BH_DOMAIN(3, BH_MEM_L1), 0x31);
    assert_int_equal(BH_DOMAIN_DEVICE(BH_DOMAIN(4, BH_MEM_L1_SMALL)), 4);
    assert_int_equal(BH_DOMAIN_KIND(BH_DOMAIN(4, BH_MEM_L1_SMALL)), BH_MEM_L1_SMALL);
    assert_int_equal(BH_DOMAIN_KIND(BH_DOMAIN(7, BH_MEM_TRACE)), 3);
    assert_int_equal(BH_DOMAIN_KIND(BH_DOMAIN(1, 17)), 1); /* the kind keeps 4 bits */
    assert_int_equal(BH_DOMAIN_DEVICE(BH_DOMAIN(0x0fffffff, 15)), 0x0fffffff);
    assert_int_equal(BH_DOMAIN_KIND(BH_DOMAIN(0x0fffffff, 15)), 15);
    assert_int_equal(BH_DOMAIN_DEVICE(0xffffffffu), 0x0fffffff);
}

/* ------------------------------------------------------------ text */

static void every_status_has_a_distinct_name_and_message(void **state) {
    (void)state;
    const bh_status all[] = {BH_OK,    BH_EINVAL, BH_ENOMEM, BH_ESTALE,    BH_ENOTFOUND, BH_EEXIST,
                             BH_EBUSY, BH_EALLOC, BH_ERANGE, BH_EOVERFLOW, BH_EOVERLAP,  BH_EFORKED};
    const size_t n = sizeof(all) / sizeof(all[0]);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(all[i], -(int)i); /* the contract's numbers */
        assert_true(strlen(bh_strerror(all[i])) > 0);
        assert_string_not_equal(bh_strerror(all[i]), "unknown status");
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(bh_strerror(all[i]), bh_strerror(all[j]));
            assert_string_not_equal(bh_status_name(all[i]), bh_status_name(all[j]));
        }
    }
    assert_string_equal(bh_status_name(BH_ESTALE), "BH_ESTALE");
    assert_string_equal(bh_status_name(BH_EOVERLAP), "BH_EOVERLAP");
    /* BH_EBUSY from bh_intern tells a porter what to do. */
    assert_non_null(strstr(bh_strerror(BH_EBUSY), "bh_adopt"));
    assert_string_equal(bh_strerror((bh_status)-1000), "unknown status");
    assert_string_equal(bh_status_name((bh_status)7), "BH_UNKNOWN");
}

static void version_matches_the_header(void **state) {
    (void)state;
    assert_string_equal(bh_version(), BH_VERSION_STRING);
    /* The project's version, which CMake read from the header. */
    assert_string_equal(bh_version(), BH_PROJECT_VERSION);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        T(lookup_finds_live_blocks_and_never_creates),
        T(retain_and_release_count_references),
        T(null_handles_and_registries_are_einval),
        T(stale_forged_and_foreign_handles_are_estale_and_change_nothing),
        cmocka_unit_test(foreign_handles_stay_stale_across_300_registries),
        cmocka_unit_test(domain_macros_pack_device_and_kind),
        cmocka_unit_test(every_status_has_a_distinct_name_and_message),
        cmocka_unit_test(version_matches_the_header),
    };
    return cmocka_run_group_tests_name("api_handles", tests, NULL, NULL);
}
