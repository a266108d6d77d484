/*
 * diag_report.c - the misuse report printed when a debug token is released
 * once too often, used after its last release, or was never issued here.
 *
 * Owns: where such reports go (stderr; tests may redirect), the limiter that
 * prints each culprit site once and at most a few reports per second, the
 * report's text, the process-wide table of registries by tag (to name the
 * registry a foreign token came from), BH_DEBUG=fatal's abort, and the
 * once-per-process notes about the environment (bh__env_note_once).
 * Must never: print to stdout, print from the hot path of a registry
 * without debug references (only debug tokens lead here), follow a pointer
 * from the tag table, or abort unless BH_DEBUG=fatal asked for it.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "core/internal.h"

/* Reports per second past which they are counted, not printed. */
#define REPORTS_PER_SECOND 5u

static FILE *sink_override; /* set only by tests, before the misuse they provoke */

void bh__diag_set_sink(FILE *sink) { sink_override = sink; }
FILE *bh__diag_sink(void) { return sink_override != NULL ? sink_override : stderr; }

static AO_t noted[BH__NOTE_COUNT]; /* ATOMIC: 1 once the note was printed */

void bh__env_note_once(bh__env_note which, const char *fmt, ...) {
    /* Relaxed CAS: the flag only decides which thread prints; it publishes
     * nothing. */
    if (AO_fetch_compare_and_swap(&noted[which], 0, 1) != 0)
        return;
    FILE *out = bh__diag_sink();
    /* One call for the whole line (fmt ends with its newline): on unbuffered
     * stderr glibc writes it with one write(2), so lines of several threads
     * or processes do not mix. */
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fflush(out);
}

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

/* ======================== Issuers ======================== */

/* The latest registry created with each tag and how many live registries
 * have it (tags repeat every 255 registries). Only the pointer's value is
 * printed, never followed: a registry destroyed meanwhile costs nothing. A
 * lock, not atomics: registries are created rarely, reports more rarely. */
static pthread_mutex_t issuer_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const bh_registry *latest; /* NULL once it is destroyed */
    uint32_t live;
} issuers[256];

/* Held across fork() (diag.c) so a child never inherits it locked by a
 * parent thread that does not exist there: the child's own registries take
 * it. */
pthread_mutex_t *bh__issuers_lock(void) { return &issuer_lock; }

void bh__issuer_add(const bh_registry *reg, uint32_t tag) {
    pthread_mutex_lock(&issuer_lock);
    issuers[tag & 0xffu].latest = reg;
    issuers[tag & 0xffu].live++;
    pthread_mutex_unlock(&issuer_lock);
}

void bh__issuer_remove(const bh_registry *reg, uint32_t tag) {
    pthread_mutex_lock(&issuer_lock);
    if (issuers[tag & 0xffu].latest == reg)
        issuers[tag & 0xffu].latest = NULL;
    if (issuers[tag & 0xffu].live > 0)
        issuers[tag & 0xffu].live--;
    pthread_mutex_unlock(&issuer_lock);
}

/* Names the registry whose tag the token carries, when one is alive. */
static void print_issuer(FILE *out, bh_handle token, uint32_t own_tag) {
    uint32_t tag = (uint32_t)(token.bits >> 24) & 0xffu;
    if (tag == own_tag)
        return; /* ours: released long ago (its tombstone is gone) or forged */
    pthread_mutex_lock(&issuer_lock);
    const bh_registry *latest = issuers[tag].latest;
    uint32_t live = tag != 0 ? issuers[tag].live : 0;
    pthread_mutex_unlock(&issuer_lock);
    if (live == 1 && latest != NULL)
        fprintf(out,
                "  issued by registry %p (tag %" PRIu32 "), alive in this process: pass it to that one\n",
                (const void *)latest, tag);
    else if (live > 1)
        fprintf(out, "  issued by one of %" PRIu32 " live registries with tag %" PRIu32 "%s%p\n", live, tag,
                latest != NULL ? ", the latest " : "", (const void *)latest);
    else
        fprintf(out, "  no registry alive in this process has its tag (%" PRIu32 ")\n", tag);
}

/* ======================== Reports ======================== */

static const char *const op_names[] = {"bh_release", "bh_retain", "bh_dup", "bh_info_get"};

void bh__misuse_print(FILE *out, bh__misuse_op op, bh_handle token, const bh__token_info *tomb,
                      const bh__stack *culprit, int stacks_on, uint32_t own_tag) {
    bh__symbolizer *sym = bh__symbolizer_open();
    int release = op == BH__OP_RELEASE;
    flockfile(out); /* one report stays in one piece between threads */
    if (tomb != NULL && release)
        fprintf(out,
                "bufhandle: BH_ESTALE: token 0x%016" PRIx64 " released more times than it was acquired\n",
                token.bits);
    else if (tomb != NULL)
        fprintf(out, "bufhandle: BH_ESTALE: %s of token 0x%016" PRIx64 " after its last release\n",
                op_names[op], token.bits);
    else
        fprintf(out,
                "bufhandle: BH_ESTALE: %s of token 0x%016" PRIx64
                ", which this registry never issued (or released long ago)\n",
                op_names[op], token.bits);
    if (tomb != NULL)
        fprintf(out, "  allocation: device %" PRIu32 " %s, address 0x%" PRIx64 ", size %" PRIu64 "\n",
                BH_DOMAIN_DEVICE(tomb->device), bh__mem_kind_name(BH_DOMAIN_KIND(tomb->device)),
                tomb->address, tomb->size);
    else
        print_issuer(out, token, own_tag);
    fputs(tomb != NULL && release ? "  released again at:\n"
          : release               ? "  released at:\n"
                                  : "  used at:\n",
          out);
    bh__stack_print_text(out, sym, culprit, "    ");
    if (tomb != NULL && stacks_on) {
        fputs("  token taken at:\n", out);
        bh__stack_print_text(out, sym, &tomb->taken, "    ");
        fputs(release ? "  first released at:\n" : "  released at:\n", out);
        bh__stack_print_text(out, sym, &tomb->released, "    ");
    } else if (tomb != NULL) {
        fputs("  (BH_DEBUG=refs,stacks also shows where it was taken and released)\n", out);
    }
    fputs("  Other references to the allocation are unaffected. This site is reported once.\n", out);
    funlockfile(out);
    fflush(out);
    bh__symbolizer_close(sym);
}

void bh__misuse_fatal(const char *what) {
    FILE *out = bh__diag_sink();
    fprintf(out, "bufhandle: BH_DEBUG=fatal: aborting after the %s above\n", what);
    fflush(out);
    abort();
}
