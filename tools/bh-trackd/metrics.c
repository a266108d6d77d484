/*
 * metrics.c - see metrics.h.
 *
 * Owns: aggregating the tracker's (client, domain) groups into per-domain
 * and per-process series, the exposition format (HELP, TYPE, escaped label
 * values), and fitting it into its byte bound. Must never: write a counter
 * that can go down (the tracker folds departed clients into one group
 * instead of dropping their counts), or cut a total to fit (what is cut is
 * a series of its own, summed into "other" instead).
 */
#include "metrics.h"

#include <ctype.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bufhandle/bufhandle.h"
#include "sat.h"
#include "wire.h"

/* ======================== Aggregation ======================== */

typedef struct agg {
    uint64_t key; /* domain, or pid */
    bh_track_counts c;
} agg;

typedef struct aggs {
    agg *v;
    size_t n, cap;
    int by_pid;
    int oom;
} aggs;

/* One entry per group; merge() then sums the entries of each key. Sorting
 * keeps a scrape O(G log G) in the number of groups, however many clients
 * and domains there are. */
static void collect(void *ctx, uint64_t client, uint32_t domain, const bh_track_counts *c) {
    aggs *a = ctx;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        agg *nv = realloc(a->v, cap * sizeof(*nv));
        if (nv == NULL) {
            a->oom = 1;
            return;
        }
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n].key = a->by_pid ? BH_TRACK_PROCESS(client) : domain;
    a->v[a->n].c = *c;
    a->n++;
}

static int by_key(const void *x, const void *y) {
    const agg *a = x, *b = y;
    return a->key < b->key ? -1 : a->key > b->key;
}

/* Sorts by key and sums runs of one key into one entry. */
static void merge(aggs *a) {
    if (a->n == 0)
        return;
    qsort(a->v, a->n, sizeof(*a->v), by_key);
    size_t out = 0;
    for (size_t i = 1; i < a->n; i++) {
        if (a->v[i].key == a->v[out].key)
            bh_track_counts_add(&a->v[out].c, &a->v[i].c);
        else
            a->v[++out] = a->v[i];
    }
    a->n = out + 1;
}

static int by_live_bytes_desc(const void *x, const void *y) {
    const agg *a = x, *b = y;
    if (a->c.live_bytes != b->c.live_bytes)
        return a->c.live_bytes > b->c.live_bytes ? -1 : 1;
    if (a->c.unknown_frees != b->c.unknown_frees)
        return a->c.unknown_frees > b->c.unknown_frees ? -1 : 1;
    return by_key(x, y);
}

/* ======================== Exposition ======================== */

const char *bh_metrics_kind_name(uint32_t kind, char buf[16]) {
    static const char *const names[] = BH_MEM_KIND_NAMES;   /* printed in lower case */
    if (kind == BH_TT_KIND_CB || kind == BH_TT_KIND_KERNEL) /* TT's circular buffers, kernel code */
        return kind == BH_TT_KIND_CB ? "cb" : "kernel";
    if (kind == BH_TT_KIND_UNKNOWN) /* a TT FREE of an address its process never held */
        return "unknown";
    if (kind >= sizeof(names) / sizeof(names[0])) {
        snprintf(buf, 16, "kind%u", kind);
        return buf;
    }
    size_t i = 0;
    for (; names[kind][i] != '\0' && i < 15; i++)
        buf[i] = (char)tolower((unsigned char)names[kind][i]);
    buf[i] = '\0';
    return buf;
}

static void family(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped, as the text format requires. */
static void label_value(FILE *f, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

typedef struct field {
    const char *name, *type, *help;
    size_t off; /* into bh_track_counts */
} field;

#define F(member) offsetof(bh_track_counts, member)

static const field domain_fields[] = {
    {"bh_trackd_live_bytes", "gauge", "Bytes in live allocations.", F(live_bytes)},
    {"bh_trackd_live_allocations", "gauge", "Live allocations.", F(live)},
    {"bh_trackd_allocs_total", "counter", "ALLOC events.", F(allocs)},
    {"bh_trackd_frees_total", "counter", "FREE events.", F(frees)},
    {"bh_trackd_unknown_frees_total", "counter", "FREE events of an address that was not live.",
     F(unknown_frees)},
    {"bh_trackd_duplicate_allocs_total", "counter", "ALLOC events of an address that was already live.",
     F(duplicate_allocs)},
    {"bh_trackd_leaks_total", "counter", "Allocations still live when their process was gone.", F(leaks)},
    {"bh_trackd_leaked_bytes_total", "counter", "Bytes of those leaked allocations.", F(leaked_bytes)},
    {"bh_trackd_unverified_leaks_total", "counter",
     "Allocations still live when their process was gone with events lost and no resync since.",
     F(unverified_leaks)},
};

static const field client_fields[] = {
    {"bh_trackd_client_live_bytes", "gauge", "Bytes a client process holds live.", F(live_bytes)},
    {"bh_trackd_client_live_allocations", "gauge", "Allocations a client process holds live.", F(live)},
    {"bh_trackd_client_peak_bytes", "gauge", "Peak live bytes of a client process (sum over its devices).",
     F(peak_bytes)},
    {"bh_trackd_client_unknown_frees", "gauge", "Unknown FREEs a client process has sent so far.",
     F(unknown_frees)},
    {"bh_trackd_client_duplicate_allocs", "gauge", "Duplicate ALLOCs a client process has sent so far.",
     F(duplicate_allocs)},
    {"bh_trackd_client_leaks", "gauge", "Allocations a client process leaked.", F(leaks)},
};

static uint64_t field_of(const bh_track_counts *c, const field *fd) {
    return *(const uint64_t *)(const void *)((const char *)c + fd->off);
}

/* The cardinality bound shared by the per-domain and per-client series:
 * keeps the max entries with the most live bytes (in that order) and sums
 * the rest into *other, so every family still adds up to the totals.
 * Returns how many are kept. */
static size_t top_n(aggs *a, unsigned max, bh_track_counts *other) {
    if (a->n > 1) /* v is NULL while nothing reported: qsort's arguments must not be */
        qsort(a->v, a->n, sizeof(*a->v), by_live_bytes_desc);
    size_t shown = a->n < max ? a->n : max;
    memset(other, 0, sizeof(*other));
    for (size_t i = shown; i < a->n; i++)
        bh_track_counts_add(other, &a->v[i].c);
    return shown;
}

/* How many a family tracks, and that only some have their own series. */
static void tracked(FILE *f, const char *name, const char *help, size_t n) {
    family(f, name, "gauge", help);
    fprintf(f, "%s %zu\n", name, n);
}

static void domain_series(FILE *f, aggs *d, unsigned max_domains) {
    bh_track_counts other;
    size_t shown = top_n(d, max_domains, &other);
    if (shown > 1) /* the kept ones by device and kind again, as a reader scans them */
        qsort(d->v, shown, sizeof(*d->v), by_key);
    for (size_t k = 0; k < sizeof(domain_fields) / sizeof(domain_fields[0]); k++) {
        const field *fd = &domain_fields[k];
        family(f, fd->name, fd->type, fd->help);
        for (size_t i = 0; i < shown; i++) {
            char kb[16];
            uint32_t domain = (uint32_t)d->v[i].key;
            fprintf(f, "%s{device=\"%u\",kind=\"%s\"} %" PRIu64 "\n", fd->name, BH_DOMAIN_DEVICE(domain),
                    bh_metrics_kind_name(BH_DOMAIN_KIND(domain), kb), field_of(&d->v[i].c, fd));
        }
        if (d->n > shown)
            fprintf(f, "%s{device=\"other\",kind=\"other\"} %" PRIu64 "\n", fd->name, field_of(&other, fd));
    }
    tracked(
        f, "bh_trackd_domains_tracked",
        "Device and kind domains in the tracker's view (per-domain series show the top ones by live bytes).",
        d->n);
}

/* One series of client i (or of "other": p NULL). */
static void client_label(FILE *f, const char *family_name, const aggs *p, size_t i, bh_metrics_name_fn name,
                         void *name_ctx) {
    fprintf(f, "%s{client=\"", family_name);
    if (p == NULL) {
        fputs("other\",pid=\"other\"} ", f);
        return;
    }
    label_value(f, name(name_ctx, BH_TRACK_CLIENT(p->v[i].key, 0)));
    fprintf(f, "\",pid=\"%" PRIu64 "\"} ", p->v[i].key);
}

/* One per-client family of a bh_track_loss field (the tracker keeps those
 * per stream, not per domain): the shown clients, then "other", the rest of
 * the total (retired processes included). */
static void loss_family(FILE *f, const bh_track *t, const aggs *p, size_t shown, const char *fname,
                        const char *help, size_t off, bh_metrics_name_fn name, void *name_ctx) {
    bh_track_loss all, l;
    bh_track_process_loss(t, UINT32_MAX, &all);
    family(f, fname, "gauge", help);
    uint64_t sum = 0;
    for (size_t i = 0; i < shown; i++) {
        bh_track_process_loss(t, (uint32_t)p->v[i].key, &l);
        uint64_t v = *(const uint64_t *)(const void *)((const char *)&l + off);
        client_label(f, fname, p, i, name, name_ctx);
        fprintf(f, "%" PRIu64 "\n", v);
        sum = bh__sat_add(sum, v); /* as the total: it saturates */
    }
    if (p->n > shown) { /* the rest of a saturated total is unknown: never less than 0 */
        uint64_t total = *(const uint64_t *)(const void *)((const char *)&all + off);
        client_label(f, fname, NULL, 0, name, name_ctx);
        fprintf(f, "%" PRIu64 "\n", total > sum ? total - sum : 0);
    }
}

/* Loss, evictions and what a loss made uncertain, per shown client and in
 * total. */
static void client_loss_series(FILE *f, const bh_track *t, const aggs *p, size_t shown,
                               bh_metrics_name_fn name, void *name_ctx) {
    loss_family(f, t, p, shown, "bh_trackd_client_events_lost",
                "Events a client process's reporter could not deliver (sequence gaps, less late arrivals).",
                offsetof(bh_track_loss, lost), name, name_ctx);
    loss_family(f, t, p, shown, "bh_trackd_client_history_evictions",
                "History records of a client process evicted to make room for other addresses.",
                offsetof(bh_track_loss, evicted), name, name_ctx);
    family(f, "bh_trackd_client_counts_at_least", "gauge",
           "1 when a loss made a client process's counters lower bounds.");
    for (size_t i = 0; i < shown; i++) {
        client_label(f, "bh_trackd_client_counts_at_least", p, i, name, name_ctx);
        fprintf(f, "%d\n", (p->v[i].c.inexact & BH_TRACK_AT_LEAST) != 0);
    }
    bh_track_loss all;
    bh_track_process_loss(t, UINT32_MAX, &all);
    family(f, "bh_trackd_events_lost", "gauge",
           "Events the reporters could not deliver, over all client processes (late arrivals taken back).");
    fprintf(f, "bh_trackd_events_lost %" PRIu64 "\n", all.lost);
    uint64_t clean, found;
    bh_track_history_evictions(t, &clean, &found);
    family(f, "bh_trackd_history_evictions_total", "counter",
           "Per-address history records evicted: clean ones first, ones with findings only when those are "
           "full.");
    fprintf(f, "bh_trackd_history_evictions_total{table=\"clean\"} %" PRIu64 "\n", clean);
    fprintf(f, "bh_trackd_history_evictions_total{table=\"findings\"} %" PRIu64 "\n", found);
}

static void client_series(FILE *f, const bh_track *t, aggs *p, bh_metrics_name_fn name, void *name_ctx,
                          unsigned max_clients) {
    bh_track_counts other;
    size_t shown = top_n(p, max_clients, &other);
    for (size_t k = 0; k < sizeof(client_fields) / sizeof(client_fields[0]); k++) {
        const field *fd = &client_fields[k];
        family(f, fd->name, fd->type, fd->help);
        for (size_t i = 0; i < shown; i++) {
            client_label(f, fd->name, p, i, name, name_ctx);
            fprintf(f, "%" PRIu64 "\n", field_of(&p->v[i].c, fd));
        }
        if (p->n > shown) {
            client_label(f, fd->name, NULL, 0, name, name_ctx);
            fprintf(f, "%" PRIu64 "\n", field_of(&other, fd));
        }
    }
    client_loss_series(f, t, p, shown, name, name_ctx);
    tracked(f, "bh_trackd_clients_tracked",
            "Client processes in the tracker's view (per-client series show the top ones by live bytes).",
            p->n);
}

/* Resident memory from /proc/self/statm (pages). */
static uint64_t resident_bytes(void) {
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return (uint64_t)resident * (uint64_t)(page > 0 ? page : 4096);
}

static void health_series(FILE *f, const bh_metrics_health *h) {
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } hf[] = {
#define H(member) offsetof(bh_metrics_health, member)
        {"bh_trackd_connections", "gauge", "Open socket connections (native, compat and queries).",
         H(connections)},
        {"bh_trackd_clients_connected", "gauge", "Processes with a reporting connection open.", H(clients)},
        {"bh_trackd_http_connections", "gauge", "Open HTTP connections.", H(http_connections)},
        {"bh_trackd_connections_total", "counter", "Socket connections accepted.", H(connections_total)},
        {"bh_trackd_reporter_connections_total", "counter", "Reporter (not query) connections.",
         H(reporter_connections_total)},
        {"bh_trackd_rejected_peers_total", "counter", "Peers refused for their uid.",
         H(rejected_peers_total)},
        {"bh_trackd_refused_connections_total", "counter",
         "Connections refused at the connection limits or out of descriptors.", H(refused_connections_total)},
        {"bh_trackd_timeouts_total", "counter", "Connections closed for being idle or too slow.",
         H(timeouts_total)},
        {"bh_trackd_malformed_total", "counter", "Connections closed for malformed input.",
         H(malformed_total)},
        {"bh_trackd_resyncs_total", "counter", "Live-set resyncs completed by reporters.", H(resyncs_total)},
        {"bh_trackd_resyncs_cut_total", "counter",
         "Live-set resyncs given up: their connection ended before their RESYNC_END.", H(resyncs_cut_total)},
        {"bh_trackd_compat_records_total", "counter", "TT-Metal compat records received.",
         H(compat_records_total)},
        {"bh_trackd_unsupported_records_total", "counter", "TT-Metal records of types this server ignores.",
         H(unsupported_records_total)},
        {"bh_trackd_compat_ignored_total", "counter",
         "TT-Metal records and streams ignored: unusable, or over a limit of the per-process view.",
         H(compat_ignored_total)},
        {"bh_trackd_limit_disconnects_total", "counter", "Clients cut off at --max-live-per-client.",
         H(limit_disconnects_total)},
        {"bh_trackd_output_overflows_total", "counter", "Connections cut off for not reading their replies.",
         H(output_overflows_total)},
        {"bh_trackd_http_requests_total", "counter", "HTTP requests answered.", H(http_requests_total)},
        {"bh_trackd_processes_gone_total", "counter",
         "Client processes seen gone (what they held counted as leaks).", H(processes_gone_total)},
        {"bh_trackd_processes_going", "gauge",
         "Client processes gone whose live allocations are still being dropped as leaks (in slices).",
         H(processes_going)},
        {"bh_trackd_drop_slices_total", "counter",
         "Loop turns that dropped live allocations of gone processes (at most 4096 each).",
         H(drop_slices_total)},
        {"bh_trackd_rings_attached_total", "counter", "Event rings (shared memory) taken from reporters.",
         H(rings_attached_total)},
        {"bh_trackd_rings_refused_total", "counter",
         "Event rings refused (not a sealed memfd of its size, another's, or over the per-process limits); "
         "their events come over the socket.",
         H(rings_refused_total)},
        {"bh_trackd_ring_records_total", "counter", "Records drained from event rings.",
         H(ring_records_total)},
        {"bh_trackd_ring_events_lost_total", "counter",
         "Events the rings' number gaps say were lost (saturates at 2^64 - 1).", H(ring_events_lost_total)},
        {"bh_trackd_unverified_peers_total", "counter",
         "Reporter connections whose pid this server cannot see (keyed by the pid they state).",
         H(unverified_peers_total)},
        {"bh_trackd_tt_live_allocations", "gauge", "TT-Metal's view: live entries of compat clients.",
         H(tt_live)},
        {"bh_trackd_tt_live_bytes", "gauge", "TT-Metal's view: bytes in live entries of compat clients.",
         H(tt_live_bytes)},
        {"bh_trackd_tt_leaks", "gauge", "TT-Metal's view: live entries of compat clients that are gone.",
         H(tt_leaks)},
        {"bh_trackd_tt_leaked_bytes", "gauge",
         "TT-Metal's view: bytes in live entries of gone compat clients.", H(tt_leaked_bytes)},
        {"bh_trackd_tt_allocs_total", "counter", "TT-Metal's view: ALLOC records applied.",
         H(tt_allocs_total)},
        {"bh_trackd_tt_frees_total", "counter", "TT-Metal's view: FREE records that found their entry.",
         H(tt_frees_total)},
        {"bh_trackd_tt_unknown_frees_total", "counter", "TT-Metal's view: FREE records that found no entry.",
         H(tt_unknown_frees_total)},
        {"bh_trackd_tt_references_total", "counter",
         "TT-Metal's view: ALLOC records of a live entry (one more reference, no bytes).",
         H(tt_references_total)},
        {"bh_trackd_tt_table_refused_total", "counter",
         "TT ALLOCs not kept: the TT table full, and their process at its share.", H(tt_refused_total)},
        {"bh_trackd_tt_table_evicted_departed_total", "counter",
         "TT table entries of gone processes dropped to make room.", H(tt_evicted_departed_total)},
        {"bh_trackd_tt_table_evicted_over_share_total", "counter",
         "TT table entries of a process over its share dropped to make room for another's.",
         H(tt_evicted_over_share_total)},
        {"bh_trackd_compat_input_holds_total", "counter",
         "Times a TT connection was not read while 1 MiB of its replies were unread (instead of closing it).",
         H(compat_input_holds_total)},
        {"bh_trackd_compat_accept_waits_total", "counter",
         "Times TT connections were left in the backlog at the connection cap (instead of closing them).",
         H(compat_accept_waits_total)},
        {"bh_trackd_summaries_skipped_total", "counter",
         "Periodic or SIGHUP --summary writes skipped because the previous one was still being written.",
         H(summaries_skipped_total)},
        {"bh_trackd_passed_fds_refused_total", "counter",
         "Descriptors clients passed that were not memfds (their connection refused).",
         H(passed_fds_refused_total)},
        {"bh_trackd_passed_fds_parked_total", "counter",
         "Descriptors clients passed that waited, open, for room in the closer thread's queue.",
         H(passed_fds_parked_total)},
        {"bh_trackd_passed_fds_left_open_total", "counter",
         "Descriptors clients passed that stay open for good (no memory to park them for the closer thread).",
         H(passed_fds_left_open_total)},
#undef H
    };
    for (size_t k = 0; k < sizeof(hf) / sizeof(hf[0]); k++) {
        family(f, hf[k].name, hf[k].type, hf[k].help);
        fprintf(f, "%s %" PRIu64 "\n", hf[k].name,
                *(const uint64_t *)(const void *)((const char *)h + hf[k].off));
    }
    family(f, "process_resident_memory_bytes", "gauge", "Resident memory of bh-trackd.");
    fprintf(f, "process_resident_memory_bytes %" PRIu64 "\n", resident_bytes());
    family(f, "process_start_time_seconds", "gauge", "Start time of bh-trackd since the epoch.");
    fprintf(f, "process_start_time_seconds %.3f\n", h->start_time_s);
    family(f, "bh_trackd_build_info", "gauge", "Always 1; the version is a label.");
    fprintf(f, "bh_trackd_build_info{version=\"%s\"} 1\n", BH_VERSION_STRING);
}

/* What the byte bound moved into "other": a gauge always (0 when nothing),
 * a comment when something. */
static void cut_series(FILE *f, size_t domains, size_t nd, size_t clients, size_t nc, size_t max_bytes) {
    family(f, "bh_trackd_metrics_series_cut", "gauge",
           "Domains and client processes summed into \"other\" to keep /metrics under its byte bound "
           "(beyond --metrics-domains and --metrics-clients).");
    fprintf(f, "bh_trackd_metrics_series_cut{family=\"domains\"} %zu\n", domains - nd);
    fprintf(f, "bh_trackd_metrics_series_cut{family=\"clients\"} %zu\n", clients - nc);
    if (domains > nd || clients > nc)
        fprintf(
            f,
            "# bh-trackd: cut to stay under %zu bytes: %zu of %zu domains and %zu of %zu client processes "
            "have series of their own, the rest are in the \"other\" series\n",
            max_bytes, nd, domains, nc, clients);
}

/* The exposition with nd domains and nc processes in series of their own
 * (of the wanted ones, max_domains and max_clients), into *out (malloc'd). */
static int render(char **out, size_t *len, const bh_track *t, const bh_metrics_health *h,
                  bh_metrics_name_fn name, void *name_ctx, aggs *d, aggs *p, const size_t wanted[2],
                  const size_t shown[2], size_t max_bytes) {
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    domain_series(f, d, (unsigned)shown[0]);
    client_series(f, t, p, name, name_ctx, (unsigned)shown[1]);
    health_series(f, h);
    cut_series(f, wanted[0], shown[0], wanted[1], shown[1], max_bytes);
    if (fclose(f) == 0)
        return 0;
    free(*out);
    *out = NULL;
    return -1;
}

/* Of the k series with the most live bytes in both lists together (domains
 * and processes: the least useful go first, whichever list they are in),
 * how many are domains (shown[0]) and processes (shown[1]). */
static void split(aggs *d, aggs *p, const size_t wanted[2], size_t k, size_t shown[2]) {
    if (d->n > 1)
        qsort(d->v, d->n, sizeof(*d->v), by_live_bytes_desc);
    if (p->n > 1)
        qsort(p->v, p->n, sizeof(*p->v), by_live_bytes_desc);
    size_t i = 0, j = 0;
    while (i + j < k && (i < wanted[0] || j < wanted[1])) {
        if (j >= wanted[1] || (i < wanted[0] && d->v[i].c.live_bytes >= p->v[j].c.live_bytes))
            i++;
        else
            j++;
    }
    shown[0] = i;
    shown[1] = j;
}

int bh_metrics_write(FILE *f, const bh_track *t, const bh_metrics_health *h, bh_metrics_name_fn name,
                     void *name_ctx, const bh_metrics_limits *lim) {
    aggs d = {0}, p = {0};
    p.by_pid = 1;
    bh_track_each_group(t, collect, &d);
    bh_track_each_group(t, collect, &p);
    int rc = -1;
    char *body = NULL;
    size_t len = 0;
    if (!d.oom && !p.oom) {
        merge(&d);
        merge(&p);
        size_t wanted[2] = {d.n < lim->max_domains ? d.n : lim->max_domains,
                            p.n < lim->max_clients ? p.n : lim->max_clients};
        size_t shown[2] = {wanted[0], wanted[1]};
        /* Over the bound: the series with the fewest live bytes go, a tenth
         * more than the overshoot each time, until it fits; a few renders,
         * each O(groups log groups). */
        while ((rc = render(&body, &len, t, h, name, name_ctx, &d, &p, wanted, shown, lim->max_bytes)) == 0 &&
               lim->max_bytes != 0 && len > lim->max_bytes && shown[0] + shown[1] > 0) {
            size_t k = shown[0] + shown[1],
                   n = (size_t)((double)k * 0.9 * (double)lim->max_bytes / (double)len);
            split(&d, &p, wanted, n < k ? n : k - 1, shown);
            free(body);
            body = NULL;
        }
    }
    if (rc == 0 && fwrite(body, 1, len, f) != len)
        rc = -1;
    free(body);
    free(d.v);
    free(p.v);
    return rc;
}
