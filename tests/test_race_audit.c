/*
 * test_race_audit.c - defects found by the 0.3 concurrency audit, each with
 * the test that failed before its fix.
 *
 * Token misuse is provoked on purpose here, so the witnesses that would make
 * it a valgrind or ASan error are off (main) and misuse reports go to a
 * temporary file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "diag.h"
#include "internal.h"

/* Hands out one fixed address per registry; counts frees. */
typedef struct fixed_alloc {
    uint64_t address;
    int frees;
} fixed_alloc;

static int fa_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device;
    (void)size;
    *address = ((fixed_alloc *)ctx)->address;
    return 0;
}

static void fa_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)device;
    (void)address;
    (void)size;
    ((fixed_alloc *)ctx)->frees++;
}

static bh_registry *make(fixed_alloc *a, uint32_t flags) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){fa_alloc, fa_free, a};
    cfg.flags = BH_CONFIG_NO_ENV | flags;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

/* ======================== Foreign debug tokens ======================== */

/* Registry tags repeat every 255 registries, and token ids start at 1 in
 * every registry. Before the fix a token value was (id, tag) alone, so the
 * 255th debug-refs registry after A issued A's token values bit for bit:
 * bh_release(B, token of A) released B's allocation (freed it, reported
 * FREE), and B's own holder then met BH_ESTALE. Raw handles carry the
 * registry's random salt since 0.3; tokens must too. */
static void a_foreign_token_never_names_a_token_of_another_registry(void **state) {
    (void)state;
    FILE *sink = tmpfile();
    assert_non_null(sink);
    bh__diag_set_sink(sink);
    fixed_alloc aa = {0x10000, 0};
    bh_registry *a = make(&aa, BH_CONFIG_DEBUG_REFS);
    bh_handle ta;
    assert_int_equal(bh_alloc(a, 0, 64, &ta), BH_OK);
    int same_tag_seen = 0;
    for (int r = 0; r < 300; r++) {
        fixed_alloc bb = {0x10000, 0};
        bh_registry *b = make(&bb, BH_CONFIG_DEBUG_REFS);
        same_tag_seen += b->tag == a->tag;
        bh_handle tb;
        assert_int_equal(bh_alloc(b, 0, 64, &tb), BH_OK);
        bh_info info;
        assert_int_equal(bh_retain(b, ta), BH_ESTALE);
        assert_int_equal(bh_info_get(b, ta, &info), BH_ESTALE);
        assert_int_equal(bh_release(b, ta), BH_ESTALE);
        assert_int_equal(bh_release(a, tb), BH_ESTALE);
        assert_int_equal(bb.frees, 0);
        assert_int_equal(bh_info_get(b, tb, &info), BH_OK);
        assert_int_equal(info.refs, 1);
        assert_int_equal(bh_release(b, tb), BH_OK);
        assert_int_equal(bb.frees, 1);
        assert_int_equal(bh_registry_destroy(b), BH_OK);
    }
    assert_true(same_tag_seen >= 1); /* the case that failed was reached */
    assert_int_equal(bh_release(a, ta), BH_OK);
    assert_int_equal(aa.frees, 1);
    assert_int_equal(bh_registry_destroy(a), BH_OK);
    bh__diag_set_sink(NULL);
    fclose(sink);
}

int main(void) {
    bh__witness_enable(0); /* misuse on purpose: not a valgrind or ASan error here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_foreign_token_never_names_a_token_of_another_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
