/*
 * server.h - what the tests that run a real bh-trackd share: a temporary
 * directory with the server's files, clocks, forked clients, and the
 * server's stats read back through `bh-trackd stats --json`.
 *
 * Owns: the per-test directory and the polling and reaping around a server.
 * Must never: hide a failure (every step that can fail asserts, through
 * cmocka, in the calling test), or wait without a bound.
 */
#ifndef BH_TEST_SERVER_H
#define BH_TEST_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The files of one test's server, all inside dir. */
typedef struct test_paths {
    char dir[64];
    char sock[96];    /* dir/trackd.sock: the native socket */
    char compat[96];  /* dir/tt.sock: the TT-Metal compatible socket */
    char log[96];     /* dir/trackd.log */
    char summary[96]; /* dir/summary.json */
} test_paths;

/* Makes a fresh /tmp/NAME-XXXXXX and fills in the paths inside it. */
void test_paths_make(test_paths *p, const char *name);
/* Removes the directory (made writable first), unless BH_TEST_KEEP is set
 * (then says where it is). 0, or -1 if removing failed. */
int test_paths_remove(const test_paths *p);

double test_now_s(void); /* monotonic seconds */
/* The factor a test's time bounds are multiplied by: 40 when mode is "slow"
 * (the test's CTest entry under valgrind passes it), 4 times more in a
 * sanitizer build (instrumented code runs several times slower). */
double test_time_slack(const char *mode);
void test_sleep_ms(int ms);

/* Waits until a server accepts on path, 5 s at most, and asserts it does. */
void test_wait_accepting(const char *path);

/* A Unix stream socket listening at path with this backlog (nobody accepts:
 * connects still succeed while the backlog has room). */
int test_unix_listen(const char *path, int backlog);

/* Runs fn in a forked child (its own process: its own client to the
 * server) that exits 0 when fn returns. stdio is flushed first. */
pid_t test_fork(void (*fn)(void));
/* Ends pid (SIGCONT first, in case a test stopped it, then SIGKILL) and
 * reaps it; nothing for pid <= 0 or a process already reaped. */
void test_kill(pid_t pid);
/* Waits for pid: its exit status, or 128 + the signal that ended it. */
int test_reap(pid_t pid);

/* `TRACKD stats --json --socket SOCK` into buf (cap bytes); asserts that it
 * succeeded. Returns buf. */
const char *test_stats_json(const char *trackd, const char *sock, char *buf, size_t cap);
/* The number after "key": in the object "section":{...} of json; asserts
 * both are there. */
uint64_t test_json_u64(const char *json, const char *section, const char *key);

#endif /* BH_TEST_SERVER_H */
