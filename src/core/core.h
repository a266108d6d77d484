/*
 * core.h - the small private interface through which the diagnostics
 * (src/diag/) call the core.
 *
 * Owns: the core operations the diagnostics wrap, as the public calls do
 * them with every diagnostic off (core.c), and nothing else of the core.
 * Must never: declare anything that calls into src/diag/: the public entry
 * points route into the diagnostics, the diagnostics into the core, and
 * nothing routes back.
 */
#ifndef BH_CORE_H
#define BH_CORE_H

#include <stdint.h>

#include "bufhandle/bufhandle.h"

/* The core operations the diagnostics wrap (core.c): what the public
 * functions do when diagnostics are off. born / freed (may be NULL) say
 * whether a block was created / the last reference dropped. */
typedef enum bh__acq_op {
    BH__ACQ_ALLOC,
    BH__ACQ_ADOPT,
    BH__ACQ_INTERN,
    BH__ACQ_LOOKUP,
    BH__ACQ_LOOKUP_CONTAINING
} bh__acq_op;
typedef struct bh__acq {
    bh__acq_op op;
    uint32_t device;
    uint64_t address, size;
    void *arg;             /* bh_alloc_ex's */
    uint64_t *address_out; /* bh_alloc_addr's (NULL: not asked), set on BH_OK only */
} bh__acq;
bh_status bh__core_acquire(bh_registry *reg, const bh__acq *a, bh_handle *out, int *born);
bh_status bh__core_retain(bh_registry *reg, bh_handle h);
bh_status bh__core_release(bh_registry *reg, bh_handle h, int *freed);
bh_status bh__core_info_get(bh_registry *reg, bh_handle h, bh_info *out);
/* Calls fn for every live block (a consistent snapshot of each, taken
 * without a reference). */
void bh__core_foreach_live(bh_registry *reg, void (*fn)(void *ctx, bh_handle block, const bh_info *info),
                           void *ctx);
void bh__core_count_stale(bh_registry *reg);

#endif /* BH_CORE_H */
