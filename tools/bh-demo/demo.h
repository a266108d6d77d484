/*
 * demo.h - bh-demo's private header: the types its files share (prefix demo_
 * for shared functions; everything else in those files is static).
 *
 * Files, one concern each (each says what it owns and what it must never do):
 *   demo.c       command line: options, usage, the two runs, the verdict
 *   runtime.c    the two runtimes behind one interface (raw objects, the
 *                shim) and the in-process tracker both report to
 *   workload.c   the inference-like workload and one run of it
 *   output.c     the comparison table and the JSON
 *   trackd.c     bh-trackd as the tracker: each run in a child process,
 *                the counts read back from `bh-trackd stats --json`
 *   ttclient.c   the raw runtime's reports to a TT allocation server, sent
 *                as TT's own client sends them (--tt-server)
 */
#ifndef BH_DEMO_H
#define BH_DEMO_H

#include <pthread.h>
#include <stdint.h>

#include "bufhandle/bufhandle.h"
#include "shim.h"
#include "simdev.h"
#include "track.h"

typedef struct options {
    uint32_t devices, threads, layers, steps, aliases;
    uint64_t seed;
    int json, quiet;
    const char *trackd;    /* bh-trackd binary; NULL: in-process tracker only */
    int trackd_missing;    /* no bh-trackd next to bh-demo and no --trackd, --no-trackd or
                              --tt-server: the in-process tracker, said loudly (stderr, table, JSON) */
    const char *tt_server; /* a TT allocation server's socket (--tt-server): report there instead */
    int runs;              /* bit 0: the raw run, bit 1: the handle run (--run) */
} options;

/* Parses argv into o; -1 (said on stderr) on a bad option. */
int demo_parse_options(int argc, char **argv, options *o);

/* ======================== runtime.c ======================== */

/* Every report goes to an in-process history (for the "freed most often"
 * table) and, when bh-trackd runs, to it through the library's socket
 * reporter. The raw runtime has no registry to number its reports, so the
 * tracker numbers them, under its lock, in the order they happen. */
typedef struct tracker {
    pthread_mutex_t lock;
    bh_track *t;
    bh_reporter sock; /* report NULL: no bh-trackd (or TT server, handle run) */
    int tt_fd;        /* raw run with --tt-server: TT's own client's connection; else -1 */
    unsigned tt_size; /* its record size (BH_TT_RECORD_SIZE) */
    uint64_t seq;
    uint64_t alloc_reports, free_reports;
    uint64_t tt_records; /* records written to tt_fd */
} tracker;

/* The raw runtime's report: numbered and sent under the lock, so always in order. */
void demo_tracker_event(tracker *tr, bh_event_kind kind, uint32_t domain, uint64_t address, uint64_t size);
/* The registry's reporter (ctx: the tracker). */
void demo_tracker_report(void *ctx, const bh_event *ev);

/* The workload talks to buffers through this table, so the same steps run on
 * raw objects and on the shim. */
typedef struct runtime runtime;
typedef struct rt_ops {
    /* A mesh buffer: objects[0] backing, objects[1 + d] device d. */
    int (*mesh_create)(runtime *rt, uint64_t size, bh_sim_mem mem, void **objects);
    void *(*create_at)(runtime *rt, void *like, uint32_t device);
    void *(*view)(runtime *rt, void *of, uint64_t offset, uint64_t size);
    void (*destroy)(runtime *rt, void *obj);
} rt_ops;

struct runtime {
    const rt_ops *ops;
    bh_sim *sim;
    tracker *tr;
    uint32_t devices;
    bh_registry *reg; /* handle run only */
    bh_shim_mesh *mesh;
    uint64_t failures; /* operations the runtime could not do (pool full, ...) */
};

extern const rt_ops demo_raw_ops, demo_shim_ops;

/* ======================== ttclient.c ======================== */

/* Connects to the TT server at path as TT's client does; the fd, or -1. */
int demo_tt_connect(const char *path);
/* Sends the event as one TT record (every event, as TT's own client does:
 * a FREE whose ALLOC the server never got is its "unknown buffer"), with a
 * blocking send. 0, or -1 (the server is gone). */
int demo_tt_send(int fd, unsigned size, const bh_event *ev);

/* ======================== workload.c ======================== */

typedef struct result {
    const char *name;
    uint64_t reports_dropped;  /* socket reporter: should be 0 */
    uint64_t reports_withheld; /* TT reporter: not sent on purpose (bh_reporter_stats.withheld) */
    uint64_t tt_records;       /* records the TT server got (--tt-server) */
    int from_trackd;           /* track counts came from bh-trackd */
    bh_sim_stats sim;
    uint64_t sim_live;
    bh_track_counts track;
    uint64_t alloc_reports, free_reports;
    uint64_t failures;
    uint64_t meshes, objects;
    double seconds;
    bh_track_entry worst[5];
    size_t nworst;
} result;

/* One run of the workload, raw or through handles; reports go to the
 * in-process tracker and, with sock_path, to bh-trackd there. 0, or -1. */
int demo_run(const options *o, int handles, const char *sock_path, result *res);

/* ======================== output.c ======================== */

/* Leaks of a run: what the tracker or the allocator still held at its end. */
uint64_t demo_leaks_of(const result *r);
void demo_print_table(const options *o, const result *r);
void demo_print_json_run(const result *r);

/* ======================== trackd.c ======================== */

/* demo_run in a child process reporting to bh-trackd at sock; the tracker's
 * counts come from the server once it has settled the child. 0, or -1. */
int demo_run_in_child(const options *o, int handles, const char *sock, result *res);

#endif
