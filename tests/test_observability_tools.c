/*
 * test_observability_tools.c - bh-trackd's HTTP side against the real
 * tools: promtool on /metrics and on the documented scrape config, rules
 * and alerts (docs/observability.md), a Prometheus server scraping the
 * daemon and answering every documented query, headless Chromium rendering
 * the dashboard with the clients' numbers.
 *
 * usage: test_observability_tools PATH-TO-bh-trackd [OUTDIR]
 *   OUTDIR keeps the dashboard screenshot (dashboard.png), its DOM and the
 *   /metrics that promtool checked.
 *
 * A test whose tool is not installed is skipped with a message naming the
 * Debian package (tools/dev.sh installs them for the observability stage);
 * must never be part of the unit stage, which has no such tools.
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
#include <ctype.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/observe.h"

static const char *outdir; /* OUTDIR, or NULL: the test directory */

static int have(const char *prog) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* A free loopback TCP port (for Prometheus's own listener). */
static unsigned free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Copies the fenced block of docs/observability.md that starts with the line
 * first into path; 0 if there is none. */
static int doc_block(const char *first, const char *path) {
    char *doc = ob_slurp(BH_SOURCE_DIR "/docs/observability.md");
    char *a = strstr(doc, first), *b = a != NULL ? strstr(a, "```") : NULL;
    FILE *f = fopen(path, "w");
    int ok = a != NULL && b != NULL && f != NULL && fwrite(a, 1, (size_t)(b - a), f) == (size_t)(b - a);
    if (f != NULL)
        fclose(f);
    free(doc);
    return ok;
}

/* A working client for the dashboard's picture: for three seconds it
 * allocates ever larger L1_SMALL and TRACE buffers on devices 0..7 and frees
 * those six steps old, so the chart climbs (no DRAM: the test reads DRAM
 * figures). */
static void streamer(void) {
    ob_client c;
    ob_client_open(&c, "obs-streamer");
    for (uint64_t step = 0; step < 15; step++) {
        for (uint32_t d = 0; d < 8; d++) {
            uint32_t kind = d % 2 ? BH_MEM_TRACE : BH_MEM_L1_SMALL;
            ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(d, kind), 0x40000000u + step * 0x100000u + d * 0x1000u,
                      (step + 1) * (d + 1) * 4096);
            if (step >= 6)
                ob_report(&c, BH_EVENT_FREE, BH_DOMAIN(d, kind),
                          0x40000000u + (step - 6) * 0x100000u + d * 0x1000u, 0);
        }
        bh_socket_reporter_flush(&c.rep, 1000);
        test_sleep_ms(200);
    }
}

/* A client that never stops: 4 KiB more of L1_SMALL on device 40 every 2 ms
 * (20000 at most), so the server's live bytes move between any two samples
 * of the timeline (no DRAM, not device 63: the test reads those). */
static void grower(void) {
    ob_client c;
    ob_client_open(&c, "obs-grower");
    for (uint64_t i = 0; i < 20000; i++) {
        ob_report(&c, BH_EVENT_ALLOC, BH_DOMAIN(40, BH_MEM_L1_SMALL), 0x80000000u + i * 0x1000u, 4096);
        test_sleep_ms(2);
    }
}

static void metrics_pass_promtool(void **state) {
    (void)state;
    if (!have("promtool")) {
        print_message("promtool not installed (Debian package prometheus): skipping\n");
        skip();
    }
    const char *extra[] = {"--metrics-domains", "8", NULL}; /* so the "other" series are checked too */
    ob_start(extra);
    ob_scenario();
    char *m = NULL;
    assert_int_equal(ob_http_get(ob_port, "/metrics", &m), 200);
    char path[160], cmd[256];
    snprintf(path, sizeof(path), "%s/metrics.txt", outdir != NULL ? outdir : ob_paths.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(m, f);
    fclose(f);
    free(m);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    assert_int_equal(system(cmd), 0);
}

static void prometheus_scrapes_the_daemon_and_answers_a_query(void **state) {
    (void)state;
    if (!have("prometheus")) {
        print_message("prometheus not installed (Debian package prometheus): skipping\n");
        skip();
    }
    ob_start(NULL);
    ob_scenario();
    unsigned pport = free_port();
    char cfg[160], data[160], plog[160];
    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", ob_paths.dir);
    snprintf(data, sizeof(data), "%s/prometheus-data", ob_paths.dir);
    snprintf(plog, sizeof(plog), "%s/prometheus.log", ob_paths.dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: bh-trackd\n    static_configs:\n"
            "      - targets: ['127.0.0.1:%u']\n        labels: {host: test}\n",
            ob_port);
    fclose(f);
    pid_t prom = fork();
    assert_true(prom >= 0);
    if (prom == 0) {
        char a1[200], a2[200], a3[64];
        snprintf(a1, sizeof(a1), "--config.file=%s", cfg);
        snprintf(a2, sizeof(a2), "--storage.tsdb.path=%s", data);
        snprintf(a3, sizeof(a3), "--web.listen-address=127.0.0.1:%u", pport);
        int fd = open(plog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("prometheus", "prometheus", a1, a2, a3, (char *)NULL);
        _exit(127);
    }
    ob_children[ob_nchildren++] = prom;
    char want[64];
    snprintf(want, sizeof(want), "\"%" PRIu64 "\"]", ob_holder_total());
    int found = 0;
    double t0 = test_now_s();
    while (!found && test_now_s() - t0 < 60) { /* bounded: Prometheus starts, then scrapes every second */
        test_sleep_ms(500);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)pport)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (!up)
            continue;
        char *b = NULL;
        if (ob_http_get(pport,
                        "/api/v1/query?query=sum(bh_trackd_client_live_bytes%7Bclient%3D%22obs-holder%22%7D)",
                        &b) == 200)
            found = strstr(b, want) != NULL;
        free(b);
    }
    /* Every documented example query is valid PromQL against this server. */
    char qpath[160];
    snprintf(qpath, sizeof(qpath), "%s/queries.promql", ob_paths.dir);
    assert_true(doc_block("# live bytes per host and memory kind\n", qpath));
    char *qs = ob_slurp(qpath);
    int queries = 0;
    for (char *line = strtok(qs, "\n"); found && line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char url[1024] = "/api/v1/query?query=", *b = NULL;
        size_t n = strlen(url);
        for (const unsigned char *c = (const unsigned char *)line; *c && n + 4 < sizeof(url); c++)
            n += (size_t)snprintf(url + n, sizeof(url) - n, isalnum(*c) ? "%c" : "%%%02X", *c);
        assert_int_equal(ob_http_get(pport, url, &b), 200);
        assert_non_null(strstr(b, "\"status\":\"success\""));
        free(b);
        queries++;
    }
    free(qs);
    assert_true(!found || queries >= 5);
    if (!found) {
        char *l = ob_slurp(plog);
        print_error("prometheus log:\n%s\n", l);
        free(l);
    }
    assert_true(found);
}

static void documented_scrape_config_and_alerts_pass_promtool(void **state) {
    (void)state;
    if (!have("promtool")) {
        print_message("promtool not installed (Debian package prometheus): skipping\n");
        skip();
    }
    char cfg[160], rules[160], cmd[512];
    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", ob_paths.dir);
    snprintf(rules, sizeof(rules), "%s/rules.yml", ob_paths.dir);
    assert_true(doc_block("# prometheus.yml\n", cfg));
    assert_true(doc_block("groups:\n", rules));
    snprintf(cmd, sizeof(cmd), "promtool check config --syntax-only %s >%s/promtool.log 2>&1", cfg,
             ob_paths.dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "promtool check rules %s >>%s/promtool.log 2>&1", rules, ob_paths.dir);
    assert_int_equal(system(cmd), 0);
}

/* Runs chromium headless on the dashboard with extra arguments; stdout to out. */
static int chromium(const char *args, const char *out) {
    char cmd[1024];
    snprintf(
        cmd, sizeof(cmd),
        "timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
        "--no-first-run --user-data-dir=%s/chromium --virtual-time-budget=4000 --window-size=1400,1500 %s "
        "http://127.0.0.1:%u/ > %s 2>%s/chromium.log",
        ob_paths.dir, args, ob_port, out, ob_paths.dir);
    return system(cmd);
}

static void dashboard_renders_the_clients_numbers_in_chromium(void **state) {
    (void)state;
    const char *browser = have("chromium") ? "chromium" : NULL;
    if (browser == NULL) {
        print_message("chromium not installed (Debian package chromium): skipping\n");
        skip();
    }
    ob_start(NULL);
    ob_scenario();
    ob_run_client(streamer, 1);           /* three seconds of samples that move */
    ob_run_client(grower, OB_BACKGROUND); /* live bytes that move while the page polls */
    char dom[160], png[200], arg[240];
    snprintf(dom, sizeof(dom), "%s/dashboard.html", outdir != NULL ? outdir : ob_paths.dir);
    snprintf(png, sizeof(png), "%s/dashboard.png", outdir != NULL ? outdir : ob_paths.dir);
    assert_int_equal(chromium("--dump-dom", dom), 0);
    char *d = ob_slurp(dom);
    /* The chart exists and carries the series: with 64 devices it stacks by
     * kind, and its legend shows the holder's DRAM over all devices; each
     * device's tile shows its own bytes. */
    assert_non_null(strstr(d, "id=\"chart\""));
    assert_non_null(strstr(d, "<path d=\"M"));
    char want[128];
    uint64_t dram = 0;
    for (uint32_t i = 0; i < OB_DEVICES; i++)
        dram += ob_holder_dram(i);
    snprintf(want, sizeof(want), "data-device=\"\" data-kind=\"dram\" data-bytes=\"%" PRIu64 "\"", dram);
    assert_non_null(strstr(d, want));
    snprintf(want, sizeof(want), "data-device=\"63\" data-bytes=\"%" PRIu64 "\"",
             ob_holder_dram(63) + OB_HOLDER_L1);
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "Devices (64)"));
    /* The chart's title names the grouping it draws (by kind here). */
    assert_non_null(strstr(d, "id=\"chart-title\">Live bytes by memory kind<"));
    /* The live-bytes card and the device tiles show one sample: the tiles
     * add up to the card, although the grower moves the total meanwhile. */
    uint64_t tiles = 0;
    for (const char *t = strstr(d, "class=\"dev\" data-device="); t != NULL;
         t = strstr(t + 1, "class=\"dev\" data-device=")) {
        const char *b = strstr(t, "data-bytes=\"");
        assert_non_null(b);
        tiles += strtoull(b + strlen("data-bytes=\""), NULL, 10);
    }
    const char *card = strstr(d, "id=\"c-live-bytes-exact\">");
    assert_non_null(card);
    uint64_t shown = 0;
    for (card += strlen("id=\"c-live-bytes-exact\">"); *card != '<' && *card != '\0'; card++)
        if (isdigit((unsigned char)*card))
            shown = shown * 10 + (uint64_t)(*card - '0');
    assert_true(tiles > 0);
    assert_int_equal(tiles, shown);
    /* The clients table counts live allocations, and says so. */
    assert_non_null(strstr(d, "<th class=\"num\">live allocations</th>"));
    /* The clients table, the over-freed address, the leaks. */
    assert_non_null(strstr(d, "obs-holder"));
    snprintf(want, sizeof(want), "title=\"%" PRIu64 " bytes\"", ob_holder_total());
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "0xdead0000"));
    assert_non_null(strstr(d, "allocated 1, freed 3"));
    assert_non_null(strstr(d, "0xabc000"));
    assert_non_null(strstr(d, "obs-leaker"));
    assert_non_null(strstr(d, "dot live"));
    free(d);
    snprintf(arg, sizeof(arg), "--screenshot=%s", png);
    assert_int_equal(chromium(arg, "/dev/null"), 0);
    struct stat st;
    assert_int_equal(stat(png, &st), 0);
    assert_true(st.st_size > 20000); /* a picture, not an empty page */
}

int main(int argc, char **argv) {
    outdir = argc > 2 ? argv[2] : NULL;
    const struct CMUnitTest tests[] = {
        OB_TEST(metrics_pass_promtool),
        OB_TEST(documented_scrape_config_and_alerts_pass_promtool),
        OB_TEST(prometheus_scrapes_the_daemon_and_answers_a_query),
        OB_TEST(dashboard_renders_the_clients_numbers_in_chromium),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd [OUTDIR]", &ob_trackd, "observability_tools",
                            tests, sizeof(tests) / sizeof(tests[0]));
}
