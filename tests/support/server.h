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
#include <sys/resource.h>
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

/* Waits until a server accepts on path, TEST_HANG_S at most, and asserts it
 * does. */
void test_wait_accepting(const char *path);

/* What a test waits for a condition at most: far beyond what any working
 * step takes on a loaded machine, so only a hang (the thing never happens)
 * reaches it. Conditions are waited for, never assumed after a sleep. */
#define TEST_HANG_S 30.0
/* A wait for a figure that moves towards what is waited for (a count the
 * server reaches as it works through a backlog): it gives up window seconds
 * (TEST_HANG_S, or more) after the figure last changed, not after the wait
 * began. A loaded machine makes the server slow, never still; only a hang
 * stops the figure. Start with test_progress_start; test_progress_going(p,
 * v) with each value read says whether to go on waiting. */
typedef struct test_progress {
    double end, window;
    uint64_t last;
    int seen;
} test_progress;
void test_progress_start(test_progress *p, double window);
int test_progress_going(test_progress *p, uint64_t v);
/* TEST_HANG_S in milliseconds, for the timeouts the library takes in ms (a
 * flush that must succeed: only a hang reaches it). */
#define TEST_HANG_MS ((uint32_t)(TEST_HANG_S * 1000))

/* The CPU seconds (user + system) process pid has used so far, from
 * /proc/PID/stat (clock-tick resolution); -1 if it is gone. CPU time, unlike
 * wall time, does not grow while a process waits for a core. */
double test_proc_cpu_s(pid_t pid);

/* A call timed without the machine's load: start, call, then
 * test_timer_unloaded gives the seconds the call took less the time its
 * thread waited for a core meanwhile (the kernel's run-queue delay, from
 * /proc/thread-self/schedstat: another task had the core, which measures the
 * machine, not the code), so its CPU time plus the time it slept (a lock
 * wait, a nap, a blocking call), which busy loops beside it do not lengthen.
 * -1 if the thread was preempted meanwhile (an involuntary context switch:
 * what the preempting task left in the caches is the machine's too). A call
 * that never left the CPU by its own choice is its thread CPU time: on a
 * virtual machine the hypervisor can stop a vCPU for milliseconds without
 * any switch the guest counts. */
typedef struct test_timer {
    double t0, cpu0, queued0;
    long nivcsw, nvcsw;
} test_timer;
void test_timer_start(test_timer *t);
double test_timer_unloaded(const test_timer *t);
/* The voluntary context switches of the calling thread so far: each time it
 * went to sleep (a blocking call, a lock wait, a nap). A count, not a time. */
long test_thread_sleeps(void);

/* Forks and execs base[0] with the arguments of base and then of extra (both
 * NULL-terminated; extra may be NULL), stderr to /dev/null when quiet. The
 * pid; the caller waits for what it needs (test_wait_accepting). */
pid_t test_server_spawn(const char *const *base, const char *const *extra, int quiet);
/* The same under the RLIMIT_NOFILE *nofile (NULL: inherited), set in the
 * child only (bh-trackd raises its soft limit to the hard one: a test of a
 * low limit lowers both). */
pid_t test_server_spawn_nofile(const char *const *base, const char *const *extra, int quiet,
                               const struct rlimit *nofile);
/* The tests' usual server: trackd with --socket, --summary and --log of p
 * and --grace-ms 300, then extra (NULL-terminated, may be NULL); its pid
 * once it accepts (test_wait_accepting). */
pid_t test_server_start(const char *trackd, const test_paths *p, const char *const *extra);
/* A connection to the server socket at path (asserted) whose reads give up
 * after TEST_HANG_S (SO_RCVTIMEO): a read that waits for an answer or the
 * server's close never hangs the test. */
int test_connect(const char *path);
/* Kills and reaps every process test_server_spawn started that
 * test_server_stop has not: what a test's teardown calls, whatever failed. */
void test_servers_end(void);

/* How a server this process started ended after a signal. */
typedef struct test_stop {
    int status;   /* waitpid status */
    double cpu_s; /* CPU seconds it spent after the signal (its shutdown) */
} test_stop;
/* Sends sig to pid and reaps it. Asserts that it exits within TEST_HANG_S: a
 * shutdown that waits on a peer never ends, a slow machine only makes it
 * late (what it costs is cpu_s, not the wall time). */
test_stop test_server_stop(pid_t pid, int sig);
/* SIGTERM: asserts the server exits 0 on its own and spends under a CPU
 * second shutting down. */
void test_server_stop_clean(pid_t pid);

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

/* The main of a test file against a real bh-trackd: without argv[1], says
 * "usage: PROGRAM args" and returns 2; else *trackd = argv[1], SIGPIPE
 * ignored (a server's close must not end the test), and the n tests run as
 * group. If args names "[TEST-NAME-PATTERN]", argv[2], if given, is one
 * (cmocka's filter; one that matches no test returns 1); else argv[2] and
 * on are the caller's (a mode, a directory) and every test runs. */
struct CMUnitTest;
int test_trackd_main(int argc, char **argv, const char *args, const char **trackd, const char *group,
                     const struct CMUnitTest *tests, size_t n);

/* `TRACKD COMMAND --socket SOCK` (command: "stats", "stats --json", "dump
 * --json", ...) into buf (cap bytes); asserts that it succeeded. Returns buf. */
const char *test_trackd_says(const char *trackd, const char *command, const char *sock, char *buf,
                             size_t cap);
/* test_trackd_says "stats --json". */
const char *test_stats_json(const char *trackd, const char *sock, char *buf, size_t cap);
/* The number after "key": in the object "section":{...} of json; asserts
 * both are there. */
uint64_t test_json_u64(const char *json, const char *section, const char *key);
/* N of the socket reporter's line about events it lost ("bufhandle: N
 * events of this process were never delivered ...") in a process's stderr
 * text err; 0 if there is no such line. */
uint64_t test_said_lost(const char *err);

/* Polls `TRACKD stats --json` until SECTION.KEY is at least want, for
 * TEST_HANG_S after it last changed at most (test_progress); returns the
 * value last seen. What a test waits for
 * instead of sleeping (e.g. server.processes_gone: the server has seen a
 * client process gone and counted what it still held as leaks). */
uint64_t test_wait_stat(const char *trackd, const char *sock, const char *section, const char *key,
                        uint64_t want);
/* The same until SECTION.KEY is exactly want: for a value that also goes
 * down (totals.live back to 0). */
uint64_t test_wait_stat_is(const char *trackd, const char *sock, const char *section, const char *key,
                           uint64_t want);

#endif /* BH_TEST_SERVER_H */
