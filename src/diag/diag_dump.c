/*
 * diag_dump.c - bh_registry_dump (text and JSON) and the leak report at exit.
 *
 * Owns: the listing of a registry's live allocations, enriched with what the
 * diagnostics know (birth order and age, where each allocation was created,
 * each live debug token and where it was taken, the history's top
 * offenders), and the process-wide list of registries that BH_LEAK_REPORT=1
 * dumps from an atexit handler.
 * Must never: hold a registry or diagnostics lock while writing to the
 * stream (a slow stream must not stall the registry), or print to stdout
 * unless the caller passed stdout.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "core/internal.h"

/* Rows of the history's top-offenders table in a dump. */
#define HISTORY_TOP 10

const char *bh__mem_kind_name(uint32_t kind) {
    static const char *const names[] = BH_MEM_KIND_NAMES;
    return kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "user";
}

/* ======================== Collecting ======================== */

typedef struct live_alloc {
    bh_handle block;
    bh_info info;
} live_alloc;

typedef struct live_token {
    bh_handle token;
    bh__token_info tok;
} live_token;

typedef struct collected {
    live_alloc *allocs;
    size_t nallocs, cap_allocs;
    live_token *tokens;
    size_t ntokens, cap_tokens;
    uint64_t bytes;  /* sum of the live allocations' sizes */
    uint64_t now_ns; /* when the dump was taken */
    int failed;      /* host memory ran out: the dump says so */
} collected;

/* Appends one element to a growable array. 0 when host memory ran out. */
static int push(void **arr, size_t *n, size_t *cap, size_t elem, const void *v) {
    if (*n == *cap) {
        size_t ncap = *cap != 0 ? *cap * 2 : 64;
        void *p = realloc(*arr, ncap * elem);
        if (p == NULL)
            return 0;
        *arr = p;
        *cap = ncap;
    }
    memcpy((char *)*arr + *n * elem, v, elem);
    (*n)++;
    return 1;
}

static void collect_alloc(void *ctx, bh_handle block, const bh_info *info) {
    collected *c = ctx;
    live_alloc a = {block, *info};
    c->bytes += info->size;
    if (!push((void **)&c->allocs, &c->nallocs, &c->cap_allocs, sizeof(a), &a))
        c->failed = 1;
}

static void collect_token(void *ctx, const bh__token_info *tok, bh_handle token) {
    collected *c = ctx;
    live_token t = {token, *tok};
    if (!push((void **)&c->tokens, &c->ntokens, &c->cap_tokens, sizeof(t), &t))
        c->failed = 1;
}

static int by_key(const void *pa, const void *pb) {
    const live_alloc *a = pa, *b = pb;
    if (a->info.device != b->info.device)
        return a->info.device < b->info.device ? -1 : 1;
    return a->info.address < b->info.address ? -1 : a->info.address > b->info.address;
}

static int by_block(const void *pa, const void *pb) {
    const live_token *a = pa, *b = pb;
    return a->tok.block.bits < b->tok.block.bits ? -1 : a->tok.block.bits > b->tok.block.bits;
}

/* The first live token of block (tokens sorted by block), or ntokens. */
static size_t first_token_of(const collected *c, bh_handle block) {
    size_t lo = 0, hi = c->ntokens;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->tokens[mid].tok.block.bits < block.bits)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ======================== Text ======================== */

static void flags_text(FILE *out, uint32_t flags) {
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        {BH_CONFIG_DEBUG_REFS, "refs"}, {BH_CONFIG_HISTORY, "history"}, {BH_CONFIG_STACKS, "stacks"}};
    int n = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & names[i].bit)
            fprintf(out, "%s%s", n++ ? "," : "", names[i].name);
    if (n == 0)
        fputs("none", out);
}

static void history_row_text(FILE *out, const bh__hist_entry *e) {
    fprintf(out,
            "    %6" PRIu32 " %-8s 0x%-14" PRIx64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64
            " %8" PRIu64 "\n",
            BH_DOMAIN_DEVICE(e->device), bh__mem_kind_name(BH_DOMAIN_KIND(e->device)), e->address,
            e->n[BH__HIST_ALLOC], e->n[BH__HIST_ALIAS], e->n[BH__HIST_RELEASE], e->n[BH__HIST_FREE],
            e->n[BH__HIST_STALE]);
}

/* all: every address of the history, not only those with findings. */
static void dump_text(FILE *out, bh_registry *reg, const collected *c, bh__symbolizer *sym, int all) {
    bh__diag *d = reg->diag;
    fprintf(out,
            "bufhandle registry %p: %zu live allocation%s, %" PRIu64 " bytes (diagnostics: ", (void *)reg,
            c->nallocs, c->nallocs == 1 ? "" : "s", c->bytes);
    flags_text(out, d != NULL ? d->flags : 0);
    fputs(")\n", out);
    if (c->failed)
        fputs("  (out of host memory: this list is incomplete)\n", out);
    for (size_t i = 0; i < c->nallocs; i++) {
        const live_alloc *a = &c->allocs[i];
        fprintf(out, "  device %" PRIu32 " %s address 0x%" PRIx64 " size %" PRIu64 " refs %" PRIu32,
                BH_DOMAIN_DEVICE(a->info.device), bh__mem_kind_name(BH_DOMAIN_KIND(a->info.device)),
                a->info.address, a->info.size, a->info.refs);
        bh__hist_entry e;
        int known = d != NULL && d->history != NULL &&
                    bh__history_get(d->history, a->info.device, a->info.address, &e);
        if (known)
            fprintf(out, " seq %" PRIu64 " age %.3f s", e.born_seq, (double)(c->now_ns - e.born_ns) / 1e9);
        fputc('\n', out);
        if (known && e.created.depth != 0) {
            fputs("    created at:\n", out);
            bh__stack_print_text(out, sym, &e.created, "      ");
        }
        for (size_t j = first_token_of(c, a->block);
             j < c->ntokens && c->tokens[j].tok.block.bits == a->block.bits; j++) {
            const live_token *t = &c->tokens[j];
            fprintf(out, "    token 0x%016" PRIx64 " holds %" PRIu32 " reference%s%s\n", t->token.bits,
                    t->tok.count, t->tok.count == 1 ? "" : "s", t->tok.taken.depth != 0 ? ", taken at:" : "");
            if (t->tok.taken.depth != 0)
                bh__stack_print_text(out, sym, &t->tok.taken, "      ");
        }
    }
    if (d != NULL && d->history != NULL && (d->flags & BH_CONFIG_HISTORY)) {
        bh__hist_entry top[HISTORY_TOP];
        uint64_t findings = 0;
        size_t n = bh__history_top(d->history, top, HISTORY_TOP, !all, &findings);
        fprintf(out,
                "  history: %" PRIu64 " addresses, %" PRIu64 " with findings (stale releases, or live); ",
                bh__history_addresses(d->history), findings);
        if (all)
            fprintf(out, "top %zu by stale releases, findings, then events\n", n);
        else
            fprintf(out, "%zu shown (BH_LEAK_REPORT=all or BH_DUMP_HISTORY_ALL: every address)\n", n);
        if (n == 0)
            goto suppressed;
        fprintf(out, "    %6s %-8s %-16s %8s %8s %8s %8s %8s\n", "device", "kind", "address", "allocs",
                "aliases", "releases", "frees", "stale");
        for (size_t i = 0; i < n; i++) {
            history_row_text(out, &top[i]);
            if (top[i].freed.depth != 0) {
                fputs("      last freed at:\n", out);
                bh__stack_print_text(out, sym, &top[i].freed, "        ");
            }
        }
    }
suppressed:;
    uint64_t suppressed = d != NULL ? bh__misuse_suppressed(&d->limiter) : 0;
    if (suppressed != 0)
        fprintf(out, "  misuse reports suppressed (repeated sites, rate limit): %" PRIu64 "\n", suppressed);
}

/* ======================== JSON ======================== */

static void dump_json(FILE *out, bh_registry *reg, const collected *c, bh__symbolizer *sym, int all) {
    bh__diag *d = reg->diag;
    fprintf(out,
            "{\"registry\":\"%p\",\"live_allocations\":%zu,\"live_bytes\":%" PRIu64 ",\"diagnostics\":\"",
            (void *)reg, c->nallocs, c->bytes);
    flags_text(out, d != NULL ? d->flags : 0);
    fprintf(out, "\",\"complete\":%s,\"allocations\":[", c->failed ? "false" : "true");
    for (size_t i = 0; i < c->nallocs; i++) {
        const live_alloc *a = &c->allocs[i];
        fprintf(out,
                "%s{\"domain\":%" PRIu32 ",\"device\":%" PRIu32 ",\"kind\":\"%s\",\"address\":%" PRIu64
                ",\"size\":%" PRIu64 ",\"refs\":%" PRIu32,
                i ? "," : "", a->info.device, BH_DOMAIN_DEVICE(a->info.device),
                bh__mem_kind_name(BH_DOMAIN_KIND(a->info.device)), a->info.address, a->info.size,
                a->info.refs);
        bh__hist_entry e;
        if (d != NULL && d->history != NULL &&
            bh__history_get(d->history, a->info.device, a->info.address, &e)) {
            fprintf(out, ",\"seq\":%" PRIu64 ",\"age_ms\":%.3f", e.born_seq,
                    (double)(c->now_ns - e.born_ns) / 1e6);
            if (e.created.depth != 0) {
                fputs(",\"created_at\":", out);
                bh__stack_print_json(out, sym, &e.created);
            }
        }
        if (d != NULL && d->tokens != NULL) {
            fputs(",\"tokens\":[", out);
            size_t j0 = first_token_of(c, a->block);
            for (size_t j = j0; j < c->ntokens && c->tokens[j].tok.block.bits == a->block.bits; j++) {
                const live_token *t = &c->tokens[j];
                fprintf(out, "%s{\"token\":\"0x%016" PRIx64 "\",\"count\":%" PRIu32, j > j0 ? "," : "",
                        t->token.bits, t->tok.count);
                if (t->tok.taken.depth != 0) {
                    fputs(",\"taken_at\":", out);
                    bh__stack_print_json(out, sym, &t->tok.taken);
                }
                fputc('}', out);
            }
            fputc(']', out);
        }
        fputc('}', out);
    }
    fputc(']', out);
    if (d != NULL && d->history != NULL && (d->flags & BH_CONFIG_HISTORY)) {
        bh__hist_entry top[HISTORY_TOP];
        uint64_t findings = 0;
        size_t n = bh__history_top(d->history, top, HISTORY_TOP, !all, &findings);
        fprintf(out, ",\"history\":{\"addresses\":%" PRIu64 ",\"with_findings\":%" PRIu64 ",\"top\":[",
                bh__history_addresses(d->history), findings);
        for (size_t i = 0; i < n; i++) {
            const bh__hist_entry *e = &top[i];
            fprintf(out,
                    "%s{\"domain\":%" PRIu32 ",\"device\":%" PRIu32 ",\"kind\":\"%s\",\"address\":%" PRIu64
                    ",\"allocs\":%" PRIu64 ",\"aliases\":%" PRIu64 ",\"releases\":%" PRIu64
                    ",\"frees\":%" PRIu64 ",\"stale\":%" PRIu64,
                    i ? "," : "", e->device, BH_DOMAIN_DEVICE(e->device),
                    bh__mem_kind_name(BH_DOMAIN_KIND(e->device)), e->address, e->n[BH__HIST_ALLOC],
                    e->n[BH__HIST_ALIAS], e->n[BH__HIST_RELEASE], e->n[BH__HIST_FREE], e->n[BH__HIST_STALE]);
            if (e->freed.depth != 0) {
                fputs(",\"last_freed_at\":", out);
                bh__stack_print_json(out, sym, &e->freed);
            }
            fputc('}', out);
        }
        fputs("]}", out);
    }
    fprintf(out, ",\"misuse_reports_suppressed\":%" PRIu64 "}\n",
            d != NULL ? bh__misuse_suppressed(&d->limiter) : 0);
}

/* ======================== bh_registry_dump ======================== */

bh_status bh_registry_dump(bh_registry *reg, FILE *out, unsigned flags) {
    if (reg != NULL && bh__forked(reg))
        return BH_EFORKED; /* the parent's: no lock of it is safe here */
    if (reg == NULL || out == NULL || (flags & ~(unsigned)(BH_DUMP_JSON | BH_DUMP_HISTORY_ALL)) != 0)
        return BH_EINVAL;
    int all = (flags & BH_DUMP_HISTORY_ALL) != 0;
    collected c;
    memset(&c, 0, sizeof(c));
    c.now_ns = bh__now_ns();
    bh__core_foreach_live(reg, collect_alloc, &c);
    if (reg->diag != NULL && reg->diag->tokens != NULL)
        bh__tokens_foreach_live(reg->diag->tokens, collect_token, &c);
    if (c.nallocs > 1)
        qsort(c.allocs, c.nallocs, sizeof(*c.allocs), by_key);
    if (c.ntokens > 1)
        qsort(c.tokens, c.ntokens, sizeof(*c.tokens), by_block);
    bh__symbolizer *sym = bh__symbolizer_open();
    if (flags & BH_DUMP_JSON)
        dump_json(out, reg, &c, sym, all);
    else
        dump_text(out, reg, &c, sym, all);
    bh__symbolizer_close(sym);
    free(c.allocs);
    free(c.tokens);
    return fflush(out) == 0 && !ferror(out) ? BH_OK : BH_EINVAL;
}

/* ======================== Leak report at exit ======================== */

static pthread_mutex_t leak_lock = PTHREAD_MUTEX_INITIALIZER;
static bh__diag *leak_list; /* under leak_lock */
static pthread_once_t leak_once = PTHREAD_ONCE_INIT;

static void leak_report_at_exit(void) {
    int fatal = 0;
    pthread_mutex_lock(&leak_lock);
    for (bh__diag *d = leak_list; d != NULL; d = d->next) {
        bh_stats st;
        if (bh_stats_get(d->reg, &st) != BH_OK || st.live_handles == 0)
            continue;
        fprintf(stderr, "bufhandle: BH_LEAK_REPORT: registry %p has %" PRIu64 " live allocation%s at exit\n",
                (void *)d->reg, st.live_handles, st.live_handles == 1 ? "" : "s");
        (void)bh_registry_dump(d->reg, stderr, d->leak_report == 2 ? BH_DUMP_HISTORY_ALL : 0);
        fatal |= d->fatal;
    }
    pthread_mutex_unlock(&leak_lock);
    if (fatal) /* after every registry's report, so one run shows all of them */
        bh__misuse_fatal("leak report");
}

static void install_leak_report(void) { (void)atexit(leak_report_at_exit); }

/* Held across fork() (diag.c): a fork while another thread adds or removes
 * a registry would otherwise leave leak_lock locked forever in the child,
 * whose first registry with a leak report would hang in
 * bh__leak_report_add. */
pthread_mutex_t *bh__leak_list_lock(void) { return &leak_lock; }

void bh__leak_report_add(bh__diag *d) {
    pthread_once(&leak_once, install_leak_report);
    pthread_mutex_lock(&leak_lock);
    d->prev = NULL;
    d->next = leak_list;
    if (leak_list != NULL)
        leak_list->prev = d;
    leak_list = d;
    pthread_mutex_unlock(&leak_lock);
}

void bh__leak_report_remove(bh__diag *d) {
    pthread_mutex_lock(&leak_lock);
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        leak_list = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    pthread_mutex_unlock(&leak_lock);
}
