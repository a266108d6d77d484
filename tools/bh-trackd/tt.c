/*
 * tt.c - TT-Metal's allocation records on the compat socket (--compat-tt;
 * docs/protocol.md, "TT-Metal compat records").
 *
 * Owns: the record size of each connection (72 or 112 bytes: configured with
 * --compat-record-size, or detected from the first bytes), checking each
 * record and turning it into tracker calls, the RESPONSE to a QUERY and the
 * DEVICE_INFO_RESPONSE (from per-device sums the tracker keeps: a QUERY never
 * walks anyone's live set), the log of a DUMP_REMAINING (a bounded excerpt).
 * Must never: key a client by the record's process_id (one published client
 * leaves it 0 in FREE; the peer's credentials are the key), accept a record
 * whose padding is not zero, or guess a record size the bytes do not prove
 * (see td_tt_detect).
 */
#include <stdlib.h>
#include <string.h>

#include "trackd.h"

/* The grown record of a later runtime variant (device-info fields at 72..111). */
#define TT_RECORD_112 112u
#define TT_DEVICE_INFO_QUERY 6
#define TT_DEVICE_INFO_RESPONSE 7
#define TT_DETECT_WINDOW 4096u /* undecided after this many bytes: refuse, ask for the option */

/* ======================== Record size ======================== */

/* The fixed header checks both layouts share: known type, zero padding. */
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

/* Could len bytes be a stream of size-byte records? The 112-byte layout adds
 * arch_type (0..4) and is_available (0 or 1). */
static int consistent(const uint8_t *p, size_t len, size_t size) {
    size_t off = 0;
    for (; off + size <= len; off += size)
        if (!header_ok(p + off, size) ||
            (size == TT_RECORD_112 && (bh_get32(p + off + 88) > 4 || bh_get32(p + off + 104) > 1)))
            return 0;
    return header_ok(p + off, len - off);
}

int td_tt_detect(const uint8_t *p, size_t len, int at_rest) {
    int ok72 = consistent(p, len, BH_TT_RECORD), ok112 = consistent(p, len, TT_RECORD_112);
    if (ok72 != ok112)
        return ok72 ? (int)BH_TT_RECORD : (int)TT_RECORD_112;
    if (!ok72)
        return -1;
    /* Both readings hold so far. A client writes each record whole with one
     * send, so a stream at rest ends on a record boundary of its own size:
     * 72 bytes at rest cannot be the start of a 112-byte record, and 112 not
     * of a 72-byte stream (whose second record would have a zero type at 112
     * or a non-zero one at 72, which consistent() already weighed). */
    if (at_rest && len % BH_TT_RECORD == 0 && len % TT_RECORD_112 != 0)
        return BH_TT_RECORD;
    if (at_rest && len % TT_RECORD_112 == 0 && len % BH_TT_RECORD != 0)
        return TT_RECORD_112;
    return len >= TT_DETECT_WINDOW ? -1 : 0;
}

size_t td_tt_record_size(td_server *s, td_client *c, int at_rest) {
    if (c->tt_size != 0)
        return c->tt_size;
    int d = s->tt_size != 0 ? (int)s->tt_size : td_tt_detect(c->in, c->in_len, at_rest);
    if (d < 0) {
        td_malformed(s, c, "neither 72- nor 112-byte TT records (or cannot tell: use --compat-record-size)");
        return 0;
    }
    c->tt_size = (unsigned)d;
    if (d > 0) {
        td_name_from_proc(s, c->pid); /* the records carry no name */
        if (s->tt_size == 0)
            td_log(s, TD_INFO, "pid %d (%s) sends %d-byte TT records", (int)c->pid, td_name_of(s, c->pid), d);
    }
    return c->tt_size;
}

/* ======================== Records ======================== */

typedef struct tt_sum {
    uint64_t bytes[4]; /* per kind: DRAM, L1, L1_SMALL, TRACE, as RESPONSE orders them */
    uint32_t devices;  /* highest device seen + 1 */
    int seen;          /* device has (or had) allocations */
} tt_sum;

/* 16 lookups of the tracker's per-device sums, whatever the live set holds. */
static void tt_sum_of(const td_server *s, int32_t device, tt_sum *t) {
    memset(t, 0, sizeof(*t));
    t->devices = s->tt_devices;
    for (uint32_t k = 0; device >= 0 && device <= (int32_t)BH_DOMAIN_DEVICE(~0u) && k < 16; k++) {
        int seen = 0;
        uint64_t bytes = bh_track_device_bytes(s->track, BH_DOMAIN((uint32_t)device, k), &seen);
        t->seen |= seen;
        /* RESPONSE has no SYSTEM_MEMORY counter: TT's server adds it into l1_small. */
        if (k < 4 || k == BH_MEM_SYSTEM)
            t->bytes[k == BH_MEM_SYSTEM ? BH_MEM_L1_SMALL : k] += bytes;
    }
}

/* A FREE has no buffer_type (0) in the records of several clients: it frees
 * the live allocation at that address on that device, DRAM first. */
static uint32_t free_domain(const td_server *s, uint64_t key, uint32_t device, int kind, uint64_t address) {
    if (kind != BH_MEM_DRAM)
        return BH_DOMAIN(device, kind);
    for (uint32_t k = 0; k < 16; k++)
        if (bh_track_is_live(s->track, key, BH_DOMAIN(device, k), address))
            return BH_DOMAIN(device, k);
    return BH_DOMAIN(device, BH_MEM_DRAM);
}

static void reply(td_server *s, td_client *c, uint8_t type, int32_t device, const tt_sum *t) {
    uint8_t out[TT_RECORD_112];
    memset(out, 0, sizeof(out));
    bh_tt_record(out, type, device, 0, 0, 0, 0, 0);
    if (type == BH_TT_RESPONSE)
        for (int i = 0; i < 4; i++)
            bh_put64(out + 40 + 8 * i, t->bytes[i]);
    if (type == TT_DEVICE_INFO_RESPONSE && c->tt_size == TT_RECORD_112) {
        /* The tracker knows which devices reported, not their hardware:
         * sizes and arch stay 0 ("invalid"), availability and count are real. */
        bh_put32(out + 104, device >= 0 ? (uint32_t)t->seen : t->devices > 0);
        bh_put32(out + 108, t->devices);
    }
    td_send_bytes(s, c, out, c->tt_size);
}

void td_tt_record(td_server *s, td_client *c, const uint8_t *r) {
    uint8_t type = r[0];
    if (!header_ok(r, c->tt_size)) {
        td_malformed(s, c, "not a TT record (bad type or padding)");
        return;
    }
    s->compat_records++;
    int32_t device = (int32_t)bh_get32(r + 4);
    uint64_t size = bh_get64(r + 8), address = bh_get64(r + 24);
    int kind = bh_tt_kind_of(r[16]);
    uint64_t key = td_client_key(c->pid, 0);
    if ((type == BH_TT_ALLOC || type == BH_TT_FREE) &&
        (device < 0 || device > (int32_t)BH_DOMAIN_DEVICE(~0u))) {
        td_malformed(s, c, "device_id out of range");
        return;
    }
    switch (type) {
    case BH_TT_ALLOC: {
        if (kind < 0) {
            td_malformed(s, c, "buffer_type");
            return;
        }
        uint32_t domain = BH_DOMAIN((uint32_t)device, (uint32_t)kind);
        td_track_result(s, c, bh_track_on_alloc(s->track, key, domain, address, size, 0, td_now_ms()),
                        "ALLOC", domain, address);
        return;
    }
    case BH_TT_FREE: {
        uint32_t domain = free_domain(s, key, (uint32_t)device, kind < 0 ? BH_MEM_DRAM : kind, address);
        td_track_result(s, c, bh_track_on_free(s->track, key, domain, address), "FREE", domain, address);
        return;
    }
    case BH_TT_QUERY:
    case TT_DEVICE_INFO_QUERY: {
        tt_sum t;
        tt_sum_of(s, device, &t);
        reply(s, c, type == BH_TT_QUERY ? BH_TT_RESPONSE : TT_DEVICE_INFO_RESPONSE, device, &t);
        return;
    }
    case BH_TT_DUMP_REMAINING: {
        td_strbuf b = {0};
        td_render_dump(s, &b, 0, TD_LOG_DUMP_LIMIT); /* the log gets a bounded excerpt */
        td_log(s, TD_INFO, "DUMP_REMAINING requested by pid %d:\n%s", (int)c->pid, b.p ? b.p : "");
        free(b.p);
        return;
    }
    default: /* later variants' circular-buffer and kernel records */
        s->unsupported_records++;
        return;
    }
}
