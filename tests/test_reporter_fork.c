/*
 * test_reporter_fork.c - the socket reporter across fork(): 20 children
 * forked while a parent thread churns find the inherited registry answering
 * BH_EFORKED, open a reporter of their own (its own connection and sender
 * thread) and use it; nothing unknown, left or leaked at the server.
 *
 * usage: test_reporter_fork PATH-TO-bh-trackd [slow|fast [basic|hostile]]
 *
 * Hostile (natively and in the hostile stage, not under valgrind). Must
 * never start a thread in a child under a sanitizer (see docs/testing.md,
 * "Fork under the sanitizers"): under ASan the children skip the reporter,
 * under TSan the test skips.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "sanitize.h"
#include "support/reporting.h"

/* busy: churned by a thread of the parent while it forks; idle: a second
 * registry whose reporter shares busy's connection (and so its lock and its
 * sender thread), used by the children. (A registry busy in another thread at
 * the moment of fork() is the core's matter: its table locks.) */
static bh_registry *busy_reg, *idle_reg;

static atomic_int churning;

static void *churn_thread(void *arg) {
    (void)arg;
    for (uint64_t i = 0; churning; i++)
        (void)rp_pair(busy_reg, 0x100000 + (i % 64) * 64);
    return NULL;
}

/* In the child: the inherited registry is the parent's (BH_EFORKED at once,
 * nothing reaches its reporter), and a reporter opened here gets a
 * connection of its own. */
static void forked_child(void) {
    bh_handle h;
    for (int i = 0; i < 200; i++)
        if (bh_intern(idle_reg, RP_DOMAIN, 0x900000, 64, &h) != BH_EFORKED)
            _exit(19);
#if BH__TSAN || BH__ASAN
    /* No threads in the child of a threaded process under a sanitizer. TSan
     * kills such a child (die_after_fork). Under gcc 12's ASan, which takes
     * no allocator lock across fork(), the child's sender thread hung before
     * running any of the library's code (2 of 200 children beside busy
     * loops, under gdb): AsanThread::Init -> pthread_getattr_np -> free ->
     * the quarantine's batch allocation -> SizeClassAllocator64::
     * GetFromAllocator, waiting for the lock of that size class. Stopping
     * the churn thread outside the library for each fork made it rarer (4
     * of 4,500 children), not gone. The registry checks above still run. */
    return;
#endif
    bh_reporter rep;
    if (bh_socket_reporter_open(rp_paths.sock, NULL, &rep) != BH_OK)
        _exit(20);
    bh_registry *reg = rp_registry_on(&rep);
    for (int i = 0; i < 200; i++)
        (void)rp_pair(reg, 0x900000);
    /* The flush only has to finish (2 s was not always enough for an ASan
     * child beside busy loops): only a hang reaches its bound. */
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(21);
    bh_reporter_stats rs;
    if (bh_socket_reporter_stats(&rep, &rs) != BH_OK || rs.reported != 400 || rs.connects != 1)
        _exit(22);
    if (bh_registry_destroy(reg) != BH_OK)
        _exit(23);
    bh_socket_reporter_close(&rep);
}

static void forked_children_keep_using_the_library(void **state) {
    (void)state;
#if BH__TSAN
    /* gcc 12's ThreadSanitizer does not hold its own allocator's locks
     * across fork(): a child forked while the churn thread is inside malloc
     * waits forever in TSan's SizeClassAllocator64 lock (seen under gdb, 1
     * run in 3 on a loaded machine). The library's fork handling is checked
     * by this test in the debug, ASan and valgrind builds. */
    print_message("ThreadSanitizer cannot fork a process whose threads allocate: skipping\n");
    skip();
#endif
    const char *opts[] = {RP_ONLY_EXITS_ARE_GONE, NULL};
    rp_serve(opts, rp_paths.sock);
    bh_reporter rep, rep2;
    assert_int_equal(bh_socket_reporter_open(rp_paths.sock, NULL, &rep), BH_OK);
    assert_int_equal(bh_socket_reporter_open(rp_paths.sock, NULL, &rep2), BH_OK);
    busy_reg = rp_registry_on(&rep);
    idle_reg = rp_registry_on(&rep2);
    churning = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_thread, NULL), 0);
    double t0 = test_now_s();
    int status[20];
    for (int i = 0; i < 20; i++) /* each child is bounded by its alarm */
        status[i] = rp_in_child(forked_child, NULL);
    double took = test_now_s() - t0;
    churning = 0;
    pthread_join(t, NULL);
    for (int i = 0; i < 20; i++)
        assert_int_equal(status[i], 0);
    print_message("20 forked children finished in %.2f s\n", took); /* each bounded by its alarm */
    assert_int_equal(bh_registry_destroy(busy_reg), BH_OK);
    assert_int_equal(bh_registry_destroy(idle_reg), BH_OK);
    bh_socket_reporter_close(&rep);
    bh_socket_reporter_close(&rep2);
    /* Each child reported on a connection of its own (the parent's was never
     * written by a child): nothing unknown, nothing left, nothing leaked. */
#if !BH__ASAN
    rp_wait_gone(20); /* the children, seen gone by the server */
#endif
    rp_wait_nothing_live();
    assert_int_equal(rp_stat_of("totals", "unknown_frees"), 0);
    assert_int_equal(rp_stat_of("totals", "leaks"), 0);
#if !BH__TSAN && !BH__ASAN
    assert_true(rp_stat_of("server", "reporter_connections") >= 21); /* the parent's and one per child */
#endif
}

int main(int argc, char **argv) {
    const struct CMUnitTest hostile[] = {
        RP_TEST(forked_children_keep_using_the_library),
    };
    return rp_main(argc, argv, "reporter_fork", NULL, 0, hostile, sizeof(hostile) / sizeof(hostile[0]));
}
