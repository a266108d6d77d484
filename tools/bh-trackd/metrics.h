/*
 * metrics.h - the Prometheus text exposition of bh-trackd's state (/metrics).
 *
 * Owns: metric names, label sets and the cardinality bound on per-client
 * series. Must never: change the tracker, or emit a series whose label set
 * grows with traffic (devices and kinds are bounded by the domain packing,
 * clients by max_clients plus one "other" series).
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
    /* counters */
    uint64_t connections_total, reporter_connections_total, rejected_peers_total, refused_connections_total,
        timeouts_total, malformed_total, resyncs_total, compat_records_total, unsupported_records_total,
        limit_disconnects_total, output_overflows_total, http_requests_total;
    double start_time_s; /* unix time the daemon started */
} bh_metrics_health;

/* The program name of a client process ("" if unknown). */
typedef const char *(*bh_metrics_name_fn)(void *ctx, uint64_t client);

/* The name of memory kind k of a domain ("dram", "l1", ..., "kind7"); buf
 * holds the generated name for kinds without one. */
const char *bh_metrics_kind_name(uint32_t kind, char buf[16]);

/* Writes the whole exposition. Per-client series: the max_clients processes
 * with the most live bytes, the rest summed into client="other". Returns 0,
 * or -1 when out of memory (f is then incomplete). */
int bh_metrics_write(FILE *f, const bh_track *t, const bh_metrics_health *h, bh_metrics_name_fn name,
                     void *name_ctx, unsigned max_clients);

#endif
