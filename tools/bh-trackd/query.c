/*
 * query.c - `bh-trackd stats|dump|history`: connects to a running server, sends HELLO
 * (query flag) and one QUERY, prints the REPLY's text on stdout.
 *
 * Owns: the client side of a QUERY, bounded in time (timeout_ms for the whole
 * exchange) and in size (one frame of at most BH_WIRE_MAX_PAYLOAD bytes).
 * Must never: print anything but the reply on stdout (errors go to stderr),
 * print a reply whose frame does not check out, or wait without a deadline.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "trackd.h"

/* Reads exactly n bytes before the deadline; 0, or -1 (errno ETIMEDOUT on
 * time, EPIPE on a short stream). */
static int read_exact(int fd, uint8_t *p, size_t n, uint64_t deadline) {
    while (n > 0) {
        uint64_t now = td_now_ms();
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)(deadline - now));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            errno = rc == 0 ? ETIMEDOUT : errno;
            return -1;
        }
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            errno = r == 0 ? EPIPE : errno;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static size_t build_request(uint8_t *req, uint16_t what, int json, uint64_t address) {
    static const char name[] = "bh-trackd-query";
    size_t n = bh_wire_header(req, BH_WIRE_HELLO, (uint32_t)(10 + sizeof(name) - 1));
    bh_put32(req + n, (uint32_t)getpid());
    bh_put16(req + n + 4, BH_WIRE_VERSION);
    bh_put16(req + n + 6, BH_WIRE_HELLO_CONTROL);
    bh_put16(req + n + 8, (uint16_t)(sizeof(name) - 1));
    memcpy(req + n + 10, name, sizeof(name) - 1);
    n += 10 + sizeof(name) - 1;
    uint32_t qlen = what == TD_QUERY_HISTORY ? 12 : 4; /* history carries the address */
    n += bh_wire_header(req + n, BH_WIRE_QUERY, qlen);
    bh_put16(req + n, what);
    bh_put16(req + n + 2, (uint16_t)json);
    if (qlen == 12)
        bh_put64(req + n + 4, address);
    return n + qlen;
}

int td_query(const char *path, uint16_t what, int json, uint64_t address, uint64_t timeout_ms) {
    uint64_t deadline = td_now_ms() + timeout_ms;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1); /* main.c checked the length */
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "bh-trackd: no server on %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    /* The request is small: a connected Unix socket takes it at once, or the
     * send timeout ends the wait. */
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    uint8_t req[128];
    size_t n = build_request(req, what, json, address);
    if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n) {
        fprintf(stderr, "bh-trackd: cannot send the query: %s\n", strerror(errno));
        close(fd);
        return 1;
    }
    uint8_t h[BH_WIRE_HEADER];
    if (read_exact(fd, h, sizeof(h), deadline) != 0) {
        fprintf(stderr, "bh-trackd: no reply from the server on %s: %s\n", path, strerror(errno));
        close(fd);
        return 1;
    }
    uint16_t type = bh_get16(h + 6);
    uint32_t len = bh_get32(h + 8);
    if (bh_get32(h) != BH_WIRE_MAGIC || (type != BH_WIRE_REPLY && type != BH_WIRE_ERROR) ||
        len > BH_WIRE_MAX_PAYLOAD || (type == BH_WIRE_ERROR && len < 4)) {
        fprintf(stderr, "bh-trackd: bad reply from the server\n");
        close(fd);
        return 1;
    }
    uint8_t *body = malloc(len + 1u);
    int rc = body != NULL && read_exact(fd, body, len, deadline) == 0 ? 0 : 1;
    close(fd);
    if (rc != 0)
        fprintf(stderr, "bh-trackd: incomplete reply from the server: %s\n", strerror(errno));
    else if (type == BH_WIRE_ERROR)
        fprintf(stderr, "bh-trackd: the server refused the query (%d): %.*s\n", (int)bh_get32(body),
                (int)(len - 4), (const char *)body + 4);
    else
        fwrite(body, 1, len, stdout);
    free(body);
    return rc != 0 || type == BH_WIRE_ERROR ? 1 : 0;
}
