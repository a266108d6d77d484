/*
 * test_table_race.c - lock-free hits racing the recycling of their blocks.
 *
 * bh_lookup and bh_intern of a live key take no lock: they probe the shard's
 * array, check the block's word and key, and CAS a reference onto the word
 * they checked (fast_hit in src/core/hot.h). This stress gives that path every
 * chance to be wrong: all keys share one shard, one tag and one home (so
 * every probe meets the other keys' entries and must compare keys), two
 * threads churn a few keys whose blocks are recycled for other keys all the
 * time (entries shift back and forth, blocks change key under the readers),
 * and two threads look up and intern every key. Whatever they get must name
 * the key they asked for (checked with bh_info_get while the reference is
 * held), and a key the test keeps live must never be missed.
 *
 * A second case grows one shard's array under lock-free readers of keys
 * already live: every lookup must hit and name its key, whichever array (the
 * live one or one just replaced) the reader probed.
 *
 * Run natively and under TSan (label stress), and with small counts under
 * helgrind and drd. Mutating fast_hit (no key compare after the entry's tag
 * and distance, or a CAS on a re-read word instead of the checked one) fails
 * here; so does freeing a replaced array at once instead of at
 * bh_registry_destroy (ASan: heap-use-after-free in fast_hit).
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
#include "core/internal.h"

#define ALIGN 0x1000ull
enum { KEPT = 6, CHURNED = 6, KEYS = KEPT + CHURNED };

static long ops = 200000;
static uint64_t keys[KEYS]; /* [0, KEPT): held live throughout; the rest churn */
static int failures, kept_missed;

static void bad(int *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

/* Keys that land in one shard with one tag and one home (the shard's array
 * stays at 16 entries: KEYS fit in 3/4 of it): an entry's top byte then
 * matches a probe of another of these keys wherever both would sit (same
 * tag, same distance from the home), so only the key compare separates
 * them. */
static void choose_keys(void) {
    uint64_t first = bh__key_hash(0, ALIGN);
    uint32_t shard = bh__shard_of(first);
    unsigned tag = bh__entry_tag(first);
    int n = 0;
    for (uint64_t a = ALIGN; n < KEYS; a += ALIGN) {
        uint64_t h = bh__key_hash(0, a);
        if (bh__shard_of(h) == shard && bh__entry_tag(h) == tag && (h & 15) == (first & 15))
            keys[n++] = a;
    }
}

/* The reference h, just returned for key, must name key. */
static void check_names(bh_registry *reg, bh_handle h, uint64_t key) {
    bh_info info;
    if (bh_info_get(reg, h, &info) != BH_OK || info.device != 0 || info.address != key || info.refs == 0)
        bad(&failures);
    if (bh_release(reg, h) != BH_OK)
        bad(&failures);
}

static void *reader(void *arg) {
    bh_registry *reg = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    for (long i = 0; i < ops; i++) {
        /* Mostly the churned keys: their blocks are the ones that change. */
        unsigned r = (unsigned)rand_r(&seed);
        int k = (r & 3) == 0 ? (int)(r >> 2) % KEPT : KEPT + (int)(r >> 2) % CHURNED;
        bh_handle h;
        bh_status st = (i & 1) ? bh_lookup(reg, 0, keys[k], &h) : bh_intern(reg, 0, keys[k], ALIGN, &h);
        if (st == BH_OK)
            check_names(reg, h, keys[k]);
        else if (k < KEPT)
            bad(&kept_missed);
        else if (st != BH_ENOTFOUND && st != BH_EBUSY)
            bad(&failures);
    }
    return NULL;
}

/* Interns churned keys (new or alias) and holds each until the next one is
 * interned: a block dies when its key's last holder lets go, the shard's
 * free list hands it straight to the next new key, and that key is then live
 * for a while, under a reader that may still be looking at the old one. */
static void *churner(void *arg) {
    bh_registry *reg = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    bh_handle held = BH_HANDLE_NULL;
    uint64_t held_key = 0;
    for (long i = 0; i < ops; i++) {
        int k = KEPT + (int)((unsigned)rand_r(&seed) % CHURNED);
        bh_handle h;
        bh_status st = bh_intern(reg, 0, keys[k], ALIGN, &h);
        if (!bh_handle_is_null(held))
            check_names(reg, held, held_key); /* checks, then releases */
        held = BH_HANDLE_NULL;
        if (st == BH_OK) {
            held = h;
            held_key = keys[k];
        } else if (st != BH_EBUSY) {
            bad(&failures);
        }
    }
    if (!bh_handle_is_null(held))
        check_names(reg, held, held_key);
    return NULL;
}

static void lock_free_hits_always_name_the_key_asked_for(void **state) {
    (void)state;
    choose_keys();
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    bh_handle kept[KEPT];
    for (int k = 0; k < KEPT; k++)
        assert_int_equal(bh_intern(reg, 0, keys[k], ALIGN, &kept[k]), BH_OK);

    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, i < 2 ? reader : churner, reg), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    assert_int_equal(failures, 0);
    assert_int_equal(kept_missed, 0);
    for (int k = 0; k < KEPT; k++) {
        bh_info info;
        assert_int_equal(bh_info_get(reg, kept[k], &info), BH_OK);
        assert_int_equal(info.refs, 1); /* every reference taken was given back */
        assert_int_equal(bh_release(reg, kept[k]), BH_OK);
    }
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.live_handles, 0);
    assert_true(s.frees > 0); /* the churned keys' blocks really were recycled */
    /* choose_keys' premise: the array never grew, so the keys kept one home. */
    assert_int_equal(bh__shard_table(&reg->shards[bh__shard_of(bh__key_hash(0, keys[0]))])->mask, 15);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* ------------------------------------------------------------ growth */

enum { GROWN = 2000 }; /* 16 entries -> 4096: eight replacements */
static uint64_t grown[GROWN];
static int grown_live, grown_done; /* under grown_lock */
static pthread_mutex_t grown_lock = PTHREAD_MUTEX_INITIALIZER;

/* The polling goes through a mutex: it is the test's own state, and helgrind
 * and drd must see it ordered. */
static int grown_read(int *p) {
    pthread_mutex_lock(&grown_lock);
    int v = *p;
    pthread_mutex_unlock(&grown_lock);
    return v;
}
static void grown_write(int *p, int v) {
    pthread_mutex_lock(&grown_lock);
    *p = v;
    pthread_mutex_unlock(&grown_lock);
}

static void *growth_reader(void *arg) {
    bh_registry *reg = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    while (!grown_read(&grown_done)) {
        int n = grown_read(&grown_live);
        if (n == 0)
            continue;
        int k = (int)((unsigned)rand_r(&seed) % (unsigned)n);
        bh_handle h;
        if (bh_lookup(reg, 0, grown[k], &h) == BH_OK)
            check_names(reg, h, grown[k]);
        else
            bad(&kept_missed); /* interned before the reader chose it: live */
    }
    return NULL;
}

static void lock_free_hits_survive_the_growth_of_their_shard(void **state) {
    (void)state;
    uint32_t shard = bh__shard_of(bh__key_hash(0, ALIGN));
    int n = 0;
    for (uint64_t a = ALIGN; n < GROWN; a += ALIGN)
        if (bh__shard_of(bh__key_hash(0, a)) == shard)
            grown[n++] = a;
    static bh_handle hs[GROWN];
    int rounds = ops >= 1000000 ? 20 : 1;
    failures = kept_missed = 0;
    for (int r = 0; r < rounds; r++) {
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.flags = BH_CONFIG_NO_ENV;
        bh_registry *reg;
        assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
        grown_write(&grown_live, 0);
        grown_write(&grown_done, 0);
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, growth_reader, reg), 0);
        for (int k = 0; k < GROWN; k++) {
            assert_int_equal(bh_intern(reg, 0, grown[k], ALIGN, &hs[k]), BH_OK);
            grown_write(&grown_live, k + 1);
        }
        grown_write(&grown_done, 1);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        for (int k = 0; k < GROWN; k++)
            assert_int_equal(bh_release(reg, hs[k]), BH_OK);
        assert_int_equal(bh_registry_destroy(reg), BH_OK);
    }
    assert_int_equal(failures, 0);
    assert_int_equal(kept_missed, 0);
}

int main(int argc, char **argv) {
    if (argc > 1)
        ops = atol(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lock_free_hits_always_name_the_key_asked_for),
        cmocka_unit_test(lock_free_hits_survive_the_growth_of_their_shard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
