/*
 * rings.h - a test's hand-made event rings (docs/protocol.md, "The event
 * ring"): a memfd laid out as a ring, records put straight into it, and the
 * frames that hand it over with descriptors riding along.
 *
 * Owns: those helpers, shared by test_ring.c, test_ring_end.c and
 * test_hostile_ring.c.
 * Must never: hide a failure (each step asserts through cmocka) or wait
 * without a bound (reads time out through the socket's SO_RCVTIMEO).
 */
#ifndef BH_TEST_RINGS_H
#define BH_TEST_RINGS_H

#include <stddef.h>
#include <stdint.h>

/* A ring of cap records for stream 1 in a memfd named "hostile": sealed
 * against shrinking (seal set), of the size it claims (bytes 0: the right
 * one). Returns the descriptor and maps it at *map. */
int tr_make_ring(uint32_t cap, int seal, size_t bytes, uint8_t **map);
/* n bytes of p on sock (asserted: all of them). */
void tr_send(int sock, const void *p, size_t n);
/* HELLO of this process, named "ring". */
void tr_hello(int sock);
/* A frame carrying only a stream id (RESYNC_BEGIN, RESYNC_END, RING_CLOSE). */
void tr_send_stream_frame(int sock, uint16_t type, uint32_t stream);
/* The bytes f[0..n) in one sendmsg, with nfds descriptors riding along. */
void tr_send_fds(int sock, const uint8_t *f, size_t n, const int *fds, int nfds);
/* The same with sendmsg flags added (MSG_OOB: the bytes out of band). */
void tr_send_fds_flags(int sock, const uint8_t *f, size_t n, const int *fds, int nfds, int flags);
/* RING for stream 1 of cap records with fd (-1: none). */
void tr_send_ring(int sock, uint32_t cap, int fd);
/* A well-formed ring of cap records (tr_make_ring, sealed) handed over on
 * sock, and the server's RING_ACK saying it took it (asserted). Returns its
 * descriptor, mapped at *map. */
int tr_taken_ring(int sock, uint32_t cap, uint8_t **map);
/* Reads frames until one of type arrives or the connection ends; returns the
 * first payload word (RING_ACK: the stream; ERROR: the code) or -1, and the
 * second word at *second (may be NULL). */
int64_t tr_await_frame(int sock, uint16_t type, uint32_t *second);
/* Record i of the ring: number n, kind, stream 1, address (ALLOC: size 64;
 * MARK: address is the mark id). */
void tr_put_record(uint8_t *ring, uint32_t cap, uint64_t i, uint64_t n, uint8_t kind, uint64_t address);
/* The producer's head: records before it are there (release). */
void tr_publish(uint8_t *ring, uint64_t head);

/* Waits until the server has read everything sent on sock (and so holds,
 * or has let go, the descriptors that rode along). */
void tr_await_read(int sock);

#endif /* BH_TEST_RINGS_H */
