/*
 * report_tt.c - TT-Metal records of the socket reporter (BH_SOCKET_COMPAT_TT;
 * report_socket.h): encoding, and what the TT server is told.
 *
 * Owns: the record of an event (72, 112 or 144 bytes, BH_TT_RECORD_SIZE; the
 * buffer_type from the one kind table of wire.h), the known set (keys whose ALLOC the
 * TT server got and no FREE yet), and what replaces a resync for TT.
 * Must never: announce an ALLOC twice, send a FREE whose ALLOC the server did
 * not get, or run on an application thread.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "diag/diag.h"
#include "report_socket.h"

unsigned rs_tt_record_size(void) {
    /* Read once per connection, when it is made (never on a reporting thread). */
    const char *v = getenv("BH_TT_RECORD_SIZE");
    unsigned size = bh_tt_record_size_of(v);
    if (v != NULL && v[0] != '\0' && size == BH_TT_RECORD && strcmp(v, "72") != 0)
        bh__env_note_once(BH__NOTE_TT_RECORD_SIZE,
                          "bufhandle: BH_TT_RECORD_SIZE=%.64s: not 72, 112 or 144; using %u\n", v, size);
    return size;
}

/* One record of the connection's size for an event; returns its size. A
 * client's record has zero past 72 (those fields are the server's answers). */
size_t rs_tt_encode(const conn *c, uint8_t *p, const bh_event *ev) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* The domain split as the TT server keys it: device id, and the memory
     * kind as TT's BufferType (rs_tt_admit passes kinds that have one). */
    bh_tt_client_record(p, c->tt_record, ev->kind == BH_EVENT_ALLOC, ev->device, ev->size, ev->address,
                        (int32_t)getpid(), (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    return c->tt_record;
}

/* Without the lock. Writes TT FREE records for n keys, updating the known
 * set by what was written. Returns 0 or -1. */
static int send_tt_frees(conn *c, const kentry *keys, size_t n) {
    for (size_t i = 0; i < n; i += BATCH) {
        size_t k = n - i < BATCH ? n - i : BATCH;
        for (size_t j = 0; j < k; j++) {
            bh_event ev = {BH_EVENT_FREE, keys[i + j].domain, keys[i + j].address, 0, 0};
            rs_encode_event(c, c->wire + j * c->tt_record, 0, &ev);
        }
        size_t done =
            rs_write_some(c, c->fd, c->wire, k * c->tt_record, c->opt.send_timeout_ms) / c->tt_record;
        for (size_t j = 0; j < done; j++)
            rs_key_del(&c->known, keys[i + j].device, keys[i + j].address); /* device: the TT key's */
        if (done < k)
            return -1;
    }
    return 0;
}

/* Without the lock. The TT protocol has no resync: the server cannot be told
 * "this is the live set". Re-announcing the live set as ALLOCs made duplicate
 * ALLOCs (the server had most of them) and, when a FREE had been lost, false
 * leaks. Instead the sender keeps the set of keys whose ALLOC the server got
 * and whose FREE it did not (known), never announces anything twice, and at
 * a snapshot point sends FREE for every known key that is no longer live.
 * Live keys the server never heard of stay unannounced, and their FREE is not
 * sent either (see take_tt). So the server may under-count after a loss, but
 * never sees a duplicate ALLOC, an unknown FREE or a leak that is not one. */
int rs_resync_finish_tt(conn *c) {
    size_t n = 0;
    kentry *gone = c->known.n ? bh__calloc(c->known.n, sizeof(*gone)) : NULL;
    if (c->known.n && gone == NULL)
        return -1;
    for (size_t i = 0; i < c->known.cap; i++)
        if (c->known.e[i].used &&
            rs_key_get(&c->live_at_t, c->known.e[i].domain, c->known.e[i].address) == NULL)
            gone[n++] = c->known.e[i];
    int rc = send_tt_frees(c, gone, n);
    bh__free(gone);
    rs_key_clear(&c->live_at_t);
    return rc;
}
/* Without the lock, TT: whether the event goes to the server, updating the
 * known set (keyed as the TT server keys: device id and address). An ALLOC is
 * announced only if the server holds nothing at that key (two domains of one
 * device at one address collide there: the second is not announced) and its
 * kind has a TT buffer_type; a FREE is sent only for the very ALLOC the server
 * got. */
int rs_tt_admit(conn *c, const bh_event *ev) {
    uint32_t dev = BH_DOMAIN_DEVICE(ev->device);
    const kentry *k = rs_key_get(&c->known, dev, ev->address);
    if (ev->kind == BH_EVENT_FREE) {
        if (k == NULL || k->domain != ev->device)
            return 0;
        rs_key_del(&c->known, dev, ev->address);
        return 1;
    }
    if (k != NULL || bh_tt_buffer_type_of(BH_DOMAIN_KIND(ev->device)) < 0)
        return 0;
    return rs_key_add(&c->known, dev, ev->address, ev->device) == 0; /* cannot remember it: not announced */
}

/* Without the lock, TT: records from index done on were not written; undo
 * their effect on the known set, last first. */
void rs_unwind_tt(conn *c, uint32_t n, size_t done, size_t records) {
    size_t r = records;
    for (uint32_t i = n; i-- > 0 && r > done;) {
        if (!c->encoded[i])
            continue;
        r--;
        const bh_event *ev = &c->batch[i].ev;
        uint32_t dev = BH_DOMAIN_DEVICE(ev->device);
        if (ev->kind == BH_EVENT_FREE)
            (void)rs_key_add(&c->known, dev, ev->address, ev->device);
        else
            rs_key_del(&c->known, dev, ev->address);
    }
}
