/*
 * web.c - bh-trackd's HTTP side (--http ADDR:PORT): the routes, the timeline
 * of live bytes per device and kind that the dashboard charts, and the
 * daemon-health figures for /metrics.
 *
 * Owns: the URL space (/, /metrics, /api/stats, /api/live, /api/history,
 * /api/timeline), the timeline ring (one sample a second, the last
 * TL_POINTS), the dashboard page embedded at build time.
 * Must never: change the tracker, or answer with anything but what render.c
 * and metrics.c produce (the JSON of /api/stats and /api/live is the socket
 * commands' JSON); runs on the event loop, so every route is bounded work.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "http.h"
#include "metrics.h"
#include "trackd.h"
#include "tt_table.h"

/* dashboard.html, embedded by tools/bh-trackd/embed.cmake */
extern const unsigned char td_dashboard_html[];
extern const size_t td_dashboard_html_len;

#define TL_POINTS 300      /* five minutes at one sample a second */
#define TL_MAX_SERIES 1024 /* domains charted; 64 devices x 16 kinds */
#define TL_INTERVAL_MS 1000u
#define LIVE_PAGE_DEFAULT 1000u
#define LIVE_PAGE_MAX 10000u

/* ======================== Timeline ======================== */

typedef struct tl_series {
    uint32_t domain;
    uint64_t last_live;    /* sample number of the last sample with live bytes */
    uint64_t v[TL_POINTS]; /* live bytes, a ring in step with td_timeline.t */
} tl_series;

typedef struct tl_fresh { /* a domain with live bytes and no series yet */
    uint32_t domain;
    uint64_t bytes;
} tl_fresh;

typedef struct td_timeline {
    uint64_t t[TL_POINTS]; /* unix ms of each sample */
    size_t head, n;        /* next slot; samples held */
    uint64_t samples;      /* taken so far */
    tl_series **series;    /* sorted by domain (pointers: a series is 2.4 KB) */
    size_t nseries;
    tl_fresh *fresh; /* scratch of one sample */
    size_t nfresh, fresh_cap;
} td_timeline;

static uint64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static tl_series *series_find(td_timeline *tl, uint32_t domain) {
    size_t lo = 0, hi = tl->nseries;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tl->series[mid]->domain < domain)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < tl->nseries && tl->series[lo]->domain == domain ? tl->series[lo] : NULL;
}

typedef struct sample_ctx {
    td_timeline *tl;
    size_t slot;
} sample_ctx;

static void sample_group(void *ctx, uint64_t client, uint32_t domain, const bh_track_counts *c) {
    sample_ctx *x = ctx;
    td_timeline *tl = x->tl;
    (void)client;
    if (c->live_bytes == 0) /* a domain is charted while it holds memory (and five minutes after) */
        return;
    tl_series *s = series_find(tl, domain);
    if (s != NULL) {
        s->v[x->slot] = bh__sat_add(s->v[x->slot], c->live_bytes); /* 2^64 + 4 KiB charted 4 KiB */
        return;
    }
    if (tl->nfresh == tl->fresh_cap) { /* bounded by the groups: one entry each at most */
        size_t cap = tl->fresh_cap ? tl->fresh_cap * 2 : 64;
        tl_fresh *nf = realloc(tl->fresh, cap * sizeof(*nf));
        if (nf == NULL)
            return;
        tl->fresh = nf;
        tl->fresh_cap = cap;
    }
    tl->fresh[tl->nfresh++] = (tl_fresh){domain, c->live_bytes};
}

static int by_domain(const void *a, const void *b) {
    uint32_t x = ((const tl_fresh *)a)->domain, y = ((const tl_fresh *)b)->domain;
    return x < y ? -1 : x > y;
}

static int by_bytes_desc(const void *a, const void *b) {
    uint64_t x = ((const tl_fresh *)a)->bytes, y = ((const tl_fresh *)b)->bytes;
    return x > y ? -1 : x < y;
}

static int series_by_domain(const void *a, const void *b) {
    uint32_t x = (*(tl_series *const *)a)->domain, y = (*(tl_series *const *)b)->domain;
    return x < y ? -1 : x > y;
}

/* Domains that got live bytes and have no series: the largest first, each in
 * a free place or in the place of the series with the fewest live bytes now
 * (when it has fewer). So the chart follows where the memory is, not which
 * domain came first. Costs a sort of the new domains and of the series. */
static void add_fresh(td_timeline *tl, size_t slot) {
    if (tl->nfresh == 0)
        return;
    qsort(tl->fresh, tl->nfresh, sizeof(*tl->fresh), by_domain);
    size_t n = 0;
    for (size_t i = 0; i < tl->nfresh; i++) { /* one entry per domain, its groups summed */
        if (n > 0 && tl->fresh[n - 1].domain == tl->fresh[i].domain)
            tl->fresh[n - 1].bytes = bh__sat_add(tl->fresh[n - 1].bytes, tl->fresh[i].bytes);
        else
            tl->fresh[n++] = tl->fresh[i];
    }
    qsort(tl->fresh, n, sizeof(*tl->fresh), by_bytes_desc);
    tl->nfresh = 0;
    /* The series that may give way, fewest bytes first (index in .domain). */
    size_t nvictims = n > TL_MAX_SERIES - tl->nseries ? n - (TL_MAX_SERIES - tl->nseries) : 0;
    tl_fresh *victims = NULL;
    size_t nold = tl->nseries;
    if (nvictims > 0 && nold > 0) {
        victims = malloc(nold * sizeof(*victims));
        if (victims == NULL)
            return;
        for (size_t i = 0; i < nold; i++)
            victims[i] = (tl_fresh){(uint32_t)i, tl->series[i]->v[slot]};
        qsort(victims, nold, sizeof(*victims), by_bytes_desc); /* fewest at the end */
    }
    size_t taken = 0;
    for (size_t i = 0; i < n; i++) {
        tl_series *s;
        if (tl->nseries < TL_MAX_SERIES) {
            tl_series **ns = realloc(tl->series, (tl->nseries + 1) * sizeof(*ns));
            if (ns == NULL || (s = malloc(sizeof(*s))) == NULL) {
                if (ns != NULL)
                    tl->series = ns;
                break;
            }
            tl->series = ns;
            tl->series[tl->nseries++] = s;
        } else {
            if (victims == NULL || taken == nvictims || taken == nold ||
                victims[nold - 1 - taken].bytes >= tl->fresh[i].bytes)
                break; /* the rest have fewer bytes still */
            s = tl->series[victims[nold - 1 - taken++].domain];
        }
        memset(s, 0, sizeof(*s)); /* a new series was 0 before it appeared */
        s->domain = tl->fresh[i].domain;
        s->v[slot] = tl->fresh[i].bytes;
    }
    free(victims);
    qsort(tl->series, tl->nseries, sizeof(*tl->series), series_by_domain);
}

static void sample(td_server *s) {
    td_timeline *tl = s->timeline;
    sample_ctx x = {tl, tl->head};
    for (size_t i = 0; i < tl->nseries; i++)
        tl->series[i]->v[x.slot] = 0;
    bh_track_each_group(s->track, sample_group, &x);
    add_fresh(tl, x.slot);
    /* A series with nothing live for the whole window (its clients gone, or
     * idle for five minutes) is dropped: it would chart only zeros. */
    size_t kept = 0;
    for (size_t i = 0; i < tl->nseries; i++) {
        tl_series *ser = tl->series[i];
        if (ser->v[x.slot] > 0)
            ser->last_live = tl->samples;
        if (tl->samples - ser->last_live >= TL_POINTS)
            free(ser);
        else
            tl->series[kept++] = ser;
    }
    tl->nseries = kept;
    tl->samples++;
    tl->t[x.slot] = unix_ms();
    tl->head = (tl->head + 1) % TL_POINTS;
    if (tl->n < TL_POINTS)
        tl->n++;
}

/* The samples taken after since (unix ms; 0: all held), oldest first. A
 * dashboard polls with the time of the last sample it has, so each poll
 * renders one or two points per series, not five minutes of them. At most
 * one reply's worth (TD_REPLY_LIMIT): series that do not fit are counted in
 * omitted_series, those with the fewest live bytes now first. */
static void render_timeline(const td_timeline *tl, td_strbuf *b, uint64_t since) {
    size_t first = (tl->head + TL_POINTS - tl->n) % TL_POINTS, skip = 0;
    size_t last = (tl->head + TL_POINTS - 1) % TL_POINTS;
    while (skip < tl->n && tl->t[(first + skip) % TL_POINTS] <= since)
        skip++;
    td_sb_printf(b, "{\"interval_ms\":%u,\"points\":%u,\"t\":[", TL_INTERVAL_MS, TL_POINTS);
    for (size_t i = skip; i < tl->n; i++)
        td_sb_printf(b, "%s%" PRIu64, i > skip ? "," : "", tl->t[(first + i) % TL_POINTS]);
    td_sb_printf(b, "],\"series\":[");
    /* Largest first: what the limit cuts is what matters least. */
    tl_fresh *order = malloc((tl->nseries ? tl->nseries : 1) * sizeof(*order));
    if (order == NULL) {
        b->failed = 1;
        return;
    }
    for (size_t k = 0; k < tl->nseries; k++)
        order[k] = (tl_fresh){(uint32_t)k, tl->series[k]->v[last]};
    qsort(order, tl->nseries, sizeof(*order), by_bytes_desc);
    size_t shown = 0, omitted = 0;
    for (size_t k = 0; k < tl->nseries; k++) {
        char kb[16];
        const tl_series *s = tl->series[order[k].domain]; /* .domain: the series' index here */
        size_t mark = b->len;
        td_sb_printf(b, "%s{\"device\":%u,\"kind\":\"%s\",\"bytes\":[", shown ? "," : "",
                     BH_DOMAIN_DEVICE(s->domain), td_kind_name(s->domain, kb));
        for (size_t i = skip; i < tl->n; i++)
            td_sb_printf(b, "%s%" PRIu64, i > skip ? "," : "", s->v[(first + i) % TL_POINTS]);
        td_sb_printf(b, "]}");
        if (b->failed || b->len > TD_REPLY_LIMIT) { /* this one and the rest (smaller) are left out */
            b->len = mark;
            omitted = tl->nseries - k;
            break;
        }
        shown++;
    }
    free(order);
    td_sb_printf(b, "],\"omitted_series\":%zu}\n", omitted);
}

/* ======================== Metrics ======================== */

/* The client label; an unverified client's (its pid label is then its
 * server-side key, at or above 2^30) says so, with the pid it stated. */
static const char *metrics_name(void *ctx, uint64_t client) {
    static char label[BH_WIRE_MAX_NAME + 48];
    pid_t pid = td_key_pid(client);
    const char *n = td_name_of(ctx, pid);
    if (!td_unverified(pid))
        return n[0] ? n : "unnamed";
    snprintf(label, sizeof(label), "%s (unverified pid %d)", n[0] ? n : "unnamed",
             (int)td_shown_pid(ctx, pid));
    return label;
}

static void health(td_server *s, bh_metrics_health *h) {
    memset(h, 0, sizeof(*h));
    for (const td_client *c = s->clients; c != NULL; c = c->next)
        h->connections++;
    h->clients = td_clients_connected(s);
    h->http_connections = bh_http_connections(s->http);
    h->connections_total = s->connections;
    h->reporter_connections_total = s->reporter_connections;
    h->rejected_peers_total = s->rejected;
    h->refused_connections_total = s->refused;
    h->timeouts_total = s->timeouts;
    h->output_overflows_total = s->output_overflows;
    h->malformed_total = s->malformed;
    h->resyncs_total = s->resyncs;
    h->compat_records_total = s->compat_records;
    h->unsupported_records_total = s->unsupported_records;
    h->limit_disconnects_total = s->limit_disconnects;
    h->http_requests_total = bh_http_requests(s->http);
    td_tt_counts tt;
    td_tt_counts_get(s->tt_table, &tt);
    h->tt_refused_total = tt.refused;
    h->tt_evicted_departed_total = tt.evicted_departed;
    h->tt_evicted_over_share_total = tt.evicted_over_share;
    h->tt_live = tt.live;
    h->tt_live_bytes = tt.live_bytes;
    h->tt_leaks = tt.leaks;
    h->tt_leaked_bytes = tt.leaked_bytes;
    h->tt_allocs_total = tt.allocs;
    h->tt_frees_total = tt.frees;
    h->tt_unknown_frees_total = tt.unknown_frees;
    h->tt_references_total = tt.references;
    h->compat_ignored_total = s->compat_ignored;
    h->compat_input_holds_total = s->compat_holds;
    h->compat_accept_waits_total = s->compat_waits;
    h->summaries_skipped_total = s->summaries_skipped;
    h->passed_fds_refused_total = s->fds_refused;
    h->passed_fds_parked_total = s->closes_parked;
    h->passed_fds_left_open_total = s->closes_lost;
    h->processes_gone_total = s->processes_gone;
    h->resyncs_cut_total = s->resyncs_cut;
    h->drop_slices_total = s->drop_slices;
    h->rings_attached_total = s->rings_attached;
    h->rings_refused_total = s->rings_refused;
    h->ring_records_total = s->ring_records;
    h->ring_events_lost_total = s->ring_events_lost;
    for (const td_going *g = s->going; g != NULL; g = g->next)
        h->processes_going++;
    h->unverified_peers_total = s->unverified_peers;
    h->start_time_s = s->start_time_s;
}

static void render_metrics(td_server *s, bh_http_response *out) {
    char *p = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&p, &len);
    if (f == NULL)
        return;
    bh_metrics_health h;
    health(s, &h);
    bh_metrics_limits lim = s->metrics;
    lim.max_bytes = BH_HTTP_BODY_MAX; /* as every answer; the series with the fewest bytes go first */
    int rc = bh_metrics_write(f, s->track, &h, metrics_name, s, &lim);
    if (fclose(f) != 0 || rc != 0) {
        free(p);
        return;
    }
    out->body = p;
    out->len = len;
}

/* ======================== Routes ======================== */

static void route(void *ctx, const char *path, const bh_http_request *req, bh_http_response *out) {
    td_server *s = ctx;
    td_strbuf b = {0};
    out->status = 200;
    out->content_type = "application/json";
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        out->content_type = "text/html; charset=utf-8";
        out->static_body = (const char *)td_dashboard_html;
        out->len = td_dashboard_html_len;
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        out->content_type = "text/plain; version=0.0.4; charset=utf-8";
        render_metrics(s, out);
        return;
    }
    if (strcmp(path, "/api/stats") == 0) {
        td_render_stats(s, &b, 1, 0); /* the socket's 1 MiB: up to 64 connections hold one each */
    } else if (strcmp(path, "/api/live") == 0) {
        uint64_t offset = 0, limit = LIVE_PAGE_DEFAULT;
        const char *o = bh_http_arg(req, "offset"), *l = bh_http_arg(req, "limit");
        if ((o != NULL && td_parse_u64(o, &offset) != 0) || (l != NULL && td_parse_u64(l, &limit) != 0)) {
            out->status = 400;
            td_sb_printf(&b, "{\"error\":\"offset and limit are non-negative numbers\"}\n");
        } else {
            td_render_dump_page(s, &b, offset, limit < LIVE_PAGE_MAX ? limit : LIVE_PAGE_MAX);
        }
    } else if (strcmp(path, "/api/history") == 0) {
        uint64_t address;
        if (td_parse_u64(bh_http_arg(req, "address"), &address) != 0) {
            out->status = 400;
            td_sb_printf(&b, "{\"error\":\"address= wants a number (decimal or 0x hex)\"}\n");
        } else {
            td_render_history(s, &b, address, 1);
        }
    } else if (strcmp(path, "/api/timeline") == 0) {
        uint64_t since = 0;
        const char *v = bh_http_arg(req, "since");
        if (v != NULL && td_parse_u64(v, &since) != 0) {
            out->status = 400;
            td_sb_printf(&b, "{\"error\":\"since= wants unix milliseconds\"}\n");
        } else {
            render_timeline(s->timeline, &b, since);
        }
    } else {
        out->status = 0; /* 404 */
        return;
    }
    out->body = b.p;
    out->len = b.len;
}

/* ======================== Loop hooks ======================== */

int td_web_open(td_server *s, void *tag) {
    bh_http_addr addr;
    char err[300];
    if (s->act_http >= 0) { /* the service manager's socket wins over --http */
        if (bh_http_addr_of_fd(s->act_http, &addr) != 0) {
            td_log(s, TD_ERROR, "socket activation: http socket: %s", strerror(errno));
            return -1;
        }
        s->http_spec = "(socket activation)";
    } else if (s->http_spec == NULL) {
        return 0;
    } else if (bh_http_parse_addr(s->http_spec, &addr, err, sizeof(err)) != 0) {
        td_log(s, TD_ERROR, "--http: %s", err);
        return -1;
    }
    bh_http_opts opts = {s->http_conns, {NULL}, 0};
    for (int i = 0; i < s->nhttp_hosts && i < BH_HTTP_MAX_HOSTS; i++)
        opts.hosts[opts.nhosts++] = s->http_hosts[i];
    s->timeline = calloc(1, sizeof(*s->timeline));
    s->http = s->timeline != NULL ? bh_http_open(&addr, &opts, route, s, s->log) : NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    if (s->http == NULL || epoll_ctl(s->epfd, EPOLL_CTL_ADD, bh_http_fd(s->http), &ev) != 0) {
        td_log(s, TD_ERROR, "--http %s: cannot serve", s->http_spec);
        td_web_close(s);
        return -1;
    }
    s->start_time_s = (double)unix_ms() / 1000.0;
    char url[96];
    bh_http_url(&addr, bh_http_port(s->http), url, sizeof(url));
    td_log(s, TD_INFO, "serving http on %s", url);
    return 0;
}

int td_web_timeout(td_server *s, int cap_ms) {
    if (s->http == NULL)
        return cap_ms;
    uint64_t now = td_now_ms();
    int until_sample = s->next_sample_ms > now ? (int)(s->next_sample_ms - now) : 0;
    return bh_http_timeout_ms(s->http, until_sample < cap_ms ? until_sample : cap_ms);
}

void td_web_run(td_server *s) {
    if (s->http == NULL)
        return;
    uint64_t now = td_now_ms();
    if (now >= s->next_sample_ms) {
        sample(s);
        s->next_sample_ms = now + TL_INTERVAL_MS;
    }
    bh_http_run(s->http);
}

void td_web_close(td_server *s) {
    bh_http_close(s->http);
    s->http = NULL;
    if (s->timeline != NULL) {
        for (size_t i = 0; i < s->timeline->nseries; i++)
            free(s->timeline->series[i]);
        free(s->timeline->series);
        free(s->timeline->fresh);
    }
    free(s->timeline);
    s->timeline = NULL;
}
