/*
 * fixed_alloc.h - the tests' allocator that hands out the address the test
 * chose, for tests that need an allocation at a known place (takeovers,
 * dying ranges, refused addresses).
 *
 * Owns: one answer per call (next, or a failure while fail is set) and a
 * count of frees with the last address freed. Must never: check anything
 * (the checker allocator in checker.h does), or own memory.
 *
 * A test that needs more in its callbacks embeds a fixed_alloc as the FIRST
 * member of its own struct and passes that struct as ctx: the callbacks
 * here then see the fixed_alloc, the test's own free callback the rest.
 */
#ifndef BH_TEST_FIXED_ALLOC_H
#define BH_TEST_FIXED_ALLOC_H

#include <stdint.h>

#include "bufhandle/bufhandle.h"

typedef struct fixed_alloc {
    uint64_t next;       /* what every allocation is given */
    int fail;            /* nonzero: allocations fail (-1) */
    int frees;           /* frees seen */
    uint64_t last_freed; /* the address of the latest */
} fixed_alloc;

int fixed_alloc_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address);
void fixed_alloc_free(void *ctx, uint32_t device, uint64_t address, uint64_t size);
/* {fixed_alloc_alloc, fixed_alloc_free, a}. */
bh_allocator fixed_allocator(fixed_alloc *a);

#endif /* BH_TEST_FIXED_ALLOC_H */
