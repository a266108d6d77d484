/*
 * diag_witness.c - debug tokens as host objects that valgrind and ASan see.
 *
 * Owns: one witness per token record. Under valgrind's memcheck a witness is
 * an 8-byte block of our own mmap'ed memory announced with
 * VALGRIND_MALLOCLIKE_BLOCK when the token is issued and
 * VALGRIND_FREELIKE_BLOCK when it is released, so memcheck's own machinery
 * reports a second release as an invalid free ("free'd at" = the first
 * release, "alloc'd at" = where the token was taken), a token never issued
 * as an invalid free, and a token never released as a definite leak. Under
 * ASan a witness is a real malloc'ed byte: the second release frees it again
 * (a double-free report with the same two stacks), a token never issued
 * frees an address that was never malloc'ed, and LeakSanitizer sees the
 * leaks. Pointers to witnesses are never stored in the clear, so leak
 * checkers find no reference to a leaked token.
 * Must never: read or write a witness's bytes (after a release they belong
 * to the checker), free an ASan witness twice unless ASan still holds it in
 * quarantine (otherwise the byte may belong to someone else by now), or do
 * anything at all when neither checker is present.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "diag.h"
#include "core/internal.h"

#if defined(BH_HAVE_MEMCHECK_H) && BH_HAVE_MEMCHECK_H
#include <valgrind/memcheck.h>
#define HAVE_MEMCHECK 1
#else
#define HAVE_MEMCHECK 0
#endif

#include "common/sanitize.h"
#define HAVE_ASAN BH__ASAN
#if HAVE_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* Valgrind witnesses sit this far apart: memcheck describes an address by
 * the nearest block within its redzone window (16 bytes), so closer
 * neighbours would be named instead of the released token. */
#define STRIDE 64u
#define SLOTS_PER_CHUNK 1024u
/* Hides witness pointers from leak scanners (any odd constant would do). */
#define HIDE ((uintptr_t)0x5a5a5a5a5a5a5a5bull)

/* Process-wide switch for tests; relaxed: set before the registries it
 * concerns are created. */
static AO_t disabled;

struct bh__witness_pool {
    bh__witness_mode mode;
    char **chunks; /* valgrind: mmap'ed, SLOTS_PER_CHUNK * STRIDE + STRIDE bytes each */
    uint32_t nchunks;
    char *probe; /* valgrind: a page never handed out; ASan: a malloc'ed block */
};

void bh__witness_enable(int on) { AO_store(&disabled, on ? 0 : 1); }

bh__witness_mode bh__witness_detect(void) {
    if (AO_load(&disabled))
        return BH__WITNESS_NONE;
#if HAVE_ASAN
    return BH__WITNESS_ASAN;
#elif HAVE_MEMCHECK
    return RUNNING_ON_VALGRIND ? BH__WITNESS_VALGRIND : BH__WITNESS_NONE;
#else
    return BH__WITNESS_NONE;
#endif
}

static size_t chunk_bytes(void) { return (size_t)SLOTS_PER_CHUNK * STRIDE + STRIDE; }

bh_status bh__witness_pool_create(bh__witness_mode mode, bh__witness_pool **out) {
    bh__witness_pool *pool = bh__calloc(1, sizeof(*pool));
    if (pool == NULL)
        return BH_ENOMEM;
    pool->mode = mode;
    if (mode == BH__WITNESS_VALGRIND) {
        void *p = mmap(NULL, STRIDE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        pool->probe = p == MAP_FAILED ? NULL : p;
    } else if (mode == BH__WITNESS_ASAN) {
        pool->probe = malloc(16);
    }
    if (mode != BH__WITNESS_NONE && pool->probe == NULL) {
        bh__free(pool);
        return BH_ENOMEM;
    }
    *out = pool;
    return BH_OK;
}

void bh__witness_pool_destroy(bh__witness_pool *pool) {
    if (pool == NULL)
        return;
    for (uint32_t i = 0; i < pool->nchunks; i++)
        munmap(pool->chunks[i], chunk_bytes());
    bh__free(pool->chunks);
    if (pool->mode == BH__WITNESS_VALGRIND)
        munmap(pool->probe, STRIDE);
    else
        free(pool->probe);
    bh__free(pool);
}

bh_status bh__witness_reserve(bh__witness_pool *pool, uint32_t records) {
    if (pool->mode != BH__WITNESS_VALGRIND)
        return BH_OK;
    uint32_t need = (records + SLOTS_PER_CHUNK - 1) / SLOTS_PER_CHUNK;
    if (need <= pool->nchunks)
        return BH_OK;
    char **dir = bh__calloc(need, sizeof(*dir));
    if (dir == NULL)
        return BH_ENOMEM;
    if (pool->nchunks != 0)
        memcpy(dir, pool->chunks, pool->nchunks * sizeof(*dir));
    uint32_t have = pool->nchunks;
    while (have < need) {
        void *p = mmap(NULL, chunk_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            break;
        dir[have++] = p;
    }
    bh__free(pool->chunks);
    pool->chunks = dir;
    pool->nchunks = have;
    return have == need ? BH_OK : BH_ENOMEM;
}

#if HAVE_MEMCHECK
/* The witness of record rec. Slot 0 of a chunk starts one stride in, so the
 * chunk's own pointer is not a pointer to any witness. */
static char *slot_of(const bh__witness_pool *pool, uint32_t rec) {
    return pool->chunks[rec / SLOTS_PER_CHUNK] + STRIDE + (size_t)(rec % SLOTS_PER_CHUNK) * STRIDE;
}
#endif

uintptr_t bh__witness_take(bh__witness_pool *pool, uint32_t rec) {
    (void)rec;
    switch (pool->mode) {
    case BH__WITNESS_VALGRIND:
#if HAVE_MEMCHECK
        VALGRIND_MALLOCLIKE_BLOCK(slot_of(pool, rec), 8, 0, 0);
#endif
        return 0;
    case BH__WITNESS_ASAN: {
        void *p = malloc(1); /* NULL: no witness for this token, nothing else changes */
        return p != NULL ? (uintptr_t)p ^ HIDE : 0;
    }
    default:
        return 0;
    }
}

void bh__witness_drop(bh__witness_pool *pool, uint32_t rec, uintptr_t cookie) {
    (void)rec;
    if (pool->mode == BH__WITNESS_VALGRIND) {
#if HAVE_MEMCHECK
        VALGRIND_FREELIKE_BLOCK(slot_of(pool, rec), 0);
#endif
    } else if (pool->mode == BH__WITNESS_ASAN && cookie != 0) {
        free((void *)(cookie ^ HIDE));
    }
}

void bh__witness_double_drop(bh__witness_pool *pool, uint32_t rec, uintptr_t cookie) {
    (void)rec;
    if (pool->mode == BH__WITNESS_VALGRIND) {
#if HAVE_MEMCHECK
        VALGRIND_FREELIKE_BLOCK(slot_of(pool, rec), 0); /* memcheck: invalid free, both stacks */
#endif
    } else if (pool->mode == BH__WITNESS_ASAN && cookie != 0) {
#if HAVE_ASAN
        void *p = (void *)(cookie ^ HIDE);
        /* Still in ASan's quarantine: freeing again is reported (and nothing
         * is really freed). Out of it, the byte may be someone's: leave it. */
        if (__asan_address_is_poisoned(p))
            free(p);
#endif
    }
}

void bh__witness_invalid_drop(bh__witness_pool *pool) {
    if (pool->mode == BH__WITNESS_VALGRIND) {
#if HAVE_MEMCHECK
        VALGRIND_FREELIKE_BLOCK(pool->probe, 0); /* never announced: invalid free */
#endif
    } else if (pool->mode == BH__WITNESS_ASAN) {
        /* Inside a block, not its start: ASan reports a bad free. Through a
         * volatile so the compiler does not refuse the (deliberate) misuse. */
        void *volatile inside = pool->probe + 8;
        free(inside);
    }
}
