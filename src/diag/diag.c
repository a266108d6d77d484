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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "core/internal.h"

/* fork() takes the diagnostics' process-wide locks in the one order every
 * other path nests them: the leak report at exit holds the leak list while
 * its dump holds the symbolizer, whose report names issuers. One set of
 * handlers, not one per file: glibc runs prepare handlers in the reverse
 * order of their registration, which for constructors in several files is
 * link order, and a prepare that took the issuer table before the leak list
 * could deadlock against a thread reporting leaks at exit (helgrind and
 * TSan both saw the inverted order). Released in reverse on both sides. */
static pthread_mutex_t *(*const fork_locks[])(void) = {bh__leak_list_lock, bh__symbolizer_lock,
                                                       bh__issuers_lock};
#define FORK_LOCKS (sizeof(fork_locks) / sizeof(fork_locks[0]))
static void fork_prepare(void) {
    for (size_t i = 0; i < FORK_LOCKS; i++)
        pthread_mutex_lock(fork_locks[i]());
}
static void fork_release(void) {
    for (size_t i = FORK_LOCKS; i-- > 0;)
        pthread_mutex_unlock(fork_locks[i]());
}
__attribute__((constructor)) static void fork_hooks(void) {
    (void)pthread_atfork(fork_prepare, fork_release, fork_release);
}

uint64_t bh__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ======================== Attach and detach ======================== */

/* BH_DEBUG's "fatal": no bh_config flag carries it (the contract names the
 * environment only); a bit no bh_config flag uses, read by attach alone. */
#define ENV_FATAL (1u << 31)

/* BH_DEBUG's words: "refs,history,stacks" (any subset, any order; "all" for
 * the three), "strict" (BH_CONFIG_STRICT_INTERN) and "fatal" (ENV_FATAL). */
static const struct {
    const char *word;
    uint32_t flags;
} debug_words[] = {
    {"refs", BH_CONFIG_DEBUG_REFS}, {"history", BH_CONFIG_HISTORY},      {"stacks", BH_CONFIG_STACKS},
    {"all", BH__DIAG_ROUTE},        {"strict", BH_CONFIG_STRICT_INTERN}, /* the core's, not a diagnostic: see
                                                                            attach */
    {"fatal", ENV_FATAL},
};
#define DEBUG_WORDS (sizeof(debug_words) / sizeof(debug_words[0]))

/* The flags BH_DEBUG's value v asks for. A word it does not know is named on
 * stderr (once per process): a typo must not leave the user believing a
 * diagnostic is on. */
static uint32_t flags_from_env(const char *v) {
    uint32_t f = 0;
    char unknown[160] = "", known[80] = "";
    size_t len = 0, count = 0;
    for (v = v != NULL ? v + strspn(v, ", ") : ""; *v != '\0'; v += strspn(v, ", ")) {
        size_t n = strcspn(v, ", "), i = 0;
        while (i < DEBUG_WORDS &&
               !(strlen(debug_words[i].word) == n && strncmp(v, debug_words[i].word, n) == 0))
            i++;
        if (i < DEBUG_WORDS) {
            f |= debug_words[i].flags;
        } else {
            count++;
            if (len < sizeof(unknown)) /* a longer list is cut */
                len += (size_t)snprintf(unknown + len, sizeof(unknown) - len, "%s\"%.*s\"",
                                        len != 0 ? ", " : "", (int)(n < 64 ? n : 64), v);
        }
        v += n;
    }
    if (count != 0) {
        for (size_t i = 0, k = 0; i < DEBUG_WORDS && k < sizeof(known); i++)
            k += (size_t)snprintf(known + k, sizeof(known) - k, "%s%s", i != 0 ? ", " : "",
                                  debug_words[i].word);
        bh__env_note_once(BH__NOTE_DEBUG_WORD,
                          "bufhandle: BH_DEBUG: ignoring unknown word%s %s (the words are %s)\n",
                          count == 1 ? "" : "s", unknown, known);
    }
    return f;
}

/* BH_LEAK_REPORT: 0 (unset, empty or "0"), 1, or 2 for "all". Any other
 * value is named on stderr (once per process) and reports nothing. */
static int leak_from_env(const char *v) {
    if (v == NULL || v[0] == '\0' || strcmp(v, "0") == 0)
        return 0;
    if (strcmp(v, "1") == 0)
        return 1;
    if (strcmp(v, "all") == 0)
        return 2;
    bh__env_note_once(
        BH__NOTE_LEAK_VALUE,
        "bufhandle: BH_LEAK_REPORT=%.64s: unknown value, no leak report (the values are 1 and all)\n", v);
    return 0;
}

/* What attach set up (a failed attach calls it before it registers the issuer). */
static void detach(bh_registry *reg) {
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

bh_status bh__diag_attach(bh_registry *reg, uint32_t cfg_flags) {
    uint32_t flags = cfg_flags & BH__DIAG_ROUTE;
    int leak = 0, fatal = 0;
    if (!(cfg_flags & BH_CONFIG_NO_ENV)) {
        uint32_t env = flags_from_env(getenv("BH_DEBUG"));
        flags |= env & BH__DIAG_ROUTE;
        fatal = (env & ENV_FATAL) != 0;
        reg->flags |= env & BH_CONFIG_STRICT_INTERN;
        leak = leak_from_env(getenv("BH_LEAK_REPORT"));
    }
    reg->diag = NULL;
    reg->flags = (reg->flags & ~(uint32_t)BH__DIAG_ROUTE) | flags;
    if (flags == 0 && !leak) {
        bh__issuer_add(reg, reg->tag);
        return BH_OK;
    }
    bh__diag *d = bh__calloc(1, sizeof(*d));
    if (d == NULL)
        return BH_ENOMEM;
    d->flags = flags;
    d->leak_report = leak;
    d->fatal = fatal;
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
        detach(reg);
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
    bh__issuer_add(reg, reg->tag);
    return BH_OK;
}

void bh__diag_detach(bh_registry *reg) {
    bh__issuer_remove(reg, reg->tag);
    detach(reg);
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

/* bh__tokens_acquire's callback: the core's retain of the token's block,
 * which it keeps for the history's note. */
typedef struct retain_ctx {
    bh_registry *reg;
    bh_handle block;
} retain_ctx;

static bh_status retain_cb(void *ctx, bh_handle block) {
    retain_ctx *c = ctx;
    c->block = block;
    return bh__core_retain(c->reg, block);
}

/* A reference taken by bh_retain or bh_dup counts as an alias in the history,
 * as one taken by bh_intern or bh_lookup does: for a program that releases
 * everything, allocs + aliases == releases at every address. block is held
 * (the caller has just retained it), so its snapshot cannot fail. */
static void note_alias(bh_registry *reg, bh_handle block) {
    bh__diag *d = reg->diag;
    if (d->history == NULL)
        return;
    bh_info info;
    memset(&info, 0, sizeof(info));
    (void)bh__core_info_get(reg, block, &info);
    bh__history_note(d->history, BH__HIST_ALIAS, info.device, info.address, NULL);
}

static bh_status stale(bh_registry *reg) {
    bh__core_count_stale(reg);
    return BH_ESTALE;
}

/* A call that the token table refused (a token released already, or never
 * issued here): count it, note it, report it (once per site, rate-limited),
 * and under BH_DEBUG=fatal end the process. tomb NULL: never issued. */
static bh_status misuse(bh_registry *reg, bh__misuse_op op, bh_handle token, const bh__token_info *tomb) {
    bh__diag *d = reg->diag;
    bh__stack culprit; /* a misuse is rare: its report always has the culprit's stack */
    bh__stack_capture(&culprit);
    if (op == BH__OP_RELEASE && d->history != NULL && tomb != NULL)
        bh__history_note(d->history, BH__HIST_STALE, tomb->device, tomb->address, NULL);
    if (bh__misuse_should_report(&d->limiter, &culprit))
        bh__misuse_print(bh__diag_sink(), op, token, tomb, &culprit, stacks_on(d), reg->tag);
    if (op == BH__OP_RELEASE)
        bh__tokens_show_misuse(d->tokens, token);
    if (d->fatal)
        bh__misuse_fatal("misuse report");
    return stale(reg);
}

/* A use (not a release) of a token that is not live. */
static bh_status misused(bh_registry *reg, bh__misuse_op op, bh_handle token) {
    bh__token_info tomb;
    bh_handle block;
    bh__token_verdict v = bh__tokens_block(reg->diag->tokens, token, &block, &tomb);
    return misuse(reg, op, token, v == BH__TOKEN_RELEASED ? &tomb : NULL);
}

bh_status bh__diag_retain(bh_registry *reg, bh_handle h) {
    bh__diag *d = reg->diag;
    bh_status st;
    if (d->tokens == NULL) {
        st = bh__core_retain(reg, h);
        if (st == BH_OK)
            note_alias(reg, h);
        return st;
    }
    if (h.bits == 0)
        return BH_EINVAL;
    retain_ctx ctx = {reg, {0}};
    switch (bh__tokens_acquire(d->tokens, h, retain_cb, &ctx, &st)) {
    case BH__TOKEN_OK:
        if (st == BH_OK)
            note_alias(reg, ctx.block);
        return st;
    case BH__TOKEN_OVERFLOW:
        return BH_EOVERFLOW;
    default:
        return misused(reg, BH__OP_RETAIN, h);
    }
}

/* ======================== Releases ======================== */

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
        if (v == BH__TOKEN_RELEASED || v == BH__TOKEN_UNKNOWN)
            return misuse(reg, BH__OP_RELEASE, h, v == BH__TOKEN_RELEASED ? &tok : NULL);
        if (v == BH__TOKEN_LAST && stacks_on(d)) {
            bh__stack_capture(&at);
            bh__tokens_set_released(d->tokens, h, &at);
        }
        info.device = tok.device;
        info.address = tok.address;
    } else if (d->history != NULL) {
        /* Without tokens a stale handle has no address any more. The read
         * has counted it as stale, and a generation that is dead never
         * lives again: its answer is the release's, not counted twice. */
        bh_status st = bh__core_info_get(reg, h, &info);
        if (st != BH_OK)
            return st;
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
    if (d->tokens != NULL && h.bits != 0 && bh__tokens_block(d->tokens, h, &block, NULL) != BH__TOKEN_OK)
        return misused(reg, BH__OP_INFO_GET, h);
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
    if (bh__tokens_block(d->tokens, h, &block, NULL) != BH__TOKEN_OK)
        return misused(reg, BH__OP_DUP, h);
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
