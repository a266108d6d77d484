/*
 * report_ring.c - a stream's event ring (report_socket.h; the layout is in
 * src/common/wire.h and docs/protocol.md, "The event ring").
 *
 * Owns: the ring's memory (a sealed memfd, mapped shared, so bh-trackd can
 * map it too; private memory if memfds are unavailable), the producer end
 * (records written under the stream's lock, the head published with release)
 * and the consumer end the sender uses when it drains a ring itself.
 * Must never: overwrite a record the consumer has not taken (a full ring
 * drops, the caller counts it), fill the record kept free for a MARK with an
 * event, or trust the consumer's tail beyond "is there room".
 */
#define _GNU_SOURCE /* memfd_create, F_ADD_SEALS */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "report_socket.h"

uint64_t rs_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A memfd of the ring's size, sealed so that it can neither shrink nor grow
 * (the server refuses one that could shrink under its mapping); -1 if memfds
 * or seals are unavailable. */
static int ring_memfd(size_t bytes) {
    int fd = memfd_create("bh-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)bytes) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int rs_ring_make(stream *s, uint32_t cap) {
    size_t bytes = bh_ring_bytes(cap);
    int fd = ring_memfd(bytes);
    void *m =
        mmap(NULL, bytes, PROT_READ | PROT_WRITE, fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
    if (m == MAP_FAILED) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    s->ring = m;
    s->ring_fd = fd;
    s->cap = cap;
#if defined(BH_VALGRIND_ANNOTATIONS) && BH_VALGRIND_ANNOTATIONS
    /* For helgrind and drd, which do not see the __atomic operations: the
     * records are published by the head's release store and read after its
     * acquire load; the pages written ahead are added 0 atomically. */
    ANNOTATE_BENIGN_RACE_SIZED(m, bytes, "ring: ordered by head/tail release-acquire");
#endif
    bh_put32(s->ring + BH_RING_OFF_MAGIC, BH_RING_MAGIC);
    bh_put16(s->ring + BH_RING_OFF_VERSION, BH_RING_VERSION);
    bh_put16(s->ring + BH_RING_OFF_RECSZ, BH_RING_RECORD);
    bh_put32(s->ring + BH_RING_OFF_CAP, cap);
    bh_put32(s->ring + BH_RING_OFF_STREAM, s->id);
    rs_ring_prefault(s);
    return 0;
}

void rs_ring_free(stream *s) {
    if (s->ring != NULL)
        munmap(s->ring, bh_ring_bytes(s->cap));
    if (s->ring_fd >= 0)
        close(s->ring_fd);
    s->ring = NULL;
    s->ring_fd = -1;
}

/* The ring's pages are made present and written once ahead of the
 * producer, from the sender thread, so that a report does not pay for the
 * first write to a fresh page of shared memory (a fault, or on a virtual
 * machine an exit to the hypervisor: measured 2-10 us, one report in a
 * hundred on the first lap; the p99 of a report went from 4.2 us to 0.13-0.37
 * us). The write is an atomic add of 0 to the page's last word: it changes
 * nothing a producer or consumer may be reading or writing there. PREFAULT bytes ahead: 220 ms of 450K
 * events/s, more than the sender's longest idle wait. Once every page was touched, nothing more. */
#define PREFAULT (4u << 20)

void rs_ring_prefault(stream *s) {
    if (s->prefaulted >= s->cap)
        return;
    /* Acquire: only a position; nothing is read through it. */
    uint64_t head = bh_ring_load(s->ring, BH_RING_OFF_HEAD);
    uint64_t want = head + PREFAULT / BH_RING_RECORD;
    if (want > s->cap)
        want = s->cap;
    if (want <= s->prefaulted + PREFAULT / BH_RING_RECORD / 4 && want < s->cap)
        return; /* in steps of a quarter window */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t from = (BH_RING_HEADER + (size_t)s->prefaulted * BH_RING_RECORD) & ~(page - 1);
    size_t to = BH_RING_HEADER + (size_t)want * BH_RING_RECORD;
    to = (to + page - 1) & ~(page - 1);
    if (to > bh_ring_bytes(s->cap))
        to = bh_ring_bytes(s->cap); /* the mapping ends inside its last page */
#ifdef MADV_POPULATE_WRITE
    (void)madvise(s->ring + from, to - from, MADV_POPULATE_WRITE); /* else the faults stay the producer's */
#endif
    for (size_t off = from + page - 8; off < to; off += page)
        __atomic_fetch_add((uint64_t *)(void *)(s->ring + off), 0, __ATOMIC_RELAXED);
    s->prefaulted = want;
}

uint64_t rs_ring_tail(const stream *s) { return bh_ring_load(s->ring, BH_RING_OFF_TAIL); }

static uint8_t *record(const stream *s, uint64_t i) {
    return s->ring + BH_RING_HEADER + (size_t)(i & (s->cap - 1)) * BH_RING_RECORD;
}

int rs_ring_put(stream *s, uint8_t kind, const bh_event *ev, uint64_t n, uint64_t time_ms) {
    /* Acquire: pairs with the consumer's release of the tail, so the records
     * it took are read before we overwrite them. A tail the consumer wrote
     * past the head reads as "full": nothing is overwritten. */
    uint64_t limit = s->cap - (kind == BH_RING_MARK ? 0u : 1u);
    if (s->head - s->tail_seen >= limit) { /* the tail is read only when it may matter */
        s->tail_seen = rs_ring_tail(s);
        if (s->head - s->tail_seen >= limit)
            return -1;
    }
    uint8_t *r = record(s, s->head);
    bh_put64(r, n);
    bh_put32(r + 8, kind);
    bh_put32(r + 12, ev->device);
    bh_put64(r + 16, ev->address);
    bh_put64(r + 24, ev->size);
    bh_put64(r + 32, time_ms);
    s->head++;
    /* Release: the record above is visible to a consumer that loads this
     * head with acquire (bh-trackd's drain, or rs_ring_peek). */
    bh_ring_store(s->ring, BH_RING_OFF_HEAD, s->head);
    return 0;
}

uint8_t rs_ring_peek(const stream *s, bh_event *ev, uint64_t *n) {
    uint64_t tail = rs_ring_tail(s);
    /* Acquire: pairs with rs_ring_put's release; the record is complete. */
    if (tail == bh_ring_load(s->ring, BH_RING_OFF_HEAD))
        return 0;
    const uint8_t *r = record(s, tail);
    *n = bh_get64(r);
    uint8_t kind = r[8];
    ev->kind = (bh_event_kind)kind;
    ev->device = bh_get32(r + 12);
    ev->address = bh_get64(r + 16);
    ev->size = bh_get64(r + 24);
    ev->seq = *n;
    return kind;
}

uint64_t rs_ring_events(const stream *s) {
    uint64_t events = 0;
    /* Relaxed enough: under s->lock the head is ours; the tail is read once
     * (acquire, rs_ring_tail) and a consumer that moves it meanwhile only
     * makes the count a bound. */
    for (uint64_t at = rs_ring_tail(s); at < s->head; at++)
        events += record(s, at)[8] != BH_RING_MARK;
    return events;
}

void rs_ring_pop(stream *s, uint64_t n) {
    bh_ring_store(s->ring, BH_RING_OFF_LAST_N, n);
    /* Release: pairs with rs_ring_put's acquire of the tail. */
    bh_ring_store(s->ring, BH_RING_OFF_TAIL, rs_ring_tail(s) + 1);
}
