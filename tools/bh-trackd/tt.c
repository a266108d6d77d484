/*
 * tt.c - TT-Metal's allocation records on the compat socket (--compat-tt;
 * docs/protocol.md, "TT-Metal compat records").
 *
 * Owns: checking each 72-byte record and turning it into tracker calls, the
 * RESPONSE to a QUERY, the log of a DUMP_REMAINING.
 * Must never: key a client by the record's process_id (one published client
 * leaves it 0 in FREE; the peer's credentials are the key), or accept a
 * record whose padding is not zero (that is how a grown record shows up).
 */
#include <stdlib.h>

#include "trackd.h"

typedef struct tt_sum {
    int32_t device;
    uint64_t bytes[4];
} tt_sum;

static void tt_add(void *ctx, const bh_track_entry *e) {
    tt_sum *t = ctx;
    if ((int32_t)e->device == t->device && e->type < 4)
        t->bytes[e->type] += e->size;
}

void td_tt_record(td_server *s, td_client *c, const uint8_t *r) {
    uint8_t type = r[0];
    if (type == 0 || type > BH_TT_LAST_KNOWN || r[1] || r[2] || r[3] || r[17] || r[18] || r[19]) {
        td_malformed(s, c, "not a 72-byte TT record (bad type or padding)");
        return;
    }
    s->compat_records++;
    int32_t device = (int32_t)bh_get32(r + 4);
    uint64_t size = bh_get64(r + 8), address = bh_get64(r + 24);
    uint8_t btype = r[16];
    uint64_t key = td_client_key(c->pid, 0);
    switch (type) {
    case BH_TT_ALLOC:
        if (btype > 3) {
            td_malformed(s, c, "buffer_type");
            return;
        }
        td_track_result(s, c,
                        bh_track_on_alloc(s->track, key, (uint32_t)device, address, size, btype, td_now_ms()),
                        "ALLOC", (uint32_t)device, address);
        return;
    case BH_TT_FREE:
        td_track_result(s, c, bh_track_on_free(s->track, key, (uint32_t)device, address), "FREE",
                        (uint32_t)device, address);
        return;
    case BH_TT_QUERY: {
        tt_sum t = {device, {0, 0, 0, 0}};
        bh_track_each_entry(s->track, 1, tt_add, &t);
        uint8_t out[BH_TT_RECORD];
        bh_tt_record(out, BH_TT_RESPONSE, device, 0, 0, 0, 0, 0);
        for (int i = 0; i < 4; i++)
            bh_put64(out + 40 + 8 * i, t.bytes[i]);
        td_send_bytes(s, c, out, sizeof(out));
        return;
    }
    case BH_TT_DUMP_REMAINING: {
        td_strbuf b = {0};
        td_render_dump(s, &b, 0);
        td_log(s, "DUMP_REMAINING requested by pid %d:\n%s", (int)c->pid, b.p ? b.p : "");
        free(b.p);
        return;
    }
    default: /* later variants' device-info, circular-buffer and kernel records */
        s->unsupported_records++;
        return;
    }
}
