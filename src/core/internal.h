/*
 * internal.h - what the library's files share and nothing else sees.
 *
 * Owns: the control block, the slab, the table shard and the registry layouts,
 * and the bh__ functions one file offers another. Names here are bh__ (two
 * underscores); file-local helpers are static without a prefix.
 * Must never: be installed, or be included by anything outside src/ and the
 * white-box unit tests.
 */
#ifndef BH_INTERNAL_H
#define BH_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "atomics.h"
#include "common/fmix.h"
#include "range_lock.h"
#include "bufhandle/bufhandle.h"

#define BH__CACHE_LINE 64

/* ======================== Handles ======================== */

#define BH__SLOT_BITS 24
#define BH__SLOT_MASK ((1u << BH__SLOT_BITS) - 1u)
#define BH__TAG_SHIFT 24
#define BH__GEN_SHIFT 32

static inline bh_handle bh__handle_make(uint32_t slot, uint32_t tag, uint32_t gen) {
    bh_handle h;
    h.bits = (uint64_t)slot | ((uint64_t)tag << BH__TAG_SHIFT) | ((uint64_t)gen << BH__GEN_SHIFT);
    return h;
}
static inline uint32_t bh__handle_slot(bh_handle h) { return (uint32_t)h.bits & BH__SLOT_MASK; }
static inline uint32_t bh__handle_tag(bh_handle h) { return (uint32_t)(h.bits >> BH__TAG_SHIFT) & 0xffu; }
/* The generation field as it appears in the handle: the slot's generation
 * XOR the registry's salt (see bh__handle_of / bh__handle_gen_of). */
static inline uint32_t bh__handle_gen(bh_handle h) { return (uint32_t)(h.bits >> BH__GEN_SHIFT); }

/* ======================== Control block ======================== */

/* The block's state word packs the slot generation (high 32 bits) with the
 * reference count (low 32 bits), so "is this still generation g, and is it
 * alive?" and "take a reference" are one compare-and-swap: a stale handle can
 * never add a reference to the slot's next incarnation (no ABA window). */
#define BH__REFS_MASK 0xffffffffull
/* The word packs two 32-bit halves, and counters, gauges and addresses are
 * AO_t: 32-bit targets (where AO_t is 32 bits) are not supported. */
_Static_assert(sizeof(AO_t) == 8, "bufhandle needs a 64-bit AO_t (a 64-bit target)");
static inline uint32_t bh__word_gen(AO_t w) { return (uint32_t)((uint64_t)w >> 32); }
static inline uint32_t bh__word_refs(AO_t w) { return (uint32_t)((uint64_t)w & BH__REFS_MASK); }
static inline AO_t bh__word_make(uint32_t gen, uint32_t refs) { return (AO_t)(((uint64_t)gen << 32) | refs); }

/* A block's meta word: its slot (bits 0..23, immutable once the slot is
 * handed out) and, above it, the phase after the last release, read by
 * bh_alloc and bh_adopt to tell an allocator bug (address handed out before
 * its free ran) from the legitimate reuse of an address whose free has
 * started. */
#define BH__META_FREEING (1u << BH__SLOT_BITS)

typedef struct bh__block bh__block;
struct bh__block {
    AO_t word;       /* ATOMIC: gen << 32 | refs; refs 0 = dying or free */
    AO_t address;    /* ATOMIC: written (release) before the block is published; while the
                        block is free, the link of its shard's free list (release) */
    AO_t size;       /* ATOMIC: written (release) before the block is published */
    unsigned device; /* ATOMIC (AO_int_*): same */
    unsigned meta;   /* ATOMIC (AO_int_*): slot | BH__META_FREEING (release by the freeing thread) */
};
/* 32 bytes, two blocks per cache line: the slab aligns chunks to a pair of
 * lines, so no block straddles two, and everything a hit needs (word, key,
 * size, slot) is on one line. */
_Static_assert(sizeof(bh__block) == 32, "a control block is 32 bytes");
_Static_assert(BH__CACHE_LINE % sizeof(bh__block) == 0, "a control block never spans two cache lines");
/* Blocks per 128 bytes (a pair of lines, which Intel's adjacent-line
 * prefetcher fetches together): the slab's stride for fresh slots. */
#define BH__BLOCKS_PER_PAIR ((uint32_t)(2 * BH__CACHE_LINE / sizeof(bh__block)))

/* A block's domain and slot. Relaxed: callers order them (the shard lock, or
 * an acquire of the word; see hot.h); the slot never changes once the
 * block has been handed out. */
static inline uint32_t bh__block_device(const bh__block *b) { return AO_int_load(&b->device); }
static inline uint32_t bh__block_slot(const bh__block *b) { return AO_int_load(&b->meta) & BH__SLOT_MASK; }
/* The next block of a free (or fresh) list threaded through address: a free
 * block's address means nothing else. Relaxed: lists are read under the lock
 * that guards them. */
static inline bh__block *bh__block_next_free(const bh__block *b) { return (bh__block *)AO_load(&b->address); }

/* ======================== Host memory (hostmem.c) ======================== */

void *bh__calloc(size_t n, size_t size);
/* Zeroed memory aligned to align (a power of two, multiple of sizeof(void *)). */
void *bh__zalloc_aligned(size_t align, size_t size);
/* The same, uninitialised: for arenas whose pages should stay untouched
 * until used. */
void *bh__alloc_aligned(size_t align, size_t size);
void bh__free(void *p);
/* Asks for transparent huge pages over the BH__HUGE_PAGE-aligned part of a
 * large array (advice only; see hostmem.c). */
#define BH__HUGE_PAGE ((size_t)2 << 20)
void bh__advise_huge(void *p, size_t len);

/* Memory the library hands out from its own pools (range-index nodes from
 * arenas) is invisible to ASan and memcheck, which see only the arena's
 * allocation: these tell them which parts are not in use, so a use of a
 * freed node is reported as it would be for a freed malloc block. Nothing in
 * other builds (BH_VALGRIND_ANNOTATIONS: the library's debug preset). */
#include "common/sanitize.h"
#if BH__ASAN
#include <sanitizer/asan_interface.h>
#define BH__ASAN_NOACCESS(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define BH__ASAN_USABLE(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define BH__ASAN_NOACCESS(p, n) ((void)(p), (void)(n))
#define BH__ASAN_USABLE(p, n) ((void)(p), (void)(n))
#endif
#if defined(BH_VALGRIND_ANNOTATIONS) && BH_VALGRIND_ANNOTATIONS
#include <valgrind/memcheck.h>
#define BH__VG_NOACCESS(p, n) ((void)VALGRIND_MAKE_MEM_NOACCESS((p), (n)))
#define BH__VG_USABLE(p, n) ((void)VALGRIND_MAKE_MEM_UNDEFINED((p), (n)))
#else
#define BH__VG_NOACCESS(p, n) ((void)(p), (void)(n))
#define BH__VG_USABLE(p, n) ((void)(p), (void)(n))
#endif
/* [p, p + n) is not in use: any access is an error. */
static inline void bh__mem_noaccess(void *p, size_t n) {
    BH__ASAN_NOACCESS(p, n);
    BH__VG_NOACCESS(p, n);
}
/* [p, p + n) is handed out again (contents undefined until written). */
static inline void bh__mem_usable(void *p, size_t n) {
    BH__ASAN_USABLE(p, n);
    BH__VG_USABLE(p, n);
}
/* Test hook: the k-th host allocation from now fails (k >= 1); 0 disarms. */
void bh__hostmem_fail_at(long k);
/* Test hook: host allocations attempted since the process started. */
long bh__hostmem_attempts(void);

/* ======================== Slab (slab.c) ======================== */

/* Slot s lives in chunk c = floor(log2(s / BASE + 1)), which holds BASE << c
 * blocks: the directory stays tiny, chunks never move, and a registry never
 * holds more than twice the blocks it has needed. Chunks are aligned to a
 * pair of cache lines: a block's size divides a line, so no block spans two
 * lines, and a find, the reference CAS and the handle it returns cost one
 * miss together, not two. */
#define BH__SLAB_BASE 64u
#define BH__SLAB_CHUNKS 19 /* enough for every 24-bit slot index */

/* The directory holds, per chunk, not the chunk's address but its "base":
 * the address slot 0 would have if the chunk started there (chunk address
 * minus one block per slot before the chunk's first), plus 1. A block is
 * then base - 1 + sizeof(bh__block) * slot, one shift and one add, and the
 * + 1 keeps every existing chunk's entry non-zero whatever its address (bases
 * are multiples of the block size), so 0 still means "no chunk". */
typedef struct bh__slab {
    AO_t chunks[BH__SLAB_CHUNKS]; /* ATOMIC: chunk base + 1 (above), 0 none; published with release */
    pthread_mutex_t lock;         /* guards next_fresh, chunk creation and raw */
    uint32_t next_fresh;          /* under lock: next never-used slot (0 and its pair reserved) */
    void *raw[BH__SLAB_CHUNKS];   /* under lock: what bh__calloc returned for each chunk */
} bh__slab;

void bh__slab_init(bh__slab *slab);
void bh__slab_fini(bh__slab *slab);

/* floor(log2(slot / BASE + 1)), written so that it compiles to an add, a
 * shift and a bsr on every handle decode: (slot + BASE) / BASE is that
 * argument without a separate + 1 (slot < 2^24: no overflow), and 63 ^ clz
 * is 63 - clz for an argument >= 1, which gcc turns into a bare bsr where it
 * kept the subtraction (and a register for the 63) inside the lock-free
 * probe loop. */
static inline uint32_t bh__slab_chunk_of(uint32_t slot) {
    return (uint32_t)__builtin_clzll(((uint64_t)slot + BH__SLAB_BASE) / BH__SLAB_BASE) ^ 63u;
}
static inline uint32_t bh__slab_chunk_first(uint32_t c) { return BH__SLAB_BASE * ((1u << c) - 1u); }

/* The directory entry of a chunk that starts at chunk (see bh__slab). */
static inline AO_t bh__slab_entry(const bh__block *chunk, uint32_t c) {
    return (AO_t)((uintptr_t)chunk - (uintptr_t)bh__slab_chunk_first(c) * sizeof(bh__block) + 1u);
}

/* The block of a slot, or NULL if that slot's memory never existed. Safe for
 * any value: a forged handle reads nothing outside the slab (the chunk is
 * chosen by the slot, so the slot is inside it). Inline: every handle
 * operation decodes a handle, and a call plus the directory walk were a
 * quarter of a retain/release pair's instructions. */
static inline AO_t bh__slab_entry_of(const bh__slab *slab, uint32_t slot) {
    /* Acquire pairs with the release store that published the chunk: the
     * zeroed contents are visible before we read a block. */
    return AO_load_acquire(&slab->chunks[bh__slab_chunk_of(slot & BH__SLOT_MASK)]);
}
/* The block of slot in the chunk whose (non-zero) entry is entry. */
static inline bh__block *bh__slab_block(AO_t entry, uint32_t slot) {
    return (bh__block *)((uintptr_t)entry - 1u + (uintptr_t)(slot & BH__SLOT_MASK) * sizeof(bh__block));
}
static inline bh__block *bh__slab_at(const bh__slab *slab, uint32_t slot) {
    AO_t entry = bh__slab_entry_of(slab, slot);
    return entry != 0 ? bh__slab_block(entry, slot) : NULL;
}

/* Hands out up to want never-used blocks, chained through their address
 * (bh__block_next_free). Consecutive blocks of the list are
 * BH__BLOCKS_PER_PAIR slots apart where the refill allows, so two keys made
 * one after the other (say by two threads that then each hammer their own
 * handle) do not share a cache line or a prefetched pair of lines. Returns how
 * many (0 when host memory or the slot space ran out). */
uint32_t bh__slab_take_fresh(bh__slab *slab, uint32_t want, bh__block **head);
/* One past the highest slot handed out so far: every slot below it has its
 * chunk, which never moves (a walk over all blocks stops here). Takes the
 * slab lock. */
uint32_t bh__slab_fresh_end(bh__slab *slab);

/* ======================== Intern table (table.c) ======================== */

/* An entry: slot (bits 0..23), a 4-bit tag (bits 24..27: hash bits that pick
 * neither the shard nor the index) and its distance from its home (bits
 * 28..31; BH__ENTRY_FAR: that far or farther); 0 = empty (slot 0 is never
 * handed out). A probe n places from a key's home skips, without reading its
 * block, every entry whose top byte is not bh__entry_want(tag, n) (the next
 * place's: bh__entry_want_next); an unlink knows the homes (table.c). */
#define BH__ENTRY_FAR 15u
static inline unsigned bh__entry_tag(uint64_t hash) { return (unsigned)(hash >> 50) & 0xfu; }
static inline unsigned bh__entry_want(unsigned tag, uint32_t n) {
    return tag | (n < BH__ENTRY_FAR ? n : BH__ENTRY_FAR) << 4;
}
static inline unsigned bh__entry_want_next(unsigned w) { return w < BH__ENTRY_FAR << 4 ? w + 16u : w; }
static inline unsigned bh__entry_top(unsigned e) { return e >> 24; }
static inline uint32_t bh__entry_slot(unsigned e) { return e & BH__SLOT_MASK; }

/* One array of a shard: the mask and the entries in one allocation, so a
 * reader gets a consistent pair from one pointer. */
typedef struct bh__table {
    uint32_t mask;                  /* immutable: entries - 1 (a power of two) */
    struct bh__table *retired_next; /* under the shard lock: the retired list, once replaced */
    unsigned e[];                   /* ATOMIC (AO_int_*): written under the shard lock */
} bh__table;

typedef struct bh__shard {
    /* Read by lock-free readers on every hit: on a line of its own, away
     * from the lock that writers take. */
    _Alignas(BH__CACHE_LINE) AO_t table; /* ATOMIC: current bh__table *; release store under lock */
    const struct bh__slab *slab;         /* immutable: maps entries to blocks */
    /* The range stripes' futex word (range_lock.h), inline: a churn takes
     * a shard lock twice (the new key's birth, the old key's death), and
     * glibc's mutex cost 57 instructions a pair in calls for the same one
     * locked instruction to take and one to let go. Lock order: a shard,
     * then range stripes in ascending index, then the slab. */
    _Alignas(BH__CACHE_LINE) bh__stripe_lock lock;
    uint32_t count;       /* under lock: entries in the array */
    bh__block *free_list; /* under lock: retired blocks ready for reuse */
    bh__table *retired;   /* under lock: replaced arrays, freed at fini */
    /* ATOMIC: live blocks of this shard's keys, changed by a relaxed load and
     * a release store under the lock a birth (go_live) and a death take
     * anyway (no locked instruction); read without it by bh_stats_get
     * (relaxed) and bh_registry_destroy (acquire). */
    AO_t live;
} bh__shard;

#define BH__SHARDS 64 /* power of two */

/* Device addresses are aligned and close together, so their low bits carry
 * almost no information. The murmur3 finaliser spreads every input bit over
 * the whole word; the device is folded in first with an odd multiplier so
 * that DRAM and L1 at one numeric address land far apart. Inline: it is on
 * every lookup and intern, whose lock-free hit is a few dozen instructions. */
static inline uint64_t bh__key_hash(uint32_t device, uint64_t address) {
    return bh__fmix64(address ^ ((uint64_t)device * 0x9e3779b97f4a7c15ull));
}
static inline uint32_t bh__shard_of(uint64_t hash) { return (uint32_t)(hash >> 58) & (BH__SHARDS - 1); }

/* The shard's current array. Acquire: pairs with the release store that
 * published it (grow()), so its mask and entries are visible. Under the lock
 * or not: a reader without the lock may be handed an array that is replaced
 * right after; replaced arrays live until bh__shard_fini. */
static inline bh__table *bh__shard_table(const bh__shard *shard) {
    bh__table *t = (bh__table *)AO_load_acquire(&shard->table);
    BH__HAPPENS_AFTER(&shard->table); /* for helgrind and drd: grow()'s annotation */
    return t;
}

/* Under shard->lock: a block of this shard went live (+1) or was retired
 * (-1). Release: bh_registry_destroy's acquire load that reads the count
 * sees everything the retiring thread did before (its allocator free, the
 * index removal, the retirement). */
static inline void bh__shard_live_add(bh__shard *shard, int d) {
    AO_store_release(&shard->live,
                     AO_load(&shard->live) + (AO_t)(intptr_t)d); /* relaxed load: ours, under lock */
}

/* Asks for the line of hash's home entry ahead of a locked operation on it
 * (an unlink after the allocator's free and the index removal, a claim
 * before the lock is taken), so its miss overlaps that work. Only a hint:
 * the array may be replaced before the lock is taken. */
static inline void bh__shard_prefetch(const bh__shard *shard, uint64_t hash) {
    const bh__table *t = bh__shard_table(shard);
    __builtin_prefetch(&t->e[(uint32_t)hash & t->mask], 1);
}

bh_status bh__shard_init(bh__shard *shard, const struct bh__slab *slab);
void bh__shard_fini(bh__shard *shard);
/* All under shard->lock. */
bh__block *bh__shard_find(const bh__shard *shard, uint64_t hash, uint32_t device, uint64_t address);
/* Makes sure one more bh__shard_link fits (growing if needed). BH_ENOMEM:
 * host memory ran out and the array is full; nothing changed. Inline: a
 * call only for a birth that would take the array past 3/4 full. */
bh_status bh__shard_make_room(bh__shard *shard);
static inline bh_status bh__shard_reserve(bh__shard *shard) {
    uint32_t cap = bh__shard_table(shard)->mask + 1;
    return shard->count + 1 <= cap / 4 * 3 ? BH_OK : bh__shard_make_room(shard);
}
/* Only after a successful bh__shard_reserve in the same lock hold. */
void bh__shard_link(bh__shard *shard, uint64_t hash, bh__block *b);
/* Removes slot's entry from hash's probe run; does nothing if it is absent. */
void bh__shard_unlink(bh__shard *shard, uint64_t hash, uint32_t slot);

/* The range index (range.c, range_leaf.c, range_pool.c, range_stripes.c). */
#include "range_index.h"

/* ======================== Stats (stats.c) ======================== */

enum bh__counter {
    BH__C_ALLOCS,
    BH__C_INTERNS_NEW,
    BH__C_INTERNS_ALIAS,
    BH__C_LOOKUPS_HIT,
    BH__C_LOOKUPS_MISS,
    BH__C_RETAINS,
    BH__C_RELEASES,
    BH__C_FREES,
    BH__C_STALE,
    BH__C_CONFLICTS,
    BH__C_BUSY,
    BH__C_TAKEOVERS,
    BH__C_SLOTS_RETIRED,
    BH__C_REPORTS,
    BH__C_ADOPTS,
    BH__C_OVERLAPS,
    BH__C_COUNT
};

/* Counters are striped: up to BH__OWNED_STRIPES threads at a time (numbered
 * on their first count, the number given back at thread exit) each own one
 * and bump it with a relaxed load and store, no lock prefix (a single writer
 * loses no update); the others share the rest with atomic adds. */
#define BH__OWNED_STRIPES 16
#define BH__SHARED_STRIPES 16
#define BH__STRIPES (BH__OWNED_STRIPES + BH__SHARED_STRIPES)
/* A stripe is two lines (16 counters) starting a 128-byte pair: x86's
 * spatial prefetcher fetches a line's pair buddy with it, so a stripe across
 * two pairs would pull a neighbour's hot line. The registry is allocated to
 * this alignment (_Alignof(bh_registry)). */
#define BH__STRIPE_ALIGN 128
typedef struct bh__stripe {
    _Alignas(BH__STRIPE_ALIGN) AO_t c[BH__C_COUNT]; /* ATOMIC: relaxed adds; summed by bh_stats_get */
} bh__stripe;
_Static_assert(sizeof(bh__stripe) == BH__STRIPE_ALIGN, "a stripe is one 128-byte pair of lines");

typedef struct bh__stats {
    bh__stripe stripes[BH__STRIPES];
    AO_t live_bytes;      /* ATOMIC: touched only when blocks are born or retired (live blocks: per shard) */
    AO_t peak_live_bytes; /* ATOMIC: CAS-max after every increase of live_bytes */
    /* ATOMIC: relaxed adds. Outside the stripes (which are full: 16
     * counters, one pair of lines): a refusal is a caught bug, never a hot path. */
    AO_t interns_refused;
} bh__stats;

/* This thread's number (stats.c): below BH__OWNED_STRIPES an owned stripe;
 * UINT32_MAX until its first count; anything else a shared stripe. */
extern __attribute__((tls_model("initial-exec"))) _Thread_local uint32_t bh__thread_number;
/* Test hook: how many owned numbers are free right now. */
unsigned bh__thread_numbers_free(void);
/* bh__count for a thread without an owned stripe (or not numbered yet). */
void bh__count_unowned(bh__stats *st, enum bh__counter c);

/* Counts one event on this thread's stripe. Inline: it is on every retain
 * and release, and the common case (an owned stripe) is one compare and a
 * plain increment. Relaxed: counters publish nothing; readers accept a racy
 * sum. */
static inline void bh__count(bh__stats *st, enum bh__counter c) {
    uint32_t n = bh__thread_number;
    if (__builtin_expect(n < BH__OWNED_STRIPES, 1)) {
        AO_t *p = &st->stripes[n].c[c];
        AO_store(p, AO_load(p) + 1); /* this thread is the stripe's only writer */
    } else {
        bh__count_unowned(st, c);
    }
}
/* Adds bytes to live_bytes unless the sum would pass 2^64 - 1 (returns -1,
 * nothing changed); 0 on success. Called before a block is created, so the
 * check and the addition are one atomic step. */
int bh__live_reserve(bh__stats *st, uint64_t bytes);
/* Gives back a reservation whose block was not created. */
void bh__live_unreserve(bh__stats *st, uint64_t bytes);
/* A block with reserved bytes was published: update the peak. */
void bh__live_peak(bh__stats *st);
/* A block died: its bytes leave the gauge. */
void bh__live_sub(bh__stats *st, uint64_t bytes);
void bh__stats_sum(const bh__stats *st, bh_stats *out);

/* ======================== Reporters (report_*.c) ======================== */

int bh__is_socket_reporter(const bh_reporter *rep);
/* bh_socket_reporter_open for a reporter that the environment variable var
 * asked for: an unreachable server is then said once on stderr. */
bh_status bh__socket_reporter_open_env(const char *var, const char *path, const bh_socket_options *opts,
                                       bh_reporter *out);
int bh__is_log_reporter(const bh_reporter *rep);

/* ======================== Registry (registry.c, lifecycle.c, api.c) ======================== */

struct bh_registry {
    bh__shard shards[BH__SHARDS];
    bh__ranges ranges; /* unused with BH_CONFIG_NO_OVERLAP_CHECK */
    bh__slab slab;
    bh__stats stats;
    bh_allocator allocator;
    bh_alloc_ex_fn alloc_ex; /* with BH_CONFIG_ALLOC_EX, else NULL */
    bh_reporter reporter;    /* the application's (bh_config.reporter); immutable */
    bh_reporter
        env_reporter; /* opened from the environment, closed on destroy (report NULL: none); immutable */
    uint32_t flags;
    uint32_t tag;                              /* 1..255, stamped into every handle */
    uint32_t handle_floor;                     /* tag << 24 | 1: the least low word of a handle (hot.h) */
    uint32_t gen_salt;                         /* random per registry, XORed into every handle's generation */
    uint32_t refs_max;                         /* BH_EOVERFLOW past this; lowered only by tests */
    AO_t seq;                                  /* ATOMIC: last sequence number handed out */
    struct bh__diag *diag;                     /* diagnostics (diag.h), NULL when all are off; immutable */
    struct bh_registry *live_next, *live_prev; /* the process's registries, under registry.c's lock */
};

/* reg->flags: the registry was made by the parent of this process (set by
 * the fork child handler, registry.c, while the child has one thread).
 * Public calls test it together with the diagnostics' route bits, so the
 * hot path pays nothing for it. */
#define BH__FORKED (1u << 31)
static inline int bh__forked(const bh_registry *reg) { return (reg->flags & BH__FORKED) != 0; }

/* The handle of generation gen of a slot. The tag alone would repeat every
 * 255 registries; with a random 32-bit salt per registry, a handle of one
 * registry names a live block of another only if tag, slot and salted
 * generation all agree: about one chance in 2^32 per pair of registries
 * whose tags collide. Immutable fields: no ordering needed. */
static inline bh_handle bh__handle_of(const bh_registry *reg, uint32_t slot, uint32_t gen) {
    return bh__handle_make(slot, reg->tag, gen ^ reg->gen_salt);
}
/* The slot generation a handle of this registry claims. */
static inline uint32_t bh__handle_gen_of(const bh_registry *reg, bh_handle h) {
    return bh__handle_gen(h) ^ reg->gen_salt;
}

/* Test hook: lower the reference limit so BH_EOVERFLOW is reachable. */
void bh__registry_set_refs_max(bh_registry *reg, uint32_t refs_max);
/* Test hook: set a live slot's generation (to reach generation wrap). */
bh_status bh__registry_set_gen(bh_registry *reg, bh_handle h, uint32_t gen, bh_handle *out);

#endif /* BH_INTERNAL_H */
