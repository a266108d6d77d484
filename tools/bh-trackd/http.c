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
 * own connection slot, never the loop.
 *
 * Rendering is what costs: MHD_run serves every ready connection in one call,
 * and 64 keep-alive clients asking for expensive pages held the loop for
 * seconds. So a request is not answered where it arrives: its connection is
 * suspended and queued, and bh_http_run renders one queued request per loop
 * turn (each answer bounded by BH_HTTP_BODY_MAX, all unsent answers by
 * BH_HTTP_HELD_MAX). Each answer is still rendered whole on the loop, so it
 * sees the tracker without locks or snapshots.
 */

#include "http.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

/* Bounds on what HTTP clients may hold. */
#define HTTP_CONNECTION_MEMORY (32u * 1024u) /* request line + headers; over it: 431 */
#define HTTP_IDLE_TIMEOUT_S 10u

/* One request between its headers and its answer. While it waits for its
 * turn its connection is suspended (libmicrohttpd neither reads from it nor
 * times it out), so a waiting request costs its slot and this. */
typedef struct pending {
    struct MHD_Connection *conn;
    char *url;
    int queued, answered;
    bh_http_response out;
    struct pending *next;
} pending;

struct bh_http {
    struct MHD_Daemon *d;
    bh_http_handler fn;
    void *ctx;
    FILE *log;
    bh_http_addr addr;
    bh_http_opts opts;
    pending *head, *tail;    /* waiting to be rendered, first come first served */
    uint64_t next_render_us; /* no rendering before (monotonic): at most half the loop's time */
    size_t held;             /* bytes of rendered answers not yet sent */
    uint64_t requests, busy_refusals, host_refusals;
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

/* ======================== Host header ======================== */

/* 1 for a loopback address, given as its family and its bytes (an in_addr
 * or in6_addr). Addresses are copied out with memcpy, never read through a
 * cast of another object: at -O2 gcc's aliasing rules let a family stored
 * through sockaddr_storage be read back through sockaddr as the memset 0,
 * which refused every literal Host (421 for "127.0.0.1"). */
static int loopback_addr(int family, const void *bytes) {
    if (family == AF_INET) {
        struct in_addr a;
        memcpy(&a, bytes, sizeof(a));
        return (ntohl(a.s_addr) >> 24) == 127;
    }
    if (family != AF_INET6)
        return 0;
    struct in6_addr a;
    memcpy(&a, bytes, sizeof(a));
    return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
}

/* The same for a socket address kept as bytes (bh_http_addr.sa). */
static int loopback_sockaddr(const unsigned char *sa) {
    sa_family_t family;
    memcpy(&family, sa + offsetof(struct sockaddr, sa_family), sizeof(family));
    if (family == AF_INET)
        return loopback_addr(AF_INET, sa + offsetof(struct sockaddr_in, sin_addr));
    if (family == AF_INET6)
        return loopback_addr(AF_INET6, sa + offsetof(struct sockaddr_in6, sin6_addr));
    return 0;
}

int bh_http_host_ok(const bh_http_addr *addr, const bh_http_opts *opts, const char *host) {
    if (host == NULL) /* HTTP/1.0 without Host: no browser sends that, nothing to rebind */
        return 1;
    char name[256];
    const char *end;
    int bracketed = host[0] == '[';
    if (bracketed) { /* [v6]:port */
        end = strchr(host, ']');
        if (end == NULL)
            return 0;
        host++;
    } else {
        end = strrchr(host, ':');
        if (end == NULL)
            end = host + strlen(host);
    }
    const char *port = end + (*end == ']');
    if (*port == ':')
        port++;
    else if (*port != '\0')
        return 0;
    if ((size_t)(end - host) >= sizeof(name) || strspn(port, "0123456789") != strlen(port))
        return 0;
    memcpy(name, host, (size_t)(end - host));
    name[end - host] = '\0';
    unsigned char bytes[sizeof(struct in6_addr)];
    int family = 0;
    if (inet_pton(AF_INET, name, bytes) == 1)
        family = AF_INET;
    else if (bracketed && inet_pton(AF_INET6, name, bytes) == 1)
        family = AF_INET6;
    if (family != 0)
        /* An address literal cannot be rebound by DNS: loopback is always
         * fine, any other only when the server was asked to listen beyond
         * loopback (then that is how its users reach it). */
        return loopback_addr(family, bytes) || !loopback_sockaddr(addr->sa);
    if (strcasecmp(name, "localhost") == 0)
        return 1;
    for (int i = 0; i < opts->nhosts; i++)
        if (strcasecmp(name, opts->hosts[i]) == 0)
            return 1;
    return 0;
}

/* ======================== Requests ======================== */

/* The rendered body of one answer, given to libmicrohttpd; it counts as held
 * until libmicrohttpd is done with it (sent, or the connection gone). */
typedef struct held_body {
    bh_http *h;
    char *body;
    size_t len;
} held_body;

static void release_body(void *cls) {
    held_body *b = cls;
    b->h->held -= b->len;
    free(b->body);
    free(b);
}

static enum MHD_Result queue_response(struct MHD_Connection *conn, int status, const char *type,
                                      struct MHD_Response *r) {
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    /* The dashboard talks to its own origin only. */
    MHD_add_response_header(
        r, "Content-Security-Policy",
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self' data:");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result queue_static(struct MHD_Connection *conn, int status, const char *type,
                                    const char *body, size_t len) {
    return queue_response(conn, status, type,
                          MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT));
}

#define QUEUE_TEXT(conn, status, text)                                                                       \
    queue_static(conn, status, "text/plain; charset=utf-8", text, sizeof(text) - 1)

static enum MHD_Result queue_held(bh_http *h, struct MHD_Connection *conn, int status, const char *type,
                                  char *body, size_t len) {
    held_body *b = malloc(sizeof(*b));
    struct MHD_Response *r =
        b != NULL ? MHD_create_response_from_buffer_with_free_callback_cls(len, body, release_body, b) : NULL;
    if (r == NULL) {
        free(b);
        free(body);
        return MHD_NO;
    }
    *b = (held_body){h, body, len};
    h->held += len;
    return queue_response(conn, status, type, r);
}

/* The answer to a request whose turn came (rendered on the loop, by the
 * handler, after the budget check). */
static void render(bh_http *h, pending *p) {
    bh_http_response *out = &p->out;
    *out = (bh_http_response){0, "text/plain; charset=utf-8", NULL, 0, NULL};
    if (h->held + BH_HTTP_BODY_MAX > BH_HTTP_HELD_MAX) {
        /* Slow readers pin what they were answered: past the budget new
         * requests are refused before anything is rendered for them. */
        h->busy_refusals++;
        out->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return;
    }
    bh_http_request req = {p->conn};
    h->fn(h->ctx, p->url, &req, out);
    if (out->body != NULL && out->len > BH_HTTP_BODY_MAX) { /* a handler's bug, never sent */
        free(out->body);
        out->body = NULL;
    }
}

static enum MHD_Result answer(bh_http *h, struct MHD_Connection *conn, pending *p) {
    bh_http_response *out = &p->out;
    if (out->status == MHD_HTTP_SERVICE_UNAVAILABLE && out->body == NULL && out->static_body == NULL)
        return QUEUE_TEXT(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "busy: too many answers not yet read\n");
    if (out->static_body != NULL)
        return queue_static(conn, out->status ? out->status : 200, out->content_type, out->static_body,
                            out->len);
    if (out->status == 0) {
        free(out->body);
        out->body = NULL;
        return QUEUE_TEXT(conn, MHD_HTTP_NOT_FOUND,
                          "not found: try /, /metrics, /api/stats, /api/live, /api/history?address=\n");
    }
    if (out->body == NULL) /* the renderer ran out of memory */
        return QUEUE_TEXT(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    char *body = out->body;
    out->body = NULL; /* now libmicrohttpd's */
    return queue_held(h, conn, out->status, out->content_type, body, out->len);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    bh_http *h = cls;
    (void)version;
    (void)upload_data;
    pending *p = *con_cls;
    if (p == NULL) { /* headers in: libmicrohttpd calls again for the (empty) body */
        if ((p = calloc(1, sizeof(*p))) == NULL)
            return MHD_NO;
        p->conn = conn;
        *con_cls = p;
        return MHD_YES;
    }
    if (*upload_data_size != 0) { /* a body on GET/HEAD: ignore it, answer after it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (p->answered) /* called again after its turn: the answer is ready */
        return answer(h, conn, p);
    h->requests++;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return QUEUE_TEXT(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!bh_http_host_ok(&h->addr, &h->opts, host)) {
        h->host_refusals++;
        return QUEUE_TEXT(conn, MHD_HTTP_MISDIRECTED_REQUEST,
                          "Host not served: use localhost or a loopback address, or start bh-trackd with "
                          "--http-allow-host NAME\n");
    }
    if ((p->url = strdup(url)) == NULL)
        return QUEUE_TEXT(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    /* Its turn comes in bh_http_run; until then libmicrohttpd leaves it be. */
    p->queued = 1;
    if (h->tail != NULL)
        h->tail->next = p;
    else
        h->head = p;
    h->tail = p;
    MHD_suspend_connection(conn);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)cls;
    (void)conn;
    (void)why;
    pending *p = *con_cls;
    if (p == NULL)
        return;
    free(p->out.body);
    free(p->url);
    free(p);
    *con_cls = NULL;
}

/* Takes the first waiting request off the queue; NULL if none. */
static pending *dequeue(bh_http *h) {
    pending *p = h->head;
    if (p == NULL)
        return NULL;
    h->head = p->next;
    if (h->head == NULL)
        h->tail = NULL;
    p->next = NULL;
    p->queued = 0;
    return p;
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

bh_http *bh_http_open(const bh_http_addr *addr, const bh_http_opts *opts, bh_http_handler fn, void *ctx,
                      FILE *log) {
    bh_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->fn = fn;
    h->ctx = ctx;
    h->log = log;
    h->addr = *addr;
    h->opts = *opts;
    unsigned max = opts->max_connections > 0 ? opts->max_connections : 1;
    /* No MHD_USE_INTERNAL_POLLING_THREAD: the caller's loop drives it.
     * Suspending needs an inter-thread channel (an eventfd in the same epoll
     * set): a resumed connection wakes the loop. */
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | (addr->v6 ? MHD_USE_IPv6 : 0);
    /* Bind the address, or serve the socket the service manager bound. */
    struct MHD_OptionItem where[] = {{MHD_OPTION_SOCK_ADDR, 0, (void *)addr->sa}, {MHD_OPTION_END, 0, NULL}};
    if (addr->fd >= 0)
        where[0] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, addr->fd, NULL};
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, where, MHD_OPTION_CONNECTION_LIMIT, max,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, max > 1 ? max / 2 : 1u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONNECTION_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 64u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
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

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int bh_http_timeout_ms(bh_http *h, int cap_ms) {
    MHD_UNSIGNED_LONG_LONG t;
    if (h != NULL && h->head != NULL) { /* a request waits for its turn */
        uint64_t now = now_us();
        uint64_t wait = h->next_render_us > now ? (h->next_render_us - now + 999) / 1000 : 0;
        cap_ms = wait < (uint64_t)cap_ms ? (int)wait : cap_ms;
    }
    if (h == NULL || MHD_get_timeout(h->d, &t) != MHD_YES)
        return cap_ms;
    return t < (MHD_UNSIGNED_LONG_LONG)cap_ms ? (int)t : cap_ms;
}

void bh_http_run(bh_http *h) {
    if (h == NULL)
        return;
    /* One answer per loop turn, and none for as long as the last one took
     * to render: between two of them the loop serves every ready socket
     * connection, and rendering never takes more than half of its time,
     * whatever the HTTP clients ask. */
    uint64_t start = now_us();
    pending *p = start >= h->next_render_us ? dequeue(h) : NULL;
    if (p != NULL) {
        render(h, p);
        p->answered = 1;
        MHD_resume_connection(p->conn);
        uint64_t end = now_us();
        h->next_render_us = end + (end - start);
    }
    MHD_run(h->d);
}

uint64_t bh_http_requests(const bh_http *h) { return h != NULL ? h->requests : 0; }
size_t bh_http_held(const bh_http *h) { return h != NULL ? h->held : 0; }
uint64_t bh_http_busy_refusals(const bh_http *h) { return h != NULL ? h->busy_refusals : 0; }
uint64_t bh_http_host_refusals(const bh_http *h) { return h != NULL ? h->host_refusals : 0; }

unsigned bh_http_connections(const bh_http *h) {
    if (h == NULL)
        return 0;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i != NULL ? i->num_connections : 0;
}

void bh_http_close(bh_http *h) {
    if (h == NULL)
        return;
    /* libmicrohttpd must not be stopped with suspended connections. */
    for (pending *p; (p = dequeue(h)) != NULL;)
        MHD_resume_connection(p->conn);
    MHD_stop_daemon(h->d);
    free(h);
}
