/*
 * bh-trackd - the allocation tracking server.
 *
 *   bh-trackd [--socket PATH] [--compat-tt] [--compat-socket PATH]
 *             [--compat-record-size 72|112|auto] [--max-live-per-client N] [--allow-uid UID]... [--summary
 * FILE]
 *             [--log FILE] [--grace-ms N] [--forget-ms N] [--http ADDR:PORT] [--metrics-clients N]
 *   bh-trackd stats [--socket PATH] [--json]
 *   bh-trackd dump  [--socket PATH] [--json]
 *   bh-trackd history ADDRESS [--socket PATH] [--json]
 *
 * One epoll loop serves every client. Native clients (the library's socket
 * reporter) speak the framed protocol of docs/protocol.md; with --compat-tt a
 * second socket takes TT-Metal's 72-byte records. The server keeps, per client
 * process (and reporter stream) and device, the live set, and logs one line
 * for each FREE of an unknown allocation, ALLOC of a live one, and allocation
 * still live when a client process is gone (a leak).
 *
 * A client is its process: when a connection closes, the server waits until
 * the process has exited (or --grace-ms passed without it reconnecting) and
 * then reports what it still held as leaks. A process that reconnects in
 * time continues where it was (its reporter resyncs the live set).
 *
 * main.c owns the command line (options, usage) and picks serving or a query
 * command; it must never do either's work itself (trackd.h lists who does).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trackd.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bh-trackd [--socket PATH] [--compat-tt] [--compat-socket PATH]\n"
            "                 [--compat-record-size 72|112|auto]\n"
            "                 [--max-live-per-client N] [--allow-uid UID]... [--summary FILE]\n"
            "                 [--log FILE] [--grace-ms N] [--forget-ms N] [--http ADDR:PORT] "
            "[--metrics-clients N]\n"
            "       bh-trackd stats [--socket PATH] [--json]\n"
            "       bh-trackd dump  [--socket PATH] [--json]\n"
            "       bh-trackd history ADDRESS [--socket PATH] [--json]\n"
            "defaults: --socket %s, --compat-socket %s, --max-live-per-client 10000000,\n"
            "          --grace-ms 2000, log to stderr, no HTTP (--http PORT listens on 127.0.0.1),\n"
            "          --forget-ms 300000 (a gone client's figures then join \"(departed)\"),\n"
            "          --metrics-clients 20, --compat-record-size auto (detected per connection)\n",
            BH_TRACKD_DEFAULT_SOCKET, BH_TT_DEFAULT_SOCKET);
}

static int parse_num(const char *opt, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = v != NULL ? strtoull(v, &end, 10) : 0;
    if (v == NULL || errno != 0 || end == v || *end != '\0' || v[0] == '-') {
        fprintf(stderr, "bh-trackd: %s needs a non-negative number\n", opt);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv) {
    td_server s;
    memset(&s, 0, sizeof(s));
    s.socket_path = BH_TRACKD_DEFAULT_SOCKET;
    s.compat_path = BH_TT_DEFAULT_SOCKET;
    s.max_live = 10000000;
    s.grace_ms = 2000;
    s.metrics_clients = 20;
    s.forget_ms = 300000;
    s.log = stderr;
    int cmd = 0, json = 0; /* 0 serve, else a TD_QUERY_* */
    uint64_t address = 0;
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "stats") == 0)
        cmd = 1, i = 2;
    else if (argc > 1 && strcmp(argv[1], "dump") == 0)
        cmd = 2, i = 2;
    else if (argc > 1 && strcmp(argv[1], "history") == 0) {
        char *end;
        errno = 0;
        address = argc > 2 ? strtoull(argv[2], &end, 0) : 0;
        if (argc < 3 || errno != 0 || *end != '\0' || argv[2][0] == '-') {
            fprintf(stderr, "bh-trackd: history needs an address (decimal or 0x hex)\n");
            return 2;
        }
        cmd = TD_QUERY_HISTORY, i = 3;
    } else if (argc > 1 && strcmp(argv[1], "serve") == 0)
        i = 2;
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0 && cmd != 0) {
            json = 1;
        } else if (strcmp(a, "--socket") == 0 && v != NULL) {
            s.socket_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--compat-tt") == 0) {
            s.compat = 1;
        } else if (cmd == 0 && strcmp(a, "--compat-socket") == 0 && v != NULL) {
            s.compat_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--summary") == 0 && v != NULL) {
            s.summary_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--log") == 0 && v != NULL) {
            s.log = fopen(v, "a");
            if (s.log == NULL) {
                fprintf(stderr, "bh-trackd: cannot open log %s: %s\n", v, strerror(errno));
                return 2;
            }
            i++;
        } else if (cmd == 0 && strcmp(a, "--max-live-per-client") == 0) {
            if (parse_num(a, v, &s.max_live) != 0)
                return 2;
            i++;
        } else if (cmd == 0 && strcmp(a, "--forget-ms") == 0) {
            if (parse_num(a, v, &s.forget_ms) != 0)
                return 2;
            i++;
        } else if (cmd == 0 && strcmp(a, "--grace-ms") == 0) {
            if (parse_num(a, v, &s.grace_ms) != 0)
                return 2;
            i++;
        } else if (cmd == 0 && strcmp(a, "--compat-record-size") == 0 && v != NULL) {
            if (strcmp(v, "auto") != 0 && strcmp(v, "72") != 0 && strcmp(v, "112") != 0) {
                fprintf(stderr, "bh-trackd: --compat-record-size takes 72, 112 or auto\n");
                return 2;
            }
            s.tt_size = (unsigned)atoi(v), i++;
        } else if (cmd == 0 && strcmp(a, "--http") == 0 && v != NULL) {
            s.http_spec = v, i++;
        } else if (cmd == 0 && strcmp(a, "--metrics-clients") == 0) {
            if (parse_num(a, v, &x) != 0 || x > 10000) {
                fprintf(stderr, "bh-trackd: --metrics-clients takes 0..10000\n");
                return 2;
            }
            s.metrics_clients = (unsigned)x;
            i++;
        } else if (cmd == 0 && strcmp(a, "--allow-uid") == 0) {
            if (parse_num(a, v, &x) != 0 || s.nallow == TD_MAX_ALLOW_UIDS) {
                fprintf(stderr, "bh-trackd: at most %d --allow-uid\n", TD_MAX_ALLOW_UIDS);
                return 2;
            }
            s.allow[s.nallow++] = (uid_t)x;
            i++;
        } else {
            fprintf(stderr, "bh-trackd: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (cmd != 0)
        return td_query(s.socket_path, (uint16_t)cmd, json, address);
    return td_serve(&s);
}
