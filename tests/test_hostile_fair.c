/*
 * test_hostile_fair.c - bh-trackd's bounded tables against clients that
 * come first (round 3 leftovers): the per-device byte sums TT QUERY answers
 * from, TT's table of buffers when it is full, and /metrics, bounded in
 * bytes. Each attack is checked by what a later, well-behaved client sees.
 *
 * usage: test_hostile_fair PATH-TO-bh-trackd
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "proc.h"
#include "support/hostile.h"
#include "wire.h"

#define MIB (1ull << 20)
#define FILLERS 16 /* short-lived processes, as in the review */

static const char *trackd;
static test_paths paths;
static int filler; /* which of the FILLERS a forked child is */

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-hostile-fair");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

/* Runs fn in FILLERS processes, one after another (each exits when done),
 * then waits until the server has seen every one of them gone: leaks in all. */
static void fill_with_short_lived(void (*fn)(void), uint64_t leaks) {
    for (filler = 0; filler < FILLERS; filler++)
        assert_int_equal(test_reap(test_fork(fn)), 0);
    assert_int_equal(hs_wait_total(paths.sock, "leaks", leaks, TEST_HANG_S), leaks);
}

/* A TT ALLOC of size bytes on device, buffer id id, on the compat connection fd. */
static void tt_alloc(int fd, int32_t device, uint64_t id, uint64_t size) {
    uint8_t r[BH_TT_RECORD];
    bh_tt_record(r, BH_TT_ALLOC, device, size, 0, (int32_t)getpid(), id, 1);
    hs_send_all(fd, r, sizeof(r));
}

/* The number after "key": in a fresh stats --json. */
static uint64_t stat_of(const char *key) {
    char *j = hs_query(paths.sock, 1, 10, NULL);
    assert_non_null(j);
    uint64_t v = hs_num(j, key);
    free(j);
    return v;
}

/* ------------------------------------------------ per-device sums */

/* 4,096 allocations, one on each of 4,096 devices of its own (a process's
 * group limit), then gone without freeing them. */
static void allocates_on_4096_devices(void) {
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, BH_DOMAIN((uint32_t)filler * 4096u, BH_MEM_DRAM), 4096, 0x10000, 64,
              4096);
    close(fd); /* the server reads what was sent before it sees the end */
}

/* 16 short-lived processes on 4,096 devices each filled the 65,536 device
 * sums TT QUERY answers from (0.3.1 kept every device ever seen): a later
 * process's 1 MiB read 0, through the library's socket as through TT's.
 * A sum goes with its device's last live allocation now. */
static void later_devices_are_answered_after_short_lived_processes(void **state) {
    (void)state;
    hs_track(hs_start_compat(trackd, &paths, NULL));
    fill_with_short_lived(allocates_on_4096_devices, FILLERS * 4096);
    int native = hs_reporter(paths.sock);
    hs_events(native, 1, BH_EVENT_ALLOC, BH_DOMAIN(70000, BH_MEM_DRAM), 0, 0x40000000, MIB, 1);
    assert_int_equal(hs_wait_total(paths.sock, "live", 1, TEST_HANG_S), 1);
    int tt = bh_unix_connect(paths.compat);
    assert_true(tt >= 0);
    tt_alloc(tt, 70001, 0x50000000, MIB);
    uint64_t native_dram = hs_tt_dram(tt, 70000), tt_dram = hs_tt_dram(tt, 70001);
    print_message(
        "after %d processes on 4096 devices each: TT QUERY of a later process's 1 MiB: %llu through "
        "the library's socket, %llu through TT's\n",
        FILLERS, (unsigned long long)native_dram, (unsigned long long)tt_dram);
    assert_int_equal(native_dram, MIB);
    assert_int_equal(tt_dram, MIB);
    close(tt);
    close(native);
}

/* ------------------------------------------------ TT's table */

/* 256 TT buffers of 4 KiB on device 0 (ids of its own), answered, then gone
 * without freeing them: TT's server keeps them (leaks). */
static void leaves_256_tt_buffers(void) {
    int fd = bh_unix_connect(paths.compat);
    assert_true(fd >= 0);
    for (uint64_t k = 0; k < 256; k++)
        tt_alloc(fd, 0, ((uint64_t)filler << 20) + k * 4096, 4096);
    (void)hs_tt_dram(fd, 0); /* answered: every ALLOC before it was read */
    close(fd);
}

/* A table of 4,096 entries filled by 16 short-lived processes' leaks: 0.3.1
 * kept them and refused every later ALLOC (a later process's 1 MiB read 0).
 * The leak of the process gone longest makes room now. */
static void departed_tt_entries_make_room_for_a_later_process(void **state) {
    (void)state;
    const char *more[] = {"--max-live-per-client", "4096", NULL};
    hs_track(hs_start_compat(trackd, &paths, more));
    fill_with_short_lived(leaves_256_tt_buffers, FILLERS * 256);
    int tt = bh_unix_connect(paths.compat);
    assert_true(tt >= 0);
    tt_alloc(tt, 1, 0x7000000, MIB);
    uint64_t dram = hs_tt_dram(tt, 1), dev0 = hs_tt_dram(tt, 0);
    uint64_t evicted = stat_of("evicted_departed"), refused = stat_of("refused");
    print_message("TT table of 4096 full of %d gone processes' leaks: a later 1 MiB reads %llu (device 0: "
                  "%llu); %llu refused, %llu gone entries dropped\n",
                  FILLERS, (unsigned long long)dram, (unsigned long long)dev0, (unsigned long long)refused,
                  (unsigned long long)evicted);
    assert_int_equal(dram, MIB);
    assert_int_equal(dev0, (FILLERS * 256 - 1) * 4096ull);
    assert_int_equal(evicted, 1);
    assert_int_equal(refused, 0);
    close(tt);
}

/* A live process holding the whole table, and staying. */
static void holds_the_whole_table(void) {
    int fd = bh_unix_connect(paths.compat);
    assert_true(fd >= 0);
    for (uint64_t k = 0; k < 4096; k++)
        tt_alloc(fd, 0, k * 4096, 4096);
    (void)hs_tt_dram(fd, 0);
    for (;;)
        pause();
}

/* One live process fills the table: a second process (below an equal
 * share) takes the place of the first one's oldest entry; the first, over
 * its share, cannot take it back. 0.3.1 refused the second. */
static void a_process_over_its_share_makes_room_for_another(void **state) {
    (void)state;
    const char *more[] = {"--max-live-per-client", "4096", NULL};
    hs_track(hs_start_compat(trackd, &paths, more));
    pid_t hog = test_fork(holds_the_whole_table);
    hs_track(hog);
    assert_int_equal(hs_wait_total(paths.sock, "live", 4096, TEST_HANG_S), 4096);
    int tt = bh_unix_connect(paths.compat);
    assert_true(tt >= 0);
    for (uint64_t k = 0; k < 3; k++)
        tt_alloc(tt, 1, 0x9000000 + k * MIB, MIB);
    uint64_t dram = hs_tt_dram(tt, 1), dev0 = hs_tt_dram(tt, 0);
    uint64_t over = stat_of("evicted_over_share"), refused = stat_of("refused");
    print_message("one live process holds all 4096 entries: another's 3 MiB reads %llu (the first's: %llu); "
                  "%llu entries over a share dropped, %llu refused\n",
                  (unsigned long long)dram, (unsigned long long)dev0, (unsigned long long)over,
                  (unsigned long long)refused);
    assert_int_equal(dram, 3 * MIB);
    assert_int_equal(dev0, (4096 - 3) * 4096ull);
    assert_int_equal(over, 3);
    assert_int_equal(refused, 0);
    close(tt);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_hostile_fair PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(later_devices_are_answered_after_short_lived_processes),
        T(departed_tt_entries_make_room_for_a_later_process),
        T(a_process_over_its_share_makes_room_for_another),
    };
    return cmocka_run_group_tests_name("hostile_fair", tests, NULL, NULL);
}
