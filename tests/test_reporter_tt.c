/*
 * test_reporter_tt.c - the socket reporter speaking TT-Metal's records
 * (BH_SOCKET_COMPAT_TT): records carry the device and the memory kind, a
 * kind with no TT buffer type is not sent (basic); a TT server sees no
 * duplicate ALLOC, unknown FREE or false leak after a loss, which it
 * cannot be told of (hostile).
 *
 * usage: test_reporter_tt PATH-TO-bh-trackd [slow|fast [basic|hostile]]
 *
 * Must never depend on timing: the loss is made by stopping the server
 * while a forked client churns, each step waiting for the one before.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "wire.h"
#include "support/reporting.h"

static void tt_records_carry_the_device_and_the_memory_kind(void **state) {
    (void)state;
    int lfd = test_unix_listen(rp_paths.compat, 16);
    bh_reporter rep;
    bh_socket_options opt = {.flags = BH_SOCKET_COMPAT_TT};
    assert_int_equal(bh_socket_reporter_open(rp_paths.compat, &opt, &rep), BH_OK);
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    bh_event evs[] = {{BH_EVENT_ALLOC, BH_DOMAIN(3, BH_MEM_L1), 0x5000, 100, 1},
                      {BH_EVENT_ALLOC, BH_DOMAIN(3, 7), 0x6000, 100, 2}, /* no TT buffer_type: not sent */
                      {BH_EVENT_FREE, BH_DOMAIN(3, 7), 0x6000, 100, 3},
                      {BH_EVENT_FREE, BH_DOMAIN(3, BH_MEM_L1), 0x5000, 100, 4}};
    for (int i = 0; i < 4; i++)
        rep.report(rep.ctx, &evs[i]);
    assert_int_equal(bh_socket_reporter_flush(&rep, TEST_HANG_MS), BH_OK);
    bh_socket_reporter_close(&rep);
    uint8_t rec[3 * BH_TT_RECORD];
    struct timeval tv = {(time_t)TEST_HANG_S, 0}; /* the close's EOF ends the read */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n = recv(fd, rec, sizeof(rec), MSG_WAITALL);
    assert_int_equal(n, 2 * BH_TT_RECORD);
    assert_int_equal(rec[0], BH_TT_ALLOC);
    assert_int_equal(bh_get32(rec + 4), 3); /* device_id */
    assert_int_equal(rec[16], BH_MEM_L1);   /* buffer_type */
    assert_int_equal(bh_get64(rec + 24), 0x5000);
    assert_int_equal(rec[BH_TT_RECORD], BH_TT_FREE);
    assert_int_equal(bh_get32(rec + BH_TT_RECORD + 4), 3);
    assert_int_equal(bh_get64(rec + BH_TT_RECORD + 24), 0x5000);
    close(fd);
    close(lfd);
}

static int tt_up[2], tt_down[2]; /* child -> parent, parent -> child */

/* Holds 50 and tells the parent, which stops the server and says so; churns
 * with a tiny ring until events are lost, frees 20 of the 50 and makes 10
 * more, churns on, and tells the parent, which lets the server go on; then
 * waits until a resync has made the server's view right and everything is
 * sent, and frees everything. Each step waits for the one before (no sleeps):
 * the loss and the changes during it happen on any machine. */
static void tt_client_through_a_loss(void) {
    bh_reporter rep;
    bh_socket_options opt = {
        .flags = BH_SOCKET_COMPAT_TT, .queue_capacity = 64, .max_block_us = 0, .send_timeout_ms = 100};
    if (bh_socket_reporter_open(rp_paths.compat, &opt, &rep) != BH_OK)
        _exit(40);
    bh_registry *reg = rp_registry_on(&rep);
    bh_handle h[60];
    memset(h, 0, sizeof(h));
    rp_hold(reg, h, 50, 1u << 20);
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK)
        _exit(41);
    char c;
    if (write(tt_up[1], "r", 1) != 1 || read(tt_down[0], &c, 1) != 1) /* the server is stopped now */
        _exit(42);
    bh_reporter_stats rs = {0};
    uint64_t i = 0;
    for (; rs.dropped == 0; i++) { /* bounded by the alarm */
        (void)rp_pair(reg, 0x10000 + (i % 512) * 64);
        bh_socket_reporter_stats(&rep, &rs);
    }
    rp_drop_all(reg, h, 20);
    memset(h, 0, 20 * sizeof(h[0]));
    rp_hold(reg, h + 50, 10, 1u << 28);
    for (uint64_t end = i + 2000; i < end; i++)
        (void)rp_pair(reg, 0x10000 + (i % 512) * 64);
    if (write(tt_up[1], "l", 1) != 1) /* lost events: the parent lets the server go on */
        _exit(45);
    while (bh_socket_reporter_flush(&rep, 100) != BH_OK || rs.resyncs == 0) { /* bounded by the alarm */
        bh_socket_reporter_stats(&rep, &rs);
        test_sleep_ms(10);
    }
    if (rs.dropped == 0 || rs.resyncs == 0)
        _exit(43); /* the loss this test is about did not happen */
    rp_drop_all(reg, h, 60);
    if (bh_socket_reporter_flush(&rep, TEST_HANG_MS) != BH_OK || bh_registry_destroy(reg) != BH_OK)
        _exit(44);
    bh_socket_reporter_close(&rep);
}

static void a_tt_server_sees_no_duplicate_unknown_free_or_false_leak_after_a_loss(void **state) {
    (void)state;
    const char *opts[] = {"--compat-tt", "--compat-socket", rp_paths.compat, RP_ONLY_EXITS_ARE_GONE, NULL};
    rp_serve(opts, rp_paths.compat);
    assert_int_equal(pipe(tt_up), 0);
    assert_int_equal(pipe(tt_down), 0);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        alarm(RP_CHILD_HANG_S);
        tt_client_through_a_loss();
        _exit(0);
    }
    close(tt_up[1]); /* a child that dies early makes the reads below return 0 */
    close(tt_down[0]);
    char r = 0, l = 0;
    ssize_t got = read(tt_up[0], &r, 1);
    if (got == 1) {
        kill(rp_server, SIGSTOP);
        got = write(tt_down[1], "s", 1) == 1 ? read(tt_up[0], &l, 1) : 0;
        kill(rp_server, SIGCONT);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(got, 1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    rp_wait_gone(1); /* what the server still holds is a leak now */
    uint64_t dup = rp_stat_of("totals", "duplicate_allocs"), unknown = rp_stat_of("totals", "unknown_frees"),
             leaks = rp_stat_of("totals", "leaks");
    print_message("TT after a loss: %llu duplicate ALLOCs, %llu unknown FREEs, %llu leaks\n",
                  (unsigned long long)dup, (unsigned long long)unknown, (unsigned long long)leaks);
    assert_int_equal(dup, 0);
    assert_int_equal(unknown, 0);
    assert_int_equal(leaks, 0);
    assert_int_equal(rp_stat_of("totals", "live"), 0);
    close(tt_up[0]);
    close(tt_down[1]);
}

int main(int argc, char **argv) {
    const struct CMUnitTest basic[] = {
        RP_TEST(tt_records_carry_the_device_and_the_memory_kind),
    };
    const struct CMUnitTest hostile[] = {
        RP_TEST(a_tt_server_sees_no_duplicate_unknown_free_or_false_leak_after_a_loss),
    };
    return rp_main(argc, argv, "reporter_tt", basic, sizeof(basic) / sizeof(basic[0]), hostile,
                   sizeof(hostile) / sizeof(hostile[0]));
}
