/*
 * test_limits.c - white-box tests of a registry at the end of a resource:
 * a reference count at its maximum (BH_EOVERFLOW, nothing changed), a slot
 * whose generation would wrap (retired for good), no control block left
 * (a live address the allocator hands out again is never freed), and a
 * shard whose table cannot grow (BH_ENOMEM, the address given back).
 *
 * The limits are reached through test hooks (a lowered reference maximum,
 * a set generation, an emptied free list, a failed host allocation); must
 * never depend on filling 2^32 generations or the machine's memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/internal.h"
#include "support/fixed_alloc.h"
#include "support/checker.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

static void reference_count_overflow_is_eoverflow_and_changes_nothing(void **state) {
    (void)state;
    checker *chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh__registry_set_refs_max(reg, 3);
    bh_handle h, x;
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh_retain(reg, h), BH_OK);
    assert_int_equal(bh_lookup(reg, 0, BASE, &x), BH_OK);
    assert_int_equal(bh_retain(reg, h), BH_EOVERFLOW);
    assert_int_equal(bh_lookup(reg, 0, BASE, &x), BH_EOVERFLOW);
    assert_int_equal(bh_intern(reg, 0, BASE, 64, &x), BH_EOVERFLOW);
    bh_info info;
    assert_int_equal(bh_info_get(reg, h, &info), BH_OK);
    assert_int_equal(info.refs, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(checker_free_calls(chk), 1);
    assert_int_equal(checker_finish(chk, reg), 0);
}

static void a_slot_whose_generation_would_wrap_is_retired_for_good(void **state) {
    (void)state;
    checker *chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh_handle h, last;
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_OK);
    assert_int_equal(bh__registry_set_gen(reg, h, UINT32_MAX, &last), BH_OK);
    assert_int_equal(bh_retain(reg, h), BH_ESTALE); /* the old generation is gone */
    assert_int_equal(bh_release(reg, last), BH_OK);
    assert_int_equal(bh_release(reg, last), BH_ESTALE);

    /* The slot is never handed out again: many allocations later, no handle
     * uses it, and the wrapped-around generation 0 is not valid there. */
    for (int i = 0; i < 100; i++) {
        bh_handle n;
        assert_int_equal(bh_alloc(reg, 0, 64, &n), BH_OK);
        assert_int_not_equal(bh__handle_slot(n), bh__handle_slot(last));
        assert_int_equal(bh_release(reg, n), BH_OK);
    }
    bh_handle wrapped = bh__handle_of(reg, bh__handle_slot(last), 0);
    assert_int_equal(bh_retain(reg, wrapped), BH_ESTALE);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.slots_retired, 1);
    assert_int_equal(checker_finish(chk, reg), 0);
}

/* 0.2's bh_alloc took a control block before it looked the allocator's
 * address up: out of blocks (host memory or slot space), it answered
 * BH_ENOMEM and "gave back" the address through allocator.free, even when the
 * buggy allocator had returned a live address. The lookup comes first now. */
static void a_live_address_is_never_freed_when_blocks_run_out(void **state) {
    (void)state;
    checker *chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(chk);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh_handle live, h = BH_HANDLE_NULL;
    assert_int_equal(bh_alloc(reg, 0, 64, &live), BH_OK); /* BASE */

    /* No block left anywhere: the shard's free list is empty and the slab's
     * slot space exhausted (taking a block would fail like host memory does). */
    bh__shard *sh = &reg->shards[bh__shard_of(bh__key_hash(0, BASE))];
    bh__block *saved_list = sh->free_list;
    uint32_t saved_fresh = reg->slab.next_fresh;
    sh->free_list = NULL;
    reg->slab.next_fresh = BH__SLOT_MASK + 1;

    checker_force_next(chk, BASE);
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_EEXIST);
    assert_int_equal(bh_adopt(reg, 0, BASE, 64, &h), BH_EEXIST);
    assert_true(bh_handle_is_null(h));
    assert_int_equal(checker_free_calls(chk), 0);
    /* An address that is not live is given back on BH_ENOMEM. */
    assert_int_equal(bh_alloc(reg, 0, 64, &h), BH_ENOMEM);
    assert_int_equal(checker_free_calls(chk), 1);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.conflicts, 2);
    assert_int_equal(s.live_handles, 1);
    assert_int_equal(s.live_bytes, 64);

    sh->free_list = saved_list;
    reg->slab.next_fresh = saved_fresh;
    bh_info info;
    assert_int_equal(bh_info_get(reg, live, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(reg, live), BH_OK);
    assert_int_equal(checker_finish(chk, reg), 0);
}

/* An open-addressing shard that cannot grow runs full; bh_alloc must then
 * answer BH_ENOMEM with its documented meaning: the address was free, and it
 * went back to the allocator (nothing counted live). */
static void a_full_shard_is_a_clean_enomem_for_bh_alloc(void **state) {
    (void)state;
    fixed_alloc ca = {0};
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = fixed_allocator(&ca);
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    uint32_t target = bh__shard_of(bh__key_hash(0, BASE));
    bh__shard *sh = &reg->shards[target];
    uint32_t cap = bh__shard_table(sh)->mask + 1;
    enum { MAX = 64 };
    bh_handle h[MAX];
    int n = 0;
    uint64_t i = 0;
    bh_status st = BH_OK;
    while (st == BH_OK) {
        while (bh__shard_of(bh__key_hash(0, BASE + i * ALIGN)) != target)
            i++;
        ca.next = BASE + i++ * ALIGN;
        if (sh->count + 1 > cap / 4 * 3)
            bh__hostmem_fail_at(1); /* the table's growth is the call's first host allocation */
        assert_true(n < MAX);
        st = bh_alloc(reg, 0, 64, &h[n]);
        bh__hostmem_fail_at(0);
        if (st == BH_OK)
            n++;
    }
    assert_int_equal(st, BH_ENOMEM);
    assert_int_equal(n, (int)cap - 1); /* it kept working while it could */
    assert_int_equal(ca.frees, 1);     /* the refused address went back */
    assert_int_equal(ca.last_freed, ca.next);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, (uint64_t)n);
    /* Memory is back: the shard grows and takes the same key. */
    assert_int_equal(bh_alloc(reg, 0, 64, &h[n]), BH_OK);
    n++;
    for (int k = 0; k < n; k++)
        assert_int_equal(bh_release(reg, h[k]), BH_OK);
    assert_int_equal(ca.frees, 1 + n);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_count_overflow_is_eoverflow_and_changes_nothing),
        cmocka_unit_test(a_slot_whose_generation_would_wrap_is_retired_for_good),
        cmocka_unit_test(a_live_address_is_never_freed_when_blocks_run_out),
        cmocka_unit_test(a_full_shard_is_a_clean_enomem_for_bh_alloc),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
