/*
 * diag.h - what the diagnostics files (diag_*.c) share with each other and
 * with the registry.
 *
 * Owns: the stack record, the token table (debug references), the witness
 * that makes token misuse visible to valgrind and ASan, the per-address
 * history, and the printers (dump, misuse reports).
 * Must never: be reached from the retain/release path of a registry whose
 * diagnostics are off (the registry tests one flag word and goes on), or be
 * installed.
 */
#ifndef BH_DIAG_H
#define BH_DIAG_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "bufhandle/bufhandle.h"
#include "core/core.h"

/* ======================== Stacks (diag_stack.c) ======================== */

/* Raw return addresses, innermost first. Capture costs one unwind and no
 * symbol lookup; symbols are looked up only when something is printed. */
#define BH__STACK_DEPTH 16
typedef struct bh__stack {
    uint32_t depth; /* 0: not captured */
    void *pc[BH__STACK_DEPTH];
} bh__stack;

/* Captures the caller's stack (the capture function itself left out). */
void bh__stack_capture(bh__stack *out);
/* A hash of the whole stack: two calls from one call site and call path
 * hash alike. */
uint64_t bh__stack_hash(const bh__stack *s);

/* One symbolized frame. Strings live in the bh__symbolizer that made them. */
typedef struct bh__frame {
    void *pc;
    const char *function; /* NULL: unknown */
    const char *file;     /* NULL: no line information */
    int line;
    const char *module; /* the object file; NULL if unknown */
    uintptr_t offset;   /* pc relative to the module's load address */
    int inlined;        /* a call inlined into the next frame (same pc) */
} bh__frame;

/* Symbolization session: opened once per print (it reads the process's
 * maps), closed after. Uses libdw (elfutils) loaded with dlopen when it is
 * installed, else dladdr. Sessions are serialised by a process-wide lock. */
typedef struct bh__symbolizer bh__symbolizer;
bh__symbolizer *bh__symbolizer_open(void);
void bh__symbolizer_close(bh__symbolizer *sym);
/* Fills *out for pc (a return address, or the exact pc if exact). */
void bh__symbolize(bh__symbolizer *sym, void *pc, int exact, bh__frame *out);
/* pc as up to max frames: each call inlined at pc (innermost first, its
 * file:line the place in it, "inlined" set), then the function they are
 * inlined into, at the call site of the outermost inlined call. Without
 * debug information or libdw, the one frame bh__symbolize gives. Returns
 * how many frames were written (at least 1 when max > 0). */
uint32_t bh__symbolize_inline(bh__symbolizer *sym, void *pc, int exact, bh__frame *out, uint32_t max);

/* Frames of s that belong to the caller, not to the library's own entry
 * points: the index of the first one. */
uint32_t bh__stack_first_user_frame(bh__symbolizer *sym, const bh__stack *s);
/* Prints the caller's frames of s, one per line, each prefixed by indent.
 * JSON: an array of frame objects. */
void bh__stack_print_text(FILE *out, bh__symbolizer *sym, const bh__stack *s, const char *indent);
void bh__stack_print_json(FILE *out, bh__symbolizer *sym, const bh__stack *s);
/* s as a JSON string (quotes and escapes). */
void bh__json_string(FILE *out, const char *s);

/* ======================== Witness (diag_witness.c) ======================== */

/* A witness is a tiny host object that stands for one debug token, so that
 * valgrind's memcheck (client requests on our own memory) or ASan (a real
 * malloc'ed byte) sees "token taken" as an allocation and "token released"
 * as a free: a second release is then a double free with both stacks, a
 * token never issued an invalid free, a token never released a leak.
 * Without valgrind or ASan every call is a no-op. */
typedef enum bh__witness_mode {
    BH__WITNESS_NONE = 0,
    BH__WITNESS_VALGRIND = 1,
    BH__WITNESS_ASAN = 2
} bh__witness_mode;

/* What this process can use (valgrind is detected at run time). */
bh__witness_mode bh__witness_detect(void);
/* Test hook: force NONE (tests that misuse tokens on purpose under memcheck
 * or ASan), or give back detection (1). */
void bh__witness_enable(int on);

typedef struct bh__witness_pool bh__witness_pool;
bh_status bh__witness_pool_create(bh__witness_mode mode, bh__witness_pool **out);
void bh__witness_pool_destroy(bh__witness_pool *pool);
/* A witness slot per token record index; the pool grows with the table. */
bh_status bh__witness_reserve(bh__witness_pool *pool, uint32_t records);
/* The token with record index rec was issued / released for good. Each
 * returns an opaque cookie the token keeps (ASan: the pointer, hidden). */
uintptr_t bh__witness_take(bh__witness_pool *pool, uint32_t rec);
void bh__witness_drop(bh__witness_pool *pool, uint32_t rec, uintptr_t cookie);
/* A token released once too often, or a token that was never issued. */
void bh__witness_double_drop(bh__witness_pool *pool, uint32_t rec, uintptr_t cookie);
void bh__witness_invalid_drop(bh__witness_pool *pool);

/* ======================== Tokens (diag_tokens.c) ======================== */

/* A token is one debug reference: the handle value the caller holds when
 * BH_CONFIG_DEBUG_REFS is on. It names its block and counts its own
 * acquisitions. Released tokens stay as tombstones (bounded, oldest first
 * out) so a second release is recognised and told where the first one was. */
typedef struct bh__token_info {
    bh_handle block; /* the block reference(s) the token holds */
    uint32_t count;  /* acquisitions not yet released */
    uint32_t device;
    uint64_t address;
    uint64_t size;
    bh__stack taken;    /* where it was issued (stacks on) */
    bh__stack released; /* where its count reached 0 (stacks on) */
} bh__token_info;

typedef enum bh__token_verdict {
    BH__TOKEN_OK = 0,       /* done; *block names the block to act on */
    BH__TOKEN_LAST = 1,     /* release: this was the token's last acquisition */
    BH__TOKEN_RELEASED = 2, /* the token was released already (tombstone) */
    BH__TOKEN_UNKNOWN = 3,  /* never issued here (or its tombstone is gone) */
    BH__TOKEN_OVERFLOW = 4  /* its count would overflow */
} bh__token_verdict;

typedef struct bh__tokens bh__tokens;

/* tag, salt: the registry's tag and generation salt, stamped into token
 * values as into handles (a foreign token is then unknown here).
 * keep_released: tombstones kept (oldest forgotten first). */
bh_status bh__tokens_create(uint32_t tag, uint32_t salt, uint32_t keep_released, bh__witness_mode witness,
                            bh__tokens **out);
void bh__tokens_destroy(bh__tokens *t);

/* Issuing a token is split in two so the caller can fail before it changes
 * anything: reserve (may fail with BH_ENOMEM), then issue or cancel. */
typedef struct bh__token_ticket {
    uint32_t rec;
} bh__token_ticket;
bh_status bh__tokens_reserve(bh__tokens *t, bh__token_ticket *ticket);
void bh__tokens_cancel(bh__tokens *t, bh__token_ticket ticket);
/* taken: the stack to remember (NULL: none). */
bh_handle bh__tokens_issue(bh__tokens *t, bh__token_ticket ticket, bh_handle block, const bh_info *info,
                           const bh__stack *taken);

/* The block a live token names (no change). BH__TOKEN_OK, _RELEASED or
 * _UNKNOWN; on _RELEASED *tomb (if not NULL) describes the tombstone. */
bh__token_verdict bh__tokens_block(bh__tokens *t, bh_handle token, bh_handle *block, bh__token_info *tomb);
/* One more acquisition of a live token. do_retain is called with the token
 * table locked and must take the block reference (it never calls back into
 * user code); its failure leaves the token unchanged. */
bh__token_verdict bh__tokens_acquire(bh__tokens *t, bh_handle token,
                                     bh_status (*do_retain)(void *, bh_handle), void *ctx,
                                     bh_status *retain_status);
/* One release. OK or LAST: *block is the block to release (the caller does
 * it after this returns). RELEASED / UNKNOWN: nothing changed; *info (if not
 * NULL) describes the tombstone for the misuse report. */
bh__token_verdict bh__tokens_release(bh__tokens *t, bh_handle token, bh_handle *block, bh__token_info *info);
/* After LAST: remembers where (captured only then: most releases are not a
 * token's last). A tombstone already forgotten is left alone. */
void bh__tokens_set_released(bh__tokens *t, bh_handle token, const bh__stack *released_at);
/* After a release answered RELEASED or UNKNOWN (and the library's own report
 * is out): makes the misuse an error of the memory checker, if one runs. An
 * ASan build stops the process here. */
void bh__tokens_show_misuse(bh__tokens *t, bh_handle token);

/* Live tokens, for the dump: calls fn for each, table locked (fn must not
 * call back into the registry). */
void bh__tokens_foreach_live(bh__tokens *t, void (*fn)(void *ctx, const bh__token_info *tok, bh_handle token),
                             void *ctx);
uint64_t bh__tokens_live(bh__tokens *t);

/* ======================== History (diag_history.c) ======================== */

enum bh__hist_event {
    BH__HIST_ALLOC,   /* a block was born at the address (bh_alloc, owning intern, adopt) */
    BH__HIST_ALIAS,   /* a reference to a live block was interned / looked up */
    BH__HIST_RELEASE, /* a release that was accepted */
    BH__HIST_FREE,    /* the last release: FREE reported, allocator free called */
    BH__HIST_STALE,   /* a release refused as stale */
    BH__HIST_COUNT
};

typedef struct bh__hist_entry {
    uint32_t device;
    uint64_t address;
    uint64_t n[BH__HIST_COUNT];
    uint64_t born_seq; /* history's own sequence of births at any address */
    uint64_t born_ns;  /* CLOCK_MONOTONIC of the latest birth */
    bh__stack created; /* latest birth (stacks on) */
    bh__stack freed;   /* latest last release (stacks on) */
} bh__hist_entry;

typedef struct bh__history bh__history;
bh_status bh__history_create(bh__history **out);
void bh__history_destroy(bh__history *h);
/* Counts one event at (device, address); at may be NULL. Never fails the
 * caller: when host memory runs out the event is counted as lost. */
void bh__history_note(bh__history *h, enum bh__hist_event ev, uint32_t device, uint64_t address,
                      const bh__stack *at);
/* A copy of the entry for (device, address); 0 if there is none. */
int bh__history_get(bh__history *h, uint32_t device, uint64_t address, bh__hist_entry *out);
/* 1 if the address has something to look at: releases refused as stale, or
 * births and frees that do not balance (live now, a leak at exit). */
int bh__history_has_findings(const bh__hist_entry *e);
/* Up to max entries, worst first (stale releases, then total events); with
 * findings_only, only entries with findings. Returns how many were written;
 * *findings (if not NULL): how many entries have findings in all. */
size_t bh__history_top(bh__history *h, bh__hist_entry *out, size_t max, int findings_only,
                       uint64_t *findings);
uint64_t bh__history_addresses(bh__history *h);

/* ======================== Misuse reports (diag_report.c) ======================== */

/* Where misuse reports go: stderr unless a test redirects them. */
void bh__diag_set_sink(FILE *sink);
FILE *bh__diag_sink(void);

/* The notes about the environment, each printed once per process: a
 * variable is read at every registry's creation, a user wants one line. */
typedef enum bh__env_note {
    BH__NOTE_DEBUG_WORD,  /* BH_DEBUG has a word we do not know */
    BH__NOTE_LEAK_VALUE,  /* BH_LEAK_REPORT is not 0, 1 or all */
    BH__NOTE_TRACK_EMPTY, /* BH_TRACK_SOCKET is set to nothing */
    BH__NOTE_TT_VALUE,    /* TT_ALLOC_TRACKING_ENABLED is not 0 or 1 */
    /* A socket reporter's number that is not one (or out of its range). */
    BH__NOTE_TRACK_RING,      /* BH_TRACK_RING */
    BH__NOTE_TRACK_MAX_BLOCK, /* BH_TRACK_MAX_BLOCK_US */
    BH__NOTE_TRACK_FLUSH,     /* BH_TRACK_FLUSH_MS */
    BH__NOTE_TT_RECORD_SIZE,  /* BH_TT_RECORD_SIZE is not 72, 112 or 144 */
    BH__NOTE_COUNT
} bh__env_note;
/* One line (fmt ends with its newline) to the sink, unless this note was
 * printed already in this process. */
void bh__env_note_once(bh__env_note which, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct bh__misuse_limiter {
    pthread_mutex_t lock;
    uint64_t sites[64]; /* stack hashes already reported; 0 = empty */
    uint32_t nsites;
    uint64_t window_start_ns;
    uint32_t in_window;
    uint64_t suppressed;
} bh__misuse_limiter;

void bh__misuse_limiter_init(bh__misuse_limiter *l);
void bh__misuse_limiter_fini(bh__misuse_limiter *l);
/* 1 if a report for this culprit stack may be printed now (first time for
 * its site, and within the rate limit); 0 counts it as suppressed. */
int bh__misuse_should_report(bh__misuse_limiter *l, const bh__stack *culprit);
/* Reports not printed so far (repeated sites, rate limit). */
uint64_t bh__misuse_suppressed(bh__misuse_limiter *l);

/* The public call a misused token was passed to. */
typedef enum bh__misuse_op { BH__OP_RELEASE, BH__OP_RETAIN, BH__OP_DUP, BH__OP_INFO_GET } bh__misuse_op;

/* Prints a misuse report: what the token was, the call it was passed to and
 * where, where it was taken and where it was (first) released. tomb NULL:
 * the token was never issued here (or its tombstone is gone); then the
 * registry that issued it is named if it is alive (own_tag: this
 * registry's tag). */
void bh__misuse_print(FILE *out, bh__misuse_op op, bh_handle token, const bh__token_info *tomb,
                      const bh__stack *culprit, int stacks_on, uint32_t own_tag);

/* Every registry of the process by tag (handles and tokens carry it), so a
 * report can name the registry a foreign handle came from. Called for every
 * registry, diagnostics or not, by bh__diag_attach / bh__diag_detach. */
void bh__issuer_add(const bh_registry *reg, uint32_t tag);
void bh__issuer_remove(const bh_registry *reg, uint32_t tag);

/* BH_DEBUG=fatal: after a misuse report (or a leak report at exit), the
 * process aborts so that a test run fails at the culprit. */
void bh__misuse_fatal(const char *what);

/* CLOCK_MONOTONIC in nanoseconds (diag.c). */
uint64_t bh__now_ns(void);

/* "DRAM", "L1", ... (BH_MEM_KIND_NAMES) for a domain's memory kind; "user" for 5..15. */
const char *bh__mem_kind_name(uint32_t kind);

/* ======================== The registry's diagnostics (diag.c) ======================== */

/* bh_config flags that route a registry's calls through diag.c. */
#define BH__DIAG_ROUTE (BH_CONFIG_DEBUG_REFS | BH_CONFIG_HISTORY | BH_CONFIG_STACKS)

/* Tombstones of released tokens a registry keeps (see diag_tokens.c). */
#define BH__KEEP_RELEASED 65536u

typedef struct bh__diag {
    uint32_t flags;       /* the BH__DIAG_ROUTE bits in effect */
    int leak_report;      /* BH_LEAK_REPORT=1: dump at exit if anything is live; 2 (=all): whole history */
    int fatal;            /* BH_DEBUG=fatal: abort after a misuse report or a leak report */
    bh__tokens *tokens;   /* debug references, or NULL */
    bh__history *history; /* history or stacks (births and frees per address), or NULL */
    bh__misuse_limiter limiter;
    uint64_t created_ns; /* CLOCK_MONOTONIC at registry creation */
    bh_registry *reg;
    struct bh__diag *next, *prev; /* leak-report list, under its lock */
} bh__diag;

/* Called by bh_registry_create once the registry is set up: reads
 * cfg_flags and, unless BH_CONFIG_NO_ENV, BH_DEBUG and BH_LEAK_REPORT; sets
 * reg->diag (NULL when nothing is on) and the route bits in reg->flags. */
bh_status bh__diag_attach(bh_registry *reg, uint32_t cfg_flags);
/* Called by bh_registry_destroy once it is sure to succeed. */
void bh__diag_detach(bh_registry *reg);

/* The registries BH_LEAK_REPORT=1 dumps at exit (diag_dump.c). */
void bh__leak_report_add(bh__diag *d);
void bh__leak_report_remove(bh__diag *d);

/* The diagnostics' process-wide locks, for diag.c's fork handlers only:
 * the leak report's list (diag_dump.c), the symbolizer (diag_stack.c) and
 * the issuer table (diag_report.c). */
pthread_mutex_t *bh__leak_list_lock(void);
pthread_mutex_t *bh__symbolizer_lock(void);
pthread_mutex_t *bh__issuers_lock(void);

/* The public functions' paths when (reg->flags & BH__DIAG_ROUTE). */
bh_status bh__diag_acquire(bh_registry *reg, const bh__acq *a, bh_handle *out);
bh_status bh__diag_retain(bh_registry *reg, bh_handle h);
bh_status bh__diag_release(bh_registry *reg, bh_handle h);
bh_status bh__diag_info_get(bh_registry *reg, bh_handle h, bh_info *out);

#endif /* BH_DIAG_H */
