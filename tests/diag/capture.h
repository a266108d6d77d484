/*
 * capture.h - what the diagnostics tests share to read what the library
 * printed: a stream's whole text, counting a string in it, and the misuse
 * reports redirected to a temporary file while a test looks at them.
 *
 * Owns: the test-side sink (bh__diag_set_sink) and its setup/teardown.
 * Must never: hide a failure (every step asserts through cmocka), or be
 * included by anything but a white-box test.
 */
#ifndef BH_TEST_DIAG_CAPTURE_H
#define BH_TEST_DIAG_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag/diag.h"

/* Everything written to f, as one string (the caller frees it). */
static inline char *slurp(FILE *f) {
    fflush(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    assert_true(n >= 0);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    return s;
}

static inline size_t count_of(const char *haystack, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Misuse reports go to a temporary file while a test looks at them. */
static FILE *sink;
static inline int sink_setup(void **state) {
    (void)state;
    sink = tmpfile();
    bh__diag_set_sink(sink);
    return sink == NULL;
}
static inline int sink_teardown(void **state) {
    (void)state;
    bh__diag_set_sink(NULL);
    fclose(sink);
    return 0;
}

#endif /* BH_TEST_DIAG_CAPTURE_H */
