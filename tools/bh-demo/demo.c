/*
 * bh-demo - a simulated device runtime, run the old way and the handle way.
 *
 * The workload is inference-like: each thread owns some layers whose weights
 * are mesh buffers (one backing buffer plus one buffer per device at the same
 * address) that live for the whole run, with extra per-device aliases held by a
 * "program cache". Every step, each layer makes an activation mesh buffer; other
 * subsystems take a view of it and re-create buffers at its address; then every
 * object is destroyed, in a shuffled order.
 *
 * Run 1, raw: each object deallocates and reports on its own, as the original
 * runtime does. Run 2, handles: the same workload through the shim. Both report
 * to an allocation tracker and use a lock-step simulated allocator that counts
 * double frees. The exit status is 0 only if the handle run is clean (no double
 * free, no unknown FREE, no duplicate ALLOC, no leak) and the raw run shows the
 * problem.
 *
 * demo.c owns the command line and the verdict; demo.h lists the other files.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demo.h"
#include "proc.h"
#include "wire.h"

/* ======================== Options ======================== */

static void usage(FILE *f) {
    fprintf(f, "usage: bh-demo [--devices N] [--threads N] [--layers N] [--steps N] [--aliases N]\n"
               "               [--seed N] [--json] [--quiet] [--trackd PATH | --no-trackd]\n"
               "               [--tt-server PATH] [--run raw|handles|both]\n"
               "  --devices  devices in the mesh (default 8)\n"
               "  --threads  runtime threads (default 4)\n"
               "  --layers   layers per thread (default 12)\n"
               "  --steps    inference steps (default 200)\n"
               "  --aliases  extra aliases per activation (default 3)\n"
               "  --seed     workload seed (default 1)\n"
               "  --json     print the result as JSON\n"
               "  --quiet    no progress on stderr\n"
               "  --trackd   the bh-trackd to report to (default: the one next to bh-demo)\n"
               "  --no-trackd  count with an in-process tracker instead of bh-trackd\n"
               "  --tt-server  report to the TT allocation server at PATH instead (no bh-trackd):\n"
               "             the raw run as TT's own client (every FREE: its unknown-buffer\n"
               "             warnings), the handle run through the library's TT reporter;\n"
               "             TT_ALLOC_TRACKING_ENABLED=1 does the same at BH_TT_SOCKET or\n"
               "             /tmp/tt_allocation_server.sock; BH_TT_RECORD_SIZE=72|112|144\n"
               "  --run      only the raw or the handle run (default both)\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > max || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

int demo_parse_options(int argc, char **argv, options *o) {
    *o = (options){.devices = 8,
                   .threads = 4,
                   .layers = 12,
                   .steps = 200,
                   .aliases = 3,
                   .seed = 1,
                   .trackd = bh_trackd_next_to_self(),
                   .runs = 3};
    int no_trackd = 0; /* --no-trackd: the in-process tracker, chosen */
    const char *tt_env = getenv("TT_ALLOC_TRACKING_ENABLED");
    if (tt_env != NULL && strcmp(tt_env, "1") == 0) /* as the library's registries honour it */
        o->tt_server = getenv("BH_TT_SOCKET") != NULL ? getenv("BH_TT_SOCKET") : BH_TT_DEFAULT_SOCKET;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
            continue;
        }
        if (strcmp(a, "--no-trackd") == 0) {
            o->trackd = NULL;
            no_trackd = 1;
            continue;
        }
        if (strcmp(a, "--trackd") == 0 && i + 1 < argc) {
            o->trackd = argv[++i];
            continue;
        }
        if (strcmp(a, "--tt-server") == 0 && i + 1 < argc) {
            o->tt_server = argv[++i];
            continue;
        }
        if (strcmp(a, "--run") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            o->runs = strcmp(v, "raw") == 0       ? 1
                      : strcmp(v, "handles") == 0 ? 2
                      : strcmp(v, "both") == 0    ? 3
                                                  : 0;
            if (o->runs == 0) {
                fprintf(stderr, "bh-demo: --run takes raw, handles or both\n");
                return -1;
            }
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        struct {
            const char *name;
            uint64_t min, max;
            void *dst;
            int wide;
        } opts[] = {{"--devices", 1, 64, &o->devices, 0}, {"--threads", 1, 64, &o->threads, 0},
                    {"--layers", 1, 64, &o->layers, 0},   {"--steps", 1, 10000000, &o->steps, 0},
                    {"--aliases", 0, 16, &o->aliases, 0}, {"--seed", 0, UINT64_MAX, &o->seed, 1}};
        int matched = 0;
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strcmp(a, opts[k].name) != 0)
                continue;
            uint64_t v;
            if (i + 1 >= argc || parse_u64(argv[++i], opts[k].max, &v) != 0 || v < opts[k].min) {
                fprintf(stderr, "bh-demo: %s needs a number from %" PRIu64 " to %" PRIu64 "\n", a,
                        opts[k].min, opts[k].max);
                return -1;
            }
            if (opts[k].wide)
                *(uint64_t *)opts[k].dst = v;
            else
                *(uint32_t *)opts[k].dst = (uint32_t)v;
            matched = 1;
        }
        if (!matched) {
            fprintf(stderr, "bh-demo: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    /* The demo's point is a real bh-trackd; without one it still runs, but
     * says so (main, the table, the JSON) unless that was asked for. */
    o->trackd_missing = o->trackd == NULL && !no_trackd && o->tt_server == NULL;
    /* Weights of every layer of every thread must fit the DRAM slots. */
    if ((uint64_t)o->threads * o->layers > 512) {
        fprintf(stderr, "bh-demo: threads * layers must be at most 512\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    if (demo_parse_options(argc, argv, &o) != 0)
        return 2;
    result r[2];
    char dir[] = "/tmp/bh-demo-XXXXXX", sock[64];
    pid_t server = -1;
    if (o.trackd_missing) /* even with --quiet: the results are not what the README describes */
        fprintf(stderr, "bh-demo: WARNING: no bh-trackd next to bh-demo: falling back to the in-process "
                        "tracker, so no server sees these runs (build bh-trackd, as tools/dev.sh demo does; "
                        "or --trackd PATH; --no-trackd chooses the in-process tracker)\n");
    if (o.trackd != NULL && o.tt_server == NULL) {
        char log[64];
        snprintf(sock, sizeof(sock), "%s/trackd.sock", mkdtemp(dir) != NULL ? dir : "/tmp");
        snprintf(log, sizeof(log), "%s/trackd.log", dir);
        if ((server = bh_trackd_start(o.trackd, sock, log, "200")) < 0) {
            fprintf(stderr, "bh-demo: could not start %s; use --no-trackd for the in-process tracker\n",
                    o.trackd);
            return 2;
        }
    }
    int rc = 0;
    memset(r, 0, sizeof(r));
    r[0].name = "raw Buffer objects";
    r[1].name = "handles (shim)";
    for (int h = 0; h < 2 && rc == 0; h++)
        if (o.runs & (1 << h))
            rc = server > 0 ? demo_run_in_child(&o, h, sock, &r[h]) : demo_run(&o, h, NULL, &r[h]);
    if (server > 0) {
        bh_trackd_stop(server);
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bh-demo: could not remove %s\n", dir);
    }
    if (rc != 0) {
        fprintf(stderr, "bh-demo: a run failed (out of memory, or the tracker did not answer)\n");
        return 2;
    }
    int handles_clean = r[1].reports_dropped == 0 && r[1].sim.double_frees == 0 &&
                        r[1].sim.unknown_frees == 0 && r[1].track.unknown_frees == 0 &&
                        r[1].track.duplicate_allocs == 0 && demo_leaks_of(&r[1]) == 0 && r[1].sim.allocs > 0;
    int raw_shows_bug = r[0].sim.double_frees > 0 || r[0].track.unknown_frees > 0;
    int ok = (!(o.runs & 1) || raw_shows_bug) && (!(o.runs & 2) || handles_clean);
    if (o.json) {
        printf("{\"config\":{\"devices\":%u,\"threads\":%u,\"layers\":%u,\"steps\":%u,\"aliases\":%u,"
               "\"seed\":%" PRIu64 "},\"raw\":",
               o.devices, o.threads, o.layers, o.steps, o.aliases, o.seed);
        demo_print_json_run(&r[0]);
        printf(",\"handles\":");
        demo_print_json_run(&r[1]);
        printf(",\"handles_clean\":%s,\"raw_shows_bug\":%s,\"tracker_fallback\":%s}\n",
               handles_clean ? "true" : "false", raw_shows_bug ? "true" : "false",
               o.trackd_missing ? "true" : "false");
    } else {
        demo_print_table(&o, r);
        printf("\n%s\n",
               ok ? (o.runs & 2 ? "result: the handle run freed and reported every allocation exactly once."
                                : "result: the raw run shows the problem.")
               : (o.runs & 2) && !handles_clean ? "result: FAILED: the handle run is not clean."
                                                : "result: FAILED: the raw run did not show the problem.");
    }
    return ok ? 0 : 1;
}
