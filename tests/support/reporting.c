/*
 * reporting.c - the shared part of test_reporter's files (reporting.h).
 *
 * Owns: what reporting.h declares. Must never: be linked into the library
 * or a tool, or loosen a test's checks.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "support/reporting.h"

const char *rp_trackd;
test_paths rp_paths;
pid_t rp_server = -1;
double rp_slack = 1;

void rp_serve(const char *const *opts, const char *path) {
    const char *base[] = {rp_trackd,    "--socket",   rp_paths.sock, "--log",
                          rp_paths.log, "--grace-ms", "300",         NULL};
    rp_server = test_server_spawn(base, opts, 0);
    test_wait_accepting(path);
}

void rp_wait_gone(uint64_t n) {
    assert_true(test_wait_stat(rp_trackd, rp_paths.sock, "server", "processes_gone", n) >= n);
}

uint64_t rp_stat_of(const char *section, const char *key) {
    char buf[1 << 15];
    return test_json_u64(test_stats_json(rp_trackd, rp_paths.sock, buf, sizeof(buf)), section, key);
}

void rp_wait_nothing_live(void) {
    for (double end = test_now_s() + TEST_HANG_S; rp_stat_of("totals", "live") != 0 && test_now_s() < end;)
        test_sleep_ms(20);
    assert_int_equal(rp_stat_of("totals", "live"), 0);
}

int rp_in_child(void (*fn)(void), const char *err) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (err != NULL) {
            int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            dup2(fd, 2);
        }
        alarm(RP_CHILD_HANG_S);
        fn();
        _exit(0);
    }
    return test_reap(pid);
}

int rp_lines_with(const char *f, const char *needle) {
    FILE *fp = fopen(f, "r");
    if (fp == NULL)
        return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), fp) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(fp);
    return n;
}

bh_registry *rp_registry_on(const bh_reporter *rep) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reporter = *rep;
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        _exit(90);
    return reg;
}

void rp_hold(bh_registry *reg, bh_handle *h, uint32_t n, uint64_t base) {
    for (uint32_t i = 0; i < n; i++)
        if (bh_intern(reg, RP_DOMAIN, base + (uint64_t)i * 4096, 4096, &h[i]) != BH_OK)
            _exit(91);
}

void rp_drop_all(bh_registry *reg, bh_handle *h, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (h[i].bits != 0 && bh_release(reg, h[i]) != BH_OK)
            _exit(92);
}

double rp_pair(bh_registry *reg, uint64_t address) {
    bh_handle h;
    test_timer t;
    test_timer_start(&t);
    if (bh_intern(reg, RP_DOMAIN, address, 64, &h) != BH_OK || bh_release(reg, h) != BH_OK)
        _exit(93);
    return test_timer_unloaded(&t);
}

int rp_setup(void **state) {
    (void)state;
    test_paths_make(&rp_paths, "bh-reporter-test");
    return 0;
}

int rp_teardown(void **state) {
    (void)state;
    test_servers_end();
    rp_server = -1;
    return test_paths_remove(&rp_paths);
}

int rp_main(int argc, char **argv, const char *name, const struct CMUnitTest *basic, size_t nbasic,
            const struct CMUnitTest *hostile, size_t nhostile) {
    static const char usage[] = "PATH-TO-bh-trackd [slow|fast [basic|hostile]]";
    if (argc < 2)
        return test_trackd_main(argc, argv, usage, &rp_trackd, name, basic, 0); /* says how */
    rp_slack = test_time_slack(argc > 2 ? argv[2] : NULL);
    const char *group = argc > 3 ? argv[3] : "all";
    char hostile_name[64];
    snprintf(hostile_name, sizeof(hostile_name), "%s hostile", name);
    int failed = 0;
    if (nbasic > 0 && strcmp(group, "hostile") != 0)
        failed += test_trackd_main(argc, argv, usage, &rp_trackd, name, basic, nbasic);
    if (nhostile > 0 && strcmp(group, "basic") != 0)
        failed += test_trackd_main(argc, argv, usage, &rp_trackd, hostile_name, hostile, nhostile);
    return failed;
}
