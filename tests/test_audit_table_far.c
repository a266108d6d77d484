/*
 * test_audit_table_far.c - the intern table's entry distances under
 * concurrency, past the distance cap.
 *
 * An entry carries min(distance from home, 15) beside a 4-bit tag; the
 * locked probes skip by it, a backward shift reads a block only for an
 * entry past the cap (src/core/table.c), and the lock-free hit steps the
 * top byte it expects up to the cap (fast_hit, src/core/hot.h).
 * test_table checks the distances single-threaded and test_table_race races
 * keys that all fit below the cap (a 16-entry array). Here 42 keys of one
 * shard share one home in a 64-entry array (a few sit one or two places
 * after it), up to 30 live at once, so runs reach well past the cap, and
 * three threads intern, look up and release them at once: every entry
 * moves back and forth across the cap, shifted by unlinks on whichever
 * thread drops a block's last reference, while the others probe without
 * the lock.
 *
 * Checked: every reference names the key asked for; a key the thread itself
 * holds is never missed (lock-free hit or locked fallback); and, under the
 * shard lock every OPS_CHECK operations, every entry's top byte is its
 * key's tag and exact distance (capped), no empty place lies between an
 * entry and its home, and the count is the shard's. A shift that took a
 * capped distance for the exact one, or dropped the cap's block read, fails
 * the invariant here. Bounded by operation counts.
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
#include "core/hot.h"

#define ALIGN 0x1000ull
/* KEYS (42) live at once fit under 3/4 of 64 entries: the array stays at 64. */
enum { THREADS = 3, PER = 14, KEYS = THREADS * PER, HOLD = 10, MASK = 63, OPS_CHECK = 512 };

static long ops = 200000;
static uint64_t keys[KEYS];
static uint32_t shard_ix;
static int failures, held_missed, bad_tables;
static long fast_hits;

static void bad(int *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

/* Keys of one shard; all but every seventh share the home of the first in
 * an array of 64 entries (and so in 16 and 32), the rest sit one or two
 * places after it: a shift then passes over entries whose home is inside
 * the gap. Tags are whatever the hash gives (all 16 appear). */
static void choose_keys(void) {
    uint64_t first = bh__key_hash(0, ALIGN);
    shard_ix = bh__shard_of(first);
    uint32_t home = (uint32_t)first & MASK;
    int n = 0;
    for (uint64_t a = ALIGN; n < KEYS; a += ALIGN) {
        uint64_t h = bh__key_hash(0, a);
        uint32_t want = n % 7 == 6 ? (home + 1 + (uint32_t)(n / 7) % 2) & MASK : home;
        if (bh__shard_of(h) == shard_ix && ((uint32_t)h & MASK) == want)
            keys[n++] = a;
    }
}

/* Under the shard lock: the entries are what every probe relies on. */
static void check_table(bh_registry *reg) {
    bh__shard *s = &reg->shards[shard_ix];
    bh__stripe_lock_take(&s->lock);
    const bh__table *t = bh__shard_table(s);
    uint32_t count = 0;
    int wrong = 0;
    for (uint32_t j = 0; j <= t->mask; j++) {
        unsigned e = AO_int_load(&t->e[j]);
        if (e == 0)
            continue;
        count++;
        const bh__block *b = bh__slab_at(&reg->slab, bh__entry_slot(e));
        uint64_t h = bh__key_hash(bh__block_device(b), (uint64_t)AO_load(&b->address));
        uint32_t d = (j - (uint32_t)h) & t->mask;
        if (bh__entry_top(e) != bh__entry_want(bh__entry_tag(h), d))
            wrong = 1;
        for (uint32_t i = (uint32_t)h & t->mask; i != j; i = (i + 1) & t->mask)
            if (AO_int_load(&t->e[i]) == 0)
                wrong = 1; /* the key's run is cut: a locked find would miss it */
    }
    if (count != s->count)
        wrong = 1;
    bh__stripe_lock_give(&s->lock);
    if (wrong)
        bad(&bad_tables);
}

/* The reference h, just returned for key, must name key (its size as
 * interned); given back either way. */
static void check_names(bh_registry *reg, bh_handle h, uint64_t key) {
    bh_info info = {0};
    int named = bh_info_get(reg, h, &info) == BH_OK && info.address == key && info.size == ALIGN;
    if (bh_release(reg, h) != BH_OK || !named || info.device != 0 || info.refs == 0)
        bad(&failures);
}

typedef struct worker {
    bh_registry *reg;
    int id;
} worker;

/* Holds up to HOLD of its own PER keys, replacing a random one each turn
 * (its last release unlinks it, shifting the run), and looks up one it
 * holds (must hit: the lock-free try first, counted, then the public call)
 * and one anybody may hold (a hit must name it). */
static void *work(void *arg) {
    const worker *w = arg;
    bh_registry *reg = w->reg;
    unsigned seed = 0x9e3779b9u * (unsigned)(w->id + 1);
    const uint64_t *mine = keys + w->id * PER;
    bh_handle held[PER];
    int holds[PER] = {0}, nheld = 0;
    long fast = 0;
    for (long i = 0; i < ops; i++) {
        int k = (int)((unsigned)rand_r(&seed) % PER);
        if (holds[k] && nheld > HOLD / 2) {
            if (bh_release(reg, held[k]) != BH_OK)
                bad(&failures);
            holds[k] = 0, nheld--;
        } else if (!holds[k] && nheld < HOLD) {
            bh_status st = bh_intern(reg, 0, mine[k], ALIGN, &held[k]);
            if (st == BH_OK)
                holds[k] = 1, nheld++;
            else if (st != BH_EBUSY) /* busy: a reader's last release is freeing it */
                bad(&failures);
        }
        int q = (int)((unsigned)rand_r(&seed) % PER);
        if (holds[q]) {
            uint64_t hash = bh__key_hash(0, mine[q]);
            bh_handle h;
            if (fast_hit(reg, bh__shard_for(reg, hash), hash, 0, mine[q], 0, &h)) {
                fast++;
                check_names(reg, h, mine[q]);
            } else if (bh_lookup(reg, 0, mine[q], &h) == BH_OK) {
                check_names(reg, h, mine[q]);
            } else {
                bad(&held_missed);
            }
        }
        uint64_t any = keys[(unsigned)rand_r(&seed) % KEYS];
        bh_handle h;
        bh_status st = bh_lookup(reg, 0, any, &h);
        if (st == BH_OK)
            check_names(reg, h, any);
        else if (st != BH_ENOTFOUND)
            bad(&failures);
        if (i % OPS_CHECK == 0)
            check_table(reg);
    }
    for (int k = 0; k < PER; k++)
        if (holds[k] && bh_release(reg, held[k]) != BH_OK)
            bad(&failures);
    __atomic_fetch_add(&fast_hits, fast, __ATOMIC_RELAXED);
    return NULL;
}

static void distances_hold_past_the_cap_under_concurrent_shifts(void **state) {
    (void)state;
    choose_keys();
    bh_config cfg = {.flags = BH_CONFIG_NO_ENV};
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    /* The array grows to 64 entries first (every key live once), so the
     * homes stay put while the threads run. */
    bh_handle all[KEYS];
    for (int k = 0; k < KEYS; k++)
        assert_int_equal(bh_intern(reg, 0, keys[k], ALIGN, &all[k]), BH_OK);
    assert_int_equal(bh__shard_table(&reg->shards[shard_ix])->mask, MASK);
    check_table(reg);
    for (int k = 0; k < KEYS; k++)
        assert_int_equal(bh_release(reg, all[k]), BH_OK);

    pthread_t t[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){reg, i};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    check_table(reg);

    assert_int_equal(failures, 0);
    assert_int_equal(held_missed, 0);
    assert_int_equal(bad_tables, 0);
    assert_true(fast_hits > 0); /* the lock-free path ran (most of a held key's lookups) */
    assert_int_equal(bh__shard_table(&reg->shards[shard_ix])->mask, MASK); /* the homes stayed put */
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, 0);
    assert_true(s.frees > 0);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(int argc, char **argv) {
    if (argc > 1)
        ops = atol(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(distances_hold_past_the_cap_under_concurrent_shifts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
