/*
 * ttclient.c - bh-demo's raw runtime reporting to a TT allocation server the
 * way TT's own allocation client does (--tt-server): every ALLOC and every
 * FREE of every Buffer object, one record each, written whole with a blocking
 * send. So the raw run's extra FREEs reach the server as its "unknown buffer"
 * warnings, while the handle run goes through the library's TT reporter.
 * Owns: that connection and the records on it (wire.h builds them; the
 * BufferType comes from wire.h's one kind table).
 * Must never: hold back or reorder a record (it stands for TT's client, not
 * the library's reporter), or die of SIGPIPE (MSG_NOSIGNAL).
 */
#define _POSIX_C_SOURCE 200809L
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"
#include "proc.h"
#include "wire.h"

int demo_tt_connect(const char *path) { return bh_unix_connect(path); }

int demo_tt_send(int fd, unsigned size, const bh_event *ev) {
    uint8_t r[BH_TT_RECORD_144] = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    bh_tt_client_record(r, size, ev->kind == BH_EVENT_ALLOC, ev->device, ev->size, ev->address,
                        (int32_t)getpid(), (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    for (size_t off = 0; off < size;) {
        ssize_t n = send(fd, r + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}
