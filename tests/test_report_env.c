/*
 * test_report_env.c - the socket reporter's numbers from the environment
 * (BH_TRACK_RING, BH_TRACK_MAX_BLOCK_US, BH_TRACK_FLUSH_MS,
 * BH_TT_RECORD_SIZE): a value that is not one of the numbers the variable
 * takes falls back to the default and is named on stderr, with the value
 * used, once per process and variable, never on stdout; good values say
 * nothing.
 *
 * Each case runs in a child whose stdout and stderr go to files the parent
 * reads back. No server is needed: the settings are read when a reporter
 * opens, and nobody listening is not an error.
 */
#define _GNU_SOURCE
#include <setjmp.h>
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

static char dir[] = "/tmp/bh-report-env-XXXXXX";

/* One value per variable, set before reporters open. */
typedef struct setting {
    const char *ring, *max_block, *flush, *tt_record;
} setting;

static void set_all(const setting *s) {
    setenv("BH_TRACK_RING", s->ring, 1);
    setenv("BH_TRACK_MAX_BLOCK_US", s->max_block, 1);
    setenv("BH_TRACK_FLUSH_MS", s->flush, 1);
    setenv("BH_TT_RECORD_SIZE", s->tt_record, 1);
}

/* Opens and closes a native and a TT reporter (the TT one reads
 * BH_TT_RECORD_SIZE) to a path where nobody listens. */
static void open_both(void) {
    char sock[96];
    snprintf(sock, sizeof(sock), "%s/none.sock", dir);
    bh_socket_options tt = {.flags = BH_SOCKET_COMPAT_TT};
    bh_reporter a, b;
    if (bh_socket_reporter_open(sock, NULL, &a) != BH_OK || bh_socket_reporter_open(sock, &tt, &b) != BH_OK)
        _exit(4);
    bh_socket_reporter_close(&a);
    bh_socket_reporter_close(&b);
}

static char *slurp(FILE *f) {
    long n = ftell(f);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

/* Runs a child that opens reporters under each setting in turn (count of
 * them); its stdout and stderr into *out and *err (the caller frees them). */
static void run_child(const setting *settings, int count, char **out, char **err) {
    FILE *o = tmpfile(), *e = tmpfile();
    assert_non_null(o);
    assert_non_null(e);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(fileno(o), 1) != 1 || dup2(fileno(e), 2) != 2)
            _exit(3);
        for (int i = 0; i < count; i++) {
            set_all(&settings[i]);
            open_both();
        }
        exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    fseek(o, 0, SEEK_END);
    fseek(e, 0, SEEK_END);
    *out = slurp(o);
    *err = slurp(e);
    fclose(o);
    fclose(e);
}

/* How many times needle occurs in s. */
static int occurrences(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Bad values of each variable, twice over (the second round's values are
 * bad too, and other): each variable is named once, with its first value
 * and the default used, on stderr; stdout stays empty. main before this
 * test said nothing: a typo silently gave the default. */
static void bad_numbers_are_named_once_on_stderr(void **state) {
    (void)state;
    const setting bad[] = {{"99999999999", "-5", "abc", "100"}, {"abc", "5x", "-1", "73"}};
    char *out, *err;
    run_child(bad, 2, &out, &err);
    print_message("stderr:\n%s", err);
    assert_string_equal(out, "");
    assert_int_equal(occurrences(err, "bufhandle: BH_TRACK_RING="), 1);
    assert_non_null(strstr(err, "bufhandle: BH_TRACK_RING=99999999999: not a whole number from 1 to 4194303; "
                                "using 2097151\n"));
    assert_int_equal(occurrences(err, "bufhandle: BH_TRACK_MAX_BLOCK_US="), 1);
    assert_non_null(strstr(err, "bufhandle: BH_TRACK_MAX_BLOCK_US=-5: not a whole number from 0 to 10000000; "
                                "using 0\n"));
    assert_int_equal(occurrences(err, "bufhandle: BH_TRACK_FLUSH_MS="), 1);
    assert_non_null(strstr(err, "bufhandle: BH_TRACK_FLUSH_MS=abc: not a whole number from 1 to 3600000; "
                                "using 2000\n"));
    assert_int_equal(occurrences(err, "bufhandle: BH_TT_RECORD_SIZE="), 1);
    assert_non_null(strstr(err, "bufhandle: BH_TT_RECORD_SIZE=100: not 72, 112 or 144; using 72\n"));
    assert_int_equal(occurrences(err, "\n"), 4); /* nothing else */
    free(out);
    free(err);
}

/* Good values, including each range's ends and an empty one (unset), say
 * nothing anywhere. */
static void good_numbers_say_nothing(void **state) {
    (void)state;
    const setting good[] = {{"1000", "0", "500", "112"},
                            {"1", "10000000", "3600000", "72"},
                            {"4194303", "", "", "144"},
                            {"", "", "", ""}};
    char *out, *err;
    run_child(good, 4, &out, &err);
    assert_string_equal(out, "");
    assert_string_equal(err, "");
    free(out);
    free(err);
}

int main(void) {
    if (mkdtemp(dir) == NULL)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_numbers_are_named_once_on_stderr),
        cmocka_unit_test(good_numbers_say_nothing),
    };
    int rc = cmocka_run_group_tests_name("report_env", tests, NULL, NULL);
    rmdir(dir);
    return rc;
}
