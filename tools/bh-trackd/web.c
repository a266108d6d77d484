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
    uint64_t v[TL_POINTS]; /* live bytes, a ring in step with td_timeline.t */
} tl_series;

typedef struct td_timeline {
    uint64_t t[TL_POINTS]; /* unix ms of each sample */
    size_t head, n;        /* next slot; samples held */
    tl_series *series;
    size_t nseries, cap;
} td_timeline;

static uint64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The series of a domain, created (zero in the past) if new. Kept sorted by
 * domain: a sample costs O(groups x log series). */
static tl_series *series_of(td_timeline *tl, uint32_t domain) {
    size_t lo = 0, hi = tl->nseries;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tl->series[mid].domain < domain)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < tl->nseries && tl->series[lo].domain == domain)
        return &tl->series[lo];
    if (tl->nseries == TL_MAX_SERIES)
        return NULL;
    if (tl->nseries == tl->cap) {
        size_t cap = tl->cap ? tl->cap * 2 : 16;
        tl_series *ns = realloc(tl->series, cap * sizeof(*ns));
        if (ns == NULL)
            return NULL;
        tl->series = ns;
        tl->cap = cap;
    }
    memmove(&tl->series[lo + 1], &tl->series[lo], (tl->nseries - lo) * sizeof(*tl->series));
    tl->nseries++;
    tl_series *s = &tl->series[lo];
    memset(s, 0, sizeof(*s)); /* a new series was 0 before it appeared */
    s->domain = domain;
    return s;
}

typedef struct sample_ctx {
    td_timeline *tl;
    size_t slot;
} sample_ctx;

static void sample_group(void *ctx, uint64_t client, uint32_t domain, const bh_track_counts *c) {
    sample_ctx *x = ctx;
    (void)client;
    tl_series *s = series_of(x->tl, domain);
    if (s != NULL)
        s->v[x->slot] += c->live_bytes;
}

static void sample(td_server *s) {
    td_timeline *tl = s->timeline;
    sample_ctx x = {tl, tl->head};
    for (size_t i = 0; i < tl->nseries; i++)
        tl->series[i].v[x.slot] = 0;
    bh_track_each_group(s->track, sample_group, &x);
    tl->t[x.slot] = unix_ms();
    tl->head = (tl->head + 1) % TL_POINTS;
    if (tl->n < TL_POINTS)
        tl->n++;
}

/* The samples taken after since (unix ms; 0: all held), oldest first. A
 * dashboard polls with the time of the last sample it has, so each poll
 * renders one or two points per series, not five minutes of them. */
static void render_timeline(const td_timeline *tl, td_strbuf *b, uint64_t since) {
    size_t first = (tl->head + TL_POINTS - tl->n) % TL_POINTS, skip = 0;
    while (skip < tl->n && tl->t[(first + skip) % TL_POINTS] <= since)
        skip++;
    td_sb_printf(b, "{\"interval_ms\":%u,\"points\":%u,\"t\":[", TL_INTERVAL_MS, TL_POINTS);
    for (size_t i = skip; i < tl->n; i++)
        td_sb_printf(b, "%s%" PRIu64, i > skip ? "," : "", tl->t[(first + i) % TL_POINTS]);
    td_sb_printf(b, "],\"series\":[");
    for (size_t k = 0; k < tl->nseries; k++) {
        char kb[16];
        const tl_series *s = &tl->series[k];
        td_sb_printf(b, "%s{\"device\":%u,\"kind\":\"%s\",\"bytes\":[", k ? "," : "",
                     BH_DOMAIN_DEVICE(s->domain), td_kind_name(s->domain, kb));
        for (size_t i = skip; i < tl->n; i++)
            td_sb_printf(b, "%s%" PRIu64, i > skip ? "," : "", s->v[(first + i) % TL_POINTS]);
        td_sb_printf(b, "]}");
    }
    td_sb_printf(b, "]}\n");
}

/* ======================== Metrics ======================== */

static const char *metrics_name(void *ctx, uint64_t client) {
    const char *n = td_name_of(ctx, td_key_pid(client));
    return n[0] ? n : "unnamed";
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
    int rc = bh_metrics_write(f, s->track, &h, metrics_name, s, &s->metrics);
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
    s->timeline = calloc(1, sizeof(*s->timeline));
    s->http = s->timeline != NULL ? bh_http_open(&addr, route, s, s->log) : NULL;
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
    if (s->timeline != NULL)
        free(s->timeline->series);
    free(s->timeline);
    s->timeline = NULL;
}
