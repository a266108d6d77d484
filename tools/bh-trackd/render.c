/*
 * render.c - the one renderer of bh-trackd's view: the stats and dump
 * replies (text and JSON), the --summary file, the DUMP_REMAINING log. Every
 * other output (HTTP, metrics) renders through here too, so one place knows
 * each field's name and format.
 *
 * Owns: the growable string buffer, the text and JSON layouts
 * (docs/protocol.md, "Statistics JSON"), writing the summary file.
 * Must never: change the tracker or the server's counters, or print
 * anything the HELLO name sanitising (native.c) has not made printable.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "trackd.h"

const char *td_kind_name(uint32_t domain, char buf[16]) {
    return bh_metrics_kind_name(BH_DOMAIN_KIND(domain), buf);
}

/* ======================== String buffer ======================== */

void td_sb_printf(td_strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p != NULL && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return;
        b->p = np;
        b->cap = cap;
    }
}

void td_sb_append(td_strbuf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* ======================== Stats ======================== */

typedef struct report_ctx {
    td_server *s;
    td_strbuf *b;
    int json, first;
    uint64_t now;
} report_ctx;

static void stats_group(void *ctx, uint64_t key, uint32_t domain, const bh_track_counts *c) {
    report_ctx *r = ctx;
    char kb[16];
    const char *kind = td_kind_name(domain, kb);
    uint32_t device = BH_DOMAIN_DEVICE(domain);
    if (r->json) {
        td_sb_printf(
            r->b,
            "%s{\"pid\":%d,\"stream\":%u,\"name\":\"%s\",\"device\":%u,\"kind\":\"%s\",\"live\":%" PRIu64
            ",\"live_bytes\":%" PRIu64 ",\"peak_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64
            ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64 ",\"leaks\":%" PRIu64
            ",\"leaked_bytes\":%" PRIu64 "}",
            r->first ? "" : ",", (int)td_key_pid(key), td_key_stream(key), td_name_of(r->s, td_key_pid(key)),
            device, kind, c->live, c->live_bytes, c->peak_bytes, c->allocs, c->frees, c->unknown_frees,
            c->duplicate_allocs, c->leaks, c->leaked_bytes);
    } else {
        td_sb_printf(r->b,
                     "%8d %6u %-14.14s %6u %-8.8s %10" PRIu64 " %14" PRIu64 " %14" PRIu64 " %9" PRIu64
                     " %9" PRIu64 " %8" PRIu64 " %8" PRIu64 " %6" PRIu64 "\n",
                     (int)td_key_pid(key), td_key_stream(key), td_name_of(r->s, td_key_pid(key)), device,
                     kind, c->live, c->live_bytes, c->peak_bytes, c->allocs, c->frees, c->unknown_frees,
                     c->duplicate_allocs, c->leaks);
    }
    r->first = 0;
}

/* The latest leaks, oldest first: "leaks":[...],"leaks_listed":n (JSON only). */
static void render_leaks(td_server *s, td_strbuf *b) {
    uint64_t n = s->nleaks < TD_LEAKS_KEPT ? s->nleaks : TD_LEAKS_KEPT;
    td_sb_printf(b, "\"leaks\":[");
    for (uint64_t i = 0; i < n; i++) {
        const td_leak *l = &s->leaks[(s->nleaks - n + i) % TD_LEAKS_KEPT];
        char kb[16];
        td_sb_printf(
            b,
            "%s{\"pid\":%d,\"stream\":%u,\"name\":\"%s\",\"device\":%u,\"kind\":\"%s\",\"address\":%" PRIu64
            ",\"size\":%" PRIu64 ",\"age_s\":%.3f}",
            i ? "," : "", (int)l->pid, l->stream, l->name, BH_DOMAIN_DEVICE(l->domain),
            td_kind_name(l->domain, kb), l->address, l->size, (double)l->age_ms / 1000.0);
    }
    td_sb_printf(b, "],\"leaks_listed\":%" PRIu64 ",", n);
}

/* The addresses freed more often than allocated, worst first (the old
 * server's "Deallocation for unknown buffer", per address). */
static void render_overfreed(td_server *s, td_strbuf *b, int json) {
    bh_track_entry top[TD_OVERFREED_SHOWN];
    size_t n = bh_track_most_overfreed(s->track, top, TD_OVERFREED_SHOWN);
    if (json)
        td_sb_printf(b, "\"overfreed\":[");
    else if (n > 0)
        td_sb_printf(b, "freed more often than allocated:\n");
    for (size_t i = 0; i < n; i++) {
        const bh_track_entry *e = &top[i];
        char kb[16];
        pid_t pid = td_key_pid(e->client);
        if (json)
            td_sb_printf(b,
                         "%s{\"pid\":%d,\"stream\":%u,\"name\":\"%s\",\"device\":%u,\"kind\":\"%s\","
                         "\"address\":%" PRIu64 ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64 "}",
                         i ? "," : "", (int)pid, td_key_stream(e->client), td_name_of(s, pid),
                         BH_DOMAIN_DEVICE(e->device), td_kind_name(e->device, kb), e->address, e->allocs,
                         e->frees);
        else
            td_sb_printf(
                b, "  pid %d device %u %s address 0x%" PRIx64 ": allocated %" PRIu64 ", freed %" PRIu64 "\n",
                (int)pid, BH_DOMAIN_DEVICE(e->device), td_kind_name(e->device, kb), e->address, e->allocs,
                e->frees);
    }
    if (json)
        td_sb_printf(b, "]");
}

void td_render_stats(td_server *s, td_strbuf *b, int json) {
    bh_track_counts t;
    bh_track_totals(s->track, UINT64_MAX, UINT32_MAX, &t);
    report_ctx r = {s, b, json, 1, td_now_ms()};
    if (json) {
        td_sb_printf(b,
                     "{\"totals\":{\"live\":%" PRIu64 ",\"live_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
                     ",\"frees\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
                     ",\"leaks\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64 "},",
                     t.live, t.live_bytes, t.allocs, t.frees, t.unknown_frees, t.duplicate_allocs, t.leaks,
                     t.leaked_bytes);
        td_sb_printf(b,
                     "\"server\":{\"clients_connected\":%" PRIu64 ",\"connections\":%" PRIu64
                     ",\"reporter_connections\":%" PRIu64 ",\"rejected_peers\":%" PRIu64
                     ",\"malformed\":%" PRIu64 ",\"resyncs\":%" PRIu64 ",\"compat_records\":%" PRIu64
                     ",\"unsupported_records\":%" PRIu64 ",\"limit_disconnects\":%" PRIu64 "},\"clients\":[",
                     td_clients_connected(s), s->connections, s->reporter_connections, s->rejected,
                     s->malformed, s->resyncs, s->compat_records, s->unsupported_records,
                     s->limit_disconnects);
        bh_track_each_group(s->track, stats_group, &r);
        td_sb_printf(b, "],");
        render_leaks(s, b);
        render_overfreed(s, b, 1);
        td_sb_printf(b, "}\n");
        return;
    }
    td_sb_printf(b, "%8s %6s %-14s %6s %-8s %10s %14s %14s %9s %9s %8s %8s %6s\n", "pid", "stream", "name",
                 "device", "kind", "live", "live bytes", "peak bytes", "allocs", "frees", "unknown", "dup",
                 "leaks");
    bh_track_each_group(s->track, stats_group, &r);
    td_sb_printf(b,
                 "total: %" PRIu64 " live (%" PRIu64 " bytes), %" PRIu64 " allocs, %" PRIu64
                 " frees, %" PRIu64 " unknown FREEs, %" PRIu64 " duplicate ALLOCs, %" PRIu64
                 " leaks (%" PRIu64 " bytes)\n",
                 t.live, t.live_bytes, t.allocs, t.frees, t.unknown_frees, t.duplicate_allocs, t.leaks,
                 t.leaked_bytes);
    td_sb_printf(b,
                 "server: %" PRIu64 " connections, %" PRIu64 " rejected peers, %" PRIu64
                 " malformed, %" PRIu64 " resyncs, %" PRIu64 " compat records\n",
                 s->connections, s->rejected, s->malformed, s->resyncs, s->compat_records);
    render_overfreed(s, b, 0);
}

/* ======================== Dump ======================== */

typedef struct dump_ctx {
    report_ctx r;
    uint64_t skip, limit, total; /* paging: entries to pass over, to print; live entries seen */
    uint64_t address;            /* history: the address asked about */
} dump_ctx;

static void dump_entry(void *ctx, const bh_track_entry *e) {
    dump_ctx *d = ctx;
    report_ctx *r = &d->r;
    if (d->total++ < d->skip || d->total > d->skip + d->limit)
        return;
    double age = (double)(r->now - e->since) / 1000.0;
    char kb[16];
    const char *kind = td_kind_name(e->device, kb);
    if (r->json)
        td_sb_printf(r->b,
                     "%s{\"pid\":%d,\"stream\":%u,\"device\":%u,\"kind\":\"%s\",\"address\":%" PRIu64
                     ",\"size\":%" PRIu64 ",\"age_s\":%.3f}",
                     r->first ? "" : ",", (int)td_key_pid(e->client), td_key_stream(e->client),
                     BH_DOMAIN_DEVICE(e->device), kind, e->address, e->size, age);
    else
        td_sb_printf(r->b, "%8d %6u %6u %-8.8s 0x%012" PRIx64 " %14" PRIu64 " %10.3f\n",
                     (int)td_key_pid(e->client), td_key_stream(e->client), BH_DOMAIN_DEVICE(e->device), kind,
                     e->address, e->size, age);
    r->first = 0;
}

static void render_dump(td_server *s, td_strbuf *b, int json, uint64_t offset, uint64_t limit) {
    dump_ctx d = {{s, b, json, 1, td_now_ms()}, offset, limit, 0, 0};
    if (json)
        td_sb_printf(b, "{\"live\":[");
    else
        td_sb_printf(b, "%8s %6s %6s %-8s %14s %14s %10s\n", "pid", "stream", "device", "kind", "address",
                     "size", "age (s)");
    bh_track_each_entry(s->track, 1, dump_entry, &d);
    if (json)
        td_sb_printf(b, "],\"offset\":%" PRIu64 ",\"total\":%" PRIu64 "}\n", offset, d.total);
}

void td_render_dump(td_server *s, td_strbuf *b, int json) { render_dump(s, b, json, 0, UINT64_MAX); }

void td_render_dump_page(td_server *s, td_strbuf *b, uint64_t offset, uint64_t limit) {
    render_dump(s, b, 1, offset, limit);
}

/* ======================== History ======================== */

static void history_entry(void *ctx, const bh_track_entry *e) {
    dump_ctx *d = ctx;
    if (e->address != d->address)
        return;
    char kb[16];
    pid_t pid = td_key_pid(e->client);
    if (d->r.json)
        td_sb_printf(d->r.b,
                     "%s{\"pid\":%d,\"stream\":%u,\"name\":\"%s\",\"device\":%u,\"kind\":\"%s\",\"live\":%s,"
                     "\"size\":%" PRIu64 ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64 "}",
                     d->r.first ? "" : ",", (int)pid, td_key_stream(e->client), td_name_of(d->r.s, pid),
                     BH_DOMAIN_DEVICE(e->device), td_kind_name(e->device, kb), e->live ? "true" : "false",
                     e->size, e->allocs, e->frees);
    else
        td_sb_printf(d->r.b, "%8d %6u %-14.14s %6u %-8.8s %4s %14" PRIu64 " %9" PRIu64 " %9" PRIu64 "\n",
                     (int)pid, td_key_stream(e->client), td_name_of(d->r.s, pid), BH_DOMAIN_DEVICE(e->device),
                     td_kind_name(e->device, kb), e->live ? "yes" : "no", e->size, e->allocs, e->frees);
    d->r.first = 0;
}

void td_render_history(td_server *s, td_strbuf *b, uint64_t address, int json) {
    dump_ctx d = {{s, b, json, 1, td_now_ms()}, 0, 0, 0, address};
    if (json)
        td_sb_printf(b, "{\"address\":%" PRIu64 ",\"entries\":[", address);
    else
        td_sb_printf(b, "address 0x%" PRIx64 "\n%8s %6s %-14s %6s %-8s %4s %14s %9s %9s\n", address, "pid",
                     "stream", "name", "device", "kind", "live", "size", "allocs", "frees");
    bh_track_each_entry(s->track, 0, history_entry, &d);
    if (json)
        td_sb_printf(b, "]}\n");
}

/* ======================== Summary ======================== */

int td_write_summary(td_server *s) {
    td_strbuf b = {0};
    td_render_stats(s, &b, 1);
    FILE *f = fopen(s->summary_path, "w");
    int ok = f != NULL && b.p != NULL && fwrite(b.p, 1, b.len, f) == b.len;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    free(b.p);
    if (!ok)
        td_log(s, "cannot write summary to %s", s->summary_path);
    return ok ? 0 : -1;
}
