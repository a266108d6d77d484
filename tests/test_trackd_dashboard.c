/*
 * test_trackd_dashboard.c - bh-trackd's dashboard page (--http) against what
 * the server's other outputs say: every memory kind the stats name has its
 * own colour on the page.
 *
 * usage: test_trackd_dashboard PATH-TO-bh-trackd
 *
 * Owns: one server with --http, reading the page it serves (the embedded
 * dashboard.html) and its stats JSON. Must never: assert on timing; wait
 * without a bound (hs_wait_total gives up TEST_HANG_S after its figure last
 * moved).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/hostile.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-trackd-dashboard");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

enum { KINDS = 16, NAME_MAX_LEN = 32 };

/* The value of "name: "#rrggbb"" in the page's KIND_COLORS table, into
 * colour (8 bytes); 0 if the table has no such entry. */
static int kind_colour(const char *page, const char *name, char colour[8]) {
    const char *t = strstr(page, "const KIND_COLORS = {");
    assert_non_null(t);
    const char *end = strchr(t, '}');
    assert_non_null(end);
    char key[NAME_MAX_LEN + 8];
    snprintf(key, sizeof(key), "%s: \"#", name);
    for (const char *p = strstr(t, key); p != NULL && p < end; p = strstr(p + 1, key)) {
        if (p[-1] != ' ' && p[-1] != '{')
            continue; /* "l1_small" is not "small" */
        memcpy(colour, p + strlen(key) - 1, 7);
        colour[7] = '\0';
        return 1;
    }
    return 0;
}

/* The stats name each kind of a domain ("dram", "cb", "unknown", "kind7");
 * the page colours the named ones, each in its own colour, never in the
 * grey it draws caller-numbered kinds and the "other" band with. main
 * before this test had no colour for "unknown" (kind 13, TT FREEs of no
 * known kind): drawn in that grey, it read as "other". */
static void every_kind_the_stats_name_has_its_own_colour(void **state) {
    (void)state;
    hs_start(trackd, &paths, (const char *const[]){"--http", "127.0.0.1:0", NULL}, 0);
    unsigned port = hs_http_port(paths.log);
    int fd = hs_reporter(paths.sock);
    for (uint32_t k = 0; k < KINDS; k++)
        hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN(0, k), 0, 0x100000 + k * 0x10000, 64, 1);
    assert_int_equal(hs_wait_total(paths.sock, "live", KINDS, TEST_HANG_S), KINDS);
    char *stats = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(stats);
    char *page = NULL;
    assert_int_equal(hs_http_get(port, "127.0.0.1", "/", &page), 200);
    assert_non_null(page);
    const char *grey = strstr(page, "KIND_COLORS[k] || \"");
    assert_non_null(grey);
    grey += strlen("KIND_COLORS[k] || \"");
    char seen[KINDS][8], names[KINDS][NAME_MAX_LEN];
    int nseen = 0, named = 0;
    for (const char *p = strstr(stats, "\"kind\":\""); p != NULL; p = strstr(p + 1, "\"kind\":\"")) {
        char name[NAME_MAX_LEN];
        p += strlen("\"kind\":\"");
        size_t n = strcspn(p, "\"");
        assert_true(n > 0 && n < sizeof(name));
        memcpy(name, p, n);
        name[n] = '\0';
        int dup = 0;
        for (int i = 0; i < named; i++)
            dup |= strcmp(names[i], name) == 0;
        if (dup)
            continue;
        assert_true(named < KINDS);
        snprintf(names[named++], NAME_MAX_LEN, "%s", name);
        char c[8];
        int has = kind_colour(page, name, c);
        printf("# kind %-14s %s\n", name, has ? c : "(the grey)");
        if (strncmp(name, "kind", 4) == 0) /* a caller's own number: the grey, by design */
            continue;
        assert_true(has);
        assert_true(strncmp(c, grey, 7) != 0);
        for (int i = 0; i < nseen; i++)
            assert_string_not_equal(seen[i], c);
        memcpy(seen[nseen++], c, 8);
    }
    assert_int_equal(named, KINDS); /* every kind was in the stats */
    assert_true(nseen >= 8);        /* 0..4, cb, kernel, unknown */
    free(page);
    free(stats);
    close(fd);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_kind_the_stats_name_has_its_own_colour, setup, teardown),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [TEST-NAME-PATTERN]", &trackd, "trackd_dashboard",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
