/*
 * test_diag.c - diagnostics: debug references, history, stacks, the dump and
 * the leak report.
 *
 * These tests misuse tokens on purpose, so the witnesses that would make
 * each misuse a valgrind or ASan error are switched off here (main); the
 * tests that check those errors run separate programs (test_diag_checkers.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "diag/capture.h"
#include "diag/diag.h"
#include "json.h"

#ifndef BH_DOMAIN /* until the 0.3 header has them */
#define BH_DOMAIN(device, kind) (((uint32_t)(device) << 4) | ((uint32_t)(kind)&0xFu))
enum { BH_MEM_DRAM = 0, BH_MEM_L1 = 1 };
#endif

/* ======================== Fixture ======================== */

/* Hands out 0x10000, 0x20000, ... or, with reuse, the same address each time. */
typedef struct test_alloc {
    uint64_t next;
    int reuse;
    int allocs, frees;
} test_alloc;

static int ta_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device;
    (void)size;
    test_alloc *a = ctx;
    a->allocs++;
    *address = a->next;
    if (!a->reuse)
        a->next += 0x10000;
    return 0;
}

static void ta_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)device;
    (void)address;
    (void)size;
    /* Atomic: the threads test frees from several threads. */
    __atomic_fetch_add(&((test_alloc *)ctx)->frees, 1, __ATOMIC_RELAXED);
}

static bh_registry *make(test_alloc *a, uint32_t flags) {
    memset(a, 0, sizeof(*a));
    a->next = 0x10000;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){ta_alloc, ta_free, a};
    cfg.flags = BH_CONFIG_NO_ENV | flags;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

static char *dump_of(bh_registry *reg, unsigned flags) {
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(bh_registry_dump(reg, f, flags), BH_OK);
    char *s = slurp(f);
    fclose(f);
    return s;
}

/* ======================== Debug references ======================== */

/* The limitation debug references exist for: plain counting cannot tell who
 * released twice, frees early, and blames the innocent alias. */
static void normal_mode_cannot_see_a_double_release_and_blames_the_alias(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, 0);
    bh_handle owner, alias;
    assert_int_equal(bh_alloc(reg, 4, 4096, &owner), BH_OK);
    assert_int_equal(bh_dup(reg, owner, &alias), BH_OK);
    assert_true(bh_handle_eq(owner, alias)); /* the same value: no token */
    assert_int_equal(bh_release(reg, owner), BH_OK);
    assert_int_equal(bh_release(reg, owner), BH_OK); /* the bug, accepted */
    assert_int_equal(a.frees, 1);                    /* freed under the alias */
    assert_int_equal(bh_release(reg, alias), BH_ESTALE);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

static void debug_refs_catch_a_double_release_at_the_culprit_and_the_alias_survives(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS);
    bh_handle owner, alias;
    assert_int_equal(bh_alloc(reg, 4, 4096, &owner), BH_OK);
    assert_int_equal(bh_dup(reg, owner, &alias), BH_OK);
    assert_false(bh_handle_eq(owner, alias)); /* each reference its own token */
    bh_info info;
    assert_int_equal(bh_info_get(reg, alias, &info), BH_OK);
    assert_int_equal(info.refs, 2);
    assert_int_equal(bh_release(reg, owner), BH_OK);
    assert_int_equal(bh_release(reg, owner), BH_ESTALE); /* caught at the culprit */
    assert_int_equal(a.frees, 0);
    assert_int_equal(bh_info_get(reg, alias, &info), BH_OK); /* the innocent alias is intact */
    assert_int_equal(info.refs, 1);
    assert_int_equal(info.address, 0x10000);
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_int_equal(st.stale_ops, 1);
    assert_int_equal(bh_release(reg, alias), BH_OK);
    assert_int_equal(a.frees, 1);
    assert_int_equal(bh_info_get(reg, alias, &info), BH_ESTALE);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    char *out = slurp(sink);
    assert_non_null(strstr(out, "released more times than it was acquired"));
    free(out);
}

static void retain_adds_to_the_token_it_names_and_info_refs_is_the_total(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS);
    bh_handle t, u, v;
    assert_int_equal(bh_alloc(reg, 1, 64, &t), BH_OK);
    assert_int_equal(bh_retain(reg, t), BH_OK);
    assert_int_equal(bh_retain(reg, t), BH_OK);
    assert_int_equal(bh_lookup(reg, 1, 0x10000, &u), BH_OK);
    assert_int_equal(bh_intern(reg, 1, 0x10000, 32, &v), BH_OK);
    assert_false(bh_handle_eq(t, u) || bh_handle_eq(u, v) || bh_handle_eq(t, v));
    bh_info info;
    assert_int_equal(bh_info_get(reg, v, &info), BH_OK);
    assert_int_equal(info.refs, 5);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bh_release(reg, t), BH_OK);
    assert_int_equal(bh_release(reg, t), BH_ESTALE); /* acquired three times, released four */
    assert_int_equal(bh_retain(reg, t), BH_ESTALE);  /* a released token cannot come back */
    assert_int_equal(bh_release(reg, u), BH_OK);
    assert_int_equal(a.frees, 0);
    assert_int_equal(bh_release(reg, v), BH_OK);
    assert_int_equal(a.frees, 1);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

static void a_token_never_issued_is_stale_and_reported(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS);
    bh_handle t;
    assert_int_equal(bh_alloc(reg, 1, 64, &t), BH_OK);
    bh_handle forged = {t.bits + 1};
    assert_int_equal(bh_release(reg, forged), BH_ESTALE);
    assert_int_equal(bh_retain(reg, forged), BH_ESTALE);
    assert_int_equal(bh_release(reg, BH_HANDLE_NULL), BH_EINVAL);
    bh_info info;
    assert_int_equal(bh_info_get(reg, t, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_release(reg, t), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    char *out = slurp(sink);
    assert_non_null(strstr(out, "never issued"));
    free(out);
}

/* Named so the report can be checked for them: never inlined. */
__attribute__((noinline)) static bh_handle take_the_token(bh_registry *reg, bh_handle h) {
    bh_handle t;
    assert_int_equal(bh_dup(reg, h, &t), BH_OK);
    return t;
}
__attribute__((noinline)) static void release_it_first(bh_registry *reg, bh_handle t) {
    assert_int_equal(bh_release(reg, t), BH_OK);
}
__attribute__((noinline)) static bh_status release_it_again(bh_registry *reg, bh_handle t) {
    return bh_release(reg, t);
}

static void a_double_release_prints_both_stacks_once_per_site(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS | BH_CONFIG_STACKS);
    bh_handle owner;
    assert_int_equal(bh_alloc(reg, 4, 4096, &owner), BH_OK);
    bh_handle t = take_the_token(reg, owner);
    release_it_first(reg, t);
    for (int i = 0; i < 5; i++) /* one site, five times: one report */
        assert_int_equal(release_it_again(reg, t), BH_ESTALE);
    assert_int_equal(bh_release(reg, owner), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    char *out = slurp(sink);
    assert_int_equal(count_of(out, "released more times"), 1);
    const char *again = strstr(out, "released again at:");
    const char *taken = strstr(out, "token taken at:");
    const char *first = strstr(out, "first released at:");
    assert_non_null(again);
    assert_non_null(taken);
    assert_non_null(first);
    assert_true(again < taken && taken < first);
    /* Each section starts at the caller's frame, not inside the library. */
    assert_non_null(strstr(again, "#0 "));
    assert_true(strstr(again, "release_it_again") < taken);
    assert_true(strstr(taken, "take_the_token") < first);
    assert_non_null(strstr(first, "release_it_first"));
    assert_null(strstr(out, "in bh_release"));
    free(out);
}

static void the_environment_turns_diagnostics_on_unless_no_env(void **state) {
    (void)state;
    setenv("BH_DEBUG", "history, refs", 1);
    bh_registry *reg;
    assert_int_equal(bh_registry_create(NULL, &reg), BH_OK);
    bh_handle t, u;
    assert_int_equal(bh_intern(reg, 1, 0x1000, 64, &t), BH_OK);
    assert_int_equal(bh_dup(reg, t, &u), BH_OK);
    assert_false(bh_handle_eq(t, u));
    char *out = dump_of(reg, 0);
    assert_non_null(strstr(out, "diagnostics: refs,history)"));
    free(out);
    assert_int_equal(bh_release(reg, t), BH_OK);
    assert_int_equal(bh_release(reg, u), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);

    test_alloc a;
    reg = make(&a, 0); /* BH_CONFIG_NO_ENV */
    assert_int_equal(bh_alloc(reg, 1, 64, &t), BH_OK);
    assert_int_equal(bh_dup(reg, t, &u), BH_OK);
    assert_true(bh_handle_eq(t, u));
    assert_int_equal(bh_release(reg, t), BH_OK);
    assert_int_equal(bh_release(reg, u), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    unsetenv("BH_DEBUG");
}

/* White-box: the table keeps a bounded number of tombstones, oldest out
 * first, and grows past its first allocation with every token findable. */
static void released_tokens_are_remembered_up_to_the_bound(void **state) {
    (void)state;
    bh__tokens *t;
    assert_int_equal(bh__tokens_create(7, 0x5a17u, 2, BH__WITNESS_NONE, &t), BH_OK);
    enum { N = 200 }; /* more than the first allocation of records */
    bh_handle tok[N];
    bh_info info = {1, 0x1000, 64, 1};
    for (int i = 0; i < N; i++) {
        bh__token_ticket ticket;
        assert_int_equal(bh__tokens_reserve(t, &ticket), BH_OK);
        tok[i] = bh__tokens_issue(t, ticket, (bh_handle){0x42}, &info, NULL);
    }
    assert_int_equal(bh__tokens_live(t), N);
    bh_handle block;
    bh__token_info ti;
    for (int i = 0; i < N; i++) {
        assert_int_equal(bh__tokens_release(t, tok[i], &block, &ti), BH__TOKEN_LAST);
        assert_int_equal(block.bits, 0x42);
    }
    assert_int_equal(bh__tokens_live(t), 0);
    assert_int_equal(bh__tokens_release(t, tok[N - 1], &block, &ti), BH__TOKEN_RELEASED);
    assert_int_equal(bh__tokens_release(t, tok[N - 2], &block, &ti), BH__TOKEN_RELEASED);
    assert_int_equal(bh__tokens_release(t, tok[N - 3], &block, &ti), BH__TOKEN_UNKNOWN); /* forgotten */
    bh_handle foreign = {tok[0].bits ^ (0x01u << 24)};                                   /* another tag */
    assert_int_equal(bh__tokens_block(t, foreign, &block, NULL), BH__TOKEN_UNKNOWN);
    bh__tokens_destroy(t);
}

/* ======================== Dump ======================== */

static void the_dump_lists_exactly_the_leaked_allocations(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, 0);
    bh_handle h[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(bh_alloc(reg, BH_DOMAIN(i, i % 2 ? BH_MEM_L1 : BH_MEM_DRAM), 4096u << i, &h[i]),
                         BH_OK);
    assert_int_equal(bh_release(reg, h[0]), BH_OK);
    assert_int_equal(bh_release(reg, h[2]), BH_OK);
    assert_int_equal(bh_retain(reg, h[3]), BH_OK);

    char *text = dump_of(reg, 0);
    assert_non_null(strstr(text, "2 live allocations, 40960 bytes"));
    assert_non_null(strstr(text, "device 1 L1 address 0x20000 size 8192 refs 1"));
    assert_non_null(strstr(text, "device 3 L1 address 0x40000 size 32768 refs 2"));
    assert_null(strstr(text, "0x10000"));
    assert_null(strstr(text, "0x30000"));
    free(text);

    char *js = dump_of(reg, BH_DUMP_JSON);
    json *j = json_parse(js);
    assert_non_null(j);
    assert_int_equal(json_get(j, "live_allocations")->integer, 2);
    assert_int_equal(json_get(j, "live_bytes")->integer, 40960);
    const json *allocs = json_get(j, "allocations");
    assert_int_equal(allocs->count, 2);
    const json *x = json_at(allocs, 0), *y = json_at(allocs, 1);
    assert_int_equal(json_get(x, "device")->integer, 1);
    assert_string_equal(json_get(x, "kind")->string, "L1");
    assert_int_equal(json_get(x, "address")->integer, 0x20000);
    assert_int_equal(json_get(x, "size")->integer, 8192);
    assert_int_equal(json_get(x, "refs")->integer, 1);
    assert_int_equal(json_get(y, "domain")->integer, BH_DOMAIN(3, BH_MEM_L1));
    assert_int_equal(json_get(y, "address")->integer, 0x40000);
    assert_int_equal(json_get(y, "refs")->integer, 2);
    json_free(j);
    free(js);

    assert_int_equal(bh_registry_destroy(reg), BH_EBUSY);
    assert_int_equal(bh_release(reg, h[1]), BH_OK);
    assert_int_equal(bh_release(reg, h[3]), BH_OK);
    assert_int_equal(bh_release(reg, h[3]), BH_OK);
    text = dump_of(reg, 0);
    assert_non_null(strstr(text, "0 live allocations, 0 bytes"));
    free(text);
    assert_int_equal(bh_registry_dump(reg, NULL, 0), BH_EINVAL);
    assert_int_equal(bh_registry_dump(reg, stderr, 0x80), BH_EINVAL);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

__attribute__((noinline)) static bh_handle leaky_factory(bh_registry *reg) {
    bh_handle h;
    assert_int_equal(bh_alloc(reg, 2, 1024, &h), BH_OK);
    return h;
}

static void a_stack_names_the_function_that_created_a_leaked_reference(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS | BH_CONFIG_STACKS);
    bh_handle fine, leaked = leaky_factory(reg);
    assert_int_equal(bh_alloc(reg, 2, 1024, &fine), BH_OK);
    assert_int_equal(bh_release(reg, fine), BH_OK);

    char *text = dump_of(reg, 0);
    assert_int_equal(count_of(text, "live allocation"), 1);
    assert_non_null(strstr(text, "created at:\n      #0 "));
    assert_non_null(strstr(text, "in leaky_factory at "));
    assert_non_null(strstr(text, "test_diag.c:")); /* file:line from the debug information */
    assert_non_null(strstr(text, "taken at:"));
    free(text);

    char *js = dump_of(reg, BH_DUMP_JSON);
    json *j = json_parse(js);
    assert_non_null(j);
    const json *alloc = json_at(json_get(j, "allocations"), 0);
    const json *frame = json_at(json_get(alloc, "created_at"), 0);
    assert_string_equal(json_get(frame, "function")->string, "leaky_factory");
    assert_non_null(strstr(json_get(frame, "file")->string, "test_diag.c"));
    assert_true(json_get(frame, "line")->integer > 0);
    const json *tok = json_at(json_get(alloc, "tokens"), 0);
    assert_int_equal(json_get(tok, "count")->integer, 1);
    assert_string_equal(json_get(json_at(json_get(tok, "taken_at"), 0), "function")->string, "leaky_factory");
    json_free(j);
    free(js);

    assert_int_equal(bh_release(reg, leaked), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ======================== History ======================== */

static void history_counts_every_event_per_address_and_ranks_the_worst(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS | BH_CONFIG_HISTORY | BH_CONFIG_STACKS);
    a.reuse = 1; /* the allocator hands 0x10000 out again after each free */
    bh_handle h, alias, other;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bh_alloc(reg, 7, 256, &h), BH_OK);
        assert_int_equal(bh_intern(reg, 7, 0x10000, 128, &alias), BH_OK);
        assert_int_equal(bh_release(reg, alias), BH_OK);
        assert_int_equal(bh_release(reg, alias), BH_ESTALE);
        assert_int_equal(bh_release(reg, h), BH_OK);
    }
    assert_int_equal(bh_intern(reg, 7, 0x90000, 64, &other), BH_OK);
    assert_int_equal(bh_release(reg, other), BH_OK);

    char *js = dump_of(reg, BH_DUMP_JSON | BH_DUMP_HISTORY_ALL);
    json *j = json_parse(js);
    assert_non_null(j);
    const json *hist = json_get(j, "history");
    assert_int_equal(json_get(hist, "addresses")->integer, 2);
    const json *worst = json_at(json_get(hist, "top"), 0);
    assert_int_equal(json_get(worst, "address")->integer, 0x10000);
    assert_int_equal(json_get(worst, "allocs")->integer, 3);
    assert_int_equal(json_get(worst, "aliases")->integer, 3);
    assert_int_equal(json_get(worst, "releases")->integer, 6);
    assert_int_equal(json_get(worst, "frees")->integer, 3);
    assert_int_equal(json_get(worst, "stale")->integer, 3);
    const json *freed_at = json_at(json_get(worst, "last_freed_at"), 0);
    assert_string_equal(json_get(freed_at, "function")->string,
                        "history_counts_every_event_per_address_and_ranks_the_worst");
    const json *next = json_at(json_get(hist, "top"), 1);
    assert_int_equal(json_get(next, "address")->integer, 0x90000);
    assert_int_equal(json_get(next, "allocs")->integer, 1);
    assert_int_equal(json_get(next, "frees")->integer, 1);
    json_free(j);
    free(js);

    char *text = dump_of(reg, 0);
    assert_non_null(strstr(text, "history: 2 addresses"));
    assert_non_null(strstr(text, "last freed at:\n        #0 "));
    free(text);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* Every way of taking a reference is an alias in the history, with debug
 * references or without: a program that releases everything it took shows
 * allocs + aliases == releases at each address (bh_dup and bh_retain went
 * uncounted, and without debug references bh_dup is a bh_retain). */
static void history_counts_dup_and_retain_as_aliases_in_every_mode(void **state) {
    (void)state;
    const uint32_t modes[] = {BH_CONFIG_HISTORY, BH_CONFIG_HISTORY | BH_CONFIG_DEBUG_REFS};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        test_alloc a;
        bh_registry *reg = make(&a, modes[m]);
        bh_handle h, r[5];
        uint64_t address;
        assert_int_equal(bh_alloc_addr(reg, 2, 4096, &h, &address), BH_OK);
        assert_int_equal(bh_intern(reg, 2, address, 4096, &r[0]), BH_OK);
        assert_int_equal(bh_lookup(reg, 2, address, &r[1]), BH_OK);
        assert_int_equal(bh_lookup_containing(reg, 2, address + 64, &r[2]), BH_OK);
        assert_int_equal(bh_dup(reg, h, &r[3]), BH_OK);
        assert_int_equal(bh_dup(reg, r[3], &r[4]), BH_OK);
        assert_int_equal(bh_retain(reg, r[4]), BH_OK);
        assert_int_equal(bh_release(reg, r[4]), BH_OK); /* the retain's */
        for (int i = 4; i >= 0; i--)
            assert_int_equal(bh_release(reg, r[i]), BH_OK);
        assert_int_equal(bh_release(reg, h), BH_OK);
        assert_int_equal(a.frees, 1);

        char *js = dump_of(reg, BH_DUMP_JSON | BH_DUMP_HISTORY_ALL);
        json *j = json_parse(js);
        assert_non_null(j);
        const json *e = json_at(json_get(json_get(j, "history"), "top"), 0);
        assert_int_equal(json_get(e, "address")->integer, address);
        assert_int_equal(json_get(e, "allocs")->integer, 1);
        assert_int_equal(json_get(e, "aliases")->integer, 6);
        assert_int_equal(json_get(e, "releases")->integer, 7);
        assert_int_equal(json_get(e, "frees")->integer, 1);
        json_free(j);
        free(js);
        assert_int_equal(bh_registry_destroy(reg), BH_OK);
    }
}

/* bh_stats.stale_ops counts calls answered BH_ESTALE, one each, whichever
 * diagnostics are on: with history or stacks but no debug references the
 * release of a stale handle read its address first, and both that read and
 * the release counted it. */
static void a_stale_call_counts_once_in_every_mode(void **state) {
    (void)state;
    const uint32_t modes[] = {0,
                              BH_CONFIG_STACKS,
                              BH_CONFIG_HISTORY,
                              BH_CONFIG_HISTORY | BH_CONFIG_STACKS,
                              BH_CONFIG_DEBUG_REFS,
                              BH_CONFIG_DEBUG_REFS | BH_CONFIG_HISTORY | BH_CONFIG_STACKS};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        test_alloc a;
        bh_registry *reg = make(&a, modes[m]);
        bh_handle h;
        bh_info info;
        bh_stats s;
        assert_int_equal(bh_alloc(reg, 1, 64, &h), BH_OK);
        assert_int_equal(bh_release(reg, h), BH_OK);
        assert_int_equal(bh_release(reg, h), BH_ESTALE);
        assert_int_equal(bh_stats_get(reg, &s), BH_OK);
        assert_int_equal(s.stale_ops, 1);
        assert_int_equal(bh_retain(reg, h), BH_ESTALE);
        assert_int_equal(bh_info_get(reg, h, &info), BH_ESTALE);
        assert_int_equal(bh_stats_get(reg, &s), BH_OK);
        assert_int_equal(s.stale_ops, 3);
        assert_int_equal(bh_registry_destroy(reg), BH_OK);
    }
}

/* ======================== Threads ======================== */

typedef struct worker {
    bh_registry *reg;
    bh_handle shared;
    int rounds;
} worker;

static void *dup_and_release(void *arg) {
    worker *w = arg;
    for (int i = 0; i < w->rounds; i++) {
        bh_handle mine, own;
        if (bh_dup(w->reg, w->shared, &mine) != BH_OK || bh_retain(w->reg, mine) != BH_OK)
            return (void *)1;
        bh_status st;
        /* BH_EBUSY: another thread is freeing that address right now. */
        while ((st = bh_intern(w->reg, 3, 0x20000 + (uint64_t)(i % 4) * 0x1000, 64, &own)) == BH_EBUSY)
            sched_yield();
        if (st != BH_OK)
            return (void *)1;
        if (bh_release(w->reg, mine) != BH_OK || bh_release(w->reg, mine) != BH_OK ||
            bh_release(w->reg, own) != BH_OK)
            return (void *)1;
    }
    return NULL;
}

static void tokens_history_and_stacks_hold_up_under_threads(void **state) {
    (void)state;
    test_alloc a;
    bh_registry *reg = make(&a, BH_CONFIG_DEBUG_REFS | BH_CONFIG_HISTORY | BH_CONFIG_STACKS);
    bh_handle shared;
    assert_int_equal(bh_alloc(reg, 3, 4096, &shared), BH_OK);
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    worker w = {reg, shared, 300};
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, dup_and_release, &w), 0);
    for (int i = 0; i < THREADS; i++) {
        void *rc;
        assert_int_equal(pthread_join(t[i], &rc), 0);
        assert_null(rc);
    }
    bh_info info;
    assert_int_equal(bh_info_get(reg, shared, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    char *js = dump_of(reg, BH_DUMP_JSON | BH_DUMP_HISTORY_ALL);
    json *j = json_parse(js);
    assert_non_null(j);
    assert_int_equal(json_get(j, "live_allocations")->integer, 1);
    const json *top = json_get(json_get(j, "history"), "top");
    uint64_t releases = 0, frees = 0;
    for (size_t i = 0; i < top->count; i++) {
        releases += json_get(json_at(top, i), "releases")->integer;
        frees += json_get(json_at(top, i), "frees")->integer;
    }
    assert_int_equal(releases, THREADS * 300 * 3);
    json_free(j);
    free(js);
    assert_int_equal(bh_release(reg, shared), BH_OK); /* the shared allocation's own free */
    /* Every free the allocator saw is in the history, and nothing else. */
    assert_int_equal((uint64_t)a.frees, frees + 1);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ======================== Leak report ======================== */

static void leak_report_at_exit_prints_live_allocations(void **state) {
    (void)state;
    char path[] = "/tmp/bh-leak-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        setenv("BH_LEAK_REPORT", "1", 1);
        setenv("BH_DEBUG", "stacks", 1);
        bh_registry *kept, *clean;
        bh_handle h;
        if (bh_registry_create(NULL, &kept) != BH_OK || bh_registry_create(NULL, &clean) != BH_OK ||
            bh_intern(kept, 5, 0xabc000, 512, &h) != BH_OK)
            _exit(3);
        exit(0); /* runs the report; clean has nothing live and stays quiet */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    FILE *f = fdopen(fd, "r");
    fseek(f, 0, SEEK_END);
    char *out = slurp(f);
    fclose(f);
    unlink(path);
    assert_int_equal(count_of(out, "BH_LEAK_REPORT: registry"), 1);
    assert_non_null(strstr(out, "has 1 live allocation at exit"));
    assert_non_null(strstr(out, "device 0 user address 0xabc000 size 512 refs 1"));
    assert_non_null(strstr(out, "leak_report_at_exit_prints_live_allocations"));
    free(out);
}

int main(void) {
    bh__witness_enable(0); /* misuse on purpose: not a valgrind or ASan error here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(normal_mode_cannot_see_a_double_release_and_blames_the_alias),
        cmocka_unit_test_setup_teardown(
            debug_refs_catch_a_double_release_at_the_culprit_and_the_alias_survives, sink_setup,
            sink_teardown),
        cmocka_unit_test_setup_teardown(retain_adds_to_the_token_it_names_and_info_refs_is_the_total,
                                        sink_setup, sink_teardown),
        cmocka_unit_test_setup_teardown(a_token_never_issued_is_stale_and_reported, sink_setup,
                                        sink_teardown),
        cmocka_unit_test_setup_teardown(a_double_release_prints_both_stacks_once_per_site, sink_setup,
                                        sink_teardown),
        cmocka_unit_test(the_environment_turns_diagnostics_on_unless_no_env),
        cmocka_unit_test(released_tokens_are_remembered_up_to_the_bound),
        cmocka_unit_test(the_dump_lists_exactly_the_leaked_allocations),
        cmocka_unit_test(a_stack_names_the_function_that_created_a_leaked_reference),
        cmocka_unit_test_setup_teardown(history_counts_every_event_per_address_and_ranks_the_worst,
                                        sink_setup, sink_teardown),
        cmocka_unit_test(history_counts_dup_and_retain_as_aliases_in_every_mode),
        cmocka_unit_test_setup_teardown(a_stale_call_counts_once_in_every_mode, sink_setup, sink_teardown),
        cmocka_unit_test(tokens_history_and_stacks_hold_up_under_threads),
        cmocka_unit_test(leak_report_at_exit_prints_live_allocations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
