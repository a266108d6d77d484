/*
 * bufhandle.h - interned, reference-counted handles for device buffers.
 *
 * OVERVIEW
 * ========
 * A device runtime often holds several objects for one piece of device memory:
 * views, buffers re-created "at an existing address", copies owned by different
 * subsystems. When each object frees and reports on its own, one allocation is
 * freed several times and the allocation tracker sees FREEs for buffers it no
 * longer knows. bufhandle interns every live allocation by (device, address) in
 * one control block; every alias is a counted reference to that block, and the
 * allocator free plus the FREE report run exactly once, when the last reference
 * drops, and always before the allocator can hand the address out again.
 *
 *     bh_registry *reg;
 *     bh_config cfg = {0};
 *     cfg.allocator = (bh_allocator){my_alloc, my_free, my_ctx};
 *     bh_registry_create(&cfg, &reg);
 *
 *     uint32_t dev4 = BH_DOMAIN(4, BH_MEM_DRAM);  // device 4, DRAM (see DOMAINS)
 *     bh_handle a, b;
 *     bh_alloc(reg, dev4, 1 << 20, &a);           // allocates, reports ALLOC
 *     bh_info info; bh_info_get(reg, a, &info);
 *     bh_intern(reg, dev4, info.address, 4096, &b); // alias: same block, refs = 2
 *     bh_release(reg, a);                         // refs = 1, nothing freed
 *     bh_release(reg, b);                         // reports FREE, then frees
 *     bh_registry_destroy(reg);
 *
 * THREADING
 * =========
 * Every function is thread-safe. Retain and release are lock-free. bh_lookup
 * and bh_intern of a live key take no lock either (one compare-and-swap on
 * the allocation's state word) unless that swap loses a race; then, as for a
 * miss, a new key or the last release, they take one of many table shard
 * locks for a few instructions. No lock is held while the allocator or
 * reporter callbacks run, so callbacks may call any bh_* function (except
 * destroying their registry).
 * The one call that is not safe against the others is bh_registry_destroy:
 * every call on a registry must have returned before it is destroyed (see
 * there).
 *
 * FORK
 * ====
 * In a child of fork(), every call on a registry made before the fork
 * (by the parent, or inherited by it) returns BH_EFORKED at once: it takes
 * no lock (another thread of the parent may have held it), calls no
 * allocator (the device memory is the parent's) and sends no report.
 * bh_registry_destroy of such a registry answers BH_OK and frees host
 * memory only, without waiting for any lock (what a parent thread was in the
 * middle of changing at the fork is left allocated). A registry the child
 * makes is the child's and works as any other; reporters in the child never
 * hang. The check costs the hot path nothing: it shares the one flag test
 * each call makes for diagnostics.
 *
 * REFERENCES
 * ==========
 * A bh_handle value names a control block; copying the value copies no reference.
 * bh_alloc, bh_alloc_ex, bh_adopt, bh_intern, bh_lookup and bh_retain each give
 * the caller one reference, which the caller gives back with exactly one
 * bh_release. A reference is not tied to a thread.
 *
 * OVERLAPS
 * ========
 * Live allocations of one domain never overlap. A new key (bh_intern,
 * bh_adopt) whose range [address, address + size) meets a live allocation
 * that starts elsewhere is refused with BH_EOVERLAP and changes nothing: an
 * interior address must never become a second owner, which would free the
 * middle of an allocation later. bh_alloc whose allocator returns such a range
 * gets BH_EEXIST (conflict counted, nothing freed), as for an exact hit. A
 * buffer "at address + offset" of a live allocation takes a reference to that
 * allocation instead:
 *
 *     bh_handle whole;                       // view at base + 4096
 *     if (bh_lookup_containing(reg, dom, base + 4096, &whole) == BH_OK) ...
 *
 * The check and the insertion are one step under a per-domain lock, whichever
 * threads create overlapping keys at once; reusing a live key (an alias) does
 * not pay for it. BH_CONFIG_NO_OVERLAP_CHECK turns it off.
 *
 * WHICH CALL CREATES A BLOCK
 * ==========================
 *   bh_alloc / bh_alloc_ex   the registry's allocator chooses the address.
 *   bh_adopt                 the caller has just allocated the address itself;
 *                            a live block there is a conflict (BH_EEXIST).
 *   bh_intern                a buffer re-created "at an address": an alias of
 *                            the live block there, or the owner of an address
 *                            nobody holds (BH_EBUSY while it is being freed;
 *                            BH_ENOTFOUND with BH_CONFIG_STRICT_INTERN).
 * All three own what they create: the last release reports FREE and calls
 * allocator.free. Handles of one registry are never valid in another (a
 * foreign handle is BH_ESTALE, see bh_handle).
 *
 * LIFECYCLE OF A CONTROL BLOCK
 * ============================
 *   LIVE     refs > 0. bh_lookup / bh_intern of its (device, address) add a ref.
 *   DYING    the last bh_release dropped refs to 0. From here bh_lookup misses,
 *            bh_retain / bh_release are BH_ESTALE and bh_intern of the address is
 *            BH_EBUSY. The releasing thread reports FREE, then calls
 *            allocator.free, then removes the key and retires the block. Once
 *            allocator.free has started, bh_alloc and bh_adopt of the address
 *            take the key over (a new LIVE block); before that they answer
 *            BH_EEXIST.
 *   RETIRED  the generation is bumped: every copy of an old handle is stale. The
 *            slot is reused for a later allocation with the new generation.
 *
 * ERRORS
 * ======
 * Every function returns a bh_status: BH_OK (0) or a negative code. A failing
 * call changes nothing (no reference taken or dropped, nothing reported, the
 * allocator not called back). bh_strerror() and bh_status_name() describe codes.
 *
 * CALLBACK ORDER AND SEQUENCE NUMBERS
 * ===================================
 * Each report carries a registry-wide sequence number taken just before the
 * reporter runs. Reports that are ordered by causality (everything one thread
 * reports; the FREE of an address and any later ALLOC of it) carry increasing
 * numbers and reach the reporter in that order. Reports made concurrently by
 * different threads about different allocations may reach the reporter out of
 * sequence order; a reporter that needs one total order sorts by seq.
 */
#ifndef BUFHANDLE_H
#define BUFHANDLE_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Export macro: the library is built with -fvisibility=hidden and marks only the
 * public API visible. Consumers see a plain declaration. */
#if defined(BH_BUILDING_LIBRARY) && (defined(__GNUC__) || defined(__clang__))
#define BH_API __attribute__((visibility("default")))
#else
#define BH_API
#endif

/* The version, in one place: CMake reads these four lines for the project,
 * the library, the packages, the .pc files and the man page. The suffix is
 * "-dev" until MAJOR.MINOR.PATCH is released ("0.4.0-dev" is not 0.4.0). */
#define BH_VERSION_MAJOR 0
#define BH_VERSION_MINOR 4
#define BH_VERSION_PATCH 0
#define BH_VERSION_SUFFIX "-dev"
#define BH__STR(x) #x
#define BH__XSTR(x) BH__STR(x)
#define BH_VERSION_STRING                                                                                    \
    BH__XSTR(BH_VERSION_MAJOR) "." BH__XSTR(BH_VERSION_MINOR) "." BH__XSTR(BH_VERSION_PATCH) BH_VERSION_SUFFIX

/* ------------------------------------------------------------------------- */
/* Status codes                                                              */
/* ------------------------------------------------------------------------- */

/* One list generates the enum, bh_strerror() and bh_status_name(); the same
 * numbers travel on bh-trackd's wire. */
#define BH_STATUS_MAP(XX)                                                                                    \
    XX(OK, 0, "success")                                                                                     \
    XX(EINVAL, -1, "invalid argument")                                                                       \
    XX(ENOMEM, -2, "out of host memory")                                                                     \
    XX(ESTALE, -3, "stale or unknown handle")                                                                \
    XX(ENOTFOUND, -4, "no live allocation at this address")                                                  \
    XX(EEXIST, -5,                                                                                           \
       "address already live: the allocator returned a live address or range, or bh_adopt was given "        \
       "one")                                                                                                \
    XX(EBUSY, -6,                                                                                            \
       "busy: the registry has live handles, or the address is being freed (an address you just "            \
       "allocated yourself: use bh_adopt)")                                                                  \
    XX(EALLOC, -7, "allocator callback failed")                                                              \
    XX(ERANGE, -8, "alias larger than the live allocation")                                                  \
    XX(EOVERFLOW, -9, "reference count would overflow")                                                      \
    XX(EOVERLAP, -10,                                                                                        \
       "range overlaps a live allocation that starts elsewhere (for a view into it, use "                    \
       "bh_lookup_containing)")                                                                              \
    XX(EFORKED, -11, "registry created by the parent process, used in a fork child")

typedef enum bh_status {
#define BH__STATUS_ENUM(name, code, text) BH_##name = (code),
    BH_STATUS_MAP(BH__STATUS_ENUM)
#undef BH__STATUS_ENUM
} bh_status;

/* ------------------------------------------------------------------------- */
/* Types                                                                     */
/* ------------------------------------------------------------------------- */

typedef struct bh_registry bh_registry;

/* A handle is a checked name of a control block, never a pointer:
 *
 *   bits  0..23  slot index in the registry's control-block slab (0 reserved)
 *   bits 24..31  registry tag (1..255, from a process-wide count)
 *   bits 32..63  generation of the slot (bumped when the block is retired),
 *                XORed with a random 32-bit salt chosen per registry
 *
 * Tag and salt make a handle given to another registry foreign (BH_ESTALE)
 * instead of naming one of its blocks: two live registries share a tag only
 * if 255 others were created in between, and then a handle is accepted only
 * if the salted generations also agree, about one chance in 2^32.
 * {0} is the null handle. A slot whose generation would wrap is retired for
 * good, so a handle value is never reissued within a registry's life. Handles
 * can be compared for identity with bh_handle_eq(). */
typedef struct bh_handle {
    uint64_t bits;
} bh_handle;

#ifdef __cplusplus
#define BH_HANDLE_NULL (bh_handle{0})
#else
#define BH_HANDLE_NULL ((bh_handle){0})
#endif

static inline int bh_handle_is_null(bh_handle h) { return h.bits == 0; }
static inline int bh_handle_eq(bh_handle a, bh_handle b) { return a.bits == b.bits; }

/* DOMAINS. The device argument of every call is a memory domain: the key never
 * mixes memories (DRAM and L1 at one numeric address are two allocations). Any
 * 32-bit value works; the library, the shim and the tools show a domain as a
 * device id and a memory kind packed this way (kinds 5..15 are the caller's
 * own):
 *
 *     bh_alloc(reg, BH_DOMAIN(3, BH_MEM_L1), size, &h);   // device 3, L1
 */
#ifdef __cplusplus
/* C++: the same values (any integer or enum argument converted as by a cast,
 * usable in constant expressions and case labels) from function templates,
 * whose static_cast a C++ user's -Wold-style-cast does not flag nor, its
 * type being a template's, -Wuseless-cast when it is already uint32_t.
 * bh_cxx_*: what the macros expand to; call the macros. extern "C++": a
 * template cannot have C linkage (this header's, or an includer's). */
extern "C++" {
template <typename D, typename K> constexpr uint32_t bh_cxx_domain(D device, K kind) noexcept {
    return (static_cast<uint32_t>(device) << 4) | (static_cast<uint32_t>(kind) & 0xFu);
}
template <typename D> constexpr uint32_t bh_cxx_domain_device(D domain) noexcept {
    return static_cast<uint32_t>(domain) >> 4;
}
template <typename D> constexpr uint32_t bh_cxx_domain_kind(D domain) noexcept {
    return static_cast<uint32_t>(domain) & 0xFu;
}
}
#define BH_DOMAIN(device, kind) bh_cxx_domain((device), (kind))
#define BH_DOMAIN_DEVICE(domain) bh_cxx_domain_device(domain)
#define BH_DOMAIN_KIND(domain) bh_cxx_domain_kind(domain)
#else
#define BH_DOMAIN(device, kind) (((uint32_t)(device) << 4) | ((uint32_t)(kind)&0xFu))
#define BH_DOMAIN_DEVICE(domain) ((uint32_t)(domain) >> 4)
#define BH_DOMAIN_KIND(domain) ((uint32_t)(domain)&0xFu)
#endif
enum { BH_MEM_DRAM = 0, BH_MEM_L1 = 1, BH_MEM_L1_SMALL = 2, BH_MEM_TRACE = 3, BH_MEM_SYSTEM = 4 };
/* 5..15: caller's own. BH_MEM_SYSTEM is host memory the device reaches (TT-Metal's
 * SYSTEM_MEMORY buffers). The names every output prints for kinds 0..4, indexed by
 * kind (the library's reports, bufhandle.hpp, bh-trackd and bh-demo use this one
 * list): */
#define BH_MEM_KIND_NAMES                                                                                    \
    { "DRAM", "L1", "L1_SMALL", "TRACE", "SYSTEM_MEMORY" }

typedef struct bh_allocator {
    /* Return 0 and set *address, or non-zero on failure. Called with no lock
     * held. Must not return an address it has not been given back by free.
     * [*address, *address + size) must not run past 2^64. */
    int (*alloc)(void *ctx, uint32_t device, uint64_t size, uint64_t *address);
    /* Called exactly once per allocation, after its FREE was reported. */
    void (*free)(void *ctx, uint32_t device, uint64_t address, uint64_t size);
    void *ctx;
} bh_allocator;

typedef enum bh_event_kind { BH_EVENT_ALLOC = 1, BH_EVENT_FREE = 2 } bh_event_kind;

typedef struct bh_event {
    bh_event_kind kind;
    uint32_t device;
    uint64_t address;
    uint64_t size;
    uint64_t seq; /* registry-wide, strictly increasing (see CALLBACK ORDER) */
} bh_event;

typedef struct bh_reporter {
    void (*report)(void *ctx, const bh_event *event); /* NULL: no reports */
    void *ctx;
} bh_reporter;

/* ALLOCATION CONTEXT. A real runtime's allocator needs more than (device,
 * size): page size, layout, bank, alignment. bh_alloc_ex passes one pointer per
 * call through to an allocator of this shape, untouched and unretained (it only
 * has to live for the duration of the call). Set it as bh_config.alloc_ex with
 * BH_CONFIG_ALLOC_EX; it then serves bh_alloc too (with arg NULL), and
 * allocator.alloc is ignored. allocator.free and allocator.ctx keep their
 * meaning. */
typedef int (*bh_alloc_ex_fn)(void *ctx, uint32_t device, uint64_t size, void *arg, uint64_t *address);

/* bh_config.flags. Unknown bits are rejected with BH_EINVAL, so a flag can
 * announce a new meaning of the reserved words without old callers (who never
 * set it) being affected: that is how alloc_ex came in without changing the
 * size or layout of bh_config. */
#define BH_CONFIG_NO_ENV 0x1u   /* ignore BH_TRACK_SOCKET and friends */
#define BH_CONFIG_ALLOC_EX 0x2u /* alloc_ex is set and is the allocator's alloc */
/* Turns off overlap detection (see OVERLAPS): new blocks are checked against
 * the exact key only, as in 0.2, and bh_lookup_containing is BH_EINVAL. It
 * saves a lock and an ordered-set update per new block and per last release
 * (tools/bh-bench measures it); leave it off unless that matters. */
#define BH_CONFIG_NO_OVERLAP_CHECK 0x4u
/* Strict ownership, for a registry whose allocator makes every allocation
 * (bh_alloc, bh_alloc_ex, bh_alloc_addr, bh_adopt): bh_intern never creates.
 * bh_intern of an address with no live allocation is BH_ENOTFOUND (nothing
 * created or reported, counted in bh_stats.interns_refused), so a buffer
 * re-created at a stale or freed address, or inside freed memory, is caught
 * at the call instead of becoming an owner of memory nobody owns. An alias of
 * a live key, and the overlap answers (BH_EOVERLAP, BH_EBUSY), are as
 * without it. A stale address the allocator has already handed out again is
 * such an alias (of the newer allocation): no flag can tell it from a fresh
 * copy; keep handles, not addresses. BH_DEBUG=strict sets it from the
 * environment. */
#define BH_CONFIG_STRICT_INTERN (1u << 11)

typedef struct bh_config {
    bh_allocator allocator; /* alloc NULL: bh_alloc is BH_EINVAL; free NULL: nothing to free */
    bh_reporter reporter;   /* report NULL: no reports */
    uint32_t flags;         /* 0 for defaults; BH_CONFIG_* bits */
    uint32_t reserved32;    /* ignored; room to grow without changing the size */
    union {
        void *reserved[4];       /* 0.2's name for this space: ignored unless a flag names a field */
        bh_alloc_ex_fn alloc_ex; /* read only with BH_CONFIG_ALLOC_EX */
    };
} bh_config; /* bh_registry_create(NULL, &reg): all defaults */

typedef struct bh_info {
    uint32_t device;
    uint64_t address;
    uint64_t size;
    uint32_t refs; /* references held right now (racy snapshot) */
} bh_info;

typedef struct bh_stats {
    uint64_t live_handles;    /* control blocks not yet retired (allocations) */
    uint64_t live_bytes;      /* sum of their sizes */
    uint64_t peak_live_bytes; /* highest live_bytes seen */
    uint64_t allocs;          /* successful bh_alloc */
    uint64_t interns_new;     /* bh_intern that created a block */
    uint64_t interns_alias;   /* bh_intern that referenced a live block */
    uint64_t lookups_hit, lookups_miss;
    uint64_t retains, releases; /* successful calls */
    uint64_t frees;             /* last releases: FREE reported + allocator.free */
    uint64_t stale_ops;         /* calls answered BH_ESTALE */
    uint64_t conflicts;         /* bh_alloc / bh_adopt answered BH_EEXIST */
    /* Counters below were added after the contract; more may follow, so
     * callers must not depend on sizeof(bh_stats). */
    uint64_t busy;            /* bh_intern answered BH_EBUSY (address dying) */
    uint64_t takeovers;       /* bh_alloc / bh_adopt reused an address whose block was dying */
    uint64_t slots_retired;   /* slots retired for good (generation exhausted) */
    uint64_t reports;         /* events handed to the reporter */
    uint64_t reports_dropped; /* socket reporter: events not delivered (server down, queue full) */
    uint64_t resyncs;         /* socket reporter: live-set resyncs sent after a reconnect or drop */
    uint64_t adopts;          /* successful bh_adopt */
    uint64_t overlaps;        /* bh_intern / bh_adopt answered BH_EOVERLAP (also the normal "intern,
                                 then lookup_containing" of a view: not a count of bugs) */
    uint64_t interns_refused; /* BH_CONFIG_STRICT_INTERN: bh_intern of an address with no live allocation */
} bh_stats;

/* ------------------------------------------------------------------------- */
/* Functions                                                                 */
/* ------------------------------------------------------------------------- */

/* Creates a registry. cfg may be NULL (no allocator, no reporter). The config is
 * copied. Errors: BH_EINVAL (out NULL, unknown flag bits), BH_ENOMEM. */
BH_API bh_status bh_registry_create(const bh_config *cfg, bh_registry **out);

/* Destroys a registry that has no live control blocks. With live blocks it
 * returns BH_EBUSY and leaves the registry untouched and usable, so the caller
 * can report the leaks.
 * Every other call on the registry, on every thread, must have RETURNED before
 * bh_registry_destroy is called, and none may start after it. BH_OK from
 * destroy does not mean other threads are done: a bh_release that dropped a
 * reference other than the last still updates the registry's counters after
 * its decrement, and may still be running when the last reference is gone.
 * Join the threads that used the registry (or otherwise wait for their calls
 * to return) first. Callbacks must not destroy their own registry.
 * In a fork child, for a registry made before the fork: BH_OK, host memory
 * only (see FORK).
 * Errors: BH_EINVAL (NULL), BH_EBUSY. */
BH_API bh_status bh_registry_destroy(bh_registry *reg);

/* Calls allocator.alloc, interns the address as a new block with one reference,
 * reports ALLOC and returns the handle.
 * If the allocator returns an address that is still live, that is an allocator
 * bug: nothing is freed (it would free the live allocation), whatever else goes
 * wrong in the same call. If it returns the address of a block that is dying
 * and whose free has already run, the new block takes the address over: that
 * is legitimate reuse, not a conflict.
 * Errors: BH_EINVAL (NULL reg/out, size 0, no allocator, live bytes of the
 * registry would pass 2^64), BH_EALLOC (allocator failed, or returned a range
 * running past 2^64: nothing reported, nothing freed), BH_EEXIST (allocator
 * returned a live address, or a range overlapping a live allocation: a
 * conflict is counted, free is NOT called, nothing reported), BH_ENOMEM (host
 * memory: the allocation is given back through allocator.free, nothing
 * reported). */
BH_API bh_status bh_alloc(bh_registry *reg, uint32_t device, uint64_t size, bh_handle *out);

/* bh_alloc with a per-call argument for the allocator (see ALLOCATION CONTEXT):
 * arg is handed to bh_config.alloc_ex as is. Without BH_CONFIG_ALLOC_EX a NULL
 * arg makes it bh_alloc, and any other arg is BH_EINVAL (the argument would be
 * lost). Errors: as bh_alloc. */
BH_API bh_status bh_alloc_ex(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out);

/* bh_alloc, and the allocation's address in *address (may be NULL) on BH_OK;
 * *address is unchanged on error (the contract: BH_EEXIST too). Saves the
 * bh_info_get every create would otherwise need. Errors: as bh_alloc. */
BH_API bh_status bh_alloc_addr(bh_registry *reg, uint32_t device, uint64_t size, bh_handle *out,
                               uint64_t *address);

/* "I have just allocated [address, address + size) myself, from the memory the
 * registry's allocator manages: own it." Interns a new block with one
 * reference and reports ALLOC; the last release reports FREE and gives the
 * address to allocator.free. Use it where the caller allocates outside the
 * registry (a lock-step allocator serving several devices at once) and would
 * otherwise call bh_intern on an address it knows is fresh: bh_intern answers
 * BH_EBUSY while the previous block of that address finishes dying, bh_adopt
 * takes the address over from such a block exactly as bh_alloc does.
 * Errors: BH_EINVAL (NULL, size 0, address + size past 2^64, live bytes would
 * pass 2^64), BH_EEXIST (the address is live, or dying with its free not yet
 * started, or the range meets an allocation in that state: a conflict is
 * counted, nothing freed or reported), BH_EOVERLAP (the range meets a live
 * allocation that starts elsewhere), BH_ENOMEM. */
BH_API bh_status bh_adopt(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size, bh_handle *out);

/* The porting entry point for code that creates a buffer "at an address".
 * Live (device, address): adds a reference and returns the block's handle;
 * size must be <= the live size (BH_ERANGE). Not live: creates a block that owns
 * the allocation (it is freed through the allocator and reported FREE when its
 * last reference drops) and reports ALLOC.
 * Errors: BH_EINVAL (NULL, size 0, address + size past 2^64, live bytes would
 * pass 2^64), BH_ERANGE, BH_EOVERLAP (a new key whose range meets a live
 * allocation starting elsewhere: for a view inside it use
 * bh_lookup_containing; also when the address itself is still dying but
 * inside a live allocation), BH_EBUSY (the address, or an allocation the new
 * range meets, is being freed right now: the caller holds a stale address, or,
 * if it has just allocated the address itself, it wants bh_adopt),
 * BH_ENOTFOUND (BH_CONFIG_STRICT_INTERN only: no live allocation there),
 * BH_EOVERFLOW, BH_ENOMEM. */
BH_API bh_status bh_intern(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size,
                           bh_handle *out);

/* Adds a reference to the live block at (device, address). Never creates.
 * Errors: BH_EINVAL, BH_ENOTFOUND (not live, or dying), BH_EOVERFLOW. */
BH_API bh_status bh_lookup(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out);

/* Adds a reference to the live block whose range [start, start + size)
 * contains address, in that domain: the call for "a view at an offset" (see
 * OVERLAPS). Never creates. The handle is the allocation's; bh_info_get gives
 * its start, so the offset is address - info.address.
 * Errors: BH_EINVAL (NULL, or the registry has BH_CONFIG_NO_OVERLAP_CHECK:
 * there is no range index to ask), BH_ENOTFOUND (no live allocation covers
 * address, or it is dying), BH_EOVERFLOW. */
BH_API bh_status bh_lookup_containing(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out);

/* Adds a reference. Errors: BH_EINVAL (NULL reg, null handle), BH_ESTALE
 * (retired, dying, forged or foreign handle), BH_EOVERFLOW. */
BH_API bh_status bh_retain(bh_registry *reg, bh_handle h);

/* Drops a reference. The last one marks the block dying, reports FREE, calls
 * allocator.free, then retires the block (in that order).
 * Errors: BH_EINVAL, BH_ESTALE (nothing changes). */
BH_API bh_status bh_release(bh_registry *reg, bh_handle h);

/* A consistent snapshot of a live block. Takes no reference.
 * Errors: BH_EINVAL, BH_ESTALE. */
BH_API bh_status bh_info_get(bh_registry *reg, bh_handle h, bh_info *out);

/* Sums the registry's counters. Counters are updated without a common lock, so
 * a snapshot taken while other threads work is not one instant. */
BH_API bh_status bh_stats_get(bh_registry *reg, bh_stats *out);

/* ------------------------------------------------------------------------- */
/* Diagnostics                                                               */
/* ------------------------------------------------------------------------- */

/* DIAGNOSTICS. Off by default; a registry with all of them off pays one
 * predictable branch per call. Turn them on per registry with bh_config.flags,
 * or for every registry of a process with the environment (unless the registry
 * has BH_CONFIG_NO_ENV):
 *   BH_DEBUG=refs,history,stacks   any subset ("all" for the three)
 *   BH_DEBUG=strict                BH_CONFIG_STRICT_INTERN (with the others too)
 *   BH_DEBUG=fatal                 (with the others) after a misuse report
 *                                  (double release, release or use of a dead
 *                                  token, a foreign token) and after a leak
 *                                  report at exit, call abort(): a test run
 *                                  fails at the culprit. Without it the
 *                                  library never aborts.
 *   BH_LEAK_REPORT=1               at exit, print bh_registry_dump() of every
 *                                  registry that still has live allocations
 *                                  to stderr (=all: with BH_DUMP_HISTORY_ALL)
 * A word BH_DEBUG does not know ("stcks"), or a BH_LEAK_REPORT other than 0,
 * 1 or all, is ignored and named on stderr, once per process.
 *
 * BH_CONFIG_DEBUG_REFS: every reference is its own token. Every handle that
 * bh_alloc, bh_alloc_ex, bh_adopt, bh_intern, bh_lookup, bh_lookup_containing
 * and bh_dup return is a distinct token; bh_retain(reg, t) adds an
 * acquisition to token t and bh_release(reg, t) drops one. Releasing a token
 * more times than it was acquired returns BH_ESTALE at that call and changes
 * nothing else: the allocation's other tokens stay valid (plain counting
 * would free the memory and blame the next, innocent holder). So do
 * bh_retain, bh_dup and bh_info_get of a token after its last release, and
 * every call with a token this registry never issued. Each misuse is
 * printed to stderr, once per call site and at most a few times per second:
 * the call, the culprit's stack and, with stacks on, where the token was
 * taken and where it was (first) released; for a token of another registry
 * alive in the process, which registry issued it. bh_info.refs stays the allocation's total
 * (all tokens together). Released tokens are remembered (the last 65536) to
 * tell "released twice" from "never issued". Under valgrind's memcheck (when
 * the library was built with valgrind's headers, as it is wherever valgrind
 * is installed) and in ASan builds each token is also a host allocation that
 * the checker sees: a second release is an invalid or double free with the
 * checker's own "alloc'd at" (where the token was taken) and "free'd at"
 * (where it was first released) stacks, a token never issued is an invalid
 * free, a token never released is a leak; so `valgrind --error-exitcode=N`
 * fails on any of them. Debug references serialise every call of the
 * registry on one lock: use them to find bugs, not in production.
 *
 * BH_CONFIG_HISTORY: per (device, address), for the registry's life: how
 * many allocations (blocks born there), aliases (every other reference
 * taken: bh_intern, bh_lookup, bh_lookup_containing, bh_dup or bh_retain of
 * a live block, with debug references or without), accepted releases, frees
 * (last releases) and releases refused as stale (these need debug
 * references: a plain stale handle no longer names an address); all
 * released, allocs + aliases == releases. bh_registry_dump shows the worst.
 *
 * BH_CONFIG_STACKS: capture the call stack (raw return addresses: about
 * 50 ns with libunwind installed, which is loaded with dlopen, else about
 * 1 us with glibc's backtrace) where each allocation is created, where each
 * token is taken, and where the last release of each address happened. Stacks are
 * symbolized only when printed: function and, where debug information
 * exists, file:line, through libdw (elfutils; loaded with dlopen when it is
 * installed), else dladdr (functions exported from shared objects only).
 * Build with -g for file:line. With libdw, each call the compiler inlined is
 * a frame of its own ("f (inlined) at file:line", then the function it was
 * inlined into at the call), so an -O2 build names the inlined culprit.
 */
#define BH_CONFIG_DEBUG_REFS (1u << 8) /* every reference is its own token */
#define BH_CONFIG_HISTORY (1u << 9)    /* per-address counts */
#define BH_CONFIG_STACKS (1u << 10)    /* capture where references are taken and dropped */

#define BH_DUMP_JSON (1u << 0) /* bh_registry_dump: one JSON object instead of text */
/* bh_registry_dump: the history's top addresses among all of them, not only
 * those with findings (stale releases, or allocations and frees that do not
 * balance: live now). BH_LEAK_REPORT=all asks for it in the leak report. */
#define BH_DUMP_HISTORY_ALL (1u << 1)

/* Writes every live allocation of the registry to out: device, memory kind,
 * address, size, references; with history or stacks on also its creation
 * number (births in this registry, counted from 1) and age, and with stacks
 * where it was created (without either the registry keeps no birth times,
 * and "seq" and "age_ms" are absent); with debug references each live
 * token and (stacks on) where it was taken; with history the top offenders
 * (and, stacks on, where each was last freed).
 * The JSON form is one object on one line:
 *   {"registry","live_allocations","live_bytes","diagnostics","complete",
 *    "allocations":[{"domain","device","kind","address","size","refs",
 *                    "seq"?,"age_ms"?,"created_at"?:[frame],"tokens"?:[
 *                    {"token","count","taken_at"?:[frame]}]}],
 *    "history"?:{"addresses","top":[{"domain","device","kind","address",
 *                "allocs","aliases","releases","frees","stale",
 *                "last_freed_at"?:[frame]}]},
 *    "misuse_reports_suppressed"}
 *   frame = {"pc","function","inlined"?,"file"?,"line"?,"module"?,"offset"?}
 * Thread-safe; a snapshot that other threads may change while it is taken.
 * Errors: BH_EINVAL (NULL, unknown flags, or writing to out failed). */
BH_API bh_status bh_registry_dump(bh_registry *reg, FILE *out, unsigned flags);

/* A new reference to the allocation h names. Without debug references this
 * is bh_retain and *out is h. With them, *out is a new token (its own count
 * of one), which is what a copy constructor wants.
 * Errors: BH_EINVAL, BH_ESTALE, BH_EOVERFLOW, BH_ENOMEM. */
BH_API bh_status bh_dup(bh_registry *reg, bh_handle h, bh_handle *out);

/* ------------------------------------------------------------------------- */
/* Reporters shipped with the library                                        */
/* ------------------------------------------------------------------------- */

/* TRACKING FROM THE ENVIRONMENT. A registry created without BH_CONFIG_NO_ENV
 * opens a reporter itself when one of these is set, and closes it on destroy.
 * If the application passed its own reporter too, both receive every event
 * (same event, same seq; the application's first):
 *   BH_TRACK_SOCKET=/path          socket reporter to bh-trackd at /path
 *   TT_ALLOC_TRACKING_ENABLED=1    socket reporter speaking TT-Metal's records
 *                                  to /tmp/tt_allocation_server.sock
 *                                  (BH_TT_SOCKET=/path overrides the path;
 *                                  BH_TT_RECORD_SIZE=72, 112 or 144 picks the
 *                                  record size, default 72)
 *   BH_TRACK_LOG=/path or -        JSON-lines log to a file or stderr
 * The first that is set wins (set to nothing is unset; BH_TRACK_SOCKET= says
 * so on stderr once). Nothing else turns reporting on, not even a bh-trackd
 * on its default socket: name it, BH_TRACK_SOCKET=$XDG_RUNTIME_DIR/bh-trackd.sock.
 * If it cannot be opened, the registry works without reports. Each registry
 * gets a socket reporter and ring of its own: 80 MiB of shared memory at the
 * default queue_capacity, resident as it fills (BH_TRACK_RING: smaller).
 * The socket reporter's numbers (BH_TRACK_RING, BH_TRACK_MAX_BLOCK_US,
 * BH_TRACK_FLUSH_MS, BH_TT_RECORD_SIZE; see bh_socket_options) take decimal
 * numbers only: any other value (a word, a sign, out of range) is named on
 * stderr with the default used instead, once per process and variable. */

/* The socket reporter talks to bh-trackd (docs/protocol.md, "The library's
 * socket reporter" and "The event ring"). Reporting threads never touch the
 * socket: a report takes its reporter's lock, updates the reporter's shadow
 * live set, numbers the event and writes it into a ring in shared memory (a
 * memfd the server maps and drains itself; for a server that takes no ring,
 * such as a TT server, a background thread drains it and sends). A report
 * waits for ring room at most max_block_us (only while nothing was dropped
 * yet). When the ring is full, events are dropped and counted: the server
 * sees the gap in the numbers and counts exactly as many lost, and the
 * reporter resends its live set (a resync, copied in bounded pieces, at most
 * about one per second, each allocation with its original time), so the
 * server's live set is right again; counts of events the server never saw
 * stay lower bounds there. Nothing a reporting call does grows with the live
 * set. No SIGPIPE, no crash if the server is absent, slow or killed: events
 * wait in the ring (up to its size) for a server that comes later; what a
 * close or the process's exit leaves there with no server connected is lost,
 * counted as dropped and said (the process's sum, once) on stderr at exit.
 * Nothing is sent to a server run by another user (root excepted): that is
 * said once on stderr. A server that refuses the process (its live-set limit)
 * is told the process holds nothing, and gets nothing more. After fork(), a
 * child's reports through an inherited reporter are dropped and counted; a
 * reporter the child opens has its own connection. Registries of one process
 * that open the same path share one connection (each has its own ring) if
 * they ask for the same send_timeout_ms and flags; one that asks for another
 * send_timeout_ms gets a connection of its own. Each reporter's close waits
 * by its own flush_timeout_ms, shared connection or not. Use one reporter
 * per registry. A process that exits (exit() or returning from
 * main) with reporters still open, such as a registry never destroyed, first
 * flushes them as a close would (each connection within the longest
 * flush_timeout_ms of its open reporters), so the
 * server sees its last events and its leaks. A server too slow to finish
 * within that time still gets the events of a ring it took (it drains the
 * ring when it sees the connection end, however late); what the reporter
 * sends itself (a TT server takes no ring) and could not send is counted and
 * said in the exit's line on stderr. Raise flush_timeout_ms (or
 * BH_TRACK_FLUSH_MS) for such a server on a busy machine. _exit() and
 * crashes lose what the server had not drained yet. */
typedef struct bh_socket_options {
    uint32_t queue_capacity;   /* events that may wait per reporter (its ring, rounded up to a power of
                                  two less one, at most 2^22 - 1); 0: $BH_TRACK_RING, else 2^21 - 1 */
    uint32_t max_block_us;     /* wait for ring room, microseconds; 0: $BH_TRACK_MAX_BLOCK_US, else 0
                                  (drop at once) */
    uint32_t send_timeout_ms;  /* a stalled send drops the connection after this; 0: 1000 */
    uint32_t flush_timeout_ms; /* close and exit wait this long for queued events; 0: $BH_TRACK_FLUSH_MS
                                  (1..3600000), else 2000 */
    uint32_t flags;            /* BH_SOCKET_* */
} bh_socket_options;

#define BH_SOCKET_COMPAT_TT 0x1u /* speak TT-Metal's records instead (BH_TT_RECORD_SIZE: 72, 112, 144) */

typedef struct bh_reporter_stats {
    uint64_t reported;     /* events given to this reporter */
    uint64_t sent;         /* events delivered: drained by the server from the ring, or sent */
    uint64_t dropped;      /* events not delivered */
    uint64_t resyncs;      /* live-set resyncs sent */
    uint64_t connects;     /* successful connections */
    uint32_t connected;    /* 1 while connected */
    uint64_t out_of_order; /* 0 since 0.4: events go out in the order they were numbered */
    uint64_t withheld;     /* TT: events not sent on purpose, not lost: a FREE whose ALLOC the
                              server never got (a raw runtime's extra FREEs), an ALLOC at a key
                              it already holds, a kind with no TT buffer type (not in dropped) */
} bh_reporter_stats;

/* Opens a socket reporter for path. opts may be NULL. path NULL is bh-trackd's
 * own default: $XDG_RUNTIME_DIR/bh-trackd.sock when XDG_RUNTIME_DIR is a
 * directory of this user with mode 0700, else /tmp/bh-trackd-UID/bh-trackd.sock
 * (UID: the effective uid; the directory is made with mode 0700 if missing and
 * refused if it has another owner or mode). With BH_SOCKET_COMPAT_TT, path NULL
 * is /tmp/tt_allocation_server.sock, the path TT-Metal's clients hard-code.
 * Connecting is tried at once (briefly) and then in the background; a missing
 * server is not an error.
 * Errors: BH_EINVAL (path too long, unknown flags, path NULL and the default
 * directory is not private to this user), BH_ENOMEM. */
BH_API bh_status bh_socket_reporter_open(const char *path, const bh_socket_options *opts, bh_reporter *out);
/* Flushes and closes within flush_timeout_ms (plus a few milliseconds),
 * however slow the server; *rep becomes a no-op reporter.
 * No registry may still report to it. */
BH_API void bh_socket_reporter_close(bh_reporter *rep);
/* Counters of a socket reporter. Errors: BH_EINVAL (not a socket reporter). */
BH_API bh_status bh_socket_reporter_stats(const bh_reporter *rep, bh_reporter_stats *out);
/* Waits up to timeout_ms until everything queued so far was sent (or dropped).
 * A reporter that is not connected first tries the server once at once (not
 * during a back-off after a refusal).
 * Returns BH_OK; BH_EBUSY if events are still undelivered: the timeout passed,
 * or no server is connected (they wait in the ring for the next connection,
 * not counted as dropped); BH_EINVAL (not a socket reporter). */
BH_API bh_status bh_socket_reporter_flush(const bh_reporter *rep, uint32_t timeout_ms);

/* A JSON-lines log reporter: one object per event, written with one write(2)
 * per line:
 *   {"kind":"ALLOC","domain":49,"device":3,"mem":1,"address":4096,"size":64,
 *    "seq":1,"pid":1234,"thread":1234}
 * "domain" is the event's device argument as given; "device" and "mem" are
 * BH_DOMAIN_DEVICE and BH_DOMAIN_KIND of it (mem 1 = BH_MEM_L1). (0.2 wrote
 * the raw domain as "device".)
 * path NULL or "-": stderr. Errors: BH_EINVAL, BH_ENOMEM, BH_EALLOC (the file
 * could not be opened). */
BH_API bh_status bh_log_reporter_open(const char *path, bh_reporter *out);
BH_API void bh_log_reporter_close(bh_reporter *rep);

/* Static text for a status; "unknown status" for anything else. */
BH_API const char *bh_strerror(bh_status status);
/* "BH_EINVAL" and so on; "BH_UNKNOWN" for anything else. */
BH_API const char *bh_status_name(bh_status status);
/* The library's version, BH_VERSION_STRING: "MAJOR.MINOR.PATCH" and suffix. */
BH_API const char *bh_version(void);

#ifdef __cplusplus
}
#endif

#endif /* BUFHANDLE_H */
