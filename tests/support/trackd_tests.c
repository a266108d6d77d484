/*
 * trackd_tests.c - the shared part of test_trackd's files (trackd_tests.h).
 *
 * Owns: what trackd_tests.h declares. Must never: be linked into the
 * library or a tool, or loosen a test's checks.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <cmocka.h>

#include "support/trackd_tests.h"

const char *tk_trackd;
test_paths tk_paths;
double tk_slack = 1;

const char *tk_stats_json(void) {
    static char buf[1 << 16];
    return test_stats_json(tk_trackd, tk_paths.sock, buf, sizeof(buf));
}

const char *tk_stats_text(void) {
    static char text[8192];
    return test_trackd_says(tk_trackd, "stats", tk_paths.sock, text, sizeof(text));
}

bh_sim *tk_make_sim(void) {
    bh_sim_config sc = bh_sim_default_config(8, 0);
    bh_sim *sim;
    if (bh_sim_create(&sc, &sim) != BH_OK)
        _exit(10);
    return sim;
}

int tk_setup(void **state) {
    (void)state;
    test_paths_make(&tk_paths, "bh-trackd-test");
    return 0;
}

int tk_teardown(void **state) {
    (void)state;
    test_servers_end();
    return test_paths_remove(&tk_paths);
}

int tk_main(int argc, char **argv, const char *group, const struct CMUnitTest *tests, size_t n) {
    tk_slack = test_time_slack(argc > 2 ? argv[2] : NULL);
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [slow]", &tk_trackd, group, tests, n);
}
