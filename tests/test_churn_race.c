/*
 * test_churn_race.c - stale handles, takeovers and lock-free hits against
 * the recycling of one shard's blocks, judged by the allocator and the
 * reporter.
 *
 *   test_churn_race [ops_per_thread [rounds]]
 *
 * KEYS addresses whose keys share one table shard (so probe runs form,
 * entries shift back on every unlink, the array grows, and the shard's free
 * list hands a block that just died to the next key at once), each followed
 * by a second half of the same size: an allocation is one half, or both
 * halves from a key (wide). The allocator hands out the half freed last
 * first and yields after each free, so bh_alloc and bh_adopt keep meeting a
 * dying block whose free has started: at the same key (a key takeover) or,
 * for a wide allocation, a dying second half (a range takeover of another
 * key). Four threads mix bh_alloc, bh_adopt of memory taken from the
 * allocator, bh_lookup and bh_intern (alias only: BH_CONFIG_STRICT_INTERN),
 * bh_lookup_containing, bh_retain of another thread's handle racing its last
 * release and the re-birth of its slot, retain / release / info of handles
 * whose last release has returned (BH_ESTALE forever), and bh_stats_get.
 *
 * The allocator checks that each half is freed once per allocation; the
 * reporter that each half's events alternate ALLOC, FREE (the FREE of the
 * old owner before the ALLOC of the new); every reference names the address
 * it was taken for; a key the thread holds is never missed; and
 * bh_registry_destroy, called right after the threads are joined, succeeds,
 * each round. Every other round the range index's regions are one half
 * long, so wide allocations and their takeovers cross range stripes. Bounded by operation counts only. Runs
 * natively (labels unit, stress), under TSan and, shorter, helgrind and drd.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "core/core.h"
#include "core/internal.h"
#include "core/lifecycle.h"
#include "xorshift.h"

#define KEYS 16
#define HALVES (2 * KEYS)
#define THREADS 4
#define HELD 2
#define DEAD 64
#define SPAN 0x100ull   /* a half; a wide allocation is two */
#define SPACE 0x1000ull /* keys are multiples of it: only a key's own halves meet */

static long ops = 100000; /* per thread and round; argv[1] overrides */
static int rounds = 3;    /* argv[2] overrides */
static uint64_t keys[KEYS];

static long failures; /* anything wrong that a thread saw */
static void bad(void) { __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED); }

/* Half i starts at keys[i / 2] + (i % 2) * SPAN. */
static uint64_t half_at(int i) { return keys[i / 2] + (uint64_t)(i % 2) * SPAN; }

/* The half an address starts, or -1. */
static int half_of(uint64_t address) {
    for (int i = 0; i < HALVES; i++)
        if (half_at(i) == address)
            return i;
    return -1;
}

/* ------------------------------------------------ the allocator: LIFO reuse */

static pthread_mutex_t al_lock = PTHREAD_MUTEX_INITIALIZER;
static int al_used[HALVES];        /* under al_lock */
static int al_stack[HALVES], al_n; /* under al_lock: free halves, the last freed on top */
static long al_errors;             /* under al_lock: a free of memory not allocated */

static void al_take(int i) {
    al_used[i] = 1;
    for (int j = 0; j < al_n; j++)
        if (al_stack[j] == i) {
            memmove(&al_stack[j], &al_stack[j + 1], (size_t)(al_n - j - 1) * sizeof(al_stack[0]));
            al_n--;
            return;
        }
}

/* One half (the one freed last), or a whole key, preferring the key of the
 * half freed last. */
static int al_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)ctx, (void)device;
    pthread_mutex_lock(&al_lock);
    int got = -1;
    if (size == SPAN && al_n > 0) {
        got = al_stack[al_n - 1];
        al_take(got);
    } else if (size == 2 * SPAN) {
        for (int j = al_n - 1; j >= 0 && got < 0; j--) {
            int k = al_stack[j] / 2;
            if (!al_used[2 * k] && !al_used[2 * k + 1])
                got = 2 * k;
        }
        if (got >= 0) {
            al_take(got);
            al_take(got + 1);
        }
    }
    pthread_mutex_unlock(&al_lock);
    if (got < 0)
        return 1; /* full */
    *address = half_at(got);
    return 0;
}

static void al_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device;
    int i = half_of(address), n = (int)(size / SPAN);
    pthread_mutex_lock(&al_lock);
    if (i < 0 || (size != SPAN && size != 2 * SPAN) || (n == 2 && i % 2 != 0)) {
        al_errors++;
    } else {
        for (int j = i; j < i + n; j++) {
            al_errors += !al_used[j];
            al_used[j] = 0;
            al_stack[al_n++] = j;
        }
    }
    pthread_mutex_unlock(&al_lock);
    /* The memory can be handed out again from here on while its block is
     * still linked and indexed: a yield lets other threads' bh_alloc and
     * bh_adopt meet it (takeovers), and their stale retains meet it dying. */
    sched_yield();
}

/* ------------------------------------------------ the reporter */

static pthread_mutex_t rep_lock = PTHREAD_MUTEX_INITIALIZER;
static int rep_alive[HALVES];                  /* under rep_lock: ALLOC reported, FREE not yet */
static long rep_errors, rep_allocs, rep_frees; /* under rep_lock */

static void rep_report(void *ctx, const bh_event *ev) {
    (void)ctx;
    int i = half_of(ev->address), n = (int)(ev->size / SPAN);
    pthread_mutex_lock(&rep_lock);
    if (i < 0 || ev->device != 0 || (ev->size != SPAN && ev->size != 2 * SPAN) || (n == 2 && i % 2 != 0)) {
        rep_errors++;
    } else {
        for (int j = i; j < i + n; j++) {
            /* ALLOC: the FREE of the previous owner came first; FREE: of a live one. */
            rep_errors += ev->kind == BH_EVENT_ALLOC ? rep_alive[j] : !rep_alive[j];
            rep_alive[j] = ev->kind == BH_EVENT_ALLOC;
        }
        if (ev->kind == BH_EVENT_ALLOC)
            rep_allocs++;
        else
            rep_frees++;
    }
    pthread_mutex_unlock(&rep_lock);
}

/* ------------------------------------------------ handles shared between threads */

/* Only atomics touch it while the threads run (helgrind and drd are told,
 * as for the library's blocks). published[i]: the handle of the newest
 * allocation starting at half i, set by its creator, read by any thread to
 * retain (racing the last release), cleared by whoever frees it. dead[]:
 * handles whose last release has returned. */
static struct {
    uint64_t published[HALVES];
    uint64_t dead[DEAD];
    unsigned dead_next;
} sh;

typedef struct held {
    bh_handle h;
    int i; /* the half the block starts at; -1: nothing held */
} held;

/* A reference just taken for half i: while held it must name i's address
 * (one half, or a wide allocation from a key). */
static int names(bh_registry *reg, bh_handle h, int i) {
    bh_info info;
    return bh_info_get(reg, h, &info) == BH_OK && info.device == 0 && info.address == half_at(i) &&
           (info.size == SPAN || (info.size == 2 * SPAN && i % 2 == 0)) && info.refs >= 1;
}

/* Lets go of a reference; the thread whose release was the last one makes
 * the handle dead for everyone. */
static void let_go(bh_registry *reg, held *x) {
    int freed = 0;
    if (bh__core_release(reg, x->h, &freed) != BH_OK)
        bad();
    if (freed) {
        uint64_t expect = x->h.bits;
        __atomic_compare_exchange_n(&sh.published[x->i], &expect, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        unsigned d = __atomic_fetch_add(&sh.dead_next, 1, __ATOMIC_RELAXED) % DEAD;
        __atomic_store_n(&sh.dead[d], x->h.bits, __ATOMIC_RELAXED);
    }
    x->i = -1;
}

/* Keeps a reference taken for half i (after checking it names i), letting
 * go of what x held. */
static void keep(bh_registry *reg, held *x, bh_handle h, int i) {
    if (!names(reg, h, i))
        bad();
    if (x->i >= 0)
        let_go(reg, x);
    x->h = h;
    x->i = i;
}

/* A new allocation (bh_alloc's or bh_adopt's) starting at half i. */
static void born(bh_registry *reg, held *x, bh_handle h, int i) {
    if (i < 0) {
        bad();
        (void)bh_release(reg, h);
        return;
    }
    __atomic_store_n(&sh.published[i], h.bits, __ATOMIC_RELAXED);
    /* The locked lookup too (the lock-free hit passes over a dying block of
     * the key; the locked find must not stop at one): a takeover links the
     * new block and unlinks the old one while the old one's free runs. */
    bh_handle l;
    if (bh__lookup_locked(reg, 0, half_at(i), &l) != BH_OK)
        bad();
    else if (!bh_handle_eq(l, h) || bh_release(reg, l) != BH_OK)
        bad();
    keep(reg, x, h, i);
}

static void one_op(bh_registry *reg, held mine[HELD], uint64_t *rng) {
    uint64_t r = bh__xorshift64s(rng);
    held *x = &mine[(r >> 4) % HELD];
    int i = (int)((r >> 8) % HALVES);
    uint64_t size = (r >> 16) % 4 == 0 ? 2 * SPAN : SPAN;
    bh_handle h;
    bh_status st;
    switch (r % 9) {
    case 0: /* bh_alloc: the allocator hands out the memory freed last */
        st = bh_alloc(reg, 0, size, &h);
        if (st == BH_OK) {
            bh_info info;
            born(reg, x, h, bh_info_get(reg, h, &info) == BH_OK ? half_of(info.address) : -1);
        } else if (st != BH_EALLOC) { /* full; never a conflict with this allocator */
            bad();
        }
        break;
    case 1: { /* bh_adopt of memory the caller took from the allocator */
        uint64_t address;
        if (al_alloc(NULL, 0, size, &address) != 0)
            break;
        st = bh_adopt(reg, 0, address, size, &h);
        if (st != BH_OK) {
            bad();
            al_free(NULL, 0, address, size);
            break;
        }
        born(reg, x, h, half_of(address));
        break;
    }
    case 2: /* lock-free hit or the locked fallback */
        st = (r >> 20) & 1 ? bh_lookup(reg, 0, half_at(i), &h) : bh_intern(reg, 0, half_at(i), SPAN, &h);
        if (st == BH_OK)
            keep(reg, x, h, i);
        else if ((st != BH_ENOTFOUND && st != BH_EBUSY && st != BH_EOVERLAP) || mine[0].i == i ||
                 mine[1].i == i)
            bad(); /* a key this thread keeps live is never missed */
        break;
    case 3: {                                                  /* the range index against the churn */
        uint64_t probe = keys[i / 2] + (r >> 20) % (3 * SPAN); /* in either half, or just past them */
        st = bh_lookup_containing(reg, 0, probe, &h);
        if (st == BH_OK) {
            bh_info info;
            if (bh_info_get(reg, h, &info) != BH_OK || probe < info.address ||
                probe - info.address >= info.size || half_of(info.address) / 2 != i / 2)
                bad();
            if (bh_release(reg, h) != BH_OK)
                bad();
        } else if (st != BH_ENOTFOUND) {
            bad();
        }
        break;
    }
    case 4: /* another thread's handle, racing its last release and the slot's next birth */
        h.bits = __atomic_load_n(&sh.published[i], __ATOMIC_RELAXED);
        if (h.bits == 0)
            break;
        st = bh_retain(reg, h);
        if (st == BH_OK)
            keep(reg, x, h, i);
        else if (st != BH_ESTALE)
            bad();
        break;
    case 5: { /* handles whose last release returned: stale for good */
        h.bits = __atomic_load_n(&sh.dead[(r >> 20) % DEAD], __ATOMIC_RELAXED);
        if (h.bits == 0)
            break;
        bh_info info;
        if (bh_retain(reg, h) != BH_ESTALE || bh_info_get(reg, h, &info) != BH_ESTALE ||
            bh_release(reg, h) != BH_ESTALE)
            bad();
        break;
    }
    case 6: { /* a live block per half at most, plus the dying ones their releasers hold */
        bh_stats s;
        if (bh_stats_get(reg, &s) != BH_OK || s.live_handles > HALVES + THREADS)
            bad();
        break;
    }
    default: /* let go: most blocks die here */
        if (x->i >= 0)
            let_go(reg, x);
        break;
    }
}

static void *worker(void *arg) {
    bh_registry *reg = ((void **)arg)[0];
    uint64_t rng = (uint64_t)(uintptr_t)((void **)arg)[1];
    held mine[HELD] = {{BH_HANDLE_NULL, -1}, {BH_HANDLE_NULL, -1}};
    for (long n = 0; n < ops; n++)
        one_op(reg, mine, &rng);
    for (int j = 0; j < HELD; j++)
        if (mine[j].i >= 0)
            let_go(reg, &mine[j]);
    return NULL;
}

/* KEYS addresses whose keys land in one shard (tags as they come). */
static void choose_keys(void) {
    uint32_t shard = bh__shard_of(bh__key_hash(0, SPACE));
    int n = 0;
    for (uint64_t a = SPACE; n < KEYS; a += SPACE)
        if (bh__shard_of(bh__key_hash(0, a)) == shard)
            keys[n++] = a;
}

static void stale_handles_and_takeovers_against_one_shards_churn(void **state) {
    (void)state;
    choose_keys();
    long takeovers = 0, frees = 0, stale = 0, hits = 0;
    for (int round = 0; round < rounds; round++) {
        al_n = 0;
        for (int i = 0; i < HALVES; i++)
            al_stack[al_n++] = i;
        memset(&sh, 0, sizeof(sh));
        BH__ATOMIC_RANGE(&sh, sizeof(sh));
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.allocator = (bh_allocator){al_alloc, al_free, NULL};
        cfg.reporter = (bh_reporter){rep_report, NULL};
        cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_STRICT_INTERN;
        bh_registry *reg;
        assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
        /* Every other round, regions of one half: a wide allocation is in
         * two range stripes (or one, when both regions hash to it), and a
         * takeover of a dying wide one by a half may need a stripe more. */
        if (round % 2 == 0)
            bh__ranges_set_region_shift(&reg->ranges, (uint32_t)__builtin_ctzll(SPAN));
        pthread_t t[THREADS];
        void *args[THREADS][2];
        for (int n = 0; n < THREADS; n++) {
            args[n][0] = reg;
            args[n][1] = (void *)(uintptr_t)(0x9e3779b97f4a7c15ull * (uint64_t)(round * THREADS + n + 1));
            assert_int_equal(pthread_create(&t[n], NULL, worker, args[n]), 0);
        }
        for (int n = 0; n < THREADS; n++)
            assert_int_equal(pthread_join(t[n], NULL), 0);
        BH__ATOMIC_RANGE_END(&sh, sizeof(sh));
        bh_stats s;
        assert_int_equal(bh_stats_get(reg, &s), BH_OK);
        takeovers += (long)s.takeovers;
        frees += (long)s.frees;
        stale += (long)s.stale_ops;
        hits += (long)s.lookups_hit;
        assert_int_equal(s.live_handles, 0);
        assert_int_equal(s.live_bytes, 0);
        assert_int_equal(s.conflicts, 0);
        /* Right after the join: every block's death is visible. */
        assert_int_equal(bh_registry_destroy(reg), BH_OK);
        assert_int_equal(failures, 0);
        assert_int_equal(al_errors, 0);
        assert_int_equal(rep_errors, 0);
        assert_int_equal(rep_allocs, rep_frees);
        assert_int_equal(al_n, HALVES); /* every allocation freed */
        for (int i = 0; i < HALVES; i++)
            assert_int_equal(rep_alive[i], 0);
    }
    print_message(
        "churn race: %d rounds of %d x %ld operations, %ld frees, %ld takeovers, %ld stale, %ld hits\n",
        rounds, THREADS, ops, frees, takeovers, stale, hits);
    assert_true(frees > 0);
}

int main(int argc, char **argv) {
    if (argc > 1)
        ops = atol(argv[1]);
    if (argc > 2)
        rounds = atoi(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stale_handles_and_takeovers_against_one_shards_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
