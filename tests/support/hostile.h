/*
 * hostile.h - what the attack tests on a real bh-trackd share (the first
 * round's files add attack.h on top): a server started with a descriptor
 * limit, its --http port, its CPU time and RSS, reporters and queries on its
 * socket, HTTP connections from a chosen loopback source, becoming user
 * nobody, and the owner's latency measured against a control.
 *
 * Owns: those helpers. Must never: hide a failure (helpers that cannot go on
 * assert through cmocka), wait without a bound, or sleep to synchronise (they
 * poll for the condition).
 */
#ifndef BH_TEST_HOSTILE_H
#define BH_TEST_HOSTILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "support/server.h"

/* Starts trackd with --log and --socket of p, RLIMIT_NOFILE nofile, soft and
 * hard (0: inherited; the server raises its soft limit to the hard one), and
 * extra (NULL-terminated, may be NULL); waits until it accepts. Ended by
 * hs_teardown (or test_server_stop). */
pid_t hs_start(const char *trackd, const test_paths *p, const char *const *extra, unsigned long nofile);
/* The same under the limits *nofile (NULL: inherited). */
pid_t hs_start_nofile(const char *trackd, const test_paths *p, const char *const *extra,
                      const struct rlimit *nofile);
/* Kills every server started and every process hs_track was given. */
void hs_teardown(void);
/* Kills pid at teardown, whatever happened. */
void hs_track(pid_t pid);

/* The --http port the server logged in log (asserts it did, within
 * TEST_HANG_S). */
unsigned hs_http_port(const char *log);
/* 1 if the log holds tag now (the first 1 MiB of it). */
int hs_log_has(const char *log, const char *tag);
/* The number after "at most " in the log's descriptor-limit line, 0 if none
 * came within TEST_HANG_S. */
uint64_t hs_logged_cap(const char *log);

long hs_rss_kb(pid_t pid); /* VmRSS */

/* HELLO (control: a query connection; name "evil", this pid) into p; its size. */
size_t hs_hello(uint8_t *p, int control);
/* A connection to sock whose sends and reads give up after TEST_HANG_S
 * (SO_SNDTIMEO, SO_RCVTIMEO: no attack step may hang a test); -1 if it
 * could not connect. */
int hs_connect(const char *sock);
/* A reporter connection of this process that said HELLO (name "evil"). */
int hs_reporter(const char *sock);
/* count EVENTs of kind: address base + i * 64, size bytes, on device + i % spread
 * (spread 0: device). */
void hs_events(int fd, uint32_t stream, uint8_t kind, uint32_t device, uint32_t spread, uint64_t base,
               uint64_t size, size_t count);
void hs_send_all(int fd, const void *p, size_t n);
/* Reads exactly n bytes, TEST_HANG_S at most; how many came (fewer: EOF, an
 * error or the bound). */
size_t hs_read_n(int fd, uint8_t *buf, size_t n);
/* Starts trackd with --compat-tt on p->compat, --grace-ms 100 and more
 * (NULL-terminated, may be NULL); waits until both sockets accept. */
pid_t hs_start_compat(const char *trackd, const test_paths *p, const char *const *more);
/* A connection to the compat socket (asserts it connected). */
int hs_tt_connect(const char *compat);
/* The number after "key": in a fresh stats --json (asserts an answer);
 * UINT64_MAX if absent. */
uint64_t hs_stat(const char *sock, const char *key);
/* A 72-byte TT QUERY for device on the compat connection fd: the RESPONSE's
 * DRAM bytes (asserts a whole RESPONSE came). */
uint64_t hs_tt_dram(int fd, int32_t device);
/* One QUERY (1 stats, 2 dump) in JSON; the payload (malloc'd) or NULL
 * without an answer within secs; *took (may be NULL) the time it took. */
char *hs_query(const char *sock, uint16_t what, double secs, double *took);
/* The number after "key": in json (the first one), UINT64_MAX if absent. */
uint64_t hs_num(const char *json, const char *key);
/* Polls stats until the first "key": in them (totals' come first) is want
 * or more, or it stops moving (secs after it last changed: test_progress); the value last seen (UINT64_MAX:
 * no answer). For a count that only grows (what every caller waits for) a value past want is final: the
 * caller's check of it fails at once, not after secs. */
uint64_t hs_wait_total(const char *sock, const char *key, uint64_t want, double secs);
/* The median of n stats latencies (each bounded by TEST_HANG_S, which no
 * answer counts as), stats queries one after another; *worst (may be NULL)
 * the largest. */
double hs_stats_latency(const char *sock, int n, double *worst);

/* A TCP connection to 127.0.0.1:port from source address src (NULL: any),
 * with the receive buffer set to rcvbuf first (0: default). -1 if refused. */
int hs_http_connect(unsigned port, const char *src, int rcvbuf);
/* "GET path" on a new connection: HTTP/1.1 with Host host and "Connection:
 * close", or HTTP/1.0 without Host (host NULL). Reads the answer until the
 * server closes (TEST_HANG_S and 4 MiB at most). Returns its status, -1 if
 * the connection was refused or no status line came; *body (body may be
 * NULL) what follows the headers, malloc'd, or NULL if they never ended. */
int hs_http_get(unsigned port, const char *host, const char *path, char **body);

/* A TCP connection whose close() waits linger_s seconds: SO_LINGER on, and
 * data it cannot send, because the other end (a connection nobody accepts
 * on *listener, with a small receive buffer) reads nothing. Closing
 * *listener resets it, which ends such a close at once. */
int hs_lingering_socket(int *listener, int linger_s);
/* 1 once the other end of the pipe whose write end is w is closed (by the
 * server: the test let its own copy go), within TEST_HANG_S. */
int hs_closed_in_time(int w);
/* A pipe's read end passed on a new reporter connection (a DRAIN frame's
 * descriptor), its own copy let go: 1 once the server closed it (refused:
 * not a memfd, closed by its closer thread), within TEST_HANG_S. */
int hs_passed_pipe_closed(const char *sock);

/* setgid/setuid to 65534 (a forked child only: exits 99 on failure). */
void hs_become_nobody(void);

#endif /* BH_TEST_HOSTILE_H */
