/*
 * bh-trackd - the allocation tracking server.
 *
 *   bh-trackd [--socket PATH] [--compat-tt] [--compat-socket PATH] [--compat-record-size 72|112|144|auto]
 *             [--tt-devices SPEC | --tt-devices-file FILE]
 *             [--max-live-per-client N] [--allow-uid UID]... [--summary FILE]
 *             [--log FILE] [--grace-ms N] [--forget-ms N] [--http ADDR:PORT] [--http-allow-host NAME]...
 *             [--metrics-domains N] [--metrics-clients N]
 *             [limits, see usage()]
 *   bh-trackd stats [--socket PATH] [--json] [--timeout-ms N]
 *   bh-trackd dump  [--socket PATH] [--json] [--timeout-ms N]
 *   bh-trackd history ADDRESS [--socket PATH] [--json] [--timeout-ms N]
 *
 * One epoll loop serves every client. Native clients (the library's socket
 * reporter) speak the framed protocol of docs/protocol.md; with --compat-tt a
 * second socket takes TT-Metal's 72-, 112- or 144-byte records. The server keeps, per client
 * process (and reporter stream) and device, the live set, and logs one line
 * for each FREE of an unknown allocation, ALLOC of a live one, and allocation
 * still live when a client process is gone (a leak).
 *
 * A client is its process: when a connection closes, the server waits until
 * the process has exited (or --grace-ms passed without it reconnecting) and
 * then reports what it still held as leaks. A process that reconnects in
 * time continues where it was (its reporter resyncs the live set).
 *
 * main.c owns the command line (options, defaults, usage) and picks serving
 * or a query command; it must never do either's work itself (trackd.h lists
 * who does).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "rundir.h"
#include "trackd.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bh-trackd [--socket PATH] [--compat-tt] [--compat-socket PATH]\n"
            "                 [--compat-record-size 72|112|144|auto]\n"
            "                 [--tt-devices SPEC | --tt-devices-file FILE]\n"
            "                 [--max-live-per-client N] [--max-groups-per-client N]\n"
            "                 [--max-connections N] [--max-connections-per-uid N]\n"
            "                 [--handshake-timeout-ms N] [--frame-timeout-ms N]\n"
            "                 [--allow-uid UID]... [--summary FILE] [--summary-interval-ms N]\n"
            "                 [--log FILE] [--grace-ms N] [--forget-ms N] [--http ADDR:PORT]\n"
            "                 [--http-allow-host NAME]... [--metrics-domains N] [--metrics-clients N]\n"
            "       bh-trackd stats [--socket PATH] [--json] [--timeout-ms N]\n"
            "       bh-trackd dump  [--socket PATH] [--json] [--timeout-ms N]\n"
            "       bh-trackd history ADDRESS [--socket PATH] [--json] [--timeout-ms N]\n"
            "defaults: --socket $XDG_RUNTIME_DIR/%s (a directory of this user with mode 0700),\n"
            "          else /tmp/bh-trackd-UID/%s (created 0700, checked)\n"
            "          --compat-socket %s, --max-live-per-client 10000000,\n"
            "          --max-groups-per-client %u, --max-connections 1024 (and under the descriptor\n"
            "          limit), --max-connections-per-uid 64, --handshake-timeout-ms 5000,\n"
            "          --frame-timeout-ms 10000 (the --max-* limits and these two timeouts take 1 or\n"
            "          more: none can be turned off), --summary-interval-ms 10000, --grace-ms 2000,\n"
            "          --timeout-ms 5000, log to stderr (SIGHUP reopens --log, writes --summary),\n"
            "          no HTTP (--http PORT listens on 127.0.0.1; Host must be localhost, a loopback\n"
            "          address or an --http-allow-host NAME), --metrics-domains 1024,\n"
            "          --metrics-clients 20,\n"
            "          --forget-ms 300000 (a gone client's figures then join \"(departed)\"),\n"
            "          --compat-record-size auto: TT records of 72, 112 or 144 bytes, detected per\n"
            "          connection from the first record (docs/protocol.md says how),\n"
            "          --tt-devices: none (DEVICE_INFO answers num_devices 0, as TT's server without\n"
            "          devices); SPEC is count=N,arch=wormhole_b0,dram=BYTES,l1=BYTES\n"
            "          [,dram_channels=N][,l1_per_core=BYTES] (bytes per device)\n",
            BH__SOCKET_NAME, BH__SOCKET_NAME, BH_TT_DEFAULT_SOCKET, BH_TRACK_DEFAULT_MAX_GROUPS);
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

/* A socket path must fit sockaddr_un; 0.2 cut it silently. */
static int path_fits(const char *opt, const char *path) {
    if (strlen(path) < sizeof(((struct sockaddr_un *)0)->sun_path))
        return 1;
    fprintf(stderr, "bh-trackd: %s is too long (at most %zu bytes): %s\n", opt,
            sizeof(((struct sockaddr_un *)0)->sun_path) - 1, path);
    return 0;
}

/* The numeric options of the server, with where each goes. A limit or a
 * timeout takes 1 or more: each is a bound that keeps one client from
 * taking what the others need, and none can be turned off (0 read as the
 * limit made --max-live-per-client 0 refuse every TT ALLOC, and as "none"
 * left a process's live set unbounded). */
typedef struct num_opt {
    const char *name;
    size_t offset;
    int positive;
} num_opt;

#define NUM_OPT(name, field, positive)                                                                       \
    { name, offsetof(td_server, field), positive }
static const num_opt num_opts[] = {
    NUM_OPT("--max-live-per-client", max_live, 1),
    NUM_OPT("--max-groups-per-client", max_groups, 1),
    NUM_OPT("--max-connections", max_conns, 1),
    NUM_OPT("--max-connections-per-uid", max_conns_per_uid, 1),
    NUM_OPT("--handshake-timeout-ms", handshake_ms, 1),
    NUM_OPT("--frame-timeout-ms", frame_ms, 1),
    NUM_OPT("--summary-interval-ms", summary_ms, 0), /* 0: only on SIGHUP and at exit */
    NUM_OPT("--grace-ms", grace_ms, 0),
    NUM_OPT("--forget-ms", forget_ms, 0),
};

/* The cardinality bounds of /metrics: series before the "other" one. */
static const struct {
    const char *name;
    size_t offset;
    unsigned max;
} series_opts[] = {
    {"--metrics-domains", offsetof(td_server, metrics.max_domains), 100000},
    {"--metrics-clients", offsetof(td_server, metrics.max_clients), 10000},
};

/* 1 if a was a series bound (stored, or *bad set), else 0. */
static int series_option(td_server *s, const char *a, const char *v, int *bad) {
    for (size_t k = 0; k < sizeof(series_opts) / sizeof(series_opts[0]); k++) {
        if (strcmp(a, series_opts[k].name) == 0) {
            uint64_t x;
            *bad = parse_num(a, v, &x) != 0 || x > series_opts[k].max;
            if (*bad)
                fprintf(stderr, "bh-trackd: %s takes 0..%u\n", a, series_opts[k].max);
            else
                *(unsigned *)(void *)((char *)s + series_opts[k].offset) = (unsigned)x;
            return 1;
        }
    }
    return 0;
}

/* 1 if a was a numeric server option (stored, or *bad set), else 0. */
static int numeric_option(td_server *s, const char *a, const char *v, int *bad) {
    for (size_t k = 0; k < sizeof(num_opts) / sizeof(num_opts[0]); k++) {
        if (strcmp(a, num_opts[k].name) == 0) {
            uint64_t *to = (uint64_t *)(void *)((char *)s + num_opts[k].offset);
            *bad = parse_num(a, v, to) != 0;
            if (!*bad && num_opts[k].positive && *to == 0) {
                fprintf(stderr, "bh-trackd: %s takes 1 or more (a limit cannot be turned off)\n", a);
                *bad = 1;
            }
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    static td_server s; /* large (names table): not on the stack */
    s.compat_path = BH_TT_DEFAULT_SOCKET;
    s.max_live = 10000000;
    s.max_groups = BH_TRACK_DEFAULT_MAX_GROUPS;
    s.max_conns = 1024;
    s.max_conns_per_uid = 64;
    s.handshake_ms = 5000;
    s.frame_ms = 10000;
    s.summary_ms = 10000;
    s.grace_ms = 2000;
    s.metrics.max_domains = 1024;
    s.metrics.max_clients = 20;
    s.forget_ms = 300000;
    s.log = stderr;
    uint64_t timeout_ms = 5000;
    int cmd = 0, json = 0, bad = 0; /* cmd: 0 serve, else a TD_QUERY_* */
    uint64_t address = 0;
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "stats") == 0)
        cmd = TD_QUERY_STATS, i = 2;
    else if (argc > 1 && strcmp(argv[1], "dump") == 0)
        cmd = TD_QUERY_DUMP, i = 2;
    else if (argc > 1 && strcmp(argv[1], "history") == 0) {
        if (argc < 3 || td_parse_u64(argv[2], &address) != 0) {
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
        } else if (strcmp(a, "--timeout-ms") == 0 && cmd != 0) {
            if (parse_num(a, v, &timeout_ms) != 0)
                return 2;
            i++;
        } else if (strcmp(a, "--socket") == 0 && v != NULL) {
            if (!path_fits(a, v))
                return 2;
            s.socket_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--compat-tt") == 0) {
            s.compat = 1;
        } else if (cmd == 0 && strcmp(a, "--compat-socket") == 0 && v != NULL) {
            if (!path_fits(a, v))
                return 2;
            s.compat_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--summary") == 0 && v != NULL) {
            s.summary_path = v, i++;
        } else if (cmd == 0 && strcmp(a, "--log") == 0 && v != NULL) {
            s.log_path = v, i++;
        } else if (cmd == 0 && numeric_option(&s, a, v, &bad)) {
            if (bad)
                return 2;
            i++;
        } else if (cmd == 0 && strcmp(a, "--compat-record-size") == 0 && v != NULL) {
            if (strcmp(v, "auto") != 0 && strcmp(v, "72") != 0 && strcmp(v, "112") != 0 &&
                strcmp(v, "144") != 0) {
                fprintf(stderr, "bh-trackd: --compat-record-size takes 72, 112, 144 or auto\n");
                return 2;
            }
            s.tt_size = (unsigned)atoi(v), i++;
        } else if (cmd == 0 && (strcmp(a, "--tt-devices") == 0 || strcmp(a, "--tt-devices-file") == 0) &&
                   v != NULL) {
            char err[160];
            if ((a[12] == '\0' ? td_tt_devices_parse(&s.tt_devs, v, err, sizeof(err))
                               : td_tt_devices_file(&s.tt_devs, v, err, sizeof(err))) != 0) {
                fprintf(stderr, "bh-trackd: %s: %s\n", a, err);
                return 2;
            }
            i++;
        } else if (cmd == 0 && strcmp(a, "--http") == 0 && v != NULL) {
            s.http_spec = v, i++;
        } else if (cmd == 0 && strcmp(a, "--http-allow-host") == 0 && v != NULL) {
            if (s.nhttp_hosts == TD_MAX_HTTP_HOSTS || v[0] == '\0') {
                fprintf(stderr, "bh-trackd: at most %d --http-allow-host names\n", TD_MAX_HTTP_HOSTS);
                return 2;
            }
            s.http_hosts[s.nhttp_hosts++] = v, i++;
        } else if (cmd == 0 && series_option(&s, a, v, &bad)) {
            if (bad)
                return 2;
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
    static char default_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (s.socket_path == NULL) {
        if (bh__default_socket_path(default_path, sizeof(default_path)) != 0) {
            fprintf(stderr, "bh-trackd: no usable default socket directory (%s); use --socket PATH\n",
                    strerror(errno));
            return 2;
        }
        s.socket_path = default_path;
    }
    if (cmd != 0)
        return td_query(s.socket_path, (uint16_t)cmd, json, address, timeout_ms);
    if (s.log_path != NULL && (s.log = td_open_log(s.log_path)) == NULL) {
        fprintf(stderr, "bh-trackd: cannot open log %s: %s (a regular file, not a link)\n", s.log_path,
                strerror(errno));
        return 2;
    }
    return td_serve(&s);
}
