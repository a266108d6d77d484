/*
 * test_observability_api.c - bh-trackd's JSON over HTTP and its summary
 * file, against a real server and real clients: /api/live paged, the
 * history of an address and the timeline (and `bh-trackd history`, the
 * same JSON), bad HTTP input (oversized headers, unknown paths and methods,
 * bad arguments, slow clients past the per-address limit) that never blocks
 * the socket protocol, the summary's leaks and over-freed addresses, gone
 * clients leaving the stats for "(departed)" but not the totals.
 *
 * usage: test_observability_api PATH-TO-bh-trackd
 *
 * Must never depend on an external tool or the machine's speed (waits poll
 * for what the server reaches, support/observe.h).
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
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "support/observe.h"

static void summary_lists_leaks_and_overfreed_addresses(void **state) {
    (void)state;
    ob_start(NULL);
    ob_scenario();
    kill(ob_server, SIGTERM);
    waitpid(ob_server, NULL, 0);
    ob_server = 0;
    char *j = ob_slurp(ob_paths.summary);
    /* Addresses are numbers in JSON: 0xabc000 is 11255808, 0xdead0000 3735879680. */
    assert_non_null(strstr(j, "\"name\":\"obs-leaker\",\"device\":2,\"kind\":\"l1\",\"address\":11255808,"
                              "\"size\":8192,\"age_s\":"));
    assert_non_null(strstr(j, "\"address\":11264000,\"size\":4096,"));
    assert_non_null(strstr(j, "\"leaks_listed\":2,"));
    assert_non_null(strstr(j, "\"overfreed\":[{\"pid\":"));
    assert_non_null(strstr(j,
                           "\"name\":\"obs-overfree\",\"device\":1,\"kind\":\"dram\",\"address\":3735879680,"
                           "\"allocs\":1,\"frees\":3,\"unknown_frees\":2,\"at_least\":false}"));
    free(j);
}

static void gone_clients_age_out_of_stats_but_not_out_of_the_totals(void **state) {
    (void)state;
    const char *extra[] = {"--forget-ms", "300", NULL};
    ob_start(extra);
    ob_scenario();
    /* The leaker and the over-freer are gone: after --forget-ms they leave
     * the client list and their figures join "(departed)" (pid 0). */
    assert_true(
        ob_stats_contain("\"pid\":0,\"stream\":0,\"name\":\"(departed)\",\"device\":2,\"kind\":\"l1\""));
    assert_true(
        ob_stats_contain("\"pid\":0,\"stream\":0,\"name\":\"(departed)\",\"device\":1,\"kind\":\"dram\""));
    const char *j = ob_api_stats();
    assert_null(strstr(j, "\"name\":\"obs-leaker\",\"device\":2,\"kind\":\"l1\",\"live\""));
    assert_null(strstr(j, "\"name\":\"obs-overfree\",\"device\":1,\"kind\":\"dram\",\"live\""));
    assert_non_null(strstr(j, "\"name\":\"obs-holder\""));
    assert_non_null(strstr(j, "\"leaks\":2,\"leaked_bytes\":12288,\"unverified_leaks\":0,"));
    assert_non_null(strstr(j, "\"unknown_frees\":2,"));
    char *m = NULL;
    assert_int_equal(ob_http_get(ob_port, "/metrics", &m), 200);
    assert_non_null(strstr(m, "bh_trackd_leaks_total{device=\"2\",kind=\"l1\"} 2\n"));
    assert_non_null(strstr(m, "bh_trackd_unknown_frees_total{device=\"1\",kind=\"dram\"} 2\n"));
    assert_non_null(strstr(m, "bh_trackd_client_leaks{client=\"(departed)\",pid=\"0\"} 2\n"));
    free(m);
}

/* The socket protocol answers promptly while HTTP clients misbehave. */
static void bad_http_input_never_blocks_the_socket_protocol(void **state) {
    (void)state;
    ob_start(NULL);
    /* Oversized headers: refused (431) or cut off, never buffered forever. */
    int big = ob_tcp_connect(ob_port);
    static char hdr[256 * 1024];
    int n = snprintf(hdr, sizeof(hdr), "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(hdr + n, 'a', sizeof(hdr) - (size_t)n - 4);
    memcpy(hdr + sizeof(hdr) - 4, "\r\n\r\n", 4);
    ssize_t sent = send(big, hdr, sizeof(hdr), MSG_NOSIGNAL | MSG_DONTWAIT);
    assert_true(sent > 0);
    char reply[512] = {0};
    ssize_t r = recv(big, reply, sizeof(reply) - 1, 0);
    assert_true(r > 0 && strstr(reply, " 431 ") != NULL);
    close(big);
    /* Unknown paths, methods, bad arguments. */
    char *b = NULL;
    assert_int_equal(ob_http_request(ob_port, "DELETE", "/metrics", &b), 405);
    free(b);
    assert_int_equal(ob_http_request(ob_port, "HEAD", "/metrics", &b), 200);
    assert_string_equal(b, "");
    free(b);
    assert_int_equal(ob_http_get(ob_port, "/no/such/page", &b), 404);
    free(b);
    assert_int_equal(ob_http_get(ob_port, "/api/history?address=banana", &b), 400);
    free(b);
    assert_int_equal(ob_http_get(ob_port, "/api/live?limit=-1", &b), 400);
    free(b);

    /* Slow clients, more than the per-address limit (32): half a request line
     * each, then nothing. Those over the limit are refused; none holds the loop. */
    int slow[40];
    for (int i = 0; i < 40; i++) {
        slow[i] = ob_tcp_connect(ob_port);
        assert_int_equal(send(slow[i], "GET /met", 8, MSG_NOSIGNAL), 8);
    }
    /* Meanwhile a client reports and the socket query answers at once. */
    ob_run_client(ob_holder, 1);
    char cmd[512], out[160], want[64], *j = NULL;
    snprintf(out, sizeof(out), "%s/stats.json", ob_paths.dir);
    snprintf(cmd, sizeof(cmd), "%s stats --json --socket %s > %s", ob_trackd, ob_paths.sock, out);
    snprintf(want, sizeof(want), "\"live_bytes\":%" PRIu64, ob_holder_total());
    for (double end = test_now_s() + TEST_HANG_S;
         test_now_s() < end && (j == NULL || strstr(j, want) == NULL);) {
        free(j); /* the socket query, not HTTP */
        assert_int_equal(system(cmd), 0);
        j = ob_slurp(out);
    }
    assert_non_null(strstr(j, want));
    free(j);
    /* It answered while the slow clients it admitted still hold their
     * connections: the loop did not wait for them to time out or go. */
    int held = 0;
    for (int i = 0; i < 40; i++) {
        char c;
        held += recv(slow[i], &c, 1, MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    print_message("socket stats answered while %d slow HTTP clients held their connections\n", held);
    assert_int_equal(held, 32); /* the per-address limit's worth; the rest were refused */
    /* Once they go, HTTP serves again (the server notices the closes on its
     * next turn). */
    for (int i = 0; i < 40; i++)
        close(slow[i]);
    int status = ob_http_await("/metrics", "", &b);
    free(b);
    assert_int_equal(status, 200);
}

static void api_live_is_paged_and_history_answers_an_address(void **state) {
    (void)state;
    ob_start(NULL);
    ob_scenario();
    char *b = NULL;
    assert_int_equal(ob_http_get(ob_port, "/api/live?offset=10&limit=5", &b), 200);
    int entries = 0;
    for (const char *p = b; (p = strstr(p, "\"address\":")) != NULL; p++)
        entries++;
    assert_int_equal(entries, 5);
    char want[64];
    snprintf(want, sizeof(want), "\"offset\":10,\"total\":%u}", 2 * OB_DEVICES);
    assert_non_null(strstr(b, want));
    free(b);
    assert_int_equal(ob_http_get(ob_port, "/api/history?address=0xdead0000", &b), 200);
    assert_non_null(strstr(b, "\"address\":3735879680,"));
    assert_non_null(strstr(b, "\"name\":\"obs-overfree\",\"device\":1,\"kind\":\"dram\",\"live\":false"));
    assert_non_null(strstr(b, "\"allocs\":1,\"frees\":3"));
    free(b);
    b = NULL;
    /* The timeline: all samples held, or only those after since. Waits for a
     * sample after the scenario (the first, at start, is all zeros). */
    for (double end = test_now_s() + TEST_HANG_S; test_now_s() < end; test_sleep_ms(50)) {
        assert_int_equal(ob_http_get(ob_port, "/api/timeline", &b), 200);
        if (strstr(b, "{\"device\":63,\"kind\":\"dram\",\"bytes\":[0,") != NULL)
            break;
        free(b);
        b = NULL;
    }
    assert_non_null(b);
    char *t = strstr(b, "\"t\":["), *end = t != NULL ? strchr(t, ']') : NULL;
    assert_non_null(end);
    while (end[-1] != '[' && end[-1] != ',')
        end--;
    uint64_t last = strtoull(end, NULL, 10);
    assert_true(last > 0);
    assert_non_null(strstr(b, "{\"device\":63,\"kind\":\"dram\",\"bytes\":[0,"));
    free(b);
    char url[96];
    snprintf(url, sizeof(url), "/api/timeline?since=%" PRIu64, last);
    assert_int_equal(ob_http_get(ob_port, url, &b), 200);
    assert_non_null(strstr(b, "\"t\":[]"));
    assert_non_null(strstr(b, "{\"device\":63,\"kind\":\"dram\",\"bytes\":[]}"));
    free(b);
    assert_int_equal(ob_http_get(ob_port, "/api/history?address=0xdead0000", &b), 200);
    /* The socket command prints the same JSON, and hex in its text. */
    char cmd[512], out[8192];
    for (int json = 1; json >= 0; json--) {
        snprintf(cmd, sizeof(cmd), "%s history 0xdead0000 %s --socket %s", ob_trackd, json ? "--json" : "",
                 ob_paths.sock);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        assert_int_equal(pclose(f), 0);
        if (json)
            assert_string_equal(out, b);
        else
            assert_non_null(strstr(out, "address 0xdead0000\n"));
    }
    free(b);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        OB_TEST(api_live_is_paged_and_history_answers_an_address),
        OB_TEST(bad_http_input_never_blocks_the_socket_protocol),
        OB_TEST(summary_lists_leaks_and_overfreed_addresses),
        OB_TEST(gone_clients_age_out_of_stats_but_not_out_of_the_totals),
    };
    return test_trackd_main(argc, argv, "PATH-TO-bh-trackd", &ob_trackd, "observability_api", tests,
                            sizeof(tests) / sizeof(tests[0]));
}
