/*
 * test_race_audit.c - defects found by the 0.3 concurrency audit, each with
 * the test that failed before its fix.
 *
 * Also bounded stresses of what the audit checked and found correct, so a
 * regression fails here (natively, under TSan, helgrind and drd): overlap
 * check + insertion atomic across shards, bh_lookup_containing never
 * returning a block of another generation or key, and, with an allocator
 * that never errs, no conflict and exactly one free per allocation through
 * key and range takeovers.
 *
 * Token misuse is provoked on purpose here, so the witnesses that would make
 * it a valgrind or ASan error are off (main) and misuse reports go to a
 * temporary file.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "diag/diag.h"
#include "core/internal.h"
#include "support/fixed_alloc.h"

/* A registry on this allocator, deaf to the environment. */
static bh_registry *registry_with(bh_allocator allocator, uint32_t flags) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = allocator;
    cfg.flags = BH_CONFIG_NO_ENV | flags;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

/* ======================== Foreign debug tokens ======================== */

/* Registry tags repeat every 255 registries, and token ids start at 1 in
 * every registry. Before the fix a token value was (id, tag) alone, so the
 * 255th debug-refs registry after A issued A's token values bit for bit:
 * bh_release(B, token of A) released B's allocation (freed it, reported
 * FREE), and B's own holder then met BH_ESTALE. Raw handles carry the
 * registry's random salt since 0.3; tokens must too. */
static void a_foreign_token_never_names_a_token_of_another_registry(void **state) {
    (void)state;
    FILE *sink = tmpfile();
    assert_non_null(sink);
    bh__diag_set_sink(sink);
    fixed_alloc aa = {.next = 0x10000}, bb = {.next = 0x10000};
    bh_registry *a = registry_with(fixed_allocator(&aa), BH_CONFIG_DEBUG_REFS);
    bh_handle ta, tb;
    assert_int_equal(bh_alloc(a, 0, 64, &ta), BH_OK);
    /* 254 registries later, the next one gets a's tag again. */
    for (int r = 0; r < 254; r++) {
        fixed_alloc unused = {0};
        assert_int_equal(bh_registry_destroy(registry_with(fixed_allocator(&unused), 0)), BH_OK);
    }
    bh_registry *b = registry_with(fixed_allocator(&bb), BH_CONFIG_DEBUG_REFS);
    assert_int_equal(b->tag, a->tag); /* the case that failed is reached */
    assert_int_equal(bh_alloc(b, 0, 64, &tb), BH_OK);
    bh_info info;
    assert_int_equal(bh_retain(b, ta), BH_ESTALE);
    assert_int_equal(bh_info_get(b, ta, &info), BH_ESTALE);
    assert_int_equal(bh_release(b, ta), BH_ESTALE);
    assert_int_equal(bh_retain(a, tb), BH_ESTALE);
    assert_int_equal(bh_release(a, tb), BH_ESTALE);
    assert_int_equal(aa.frees + bb.frees, 0);
    for (int i = 0; i < 2; i++) {
        bh_registry *reg = i == 0 ? a : b;
        bh_handle t = i == 0 ? ta : tb;
        assert_int_equal(bh_info_get(reg, t, &info), BH_OK);
        assert_int_equal(info.refs, 1);
        assert_int_equal(bh_release(reg, t), BH_OK);
        assert_int_equal(bh_registry_destroy(reg), BH_OK);
    }
    assert_int_equal(aa.frees, 1);
    assert_int_equal(bb.frees, 1);
    bh__diag_set_sink(NULL);
    fclose(sink);
}

/* ======================== Interior keys of a dying allocation ======================== */

/* In an allocator free: counts it, and says whether this is the first free
 * of X = [0x10000, 0x11000), the instant the probes below run (X dying, its
 * free started). */
static int first_free_of_x(fixed_alloc *fa, int *probed, uint64_t address) {
    fa->frees++;
    return address == 0x10000 && (*probed)++ == 0;
}

/* bh_intern of a range inside X. A reference it wrongly gets (an owner of
 * memory being freed) is let go at once, which frees part of X again: the
 * callers' free counts show it too. */
static bh_status intern_inside_x(bh_registry *reg, uint32_t device) {
    bh_handle h;
    bh_status st = bh_intern(reg, device, 0x10800, 0x100, &h);
    if (st == BH_OK)
        (void)bh_release(reg, h);
    return st;
}

/* The allocator free of X = [0x10000, 0x11000) calls back into the
 * registry, as another thread could at that instant: X is dying, its free
 * has started, its key is still linked. */
typedef struct dying_probe {
    fixed_alloc fa; /* first: fixed_alloc_alloc answers fa.next; dp_free counts fa.frees */
    bh_registry *reg;
    int probed;
    bh_status intern_interior, intern_exact, containing, adopt_interior, alloc_interior;
    bh_handle adopted, allocated;
} dying_probe;

static void dp_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)size;
    dying_probe *p = ctx;
    if (!first_free_of_x(&p->fa, &p->probed, address))
        return;
    bh_handle h;
    p->intern_interior = intern_inside_x(p->reg, device);
    p->intern_exact = bh_intern(p->reg, device, 0x10000, 0x100, &h);
    p->containing = bh_lookup_containing(p->reg, device, 0x10800, &h);
    /* The allocator may hand X's memory out from here on (bh_alloc), and a
     * caller that got it may adopt it: neither is a conflict. */
    p->adopt_interior = bh_adopt(p->reg, device, 0x10800, 0x100, &p->adopted);
    p->fa.next = 0x10400;
    p->alloc_interior = bh_alloc(p->reg, device, 0x100, &p->allocated);
}

/* The header: bh_intern is BH_EBUSY while "an allocation the new range meets
 * is being freed right now". Before the fix the dying allocation left the
 * range index before its allocator free, so an interior bh_intern at that
 * instant (here: inside the free) created a second owner of memory being
 * freed, and its own last release freed part of it a second time. */
static void an_interior_intern_meets_a_dying_allocation_until_its_free_returned(void **state) {
    (void)state;
    dying_probe p;
    memset(&p, 0, sizeof(p));
    p.fa.next = 0x10000;
    p.reg = registry_with((bh_allocator){fixed_alloc_alloc, dp_free, &p}, 0);
    bh_handle x;
    assert_int_equal(bh_alloc(p.reg, 3, 0x1000, &x), BH_OK);
    assert_int_equal(bh_release(p.reg, x), BH_OK);
    assert_int_equal(p.probed, 1);
    assert_int_equal(p.intern_interior, BH_EBUSY);
    assert_int_equal(p.intern_exact, BH_EBUSY);
    assert_int_equal(p.containing, BH_ENOTFOUND);
    assert_int_equal(p.adopt_interior, BH_OK);
    assert_int_equal(p.alloc_interior, BH_OK);
    assert_int_equal(p.fa.frees, 1); /* X once, nothing else */
    bh_handle c;
    assert_int_equal(bh_lookup_containing(p.reg, 3, 0x10850, &c), BH_OK); /* the adopted block */
    assert_true(bh_handle_eq(c, p.adopted));
    assert_int_equal(bh_release(p.reg, c), BH_OK);
    assert_int_equal(bh_release(p.reg, p.adopted), BH_OK);
    assert_int_equal(bh_release(p.reg, p.allocated), BH_OK);
    assert_int_equal(p.fa.frees, 3);
    assert_int_equal(bh_registry_destroy(p.reg), BH_OK);
}

/* A bh_alloc or bh_adopt that meets X while X's free runs takes X's range out
 * of the index (the memory may be handed out again), but if its creation then
 * fails, X's range must go back: until X's free returns, an interior
 * bh_intern is BH_EBUSY. Before the fix a failure after the takeover left X
 * out, and the interior intern became a second owner of memory being freed
 * (its release freed part of X a second time). Two ways to fail: the new
 * range also meets a live Y (BH_EEXIST, an allocator's bug), or no host
 * memory for an index node (BH_ENOMEM: X was alone in its domain, so taking
 * it out freed the domain's tree). */
typedef struct failed_takeover {
    fixed_alloc fa; /* first: fixed_alloc_alloc answers fa.next */
    bh_registry *reg;
    int enomem; /* which failure to provoke */
    int probed;
    bh_status before, takeover, after;
} failed_takeover;

static void ft_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)size;
    failed_takeover *p = ctx;
    if (!first_free_of_x(&p->fa, &p->probed, address))
        return;
    bh_handle h;
    p->before = intern_inside_x(p->reg, device);
    if (p->enomem) {
        bh__hostmem_fail_at(1);
        p->takeover = bh_alloc(p->reg, device, 0x1000, &h); /* X's memory again */
        bh__hostmem_fail_at(0);
    } else {
        /* [0xf000, 0x11000): the index meets X first (the range starting
         * last below the end), takes it over, then meets Y. */
        p->fa.next = 0xf000;
        p->takeover = bh_alloc(p->reg, device, 0x2000, &h);
    }
    if (p->takeover == BH_OK)
        (void)bh_release(p->reg, h);
    p->after = intern_inside_x(p->reg, device);
}

static void a_failed_takeover_puts_the_dying_range_back(void **state) {
    (void)state;
    for (int enomem = 0; enomem < 2; enomem++) {
        failed_takeover p;
        memset(&p, 0, sizeof(p));
        p.enomem = enomem;
        p.reg = registry_with((bh_allocator){fixed_alloc_alloc, ft_free, &p}, 0);
        bh_handle x, y = BH_HANDLE_NULL;
        if (!enomem) {
            p.fa.next = 0xe000; /* Y = [0xe000, 0xf800), live throughout */
            assert_int_equal(bh_alloc(p.reg, 3, 0x1800, &y), BH_OK);
        }
        p.fa.next = 0x10000;
        assert_int_equal(bh_alloc(p.reg, 3, 0x1000, &x), BH_OK);
        assert_int_equal(bh_release(p.reg, x), BH_OK);
        assert_int_equal(p.before, BH_EBUSY);
        assert_int_equal(p.takeover, enomem ? BH_ENOMEM : BH_EEXIST);
        assert_int_equal(p.after, BH_EBUSY);
        /* X's free, and for BH_ENOMEM the memory bh_alloc gave back. */
        assert_int_equal(p.fa.frees, enomem ? 2 : 1);
        if (!enomem)
            assert_int_equal(bh_release(p.reg, y), BH_OK);
        assert_int_equal(bh_registry_destroy(p.reg), BH_OK);
    }
}

/* ======================== Overlap index under threads ======================== */

/* Units of address space; keys unit * UNIT hash to scattered shards, while
 * all of them share one domain, hence one range stripe. */
#define UNITS 48
#define UNIT 0x1000ull
#define MAX_UNITS 6
#define HELD 3

static long stress_ops = 40000; /* per thread; argv[1] overrides */

/* owner[u] counts the live blocks covering unit u as their creators see
 * them: set after an intern that created the block, cleared before the
 * creator's release. Two live blocks overlapping would make some unit 2; an
 * allocator free meeting a set unit means a block was created over memory
 * still being freed. (bh_adopt is left out: it may legitimately take memory
 * over once its free has started, before that free returns.) */
static int owner[UNITS + MAX_UNITS];
static int overlap_frees; /* allocator frees of a range some holder still owns */
static int stress_failures;
static int stress_frees, stress_births;

static void stress_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx;
    (void)device;
    for (uint64_t u = address / UNIT; u < (address + size) / UNIT; u++)
        if (__atomic_load_n(&owner[u], __ATOMIC_RELAXED) != 0)
            __atomic_fetch_add(&overlap_frees, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&stress_frees, 1, __ATOMIC_RELAXED);
}

/* A reference a thread holds; owner: its intern created the block (and
 * marked the units). */
typedef struct held {
    bh_handle h;
    uint32_t first, n;
    int owner;
} held;

static void bad(void) { __atomic_fetch_add(&stress_failures, 1, __ATOMIC_RELAXED); }

static void mark(uint32_t first, uint32_t n, int delta) {
    for (uint32_t u = first; u < first + n; u++) {
        int before = __atomic_fetch_add(&owner[u], delta, __ATOMIC_RELAXED);
        if (delta > 0 && before != 0)
            bad(); /* another live block covers u: the index let an overlap in */
    }
}

static void drop(bh_registry *reg, held *x) {
    if (x->owner)
        mark(x->first, x->n, -1);
    if (bh_release(reg, x->h) != BH_OK)
        bad();
    memset(x, 0, sizeof(*x));
}

static void drop_all(bh_registry *reg, held mine[HELD]) {
    for (int k = 0; k < HELD; k++)
        if (mine[k].h.bits != 0)
            drop(reg, &mine[k]);
}

/* A containing lookup anywhere on device: what it returns must cover the
 * address (a block of another generation or key would not). */
static void check_containing(bh_registry *reg, uint32_t device, uint64_t probe) {
    bh_handle c;
    bh_status st = bh_lookup_containing(reg, device, probe, &c);
    if (st == BH_OK) {
        bh_info info;
        if (bh_info_get(reg, c, &info) != BH_OK || info.device != device || probe < info.address ||
            probe - info.address >= info.size)
            bad();
        if (bh_release(reg, c) != BH_OK)
            bad();
    } else if (st != BH_ENOTFOUND) {
        bad();
    }
}

/* Runs fn(reg) on four threads at once and joins them. */
static void on_four_threads(void *(*fn)(void *), bh_registry *reg) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fn, reg), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
}

static void *stress_thread(void *arg) {
    bh_registry *reg = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    held mine[HELD];
    memset(mine, 0, sizeof(mine));
    for (long i = 0; i < stress_ops; i++) {
        held *x = &mine[(unsigned)i % HELD];
        if (x->h.bits != 0)
            drop(reg, x);
        uint32_t first = (uint32_t)rand_r(&seed) % UNITS, n = 1 + (uint32_t)rand_r(&seed) % MAX_UNITS;
        /* bh_intern through the core entry that says whether it created. */
        bh__acq a = {BH__ACQ_INTERN, 7, first * UNIT, n * UNIT, NULL, NULL};
        int born = 0;
        bh_status st = bh__core_acquire(reg, &a, &x->h, &born);
        if (st == BH_OK) {
            x->first = first;
            x->n = n;
            x->owner = born;
            if (born) {
                __atomic_fetch_add(&stress_births, 1, __ATOMIC_RELAXED);
                mark(first, n, 1);
            }
        } else if (st != BH_EOVERLAP && st != BH_EBUSY && st != BH_ERANGE) {
            bad();
        }
        check_containing(reg, 7, (uint64_t)rand_r(&seed) % (UNITS * UNIT));
    }
    drop_all(reg, mine);
    return NULL;
}

static void overlapping_interns_and_containing_lookups_on_four_threads(void **state) {
    (void)state;
    bh_registry *reg = registry_with((bh_allocator){NULL, stress_free, NULL}, 0);
    on_four_threads(stress_thread, reg);
    assert_int_equal(stress_failures, 0);
    assert_int_equal(overlap_frees, 0);
    assert_true(stress_births > 0);
    assert_int_equal(stress_frees, stress_births); /* each owned range freed exactly once */
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_true(st.overlaps > 0); /* the interesting answer was exercised */
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ======================== A correct allocator under threads ======================== */

/* Hands out runs of free units (first fit from a random unit) and checks
 * every free: a unit freed twice or never handed out is a library bug. With
 * an allocator that never errs, bh_alloc must never see a conflict and a
 * bh_adopt of memory just taken from it must never be refused, however its
 * memory was last freed (key takeover, range takeover, or after retirement). */
static pthread_mutex_t ua_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char ua_used[UNITS + MAX_UNITS]; /* under ua_lock */
static int ua_errors;                            /* under ua_lock */
static _Thread_local unsigned ua_seed;

static int ua_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)ctx;
    (void)device;
    uint32_t n = (uint32_t)(size / UNIT), start = (uint32_t)rand_r(&ua_seed) % UNITS;
    pthread_mutex_lock(&ua_lock);
    for (uint32_t k = 0; k < UNITS; k++) {
        uint32_t f = (start + k) % UNITS, u = 0;
        while (u < n && !ua_used[f + u])
            u++;
        if (u < n)
            continue;
        memset(&ua_used[f], 1, n);
        pthread_mutex_unlock(&ua_lock);
        *address = f * UNIT;
        return 0;
    }
    pthread_mutex_unlock(&ua_lock);
    return 1; /* full */
}

static void ua_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx;
    (void)device;
    pthread_mutex_lock(&ua_lock);
    for (uint64_t u = address / UNIT; u < (address + size) / UNIT; u++) {
        ua_errors += !ua_used[u];
        ua_used[u] = 0;
    }
    pthread_mutex_unlock(&ua_lock);
}

static void *alloc_thread(void *arg) {
    bh_registry *reg = arg;
    ua_seed = (unsigned)(uintptr_t)pthread_self();
    held mine[HELD];
    memset(mine, 0, sizeof(mine));
    for (long i = 0; i < stress_ops; i++) {
        held *x = &mine[(unsigned)i % HELD];
        if (x->h.bits != 0)
            drop(reg, x);
        uint64_t size = (1 + (uint64_t)rand_r(&ua_seed) % MAX_UNITS) * UNIT, address = 0;
        bh_status st;
        if (rand_r(&ua_seed) & 1) {
            st = bh_alloc(reg, 8, size, &x->h);
            if (st == BH_EALLOC)
                continue; /* full */
            bh_info info;
            if (st == BH_OK && bh_info_get(reg, x->h, &info) == BH_OK)
                address = info.address;
        } else {
            if (ua_alloc(NULL, 8, size, &address) != 0)
                continue;
            st = bh_adopt(reg, 8, address, size, &x->h);
            if (st != BH_OK)
                ua_free(NULL, 8, address, size); /* keep the allocator's books */
        }
        if (st != BH_OK) {
            bad(); /* a conflict or refusal with an allocator that never errs */
            continue;
        }
        x->first = (uint32_t)(address / UNIT);
        x->n = (uint32_t)(size / UNIT);
        x->owner = 1;
        mark(x->first, x->n, 1);
        check_containing(reg, 8, (uint64_t)rand_r(&ua_seed) % (UNITS * UNIT));
    }
    drop_all(reg, mine);
    return NULL;
}

static void allocs_and_adopts_with_a_correct_allocator_never_conflict(void **state) {
    (void)state;
    bh_registry *reg = registry_with((bh_allocator){ua_alloc, ua_free, NULL}, 0);
    stress_failures = 0;
    on_four_threads(alloc_thread, reg);
    assert_int_equal(stress_failures, 0);
    assert_int_equal(ua_errors, 0);
    for (unsigned u = 0; u < UNITS + MAX_UNITS; u++)
        assert_int_equal(ua_used[u], 0); /* every allocation freed, once */
    bh_stats st;
    assert_int_equal(bh_stats_get(reg, &st), BH_OK);
    assert_int_equal(st.conflicts, 0);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(int argc, char **argv) {
    if (argc > 1)
        stress_ops = atol(argv[1]);
    bh__witness_enable(0); /* misuse on purpose: not a valgrind or ASan error here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_foreign_token_never_names_a_token_of_another_registry),
        cmocka_unit_test(an_interior_intern_meets_a_dying_allocation_until_its_free_returned),
        cmocka_unit_test(a_failed_takeover_puts_the_dying_range_back),
        cmocka_unit_test(overlapping_interns_and_containing_lookups_on_four_threads),
        cmocka_unit_test(allocs_and_adopts_with_a_correct_allocator_never_conflict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
