/*
 * test_observability_metrics.c - what bh-trackd's /metrics says, against a
 * real server and real clients: every device, kind and client of the
 * scenario with its figures, per-client series bounded by --metrics-clients
 * (the rest in "other"), and 32,000 domains of eight processes bounded by
 * the default --metrics-domains with the totals kept, while a bystander's
 * socket `stats` is answered next to eight scrapers (server CPU per scrape).
 *
 * usage: test_observability_metrics PATH-TO-bh-trackd
 *
 * Must never depend on an external tool (promtool's view of the same text:
 * test_observability_tools) nor on the machine's speed: bounds are counts
 * and the server's CPU time, waits poll (support/observe.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/observe.h"

static void metrics_show_every_device_kind_and_client(void **state) {
    (void)state;
    ob_start(NULL);
    ob_scenario();
    char *m = NULL;
    assert_int_equal(ob_http_get(ob_port, "/metrics", &m), 200);
    char line[160];
    for (uint32_t d = 0; d < OB_DEVICES; d++) {
        snprintf(line, sizeof(line), "bh_trackd_live_bytes{device=\"%u\",kind=\"dram\"} %" PRIu64 "\n", d,
                 ob_holder_dram(d));
        assert_non_null(strstr(m, line));
        snprintf(line, sizeof(line), "bh_trackd_live_bytes{device=\"%u\",kind=\"l1\"} %u\n", d, OB_HOLDER_L1);
        assert_non_null(strstr(m, line));
    }
    assert_non_null(strstr(m, "bh_trackd_leaks_total{device=\"2\",kind=\"l1\"} 2\n"));
    assert_non_null(strstr(m, "bh_trackd_leaked_bytes_total{device=\"2\",kind=\"l1\"} 12288\n"));
    assert_non_null(strstr(m, "bh_trackd_unknown_frees_total{device=\"1\",kind=\"dram\"} 2\n"));
    snprintf(line, sizeof(line),
             "bh_trackd_client_live_bytes{client=\"obs-holder\",pid=\"%d\"} %" PRIu64 "\n",
             (int)ob_children[0], ob_holder_total());
    assert_non_null(strstr(m, line));
    assert_non_null(strstr(m, "bh_trackd_clients_connected 1\n"));
    assert_non_null(strstr(m, "bh_trackd_reporter_connections_total 3\n"));
    assert_non_null(strstr(m, "bh_trackd_refused_connections_total 0\n"));
    assert_non_null(strstr(m, "bh_trackd_timeouts_total 0\n"));
    assert_non_null(strstr(m, "bh_trackd_output_overflows_total 0\n"));

    free(m);
}

static void per_client_series_are_bounded(void **state) {
    (void)state;
    const char *extra[] = {"--metrics-clients", "1", NULL};
    ob_start(extra);
    ob_scenario();
    ob_run_client(ob_holder, 1); /* a second holder: two live clients, one series plus "other" */
    char *m;
    (void)ob_http_await("/metrics", "bh_trackd_clients_connected 2\n", &m);
    char line[160];
    snprintf(line, sizeof(line), "bh_trackd_client_live_bytes{client=\"other\",pid=\"other\"} %" PRIu64 "\n",
             ob_holder_total());
    assert_non_null(strstr(m, line));
    int series = 0;
    for (const char *p = m; (p = strstr(p, "\nbh_trackd_client_live_bytes{")) != NULL; p++)
        series++;
    assert_int_equal(series, 2);
    free(m);
}

/* Many (device, kind) domains, reported by real clients: MANY_CLIENTS
 * processes on MANY_DOMAINS domains each, every one its own. */
#define MANY_CLIENTS 8u

#define MANY_DOMAINS 4000u /* under the default --max-groups-per-client */

#define DEFAULT_METRICS_DOMAINS 1024u

static unsigned many_index;

static uint64_t many_size(uint32_t i) { return 4096u * (1u + i % 7u); }

static void many_domain_holder(void) {
    ob_client c;
    ob_client_open(&c, "obs-domains");
    for (uint32_t i = 0; i < MANY_DOMAINS; i++) {
        uint32_t d = many_index * MANY_DOMAINS + i;
        ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d / 4u, d % 4u), 0x100000u + i * 0x1000u, many_size(d));
    }
    bh_socket_reporter_flush(&c.rep, TEST_HANG_MS);
}

/* Sums the values of every series of a family (its lines start with name{). */
static uint64_t family_sum(const char *m, const char *name, int *series) {
    char head[96];
    snprintf(head, sizeof(head), "\n%s{", name);
    uint64_t sum = 0;
    *series = 0;
    for (const char *p = m; (p = strstr(p, head)) != NULL; p++) {
        const char *v = strchr(p + 1, ' ');
        assert_non_null(v);
        sum += strtoull(v + 1, NULL, 10);
        (*series)++;
    }
    return sum;
}

/* A child that scrapes /metrics until SCRAPES_EACH were answered (a server
 * busy with the other seven may answer 503: asked again), counting its
 * answered scrapes in *scrapes (shared with the parent). A count, not a
 * time: a loaded machine only makes the scrapes later. A scraper gives up
 * TEST_HANG_S after the last scrape any of them had answered (under TSan
 * beside busy loops the 16 took longer than TEST_HANG_S from the start:
 * 6 answered), so only a server that stopped answering ends it. */
#define SCRAPES_EACH 2

static atomic_uint *scrapes;

static void scraper(void) {
    test_progress p;
    test_progress_start(&p, TEST_HANG_S);
    for (int answered = 0; answered < SCRAPES_EACH && test_progress_going(&p, atomic_load(scrapes));) {
        char *b = NULL;
        if (ob_http_get(ob_port, "/metrics", &b) == 200) {
            atomic_fetch_add(scrapes, 1);
            answered++;
        }
        free(b);
    }
}

static void per_domain_series_are_bounded(void **state) {
    (void)state;
    ob_start(NULL); /* the default --metrics-domains */
    uint64_t total = 0;
    for (many_index = 0; many_index < MANY_CLIENTS; many_index++)
        ob_run_client(many_domain_holder, 1);
    for (uint32_t d = 0; d < MANY_CLIENTS * MANY_DOMAINS; d++)
        total += many_size(d);
    char want[64];
    snprintf(want, sizeof(want), "\"live_bytes\":%" PRIu64, total);
    assert_true(ob_stats_contain(want));

    char *m = NULL;
    assert_int_equal(ob_http_get(ob_port, "/metrics", &m), 200);
    size_t bytes = strlen(m);
    print_message("%u domains: /metrics is %zu bytes\n", MANY_CLIENTS * MANY_DOMAINS, bytes);
    int series = 0, allocs_series = 0;
    assert_int_equal(family_sum(m, "bh_trackd_live_bytes", &series), total);
    assert_int_equal(series, DEFAULT_METRICS_DOMAINS + 1); /* and device="other" */
    assert_int_equal(family_sum(m, "bh_trackd_allocs_total", &allocs_series), MANY_CLIENTS * MANY_DOMAINS);
    assert_int_equal(allocs_series, DEFAULT_METRICS_DOMAINS + 1);
    assert_non_null(strstr(m, "\nbh_trackd_live_bytes{device=\"other\",kind=\"other\"} "));
    char line[96];
    snprintf(line, sizeof(line), "\nbh_trackd_domains_tracked %u\n", MANY_CLIENTS * MANY_DOMAINS);
    assert_non_null(strstr(m, line));
    assert_true(bytes < 1024u * 1024u); /* 8 families of 1025 series, each under 128 bytes */
    free(m);

    /* A bystander's socket `stats` while eight connections scrape: each
     * answered, and what the server spends per scrape (CPU time: the
     * machine's load does not change it) is a bounded scrape's. */
    scrapes = mmap(NULL, sizeof(*scrapes), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(scrapes != MAP_FAILED);
    atomic_init(scrapes, 0);
    pid_t scrapers[8];
    double cpu0 = test_proc_cpu_s(ob_server);
    for (int i = 0; i < 8; i++)
        scrapers[i] = test_fork(scraper);
    static char json[1 << 17];
    double worst = 0;
    int queries = 0, running = 8;
    while (running > 0 || queries == 0) { /* until every scraper is done */
        double t0 = test_now_s();
        test_stats_json(ob_trackd, ob_paths.sock, json, sizeof(json)); /* asserts an answer */
        double took = test_now_s() - t0;
        worst = took > worst ? took : worst;
        queries++;
        for (int i = 0; i < 8; i++) {
            int status;
            if (scrapers[i] > 0 && waitpid(scrapers[i], &status, WNOHANG) == scrapers[i]) {
                assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                scrapers[i] = 0;
                running--;
            }
        }
    }
    double cpu = test_proc_cpu_s(ob_server) - cpu0;
    unsigned served = atomic_load(scrapes);
    munmap(scrapes, sizeof(*scrapes));
    print_message(
        "bystander stats: %d queries, the slowest %.3f s; %u scrapes, server CPU %.3f s (%.1f ms each)\n",
        queries, worst, served, cpu, served > 0 ? cpu / served * 1e3 : 0.0);
    assert_true(queries >= 1);
    assert_int_equal(served, 8 * SCRAPES_EACH); /* every scrape answered */
    /* A bounded scrape costs tens of ms here; 32,000 domains unbounded, ~30 MB, seconds. */
    assert_true(cpu / (served + (unsigned)queries) < 0.2 * test_time_slack(NULL));
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        OB_TEST(metrics_show_every_device_kind_and_client),
        OB_TEST(per_client_series_are_bounded),
        OB_TEST(per_domain_series_are_bounded),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd", &ob_trackd, "observability_metrics", tests,
                            sizeof(tests) / sizeof(tests[0]));
}
