/*
 * test_trackd_metrics.c - every figure bh-trackd's stats reply shows is in
 * its /metrics too, with HELP and TYPE and the same value: the "totals",
 * "tt" and "server" members of `stats --json`, key by key, against the table
 * below. A numeric key the table does not name fails the test, so a counter
 * added to the stats reply alone is caught here.
 *
 * usage: test_trackd_metrics PATH-TO-bh-trackd
 *
 * The traffic makes most figures non-zero (a process that reports natively
 * and as a TT client, then exits; a descriptor passed that is not a memfd).
 * Nothing is timed: every wait is for a condition, TEST_HANG_S at most.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/hostile.h"
#include "support/rings.h"
#include "wire.h"

static const char *trackd;
static test_paths paths;

/* A stats key and the series that show it: a family's series summed (name
 * alone), or one series (name with its labels). self: the stats query's own
 * connection, counted in the reply, not in the scrape before it. */
typedef struct shown {
    const char *section, *key, *metric;
    int self;
} shown;

static const shown table[] = {
    {"totals", "live", "bh_trackd_live_allocations", 0},
    {"totals", "live_bytes", "bh_trackd_live_bytes", 0},
    {"totals", "allocs", "bh_trackd_allocs_total", 0},
    {"totals", "frees", "bh_trackd_frees_total", 0},
    {"totals", "unknown_frees", "bh_trackd_unknown_frees_total", 0},
    {"totals", "duplicate_allocs", "bh_trackd_duplicate_allocs_total", 0},
    {"totals", "leaks", "bh_trackd_leaks_total", 0},
    {"totals", "leaked_bytes", "bh_trackd_leaked_bytes_total", 0},
    {"totals", "unverified_leaks", "bh_trackd_unverified_leaks_total", 0},
    {"totals", "lost", "bh_trackd_events_lost", 0},
    {"totals", "history_evictions", "bh_trackd_history_evictions_total", 0},
    {"totals", "history_evictions_findings", "bh_trackd_history_evictions_total{table=\"findings\"}", 0},
    {"tt", "live", "bh_trackd_tt_live_allocations", 0},
    {"tt", "live_bytes", "bh_trackd_tt_live_bytes", 0},
    {"tt", "allocs", "bh_trackd_tt_allocs_total", 0},
    {"tt", "frees", "bh_trackd_tt_frees_total", 0},
    {"tt", "unknown_frees", "bh_trackd_tt_unknown_frees_total", 0},
    {"tt", "references", "bh_trackd_tt_references_total", 0},
    {"tt", "leaks", "bh_trackd_tt_leaks", 0},
    {"tt", "leaked_bytes", "bh_trackd_tt_leaked_bytes", 0},
    {"tt", "refused", "bh_trackd_tt_table_refused_total", 0},
    {"tt", "evicted_departed", "bh_trackd_tt_table_evicted_departed_total", 0},
    {"tt", "evicted_over_share", "bh_trackd_tt_table_evicted_over_share_total", 0},
    {"tt", "ignored_records", "bh_trackd_compat_ignored_total", 0},
    {"tt", "input_holds", "bh_trackd_compat_input_holds_total", 0},
    {"tt", "accept_waits", "bh_trackd_compat_accept_waits_total", 0},
    {"server", "clients_connected", "bh_trackd_clients_connected", 0},
    {"server", "connections", "bh_trackd_connections_total", 1},
    {"server", "open_connections", "bh_trackd_connections", 1},
    {"server", "reporter_connections", "bh_trackd_reporter_connections_total", 0},
    {"server", "rejected_peers", "bh_trackd_rejected_peers_total", 0},
    {"server", "refused_connections", "bh_trackd_refused_connections_total", 0},
    {"server", "timeouts", "bh_trackd_timeouts_total", 0},
    {"server", "malformed", "bh_trackd_malformed_total", 0},
    {"server", "resyncs", "bh_trackd_resyncs_total", 0},
    {"server", "compat_records", "bh_trackd_compat_records_total", 0},
    {"server", "compat_ignored", "bh_trackd_compat_ignored_total", 0},
    {"server", "unsupported_records", "bh_trackd_unsupported_records_total", 0},
    {"server", "limit_disconnects", "bh_trackd_limit_disconnects_total", 0},
    {"server", "output_overflows", "bh_trackd_output_overflows_total", 0},
    {"server", "processes_gone", "bh_trackd_processes_gone_total", 0},
    {"server", "passed_fds_refused", "bh_trackd_passed_fds_refused_total", 0},
    {"server", "passed_fds_parked", "bh_trackd_passed_fds_parked_total", 0},
    {"server", "passed_fds_left_open", "bh_trackd_passed_fds_left_open_total", 0},
    {"server", "summaries_skipped", "bh_trackd_summaries_skipped_total", 0},
    {"server", "unverified_peers", "bh_trackd_unverified_peers_total", 0},
    {"server", "resyncs_cut", "bh_trackd_resyncs_cut_total", 0},
    {"server", "drop_slices", "bh_trackd_drop_slices_total", 0},
    {"server", "rings_attached", "bh_trackd_rings_attached_total", 0},
    {"server", "rings_refused", "bh_trackd_rings_refused_total", 0},
    {"server", "ring_records", "bh_trackd_ring_records_total", 0},
    {"server", "ring_events_lost", "bh_trackd_ring_events_lost_total", 0},
};

static const shown *shown_as(const char *section, const char *key, size_t n) {
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i].section, section) == 0 && strlen(table[i].key) == n &&
            strncmp(table[i].key, key, n) == 0)
            return &table[i];
    return NULL;
}

/* The sum of the series of metric in the exposition m (a family's, or the
 * one series named with its labels); -1 if there is none. Asserts the
 * family has its HELP and TYPE lines. */
static int64_t series_sum(const char *m, const char *metric) {
    size_t n = strcspn(metric, "{");
    char help[160], type[160];
    snprintf(help, sizeof(help), "# HELP %.*s ", (int)n, metric);
    snprintf(type, sizeof(type), "# TYPE %.*s ", (int)n, metric);
    if (strstr(m, help) == NULL || strstr(m, type) == NULL)
        return -1;
    int64_t sum = -1;
    size_t len = strlen(metric);
    for (const char *p = m; (p = strstr(p, metric)) != NULL; p += len) {
        if (p != m && p[-1] != '\n')
            continue; /* within a line: not a series of this name */
        const char *v = p + len;
        if (*v == '{' && metric[len - 1] != '}')
            v = strchr(v, '}') + 1; /* a labelled series of the family */
        if (*v != ' ')
            continue; /* a longer name */
        sum = (sum < 0 ? 0 : sum) + (int64_t)strtoull(v + 1, NULL, 10);
    }
    return sum;
}

/* Checks every numeric key of the object "section":{...} of the stats
 * replies j0 and j, one before and one after the scrape m: the scrape's
 * figure lies between them (a figure still moving, say processes_gone, when
 * the server counts one process gone more than once, moves between the
 * two); the keys checked. */
static int section_shown(const char *j0, const char *j, const char *m, const char *section) {
    char head[64];
    snprintf(head, sizeof(head), "\"%s\":{", section);
    const char *p = strstr(j, head);
    assert_non_null(p);
    const char *end = strchr(p + strlen(head), '}');
    assert_non_null(end);
    int keys = 0;
    for (p += strlen(head); p < end;
         p = strchr(p, ',') != NULL && strchr(p, ',') < end ? strchr(p, ',') + 1 : end) {
        const char *k = p + 1, *colon = strchr(k, ':');
        if (colon[1] < '0' || colon[1] > '9')
            continue; /* true, false: a flag, not a figure */
        size_t n = (size_t)(colon - 1 - k);
        const shown *s = shown_as(section, k, n);
        if (s == NULL)
            fail_msg("stats' %s.%.*s is in no /metrics series this test knows of", section, (int)n, k);
        int64_t hi = (int64_t)strtoull(colon + 1, NULL, 10), got = series_sum(m, s->metric);
        int64_t lo = (int64_t)test_json_u64(j0, section, s->key) - s->self;
        print_message("%s.%s = %" PRId64 " (%s %" PRId64 ")\n", section, s->key, hi, s->metric, got);
        if (got < lo || got > hi)
            fail_msg("stats' %s.%s is %" PRId64 "..%" PRId64 ", /metrics' %s %" PRId64
                     " (-1: no such family, or no HELP and TYPE)",
                     section, s->key, lo, hi, s->metric, got);
        keys++;
    }
    return keys;
}

/* A process that reports natively (3 ALLOCs, one FREE, an unknown FREE) and
 * as a TT client (an ALLOC twice, a FREE, an unknown FREE, an ALLOC on a
 * device out of range, one ALLOC kept), passes a descriptor that is not a
 * memfd on a third connection (refused: the server closes it), then exits:
 * what it held is leaked. All in one process, connected throughout, so the
 * server sees one process gone, once it has exited (a process of the test
 * that closed its last connection would be gone again --grace-ms later,
 * maybe between the scrape and the stats). */
static void reports_then_goes(void) {
    uint32_t dram = BH_DOMAIN(1, BH_MEM_DRAM);
    int fd = hs_reporter(paths.sock);
    hs_events(fd, 1, BH_EVENT_ALLOC, dram, 0, 0x100000, 4096, 3);
    hs_events(fd, 1, BH_EVENT_FREE, dram, 0, 0x100000, 4096, 1);
    hs_events(fd, 1, BH_EVENT_FREE, dram, 0, 0x900000, 4096, 1);
    int tt = hs_tt_connect(paths.compat);
    uint8_t r[6][BH_TT_RECORD];
    int32_t me = (int32_t)getpid();
    bh_tt_record(r[0], BH_TT_ALLOC, 0, 4096, 0, me, 0x1000, 1);
    bh_tt_record(r[1], BH_TT_ALLOC, 0, 4096, 0, me, 0x1000, 2); /* TT: another reference */
    bh_tt_record(r[2], BH_TT_FREE, 0, 0, 0, me, 0x1000, 3);
    bh_tt_record(r[3], BH_TT_FREE, 0, 0, 0, me, 0x7000, 4);      /* unknown */
    bh_tt_record(r[4], BH_TT_ALLOC, -1, 4096, 0, me, 0x8000, 5); /* device out of range: ignored */
    bh_tt_record(r[5], BH_TT_ALLOC, 0, 8192, 0, me, 0x2000, 6);  /* kept: leaked at the exit */
    hs_send_all(tt, r, sizeof(r));
    (void)hs_tt_dram(tt, 0); /* answered after every record before it */
    int ring = hs_reporter(paths.sock), p[2];
    assert_int_equal(pipe(p), 0);
    tr_send_ring(ring, 64, p[0]);
    uint8_t b[64];
    while (hs_read_n(ring, b, sizeof(b)) == sizeof(b)) /* until the server closes it (TEST_HANG_S) */
        ;
    close(ring);
    close(tt);
    close(fd);
}

static int setup(void **state) {
    (void)state;
    test_paths_make(&paths, "bh-trackd-metrics");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    hs_teardown();
    return test_paths_remove(&paths);
}

static void every_figure_of_the_stats_reply_is_in_metrics(void **state) {
    (void)state;
    const char *more[] = {"--http", "127.0.0.1:0", NULL};
    hs_start_compat(trackd, &paths, more);
    unsigned port = hs_http_port(paths.log);
    pid_t c = test_fork(reports_then_goes);
    assert_int_equal(test_reap(c), 0);
    /* Gone, and what it held counted as leaked: 2 of its own, 1 as a TT client. */
    assert_int_equal(hs_wait_total(paths.sock, "leaks", 3, TEST_HANG_S), 3);
    assert_int_equal(hs_stat(paths.sock, "passed_fds_refused"), 1);
    /* Until the server holds no connection but the asking one: the scrape
     * and the stats below then see the same server. */
    for (double end = test_now_s() + TEST_HANG_S;
         hs_stat(paths.sock, "open_connections") != 1 && test_now_s() < end;)
        test_sleep_ms(20);
    assert_int_equal(hs_stat(paths.sock, "open_connections"), 1);

    char *m = NULL, *j0 = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j0);
    assert_int_equal(hs_http_get(port, "localhost", "/metrics", &m), 200);
    assert_non_null(m);
    char *j = hs_query(paths.sock, 1, TEST_HANG_S, NULL);
    assert_non_null(j);
    int keys =
        section_shown(j0, j, m, "totals") + section_shown(j0, j, m, "tt") + section_shown(j0, j, m, "server");
    /* Every key of the table was in the reply (none renamed away). */
    assert_int_equal(keys, (int)(sizeof(table) / sizeof(table[0])));
    free(j0);
    free(j);
    free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_trackd_metrics PATH-TO-bh-trackd\n");
        return 2;
    }
    trackd = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_figure_of_the_stats_reply_is_in_metrics, setup, teardown),
    };
    return cmocka_run_group_tests_name("trackd metrics", tests, NULL, NULL);
}
