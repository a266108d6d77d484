/*
 * test_diag_checkers.c - every misuse that debug references catch is also an
 * error of the memory checker the program runs under, with the checker's own
 * stacks: where the token was taken and where it was first released.
 *
 *   test_diag_checkers valgrind VALGRIND SUPP PROGRAM   memcheck runs of diag_misuse
 *   test_diag_checkers asan PROGRAM                an ASan build of diag_misuse
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "support/run_output.h"

static const char *checker; /* "valgrind" or "asan" */
static const char *valgrind;
static const char *suppressions;
static const char *program;

typedef struct run {
    int exit_code; /* -1: killed by a signal */
    char out[1 << 16];
} run;

/* Runs the program in one mode under the checker; stdout and stderr together.
 * env: assignments put before the command ("" for none). */
static void run_mode_env(const char *env, const char *mode, run *r) {
    char cmd[4096];
    if (strcmp(checker, "valgrind") == 0)
        snprintf(
            cmd, sizeof(cmd),
            "%s %s --tool=memcheck --error-exitcode=42 --leak-check=full --errors-for-leak-kinds=definite "
            "--num-callers=30 --suppressions=%s %s %s 2>&1",
            env, valgrind, suppressions, program, mode);
    else
        snprintf(cmd, sizeof(cmd), "%s ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 %s %s 2>&1", env, program,
                 mode);
    r->exit_code = run_output(cmd, r->out, sizeof(r->out));
    assert_true(r->exit_code != -2);
}

static void run_mode(const char *mode, run *r) { run_mode_env("", mode, r); }

/* Asserts that the needles appear in out in this order, after start. */
static void assert_in_order(const char *out, const char *start, const char *const *needles, size_t n) {
    const char *p = strstr(out, start);
    if (p == NULL)
        fail_msg("missing \"%s\" in:\n%s", start, out);
    for (size_t i = 0; i < n; i++) {
        const char *q = strstr(p, needles[i]);
        if (q == NULL)
            fail_msg("missing \"%s\" after \"%s\" in:\n%s", needles[i], i ? needles[i - 1] : start, out);
        p = q;
    }
}

static int is_valgrind(void) { return strcmp(checker, "valgrind") == 0; }

static void a_double_release_is_a_checker_error_naming_both_stacks(void **state) {
    (void)state;
    static run r;
    run_mode("double", &r);
    if (is_valgrind()) {
        assert_int_equal(r.exit_code, 42);
        const char *order[] = {"release_it_again", "free'd", "release_it_first", "Block was alloc'd at",
                               "take_the_token"};
        assert_in_order(r.out, "Invalid free()", order, 5);
        assert_non_null(strstr(r.out, "ERROR SUMMARY: 1 errors"));
    } else {
        assert_int_not_equal(r.exit_code, 0);
        const char *order[] = {"release_it_again", "freed by thread", "release_it_first",
                               "previously allocated by thread", "take_the_token"};
        assert_in_order(r.out, "attempting double-free", order, 5);
    }
    /* The library's own report came first, on stderr, with the same stacks. */
    const char *ours[] = {"released again at:", "release_it_again",   "token taken at:",
                          "take_the_token",     "first released at:", "release_it_first"};
    assert_in_order(r.out, "bufhandle: BH_ESTALE", ours, 6);
}

static void a_token_never_issued_is_an_invalid_free(void **state) {
    (void)state;
    static run r;
    run_mode("unknown", &r);
    if (is_valgrind()) {
        assert_int_equal(r.exit_code, 42);
        const char *order[] = {"release_it_again"};
        assert_in_order(r.out, "Invalid free()", order, 1);
    } else {
        assert_int_not_equal(r.exit_code, 0);
        const char *order[] = {"release_it_again"};
        assert_in_order(r.out, "attempting free on address which was not malloc()-ed", order, 1);
    }
}

static void a_token_leaked_at_exit_is_a_leak_where_it_was_taken(void **state) {
    (void)state;
    static run r;
    run_mode("leak", &r);
    if (is_valgrind()) {
        assert_int_equal(r.exit_code, 42);
        const char *order[] = {"take_the_token", "main"};
        assert_in_order(r.out, "definitely lost", order, 2);
    } else {
        assert_int_not_equal(r.exit_code, 0);
        const char *order[] = {"Direct leak", "take_the_token"};
        assert_in_order(r.out, "LeakSanitizer: detected memory leaks", order, 2);
    }
}

static void correct_use_is_clean(void **state) {
    (void)state;
    static run r;
    run_mode("clean", &r);
    if (r.exit_code != 0)
        fail_msg("exit %d:\n%s", r.exit_code, r.out);
    assert_non_null(strstr(r.out, "done"));
    if (is_valgrind())
        assert_non_null(strstr(r.out, "ERROR SUMMARY: 0 errors"));
}

/* Without libdw (not installed, or BH_NO_LIBDW=1) the library's own report
 * still places every frame: dladdr's module and offset, which addr2line or
 * gdb turn into file:line later. */
static void without_libdw_frames_name_their_module_and_offset(void **state) {
    (void)state;
    static run r;
    run_mode_env("BH_NO_LIBDW=1", "double", &r);
    const char *ours[] = {
        "released again at:", "#0 0x",         "diag_misuse+0x", "token taken at:", "diag_misuse+0x",
        "first released at:", "diag_misuse+0x"};
    assert_in_order(r.out, "bufhandle: BH_ESTALE", ours, 7);
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "valgrind") == 0) {
        valgrind = argv[2];
        suppressions = argv[3];
        program = argv[4];
    } else if (argc == 3 && strcmp(argv[1], "asan") == 0) {
        program = argv[2];
    } else {
        fprintf(stderr, "usage: %s valgrind VALGRIND SUPP PROGRAM | asan PROGRAM\n", argv[0]);
        return 2;
    }
    checker = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_double_release_is_a_checker_error_naming_both_stacks),
        cmocka_unit_test(a_token_never_issued_is_an_invalid_free),
        cmocka_unit_test(a_token_leaked_at_exit_is_a_leak_where_it_was_taken),
        cmocka_unit_test(correct_use_is_clean),
        cmocka_unit_test(without_libdw_frames_name_their_module_and_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
