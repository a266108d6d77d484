/*
 * test_hostile_pidns.c - bh-trackd in its own PID namespace (round 3,
 * containers): the sidecar deployment, with the server run under
 * `unshare --pid --fork --mount-proc` and its clients outside it, so that
 * SO_PEERCRED gives the server pid 0 for every one of them. Each client
 * process must still be a client of its own (one's FREE never frees
 * another's allocation), its leaks must be counted when it is gone, a
 * reconnection must stay the same process (its live buffers are not leaks)
 * while another process stating the same pid stays apart, and every row of
 * theirs says "unverified"; TT-Metal clients, which state no start time, are
 * a client per connection. The clients are forked processes: the library's
 * socket reporter, raw clients where the test must choose when they
 * reconnect and what they state, and raw TT clients.
 *
 * Every wait is for a condition the server shows in stats (never a sleep
 * then an assertion); the work is bounded by counts.
 *
 * usage: test_hostile_pidns PATH-TO-bh-trackd
 * Skipped (not failed) without root or without unshare: a PID namespace
 * needs CAP_SYS_ADMIN. CI runs as root.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "procstart.h"
#include "support/hostile.h"
#include "wire.h"

#define N 64 /* allocations of each client */
#define K 16 /* of them freed by the second client */
#define SIZE 4096u
#define BASE 0x100000u /* both clients use the same addresses: what one frees must be its own */
#define DOMAIN BH_DOMAIN(1, BH_MEM_DRAM)
#define GRACE_MS                                                                                             \
    "300" /* a gone client's leaks come this long after its close (waited for in stats); nothing else waits  \
             on it */

static const char *trackd;
static const char *unshare_path;
static test_paths paths;

/* ------------------------------------------------------------ the server */

static const char *find_unshare(void) {
    static const char *const where[] = {"/usr/bin/unshare", "/bin/unshare"};
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    return NULL;
}

/* 1 if this process may make a PID namespace (root, unshare there and
 * working here: a container may forbid it). */
static int pidns_usable(void) {
    if (geteuid() != 0 || (unshare_path = find_unshare()) == NULL)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        execl(unshare_path, unshare_path, "--pid", "--fork", "--mount-proc", "true", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-hostile-pidns");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* bh-trackd as PID 1 of a new PID namespace with its own /proc; --kill-child
 * ends it with unshare (what the teardown kills). */
static void start_in_pidns(const char *const *extra) {
    if (unshare_path == NULL) {
        print_message("SKIP: needs root and unshare(1) for a PID namespace (CI runs as root)\n");
        skip();
    }
    const char *base[] = {unshare_path, "--pid",  "--fork",  "--mount-proc", "--kill-child",
                          trackd,       "--log",  paths.log, "--socket",     paths.sock,
                          "--grace-ms", GRACE_MS, NULL};
    pid_t pid = test_server_spawn(base, extra, 1);
    assert_true(pid > 0);
    test_wait_accepting(paths.sock);
}

/* A row of "clients" for pid (stated), or NULL: "live", "leaks" read after it. */
static const char *client_row(const char *json, pid_t pid) {
    char needle[48];
    snprintf(needle, sizeof(needle), "{\"pid\":%d,\"stream\":", (int)pid);
    const char *clients = strstr(json, "\"clients\":[");
    const char *end = clients != NULL ? strstr(clients, "\"omitted_clients\"") : NULL;
    const char *row = clients != NULL ? strstr(clients, needle) : NULL;
    return row != NULL && row < end ? row : NULL;
}

/* Rows of "clients" in json. */
static unsigned client_rows(const char *json) {
    unsigned n = 0;
    const char *p = strstr(json, "\"clients\":[");
    const char *end = p != NULL ? strstr(p, "\"omitted_clients\"") : NULL;
    while (p != NULL && (p = strstr(p + 1, "{\"pid\":")) != NULL && p < end)
        n++;
    return n;
}

/* 1 if the object starting at row says "unverified":true. */
static int row_unverified(const char *row) {
    const char *close = row != NULL ? strchr(row, '}') : NULL;
    const char *u = row != NULL ? strstr(row, "\"unverified\":true") : NULL;
    return u != NULL && u < close;
}

/* ------------------------------------------------------------ clients */

/* A forked client, driven one step at a time: the parent writes a byte to
 * cmd, the client answers on ack when the step is done. */
typedef struct client {
    pid_t pid;
    int cmd, ack;
} client;

static int child_cmd = -1, child_ack = -1;
static void (*child_fn)(void);

/* A child keeps only its own two pipe ends: a write end of its cmd pipe (or
 * of another client's) left open would hide the parent's close from it. */
static void child_main(void) {
    for (int fd = 3; fd < 1024; fd++)
        if (fd != child_cmd && fd != child_ack)
            close(fd);
    child_fn();
}

static client spawn(void (*fn)(void)) {
    int c[2], a[2];
    assert_int_equal(pipe(c), 0);
    assert_int_equal(pipe(a), 0);
    child_cmd = c[0];
    child_ack = a[1];
    child_fn = fn;
    client cl = {test_fork(child_main), c[1], a[0]};
    close(c[0]);
    close(a[1]);
    hs_track(cl.pid);
    return cl;
}

/* In the child: the next command (0: the parent closed the pipe). */
static char next_cmd(void) {
    char b = 0;
    return read(child_cmd, &b, 1) == 1 ? b : 0;
}

static void say_done(void) {
    if (write(child_ack, "k", 1) != 1)
        _exit(98);
}

/* In the parent: the end of the client's step (it died: the test fails). */
static void await_step(const client *cl) {
    char b;
    assert_int_equal(read(cl->ack, &b, 1), 1);
}

static void step(const client *cl, char what) {
    assert_int_equal(write(cl->cmd, &what, 1), 1);
    await_step(cl);
}

/* Ends the client the way a process ends (exit: its reporter flushes). */
static void finish(client *cl) {
    close(cl->cmd);
    assert_int_equal(test_reap(cl->pid), 0);
    close(cl->ack);
}

/* The library's socket reporter: N allocations at BASE..., the first
 * lib_release of them released and flushed (its one step), then held until
 * the parent closes the pipe. */
static int lib_release;

static void lib_client(void) {
    bh_reporter rep;
    if (bh_socket_reporter_open(paths.sock, NULL, &rep) != BH_OK)
        _exit(90);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reporter = rep;
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    bh_handle h[N];
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        _exit(91);
    for (int i = 0; i < N; i++)
        if (bh_intern(reg, DOMAIN, BASE + (uint64_t)i * SIZE, SIZE, &h[i]) != BH_OK)
            _exit(92);
    for (int i = 0; i < lib_release; i++)
        if (bh_release(reg, h[i]) != BH_OK)
            _exit(93);
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(94);
    say_done();
    while (next_cmd() != 0) /* held: live until the process ends (leaks then) */
        say_done();
    /* exit() flushes and closes the reporter: the registry is left live. */
}

/* A raw client (the test support client, speaking the frames 0.3.1 knew)
 * stating raw_pid (0: its own) and its start time plus raw_start_delta (1:
 * another process under the same pid). Commands: 'a' N ALLOCs at BASE...
 * (seq 1, 2, ...), 'k' FREEs of the first K, 'F' of all N, 'r' reconnect
 * (connect, HELLO, then close the old connection) and resync its live set,
 * as the library does. */
static pid_t raw_pid;
static uint64_t raw_start_delta;

static int raw_connect(uint64_t start) {
    int fd = bh_unix_connect(paths.sock);
    if (fd < 0)
        _exit(80);
    uint8_t h[BH_WIRE_HELLO_MAX];
    pid_t pid = raw_pid != 0 ? raw_pid : getpid();
    hs_send_all(fd, h, bh_wire_hello(h, (uint32_t)pid, 0, "pidns", 5, start));
    return fd;
}

static void raw_resync(int fd, const uint8_t *live) {
    uint8_t f[BH_WIRE_HEADER + 8 + N * BH_WIRE_RESYNC_TIMED_ENTRY];
    size_t n = bh_wire_header(f, BH_WIRE_RESYNC_BEGIN, 4);
    bh_put32(f + n, 1);
    hs_send_all(fd, f, n + 4);
    uint32_t count = 0;
    memset(f, 0, sizeof(f));
    for (uint32_t i = 0; i < N; i++) {
        if (!live[i])
            continue;
        uint8_t *e = f + BH_WIRE_HEADER + 8 + (size_t)count++ * BH_WIRE_RESYNC_TIMED_ENTRY;
        bh_put32(e, DOMAIN);
        bh_put64(e + 8, BASE + (uint64_t)i * SIZE);
        bh_put64(e + 16, SIZE);
    }
    n = bh_wire_header(f, BH_WIRE_RESYNC_CHUNK_TIMED, 8 + count * BH_WIRE_RESYNC_TIMED_ENTRY);
    bh_put32(f + n, 1);
    bh_put32(f + n + 4, count);
    hs_send_all(fd, f, n + 8 + (size_t)count * BH_WIRE_RESYNC_TIMED_ENTRY);
    n = bh_wire_header(f, BH_WIRE_RESYNC_END, 4);
    bh_put32(f + n, 1);
    hs_send_all(fd, f, n + 4);
}

static void raw_client(void) {
    uint64_t start, seq = 0;
    if (bh_proc_start(0, &start) != 0)
        _exit(81);
    start += raw_start_delta;
    int fd = raw_connect(start);
    uint8_t live[N] = {0};
    for (char c; (c = next_cmd()) != 0; say_done()) {
        if (c == 'r') {
            /* The new connection first: however long this child waits for
             * a core, the old one's grace cannot run out in between. A new
             * key for it would still leave the old one's allocations as
             * leaks after --grace-ms, which the test checks. */
            int old = fd;
            fd = raw_connect(start);
            raw_resync(fd, live);
            close(old);
            continue;
        }
        int alloc = c == 'a', count = c == 'k' ? K : N;
        for (int i = 0; i < count; i++) {
            uint8_t e[BH_WIRE_HEADER + BH_WIRE_EVENT_LEN];
            hs_send_all(fd, e,
                        bh_wire_event(e, 1, alloc ? BH_EVENT_ALLOC : BH_EVENT_FREE, DOMAIN,
                                      BASE + (uint64_t)i * SIZE, SIZE, ++seq));
            live[i] = (uint8_t)alloc;
        }
    }
    close(fd); /* then exits: its process is gone */
}

/* A TT-Metal client (72-byte records, --compat-tt): 'a' N ALLOCs at
 * BASE..., 'k' FREEs of the first K; its pid in every record. */
static void tt_client(void) {
    int fd = bh_unix_connect(paths.compat);
    if (fd < 0)
        _exit(70);
    for (char c; (c = next_cmd()) != 0; say_done()) {
        for (int i = 0; i < (c == 'a' ? N : K); i++) {
            uint8_t r[BH_TT_RECORD];
            bh_tt_client_record(r, BH_TT_RECORD, c == 'a', DOMAIN, SIZE, BASE + (uint64_t)i * SIZE,
                                (int32_t)getpid(), 1);
            hs_send_all(fd, r, sizeof(r));
        }
    }
    close(fd);
}

/* What a test saw, printed before it is checked (how the 0.3.1 figures were
 * taken: the same run against the old binary). */
static void show(const char *what, const char *json) {
    print_message(
        "%s: rows %u live %llu dup %llu unknown_frees %llu leaks %llu gone %llu\n", what, client_rows(json),
        (unsigned long long)hs_num(json, "live"), (unsigned long long)hs_num(json, "duplicate_allocs"),
        (unsigned long long)hs_num(json, "unknown_frees"), (unsigned long long)hs_num(json, "leaks"),
        (unsigned long long)hs_num(json, "processes_gone"));
}

/* ------------------------------------------------------------ the tests */

/* The server in a PID namespace; a allocates N, then b the same N
 * addresses, freeing K of them: what both tests below start from. */
static void two_clients(client *a, client *b) {
    start_in_pidns(NULL);
    raw_pid = 0;
    raw_start_delta = 0;
    *a = spawn(raw_client);
    *b = spawn(raw_client);
    step(a, 'a');
    assert_int_equal(hs_wait_total(paths.sock, "allocs", N, TEST_HANG_S), N);
    step(b, 'a');
    step(b, 'k');
    assert_int_equal(hs_wait_total(paths.sock, "frees", K, TEST_HANG_S), K);
}

/* Two clients, same addresses; the second frees K of its own: two clients,
 * each with its own live set, nothing counted as a finding. Then the
 * library's own reporter: a third client, unverified like them. */
static void test_separate_clients(void **state) {
    (void)state;
    client a, b;
    two_clients(&a, &b);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    show("separate clients", j);
    const char *ra = client_row(j, a.pid), *rb = client_row(j, b.pid);
    assert_int_equal(client_rows(j), 2);
    assert_non_null(ra);
    assert_non_null(rb);
    assert_true(row_unverified(ra) && row_unverified(rb));
    assert_int_equal(hs_num(ra, "live"), N);
    assert_int_equal(hs_num(rb, "live"), N - K);
    assert_int_equal(hs_num(j, "live"), 2 * N - K);
    assert_int_equal(hs_num(j, "duplicate_allocs"), 0);
    assert_int_equal(hs_num(j, "unknown_frees"), 0);
    assert_int_equal(hs_num(j, "unverified_peers"), 2);
    free(j);
    lib_release = K;
    client l = spawn(lib_client);
    await_step(&l); /* its reporter flushed */
    j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    const char *rl = client_row(j, l.pid);
    assert_non_null(rl);
    assert_true(row_unverified(rl));
    assert_int_equal(hs_num(rl, "live"), N - K);
    assert_int_equal(hs_num(j, "live"), 3 * N - 2 * K);
    assert_int_equal(hs_num(j, "duplicate_allocs"), 0);
    free(j);
    finish(&l);
    finish(&a);
    finish(&b);
}

/* c, holding N - K, exits: once the server has counted leaks, its stats
 * (malloc'd), whose leaks must be c's, all of them and only them. */
static char *first_gone(client *c, const char *what) {
    finish(c);
    (void)hs_wait_total(paths.sock, "leaks", 1, TEST_HANG_S);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    show(what, j);
    assert_int_equal(hs_num(j, "leaks"), N - K);
    return j;
}

/* A client that exits while another stays: its leaks, exactly, and only its. */
static void test_leaks_counted(void **state) {
    (void)state;
    client a, b;
    two_clients(&a, &b);
    char *j = first_gone(&b, "one client gone");
    assert_int_equal(hs_num(j, "leaked_bytes"), (N - K) * SIZE);
    assert_int_equal(hs_num(j, "live"), N);
    const char *ra = client_row(j, a.pid);
    assert_non_null(ra);
    assert_int_equal(hs_num(ra, "live"), N);
    assert_int_equal(hs_num(ra, "leaks"), 0);
    char leak[64]; /* the listed leaks are b's, marked */
    snprintf(leak, sizeof(leak), "\"leaks\":[{\"pid\":%d,", (int)b.pid);
    assert_non_null(strstr(j, leak));
    assert_true(row_unverified(strstr(j, leak) + 9));
    free(j);
    finish(&a);
    assert_int_equal(hs_wait_total(paths.sock, "processes_gone", 2, TEST_HANG_S), 2);
    j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    show("both gone", j);
    assert_int_equal(hs_num(j, "leaks"), 2 * N - K);
    assert_int_equal(hs_num(j, "live"), 0);
    free(j);
}

/* A client reconnects (its live set resynced); another process states its
 * pid with another start time; a third comes and goes. When the third's
 * leaks are counted, the grace of the first's old connection has passed
 * too: none of its buffers may be a leak, nor touched by the impostor. */
static void test_reconnect_same_process(void **state) {
    (void)state;
    start_in_pidns(NULL);
    raw_pid = 0;
    raw_start_delta = 0;
    client a = spawn(raw_client);
    step(&a, 'a');
    assert_int_equal(hs_wait_total(paths.sock, "allocs", N, TEST_HANG_S), N);
    step(&a, 'r');
    assert_int_equal(hs_wait_total(paths.sock, "resyncs", 1, TEST_HANG_S), 1);
    raw_pid = a.pid; /* the same pid, another process (its start time differs) */
    raw_start_delta = 1;
    client d = spawn(raw_client);
    step(&d, 'a');
    step(&d, 'F');
    assert_int_equal(hs_wait_total(paths.sock, "frees", N, TEST_HANG_S), N);
    raw_pid = 0;
    raw_start_delta = 0;
    client c = spawn(raw_client);
    step(&c, 'a');
    step(&c, 'k');
    assert_int_equal(hs_wait_total(paths.sock, "frees", N + K, TEST_HANG_S), N + K);
    char *j = first_gone(&c, "reconnected");
    assert_int_equal(hs_num(j, "duplicate_allocs"), 0);
    assert_int_equal(hs_num(j, "unknown_frees"), 0);
    const char *ra = client_row(j, a.pid);
    assert_non_null(ra);
    assert_true(row_unverified(ra));
    assert_int_equal(hs_num(ra, "live"), N);
    assert_int_equal(hs_num(ra, "leaks"), 0);
    free(j);
    finish(&d);
    finish(&a);
}

/* TT clients state no start time: each connection is a client of its own,
 * shown with the pid its records carry. */
static void test_compat_clients_apart(void **state) {
    (void)state;
    const char *extra[] = {"--compat-tt", "--compat-socket", paths.compat, NULL};
    start_in_pidns(extra);
    test_wait_accepting(paths.compat);
    client a = spawn(tt_client), b = spawn(tt_client);
    step(&a, 'a');
    assert_int_equal(hs_wait_total(paths.sock, "allocs", N, TEST_HANG_S), N);
    step(&b, 'a');
    step(&b, 'k');
    assert_int_equal(hs_wait_total(paths.sock, "frees", K, TEST_HANG_S), K);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    show("TT clients", j);
    const char *ra = client_row(j, a.pid), *rb = client_row(j, b.pid);
    assert_non_null(ra);
    assert_non_null(rb);
    assert_true(row_unverified(ra) && row_unverified(rb));
    assert_int_equal(hs_num(ra, "live"), N);
    assert_int_equal(hs_num(rb, "live"), N - K);
    assert_int_equal(hs_num(j, "duplicate_allocs"), 0);
    free(j);
    free(first_gone(&b, "TT client gone"));
    finish(&a);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-bh-trackd\n", argv[0]);
        return 2;
    }
    trackd = argv[1];
    if (!pidns_usable())
        unshare_path = NULL; /* each test says why it skips */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_separate_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaks_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_same_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compat_clients_apart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
