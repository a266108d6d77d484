/*
 * api_fixture.c - the API tests' registry (api_fixture.h).
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

static void forward_report(void *ctx, const bh_event *ev) {
    fixture *f = ctx;
    checker_reporter(f->chk).report(f->chk, ev);
    if (ev->kind == BH_EVENT_FREE && f->on_free_report != NULL)
        f->on_free_report(f, ev);
}

static int forward_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    fixture *f = ctx;
    return checker_allocator(f->chk).alloc(f->chk, device, size, address);
}

static void forward_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    fixture *f = ctx;
    checker_allocator(f->chk).free(f->chk, device, address, size);
    if (f->on_allocator_free != NULL)
        f->on_allocator_free(f, device, address);
}

int api_setup(void **state) {
    fixture *f = test_calloc(1, sizeof(*f));
    f->chk = checker_new(4, 3, 8, BASE, ALIGN); /* devices 0-2 allocate, 3 is adopted */
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){forward_alloc, forward_free, f};
    cfg.reporter = (bh_reporter){forward_report, f};
    cfg.flags = BH_CONFIG_NO_ENV;
    assert_int_equal(bh_registry_create(&cfg, &f->reg), BH_OK);
    *state = f;
    return 0;
}

int api_teardown(void **state) {
    fixture *f = *state;
    assert_int_equal(checker_finish(f->chk, f->reg), 0);
    test_free(f);
    return 0;
}

bh_stats stats_of(bh_registry *reg) {
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    return s;
}

/* ------------------------------------------------------------ registry */

bh_registry *registry_with(uint32_t flags) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = flags;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}
