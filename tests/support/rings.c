/*
 * rings.c - hand-made event rings for the tests (rings.h).
 *
 * Owns: what rings.h declares. Must never: be linked into the library or a
 * tool, or loosen a test's checks.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/sockios.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "support/rings.h"
#include "support/server.h"
#include "wire.h"

void tr_send(int sock, const void *p, size_t n) {
    assert_int_equal(send(sock, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

void tr_hello(int sock) {
    uint8_t f[BH_WIRE_HELLO_MAX];
    tr_send(sock, f, bh_wire_hello(f, (uint32_t)getpid(), 0, "ring", 4, 0));
}

void tr_send_stream_frame(int sock, uint16_t type, uint32_t stream) {
    uint8_t f[BH_WIRE_HEADER + 4];
    size_t h = bh_wire_header(f, type, 4);
    bh_put32(f + h, stream);
    tr_send(sock, f, sizeof(f));
}

int tr_make_ring(uint32_t cap, int seal, size_t bytes, uint8_t **map) {
    int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    size_t len = bytes ? bytes : bh_ring_bytes(cap);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    if (seal)
        assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(*map != MAP_FAILED);
    bh_put32(*map + BH_RING_OFF_MAGIC, BH_RING_MAGIC);
    bh_put16(*map + BH_RING_OFF_VERSION, BH_RING_VERSION);
    bh_put16(*map + BH_RING_OFF_RECSZ, BH_RING_RECORD);
    bh_put32(*map + BH_RING_OFF_CAP, cap);
    bh_put32(*map + BH_RING_OFF_STREAM, 1);
    return fd;
}

void tr_send_fds_flags(int sock, const uint8_t *f, size_t n, const int *fds, int nfds, int flags) {
    struct iovec iov = {(void *)f, n};
    union {
        char b[CMSG_SPACE(253 * sizeof(int))]; /* the kernel's most (SCM_MAX_FD) */
        struct cmsghdr align;
    } cm;
    assert_true(nfds >= 0 && nfds <= 253);
    memset(&cm, 0, sizeof(cm));
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        m.msg_control = cm.b;
        m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    assert_int_equal(sendmsg(sock, &m, MSG_NOSIGNAL | flags), (ssize_t)n);
}

void tr_send_fds(int sock, const uint8_t *f, size_t n, const int *fds, int nfds) {
    tr_send_fds_flags(sock, f, n, fds, nfds, 0);
}

void tr_send_ring(int sock, uint32_t cap, int fd) {
    uint8_t f[BH_WIRE_HEADER + BH_WIRE_RING_LEN];
    size_t h = bh_wire_header(f, BH_WIRE_RING, BH_WIRE_RING_LEN);
    memset(f + h, 0, BH_WIRE_RING_LEN);
    bh_put32(f + h, 1);
    bh_put32(f + h + 4, cap);
    tr_send_fds(sock, f, sizeof(f), &fd, fd >= 0);
}

int tr_taken_ring(int sock, uint32_t cap, uint8_t **map) {
    int fd = tr_make_ring(cap, 1, 0, map);
    tr_send_ring(sock, cap, fd);
    uint32_t status = 1;
    assert_int_equal(tr_await_frame(sock, BH_WIRE_RING_ACK, &status), 1);
    assert_int_equal(status, 0); /* taken */
    return fd;
}

int64_t tr_await_frame(int sock, uint16_t type, uint32_t *second) {
    uint8_t b[512];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(sock, b + have, sizeof(b) - have, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        while (have >= BH_WIRE_HEADER && have >= BH_WIRE_HEADER + bh_get32(b + 8)) {
            uint32_t len = bh_get32(b + 8);
            if (bh_get16(b + 6) == type && len >= 4) {
                if (second != NULL && len >= 8)
                    *second = bh_get32(b + BH_WIRE_HEADER + 4);
                return (int32_t)bh_get32(b + BH_WIRE_HEADER);
            }
            memmove(b, b + BH_WIRE_HEADER + len, have - BH_WIRE_HEADER - len);
            have -= BH_WIRE_HEADER + len;
        }
    }
}

void tr_put_record(uint8_t *ring, uint32_t cap, uint64_t i, uint64_t n, uint8_t kind, uint64_t address) {
    uint8_t *r = ring + BH_RING_HEADER + (size_t)(i & (cap - 1)) * BH_RING_RECORD;
    memset(r, 0, BH_RING_RECORD);
    bh_put64(r, n);
    r[8] = kind;
    bh_put32(r + 12, 1);
    bh_put64(r + 16, address);
    bh_put64(r + 24, 64);
}

void tr_publish(uint8_t *ring, uint64_t head) { bh_ring_store(ring, BH_RING_OFF_HEAD, head); }

void tr_await_read(int sock) {
    int left = 1;
    for (double end = test_now_s() + TEST_HANG_S; left > 0 && test_now_s() < end;) {
        assert_int_equal(ioctl(sock, SIOCOUTQ, &left), 0);
        if (left > 0)
            test_sleep_ms(1);
    }
    assert_int_equal(left, 0);
}
