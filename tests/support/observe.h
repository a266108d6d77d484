/*
 * observe.h - what the tests of bh-trackd's HTTP side share
 * (test_observability_*): one server per test with --http on a port the
 * kernel picks and the TT compatible socket, plain HTTP/1.0 requests, real
 * clients (forked processes reporting through the library's socket
 * reporter), the scenario most tests start from, and their main.
 *
 * The scenario: a holder on OB_DEVICES devices that stays connected (DRAM
 * and L1 on each), a leaker (two L1 buffers on device 2, then gone) and an
 * over-freer (one DRAM allocation freed by three aliases, then gone).
 *
 * Owns: the server's binary, paths, pid and port (ob_*: made fresh for each
 * test by ob_setup), the kept clients, those helpers. Must never: hide a
 * failure (helpers assert through cmocka), wait without a bound (TEST_HANG_S),
 * or assume after a sleep what the server reaches on its own (they poll).
 */
#ifndef BH_TEST_OBSERVE_H
#define BH_TEST_OBSERVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bufhandle/bufhandle.h"
#include "support/server.h"

#define OB_DEVICES 64u     /* the holder's devices: more than the TT server's 8 */
#define OB_HOLDER_L1 1024u /* the holder's L1 bytes on each device */
#define OB_BACKGROUND 2    /* ob_run_client: answers at once, runs fn, stays until teardown */

extern const char *ob_trackd; /* the bh-trackd under test (argv[1]) */
extern test_paths ob_paths;   /* this test's directory and the server's files */
extern pid_t ob_server;       /* the server ob_start started (0 once the test reaped it) */
extern pid_t ob_children[8];  /* clients kept alive until teardown, in the order started */
extern int ob_nchildren;
extern unsigned ob_port; /* the server's HTTP port */

/* A whole file into a malloc'd string ("" if absent). */
char *ob_slurp(const char *path);
/* A connection to 127.0.0.1:p (asserted) whose reads give up after TEST_HANG_S. */
int ob_tcp_connect(unsigned p);
/* method path from 127.0.0.1:p (HTTP/1.0, so the server closes). Returns the
 * status; *body (malloc'd) gets what follows the headers. */
int ob_http_request(unsigned p, const char *method, const char *path, char **body);
int ob_http_get(unsigned p, const char *path, char **body);
/* Starts bh-trackd with --http 127.0.0.1:0, the TT compatible socket and
 * extra arguments (NULL-terminated, may be NULL); reads the bound port from
 * its log into ob_port, and waits until both sockets accept. */
void ob_start(const char *const *extra);

/* Reports through the library's socket reporter, as a registry would. */
typedef struct ob_client {
    bh_reporter rep;
    uint64_t seq;
} ob_client;
void ob_report(ob_client *c, bh_event_kind kind, uint32_t domain, uint64_t address, uint64_t size);
/* Names this process (the name HELLO carries) and opens its reporter on
 * ob_paths.sock (exits 20 if it cannot). */
void ob_client_open(ob_client *c, const char *name);

/* Live bytes the holder keeps on device d: (d+1) pages of DRAM, and
 * OB_HOLDER_L1 of L1. */
uint64_t ob_holder_dram(uint32_t d);
/* The holder's reports (a client function for ob_run_client). */
void ob_holder(void);
/* All the holder keeps live. */
uint64_t ob_holder_total(void);
/* Runs fn in a child; returns once fn is done. keep: the child then stays
 * alive (holding what it reported) until teardown; OB_BACKGROUND: returns
 * before fn starts. */
void ob_run_client(void (*fn)(void), int keep);
/* The scenario's clients, and waits until the server saw them all (the
 * leaker's leaks included). */
void ob_scenario(void);

/* GETs path until the answer is a 200 whose body holds want, TEST_HANG_S at
 * most (what the server reaches on its own is waited for, never assumed
 * after a sleep); the last status, and its body at *body (malloc'd). */
int ob_http_await(const char *path, const char *want, char **body);
/* 1 if /api/stats comes to contain want (ob_http_await). */
int ob_stats_contain(const char *want);
/* /api/stats, into a static buffer (the socket's `stats --json`, by HTTP). */
const char *ob_api_stats(void);

/* Each test's setup and teardown: a fresh directory; every kept client and
 * server ended, the directory removed. */
int ob_setup(void **state);
int ob_teardown(void **state);
#define OB_TEST(fn) cmocka_unit_test_setup_teardown(fn, ob_setup, ob_teardown)

#endif /* BH_TEST_OBSERVE_H */
