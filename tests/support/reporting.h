/*
 * reporting.h - what the files that came out of test_reporter.c share
 * (test_reporter_path, _peers, _fork, _bounds, _tt): this test's directory,
 * a bh-trackd started on it, its stats, forked clients bounded by an alarm,
 * registries reporting to a given reporter, and the main that runs a file's
 * basic and hostile groups.
 *
 * Owns: rp_trackd, rp_paths (made fresh for each test by rp_setup),
 * rp_server, rp_slack, and those helpers. Must never: hide a failure
 * (helpers assert through cmocka, or a child exits non-zero), or wait
 * without a bound (TEST_HANG_S, or a child's alarm).
 */
#ifndef BH_TEST_REPORTING_H
#define BH_TEST_REPORTING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bufhandle/bufhandle.h"
#include "support/server.h"

struct CMUnitTest;

extern const char *rp_trackd; /* the bh-trackd under test (argv[1]) */
extern test_paths rp_paths;   /* this test's directory and the server's files */
extern pid_t rp_server;       /* the bh-trackd of the running test (-1: none) */
extern double rp_slack;       /* time bounds are multiplied by this (argv[2] "slow": under valgrind) */

/* What a forked client may take in all (its alarm): a few waits of
 * TEST_HANG_S each, which only a hang reaches, at valgrind's pace. */
#define RP_CHILD_HANG_S ((unsigned)(3 * TEST_HANG_S * rp_slack))
/* --grace-ms long past any test: the server then says a process is gone
 * only when it has exited (a live one is never taken for gone), so waiting
 * for server.processes_gone waits for exactly the exits. */
#define RP_ONLY_EXITS_ARE_GONE "--grace-ms", "600000"
/* The domain of rp_hold's and rp_pair's allocations. */
#define RP_DOMAIN BH_DOMAIN(1, BH_MEM_DRAM)

/* Starts bh-trackd on rp_paths.sock with a short grace period and the given
 * options (NULL-terminated list), and waits until path accepts. */
void rp_serve(const char *const *opts, const char *path);
/* Waits (TEST_HANG_S at most) until the server has seen n client processes
 * gone: from then on what they still held is counted as leaked. */
void rp_wait_gone(uint64_t n);
/* totals.KEY or server.KEY from `bh-trackd stats --json`. */
uint64_t rp_stat_of(const char *section, const char *key);
/* Waits (TEST_HANG_S at most) until totals.live is 0. */
void rp_wait_nothing_live(void);

/* Runs fn in a child process with stderr going to the file err (if not
 * NULL); returns its exit status, or 128 + signal. alarm() bounds it: only a
 * hang reaches it (RP_CHILD_HANG_S). */
int rp_in_child(void (*fn)(void), const char *err);
/* Lines of file f that contain needle (-1: no such file). */
int rp_lines_with(const char *f, const char *needle);

/* A registry without an allocator that reports to rep: bh_intern makes
 * allocations out of plain numbers, as fast as the library goes (exits 90
 * if it cannot be made: for children as for the test). */
bh_registry *rp_registry_on(const bh_reporter *rep);
/* n allocations at addresses base, base + 4096, ... (exits 91 on failure). */
void rp_hold(bh_registry *reg, bh_handle *h, uint32_t n, uint64_t base);
/* Releases every handle of h that is not null (exits 92 on failure). */
void rp_drop_all(bh_registry *reg, bh_handle *h, uint32_t n);
/* One alloc + release; returns its latency in seconds, or -1 if the thread
 * was preempted during it (test_timer: the machine's load, not ours). */
double rp_pair(bh_registry *reg, uint64_t address);

/* Each test's setup and teardown: a fresh directory; every server ended,
 * the directory removed. */
int rp_setup(void **state);
int rp_teardown(void **state);
#define RP_TEST(fn) cmocka_unit_test_setup_teardown(fn, rp_setup, rp_teardown)

/* The main of such a file: "usage: PROGRAM PATH-TO-bh-trackd [slow|fast
 * [basic|hostile]]" (slow: under valgrind, smaller sets and looser bounds;
 * no group: both). hostile: the attacks of the hardening review (a CTest
 * entry of their own, label hostile); basic: the rest. A group without
 * tests is not run. */
int rp_main(int argc, char **argv, const char *name, const struct CMUnitTest *basic, size_t nbasic,
            const struct CMUnitTest *hostile, size_t nhostile);

#endif /* BH_TEST_REPORTING_H */
