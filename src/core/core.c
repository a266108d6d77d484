/*
 * core.c - the core's operations for the diagnostics (core.h) and the tests.
 *
 * Owns: bh__core_*: what the public calls do with diagnostics off (the same
 * inline hot path as api.c, and the lifecycle), for src/diag/, which wraps
 * them; a walk over the live blocks for the dumps; the white-box test hooks.
 * Must never: call into src/diag/ (the diagnostics sit between the entry
 * points and the core, with no arrow back).
 */
#include "core.h"
#include "hot.h"

/* ======================== The core, for src/diag/ ======================== */

bh_status bh__core_acquire(bh_registry *reg, const bh__acq *a, bh_handle *out, int *born) {
    *born = a->op == BH__ACQ_ALLOC || a->op == BH__ACQ_ADOPT;
    switch (a->op) {
    case BH__ACQ_ALLOC:
        return bh__alloc_block(reg, a->device, a->size, a->arg, out, a->address_out);
    case BH__ACQ_ADOPT:
        return bh__adopt_block(reg, a->device, a->address, a->size, out);
    case BH__ACQ_INTERN:
        return intern_block(reg, a->device, a->address, a->size, out, born);
    case BH__ACQ_LOOKUP:
        return lookup_block(reg, a->device, a->address, out);
    case BH__ACQ_LOOKUP_CONTAINING:
        return bh__containing_block(reg, a->device, a->address, out);
    }
    return BH_EINVAL;
}

bh_status bh__core_retain(bh_registry *reg, bh_handle h) { return retain_block(reg, h); }
bh_status bh__core_release(bh_registry *reg, bh_handle h, int *freed) { return release_block(reg, h, freed); }
bh_status bh__core_info_get(bh_registry *reg, bh_handle h, bh_info *out) { return info_block(reg, h, out); }
void bh__core_count_stale(bh_registry *reg) { (void)count_stale(reg); }

void bh__core_foreach_live(bh_registry *reg, void (*fn)(void *ctx, bh_handle block, const bh_info *info),
                           void *ctx) {
    uint32_t end = bh__slab_fresh_end(&reg->slab); /* slots below it exist and never move */
    for (uint32_t slot = 1; slot < end; slot++) {
        bh__block *b = bh__slab_at(&reg->slab, slot);
        /* Acquire: pairs with go_live(), like bh_info_get's first load. */
        AO_t w = AO_load_acquire(&b->word);
        if (bh__word_refs(w) == 0)
            continue;
        bh_info info;
        bh_handle h = bh__block_handle(reg, b, bh__word_gen(w));
        if (info_block(reg, h, &info) == BH_OK) /* it may have died meanwhile */
            fn(ctx, h, &info);
    }
}

/* ======================== Test hooks ======================== */

bh_status bh__registry_set_gen(bh_registry *reg, bh_handle h, uint32_t gen, bh_handle *out) {
    bh_status st = BH_ESTALE; /* resolve() sets it when it returns NULL */
    bh__block *b = resolve(reg, h, &st);
    if (b == NULL)
        return st;
    AO_t w = AO_load(&b->word); /* relaxed: test hook, the CAS below checks */
    if (bh__word_gen(w) != bh__handle_gen_of(reg, h) || bh__word_refs(w) == 0)
        return BH_ESTALE;
    if (AO_fetch_compare_and_swap_full(&b->word, w, bh__word_make(gen, bh__word_refs(w))) != w)
        return BH_EBUSY;
    *out = bh__block_handle(reg, b, gen);
    return BH_OK;
}
