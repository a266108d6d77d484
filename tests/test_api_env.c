/*
 * test_api_env.c - the log reporter and what the environment turns on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "support/api_fixture.h"

/* ------------------------------------------------------------ log reporter */

static size_t read_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

/* Makes an empty temporary file from a mkstemp template. */
static void make_temp_file(char *path) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

static void log_reporter_writes_one_json_line_per_event(void **state) {
    (void)state;
    char path[] = "/tmp/bh-log-XXXXXX";
    make_temp_file(path);
    bh_reporter rep;
    assert_int_equal(bh_log_reporter_open(path, NULL), BH_EINVAL);
    assert_int_equal(bh_log_reporter_open("/nonexistent-dir/x.log", &rep), BH_EALLOC);
    assert_int_equal(bh_log_reporter_open(path, &rep), BH_OK);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reporter = rep;
    bh_registry *reg;
    bh_handle h;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_int_equal(bh_intern(reg, 7, 0x1000, 64, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_intern(reg, BH_DOMAIN(3, BH_MEM_L1), 0x2000, 64, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_log_reporter_close(&rep);
    assert_null(rep.report);
    char buf[1024];
    read_file(path, buf, sizeof(buf));
    assert_non_null(strstr(buf, "{\"kind\":\"ALLOC\",\"domain\":7,\"device\":0,\"mem\":7,\"address\":4096,"
                                "\"size\":64,\"seq\":1,"));
    assert_non_null(strstr(buf, "\n{\"kind\":\"FREE\",\"domain\":7,\"device\":0,\"mem\":7,\"address\":4096,"
                                "\"size\":64,\"seq\":2,"));
    assert_non_null(
        strstr(buf, "{\"kind\":\"ALLOC\",\"domain\":49,\"device\":3,\"mem\":1,\"address\":8192,"));
    assert_non_null(strstr(buf, "\"pid\":"));
    assert_non_null(strstr(buf, "\"thread\":"));
    unlink(path);
}

static void the_environment_turns_logging_on_unless_opted_out(void **state) {
    (void)state;
    char path[] = "/tmp/bh-envlog-XXXXXX";
    make_temp_file(path);
    setenv("BH_TRACK_LOG", path, 1);
    bh_registry *reg;
    bh_handle h;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV; /* opted out: nothing logged */
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_int_equal(bh_intern(reg, 1, 0x2000, 8, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    char buf[1024];
    assert_int_equal(read_file(path, buf, sizeof(buf)), 0);
    assert_int_equal(bh_registry_create(NULL, &reg), BH_OK); /* defaults: the environment counts */
    assert_int_equal(bh_intern(reg, 1, 0x2000, 8, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    unsetenv("BH_TRACK_LOG");
    read_file(path, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"kind\":\"ALLOC\",\"domain\":1,\"device\":0,\"mem\":1,\"address\":8192"));
    assert_non_null(strstr(buf, "\"kind\":\"FREE\",\"domain\":1,\"device\":0,\"mem\":1,\"address\":8192"));
    unlink(path);
}

/* 0.2 ignored the tracking variables when the application passed its own
 * reporter. Now both get every event, with the same seq. */
static void the_environment_reporter_tees_with_the_applications_own(void **state) {
    (void)state;
    char path[] = "/tmp/bh-teelog-XXXXXX";
    make_temp_file(path);
    setenv("BH_TRACK_LOG", path, 1);
    checker *chk = checker_new(1, 0, 4, BASE, ALIGN); /* device 0 is interned */
    bh_config cfg = checker_config(chk);
    cfg.flags = 0; /* the environment counts */
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    unsetenv("BH_TRACK_LOG");
    bh_handle h;
    assert_int_equal(bh_intern(reg, 0, BASE, 64, &h), BH_OK);
    assert_int_equal(bh_release(reg, h), BH_OK);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.reports, 2); /* one event each, handed to both */
    assert_int_equal(checker_alloc_reports(chk), 1);
    assert_int_equal(checker_free_reports(chk), 1);
    const checker_event *ev;
    assert_int_equal(checker_events(chk, &ev), 2);
    const uint64_t free_seq = ev[1].seq;
    assert_int_equal(checker_finish(chk, reg), 0); /* destroys reg: the log is closed */
    char buf[1024], want[128];
    read_file(path, buf, sizeof(buf));
    snprintf(want, sizeof(want), "{\"kind\":\"ALLOC\",\"domain\":0,\"device\":0,\"mem\":0,\"address\":%llu,",
             (unsigned long long)BASE);
    assert_non_null(strstr(buf, want));
    snprintf(want, sizeof(want), "\"size\":64,\"seq\":%llu,", (unsigned long long)free_seq);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "{\"kind\":\"FREE\""));
    unlink(path);
}

/* The application's reporter allocates on the first ALLOC it sees (as a
 * runtime that allocates a companion buffer would): that nested ALLOC takes
 * seq 2 while seq 1 is still being handed out. Both are this thread's
 * events, so every reporter must get 1 before 2; 0.3.1 handed the
 * environment's log 2 first (the application's reporter ran first and the
 * nested event went all the way through before the outer one reached the
 * log). */
typedef struct nesting {
    bh_registry *reg;
    int depth;
    bh_handle inner;
} nesting;

static int nest_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device, (void)size;
    *address = 0x100000 + 0x1000 * (uint64_t)((nesting *)ctx)->depth;
    return 0;
}

static void nest_report(void *ctx, const bh_event *ev) {
    nesting *n = ctx;
    if (ev->kind == BH_EVENT_ALLOC && n->depth++ == 0)
        assert_int_equal(bh_alloc(n->reg, 0, 64, &n->inner), BH_OK);
}

static void a_threads_events_reach_the_environments_log_in_order_when_a_callback_allocates(void **state) {
    (void)state;
    char path[] = "/tmp/bh-nestlog-XXXXXX";
    make_temp_file(path);
    setenv("BH_TRACK_LOG", path, 1);
    nesting n = {NULL, 0, {0}};
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){nest_alloc, NULL, &n};
    cfg.reporter = (bh_reporter){nest_report, &n};
    assert_int_equal(bh_registry_create(&cfg, &n.reg), BH_OK);
    unsetenv("BH_TRACK_LOG");
    bh_handle outer;
    assert_int_equal(bh_alloc(n.reg, 0, 64, &outer), BH_OK);
    assert_int_equal(n.depth, 2); /* the nested ALLOC happened */
    assert_int_equal(bh_release(n.reg, n.inner), BH_OK);
    assert_int_equal(bh_release(n.reg, outer), BH_OK);
    assert_int_equal(bh_registry_destroy(n.reg), BH_OK);
    char buf[2048];
    read_file(path, buf, sizeof(buf));
    unsigned long long last = 0, seq;
    int lines = 0;
    for (const char *p = strstr(buf, "\"seq\":"); p != NULL; p = strstr(p + 1, "\"seq\":")) {
        assert_int_equal(sscanf(p, "\"seq\":%llu", &seq), 1);
        if (seq <= last)
            fail_msg("the log has seq %llu after seq %llu:\n%s", seq, last, buf);
        last = seq;
        lines++;
    }
    assert_int_equal(lines, 4);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(log_reporter_writes_one_json_line_per_event),
        cmocka_unit_test(the_environment_turns_logging_on_unless_opted_out),
        cmocka_unit_test(the_environment_reporter_tees_with_the_applications_own),
        cmocka_unit_test(a_threads_events_reach_the_environments_log_in_order_when_a_callback_allocates),
    };
    return cmocka_run_group_tests_name("api_env", tests, NULL, NULL);
}
