/*
 * diag.c - the diagnostics layer between the public API and the registry
 * core: debug references, history and stacks.
 *
 * Owns: which diagnostics a registry has (config flags, BH_DEBUG,
 * BH_LEAK_REPORT), bh_dup, and the path every public call takes when one of
 * them is on: map a debug token to its block, call the core, note history
 * and stacks, issue a token for every reference handed out.
 * Must never: be entered by a registry with all diagnostics off (api.c
 * tests one flag word first), hold a diagnostics lock while calling the core
 * (its callbacks may call back into the registry), or let a misused token
 * change any other token of the same allocation.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "core/internal.h"

uint64_t bh__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ======================== Attach and detach ======================== */

/* "refs,history,stacks" (any subset, any order; "all" for the three), and
 * "strict" (BH_CONFIG_STRICT_INTERN). */
static uint32_t flags_from_env(const char *v) {
    uint32_t f = 0;
    while (v != NULL && *v != '\0') {
        size_t n = strcspn(v, ", ");
        if (n == 4 && strncmp(v, "refs", 4) == 0)
            f |= BH_CONFIG_DEBUG_REFS;
        else if (n == 7 && strncmp(v, "history", 7) == 0)
            f |= BH_CONFIG_HISTORY;
        else if (n == 6 && strncmp(v, "stacks", 6) == 0)
            f |= BH_CONFIG_STACKS;
        else if (n == 3 && strncmp(v, "all", 3) == 0)
            f |= BH__DIAG_ROUTE;
        else if (n == 6 && strncmp(v, "strict", 6) == 0)
            f |= BH_CONFIG_STRICT_INTERN; /* the core's, not a diagnostic: see attach */
        v += n;
        v += strspn(v, ", ");
    }
    return f;
}

bh_status bh__diag_attach(bh_registry *reg, uint32_t cfg_flags) {
    uint32_t flags = cfg_flags & BH__DIAG_ROUTE;
    int leak = 0;
    if (!(cfg_flags & BH_CONFIG_NO_ENV)) {
        uint32_t env = flags_from_env(getenv("BH_DEBUG"));
        flags |= env & BH__DIAG_ROUTE;
        reg->flags |= env & BH_CONFIG_STRICT_INTERN;
        const char *lr = getenv("BH_LEAK_REPORT");
        leak = lr != NULL && strcmp(lr, "1") == 0;
    }
    reg->diag = NULL;
    reg->flags = (reg->flags & ~(uint32_t)BH__DIAG_ROUTE) | flags;
    if (flags == 0 && !leak)
        return BH_OK;
    bh__diag *d = bh__calloc(1, sizeof(*d));
    if (d == NULL)
        return BH_ENOMEM;
    d->flags = flags;
    d->leak_report = leak;
    d->reg = reg;
    d->created_ns = bh__now_ns();
    bh__misuse_limiter_init(&d->limiter);
    bh_status st = BH_OK;
    if (flags & BH_CONFIG_DEBUG_REFS)
        st = bh__tokens_create(reg->tag, reg->gen_salt, BH__KEEP_RELEASED, bh__witness_detect(), &d->tokens);
    if (st == BH_OK && (flags & (BH_CONFIG_HISTORY | BH_CONFIG_STACKS)))
        st = bh__history_create(&d->history);
    if (st != BH_OK) {
        reg->diag = d;
        bh__diag_detach(reg);
        return st;
    }
    if (flags & BH_CONFIG_STACKS) {
        /* The first backtrace() loads the unwinder: pay for it here, not in
         * the middle of the first bh_alloc. */
        bh__stack warm;
        bh__stack_capture(&warm);
    }
    reg->diag = d;
    if (leak)
        bh__leak_report_add(d);
    return BH_OK;
}

void bh__diag_detach(bh_registry *reg) {
    bh__diag *d = reg->diag;
    if (d == NULL)
        return;
    if (d->leak_report)
        bh__leak_report_remove(d);
    bh__tokens_destroy(d->tokens);
    bh__history_destroy(d->history);
    bh__misuse_limiter_fini(&d->limiter);
    bh__free(d);
    reg->diag = NULL;
}

/* ======================== Acquisitions ======================== */

static int stacks_on(const bh__diag *d) { return (d->flags & BH_CONFIG_STACKS) != 0; }

bh_status bh__diag_acquire(bh_registry *reg, const bh__acq *a, bh_handle *out) {
    bh__diag *d = reg->diag;
    bh__stack at = {0};
    if (stacks_on(d))
        bh__stack_capture(&at);
    bh__token_ticket ticket = {0};
    if (d->tokens != NULL && bh__tokens_reserve(d->tokens, &ticket) != BH_OK)
        return BH_ENOMEM;
    bh_handle block;
    int born = 0;
    bh_status st = bh__core_acquire(reg, a, &block, &born);
    if (st != BH_OK) {
        if (d->tokens != NULL)
            bh__tokens_cancel(d->tokens, ticket);
        return st;
    }
    /* We hold a reference: the snapshot cannot fail. */
    bh_info info;
    memset(&info, 0, sizeof(info));
    (void)bh__core_info_get(reg, block, &info);
    if (d->history != NULL)
        bh__history_note(d->history, born ? BH__HIST_ALLOC : BH__HIST_ALIAS, info.device, info.address,
                         stacks_on(d) ? &at : NULL);
    *out = d->tokens != NULL ? bh__tokens_issue(d->tokens, ticket, block, &info, stacks_on(d) ? &at : NULL)
                             : block;
    return BH_OK;
}

static bh_status retain_cb(void *reg, bh_handle block) { return bh__core_retain(reg, block); }

static bh_status stale(bh_registry *reg) {
    bh__core_count_stale(reg);
    return BH_ESTALE;
}

bh_status bh__diag_retain(bh_registry *reg, bh_handle h) {
    bh__diag *d = reg->diag;
    if (d->tokens == NULL)
        return bh__core_retain(reg, h);
    if (h.bits == 0)
        return BH_EINVAL;
    bh_status st;
    switch (bh__tokens_acquire(d->tokens, h, retain_cb, reg, &st)) {
    case BH__TOKEN_OK:
        return st;
    case BH__TOKEN_OVERFLOW:
        return BH_EOVERFLOW;
    default:
        return stale(reg);
    }
}

/* ======================== Releases ======================== */

/* A release that the token table refused: count it, note it, report it
 * (once per site, rate-limited). tomb NULL: never issued. */
static bh_status misuse(bh_registry *reg, bh_handle token, const bh__token_info *tomb,
                        const bh__stack *culprit) {
    bh__diag *d = reg->diag;
    if (d->history != NULL && tomb != NULL)
        bh__history_note(d->history, BH__HIST_STALE, tomb->device, tomb->address, NULL);
    if (bh__misuse_should_report(&d->limiter, culprit))
        bh__misuse_print(bh__diag_sink(), token, tomb, culprit, stacks_on(d));
    bh__tokens_show_misuse(d->tokens, token);
    return stale(reg);
}

bh_status bh__diag_release(bh_registry *reg, bh_handle h) {
    bh__diag *d = reg->diag;
    if (h.bits == 0)
        return BH_EINVAL;
    /* Stacks are captured only when they will be kept: most releases are
     * neither a token's last nor an allocation's. */
    bh__stack at = {0};
    bh_handle block = h;
    bh_info info;
    memset(&info, 0, sizeof(info));
    if (d->tokens != NULL) {
        bh__token_info tok;
        bh__token_verdict v = bh__tokens_release(d->tokens, h, &block, &tok);
        if (v == BH__TOKEN_RELEASED || v == BH__TOKEN_UNKNOWN) {
            bh__stack_capture(&at); /* a misuse is rare: its report always has the culprit's stack */
            return misuse(reg, h, v == BH__TOKEN_RELEASED ? &tok : NULL, &at);
        }
        if (v == BH__TOKEN_LAST && stacks_on(d)) {
            bh__stack_capture(&at);
            bh__tokens_set_released(d->tokens, h, &at);
        }
        info.device = tok.device;
        info.address = tok.address;
    } else if (d->history != NULL && bh__core_info_get(reg, h, &info) != BH_OK) {
        /* Without tokens a stale handle has no address any more. */
        return bh__core_release(reg, h, NULL);
    }
    int freed = 0;
    bh_status st = bh__core_release(reg, block, &freed);
    if (d->history != NULL && st == BH_OK) {
        bh__history_note(d->history, BH__HIST_RELEASE, info.device, info.address, NULL);
        if (freed && stacks_on(d) && at.depth == 0)
            bh__stack_capture(&at);
        if (freed)
            bh__history_note(d->history, BH__HIST_FREE, info.device, info.address, stacks_on(d) ? &at : NULL);
    }
    return st;
}

/* ======================== Queries ======================== */

bh_status bh__diag_info_get(bh_registry *reg, bh_handle h, bh_info *out) {
    bh__diag *d = reg->diag;
    bh_handle block = h;
    if (d->tokens != NULL && h.bits != 0 && bh__tokens_block(d->tokens, h, &block) != BH__TOKEN_OK)
        return stale(reg);
    /* refs is the allocation's total: every token's acquisitions together. */
    return bh__core_info_get(reg, block, out);
}

bh_status bh_dup(bh_registry *reg, bh_handle h, bh_handle *out) {
    if (reg != NULL && bh__forked(reg))
        return BH_EFORKED; /* the parent's: no lock of it is safe here */
    if (reg == NULL || out == NULL || h.bits == 0)
        return BH_EINVAL;
    bh__diag *d = reg->diag;
    if (!(reg->flags & BH_CONFIG_DEBUG_REFS) || d == NULL || d->tokens == NULL) {
        bh_status st = bh_retain(reg, h);
        if (st == BH_OK)
            *out = h;
        return st;
    }
    bh__stack at = {0};
    if (stacks_on(d))
        bh__stack_capture(&at);
    bh_handle block;
    if (bh__tokens_block(d->tokens, h, &block) != BH__TOKEN_OK)
        return stale(reg);
    bh__token_ticket ticket;
    if (bh__tokens_reserve(d->tokens, &ticket) != BH_OK)
        return BH_ENOMEM;
    bh_status st = bh__core_retain(reg, block);
    if (st != BH_OK) {
        bh__tokens_cancel(d->tokens, ticket);
        return st;
    }
    bh_info info; /* we hold a reference: the snapshot cannot fail */
    memset(&info, 0, sizeof(info));
    (void)bh__core_info_get(reg, block, &info);
    if (d->history != NULL)
        bh__history_note(d->history, BH__HIST_ALIAS, info.device, info.address, NULL);
    *out = bh__tokens_issue(d->tokens, ticket, block, &info, stacks_on(d) ? &at : NULL);
    return BH_OK;
}
