/*
 * query.c - `bh-trackd stats|dump`: connects to a running server, sends HELLO
 * (query flag) and one QUERY, prints the REPLY's text on stdout.
 *
 * Owns: the client side of a QUERY.
 * Must never: print anything but the reply on stdout (errors go to stderr),
 * or print a reply whose frame does not check out.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "trackd.h"

int td_query(const char *path, uint16_t what, int json, uint64_t address) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "bh-trackd: no server on %s: %s\n", path, strerror(errno));
        return 1;
    }
    static const char name[] = "bh-trackd-query";
    uint8_t req[BH_WIRE_HEADER + 10 + sizeof(name) - 1 + BH_WIRE_HEADER + 12];
    uint32_t qlen = what == TD_QUERY_HISTORY ? 12 : 4; /* history carries the address */
    size_t n = bh_wire_header(req, BH_WIRE_HELLO, (uint32_t)(10 + sizeof(name) - 1));
    bh_put32(req + n, (uint32_t)getpid());
    bh_put16(req + n + 4, BH_WIRE_VERSION);
    bh_put16(req + n + 6, BH_WIRE_HELLO_CONTROL);
    bh_put16(req + n + 8, (uint16_t)(sizeof(name) - 1));
    memcpy(req + n + 10, name, sizeof(name) - 1);
    n += 10 + sizeof(name) - 1;
    n += bh_wire_header(req + n, BH_WIRE_QUERY, qlen);
    bh_put16(req + n, what);
    bh_put16(req + n + 2, (uint16_t)json);
    if (qlen == 12)
        bh_put64(req + n + 4, address);
    n += qlen;
    if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n) {
        fprintf(stderr, "bh-trackd: cannot send the query\n");
        close(fd);
        return 1;
    }
    td_strbuf b = {0};
    char chunk[65536];
    ssize_t r;
    while ((r = recv(fd, chunk, sizeof(chunk), 0)) > 0)
        td_sb_append(&b, chunk, (size_t)r);
    close(fd);
    if (b.len < BH_WIRE_HEADER || bh_get32((uint8_t *)b.p) != BH_WIRE_MAGIC ||
        bh_get16((uint8_t *)b.p + 6) != BH_WIRE_REPLY ||
        bh_get32((uint8_t *)b.p + 8) != b.len - BH_WIRE_HEADER) {
        fprintf(stderr, "bh-trackd: bad reply from the server\n");
        free(b.p);
        return 1;
    }
    fwrite(b.p + BH_WIRE_HEADER, 1, b.len - BH_WIRE_HEADER, stdout);
    free(b.p);
    return 0;
}
