/*
 * api.c - the public handle operations: bh_alloc ... bh_info_get.
 *
 * Owns: the one decision each public call makes, diagnostics or not; with
 * them off the call is the inline hot path (hot.h), with them on it goes to
 * src/diag/, which calls the core back through core.h.
 * Must never: be called back by the diagnostics (they call core.c), or do
 * work of its own beyond the routing test: every behaviour is the core's.
 */
#include "diag/diag.h"
#include "hot.h"

/* ======================== Public entry points ======================== */

/* Each public call tests one flag word: with every diagnostic off, in the
 * process that made the registry (the default), it goes straight to the core
 * (hot.h, lifecycle.c); otherwise to the slow paths below: BH_EFORKED at once
 * in a fork child (no lock, no allocator, no report: see registry.c), else
 * src/diag/, which maps debug tokens to blocks and calls the core through
 * core.h. reg->flags changes only at creation and in a fork child's handler,
 * while the child has one thread. */
#define SLOW(reg) ((reg) != NULL && __builtin_expect(((reg)->flags & (BH__DIAG_ROUTE | BH__FORKED)) != 0, 0))

static __attribute__((noinline)) bh_status slow_acquire(bh_registry *reg, const bh__acq *a, bh_handle *out) {
    if (bh__forked(reg))
        return BH_EFORKED;
    if (out == NULL || (a->op == BH__ACQ_LOOKUP_CONTAINING && (reg->flags & BH_CONFIG_NO_OVERLAP_CHECK)))
        return BH_EINVAL; /* what the core answers */
    return bh__diag_acquire(reg, a, out);
}

/* Out of line: inline, its bh__acq gave bh_intern and bh_lookup a stack
 * frame on their lock-free hit too. */
static __attribute__((noinline)) bh_status routed_acquire(bh_registry *reg, bh__acq_op op, uint32_t device,
                                                          uint64_t address, uint64_t size, bh_handle *out) {
    bh__acq a = {op, device, address, size, NULL, NULL};
    return slow_acquire(reg, &a, out);
}

/* bh_alloc, bh_alloc_ex and bh_alloc_addr in one. */
static bh_status alloc_at(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out,
                          uint64_t *address) {
    if (SLOW(reg)) {
        bh__acq a = {BH__ACQ_ALLOC, device, 0, size, arg, address};
        return slow_acquire(reg, &a, out);
    }
    return bh__alloc_block(reg, device, size, arg, out, address);
}

bh_status bh_alloc_ex(bh_registry *reg, uint32_t device, uint64_t size, void *arg, bh_handle *out) {
    return alloc_at(reg, device, size, arg, out, NULL);
}

bh_status bh_alloc(bh_registry *reg, uint32_t device, uint64_t size, bh_handle *out) {
    return alloc_at(reg, device, size, NULL, out, NULL);
}

bh_status bh_alloc_addr(bh_registry *reg, uint32_t device, uint64_t size, bh_handle *out, uint64_t *address) {
    return alloc_at(reg, device, size, NULL, out, address);
}

bh_status bh_adopt(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size, bh_handle *out) {
    if (SLOW(reg))
        return routed_acquire(reg, BH__ACQ_ADOPT, device, address, size, out);
    return bh__adopt_block(reg, device, address, size, out);
}

bh_status bh_intern(bh_registry *reg, uint32_t device, uint64_t address, uint64_t size, bh_handle *out) {
    if (SLOW(reg))
        return routed_acquire(reg, BH__ACQ_INTERN, device, address, size, out);
    return intern_block(reg, device, address, size, out, NULL);
}

bh_status bh_lookup(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (SLOW(reg))
        return routed_acquire(reg, BH__ACQ_LOOKUP, device, address, 0, out);
    return lookup_block(reg, device, address, out);
}

bh_status bh_lookup_containing(bh_registry *reg, uint32_t device, uint64_t address, bh_handle *out) {
    if (SLOW(reg))
        return routed_acquire(reg, BH__ACQ_LOOKUP_CONTAINING, device, address, 0, out);
    return bh__containing_block(reg, device, address, out);
}

bh_status bh_retain(bh_registry *reg, bh_handle h) {
    if (SLOW(reg))
        return bh__forked(reg) ? BH_EFORKED : bh__diag_retain(reg, h);
    return retain_block(reg, h);
}

bh_status bh_release(bh_registry *reg, bh_handle h) {
    if (SLOW(reg))
        return bh__forked(reg) ? BH_EFORKED : bh__diag_release(reg, h);
    return release_block(reg, h, NULL);
}

bh_status bh_info_get(bh_registry *reg, bh_handle h, bh_info *out) {
    if (SLOW(reg))
        return bh__forked(reg) ? BH_EFORKED : out == NULL ? BH_EINVAL : bh__diag_info_get(reg, h, out);
    return info_block(reg, h, out);
}
