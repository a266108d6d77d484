/*
 * wire.h - bh-trackd's native wire protocol, the shared-memory event ring and
 * the TT-Metal 72-byte record, shared by the library's socket reporter and
 * the server (docs/protocol.md).
 *
 * Owns: frame and ring layout constants and little-endian encode/decode
 * helpers.
 * Must never: trust a length it did not check against BH_WIRE_MAX_PAYLOAD, or
 * depend on struct layout (everything is packed by hand); frames and ring
 * records are little-endian; only the ring's two indices are host-order
 * atomics (the ring never leaves the host).
 */
#ifndef BH_WIRE_H
#define BH_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bufhandle/bufhandle.h"

#define BH_WIRE_MAGIC 0x4b544842u /* "BHTK" little-endian */
#define BH_WIRE_VERSION 1u
#define BH_WIRE_HEADER 12u             /* magic u32, version u16, type u16, length u32 */
#define BH_WIRE_MAX_PAYLOAD (1u << 20) /* larger frames are malformed */
#define BH_WIRE_MAX_NAME 255u

enum bh_wire_type {
    BH_WIRE_HELLO = 1,              /* c->s: pid u32, version u16, flags u16, name_len u16, name
                                             [NUL, start u64 with BH_WIRE_HELLO_START] */
    BH_WIRE_EVENT = 2,              /* c->s: stream u32, kind u8, pad u8[3], device u32, pad u32,
                                             address u64, size u64, seq u64 (40 bytes) */
    BH_WIRE_RESYNC_BEGIN = 3,       /* c->s: stream u32; or (ring streams) stream u32, pad u32, mark u64 */
    BH_WIRE_RESYNC_CHUNK = 4,       /* c->s: stream u32, count u32, count * {device u32, pad u32,
                                             address u64, size u64} */
    BH_WIRE_RESYNC_END = 5,         /* c->s: stream u32 */
    BH_WIRE_QUERY = 6,              /* c->s: what u16 (1 stats, 2 dump), format u16 (0 text, 1 json) */
    BH_WIRE_REPLY = 7,              /* s->c: text (the answer to QUERY) */
    BH_WIRE_ERROR = 8,              /* s->c: code i32 (bh_status), message; then the server closes */
    BH_WIRE_RESYNC_CHUNK_TIMED = 9, /* c->s: stream u32, count u32, count * {device u32, pad u32,
                                            address u64, size u64, time_ms u64} */
    BH_WIRE_RING = 10,              /* c->s: stream u32, capacity u32, stale_mark u64; a memfd rides along */
    BH_WIRE_RING_ACK = 11,          /* s->c: stream u32, status i32 (0: the server drains the ring) */
    BH_WIRE_DRAIN = 12,             /* c->s: empty; drain my rings now (a flush waits) */
    BH_WIRE_RING_CLOSE = 13         /* c->s: stream u32; drain what is left, then let the ring go */
};

#define BH_WIRE_HELLO_CONTROL 0x1u /* HELLO flag: a query connection, not a process's reporter */
/* HELLO flag: the name is followed by a NUL byte and the process's start
 * time u64 (bh_proc_start: clock ticks since boot), which with the pid names
 * the process across its reconnections when the server cannot see its pid
 * (docs/protocol.md, "Peers the server cannot see"). A server that knows no
 * such flag shows the name up to the NUL. */
#define BH_WIRE_HELLO_START 0x2u
#define BH_WIRE_HELLO_MAX (BH_WIRE_HEADER + 10u + BH_WIRE_MAX_NAME)
#define BH_WIRE_EVENT_LEN 40u
#define BH_WIRE_RESYNC_ENTRY 24u
#define BH_WIRE_RESYNC_TIMED_ENTRY 32u
#define BH_WIRE_RESYNC_BEGIN_MARK 16u /* RESYNC_BEGIN's length when it names a ring mark */
#define BH_WIRE_RING_LEN 16u          /* RING: stream, capacity, marks up to stale_mark are stale */

/* ------------------------------------------------------------ the event ring
 * A stream's events in a memfd shared with bh-trackd (docs/protocol.md, "The
 * event ring"). One producer (the stream, under its lock), one consumer (the
 * server, or the reporter's own sender when the server takes no ring). */
#define BH_RING_MAGIC 0x47524842u /* "BHRG" little-endian */
#define BH_RING_VERSION 1u
#define BH_RING_HEADER 256u        /* header bytes; records follow */
#define BH_RING_RECORD 40u         /* bytes per record */
#define BH_RING_MAX_CAP (1u << 22) /* records (160 MiB); larger rings are refused */
#define BH_RING_MIN_CAP 64u
/* Header fields (offsets). HEAD is written by the producer only, TAIL and
 * LAST_N by the consumer only, each on a cache line of its own. */
#define BH_RING_OFF_MAGIC 0u    /* u32 */
#define BH_RING_OFF_VERSION 4u  /* u16 */
#define BH_RING_OFF_RECSZ 6u    /* u16, BH_RING_RECORD */
#define BH_RING_OFF_CAP 8u      /* u32, records, a power of two */
#define BH_RING_OFF_STREAM 12u  /* u32 */
#define BH_RING_OFF_HEAD 64u    /* u64 atomic: records written (release after the record) */
#define BH_RING_OFF_TAIL 128u   /* u64 atomic: records consumed (release after reading) */
#define BH_RING_OFF_LAST_N 136u /* u64 atomic: n of the last record consumed */
/* Record fields: n u64 @0 (the stream's event number: 1, 2, 3, ...; a number
 * with no record was lost), kind u8 @8, pad u8[3], device u32 @12, address u64
 * @16, size u64 @24, time_ms u64 @32 (ALLOC: CLOCK_MONOTONIC ms at the
 * report; 0: unknown). MARK: n is the last number given (a MARK takes none),
 * address the mark id a RESYNC_BEGIN names. */
enum bh_ring_kind { BH_RING_ALLOC = 1, BH_RING_FREE = 2, BH_RING_MARK = 3 };

static inline size_t bh_ring_bytes(uint32_t cap) { return BH_RING_HEADER + (size_t)cap * BH_RING_RECORD; }

/* The ring's indices: 8-byte aligned in a shared mapping, host order. */
static inline uint64_t bh_ring_load(const uint8_t *ring, size_t off) {
    return __atomic_load_n((const uint64_t *)(const void *)(ring + off), __ATOMIC_ACQUIRE);
}
static inline void bh_ring_store(uint8_t *ring, size_t off, uint64_t v) {
    __atomic_store_n((uint64_t *)(void *)(ring + off), v, __ATOMIC_RELEASE);
}

/* TT-Metal's allocation records (docs/protocol.md, "TT-Metal compat records"):
 * three sizes, no version field; offsets 0..71 are alike in all three. */
#define BH_TT_RECORD 72u      /* the original client and server */
#define BH_TT_RECORD_112 112u /* + device info at 72..111 */
#define BH_TT_RECORD_144 144u /* + cb_allocated, kernel_allocated at 72, 80; device info at 88..127 */
enum bh_tt_type {
    BH_TT_ALLOC = 1,
    BH_TT_FREE = 2,
    BH_TT_QUERY = 3,
    BH_TT_RESPONSE = 4,
    BH_TT_DUMP_REMAINING = 5,
    BH_TT_DEVICE_INFO_QUERY = 6,
    BH_TT_DEVICE_INFO_RESPONSE = 7,
    BH_TT_CB_ALLOC = 8, /* circular buffer: size, cb_id in buffer_id */
    BH_TT_CB_FREE = 9,
    BH_TT_KERNEL_LOAD = 10, /* kernel code: size, kernel_id in buffer_id, kernel type in buffer_type */
    BH_TT_KERNEL_UNLOAD = 11,
    BH_TT_DUMP_KERNELS = 12,
    BH_TT_LAST_KNOWN = 12
};
/* The memory kinds bh-trackd files TT's circular buffers and kernel code
 * under (two of the caller's own kinds, named "cb" and "kernel" in its
 * outputs). */
#define BH_TT_KIND_CB 14u
#define BH_TT_KIND_KERNEL 15u
/* The kind bh-trackd's per-process view charges a FREE to when the record
 * gives no buffer_type and the process never held that address in any kind
 * (named "unknown"; another of the caller's own kinds). */
#define BH_TT_KIND_UNKNOWN 13u
/* TT buffer_type <-> memory kind, the one table the reporter and bh-trackd
 * share, for every record size: buffer_type is TT-Metal's BufferType enum
 * (0 DRAM, 1 L1, 2 SYSTEM_MEMORY, 3 L1_SMALL, 4 TRACE), indexed here. */
#define BH_TT_BUFFER_TYPES 5u
static inline const uint8_t *bh_tt_kinds(void) {
    static const uint8_t kinds[BH_TT_BUFFER_TYPES] = {BH_MEM_DRAM, BH_MEM_L1, BH_MEM_SYSTEM, BH_MEM_L1_SMALL,
                                                      BH_MEM_TRACE};
    return kinds;
}
/* The memory kind of a buffer_type, or -1 (none: 5..255). */
static inline int bh_tt_kind_of(uint8_t buffer_type) {
    return buffer_type < BH_TT_BUFFER_TYPES ? bh_tt_kinds()[buffer_type] : -1;
}
/* The buffer_type of a memory kind, or -1 (kinds 5..15 have none). */
static inline int bh_tt_buffer_type_of(uint32_t kind) {
    for (uint8_t t = 0; t < BH_TT_BUFFER_TYPES; t++)
        if (bh_tt_kinds()[t] == kind)
            return t;
    return -1;
}
/* The record size a BH_TT_RECORD_SIZE value names: 112, 144, else 72. */
static inline unsigned bh_tt_record_size_of(const char *v) {
    if (v != NULL && strcmp(v, "112") == 0)
        return BH_TT_RECORD_112;
    if (v != NULL && strcmp(v, "144") == 0)
        return BH_TT_RECORD_144;
    return BH_TT_RECORD;
}
#define BH_TT_DEFAULT_SOCKET "/tmp/tt_allocation_server.sock"

/* ------------------------------------------------------------ little endian */

static inline void bh_put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
/* On a little-endian host a value is already in the wire's order: one
 * store. Byte by byte, the compiler merges the stores only when it can prove
 * that p aliases nothing it reads in between: a ring record written from an
 * event took 88 instructions of shifts (the socket reporter's report path). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline void bh_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof(v)); }
static inline void bh_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, sizeof(v)); }
#else
static inline void bh_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void bh_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
#endif
static inline uint16_t bh_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t bh_get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint64_t bh_get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Writes a frame header; returns BH_WIRE_HEADER. */
static inline size_t bh_wire_header(uint8_t *p, uint16_t type, uint32_t length) {
    bh_put32(p, BH_WIRE_MAGIC);
    bh_put16(p + 4, BH_WIRE_VERSION);
    bh_put16(p + 6, type);
    bh_put32(p + 8, length);
    return BH_WIRE_HEADER;
}

/* One HELLO frame into p (BH_WIRE_HELLO_MAX bytes): the name cut to fit,
 * and, when start is not 0, BH_WIRE_HELLO_START with it. Returns its size. */
static inline size_t bh_wire_hello(uint8_t *p, uint32_t pid, uint16_t flags, const char *name, size_t n_name,
                                   uint64_t start) {
    size_t tail = start != 0 ? 9u : 0u;
    if (n_name > BH_WIRE_MAX_NAME - tail)
        n_name = BH_WIRE_MAX_NAME - tail;
    size_t n = bh_wire_header(p, BH_WIRE_HELLO, (uint32_t)(10 + n_name + tail));
    bh_put32(p + n, pid);
    bh_put16(p + n + 4, BH_WIRE_VERSION);
    bh_put16(p + n + 6, (uint16_t)(flags | (start != 0 ? BH_WIRE_HELLO_START : 0)));
    bh_put16(p + n + 8, (uint16_t)(n_name + tail));
    memcpy(p + n + 10, name, n_name);
    if (start != 0) {
        p[n + 10 + n_name] = 0;
        bh_put64(p + n + 11 + n_name, start);
    }
    return n + 10 + n_name + tail;
}

/* One EVENT frame (header + 40 bytes) into p; returns its size. */
static inline size_t bh_wire_event(uint8_t *p, uint32_t stream, uint8_t kind, uint32_t device,
                                   uint64_t address, uint64_t size, uint64_t seq) {
    size_t n = bh_wire_header(p, BH_WIRE_EVENT, BH_WIRE_EVENT_LEN);
    memset(p + n, 0, BH_WIRE_EVENT_LEN);
    bh_put32(p + n, stream);
    p[n + 4] = kind;
    bh_put32(p + n + 8, device);
    bh_put64(p + n + 16, address);
    bh_put64(p + n + 24, size);
    bh_put64(p + n + 32, seq);
    return n + BH_WIRE_EVENT_LEN;
}

/* One 72-byte TT record into p. */
static inline void bh_tt_record(uint8_t *p, uint8_t type, int32_t device, uint64_t size, uint8_t buffer_type,
                                int32_t pid, uint64_t buffer_id, uint64_t timestamp) {
    memset(p, 0, BH_TT_RECORD);
    p[0] = type;
    bh_put32(p + 4, (uint32_t)device);
    bh_put64(p + 8, size);
    p[16] = buffer_type;
    bh_put32(p + 20, (uint32_t)pid);
    bh_put64(p + 24, buffer_id);
    bh_put64(p + 32, timestamp);
}

/* What a TT client sends for an ALLOC (alloc) or FREE in memory domain:
 * rec bytes (72, 112 or 144; zero past 71, the server's fields), device_id
 * and BufferType from the domain (a kind with no BufferType goes as 0), size
 * and timestamp only in ALLOC, as TT's clients fill them. */
static inline void bh_tt_client_record(uint8_t *p, unsigned rec, int alloc, uint32_t domain, uint64_t size,
                                       uint64_t address, int32_t pid, uint64_t timestamp) {
    int btype = bh_tt_buffer_type_of(BH_DOMAIN_KIND(domain));
    memset(p, 0, rec);
    bh_tt_record(p, alloc ? BH_TT_ALLOC : BH_TT_FREE, (int32_t)BH_DOMAIN_DEVICE(domain), alloc ? size : 0,
                 alloc && btype > 0 ? (uint8_t)btype : 0, pid, address, alloc ? timestamp : 0);
}

#endif
