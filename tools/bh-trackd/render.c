/*
 * render.c - the one renderer of bh-trackd's view: the stats and dump
 * replies (text and JSON), the --summary file, the DUMP_REMAINING log, and
 * how a domain is shown (device and memory kind); summary.c writes what it
 * renders for --summary. Every other output (HTTP,
 * metrics) renders through here too, so one place knows each field's name
 * and format.
 *
 * Owns: the growable string buffer (with a size limit, so a reply always
 * fits one frame), the text and JSON layouts (docs/protocol.md, "Statistics
 * JSON"), and reading an address or
 * count back (decimal or 0x hex, as printed).
 * Must never: change the tracker or the server's counters, print anything
 * the HELLO name sanitising (native.c) has not made printable.
 */
#include <ctype.h>
#include <errno.h>
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

static int reserve(td_strbuf *b, size_t n) {
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
    char *np = realloc(b->p, cap);
    if (np == NULL) {
        b->failed = 1;
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

/* Formats straight into the spare room, and a second time only when the
 * text did not fit and the buffer grew: a row is several calls, and
 * measuring each one first (a vsnprintf to NULL) cost as much as writing
 * it. Refused, the buffer reads as before (its text ends at len). */
int td_sb_printf(td_strbuf *b, const char *fmt, ...) {
    if (reserve(b, 0) != 0)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    int fits = n >= 0 && (size_t)n < b->cap - b->len;
    if (n < 0 || (b->limit != 0 && b->len + (size_t)n > b->limit) || (!fits && reserve(b, (size_t)n) != 0)) {
        b->p[b->len] = '\0';
        return -1;
    }
    if (!fits) {
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

/* ======================== Numbers ======================== */

int td_parse_u64(const char *v, uint64_t *out) {
    /* Not strtoull's base 0: "010" would be octal 8, and an address asked
     * about must be the one answered for. Nor its leading blanks and sign,
     * nor its clamping of an overflow to the largest value. */
    int hex = v != NULL && v[0] == '0' && (v[1] == 'x' || v[1] == 'X');
    const char *digits = v != NULL ? v + (hex ? 2 : 0) : NULL;
    if (digits == NULL || !(hex ? isxdigit((unsigned char)*digits) : isdigit((unsigned char)*digits)))
        return -1;
    if (hex && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X'))
        return -1; /* base 16 takes a prefix of its own: "0x0x5" read 5 */
    char *end;
    errno = 0;
    unsigned long long x = strtoull(digits, &end, hex ? 16 : 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

/* ======================== Domains ======================== */

const char *td_domain_text(char *buf, size_t cap, uint32_t domain) {
    char k[16];
    snprintf(buf, cap, "device %u kind %s", BH_DOMAIN_DEVICE(domain), td_kind_name(domain, k));
    return buf;
}

void td_render_domain(td_strbuf *b, int json, uint32_t domain) {
    char k[16];
    if (json)
        td_sb_printf(b, "\"device\":%u,\"kind\":\"%s\"", BH_DOMAIN_DEVICE(domain), td_kind_name(domain, k));
    else
        td_sb_printf(b, "%6u %-8.8s", BH_DOMAIN_DEVICE(domain), td_kind_name(domain, k));
}

/* ======================== Stats ======================== */

typedef struct report_ctx {
    td_server *s;
    td_strbuf *b;
    int json, first, full; /* full: a row did not fit, the rest are only counted */
    uint64_t now, omitted;
} report_ctx;

/* One row into r->b, all or nothing: past the limit it is counted instead. */
static void row(report_ctx *r, void (*fill)(report_ctx *r, const void *item), const void *item) {
    if (r->full) { /* formatting every row past the limit only to drop it cost a stats request O(groups) */
        r->omitted++;
        return;
    }
    size_t mark = r->b->len, limit = r->b->limit;
    r->b->limit = 0; /* checked for the whole row below */
    fill(r, item);
    r->b->limit = limit;
    if (r->b->failed || (limit != 0 && r->b->len > limit - 2)) { /* keep room for the closing brackets */
        r->b->len = mark;
        if (r->b->p != NULL)
            r->b->p[mark] = '\0';
        r->omitted++;
        r->full = 1;
        return;
    }
    r->first = 0;
}

typedef struct group_item {
    uint64_t key;
    uint32_t device;
    const bh_track_counts *c;
} group_item;

/* A count a loss made a lower bound: "≥N" in a column of width w. */
static void cell(td_strbuf *b, int w, uint64_t v, int at_least) {
    char n[32];
    snprintf(n, sizeof(n), "%s%" PRIu64, at_least ? "\u2265" : "", v);
    td_sb_printf(b, " %*s", w + (at_least ? 2 : 0), n); /* "≥" is 3 bytes, 1 column */
}

/* "at least " before a count a loss made a lower bound (text lines). */
static const char *atl(const bh_track_counts *c) { return c->inexact & BH_TRACK_AT_LEAST ? "at least " : ""; }

/* What a loss made uncertain, in JSON: "at_least" (allocs, frees, unknown
 * FREEs, duplicate ALLOCs and peak are lower bounds), "unsynced" (the live
 * set waits for a resync). */
static void inexact_json(td_strbuf *b, uint32_t inexact) {
    td_sb_printf(b, ",\"at_least\":%s,\"unsynced\":%s", inexact & BH_TRACK_AT_LEAST ? "true" : "false",
                 inexact & BH_TRACK_UNSYNCED ? "true" : "false");
}

/* A row's process. JSON: "pid":N,"stream":S, then ,"name":"X" (named) and
 * ,"unverified":true when N is only what the client stated (peer.c). Text:
 * the pid ("N*" when unverified) and stream columns, then the name's. */
static void who(td_server *s, td_strbuf *b, int json, uint64_t client, int named) {
    pid_t pid = td_key_pid(client);
    if (json) {
        td_sb_printf(b, "\"pid\":%d,\"stream\":%u", (int)td_shown_pid(s, pid), td_key_stream(client));
        if (named)
            td_sb_printf(b, ",\"name\":\"%s\"", td_name_of(s, pid));
        if (td_unverified(pid))
            td_sb_printf(b, ",\"unverified\":true");
        return;
    }
    char t[16];
    td_sb_printf(b, "%8s %10u ", td_pid_text(s, pid, t), td_key_stream(client));
    if (named)
        td_sb_printf(b, "%-14.14s ", td_name_of(s, pid));
}

static void fill_group(report_ctx *r, const void *item) {
    const group_item *g = item;
    const bh_track_counts *c = g->c;
    int al = (c->inexact & BH_TRACK_AT_LEAST) != 0;
    if (r->json) {
        td_sb_printf(r->b, "%s{", r->first ? "" : ",");
        who(r->s, r->b, 1, g->key, 1);
        td_sb_printf(r->b, ",");
        td_render_domain(r->b, 1, g->device);
        td_sb_printf(r->b,
                     ",\"live\":%" PRIu64 ",\"live_bytes\":%" PRIu64 ",\"peak_bytes\":%" PRIu64
                     ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64 ",\"unknown_frees\":%" PRIu64
                     ",\"duplicate_allocs\":%" PRIu64 ",\"leaks\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64
                     ",\"unverified_leaks\":%" PRIu64,
                     c->live, c->live_bytes, c->peak_bytes, c->allocs, c->frees, c->unknown_frees,
                     c->duplicate_allocs, c->leaks, c->leaked_bytes, c->unverified_leaks);
        inexact_json(r->b, c->inexact);
        td_sb_printf(r->b, "}");
    } else {
        who(r->s, r->b, 0, g->key, 1);
        td_render_domain(r->b, 0, g->device);
        td_sb_printf(r->b, " %10" PRIu64 " %14" PRIu64, c->live, c->live_bytes);
        cell(r->b, 14, c->peak_bytes, al);
        cell(r->b, 9, c->allocs, al);
        cell(r->b, 9, c->frees, al);
        cell(r->b, 8, c->unknown_frees, al);
        cell(r->b, 8, c->duplicate_allocs, al);
        td_sb_printf(r->b, " %6" PRIu64 "%s\n", c->leaks,
                     c->inexact & BH_TRACK_UNSYNCED ? " (unsynced)" : "");
    }
}

/* One group's row; stops the walk once the reply is full (the rest are
 * counted, never formatted). */
static int stats_group(void *ctx, uint64_t key, uint32_t device, const bh_track_counts *c) {
    report_ctx *r = ctx;
    group_item g = {key, device, c};
    row(r, fill_group, &g);
    return r->full;
}

/* Every group (gone processes' until they are retired into "(departed)")
 * under the limit, chosen in the fair order (fair.c): the rows a full reply
 * leaves out are the least useful ones of processes with many, never all of
 * a process that came later or holds little (0.3.1 listed first-seen first
 * and cut the newest); shown biggest first. */
static void render_groups(td_server *s, report_ctx *r, size_t limit) {
    r->b->limit = limit != 0 ? limit : TD_REPLY_LIMIT;
    r->omitted += td_each_group_shown(s, r->b, r->json ? "," : "", stats_group, r);
    r->b->limit = 0;
}

/* The latest leaks, oldest first. JSON: "leaks":[...],"leaks_listed":n, the
 * latest TD_LEAKS_KEPT; text: a "leaked" block of the latest TD_LEAKS_SHOWN
 * (bounded as the over-freed list is), none when nothing leaked. */
static void render_leaks(td_server *s, td_strbuf *b, int json) {
    uint64_t kept = json ? TD_LEAKS_KEPT : TD_LEAKS_SHOWN;
    uint64_t n = s->nleaks < kept ? s->nleaks : kept;
    if (json)
        td_sb_printf(b, "\"leaks\":[");
    else if (n > 0)
        td_sb_printf(b, "leaked (live when their process was gone; the latest %" PRIu64 " of %" PRIu64 "):\n",
                     n, s->nleaks);
    for (uint64_t i = 0; i < n; i++) {
        const td_leak *l = &s->leaks[(s->nleaks - n + i) % TD_LEAKS_KEPT];
        if (json) {
            td_sb_printf(b, "%s{\"pid\":%d,\"stream\":%u,\"name\":\"%s\"%s,", i ? "," : "", (int)l->pid,
                         l->stream, l->name, l->unverified ? ",\"unverified\":true" : "");
            td_render_domain(b, 1, l->domain);
            td_sb_printf(b, ",\"address\":%" PRIu64 ",\"size\":%" PRIu64 ",\"age_s\":%.3f}", l->address,
                         l->size, (double)l->age_ms / 1000.0);
        } else {
            char dom[64];
            td_sb_printf(
                b, "  pid %d%s stream %u %s %s address 0x%" PRIx64 ": size %" PRIu64 ", live %.3f s\n",
                (int)l->pid, l->unverified ? "*" : "", l->stream, l->name,
                td_domain_text(dom, sizeof(dom), l->domain), l->address, l->size, (double)l->age_ms / 1000.0);
        }
    }
    if (json)
        td_sb_printf(b, "],\"leaks_listed\":%" PRIu64 ",", n);
}

/* The addresses freed while not live, worst first (the old server's
 * "Deallocation for unknown buffer", per address). Not frees - allocs: after
 * a loss that difference blamed correct programs. */
static void render_overfreed(td_server *s, td_strbuf *b, int json) {
    bh_track_entry top[TD_OVERFREED_SHOWN];
    size_t n = bh_track_most_overfreed(s->track, top, TD_OVERFREED_SHOWN);
    if (json)
        td_sb_printf(b, "\"overfreed\":[");
    else if (n > 0)
        td_sb_printf(b, "freed while not live (over-freed):\n");
    for (size_t i = 0; i < n; i++) {
        const bh_track_entry *e = &top[i];
        if (json) {
            td_sb_printf(b, "%s{", i ? "," : "");
            who(s, b, 1, e->client, 1);
            td_sb_printf(b, ",");
            td_render_domain(b, 1, e->device);
            td_sb_printf(b,
                         ",\"address\":%" PRIu64 ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64
                         ",\"unknown_frees\":%" PRIu64 ",\"at_least\":%s}",
                         e->address, e->allocs, e->frees, e->unknown_frees,
                         e->inexact & BH_TRACK_AT_LEAST ? "true" : "false");
        } else {
            char dom[64], t[16];
            const char *al = e->inexact & BH_TRACK_AT_LEAST ? "at least " : "";
            td_sb_printf(b,
                         "  pid %s %s address 0x%" PRIx64 ": allocated %s%" PRIu64 ", freed %s%" PRIu64
                         " (%" PRIu64 " while not live)\n",
                         td_pid_text(s, td_key_pid(e->client), t),
                         td_domain_text(dom, sizeof(dom), e->device), e->address, al, e->allocs, al, e->frees,
                         e->unknown_frees);
        }
    }
    if (json)
        td_sb_printf(b, "]");
}

typedef struct loss_item {
    uint64_t key;
    const bh_track_loss *l;
} loss_item;

static void fill_loss(report_ctx *r, const void *item) {
    const loss_item *x = item;
    const bh_track_loss *l = x->l;
    pid_t pid = td_key_pid(x->key);
    char t[16];
    if (r->json) {
        td_sb_printf(r->b, "%s{", r->first ? "" : ",");
        who(r->s, r->b, 1, x->key, 1);
        td_sb_printf(r->b,
                     ",\"lost\":%" PRIu64 ",\"resyncs\":%" PRIu64 ",\"unsynced\":%" PRIu64
                     ",\"history_evictions\":%" PRIu64 "}",
                     l->lost, l->resyncs, l->unsynced, l->evicted);
    } else
        td_sb_printf(r->b,
                     "  pid %s stream %u %s: %" PRIu64 " events lost, %" PRIu64 " resyncs, %" PRIu64
                     " events missing until the next resync, %" PRIu64 " history records evicted\n",
                     td_pid_text(r->s, pid, t), td_key_stream(x->key), td_name_of(r->s, pid), l->lost,
                     l->resyncs, l->unsynced, l->evicted);
}

/* Streams that lost events, resynced or had history records evicted. */
static void loss_row(void *ctx, uint64_t key, const bh_track_loss *l) {
    loss_item x = {key, l};
    if (l->lost || l->resyncs || l->unsynced || l->evicted)
        row(ctx, fill_loss, &x);
}

/* Per stream: "streams":[...],"omitted_streams":n (JSON) or a "losses:"
 * block (text), under the reply limit. */
static void render_losses(td_server *s, td_strbuf *b, int json, size_t limit) {
    report_ctx r = {s, b, json, 1, 0, 0, 0};
    size_t mark = b->len;
    td_sb_printf(b, json ? "\"streams\":[" : "losses (per stream):\n");
    b->limit = limit != 0 ? limit : TD_REPLY_LIMIT;
    bh_track_each_stream(s->track, loss_row, &r);
    b->limit = 0;
    if (json)
        td_sb_printf(b, "],\"omitted_streams\":%" PRIu64 ",", r.omitted);
    else if (r.first && r.omitted == 0 && b->p != NULL) { /* nothing lost anywhere: no block */
        b->len = mark;
        b->p[mark] = '\0';
    } else if (r.omitted > 0)
        td_sb_printf(b, "  (%" PRIu64 " more streams not shown: reply limit)\n", r.omitted);
}

/* Processes gone whose live allocations are still being dropped (in
 * slices, liveness.c), oldest first, the first TD_GOING_SHOWN: what each has
 * still to drop counts as live in every row and total meanwhile. JSON:
 * "going":[...],"processes_going":n; text: a "going" block, none when no
 * drop is under way. */
static void render_going(td_server *s, td_strbuf *b, int json) {
    uint64_t n = 0;
    if (json)
        td_sb_printf(b, "\"going\":[");
    else if (s->going != NULL)
        td_sb_printf(b, "going (gone, their live allocations being dropped as leaks):\n");
    for (const td_going *g = s->going; g != NULL; g = g->next, n++) {
        if (n >= TD_GOING_SHOWN)
            continue;
        uint64_t left = bh_track_process_doomed(s->track, (uint32_t)g->pid);
        char t[16];
        if (json)
            td_sb_printf(b,
                         "%s{\"pid\":%d,\"name\":\"%s\"%s,\"left\":%" PRIu64 ",\"total\":%" PRIu64
                         ",\"leaks\":%" PRIu64 "}",
                         n ? "," : "", (int)td_shown_pid(s, g->pid), td_name_of(s, g->pid),
                         td_unverified(g->pid) ? ",\"unverified\":true" : "", left, g->total, g->leaks);
        else
            td_sb_printf(b, "  pid %s %s: %" PRIu64 " of %" PRIu64 " live allocations still to drop\n",
                         td_pid_text(s, g->pid, t), td_name_of(s, g->pid), left, g->total);
    }
    if (json)
        td_sb_printf(b, "],\"processes_going\":%" PRIu64 ",", n);
    else if (n > TD_GOING_SHOWN)
        td_sb_printf(b, "  (%" PRIu64 " more processes being dropped)\n", n - TD_GOING_SHOWN);
}

void td_render_stats(td_server *s, td_strbuf *b, int json, size_t limit) {
    bh_track_counts t;
    bh_track_totals(s->track, UINT64_MAX, UINT32_MAX, &t);
    bh_track_loss loss;
    bh_track_process_loss(s->track, UINT32_MAX, &loss);
    uint64_t ev_clean, ev_found;
    bh_track_history_evictions(s->track, &ev_clean, &ev_found);
    report_ctx r = {s, b, json, 1, 0, td_now_ms(), 0};
    if (json) {
        td_sb_printf(b,
                     "{\"totals\":{\"live\":%" PRIu64 ",\"live_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
                     ",\"frees\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
                     ",\"leaks\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64 ",\"unverified_leaks\":%" PRIu64
                     ",\"lost\":%" PRIu64 ",\"history_evictions\":%" PRIu64
                     ",\"history_evictions_findings\":%" PRIu64,
                     t.live, t.live_bytes, t.allocs, t.frees, t.unknown_frees, t.duplicate_allocs, t.leaks,
                     t.leaked_bytes, t.unverified_leaks, loss.lost, ev_clean + ev_found, ev_found);
        inexact_json(b, t.inexact);
        td_sb_printf(b, "},");
        td_tt_render(s, b, 1);
        td_sb_printf(b,
                     "\"server\":{\"clients_connected\":%" PRIu64 ",\"connections\":%" PRIu64
                     ",\"open_connections\":%" PRIu64 ",\"reporter_connections\":%" PRIu64
                     ",\"rejected_peers\":%" PRIu64 ",\"refused_connections\":%" PRIu64
                     ",\"timeouts\":%" PRIu64 ",\"malformed\":%" PRIu64 ",\"resyncs\":%" PRIu64
                     ",\"compat_records\":%" PRIu64 ",\"compat_ignored\":%" PRIu64
                     ",\"unsupported_records\":%" PRIu64 ",\"limit_disconnects\":%" PRIu64
                     ",\"output_overflows\":%" PRIu64 ",\"processes_gone\":%" PRIu64
                     ",\"passed_fds_refused\":%" PRIu64 ",\"passed_fds_parked\":%" PRIu64
                     ",\"passed_fds_left_open\":%" PRIu64 ",\"summaries_skipped\":%" PRIu64
                     ",\"unverified_peers\":%" PRIu64 ",\"resyncs_cut\":%" PRIu64 ",\"drop_slices\":%" PRIu64
                     ",\"rings_attached\":%" PRIu64 ",\"rings_refused\":%" PRIu64 ",\"ring_records\":%" PRIu64
                     ",\"ring_events_lost\":%" PRIu64 "},",
                     td_clients_connected(s), s->connections, s->nclients, s->reporter_connections,
                     s->rejected, s->refused, s->timeouts, s->malformed, s->resyncs, s->compat_records,
                     s->compat_ignored, s->unsupported_records, s->limit_disconnects, s->output_overflows,
                     s->processes_gone, s->fds_refused, s->closes_parked, s->closes_lost,
                     s->summaries_skipped, s->unverified_peers, s->resyncs_cut, s->drop_slices,
                     s->rings_attached, s->rings_refused, s->ring_records, s->ring_events_lost);
        render_going(s, b, 1);
        td_sb_printf(b, "\"clients\":[");
        render_groups(s, &r, limit);
        td_sb_printf(b, "],\"omitted_clients\":%" PRIu64 ",", r.omitted);
        render_losses(s, b, 1, limit);
        render_leaks(s, b, 1);
        render_overfreed(s, b, 1);
        td_sb_printf(b, "}\n");
        return;
    }
    td_sb_printf(b, "%8s %10s %-14s %6s %-8s %10s %14s %14s %9s %9s %8s %8s %6s\n", "pid", "stream", "name",
                 "device", "kind", "live", "live bytes", "peak bytes", "allocs", "frees", "unknown", "dup",
                 "leaks");
    render_groups(s, &r, limit);
    if (r.omitted > 0)
        td_sb_printf(b, "(%" PRIu64 " more rows not shown: reply limit)\n", r.omitted);
    if (s->unverified_peers > 0)
        td_sb_printf(b, "(* unverified: the pid its client stated; this server cannot see that process, "
                        "see docs/deployment.md)\n");
    td_sb_printf(b,
                 "total: %" PRIu64 " live (%" PRIu64 " bytes%s), %s%" PRIu64 " allocs, %s%" PRIu64
                 " frees, %s%" PRIu64 " unknown FREEs, %s%" PRIu64 " duplicate ALLOCs, %" PRIu64
                 " leaks (%" PRIu64 " bytes), %" PRIu64 " unverified leaks; %" PRIu64 " events lost, %" PRIu64
                 " history records evicted (%" PRIu64 " with findings)\n",
                 t.live, t.live_bytes, t.inexact & BH_TRACK_UNSYNCED ? ", awaiting a resync" : "", atl(&t),
                 t.allocs, atl(&t), t.frees, atl(&t), t.unknown_frees, atl(&t), t.duplicate_allocs, t.leaks,
                 t.leaked_bytes, t.unverified_leaks, loss.lost, ev_clean + ev_found, ev_found);
    if (s->compat)
        td_tt_render(s, b, 0);
    td_sb_printf(b,
                 "server: %" PRIu64 " connections (%" PRIu64 " open), %" PRIu64 " rejected peers, %" PRIu64
                 " refused, %" PRIu64 " timed out, %" PRIu64 " malformed, %" PRIu64 " resyncs (%" PRIu64
                 " cut short), %" PRIu64 " compat records, %" PRIu64 " summaries skipped, %" PRIu64
                 " passed descriptors left open; %" PRIu64 " rings attached (%" PRIu64 " refused), %" PRIu64
                 " ring records, %" PRIu64 " ring events lost\n",
                 s->connections, s->nclients, s->rejected, s->refused, s->timeouts, s->malformed, s->resyncs,
                 s->resyncs_cut, s->compat_records, s->summaries_skipped, s->closes_lost, s->rings_attached,
                 s->rings_refused, s->ring_records, s->ring_events_lost);
    render_going(s, b, 0);
    render_losses(s, b, 0, limit);
    render_leaks(s, b, 0);
    render_overfreed(s, b, 0);
}

/* ======================== Dump ======================== */

static void fill_entry(report_ctx *r, const void *item) {
    const bh_track_entry *e = item;
    double age = (double)(r->now - e->since) / 1000.0;
    if (r->json) {
        td_sb_printf(r->b, "%s{", r->first ? "" : ",");
        who(r->s, r->b, 1, e->client, 0);
        td_sb_printf(r->b, ",");
        td_render_domain(r->b, 1, e->device);
        td_sb_printf(r->b, ",\"address\":%" PRIu64 ",\"size\":%" PRIu64 ",\"age_s\":%.3f}", e->address,
                     e->size, age);
    } else {
        who(r->s, r->b, 0, e->client, 0);
        td_render_domain(r->b, 0, e->device);
        td_sb_printf(r->b, " 0x%012" PRIx64 " %14" PRIu64 " %10.3f\n", e->address, e->size, age);
    }
}

typedef struct dump_ctx {
    report_ctx r;
    uint64_t want, shown; /* paging: rows asked for, rows that fit */
} dump_ctx;

/* Stops the walk when the page is full or the reply is (the rest are
 * counted, not walked). */
static int dump_entry(void *ctx, const bh_track_entry *e) {
    dump_ctx *d = ctx;
    uint64_t omitted = d->r.omitted;
    row(&d->r, fill_entry, e);
    if (d->r.omitted != omitted)
        return 1;
    return ++d->shown == d->want;
}

static void render_dump(td_server *s, td_strbuf *b, int json, uint64_t offset, uint64_t count, size_t limit) {
    bh_track_counts t;
    bh_track_totals(s->track, UINT64_MAX, UINT32_MAX, &t); /* total without walking the live set */
    uint64_t want = offset < t.live ? (count < t.live - offset ? count : t.live - offset) : 0;
    dump_ctx d = {{s, b, json, 1, 0, td_now_ms(), 0}, want, 0};
    if (json)
        td_sb_printf(b, "{\"live\":[");
    else
        td_sb_printf(b, "%8s %10s %6s %-8s %14s %14s %10s\n", "pid", "stream", "device", "kind", "address",
                     "size", "age (s)");
    b->limit = limit != 0 ? limit : TD_REPLY_LIMIT;
    if (want > 0)
        bh_track_each_entry(s->track, offset, dump_entry, &d);
    b->limit = 0;
    uint64_t omitted = want - d.shown;
    if (json)
        td_sb_printf(b, "],\"omitted\":%" PRIu64 ",\"offset\":%" PRIu64 ",\"total\":%" PRIu64 "}\n", omitted,
                     offset, t.live);
    else if (omitted > 0)
        td_sb_printf(b, "(%" PRIu64 " more live allocations not shown: reply limit)\n", omitted);
}

void td_render_dump(td_server *s, td_strbuf *b, int json, size_t limit) {
    render_dump(s, b, json, 0, UINT64_MAX, limit);
}

void td_render_dump_page(td_server *s, td_strbuf *b, uint64_t offset, uint64_t limit) {
    render_dump(s, b, 1, offset, limit, 0);
}

/* ======================== History ======================== */

static void fill_history(report_ctx *r, const void *item) {
    const bh_track_entry *e = item;
    if (r->json) {
        td_sb_printf(r->b, "%s{", r->first ? "" : ",");
        who(r->s, r->b, 1, e->client, 1);
        td_sb_printf(r->b, ",");
        td_render_domain(r->b, 1, e->device);
        td_sb_printf(r->b,
                     ",\"live\":%s,\"size\":%" PRIu64 ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64
                     ",\"unknown_frees\":%" PRIu64 ",\"at_least\":%s}",
                     e->live ? "true" : "false", e->size, e->allocs, e->frees, e->unknown_frees,
                     e->inexact & BH_TRACK_AT_LEAST ? "true" : "false");
    } else {
        who(r->s, r->b, 0, e->client, 1);
        td_render_domain(r->b, 0, e->device);
        int al = (e->inexact & BH_TRACK_AT_LEAST) != 0;
        td_sb_printf(r->b, " %4s %14" PRIu64, e->live ? "yes" : "no", e->size);
        cell(r->b, 9, e->allocs, al);
        cell(r->b, 9, e->frees, al);
        cell(r->b, 8, e->unknown_frees, al);
        td_sb_printf(r->b, "\n");
    }
}

static void history_entry(void *ctx, const bh_track_entry *e) { row(ctx, fill_history, e); }

void td_render_history(td_server *s, td_strbuf *b, uint64_t address, int json) {
    report_ctx r = {s, b, json, 1, 0, td_now_ms(), 0};
    if (json)
        td_sb_printf(b, "{\"address\":%" PRIu64 ",\"entries\":[", address);
    else
        td_sb_printf(b, "address 0x%" PRIx64 "\n%8s %10s %-14s %6s %-8s %4s %14s %9s %9s %8s\n", address,
                     "pid", "stream", "name", "device", "kind", "live", "size", "allocs", "frees", "unknown");
    /* One (client, device) entry per group at most, and the bounded history:
     * still more than one frame can carry, so the rows stop at the limit. */
    b->limit = TD_REPLY_LIMIT;
    bh_track_each_at(s->track, address, history_entry, &r);
    b->limit = 0;
    if (json)
        td_sb_printf(b, "],\"omitted\":%" PRIu64 "}\n", r.omitted);
    else if (r.omitted > 0)
        td_sb_printf(b, "(%" PRIu64 " more entries not shown: reply limit)\n", r.omitted);
}
