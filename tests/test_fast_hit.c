/*
 * test_fast_hit.c - white-box tests of the lock-free hit (fast_hit in
 * src/core/hot.h) against the entry format of the intern table: which keys
 * it hits, and which entries it passes over without reading their blocks.
 *
 * The race tests cannot see these: a lock-free probe that never hits, or
 * one that reads the block of every entry, is still correct (the locked
 * path decides, and the block's own check rejects another key). What they
 * lose is the reason for the path. A probe that steps the top byte it
 * expects otherwise than the table stores distances (starting at 1, or
 * uncapped past 15) passed every other test: its lookups all went to the
 * lock, or those of keys past the cap. So did a probe that compares the
 * distance but not the tag, or the tag but not the distance.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "core/hot.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

static bh_registry *new_registry(void) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

static uint64_t hash_of(uint64_t address) { return bh__key_hash(0, address); }

/* The next address from *at on whose key falls in shard, with the given
 * home in an array of mask + 1 entries (home < 0: any) and, if tag >= 0,
 * that tag (tag <= -2: any tag but -tag - 2). */
static uint64_t next_key(uint64_t *at, uint32_t shard, uint32_t mask, int home, int tag) {
    for (;; *at += ALIGN) {
        uint64_t h = hash_of(*at);
        int t = (int)bh__entry_tag(h);
        if (bh__shard_of(h) != shard || (home >= 0 && (h & mask) != (uint32_t)home))
            continue;
        if ((tag >= 0 && t != tag) || (tag <= -2 && t == -tag - 2))
            continue;
        uint64_t a = *at;
        *at += ALIGN;
        return a;
    }
}

/* Where slot's entry sits in shard's array, and so its distance from
 * address's home; -1 if it is not there. */
static int distance_of(const bh__shard *shard, uint64_t address, uint32_t slot) {
    const bh__table *t = bh__shard_table(shard);
    for (uint32_t j = 0; j <= t->mask; j++) {
        unsigned e = AO_int_load(&t->e[j]);
        if (e != 0 && bh__entry_slot(e) == slot)
            return (int)((j - (uint32_t)hash_of(address)) & t->mask);
    }
    return -1;
}

/* fast_hit of (0, address): 1 and the handle's slot in *slot if it hit (the
 * reference it took is given back), else 0. */
static int try_fast_hit(bh_registry *reg, uint64_t address, uint32_t *slot) {
    uint64_t h = hash_of(address);
    bh_handle out;
    if (!fast_hit(reg, bh__shard_for(reg, h), h, 0, address, 0, &out))
        return 0;
    *slot = bh__handle_slot(out);
    assert_int_equal(bh_release(reg, out), BH_OK);
    return 1;
}

/* One shard holds a run of 40 keys of one home, key k with tag k % 16 (its
 * array at 64 entries): key k sits k places from home, so every tag is
 * seen below the distance cap (15), past it within the probe bound
 * (FAST_PROBES) and past that. Without the lock, every key within the bound
 * is hit, and no key past it. */
static void lock_free_hits_reach_every_key_within_the_probe_bound(void **state) {
    (void)state;
    bh_registry *reg = new_registry();
    uint32_t shard = bh__shard_of(hash_of(BASE));
    enum { RUN = 40, MASK = 63 }; /* 40 keys: 3/4 of 64 entries at most */
    uint64_t keys[RUN], at = BASE;
    bh_handle handles[RUN];
    /* Grown first by as many other keys, gone again: the run is then
     * placed in order, no earlier key moved by a growth. */
    for (int k = 0; k < RUN; k++)
        assert_int_equal(bh_intern(reg, 0, next_key(&at, shard, 0, -1, -1), ALIGN, &handles[k]), BH_OK);
    for (int k = 0; k < RUN; k++)
        assert_int_equal(bh_release(reg, handles[k]), BH_OK);
    for (int k = 0; k < RUN; k++) {
        keys[k] = next_key(&at, shard, MASK, 7, k % 16);
        assert_int_equal(bh_intern(reg, 0, keys[k], ALIGN, &handles[k]), BH_OK);
    }
    const bh__shard *s = &reg->shards[shard];
    assert_int_equal(bh__shard_table(s)->mask, MASK);
    for (int k = 0; k < RUN; k++) {
        uint32_t slot = bh__handle_slot(handles[k]), hit_slot = 0;
        assert_int_equal(distance_of(s, keys[k], slot), k);
        int hit = try_fast_hit(reg, keys[k], &hit_slot);
        assert_int_equal(hit, k < (int)FAST_PROBES);
        if (hit)
            assert_int_equal(hit_slot, slot);
    }
    for (int k = 0; k < RUN; k++)
        assert_int_equal(bh_release(reg, handles[k]), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

/* Whether the probes of address (not linked) take block b, whose address
 * is made address's behind the table's back: the lock-free one and the
 * locked one. Both must pass over b's entry by its top byte alone. */
static void assert_passed_over(bh_registry *reg, bh__block *b, uint64_t address) {
    uint64_t was = (uint64_t)AO_load(&b->address), h = hash_of(address);
    bh__shard *s = bh__shard_for(reg, h);
    AO_store(&b->address, (AO_t)address);
    uint32_t slot = 0;
    assert_int_equal(try_fast_hit(reg, address, &slot), 0);
    bh__stripe_lock_take(&s->lock);
    const bh__block *found = bh__shard_find(s, h, 0, address);
    bh__stripe_lock_give(&s->lock);
    AO_store(&b->address, (AO_t)was);
    assert_null(found);
}

/* x sits at its home, y just before it at its own. A probe for another key
 * of x's home but another tag, and one for a key of y's home with x's tag
 * (which meets x's entry one place from its home: x's distance is 0), both
 * meet x's entry: neither may read x's block. Each is shown x's block
 * rekeyed to its own key, which it would take for a hit if it read it. */
static void probes_pass_over_other_tags_and_homes_unread(void **state) {
    (void)state;
    bh_registry *reg = new_registry();
    uint32_t shard = bh__shard_of(hash_of(BASE));
    const bh__shard *s = &reg->shards[shard];
    uint32_t mask = bh__shard_table(s)->mask;
    uint64_t at = BASE;
    uint64_t x = next_key(&at, shard, mask, -1, -1);
    uint32_t home = (uint32_t)hash_of(x) & mask;
    int tag = (int)bh__entry_tag(hash_of(x));
    uint64_t y = next_key(&at, shard, mask, (int)((home - 1) & mask), -1);
    uint64_t other_tag = next_key(&at, shard, mask, (int)home, -tag - 2);
    uint64_t other_home = next_key(&at, shard, mask, (int)((home - 1) & mask), tag);
    bh_handle hx, hy;
    assert_int_equal(bh_intern(reg, 0, y, ALIGN, &hy), BH_OK);
    assert_int_equal(bh_intern(reg, 0, x, ALIGN, &hx), BH_OK);
    assert_int_equal(bh__shard_table(s)->mask, mask);
    assert_int_equal(distance_of(s, x, bh__handle_slot(hx)), 0);
    assert_int_equal(distance_of(s, y, bh__handle_slot(hy)), 0);
    bh__block *bx = bh__slab_at(&reg->slab, bh__handle_slot(hx));
    assert_passed_over(reg, bx, other_tag);
    assert_passed_over(reg, bx, other_home);
    /* The control: x's own key is found both ways. */
    uint32_t slot = 0;
    assert_int_equal(try_fast_hit(reg, x, &slot), 1);
    assert_int_equal(slot, bh__handle_slot(hx));
    assert_int_equal(bh_release(reg, hx), BH_OK);
    assert_int_equal(bh_release(reg, hy), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lock_free_hits_reach_every_key_within_the_probe_bound),
        cmocka_unit_test(probes_pass_over_other_tags_and_homes_unread),
    };
    return cmocka_run_group_tests_name("fast_hit", tests, NULL, NULL);
}
