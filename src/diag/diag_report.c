/*
 * diag_report.c - the misuse report printed when a debug token is released
 * once too often (or was never issued).
 *
 * Owns: where such reports go (stderr; tests may redirect), the limiter that
 * prints each culprit site once and at most a few reports per second, and
 * the report's text.
 * Must never: print to stdout, or print from the hot path of a registry
 * without debug references (only debug tokens lead here).
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "core/internal.h"

/* Reports per second past which they are counted, not printed. */
#define REPORTS_PER_SECOND 5u

static FILE *sink_override; /* set only by tests, before the misuse they provoke */

void bh__diag_set_sink(FILE *sink) { sink_override = sink; }
FILE *bh__diag_sink(void) { return sink_override != NULL ? sink_override : stderr; }

void bh__misuse_limiter_init(bh__misuse_limiter *l) {
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
}

void bh__misuse_limiter_fini(bh__misuse_limiter *l) { pthread_mutex_destroy(&l->lock); }

int bh__misuse_should_report(bh__misuse_limiter *l, const bh__stack *culprit) {
    uint64_t site = bh__stack_hash(culprit);
    uint64_t now = bh__now_ns();
    int ok = 1;
    pthread_mutex_lock(&l->lock);
    uint32_t known = l->nsites < 64 ? l->nsites : 64;
    for (uint32_t i = 0; i < known && ok; i++)
        ok = l->sites[i] != site;
    if (ok) {
        if (now - l->window_start_ns >= 1000000000ull) {
            l->window_start_ns = now;
            l->in_window = 0;
        }
        ok = l->in_window < REPORTS_PER_SECOND;
    }
    if (ok) {
        l->in_window++;
        /* Past 64 sites the oldest are forgotten (and may print again). */
        l->sites[l->nsites++ % 64] = site;
    } else {
        l->suppressed++;
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

uint64_t bh__misuse_suppressed(bh__misuse_limiter *l) {
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->suppressed;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void bh__misuse_print(FILE *out, bh_handle token, const bh__token_info *tomb, const bh__stack *culprit,
                      int stacks_on) {
    bh__symbolizer *sym = bh__symbolizer_open();
    flockfile(out); /* one report stays in one piece between threads */
    if (tomb != NULL) {
        fprintf(out,
                "bufhandle: BH_ESTALE: token 0x%016" PRIx64 " released more times than it was acquired\n"
                "  allocation: device %" PRIu32 " %s, address 0x%" PRIx64 ", size %" PRIu64 "\n"
                "  released again at:\n",
                token.bits, BH_DOMAIN_DEVICE(tomb->device), bh__mem_kind_name(BH_DOMAIN_KIND(tomb->device)),
                tomb->address, tomb->size);
    } else {
        fprintf(out,
                "bufhandle: BH_ESTALE: release of token 0x%016" PRIx64
                ", which this registry never issued (or released long ago)\n"
                "  released at:\n",
                token.bits);
    }
    bh__stack_print_text(out, sym, culprit, "    ");
    if (tomb != NULL && stacks_on) {
        fputs("  token taken at:\n", out);
        bh__stack_print_text(out, sym, &tomb->taken, "    ");
        fputs("  first released at:\n", out);
        bh__stack_print_text(out, sym, &tomb->released, "    ");
    } else if (tomb != NULL) {
        fputs("  (BH_DEBUG=refs,stacks also shows where it was taken and first released)\n", out);
    }
    fputs("  Other references to the allocation are unaffected. This site is reported once.\n", out);
    funlockfile(out);
    fflush(out);
    bh__symbolizer_close(sym);
}
