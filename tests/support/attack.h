/*
 * attack.h - what the attack files that came out of test_hostile_trackd.c
 * share (test_hostile_cpu, test_hostile_memory, test_hostile_queries,
 * test_hostile_files): one bh-trackd per test in a fresh directory, started
 * under a descriptor limit when the test sets one, its stats polled for a
 * value, a bystander's query with the server's CPU time meanwhile, and the
 * main that runs a group of such tests.
 *
 * Owns: the attacked server's binary, paths and limit (at_trackd, at_paths,
 * at_nofile: made fresh for each test by at_setup) and those helpers. Must
 * never: hide a failure (helpers that cannot go on assert through cmocka),
 * wait without a bound, or sleep to synchronise (they poll for the
 * condition).
 */
#ifndef BH_TEST_ATTACK_H
#define BH_TEST_ATTACK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "support/hostile.h"
#include "support/server.h"

struct CMUnitTest;

extern const char *at_trackd; /* the bh-trackd under attack (argv[1]) */
extern test_paths at_paths;   /* this test's directory and the server's files */
extern rlim_t at_nofile;      /* RLIMIT_NOFILE for the next server (0: unchanged) */

/* Starts bh-trackd with its log (and, with_socket, --socket) in at_paths,
 * --grace-ms 200, plus extra (NULL-terminated, may be NULL), stderr to
 * /dev/null, under at_nofile (if set: soft and hard, in the child only, as
 * the server raises its soft limit to the hard one). Does not wait. */
pid_t at_start_argv(const char *const *extra, int with_socket);
/* at_start_argv with the socket, once it accepts. */
pid_t at_start(const char *const *extra);
/* Waits up to secs for pid; returns its status, or -1 if it is still running. */
int at_wait_exit(pid_t pid, double secs);

/* Reads until EOF, secs or cap; returns the bytes read. */
size_t at_read_some(int fd, uint8_t *buf, size_t cap, double secs);
/* A frame of type whose payload is stream alone (RESYNC_BEGIN, RESYNC_END)
 * into p; its size. */
size_t at_stream_frame(uint8_t *p, uint16_t type, uint32_t stream);

/* One stats (what 1) or dump (2) query in JSON on at_paths.sock: the payload
 * into a malloc'd string, the time taken into *took (may be NULL); NULL if
 * no answer came within TEST_HANG_S (a hang: how fast an answer comes is
 * measured in the server's CPU time, never bounded by the wall clock). */
char *at_query(uint16_t what, double *took);
/* at_query(1) by a bystander: also the server's CPU seconds while it waited
 * (what the server did before answering, however loaded the machine: an
 * unfair loop spends its whole backlog of other clients' work first). */
char *at_bystander_query(pid_t srv, double *took, double *server_cpu);
/* totals.key from stats, polled until it equals want (TEST_HANG_S after it
 * last changed at most, test_progress: a loaded machine only makes it
 * later); the value last seen. Equal, not at least: it also waits for a
 * figure going down (live back to 0). */
uint64_t at_wait_total(const char *key, uint64_t want);

/* Each test's setup and teardown: a fresh directory and no limit; every
 * server and tracked process ended, the directory removed. */
int at_setup(void **state);
int at_teardown(void **state);
#define AT_TEST(fn) cmocka_unit_test_setup_teardown(fn, at_setup, at_teardown)

/* The main of an attack file: "usage: PROGRAM PATH-TO-bh-trackd
 * [TEST-NAME-PATTERN]", SIGPIPE ignored, then the n tests as group. */
int at_main(int argc, char **argv, const char *group, const struct CMUnitTest *tests, size_t n);

#endif /* BH_TEST_ATTACK_H */
