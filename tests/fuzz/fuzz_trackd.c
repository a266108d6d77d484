/*
 * fuzz_trackd.c - bh-trackd's input decoder (native frames and TT records of
 * 72, 112 or 144 bytes) on arbitrary bytes.
 *
 * The first input byte picks the protocol (even: native, odd: compat) and how
 * the rest is cut into reads (1..16 byte pieces or one piece), so partial
 * frames across reads are exercised. The decoder must never crash, read out of
 * bounds, leak or grow without bound, whatever arrives. Built with libFuzzer
 * (clang) or as a plain program that replays corpus files (gcc, CTest).
 * Linked against bh-trackd's own files (bh_trackd_core): no event loop runs.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trackd.h"
#include "tt_table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    td_server s;
    memset(&s, 0, sizeof(s));
    s.log = fopen("/dev/null", "w");
    s.max_live = 1000;
    s.grace_ms = 0;
    s.epfd = -1; /* replies are written to a socketpair; no event loop */
    s.track = bh_track_new(s.max_live);
    s.tt_table = td_tt_new(s.max_live);
    int sv[2];
    if (s.log == NULL || s.track == NULL || s.tt_table == NULL ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        abort();
    td_client *c = calloc(1, sizeof(*c));
    c->fd = sv[0];
    c->compat = data[0] & 1;
    c->pid = 4242;
    s.clients = c;
    s.nclients = 1;
    size_t piece = (data[0] >> 1) % 17; /* 0: everything at once */
    size_t off = 1;
    while (off < size && !c->closing) {
        size_t n = piece == 0 ? size - off : piece;
        if (n > size - off)
            n = size - off;
        uint8_t *nb = realloc(c->in, c->in_len + n);
        if (nb == NULL)
            abort();
        c->in = nb;
        c->in_cap = c->in_len + n;
        memcpy(c->in + c->in_len, data + off, n);
        c->in_len += n;
        off += n;
        td_parse_input(&s, c);
        /* Drain replies so the server never sees a full socket. */
        char sink[4096];
        while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0) {
        }
    }
    if (c->in_len > BH_WIRE_HEADER + BH_WIRE_MAX_PAYLOAD) /* buffered input stays bounded */
        abort();
    close(sv[1]);
    td_close_client(&s, c); /* closes sv[0], makes the process an orphan */
    td_process_gone(&s, 4242, 0);
    td_gone_finish(&s);  /* its drop, in slices in the loop, at once here */
    td_free_orphans(&s); /* what loop.c's stop frees, in its order */
    td_peer_free(&s);
    td_fair_free(&s);
    bh_track_free(s.track);
    td_tt_free(s.tt_table);
    fclose(s.log);
    return 0;
}
