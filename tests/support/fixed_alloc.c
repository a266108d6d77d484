/*
 * fixed_alloc.c - the tests' fixed-address allocator (fixed_alloc.h).
 *
 * Owns: what fixed_alloc.h declares. Must never: be linked into the library
 * or a tool.
 */
#include "support/fixed_alloc.h"

int fixed_alloc_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device;
    (void)size;
    fixed_alloc *a = ctx;
    if (a->fail)
        return -1;
    *address = a->next;
    return 0;
}

void fixed_alloc_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)device;
    (void)size;
    fixed_alloc *a = ctx;
    a->frees++;
    a->last_freed = address;
}

bh_allocator fixed_allocator(fixed_alloc *a) {
    return (bh_allocator){fixed_alloc_alloc, fixed_alloc_free, a};
}
