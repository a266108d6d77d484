/*
 * trackd_tests.h - what the files that came out of test_trackd.c share
 * (test_trackd, test_trackd_faults, test_trackd_server): the bh-trackd under
 * test and this test's directory, the server's stats read back, a simulated
 * device for client registries, and the main that runs a group of such
 * tests.
 *
 * Owns: tk_trackd, tk_paths (made fresh for each test by tk_setup) and
 * tk_slack, and those helpers. Must never: hide a failure (helpers assert
 * through cmocka), or wait without a bound.
 */
#ifndef BH_TEST_TRACKD_TESTS_H
#define BH_TEST_TRACKD_TESTS_H

#include <stddef.h>
#include <stdint.h>

#include "simdev.h"
#include "support/server.h"

struct CMUnitTest;

extern const char *tk_trackd; /* the bh-trackd under test (argv[1]) */
extern test_paths tk_paths;   /* this test's directory and the server's files */
extern double tk_slack;       /* time bounds are multiplied by this (argv[2] "slow": under valgrind) */

/* `bh-trackd stats --json` on tk_paths.sock, into a static buffer. */
const char *tk_stats_json(void);
/* `bh-trackd stats` (text), into a static buffer. */
const char *tk_stats_text(void);

/* A simulated device of 8 chips for a client's registry (a forked child
 * only: exits 10 if it cannot be made). */
bh_sim *tk_make_sim(void);

/* Each test's setup and teardown: a fresh directory; every server ended,
 * the directory removed. */
int tk_setup(void **state);
int tk_teardown(void **state);
#define TK_TEST(fn) cmocka_unit_test_setup_teardown(fn, tk_setup, tk_teardown)

/* The main of such a file: "usage: PROGRAM PATH-TO-bh-trackd [slow]",
 * tk_slack from argv[2], SIGPIPE ignored, then the n tests as group. */
int tk_main(int argc, char **argv, const char *group, const struct CMUnitTest *tests, size_t n);

#endif /* BH_TEST_TRACKD_TESTS_H */
