/*
 * test_api.c - every public function and every status it can return.
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

#include "bufhandle/bufhandle.h"
#include "support/checker.h"

#define BASE 0x10000000ull
#define ALIGN 0x1000ull

typedef struct fixture {
    checker *chk;
    bh_registry *reg;
    /* Hooks run inside the callbacks, to show callbacks may call the API. */
    void (*on_free_report)(struct fixture *f, const bh_event *ev);
    void (*on_allocator_free)(struct fixture *f, uint32_t device, uint64_t address);
    bh_status hook_status[4];
    bh_handle hook_handle;
    int hook_calls;
} fixture;

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

static int setup(void **state) {
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

static int teardown(void **state) {
    fixture *f = *state;
    assert_int_equal(checker_finish(f->chk, f->reg), 0);
    test_free(f);
    return 0;
}

static bh_stats stats_of(bh_registry *reg) {
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    return s;
}

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
    bh_registry *reg;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
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
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_DEBUG_REFS;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
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
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_NO_OVERLAP_CHECK;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
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
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.flags = BH_CONFIG_NO_ENV;
        bh_registry *reg;
        bh_handle h;
        assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
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

/* ------------------------------------------------------------ log reporter */

static size_t read_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

/* Makes an empty temporary file from a mkstemp template. */
static void make_temp_file(char *path) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

static void log_reporter_writes_one_json_line_per_event(void **state) {
    (void)state;
    char path[] = "/tmp/bh-log-XXXXXX";
    make_temp_file(path);
    bh_reporter rep;
    assert_int_equal(bh_log_reporter_open(path, NULL), BH_EINVAL);
    assert_int_equal(bh_log_reporter_open("/nonexistent-dir/x.log", &rep), BH_EALLOC);
    assert_int_equal(bh_log_reporter_open(path, &rep), BH_OK);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reporter = rep;
    bh_registry *reg;
    bh_handle h;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_int_equal(bh_intern(reg, 7, 0x1000, 64, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_intern(reg, BH_DOMAIN(3, BH_MEM_L1), 0x2000, 64, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_log_reporter_close(&rep);
    assert_null(rep.report);
    char buf[1024];
    read_file(path, buf, sizeof(buf));
    assert_non_null(strstr(buf, "{\"kind\":\"ALLOC\",\"domain\":7,\"device\":0,\"mem\":7,\"address\":4096,"
                                "\"size\":64,\"seq\":1,"));
    assert_non_null(strstr(buf, "\n{\"kind\":\"FREE\",\"domain\":7,\"device\":0,\"mem\":7,\"address\":4096,"
                                "\"size\":64,\"seq\":2,"));
    assert_non_null(
        strstr(buf, "{\"kind\":\"ALLOC\",\"domain\":49,\"device\":3,\"mem\":1,\"address\":8192,"));
    assert_non_null(strstr(buf, "\"pid\":"));
    assert_non_null(strstr(buf, "\"thread\":"));
    unlink(path);
}

static void the_environment_turns_logging_on_unless_opted_out(void **state) {
    (void)state;
    char path[] = "/tmp/bh-envlog-XXXXXX";
    make_temp_file(path);
    setenv("BH_TRACK_LOG", path, 1);
    bh_registry *reg;
    bh_handle h;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV; /* opted out: nothing logged */
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_int_equal(bh_intern(reg, 1, 0x2000, 8, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    char buf[1024];
    assert_int_equal(read_file(path, buf, sizeof(buf)), 0);
    assert_int_equal(bh_registry_create(NULL, &reg), BH_OK); /* defaults: the environment counts */
    assert_int_equal(bh_intern(reg, 1, 0x2000, 8, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    unsetenv("BH_TRACK_LOG");
    read_file(path, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"kind\":\"ALLOC\",\"domain\":1,\"device\":0,\"mem\":1,\"address\":8192"));
    assert_non_null(strstr(buf, "\"kind\":\"FREE\",\"domain\":1,\"device\":0,\"mem\":1,\"address\":8192"));
    unlink(path);
}

/* 0.2 ignored the tracking variables when the application passed its own
 * reporter. Now both get every event, with the same seq. */
static void the_environment_reporter_tees_with_the_applications_own(void **state) {
    (void)state;
    char path[] = "/tmp/bh-teelog-XXXXXX";
    make_temp_file(path);
    setenv("BH_TRACK_LOG", path, 1);
    checker *chk = checker_new(1, 0, 4, BASE, ALIGN); /* device 0 is interned */
    bh_config cfg = checker_config(chk);
    cfg.flags = 0; /* the environment counts */
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    unsetenv("BH_TRACK_LOG");
    bh_handle h;
    assert_int_equal(bh_intern(reg, 0, BASE, 64, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.reports, 2); /* one event each, handed to both */
    assert_int_equal(checker_alloc_reports(chk), 1);
    assert_int_equal(checker_free_reports(chk), 1);
    const checker_event *ev;
    assert_int_equal(checker_events(chk, &ev), 2);
    const uint64_t free_seq = ev[1].seq;
    assert_int_equal(checker_finish(chk, reg), 0); /* destroys reg: the log is closed */
    char buf[1024], want[128];
    read_file(path, buf, sizeof(buf));
    snprintf(want, sizeof(want), "{\"kind\":\"ALLOC\",\"domain\":0,\"device\":0,\"mem\":0,\"address\":%llu,",
             (unsigned long long)BASE);
    assert_non_null(strstr(buf, want));
    snprintf(want, sizeof(want), "\"size\":64,\"seq\":%llu,", (unsigned long long)free_seq);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "{\"kind\":\"FREE\""));
    unlink(path);
}

/* The application's reporter allocates on the first ALLOC it sees (as a
 * runtime that allocates a companion buffer would): that nested ALLOC takes
 * seq 2 while seq 1 is still being handed out. Both are this thread's
 * events, so every reporter must get 1 before 2; 0.3.1 handed the
 * environment's log 2 first (the application's reporter ran first and the
 * nested event went all the way through before the outer one reached the
 * log). */
typedef struct nesting {
    bh_registry *reg;
    int depth;
    bh_handle inner;
} nesting;

static int nest_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device, (void)size;
    *address = 0x100000 + 0x1000 * (uint64_t)((nesting *)ctx)->depth;
    return 0;
}

static void nest_report(void *ctx, const bh_event *ev) {
    nesting *n = ctx;
    if (ev->kind == BH_EVENT_ALLOC && n->depth++ == 0)
        assert_int_equal(bh_alloc(n->reg, 0, 64, &n->inner), BH_OK);
}

static void a_threads_events_reach_the_environments_log_in_order_when_a_callback_allocates(void **state) {
    (void)state;
    char path[] = "/tmp/bh-nestlog-XXXXXX";
    make_temp_file(path);
    setenv("BH_TRACK_LOG", path, 1);
    nesting n = {NULL, 0, {0}};
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){nest_alloc, NULL, &n};
    cfg.reporter = (bh_reporter){nest_report, &n};
    assert_int_equal(bh_registry_create(&cfg, &n.reg), BH_OK);
    unsetenv("BH_TRACK_LOG");
    bh_handle outer;
    assert_int_equal(bh_alloc(n.reg, 0, 64, &outer), BH_OK);
    assert_int_equal(n.depth, 2); /* the nested ALLOC happened */
    assert_int_equal(bh_release(n.reg, n.inner), BH_OK);
    assert_int_equal(bh_release(n.reg, outer), BH_OK);
    assert_int_equal(bh_registry_destroy(n.reg), BH_OK);
    char buf[2048];
    read_file(path, buf, sizeof(buf));
    unsigned long long last = 0, seq;
    int lines = 0;
    for (const char *p = strstr(buf, "\"seq\":"); p != NULL; p = strstr(p + 1, "\"seq\":")) {
        assert_int_equal(sscanf(p, "\"seq\":%llu", &seq), 1);
        if (seq <= last)
            fail_msg("the log has seq %llu after seq %llu:\n%s", seq, last, buf);
        last = seq;
        lines++;
    }
    assert_int_equal(lines, 4);
    unlink(path);
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
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
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
        T(lookup_finds_live_blocks_and_never_creates),
        T(retain_and_release_count_references),
        T(null_handles_and_registries_are_einval),
        T(stale_forged_and_foreign_handles_are_estale_and_change_nothing),
        cmocka_unit_test(foreign_handles_stay_stale_across_300_registries),
        cmocka_unit_test(domain_macros_pack_device_and_kind),
        cmocka_unit_test(log_reporter_writes_one_json_line_per_event),
        cmocka_unit_test(the_environment_turns_logging_on_unless_opted_out),
        cmocka_unit_test(the_environment_reporter_tees_with_the_applications_own),
        cmocka_unit_test(a_threads_events_reach_the_environments_log_in_order_when_a_callback_allocates),
        cmocka_unit_test(every_status_has_a_distinct_name_and_message),
        cmocka_unit_test(version_matches_the_header),
    };
#undef T
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
