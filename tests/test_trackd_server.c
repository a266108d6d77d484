/*
 * test_trackd_server.c - bh-trackd's own side against real and hand-made
 * peers: malformed frames disconnect only their client and a second server
 * does not steal a live socket, a client over its live limit is cut off, a
 * limit of 0 is refused at start, peers of other users are rejected unless
 * allowed (root only: skipped otherwise), TT-Metal's 72-byte records are
 * tracked and answered, stats rows come biggest first, and a summary
 * skipped while one is written is counted in every output.
 *
 * usage: test_trackd_server PATH-TO-bh-trackd [slow]
 *
 * Frames are written by hand (wire.h) where a case needs bytes the library
 * never sends. Must never depend on timing: waits poll for the server's
 * counts or a process state, bounded by TEST_HANG_S.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/trackd_tests.h"
#include "wire.h"

/* Reads until EOF (or timeout); returns bytes read. */
static size_t read_all(int fd, uint8_t *buf, size_t cap) {
    size_t n = 0;
    ssize_t r;
    while (n < cap && (r = recv(fd, buf + n, cap - n, 0)) > 0)
        n += (size_t)r;
    return n;
}

/* Sends n bytes of p on fd (then closed) and expects the server's answer:
 * an ERROR frame with code, then its close. */
static void sent_then_refused(int fd, const void *p, size_t n, bh_status code) {
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
    uint8_t reply[512];
    size_t got = read_all(fd, reply, sizeof(reply));
    assert_true(got >= BH_WIRE_HEADER + 4);
    assert_int_equal(bh_get16(reply + 6), BH_WIRE_ERROR);
    assert_int_equal((int32_t)bh_get32(reply + BH_WIRE_HEADER), code);
    close(fd);
}

static void malformed_frames_disconnect_only_their_client(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    struct stat st;
    assert_int_equal(stat(tk_paths.sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    const uint8_t bad_magic[12] = {'N', 'O', 'P', 'E', 1, 0, 1, 0, 0, 0, 0, 0};
    uint8_t too_long[12];
    bh_wire_header(too_long, BH_WIRE_HELLO, BH_WIRE_MAX_PAYLOAD + 1);
    uint8_t no_hello[BH_WIRE_HEADER + BH_WIRE_EVENT_LEN];
    bh_wire_event(no_hello, 1, BH_EVENT_ALLOC, 0, 4096, 64, 1);
    const uint8_t *cases[] = {bad_magic, too_long, no_hello};
    const size_t sizes[] = {sizeof(bad_magic), sizeof(too_long), sizeof(no_hello)};
    for (int i = 0; i < 3; i++)
        sent_then_refused(test_connect(tk_paths.sock), cases[i], sizes[i], BH_EINVAL);
    const char *j = tk_stats_json(); /* and it still serves everyone else */
    assert_int_equal(test_json_u64(j, "server", "malformed"), 3);
    assert_int_equal(test_json_u64(j, "totals", "allocs"), 0);

    /* A second server does not steal a live socket. */
    pid_t second = fork();
    if (second == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(tk_trackd, tk_trackd, "--socket", tk_paths.sock, (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(second, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    assert_true(bh_trackd_reachable(tk_paths.sock));
    test_server_stop_clean(srv);
}

/* Live bytes on three devices, the biggest on the highest device: a server
 * that lists rows in device order lists them smallest first. */
static void three_sizes_client(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test does not leave it behind */
    bh_reporter rep;
    if (bh_socket_reporter_open(tk_paths.sock, NULL, &rep) != BH_OK)
        _exit(25);
    for (uint32_t d = 0; d < 3; d++) {
        bh_event alloc = {BH_EVENT_ALLOC, BH_DOMAIN(d, BH_MEM_DRAM), 0x1000000u, 4096u << (4 * d), d + 1};
        rep.report(rep.ctx, &alloc);
    }
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(26);
    pause(); /* live until the test ends it */
}

/* `stats` and `stats --json` list the rows biggest first. */
static void stats_rows_come_biggest_first(void **state) {
    (void)state;
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    pid_t client = test_fork(three_sizes_client);
    assert_int_equal(
        test_wait_stat_is(tk_trackd, tk_paths.sock, "totals", "live_bytes", 4096u + 65536u + 1048576u),
        4096u + 65536u + 1048576u);
    const char *j = tk_stats_json();
    const char *d2 = strstr(j, "\"device\":2,"), *d1 = strstr(j, "\"device\":1,"),
               *d0 = strstr(j, "\"device\":0,");
    assert_true(d2 != NULL && d1 != NULL && d0 != NULL);
    assert_true(d2 < d1 && d1 < d0);
    const char *text = tk_stats_text();
    const char *t2 = strstr(text, " 1048576 "), *t1 = strstr(text, " 65536 "), *t0 = strstr(text, " 4096 ");
    assert_true(t2 != NULL && t1 != NULL && t0 != NULL);
    assert_true(t2 < t1 && t1 < t0);
    test_kill(client);
    test_server_stop_clean(srv);
}

/* A child running as another user (nobody) connects and asks for stats;
 * returns 1 if the server closed the connection on it without reading a
 * frame, 0 if it answered. Either comes by itself: the read's bound
 * (TEST_HANG_S) only guards against a hang, and reaching it fails the test. */
static int foreign_peer_is_closed(void) {
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        int fd = bh_unix_connect(tk_paths.sock);
        if (fd < 0)
            _exit(3);
        struct timeval tv = {(time_t)TEST_HANG_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        uint8_t q[BH_WIRE_HELLO_MAX + BH_WIRE_HEADER + 4];
        size_t n = bh_wire_hello(q, (uint32_t)getpid(), BH_WIRE_HELLO_CONTROL, "test", 4, 0);
        n += bh_wire_header(q + n, BH_WIRE_QUERY, 4);
        bh_put16(q + n, 1); /* stats */
        bh_put16(q + n + 2, 1);
        (void)send(fd, q, n + 4, MSG_NOSIGNAL); /* a closed peer may refuse it already */
        uint8_t b;
        ssize_t got = recv(fd, &b, 1, 0);
        /* Closed: EOF, or a reset (it closed with our frames unread). */
        _exit(got == 1 ? 0 : got == 0 || errno == ECONNRESET ? 1 : 4);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) <= 1);
    return WEXITSTATUS(status);
}

static void peers_of_other_users_are_rejected_unless_allowed(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip(); /* needs root to act as another user */
    pid_t srv = test_server_start(tk_trackd, &tk_paths, NULL);
    /* Open the file itself, so that only the server's own check is left. */
    assert_int_equal(chmod(tk_paths.sock, 0666), 0);
    assert_int_equal(chmod(tk_paths.dir, 0755), 0);
    assert_int_equal(foreign_peer_is_closed(), 1);
    assert_int_equal(test_json_u64(tk_stats_json(), "server", "rejected_peers"), 1);
    test_server_stop_clean(srv);

    const char *allow[] = {"--allow-uid", "65534", NULL};
    srv = test_server_start(tk_trackd, &tk_paths, allow);
    assert_int_equal(chmod(tk_paths.sock, 0666), 0);
    assert_int_equal(foreign_peer_is_closed(), 0); /* accepted: answered */
    assert_int_equal(test_json_u64(tk_stats_json(), "server", "rejected_peers"), 0);
    test_server_stop_clean(srv);
}

static void a_client_over_its_live_limit_is_cut_off_and_the_server_goes_on(void **state) {
    (void)state;
    const char *extra[] = {"--max-live-per-client", "3", NULL};
    pid_t srv = test_server_start(tk_trackd, &tk_paths, extra);
    int fd = test_connect(tk_paths.sock);
    uint8_t buf[BH_WIRE_HEADER + 14 + 5 * (BH_WIRE_HEADER + BH_WIRE_EVENT_LEN)];
    size_t n = bh_wire_hello(buf, (uint32_t)getpid(), 0, "test", 4, 0);
    for (int i = 0; i < 5; i++)
        n += bh_wire_event(buf + n, 1, BH_EVENT_ALLOC, 0, 0x1000 * (uint64_t)(i + 1), 64, (uint64_t)i + 1);
    sent_then_refused(fd, buf, n, BH_ENOMEM);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "server", "limit_disconnects"), 1);
    test_server_stop_clean(srv);
}

static void compat_records_are_tracked_and_answered(void **state) {
    (void)state;
    const char *extra[] = {"--compat-tt", "--compat-socket", tk_paths.compat, NULL};
    pid_t pid = test_server_start(tk_trackd, &tk_paths, extra);
    /* The server binds the compat socket after the native one it was
     * waited on for. */
    test_wait_accepting(tk_paths.compat);
    int fd = test_connect(tk_paths.compat);
    uint8_t rec[3][BH_TT_RECORD];
    /* ALLOC DRAM 4096 at 0x1000 and L1 100 at 0x2000 on device 0, as the TT client sends them. */
    bh_tt_record(rec[0], BH_TT_ALLOC, 0, 4096, 0, (int32_t)getpid(), 0x1000, 123456789);
    bh_tt_record(rec[1], BH_TT_ALLOC, 0, 100, 1, (int32_t)getpid(), 0x2000, 123456790);
    bh_tt_record(rec[2], BH_TT_QUERY, 0, 0, 0, (int32_t)getpid(), 0, 0);
    assert_int_equal(send(fd, rec, sizeof(rec), MSG_NOSIGNAL), (ssize_t)sizeof(rec));
    uint8_t resp[BH_TT_RECORD];
    assert_int_equal(recv(fd, resp, sizeof(resp), MSG_WAITALL), BH_TT_RECORD);
    assert_int_equal(resp[0], BH_TT_RESPONSE);
    assert_int_equal(bh_get64(resp + 40), 4096); /* dram_allocated */
    assert_int_equal(bh_get64(resp + 48), 100);  /* l1_allocated */
    assert_int_equal(bh_get64(resp + 56), 0);
    /* FREE with process_id 0, as one published client sends it: keyed by the
     * peer's pid, it still matches. */
    bh_tt_record(rec[0], BH_TT_FREE, 0, 0, 0, 0, 0x1000, 0);
    bh_tt_record(rec[1], BH_TT_FREE, 0, 0, 0, 0, 0x9999000, 0); /* unknown buffer */
    assert_int_equal(send(fd, rec, sizeof(rec), MSG_NOSIGNAL), (ssize_t)sizeof(rec));
    assert_int_equal(recv(fd, resp, sizeof(resp), MSG_WAITALL), BH_TT_RECORD);
    assert_int_equal(bh_get64(resp + 40), 0);
    assert_int_equal(bh_get64(resp + 48), 100);

    /* A stream that is no TT records of a known size (garbage where the
     * next 72-byte header or the 112-byte device-info fields would be) is
     * dropped before any of it counts, and never disconnected (a TT client
     * would die of SIGPIPE); the others go on. */
    int bad = test_connect(tk_paths.compat);
    uint8_t grown[200];
    memset(grown, 0, sizeof(grown));
    grown[0] = grown[100] = BH_TT_ALLOC;
    memset(grown + 72, 0x55, 28); /* the extra fields land where the next record's header would be */
    memset(grown + 172, 0x55, 28);
    assert_int_equal(send(bad, grown, sizeof(grown), MSG_NOSIGNAL), (ssize_t)sizeof(grown));
    (void)test_wait_stat(tk_trackd, tk_paths.sock, "server", "compat_ignored",
                         1); /* the server read bad's bytes */
    uint8_t sink[64];
    assert_int_equal(recv(bad, sink, sizeof(sink), MSG_DONTWAIT), -1); /* open: nothing to read, no EOF */
    assert_int_equal(send(bad, grown, sizeof(grown), MSG_NOSIGNAL), (ssize_t)sizeof(grown));
    close(bad);

    bh_tt_record(rec[0], BH_TT_QUERY, 0, 0, 0, 0, 0, 0);
    assert_int_equal(send(fd, rec[0], BH_TT_RECORD, MSG_NOSIGNAL), BH_TT_RECORD);
    assert_int_equal(recv(fd, resp, sizeof(resp), MSG_WAITALL), BH_TT_RECORD);
    assert_int_equal(bh_get64(resp + 48), 100);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "totals", "unknown_frees"), 1);
    assert_int_equal(test_json_u64(j, "server", "malformed"), 0);
    assert_int_equal(test_json_u64(j, "server", "compat_ignored"), 1);
    assert_int_equal(test_json_u64(j, "server", "compat_records"), 3 + 3 + 1);
    close(fd);
    test_server_stop_clean(pid);
}

/* A limit of 0 is refused when the server starts, naming the option: read
 * as the limit, --max-live-per-client 0 made TT's table refuse every ALLOC
 * while the tracker read it as no limit at all. The server's exit status
 * (2) and its message; a server that started instead runs until `timeout`
 * ends it (124). */
static void a_limit_of_zero_is_refused_at_start(void **state) {
    (void)state;
    static const char *const opts[] = {"--max-live-per-client", "--max-groups-per-client",
                                       "--max-connections", "--frame-timeout-ms"};
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        char cmd[1024], out[512];
        snprintf(cmd, sizeof(cmd), "timeout %d %s --socket %s --compat-tt --compat-socket %s %s 0 2>&1",
                 (int)TEST_HANG_S, tk_trackd, tk_paths.sock, tk_paths.compat, opts[i]);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        int st = pclose(f);
        print_message("%s 0: exit %d, \"%s\"\n", opts[i], WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 2);
        assert_non_null(strstr(out, opts[i]));
        assert_non_null(strstr(out, "takes 1 or more"));
    }
}

/* The state letter of pid (R, S, T, Z, ...) and its parent, from
 * /proc/PID/stat; 0 if there is no such process. */
static char proc_state(pid_t pid, pid_t *ppid) {
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    const char *rp = strrchr(buf, ')'); /* after the name, which may hold anything */
    char state = 0;
    int pp = 0;
    if (rp == NULL || sscanf(rp + 1, " %c %d", &state, &pp) != 2)
        return 0;
    *ppid = (pid_t)pp;
    return state;
}

/* A number from a /proc/sys file, 0 if unreadable. */
static long proc_sys(const char *path) {
    char buf[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    return n > 0 ? atol(buf) : 0;
}

static pid_t last_pid(void) { return (pid_t)proc_sys("/proc/sys/kernel/ns_last_pid"); }

/* A child of parent, not stopped and not a zombie, among the pids handed
 * out after *from (moved on to the last one): found without a walk of
 * /proc, so even a test under valgrind sees a child that lives a few
 * milliseconds. 0 if none. */
static pid_t new_running_child(pid_t parent, pid_t *from) {
    pid_t to = last_pid(), found = 0, max = (pid_t)proc_sys("/proc/sys/kernel/pid_max");
    for (pid_t p = *from; p != to && found == 0 && max > 0;) {
        p = p >= max ? 1 : p + 1; /* pids wrap at pid_max */
        pid_t pp = 0;
        char st = proc_state(p, &pp);
        if (st != 0 && st != 'Z' && st != 'T' && pp == parent)
            found = p;
    }
    *from = to;
    return found;
}

/* GET /metrics from the --http port the server logged (HTTP/1.0, no Host:
 * served), into a static buffer. */
static const char *metrics_text(void) {
    static char body[1 << 18];
    unsigned port = 0;
    for (double end = test_now_s() + TEST_HANG_S; port == 0 && test_now_s() < end; test_sleep_ms(20)) {
        FILE *f = fopen(tk_paths.log, "r");
        char line[512];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            const char *at = strstr(line, "serving http on http://127.0.0.1:");
            if (at != NULL)
                port = (unsigned)strtoul(at + strlen("serving http on http://127.0.0.1:"), NULL, 10);
        }
        if (f != NULL)
            fclose(f);
    }
    assert_true(port != 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(req) - 1);
    size_t n = read_all(fd, (uint8_t *)body, sizeof(body) - 1);
    body[n] = '\0';
    close(fd);
    return body;
}

/* A --summary write due while the last one is still being written is
 * skipped and counted: the writer (a forked copy of the server) is caught
 * and stopped, then SIGHUP asks for another. The count is in the JSON, the
 * text stats and /metrics; so is passed_fds_left_open (0 here: it counts
 * descriptors the server had no memory to park, which no test can make
 * happen without failing the server's allocator). */
static void a_summary_skipped_while_one_is_written_is_counted_everywhere(void **state) {
    (void)state;
    const char *extra[] = {"--summary-interval-ms", "0", "--http", "127.0.0.1:0", NULL};
    pid_t srv = test_server_start(tk_trackd, &tk_paths, extra), writer = 0, pp;
    int attempts = 0;
    for (double end = test_now_s() + TEST_HANG_S; writer == 0 && test_now_s() < end; attempts++) {
        pid_t from = last_pid();
        kill(srv, SIGHUP); /* writes the summary from a forked copy */
        for (int i = 0; i < 2000 && writer == 0; i++) {
            pid_t w = new_running_child(srv, &from);
            if (w != 0 && kill(w, SIGSTOP) == 0) {
                char st;
                while ((st = proc_state(w, &pp)) != 0 && st != 'T' && st != 'Z')
                    test_sleep_ms(1);       /* the stop is delivered, or it ended first */
                writer = st == 'T' ? w : 0; /* else try again */
            }
        }
    }
    print_message("summary writer stopped after %d SIGHUPs\n", attempts);
    assert_true(writer != 0);
    kill(srv, SIGHUP); /* its writer is still busy: skipped */
    uint64_t skipped = test_wait_stat(tk_trackd, tk_paths.sock, "server", "summaries_skipped", 1);
    kill(writer, SIGCONT);
    assert_true(skipped >= 1);
    const char *j = tk_stats_json();
    assert_int_equal(test_json_u64(j, "server", "summaries_skipped"), skipped);
    assert_int_equal(test_json_u64(j, "server", "passed_fds_left_open"), 0);
    char want[160];
    const char *text = tk_stats_text();
    snprintf(want, sizeof(want), ", %llu summaries skipped, 0 passed descriptors left open; ",
             (unsigned long long)skipped);
    assert_non_null(strstr(text, want));
    const char *m = metrics_text();
    snprintf(want, sizeof(want), "\nbh_trackd_summaries_skipped_total %llu\n", (unsigned long long)skipped);
    assert_non_null(strstr(m, want));
    assert_non_null(strstr(m, "\nbh_trackd_passed_fds_left_open_total 0\n"));
    test_server_stop_clean(srv);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        TK_TEST(malformed_frames_disconnect_only_their_client),
        TK_TEST(stats_rows_come_biggest_first),
        TK_TEST(peers_of_other_users_are_rejected_unless_allowed),
        TK_TEST(a_client_over_its_live_limit_is_cut_off_and_the_server_goes_on),
        TK_TEST(compat_records_are_tracked_and_answered),
        TK_TEST(a_limit_of_zero_is_refused_at_start),
        TK_TEST(a_summary_skipped_while_one_is_written_is_counted_everywhere),
    };
    return tk_main(argc, argv, "trackd_server", tests, sizeof(tests) / sizeof(tests[0]));
}
