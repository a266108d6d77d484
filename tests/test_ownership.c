/*
 * test_ownership.c - who may create a block: bh_alloc_addr, strict intern
 * (BH_CONFIG_STRICT_INTERN, BH_DEBUG=strict), and the answer to an intern
 * inside a live allocation while a dying block at that exact address is
 * still linked.
 *
 * Black-box: the public API only, with a scripted allocator (it answers the
 * address the test sets) that counts frees and reports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/fixed_alloc.h"

/* Answers fa.next (or fails if fa.fail is set), counts frees (fa first: the
 * fixed allocator's callbacks take the struct as theirs); counts ALLOC
 * reports. */
typedef struct scripted {
    fixed_alloc fa;
    int alloc_reports;
    bh_registry *reg; /* for the free callback below */
    int take_over, probed;
    bh_status in_free;    /* what the callback's bh_intern answered */
    bh_handle taken_over; /* the callback's bh_alloc */
} scripted;

static void sc_report(void *ctx, const bh_event *ev) {
    if (ev->kind == BH_EVENT_ALLOC)
        ((scripted *)ctx)->alloc_reports++;
}

static bh_registry *make(scripted *s, void (*free_fn)(void *, uint32_t, uint64_t, uint64_t), uint32_t flags) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){fixed_alloc_alloc, free_fn, s};
    cfg.reporter = (bh_reporter){sc_report, s};
    cfg.flags = flags;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    s->reg = reg;
    return reg;
}

static bh_stats stats_of(bh_registry *reg) {
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    return st;
}

/* ======================== bh_alloc_addr ======================== */

static void alloc_addr_returns_the_address_the_allocator_chose(uint32_t flags) {
    scripted s = {.fa.next = 0x40000};
    bh_registry *reg = make(&s, fixed_alloc_free, BH_CONFIG_NO_ENV | flags);
    bh_handle h;
    uint64_t address = 7;
    assert_int_equal(bh_alloc_addr(reg, 3, 0x100, &h, &address), BH_OK);
    assert_int_equal(address, 0x40000);
    bh_info info;
    assert_int_equal(bh_info_get(reg, h, &info), BH_OK);
    assert_int_equal(info.address, address);
    assert_int_equal(info.device, 3);
    /* NULL: just bh_alloc. */
    bh_handle h2;
    s.fa.next = 0x50000;
    assert_int_equal(bh_alloc_addr(reg, 3, 0x100, &h2, NULL), BH_OK);
    /* On error the address is left alone. */
    s.fa.fail = 1;
    uint64_t untouched = 9;
    bh_handle h3;
    assert_int_equal(bh_alloc_addr(reg, 3, 0x100, &h3, &untouched), BH_EALLOC);
    assert_int_equal(untouched, 9);
    s.fa.fail = 0;
    s.fa.next = 0x40000; /* live: the allocator's bug, BH_EEXIST; the contract: unchanged on error */
    assert_int_equal(bh_alloc_addr(reg, 3, 0x100, &h3, &untouched), BH_EEXIST);
    assert_int_equal(untouched, 9);
    assert_int_equal(bh_alloc_addr(reg, 3, 0, &h3, &untouched), BH_EINVAL);
    assert_int_equal(untouched, 9);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_release(reg, h2), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    assert_int_equal(s.fa.frees, 2);
}

static void alloc_addr_gives_the_address_and_a_working_handle(void **state) {
    (void)state;
    alloc_addr_returns_the_address_the_allocator_chose(0);
}

static void alloc_addr_gives_the_address_with_debug_tokens_too(void **state) {
    (void)state;
    alloc_addr_returns_the_address_the_allocator_chose(BH_CONFIG_DEBUG_REFS | BH_CONFIG_HISTORY);
}

/* ======================== Strict intern ======================== */

/* The trial's case: a buffer re-created at a stale address (freed), inside
 * freed memory, and at an address never allocated. Strict: each is
 * BH_ENOTFOUND at the call, nothing is created or reported, each is counted;
 * the next bh_alloc of the memory works (it failed with BH_EEXIST when the
 * intern had made an owner there). Aliases, views inside a live allocation
 * and bh_adopt behave as without the flag. */
static void strict_intern_never_creates(uint32_t flags) {
    scripted s = {.fa.next = 0x10000};
    bh_registry *reg = make(&s, fixed_alloc_free, flags);
    bh_handle a, h;
    assert_int_equal(bh_alloc(reg, 1, 0x1000, &a), BH_OK);
    /* Alias and interior view of the live allocation: as ever. */
    assert_int_equal(bh_intern(reg, 1, 0x10000, 0x1000, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_intern(reg, 1, 0x10800, 0x100, &h), BH_EOVERLAP);
    assert_int_equal(bh_release(reg, a), BH_OK); /* freed */
    int reports = s.alloc_reports;

    assert_int_equal(bh_intern(reg, 1, 0x10000, 0x1000, &h), BH_ENOTFOUND); /* stale address */
    assert_int_equal(bh_intern(reg, 1, 0x10800, 0x100, &h), BH_ENOTFOUND);  /* inside freed memory */
    assert_int_equal(bh_intern(reg, 9, 0x77000, 0x100, &h), BH_ENOTFOUND);  /* never allocated */
    bh_stats st = stats_of(reg);
    assert_int_equal(st.interns_refused, 3);
    assert_int_equal(st.interns_new, 0);
    assert_int_equal(st.live_handles, 0);
    assert_int_equal(s.alloc_reports, reports);

    /* The memory is the allocator's again: its next bh_alloc is no conflict. */
    assert_int_equal(bh_alloc(reg, 1, 0x1000, &a), BH_OK);
    assert_int_equal(stats_of(reg).conflicts, 0);
    assert_int_equal(bh_release(reg, a), BH_OK);
    /* bh_adopt still creates. */
    assert_int_equal(bh_adopt(reg, 1, 0x30000, 0x100, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    assert_int_equal(s.fa.frees, 3);
}

static void strict_intern_refuses_addresses_with_no_live_allocation(void **state) {
    (void)state;
    strict_intern_never_creates(BH_CONFIG_NO_ENV | BH_CONFIG_STRICT_INTERN);
}

static void strict_intern_refuses_with_debug_tokens_too(void **state) {
    (void)state;
    strict_intern_never_creates(BH_CONFIG_NO_ENV | BH_CONFIG_STRICT_INTERN | BH_CONFIG_DEBUG_REFS);
}

static void bh_debug_strict_turns_strict_intern_on(void **state) {
    (void)state;
    unsetenv("BH_TRACK_SOCKET");
    unsetenv("BH_TRACK_LOG");
    unsetenv("TT_ALLOC_TRACKING_ENABLED");
    unsetenv("BH_LEAK_REPORT");
    assert_int_equal(setenv("BH_DEBUG", "strict", 1), 0);
    strict_intern_never_creates(0);
    assert_int_equal(setenv("BH_DEBUG", "refs,strict", 1), 0);
    strict_intern_never_creates(0);
    unsetenv("BH_DEBUG");
}

static void without_strict_an_intern_of_a_freed_address_creates(void **state) {
    (void)state;
    scripted s = {.fa.next = 0x10000};
    bh_registry *reg = make(&s, fixed_alloc_free, BH_CONFIG_NO_ENV);
    bh_handle h;
    assert_int_equal(bh_intern(reg, 9, 0x77000, 0x100, &h), BH_OK); /* the control: 0.3's meaning */
    assert_int_equal(stats_of(reg).interns_refused, 0);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ======================== A dying key inside a live allocation ======================== */

/* X = [0x10000, 0x10100) dies; in its allocator free (its free has started,
 * its key is still linked) the allocator may first hand out [0xff00,
 * 0x11000), which contains X (take_over: bh_alloc takes X's range over), and
 * then a bh_intern at X's exact address asks. A reference it wrongly gets is
 * let go at once. */
static void free_then_intern_at_x(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    scripted *s = ctx;
    (void)size;
    s->fa.frees++;
    if (address != 0x10000 || s->probed++ != 0)
        return;
    if (s->take_over) {
        s->fa.next = 0xff00;
        assert_int_equal(bh_alloc(s->reg, device, 0x1100, &s->taken_over), BH_OK);
    }
    bh_handle h;
    s->in_free = bh_intern(s->reg, device, 0x10000, 0x10, &h);
    if (s->in_free == BH_OK)
        (void)bh_release(s->reg, h);
}

/* What that bh_intern answered; *st the registry's counters after it. */
static bh_status intern_at_dying_x(int take_over, bh_stats *st) {
    scripted s = {.fa.next = 0x10000, .take_over = take_over};
    bh_registry *reg = make(&s, free_then_intern_at_x, BH_CONFIG_NO_ENV);
    bh_handle x;
    assert_int_equal(bh_alloc(reg, 2, 0x100, &x), BH_OK);
    assert_int_equal(bh_release(reg, x), BH_OK);
    *st = stats_of(reg);
    if (take_over)
        assert_int_equal(bh_release(reg, s.taken_over), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    assert_int_equal(s.fa.frees, 1 + take_over);
    return s.in_free;
}

/* The address is inside a live allocation: BH_EOVERLAP, as for any interior
 * address (0.3.1 answered BH_EBUSY, whose message sends the caller to
 * bh_adopt, which answered BH_EOVERLAP). */
static void an_intern_at_a_dying_key_inside_a_live_allocation_is_an_overlap(void **state) {
    (void)state;
    bh_stats st;
    assert_int_equal(intern_at_dying_x(1, &st), BH_EOVERLAP);
    assert_int_equal(st.overlaps, 1);
    assert_int_equal(st.busy, 0);
}

/* The control: with nothing live around it, the dying key is BH_EBUSY. */
static void an_intern_at_a_dying_key_alone_is_busy(void **state) {
    (void)state;
    bh_stats st;
    assert_int_equal(intern_at_dying_x(0, &st), BH_EBUSY);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.overlaps, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alloc_addr_gives_the_address_and_a_working_handle),
        cmocka_unit_test(alloc_addr_gives_the_address_with_debug_tokens_too),
        cmocka_unit_test(strict_intern_refuses_addresses_with_no_live_allocation),
        cmocka_unit_test(strict_intern_refuses_with_debug_tokens_too),
        cmocka_unit_test(bh_debug_strict_turns_strict_intern_on),
        cmocka_unit_test(without_strict_an_intern_of_a_freed_address_creates),
        cmocka_unit_test(an_intern_at_a_dying_key_inside_a_live_allocation_is_an_overlap),
        cmocka_unit_test(an_intern_at_a_dying_key_alone_is_busy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
