/*
 * test_diag_reports.c - what the diagnostics report and when they stop the
 * process: BH_DEBUG=fatal, every call with a dead token reported, the
 * registry a foreign token came from, and leak reports that show only the
 * addresses with findings.
 *
 * Misuse on purpose: the witnesses that would make it a valgrind or ASan
 * error are off (main). The fatal cases run in forked children, which the
 * parent checks for SIGABRT.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "diag/capture.h"
#include "diag/diag.h"
#include "support/run_output.h"

/* ======================== Fixture ======================== */

static int next_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device;
    (void)size;
    uint64_t *next = ctx;
    *address = *next;
    *next += 0x10000;
    return 0;
}

static void no_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx;
    (void)device;
    (void)address;
    (void)size;
}

static uint64_t next_address = 0x10000;

/* flags | BH_CONFIG_NO_ENV unless env; the allocator hands out fresh addresses. */
static bh_registry *make(uint32_t flags, int env) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){next_alloc, no_free, &next_address};
    cfg.flags = flags | (env ? 0 : BH_CONFIG_NO_ENV);
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

/* Runs fn in a child with BH_DEBUG=debug and BH_LEAK_REPORT=leak (NULL:
 * unset), its stderr into *out (the caller frees it). Returns the wait
 * status. */
static int run_child(void (*fn)(void), const char *debug, const char *leak, char **out) {
    FILE *err = tmpfile();
    assert_non_null(err);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(err), 2);
        if (debug != NULL)
            setenv("BH_DEBUG", debug, 1);
        if (leak != NULL)
            setenv("BH_LEAK_REPORT", leak, 1);
        fn();
        exit(0); /* exit, not _exit: the leak report runs at exit */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    *out = slurp(err);
    fclose(err);
    return status;
}

static int aborted(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT; }
static int exited_0(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

/* ======================== BH_DEBUG=fatal ======================== */

/* A double release of a token, from the environment's settings. */
static void double_release(void) {
    bh_registry *reg = make(0, 1);
    bh_handle owner, copy;
    if (bh_alloc(reg, 2, 4096, &owner) != BH_OK || bh_dup(reg, owner, &copy) != BH_OK)
        _exit(3);
    (void)bh_release(reg, copy);
    (void)bh_release(reg, copy); /* the culprit */
    (void)bh_release(reg, owner);
    (void)bh_registry_destroy(reg);
}

static void fatal_aborts_after_a_double_release(void **state) {
    (void)state;
    char *out;
    int status = run_child(double_release, "refs,fatal", NULL, &out);
    assert_true(aborted(status));
    assert_non_null(strstr(out, "released more times than it was acquired"));
    assert_non_null(strstr(out, "BH_DEBUG=fatal: aborting after the misuse report above"));
    free(out);
    /* The control: the same program without fatal reports and goes on. */
    status = run_child(double_release, "refs", NULL, &out);
    assert_true(exited_0(status));
    assert_non_null(strstr(out, "released more times than it was acquired"));
    assert_null(strstr(out, "aborting"));
    free(out);
}

/* A use after the token's last release, from the environment's settings. */
static void use_after_release(void) {
    bh_registry *reg = make(0, 1);
    bh_handle h;
    bh_info info;
    if (bh_alloc(reg, 2, 4096, &h) != BH_OK || bh_release(reg, h) != BH_OK)
        _exit(3);
    (void)bh_info_get(reg, h, &info); /* the culprit */
    (void)bh_registry_destroy(reg);
}

static void fatal_aborts_after_a_use_of_a_dead_token(void **state) {
    (void)state;
    char *out;
    assert_true(aborted(run_child(use_after_release, "refs,fatal", NULL, &out)));
    assert_non_null(strstr(out, "bh_info_get of token"));
    free(out);
}

/* The registries left live at exit stay reachable: LeakSanitizer (ASan
 * builds) would otherwise call them leaks and change the exit status. */
static bh_registry *kept;

/* One allocation left live at exit. */
static void leak_one(void) {
    kept = make(0, 1);
    bh_handle h;
    if (bh_alloc(kept, 2, 4096, &h) != BH_OK)
        _exit(3);
}

static void fatal_aborts_after_a_leak_report_at_exit(void **state) {
    (void)state;
    char *out;
    int status = run_child(leak_one, "fatal", "1", &out);
    assert_true(aborted(status));
    assert_non_null(strstr(out, "BH_LEAK_REPORT: registry"));
    assert_non_null(strstr(out, "BH_DEBUG=fatal: aborting after the leak report above"));
    free(out);
    status = run_child(leak_one, NULL, "1", &out);
    assert_true(exited_0(status));
    assert_non_null(strstr(out, "BH_LEAK_REPORT: registry"));
    free(out);
    /* Nothing live: nothing reported, nothing to abort for. */
    status = run_child(double_release, "fatal", "1", &out); /* no refs: no misuse report either */
    assert_true(exited_0(status));
    assert_null(strstr(out, "BH_LEAK_REPORT"));
    free(out);
}

/* ======================== Every call with a dead token ======================== */

/* Named so the report can be checked for them: never inlined. */
__attribute__((noinline)) static bh_handle take_a_copy(bh_registry *reg, bh_handle h) {
    bh_handle t;
    assert_int_equal(bh_dup(reg, h, &t), BH_OK);
    return t;
}
__attribute__((noinline)) static void drop_the_copy(bh_registry *reg, bh_handle t) {
    assert_int_equal(bh_release(reg, t), BH_OK);
}
__attribute__((noinline)) static bh_status retain_the_dead_copy(bh_registry *reg, bh_handle t) {
    return bh_retain(reg, t);
}
__attribute__((noinline)) static bh_status dup_the_dead_copy(bh_registry *reg, bh_handle t) {
    bh_handle again;
    return bh_dup(reg, t, &again);
}
__attribute__((noinline)) static bh_status info_of_the_dead_copy(bh_registry *reg, bh_handle t) {
    bh_info info;
    return bh_info_get(reg, t, &info);
}

/* The report of call `op` in out: its header, where it was used, taken
 * and released (each stack naming the test's function). */
static void assert_reported(const char *out, const char *op, const char *user) {
    char want[160];
    snprintf(want, sizeof(want), "bufhandle: BH_ESTALE: %s of token 0x", op);
    const char *r = strstr(out, want);
    assert_non_null(r);
    const char *end = strstr(r + 1, "bufhandle: BH_ESTALE:");
    size_t len = end != NULL ? (size_t)(end - r) : strlen(r);
    char *one = strndup(r, len);
    assert_non_null(one);
    assert_non_null(strstr(one, "after its last release"));
    assert_non_null(strstr(one, "allocation: device 6 DRAM"));
    const char *used = strstr(one, "  used at:\n"), *taken = strstr(one, "  token taken at:\n"),
               *released = strstr(one, "  released at:\n");
    assert_true(used != NULL && taken != NULL && released != NULL);
    assert_true(used < taken && taken < released);
    const char *u = strstr(used, user), *t = strstr(taken, "take_a_copy"),
               *d = strstr(released, "drop_the_copy");
    assert_true(u != NULL && u < taken);
    assert_true(t != NULL && t < released);
    assert_non_null(d);
    free(one);
}

static void every_call_with_a_dead_token_is_reported_with_its_stacks(void **state) {
    (void)state;
    bh_registry *reg = make(BH_CONFIG_DEBUG_REFS | BH_CONFIG_STACKS, 0);
    bh_handle owner;
    assert_int_equal(bh_alloc(reg, BH_DOMAIN(6, BH_MEM_DRAM), 4096, &owner), BH_OK);
    bh_handle copy = take_a_copy(reg, owner);
    drop_the_copy(reg, copy);
    assert_int_equal(retain_the_dead_copy(reg, copy), BH_ESTALE);
    assert_int_equal(dup_the_dead_copy(reg, copy), BH_ESTALE);
    assert_int_equal(info_of_the_dead_copy(reg, copy), BH_ESTALE);
    /* The owner's token is untouched by any of it. */
    bh_info info;
    assert_int_equal(bh_info_get(reg, owner, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_int_equal(st.stale_ops, 3);
    assert_int_equal(bh_release(reg, owner), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    char *out = slurp(sink);
    assert_reported(out, "bh_retain", "retain_the_dead_copy");
    assert_reported(out, "bh_dup", "dup_the_dead_copy");
    assert_reported(out, "bh_info_get", "info_of_the_dead_copy");
    assert_int_equal(count_of(out, "bufhandle: BH_ESTALE:"), 3);
    free(out);
}

/* ======================== Foreign tokens ======================== */

__attribute__((noinline)) static bh_status release_in_the_wrong_registry(bh_registry *reg, bh_handle h) {
    return bh_release(reg, h);
}
__attribute__((noinline)) static bh_status retain_in_the_wrong_registry(bh_registry *reg, bh_handle h) {
    return bh_retain(reg, h);
}

static void a_foreign_token_names_the_registry_that_issued_it(void **state) {
    (void)state;
    bh_registry *mine = make(BH_CONFIG_DEBUG_REFS, 0);
    bh_registry *plain = make(0, 0);                    /* no diagnostics: plain handles */
    bh_registry *debug = make(BH_CONFIG_DEBUG_REFS, 0); /* tokens */
    bh_handle from_plain, from_debug;
    assert_int_equal(bh_alloc(plain, 1, 64, &from_plain), BH_OK);
    assert_int_equal(bh_alloc(debug, 1, 64, &from_debug), BH_OK);
    assert_int_equal(release_in_the_wrong_registry(mine, from_plain), BH_ESTALE);
    assert_int_equal(retain_in_the_wrong_registry(mine, from_debug), BH_ESTALE);
    char *out = slurp(sink);
    char want[96];
    snprintf(want, sizeof(want), "issued by registry %p (tag ", (void *)plain);
    const char *first = strstr(out, "bh_release of token");
    assert_non_null(first);
    assert_non_null(strstr(first, want));
    snprintf(want, sizeof(want), "issued by registry %p (tag ", (void *)debug);
    assert_non_null(strstr(strstr(out, "bh_retain of token"), want));
    free(out);
    /* Once the issuer is gone, the report says no live registry has its tag. */
    assert_int_equal(bh_release(plain, from_plain), BH_OK);
    assert_int_equal(bh_registry_destroy(plain), BH_OK);
    rewind(sink);
    assert_int_equal(ftruncate(fileno(sink), 0), 0);
    assert_int_equal(bh_release(mine, from_plain), BH_ESTALE); /* a new site */
    out = slurp(sink);
    assert_non_null(strstr(out, "no registry alive in this process has its tag"));
    assert_null(strstr(out, "issued by registry"));
    free(out);
    assert_int_equal(bh_release(debug, from_debug), BH_OK);
    assert_int_equal(bh_registry_destroy(debug), BH_OK);
    assert_int_equal(bh_registry_destroy(mine), BH_OK);
}

/* ======================== The environment's words ======================== */

static const char *track_socket, *tt_enabled; /* the child's values; NULL: unset */

static void set_or_unset(const char *name, const char *value) {
    if (value != NULL)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

/* Two registries from the environment, each with a double release (which
 * BH_DEBUG=refs reports). */
static void two_registries_from_the_environment(void) {
    set_or_unset("BH_TRACK_SOCKET", track_socket);
    set_or_unset("TT_ALLOC_TRACKING_ENABLED", tt_enabled);
    double_release();
    double_release();
}

static void unknown_words_in_the_environment_are_named_once(void **state) {
    (void)state;
    char *out;
    track_socket = "";
    tt_enabled = "yes";
    assert_true(
        exited_0(run_child(two_registries_from_the_environment, " refs,stcks,,history ref", "yes", &out)));
    /* The words it knows still count: refs reported the double releases. */
    assert_int_equal(count_of(out, "released more times than it was acquired"), 2);
    assert_int_equal(count_of(out,
                              "bufhandle: BH_DEBUG: ignoring unknown words \"stcks\", \"ref\" (the words are "
                              "refs, history, stacks, all, strict, fatal)\n"),
                     1);
    assert_int_equal(count_of(out, "bufhandle: BH_DEBUG:"), 1); /* once for the two registries */
    assert_int_equal(count_of(out, "bufhandle: BH_LEAK_REPORT=yes: unknown value"), 1);
    assert_int_equal(count_of(out, "bufhandle: BH_TRACK_SOCKET is empty"), 1);
    assert_int_equal(count_of(out, "bufhandle: TT_ALLOC_TRACKING_ENABLED=yes"), 1);
    free(out);
    /* The control: the same program with words it knows says nothing more. */
    track_socket = NULL;
    tt_enabled = "0";
    assert_true(exited_0(run_child(two_registries_from_the_environment, "refs,history", "0", &out)));
    assert_int_equal(count_of(out, "released more times than it was acquired"), 2);
    assert_int_equal(count_of(out, "bufhandle: BH_"), 2); /* the two reports' BH_ESTALE lines */
    assert_null(strstr(out, "TT_ALLOC"));
    free(out);
}

/* ======================== Leak reports ======================== */

/* 30 addresses allocated and freed (balanced), one leaked, with history. */
static void balanced_and_one_leak(void) {
    kept = make(0, 1);
    for (int i = 0; i < 30; i++) {
        bh_handle h;
        if (bh_alloc(kept, 0, 4096, &h) != BH_OK || bh_release(kept, h) != BH_OK)
            _exit(3);
    }
    bh_handle leaked;
    if (bh_alloc(kept, BH_DOMAIN(0, BH_MEM_L1), 512, &leaked) != BH_OK)
        _exit(4);
}

static void a_leak_report_shows_only_addresses_with_findings_unless_asked(void **state) {
    (void)state;
    char *out;
    assert_true(exited_0(run_child(balanced_and_one_leak, "history", "1", &out)));
    /* History rows print the kind padded to 8 columns before the address. */
    assert_int_equal(count_of(out, "L1       0x"), 1); /* the leak */
    assert_int_equal(count_of(out, "DRAM     0x"), 0); /* none of the 30 balanced ones */
    assert_non_null(strstr(out, "31 addresses, 1 with findings"));
    free(out);
    assert_true(exited_0(run_child(balanced_and_one_leak, "history", "all", &out)));
    assert_int_equal(count_of(out, "L1       0x"), 1);
    assert_int_equal(count_of(out, "DRAM     0x"), 9); /* the top 10 rows: the leak and 9 balanced */
    free(out);
}

/* ======================== Inlined frames ======================== */

static const char *inlined_program; /* diag_inlined, built with -O2 */

static void an_inlined_culprit_is_a_frame_of_its_own(void **state) {
    (void)state;
    char cmd[1024], out[16384];
    snprintf(cmd, sizeof(cmd), "%s 2>&1", inlined_program);
    assert_true(run_output(cmd, out, sizeof(out)) != -2);
    int bug = 0, call = 0;
    const char *lines = strstr(out, "lines ");
    assert_non_null(lines);
    assert_int_equal(sscanf(lines, "lines %d %d", &bug, &call), 2);
    /* "released again at:" then the inlined function at the culprit line,
     * then main at the line that calls it. */
    const char *again = strstr(out, "released again at:\n");
    assert_non_null(again);
    char want[64];
    snprintf(want, sizeof(want), "inlined.c:%d\n", bug);
    const char *first = strstr(again, " in bug_double (inlined) at ");
    assert_non_null(first);
    const char *eol = strchr(first, '\n');
    assert_non_null(eol);
    assert_non_null(strstr(first, want));
    assert_true(strstr(first, want) < eol + 1);
    snprintf(want, sizeof(want), "inlined.c:%d\n", call);
    const char *second = strstr(eol, " in main at ");
    assert_non_null(second);
    assert_true(second < strchr(eol + 1, '\n')); /* the very next line */
    assert_non_null(strstr(second, want));
}

int main(int argc, char **argv) {
    inlined_program = argc > 1 ? argv[1] : NULL;
    bh__witness_enable(0); /* misuse on purpose: not a valgrind or ASan error here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fatal_aborts_after_a_double_release),
        cmocka_unit_test(fatal_aborts_after_a_use_of_a_dead_token),
        cmocka_unit_test(fatal_aborts_after_a_leak_report_at_exit),
        cmocka_unit_test_setup_teardown(every_call_with_a_dead_token_is_reported_with_its_stacks, sink_setup,
                                        sink_teardown),
        cmocka_unit_test_setup_teardown(a_foreign_token_names_the_registry_that_issued_it, sink_setup,
                                        sink_teardown),
        cmocka_unit_test(unknown_words_in_the_environment_are_named_once),
        cmocka_unit_test(a_leak_report_shows_only_addresses_with_findings_unless_asked),
        cmocka_unit_test(an_inlined_culprit_is_a_frame_of_its_own),
    };
    if (inlined_program == NULL) {
        fprintf(stderr, "usage: test_diag_reports PATH-TO-diag_inlined\n");
        return 2;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
