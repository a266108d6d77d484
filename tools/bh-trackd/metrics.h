/*
 * metrics.h - the Prometheus text exposition of bh-trackd's state (/metrics).
 *
 * Owns: metric names, label sets and the cardinality bounds on per-domain
 * and per-client series. Must never: change the tracker, or emit a series
 * whose label set grows with traffic (domains are bounded by max_domains,
 * clients by max_clients, each plus one "other" series: a 32-bit domain
 * packing lets clients report any number of devices).
 */
#ifndef BH_TRACKD_METRICS_H
#define BH_TRACKD_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "bufhandle/bufhandle.h"
#include "track.h"

/* The daemon's own health, as the event loop counts it. */
typedef struct bh_metrics_health {
    /* gauges */
    uint64_t connections;      /* open socket connections (native, compat, query) */
    uint64_t clients;          /* processes with a reporting connection */
    uint64_t http_connections; /* open HTTP connections */
    uint64_t processes_going;  /* processes gone whose live allocations are still being dropped */
    /* counters */
    uint64_t connections_total, reporter_connections_total, rejected_peers_total, refused_connections_total,
        timeouts_total, malformed_total, resyncs_total, compat_records_total, unsupported_records_total,
        limit_disconnects_total, output_overflows_total, http_requests_total;
    uint64_t tt_refused_total, tt_evicted_departed_total, tt_evicted_over_share_total; /* TT table full */
    uint64_t compat_input_holds_total, compat_accept_waits_total; /* TT clients waited for, not closed */
    uint64_t summaries_skipped_total;    /* --summary writes skipped: the last one was still writing */
    uint64_t passed_fds_refused_total;   /* passed descriptors not memfds (their connection refused) */
    uint64_t passed_fds_parked_total;    /* passed descriptors parked: the closer's queue was full */
    uint64_t passed_fds_left_open_total; /* passed descriptors never closed: no memory to park them */
    uint64_t processes_gone_total;       /* client processes seen gone (their leaks counted) */
    uint64_t resyncs_cut_total;          /* resyncs whose connection ended before their END */
    uint64_t drop_slices_total;          /* loop turns that dropped live allocations of gone processes */
    uint64_t rings_attached_total, rings_refused_total; /* event rings taken, refused (ring.c) */
    uint64_t ring_records_total,
        ring_events_lost_total;      /* records drained from rings; events their gaps lost */
    uint64_t unverified_peers_total; /* reporter connections whose pid the server cannot see */
    uint64_t compat_ignored_total;   /* TT records and streams ignored (unusable, over a limit) */
    /* TT's allocation server's view of the compat clients (td_tt_counts) */
    uint64_t tt_live, tt_live_bytes, tt_leaks, tt_leaked_bytes; /* gauges: gone with their entries */
    uint64_t tt_allocs_total, tt_frees_total, tt_unknown_frees_total, tt_references_total;
    double start_time_s; /* unix time the daemon started */
} bh_metrics_health;

/* The program name of a client process ("" if unknown). */
typedef const char *(*bh_metrics_name_fn)(void *ctx, uint64_t client);

/* The name of memory kind k of a domain: BH_MEM_KIND_NAMES in lower case
 * ("dram", "l1", ...) written into buf, "cb" and "kernel" for the kinds TT's
 * circular buffers and kernels are filed under, "unknown" for a TT FREE of an
 * address its process never held (wire.h), else "kind7". */
const char *bh_metrics_kind_name(uint32_t kind, char buf[16]);

/* Series before the "other" one (--metrics-domains, --metrics-clients), and
 * the size of the whole exposition. */
typedef struct bh_metrics_limits {
    unsigned max_domains; /* (device, kind) domains */
    unsigned max_clients; /* client processes */
    size_t max_bytes;     /* 0: no bound */
} bh_metrics_limits;

/* Writes the whole exposition. Per-domain and per-client series: the
 * max_domains domains and max_clients processes with the most live bytes,
 * the rest summed into device="other",kind="other" and client="other". If
 * that is over max_bytes, fewer domains and processes get series of their
 * own (those with the fewest live bytes go first, into "other", so totals
 * never go), until it fits; bh_trackd_metrics_series_cut and a comment say
 * how many. Returns 0, or -1 when out of memory (nothing written). */
int bh_metrics_write(FILE *f, const bh_track *t, const bh_metrics_health *h, bh_metrics_name_fn name,
                     void *name_ctx, const bh_metrics_limits *lim);

#endif
