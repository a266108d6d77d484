/*
 * tt.c - TT-Metal's allocation records on the compat socket (--compat-tt;
 * docs/protocol.md, "TT-Metal compat records").
 *
 * Owns: the record size of each connection (72, 112 or 144 bytes: configured
 * with --compat-record-size, or detected from the first record, see
 * td_tt_detect), turning each record into the TT table's calls (tt_table.c:
 * the answers of TT's server) and the per-process tracker's (bh-trackd's own,
 * stricter findings), the RESPONSE to a QUERY, and the log of a
 * DUMP_REMAINING or DUMP_KERNELS (a bounded excerpt).
 * Must never: disconnect a client or refuse its connection (a TT client whose
 * socket is closed under it dies of SIGPIPE: a record this server cannot use
 * is logged, rate-limited, counted and ignored), key the per-process view by
 * the record's process_id (one published client leaves it 0 in FREE; the
 * peer's credentials are the key, or its connection when this server cannot
 * see its pid: peer.c), or guess a record size the bytes do not
 * prove.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "trackd.h"
#include "tt_table.h"

/* ======================== Record size ======================== */

/* The first record's header: a known type, zero padding (bytes 1-3, 17-19). */
static int header_ok(const uint8_t *r, size_t have) {
    if (have >= 1 && (r[0] == 0 || r[0] > BH_TT_LAST_KNOWN))
        return 0;
    for (size_t i = 1; i < 4 && i < have; i++)
        if (r[i] != 0)
            return 0;
    for (size_t i = 17; i < 20 && i < have; i++)
        if (r[i] != 0)
            return 0;
    return 1;
}

/* What a client sends has zero in the answer-only fields (at 72..111 in the
 * 112-byte layout, 72..127 in the 144-byte one), and every record a type of
 * 1..12. So byte 72 is the next record's type (non-zero) in a 72-byte stream
 * and zero in the others, and byte 112 the next record's type in a 112-byte
 * stream and zero in a 144-byte one; the record after the first must then
 * have a TT header too. At rest (the peer has nothing more in
 * flight) a stream ends on a boundary of its own size: 72 bytes then are one
 * 72-byte record, 112 one 112-byte record. */
int td_tt_detect(const uint8_t *p, size_t len, int at_rest) {
    if (!header_ok(p, len))
        return -1;
    if (len > 72 && p[72] != 0) /* and the second record must be one too */
        return header_ok(p + 72, len - 72) ? (int)BH_TT_RECORD : -1;
    if (len <= 72)
        return at_rest && len == 72 ? (int)BH_TT_RECORD : 0;
    if (len > 112 && p[112] != 0)
        return header_ok(p + 112, len - 112) ? (int)BH_TT_RECORD_112 : -1;
    if (len > 112)
        return BH_TT_RECORD_144;
    return at_rest && len == 112 ? (int)BH_TT_RECORD_112 : 0;
}

/* A record or stream this server cannot use: logged (rate-limited per
 * message), counted, ignored. The connection stays open. */
static void unusable(td_server *s, td_client *c, const char *why, unsigned value) {
    s->compat_ignored++;
    td_log(s, TD_WARN, "TT record from pid %d ignored: %s %u", (int)c->pid, why, value);
}

size_t td_tt_record_size(td_server *s, td_client *c, int at_rest) {
    if (c->tt_size != 0)
        return c->tt_size;
    int d = td_tt_detect(c->in, c->in_len, at_rest);
    /* A configured size is taken only where the bytes cannot tell (at rest,
     * still undecided); bytes that prove another size are never misread. */
    if (d == 0 && (s->tt_size == 0 || !at_rest))
        return 0;
    if (d < 0 || (s->tt_size != 0 && d > 0 && (unsigned)d != s->tt_size)) {
        /* Reading on would misparse: the rest of this connection is dropped, unread. */
        c->tt_size = TD_TT_UNREADABLE;
        unusable(s, c, "no TT records of a known size; its input is dropped, record size", (unsigned)d);
        return c->tt_size;
    }
    /* A peer whose pid we cannot see: keyed before its first record, showing
     * the pid that record states. */
    if (td_peer_identify(s, c, c->in_len >= 24 ? bh_get32(c->in + 20) : 0, 0) != 0) {
        c->tt_size = TD_TT_UNREADABLE;
        unusable(s, c, "out of memory keying it; its input is dropped, record size", (unsigned)d);
        return c->tt_size;
    }
    c->tt_size = s->tt_size != 0 ? s->tt_size : (unsigned)d;
    td_name_from_proc(s, c->pid); /* the records carry no name */
    if (s->tt_size == 0)
        td_log(s, TD_INFO, "pid %d (%s) sends %u-byte TT records", (int)c->pid, td_name_of(s, c->pid),
               c->tt_size);
    return c->tt_size;
}

/* ======================== Answers ======================== */

/* TT's answer for device, plus what native clients (the library's own
 * reporter) hold there: the tracker's device sums less the compat clients'
 * share. Each kind O(1). A device past what a domain holds (2^28) has no
 * native bytes: its domain would be another device's (2^28 + 5 read device
 * 5's). */
static void device_bytes(td_server *s, int32_t device, uint64_t b[16]) {
    uint64_t view[16];
    td_tt_device_bytes(s->tt_table, device, b);
    td_tt_view_bytes(s->tt_table, device, view);
    for (uint32_t k = 0; device >= 0 && device <= (int32_t)BH_DOMAIN_DEVICE(~0u) && k < 16; k++) {
        uint64_t all = bh_track_device_bytes(s->track, BH_DOMAIN((uint32_t)device, k), NULL);
        b[k] = bh__sat_add(b[k], all > view[k] ? all - view[k] : 0); /* all may be at the top already */
    }
}

static void reply_query(td_server *s, td_client *c, int32_t device) {
    uint8_t out[BH_TT_RECORD_144];
    uint64_t b[16];
    device_bytes(s, device, b);
    memset(out, 0, sizeof(out));
    bh_tt_record(out, BH_TT_RESPONSE, device, 0, 0, 0, 0, 0);
    bh_put64(out + 40, b[BH_MEM_DRAM]);
    bh_put64(out + 48, b[BH_MEM_L1]);
    /* RESPONSE has no SYSTEM_MEMORY counter: TT's server adds it into l1_small. */
    bh_put64(out + 56, bh__sat_add(b[BH_MEM_L1_SMALL], b[BH_MEM_SYSTEM]));
    bh_put64(out + 64, b[BH_MEM_TRACE]);
    if (c->tt_size == BH_TT_RECORD_144) {
        bh_put64(out + 72, b[BH_TT_KIND_CB]);
        bh_put64(out + 80, b[BH_TT_KIND_KERNEL]);
    }
    td_send_bytes(s, c, out, c->tt_size);
}

static void reply_device_info(td_server *s, td_client *c, int32_t device) {
    if (c->tt_size == BH_TT_RECORD) { /* TT's 72-byte server does not know this query either */
        unusable(s, c, "DEVICE_INFO_QUERY in a 72-byte record, type", BH_TT_DEVICE_INFO_QUERY);
        return;
    }
    uint8_t out[BH_TT_RECORD_144];
    memset(out, 0, sizeof(out));
    bh_tt_record(out, BH_TT_DEVICE_INFO_RESPONSE, device, 0, 0, 0, 0, 0);
    td_tt_device_info(s, device, c->tt_size, out);
    td_send_bytes(s, c, out, c->tt_size);
}

typedef struct dump_ctx {
    td_strbuf b;
} dump_ctx;

static int dump_one(void *ctx, const td_tt_entry *e) {
    static const char *const spaces[] = {"buffer", "cb", "kernel"};
    dump_ctx *d = ctx;
    char kb[16];
    return td_sb_printf(&d->b, "device %d %s %s id 0x%" PRIx64 " size %" PRIu64 " refs %u pid %d%s\n",
                        (int)e->device, spaces[e->space], td_kind_name(BH_DOMAIN(0, e->kind), kb), e->id,
                        e->size, e->refs, (int)e->owner, e->owner_gone ? " (gone)" : "") != 0;
}

/* DUMP_REMAINING (every entry) or DUMP_KERNELS: TT's server prints its table;
 * the log gets a bounded excerpt, at most one per TD_DUMP_INTERVAL_MS for all
 * clients together, decided before anything is rendered (0.3.1 rendered
 * 64 KiB for each 72-byte request, then let the log's rate limit drop it:
 * 786 KB of requests held the loop for 20 s). */
static void dump(td_server *s, td_client *c, int space, const char *what) {
    uint64_t now = td_now_ms();
    if (s->dumps_logged > 0 && now - s->last_dump_ms < TD_DUMP_INTERVAL_MS) {
        s->dumps_skipped++;
        return;
    }
    s->last_dump_ms = now;
    s->dumps_logged++;
    dump_ctx d = {{.limit = TD_LOG_DUMP_LIMIT}};
    td_tt_each(s->tt_table, space, dump_one, &d);
    td_log(s, TD_INFO, "%s requested by pid %d (%" PRIu64 " earlier requests not logged: one per %u s):\n%s",
           what, (int)c->pid, s->dumps_skipped, TD_DUMP_INTERVAL_MS / 1000, d.b.p ? d.b.p : "(none)\n");
    s->dumps_skipped = 0;
    free(d.b.p);
}

/* ======================== Records ======================== */

/* The per-process view's domain of a FREE of a buffer. buffer_type 1..4 is
 * the client's word: which of its buffers at that address it frees. 0 is
 * DRAM in the enum, but it is also what TT's clients (and the library's TT
 * reporter) send in every FREE, so it reads as "not given", as does a value
 * past the enum: then the live allocation at that address on that device,
 * of any kind, DRAM first; none live, the kind the history has it under (a
 * second FREE of what the process once held); never seen, kind "unknown"
 * (charging it to DRAM showed a DRAM allocation that never existed). Each
 * step O(1) per kind. */
static uint32_t free_domain(const td_server *s, uint64_t key, uint32_t device, uint64_t address,
                            uint8_t buffer_type) {
    if (buffer_type != 0 && bh_tt_kind_of(buffer_type) >= 0)
        return BH_DOMAIN(device, (uint32_t)bh_tt_kind_of(buffer_type));
    for (uint32_t t = 0; t < BH_TT_BUFFER_TYPES; t++)
        if (bh_track_is_live(s->track, key, BH_DOMAIN(device, bh_tt_kinds()[t]), address))
            return BH_DOMAIN(device, bh_tt_kinds()[t]);
    for (uint32_t t = 0; t < BH_TT_BUFFER_TYPES; t++)
        if (bh_track_has_history(s->track, key, BH_DOMAIN(device, bh_tt_kinds()[t]), address))
            return BH_DOMAIN(device, bh_tt_kinds()[t]);
    return BH_DOMAIN(device, BH_TT_KIND_UNKNOWN);
}

/* What the per-process view found beyond TT's answer (bh-trackd's own,
 * stricter findings, labelled as such). Its limits never disconnect a TT
 * client: the record stays out of that view only. */
static void per_process(td_server *s, td_client *c, bh_track_result r, uint32_t domain, uint64_t id,
                        int tt_unknown) {
    char dom[64];
    td_domain_text(dom, sizeof(dom), domain);
    switch (r) {
    case BH_TRACK_OK:
        return;
    case BH_TRACK_UNKNOWN_FREE:
        if (!tt_unknown)
            td_log(s, TD_WARN,
                   "bh-trackd (per process): pid %d freed %s 0x%" PRIx64 " that it did not allocate",
                   (int)c->pid, dom, id);
        return;
    case BH_TRACK_DUPLICATE_ALLOC:
        td_log(s, TD_WARN,
               "bh-trackd (per process): pid %d allocated %s 0x%" PRIx64
               " while it held it live (TT counts one more reference)",
               (int)c->pid, dom, id);
        return;
    default:
        s->compat_ignored++;
        td_log(s, TD_WARN,
               "bh-trackd (per process): pid %d over a limit at %s 0x%" PRIx64 "; not in its view",
               (int)c->pid, dom, id);
        return;
    }
}

/* ALLOC, CB_ALLOC, KERNEL_LOAD: TT's table, then the per-process view. */
static void on_alloc(td_server *s, td_client *c, int32_t device, uint32_t space, uint32_t kind,
                     const uint8_t *r) {
    uint64_t id = bh_get64(r + 24), size = bh_get64(r + 8), now = td_now_ms();
    int kept = td_tt_alloc(s->tt_table, device, space, id, size, kind, c->pid, now);
    if (kept == TD_TT_TOO_LARGE) { /* it would wrap others' sums: logged and ignored */
        unusable(s, c, "ALLOC too large to count (over 2^48 bytes, or 2^50 on the device), GiB",
                 (unsigned)(size >> 30));
        return;
    }
    if (kept == TD_TT_FULL)
        td_log(s, TD_WARN,
               "TT table full (%" PRIu64 " entries, --max-live-per-client): ALLOC by pid %d not kept"
               " (it holds its share, and no gone process holds entries)",
               s->max_live, (int)c->pid);
    else if (kept == TD_TT_EVICTED_DEPARTED || kept == TD_TT_EVICTED_SHARE)
        td_log(s, TD_WARN, "TT table full (%" PRIu64 " entries): ALLOC by pid %d kept in the place of %s",
               s->max_live, (int)c->pid,
               kept == TD_TT_EVICTED_DEPARTED ? "an entry of a gone process"
                                              : "an entry of the process holding the most");
    uint32_t domain = BH_DOMAIN((uint32_t)device, kind);
    uint64_t before = bh_track_device_bytes(s->track, domain, NULL);
    bh_track_result res = bh_track_on_alloc(s->track, td_client_key(c->pid, 0), domain, id, size, r[16], now);
    td_tt_view_add(s->tt_table, device, kind,
                   (int64_t)(bh_track_device_bytes(s->track, domain, NULL) - before));
    per_process(s, c, res, domain, id, 0);
}

/* FREE (buffer_type: the record's), CB_FREE, KERNEL_UNLOAD. */
static void on_free(td_server *s, td_client *c, int32_t device, uint32_t space, uint32_t kind, uint64_t id,
                    uint8_t buffer_type) {
    int last, unknown = td_tt_release(s->tt_table, device, space, id, &last) != 0;
    if (unknown)
        td_log(s, TD_WARN, "TT: deallocation for unknown buffer: pid %d device %d id 0x%" PRIx64, (int)c->pid,
               (int)device, id);
    uint64_t key = td_client_key(c->pid, 0);
    uint32_t domain = space == TD_TT_BUFFER ? free_domain(s, key, (uint32_t)device, id, buffer_type)
                                            : BH_DOMAIN((uint32_t)device, kind);
    uint64_t before = bh_track_device_bytes(s->track, domain, NULL);
    bh_track_result res = bh_track_on_free(s->track, key, domain, id);
    td_tt_view_add(s->tt_table, device, BH_DOMAIN_KIND(domain),
                   -(int64_t)(before - bh_track_device_bytes(s->track, domain, NULL)));
    per_process(s, c, res, domain, id, unknown);
}

void td_tt_record(td_server *s, td_client *c, const uint8_t *r) {
    uint8_t type = r[0];
    s->compat_records++;
    if (!header_ok(r, c->tt_size)) {
        unusable(s, c, "unknown type or non-zero padding, type", type);
        return;
    }
    int32_t device = (int32_t)bh_get32(r + 4);
    int kind = bh_tt_kind_of(r[16]);
    int memory =
        type == BH_TT_ALLOC || type == BH_TT_FREE || (type >= BH_TT_CB_ALLOC && type <= BH_TT_KERNEL_UNLOAD);
    if (memory && (device < 0 || device > (int32_t)BH_DOMAIN_DEVICE(~0u))) {
        unusable(s, c, "device_id out of range", (unsigned)device);
        return;
    }
    switch (type) {
    case BH_TT_ALLOC:
        if (kind < 0)
            unusable(s, c, "ALLOC with buffer_type", r[16]); /* TT's server: logged and ignored */
        else
            on_alloc(s, c, device, TD_TT_BUFFER, (uint32_t)kind, r);
        return;
    case BH_TT_FREE: /* TT's table keys by (device, buffer_id), whatever buffer_type says */
        on_free(s, c, device, TD_TT_BUFFER, 0, bh_get64(r + 24), r[16]);
        return;
    case BH_TT_CB_ALLOC:
    case BH_TT_KERNEL_LOAD:
        on_alloc(s, c, device, type == BH_TT_CB_ALLOC ? TD_TT_CB : TD_TT_KERNEL,
                 type == BH_TT_CB_ALLOC ? BH_TT_KIND_CB : BH_TT_KIND_KERNEL, r);
        return;
    case BH_TT_CB_FREE:
    case BH_TT_KERNEL_UNLOAD:
        on_free(s, c, device, type == BH_TT_CB_FREE ? TD_TT_CB : TD_TT_KERNEL,
                type == BH_TT_CB_FREE ? BH_TT_KIND_CB : BH_TT_KIND_KERNEL, bh_get64(r + 24), 0);
        return;
    case BH_TT_QUERY:
        reply_query(s, c, device);
        return;
    case BH_TT_DEVICE_INFO_QUERY:
        reply_device_info(s, c, device);
        return;
    case BH_TT_DUMP_REMAINING:
        dump(s, c, -1, "DUMP_REMAINING");
        return;
    case BH_TT_DUMP_KERNELS:
        dump(s, c, TD_TT_KERNEL, "DUMP_KERNELS");
        return;
    default: /* RESPONSE, DEVICE_INFO_RESPONSE: answers, not requests */
        s->unsupported_records++;
        unusable(s, c, "a server's answer from a client, type", type);
        return;
    }
}

size_t td_tt_input(td_server *s, td_client *c, const uint8_t *p, size_t avail, int first) {
    size_t rec = first ? td_tt_record_size(s, c, 0) : c->tt_size;
    if (rec == TD_TT_UNREADABLE)
        return avail; /* dropped, unread */
    if (rec == 0 || avail < rec)
        return 0;
    td_tt_record(s, c, p);
    return rec;
}
