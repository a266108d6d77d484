/*
 * http.c - see http.h.
 *
 * Why external epoll and not libmicrohttpd's own thread: the tracker is
 * single-threaded by design (one event loop, no locks). With MHD_USE_EPOLL
 * and no internal thread, libmicrohttpd keeps its listening socket and every
 * connection in an epoll descriptor of its own; the daemon adds that
 * descriptor to its loop and calls MHD_run when it is readable (or when
 * MHD_get_timeout says a timer is due). MHD_run only does non-blocking
 * reads and writes, so a slow or hostile HTTP client can hold at most its
 * own connection slot, never the loop. A request is answered in full when it
 * arrives (the renderers are bounded: /metrics has bounded cardinality and
 * /api/live is paged), so no state is shared across calls and nothing needs a
 * snapshot or a lock.
 */

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Bounds on what HTTP clients may hold. */
#define HTTP_MAX_CONNECTIONS 64u
#define HTTP_MAX_PER_IP 32u
#define HTTP_CONNECTION_MEMORY (32u * 1024u) /* request line + headers; over it: 431 */
#define HTTP_IDLE_TIMEOUT_S 10u

struct bh_http {
    struct MHD_Daemon *d;
    bh_http_handler fn;
    void *ctx;
    FILE *log;
    uint64_t requests;
};

struct bh_http_request {
    struct MHD_Connection *conn;
};

const char *bh_http_arg(const bh_http_request *req, const char *key) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* ======================== Address ======================== */

int bh_http_parse_addr(const char *spec, bh_http_addr *out, char *err, size_t errlen) {
    char host[256] = "127.0.0.1";
    const char *port = spec;
    const char *colon = strrchr(spec, ':');
    if (spec[0] == '[') { /* [v6]:port */
        const char *end = strchr(spec, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof(host)) {
            snprintf(err, errlen, "bad address '%s' (want [V6]:PORT)", spec);
            return -1;
        }
        memcpy(host, spec + 1, (size_t)(end - spec - 1));
        host[end - spec - 1] = '\0';
        port = end + 2;
    } else if (colon != NULL) {
        if ((size_t)(colon - spec) >= sizeof(host)) {
            snprintf(err, errlen, "address too long");
            return -1;
        }
        if (colon > spec) { /* ":PORT" keeps the loopback default */
            memcpy(host, spec, (size_t)(colon - spec));
            host[colon - spec] = '\0';
        }
        port = colon + 1;
    }
    char *end;
    unsigned long p = strtoul(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p > 65535) {
        snprintf(err, errlen, "bad port in '%s'", spec);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof(out->sa)) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL)
            freeaddrinfo(res);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out->sa, res->ai_addr, res->ai_addrlen);
    out->len = (unsigned)res->ai_addrlen;
    out->v6 = res->ai_family == AF_INET6;
    out->fd = -1;
    freeaddrinfo(res);
    return 0;
}

void bh_http_url(const bh_http_addr *addr, unsigned port, char *buf, size_t n) {
    char host[INET6_ADDRSTRLEN] = "?";
    const struct sockaddr *sa = (const struct sockaddr *)addr->sa;
    if (addr->v6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, host, sizeof(host));
    snprintf(buf, n, addr->v6 ? "http://[%s]:%u/" : "http://%s:%u/", host, port);
}

/* ======================== Requests ======================== */

static enum MHD_Result queue(struct MHD_Connection *conn, int status, const char *type, void *body,
                             size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    /* The dashboard talks to its own origin only. */
    MHD_add_response_header(
        r, "Content-Security-Policy",
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self' data:");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    bh_http *h = cls;
    (void)version;
    (void)upload_data;
    static int first_call; /* libmicrohttpd calls twice per request: headers, then the (empty) body */
    if (*con_cls == NULL) {
        *con_cls = &first_call;
        return MHD_YES;
    }
    if (*upload_data_size != 0) { /* a body on GET/HEAD: ignore it, answer after it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    h->requests++;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char msg[] = "only GET and HEAD\n";
        return queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", (void *)msg,
                     sizeof(msg) - 1, MHD_RESPMEM_PERSISTENT);
    }
    bh_http_request req = {conn};
    bh_http_response out = {0, "text/plain; charset=utf-8", NULL, 0, NULL};
    h->fn(h->ctx, url, &req, &out);
    if (out.static_body != NULL)
        return queue(conn, out.status ? out.status : 200, out.content_type, (void *)out.static_body, out.len,
                     MHD_RESPMEM_PERSISTENT);
    if (out.status == 0) {
        free(out.body);
        static const char msg[] =
            "not found: try /, /metrics, /api/stats, /api/live, /api/history?address=\n";
        return queue(conn, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", (void *)msg, sizeof(msg) - 1,
                     MHD_RESPMEM_PERSISTENT);
    }
    if (out.body == NULL) { /* the renderer ran out of memory */
        static const char msg[] = "out of memory\n";
        return queue(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", (void *)msg,
                     sizeof(msg) - 1, MHD_RESPMEM_PERSISTENT);
    }
    return queue(conn, out.status, out.content_type, out.body, out.len, MHD_RESPMEM_MUST_FREE);
}

/* ======================== Daemon ======================== */

int bh_http_addr_of_fd(int fd, bh_http_addr *out) {
    memset(out, 0, sizeof(*out));
    socklen_t len = sizeof(out->sa);
    if (getsockname(fd, (struct sockaddr *)(void *)out->sa, &len) != 0 || len > sizeof(out->sa))
        return -1;
    out->len = (unsigned)len;
    out->v6 = ((struct sockaddr *)(void *)out->sa)->sa_family == AF_INET6;
    out->fd = fd;
    return 0;
}

bh_http *bh_http_open(const bh_http_addr *addr, bh_http_handler fn, void *ctx, FILE *log) {
    bh_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->fn = fn;
    h->ctx = ctx;
    h->log = log;
    /* No MHD_USE_INTERNAL_POLLING_THREAD: the caller's loop drives it. */
    unsigned flags = MHD_USE_EPOLL | (addr->v6 ? MHD_USE_IPv6 : 0);
    /* Bind the address, or serve the socket the service manager bound. */
    struct MHD_OptionItem where[] = {{MHD_OPTION_SOCK_ADDR, 0, (void *)addr->sa}, {MHD_OPTION_END, 0, NULL}};
    if (addr->fd >= 0)
        where[0] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, addr->fd, NULL};
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, where, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HTTP_MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_MAX_PER_IP,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)HTTP_IDLE_TIMEOUT_S, MHD_OPTION_LISTEN_BACKLOG_SIZE, 64u, MHD_OPTION_END);
    if (h->d == NULL) {
        fprintf(log, "bh-trackd: cannot serve HTTP (address in use or not available): %s\n", strerror(errno));
        free(h);
        return NULL;
    }
    return h;
}

int bh_http_fd(const bh_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return i != NULL ? i->epoll_fd : -1;
}

unsigned bh_http_port(const bh_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return i != NULL ? i->port : 0;
}

int bh_http_timeout_ms(bh_http *h, int cap_ms) {
    MHD_UNSIGNED_LONG_LONG t;
    if (h == NULL || MHD_get_timeout(h->d, &t) != MHD_YES)
        return cap_ms;
    return t < (MHD_UNSIGNED_LONG_LONG)cap_ms ? (int)t : cap_ms;
}

void bh_http_run(bh_http *h) {
    if (h != NULL)
        MHD_run(h->d);
}

uint64_t bh_http_requests(const bh_http *h) { return h != NULL ? h->requests : 0; }

unsigned bh_http_connections(const bh_http *h) {
    if (h == NULL)
        return 0;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i != NULL ? i->num_connections : 0;
}

void bh_http_close(bh_http *h) {
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
