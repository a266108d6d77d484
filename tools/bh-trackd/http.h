/*
 * http.h - bh-trackd's HTTP endpoint (--http ADDR:PORT) on libmicrohttpd.
 *
 * Owns: the listening address, libmicrohttpd's daemon in its external-epoll
 * mode, and the limits that keep HTTP clients from costing the socket
 * protocol anything: connection count, per-connection memory, idle timeout,
 * one answer rendered per loop turn (requests wait in a first-come queue,
 * their connections suspended), the memory held by unsent answers, and the
 * Host header (loopback names and addresses, and names the caller allows:
 * anything else is 421, so a DNS-rebound web page cannot read the API).
 * Must never: block, start a thread, or parse HTTP itself; the handler runs
 * on the daemon's event loop, so it sees the tracker without locks.
 */
#ifndef BH_TRACKD_HTTP_H
#define BH_TRACKD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct bh_http bh_http;
typedef struct bh_http_request bh_http_request;

typedef struct bh_http_response {
    int status;               /* HTTP status; 0 means 404 */
    const char *content_type; /* static string */
    char *body;               /* malloc'd (ownership passes to the server) or NULL */
    size_t len;
    const char *static_body; /* instead of body: lives as long as the program */
} bh_http_response;

/* Called for each GET or HEAD on the event loop's thread. path excludes the
 * query string. */
typedef void (*bh_http_handler)(void *ctx, const char *path, const bh_http_request *req,
                                bh_http_response *out);

/* The query argument key of the request (decoded), or NULL. */
const char *bh_http_arg(const bh_http_request *req, const char *key);

/* Parses "PORT", ":PORT", "HOST:PORT" or "[V6]:PORT" (no host: 127.0.0.1)
 * into a printable description; 0 on success. */
typedef struct bh_http_addr {
    unsigned char sa[128]; /* struct sockaddr_storage */
    unsigned len;
    int v6;
    int fd; /* a listening socket to serve instead of binding sa, or -1 */
} bh_http_addr;
int bh_http_parse_addr(const char *spec, bh_http_addr *out, char *err, size_t errlen);
/* The address of a listening TCP socket someone else bound (socket
 * activation), to serve as it is; 0 on success. */
int bh_http_addr_of_fd(int fd, bh_http_addr *out);

/* "http://HOST:PORT/" for the address as bound (port: bh_http_port). */
void bh_http_url(const bh_http_addr *addr, unsigned port, char *buf, size_t n);

#define BH_HTTP_MAX_HOSTS 16
#define BH_HTTP_BODY_MAX (1u << 20)  /* what a handler may answer (it bounds its own rendering) */
#define BH_HTTP_HELD_MAX (16u << 20) /* answers rendered and not yet sent, all connections */

typedef struct bh_http_opts {
    unsigned max_connections;             /* in total (and half of it per client address) */
    const char *hosts[BH_HTTP_MAX_HOSTS]; /* Host names allowed besides loopback ones */
    int nhosts;
} bh_http_opts;

/* Starts listening (no thread). log gets one line per failure. NULL on error. */
bh_http *bh_http_open(const bh_http_addr *addr, const bh_http_opts *opts, bh_http_handler fn, void *ctx,
                      FILE *log);
/* The descriptor to watch for EPOLLIN in the caller's epoll (libmicrohttpd's
 * own epoll descriptor, which nests). */
int bh_http_fd(const bh_http *h);
/* The bound port (useful with port 0). */
unsigned bh_http_port(const bh_http *h);
/* The longest the caller may sleep before bh_http_run must be called again,
 * capped at cap_ms (0 while requests wait to be rendered). */
int bh_http_timeout_ms(bh_http *h, int cap_ms);
/* Renders at most one waiting request (the handler's one call per turn),
 * then does whatever HTTP I/O is ready, without blocking. */
void bh_http_run(bh_http *h);
/* Requests answered, and connections currently open. */
uint64_t bh_http_requests(const bh_http *h);
unsigned bh_http_connections(const bh_http *h);
/* Bytes of answers rendered and not yet sent; requests refused for that
 * (503) and for their Host (421). */
size_t bh_http_held(const bh_http *h);
uint64_t bh_http_busy_refusals(const bh_http *h);
uint64_t bh_http_host_refusals(const bh_http *h);
/* 1 if a Host header value (NULL: none sent, HTTP/1.0) may be served:
 * loopback names and addresses, any address literal when the server listens
 * beyond loopback (an address cannot be rebound), and opts' names. */
int bh_http_host_ok(const bh_http_addr *addr, const bh_http_opts *opts, const char *host);
void bh_http_close(bh_http *h);

#endif
