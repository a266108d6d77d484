/*
 * test_table.c - white-box tests of the key hash and the intern table
 * (src/core/table.c): probe runs, the backward shift, tags and distances,
 * growth, a shard that cannot grow.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

/* ------------------------------------------------------------ hash */

static void hash_spreads_aligned_neighbouring_addresses_over_shards_and_buckets(void **state) {
    (void)state;
    unsigned shard_hits[BH__SHARDS] = {0};
    unsigned bucket_hits[64] = {0};
    enum { N = 64 * 256 };
    for (uint64_t i = 0; i < N; i++) {
        uint64_t h = bh__key_hash(0, 0x80000000ull + i * 4096); /* page-aligned neighbours */
        shard_hits[bh__shard_of(h)]++;
        bucket_hits[h & 63]++;
    }
    for (unsigned s = 0; s < BH__SHARDS; s++)
        assert_true(shard_hits[s] > N / BH__SHARDS / 2 && shard_hits[s] < N / BH__SHARDS * 2);
    for (unsigned b = 0; b < 64; b++)
        assert_true(bucket_hits[b] > N / 64 / 2 && bucket_hits[b] < N / 64 * 2);
    /* The device is part of the key. */
    assert_int_not_equal(bh__key_hash(0, 4096), bh__key_hash(1, 4096));
}

/* ------------------------------------------------------------ table */

/* A shard on its own slab, and blocks keyed at will. */
typedef struct table_fixture {
    bh__slab slab;
    bh__shard shard;
    bh__block *spare; /* fresh blocks, chained through next */
} table_fixture;

static void table_fixture_init(table_fixture *f) {
    bh__slab_init(&f->slab);
    assert_int_equal(bh__shard_init(&f->shard, &f->slab), BH_OK);
    f->spare = NULL;
}

static void table_fixture_fini(table_fixture *f) {
    bh__shard_fini(&f->shard);
    bh__slab_fini(&f->slab);
}

static uint64_t key_of(uint64_t i) { return BASE + i * ALIGN; }

/* Links a fresh block keyed (0, address) the way the registry does:
 * reserve, then link. */
static bh__block *link_key(table_fixture *f, uint64_t address) {
    if (f->spare == NULL)
        assert_true(bh__slab_take_fresh(&f->slab, 64, &f->spare) > 0);
    bh__block *b = f->spare;
    f->spare = bh__block_next_free(b);
    AO_int_store(&b->device, 0);
    AO_store(&b->address, address);
    assert_int_equal(bh__shard_reserve(&f->shard), BH_OK);
    bh__shard_link(&f->shard, bh__key_hash(0, address), b);
    return b;
}

static bh__block *find_key(table_fixture *f, uint64_t address) {
    return bh__shard_find(&f->shard, bh__key_hash(0, address), 0, address);
}

static void unlink_key(table_fixture *f, uint64_t address, const bh__block *b) {
    bh__shard_unlink(&f->shard, bh__key_hash(0, address), bh__block_slot(b));
}

/* Where slot's entry sits in the current array, or -1. */
static int position_of(table_fixture *f, const bh__block *b) {
    const bh__table *t = bh__shard_table(&f->shard);
    for (uint32_t i = 0; i <= t->mask; i++)
        if (bh__entry_slot(AO_int_load(&t->e[i])) == bh__block_slot(b) && AO_int_load(&t->e[i]) != 0)
            return (int)i;
    return -1;
}

/* The next key index from *from on whose hash has the given home in an
 * array of mask + 1 entries (and, if tag >= 0, that tag). */
static uint64_t next_key_with(uint64_t *from, uint32_t mask, uint32_t home, int tag) {
    for (;; (*from)++) {
        uint64_t h = bh__key_hash(0, key_of(*from));
        if ((h & mask) == home && (tag < 0 || bh__entry_tag(h) == (unsigned)tag))
            return key_of((*from)++);
    }
}

static void shard_finds_links_unlinks_and_grows(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    enum { N = 1000 };
    static bh__block *blocks[N];
    const bh__table *first = bh__shard_table(&f.shard);
    for (uint32_t i = 0; i < N; i++)
        blocks[i] = link_key(&f, key_of(i));
    const bh__table *t = bh__shard_table(&f.shard);
    assert_true(t != first && t->mask + 1 >= N * 4 / 3); /* it grew, load <= 3/4 */
    assert_non_null(f.shard.retired);                    /* the old arrays are kept for readers */
    for (uint32_t i = 0; i < N; i++)
        assert_ptr_equal(find_key(&f, key_of(i)), blocks[i]);
    for (uint32_t i = 0; i < N; i += 2)
        unlink_key(&f, key_of(i), blocks[i]);
    for (uint32_t i = 0; i < N; i++)
        assert_ptr_equal(find_key(&f, key_of(i)), i % 2 ? blocks[i] : NULL);
    assert_int_equal(f.shard.count, N / 2);
    table_fixture_fini(&f);
}

/* Entries whose home is the last place wrap to the front; deleting the first
 * of them shifts every later one of the run back, across the wrap, and one
 * whose home is 0 with them. */
static void backward_shift_crosses_the_end_of_the_array(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    uint32_t mask = bh__shard_table(&f.shard)->mask;
    uint64_t from = 0;
    uint64_t ka = next_key_with(&from, mask, mask, -1), kb = next_key_with(&from, mask, mask, -1);
    uint64_t kc = next_key_with(&from, mask, mask, -1), kd = next_key_with(&from, mask, 0, -1);
    bh__block *a = link_key(&f, ka), *b = link_key(&f, kb), *c = link_key(&f, kc), *d = link_key(&f, kd);
    assert_int_equal(position_of(&f, a), (int)mask);
    assert_int_equal(position_of(&f, b), 0);
    assert_int_equal(position_of(&f, c), 1);
    assert_int_equal(position_of(&f, d), 2);
    unlink_key(&f, ka, a);
    assert_int_equal(position_of(&f, a), -1);
    assert_int_equal(position_of(&f, b), (int)mask);
    assert_int_equal(position_of(&f, c), 0);
    assert_int_equal(position_of(&f, d), 1);
    assert_int_equal(AO_int_load(&bh__shard_table(&f.shard)->e[2]), 0); /* no tombstone */
    assert_ptr_equal(find_key(&f, kb), b);
    assert_ptr_equal(find_key(&f, kc), c);
    assert_ptr_equal(find_key(&f, kd), d);
    assert_null(find_key(&f, ka));
    /* d sits at its home now: deleting c must not move it before it. */
    unlink_key(&f, kc, c);
    assert_int_equal(position_of(&f, b), (int)mask);
    assert_int_equal(position_of(&f, d), 0);
    assert_ptr_equal(find_key(&f, kd), d);
    assert_int_equal(f.shard.count, 2);
    table_fixture_fini(&f);
}

/* Same home and same tag: only the key compare tells them apart. */
static void tag_collisions_are_told_apart_by_the_key(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    uint32_t mask = bh__shard_table(&f.shard)->mask;
    uint64_t from = 0;
    uint64_t k1 = next_key_with(&from, mask, 3, -1);
    int tag = (int)bh__entry_tag(bh__key_hash(0, k1));
    uint64_t k2 = next_key_with(&from, mask, 3, tag), k3 = next_key_with(&from, mask, 3, tag);
    bh__block *b1 = link_key(&f, k1), *b2 = link_key(&f, k2);
    assert_ptr_equal(find_key(&f, k1), b1);
    assert_ptr_equal(find_key(&f, k2), b2);
    assert_null(find_key(&f, k3)); /* same home, same tag, not linked */
    table_fixture_fini(&f);
}

/* Unlinking a slot that is not in the key's run (a key taken over, then its
 * old block's last release) changes nothing. */
static void unlink_of_an_absent_slot_changes_nothing(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    uint32_t mask = bh__shard_table(&f.shard)->mask;
    uint64_t from = 0;
    uint64_t k1 = next_key_with(&from, mask, 5, -1), k2 = next_key_with(&from, mask, 5, -1);
    bh__block *b1 = link_key(&f, k1), *b2 = link_key(&f, k2);
    unlink_key(&f, k1, b1);
    unlink_key(&f, k1, b1); /* absent now */
    assert_ptr_equal(find_key(&f, k2), b2);
    assert_int_equal(position_of(&f, b2), 5);
    assert_int_equal(f.shard.count, 1);
    table_fixture_fini(&f);
}

/* A shard whose growth fails keeps working while an entry can stay empty,
 * then refuses cleanly, and grows again once memory is back. */
static void a_shard_that_cannot_grow_fills_up_then_refuses(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    const bh__table *t = bh__shard_table(&f.shard);
    uint32_t cap = t->mask + 1;
    uint64_t i = 0;
    while (f.shard.count < cap / 4 * 3)
        link_key(&f, key_of(i++));
    /* Make sure the slab needs no memory for the next few blocks. */
    assert_true(f.spare != NULL);
    while (f.shard.count < cap - 1) {
        bh__hostmem_fail_at(1);
        link_key(&f, key_of(i++));
        assert_ptr_equal(bh__shard_table(&f.shard), t); /* did not grow */
    }
    bh__hostmem_fail_at(1);
    assert_int_equal(bh__shard_reserve(&f.shard), BH_ENOMEM);
    bh__hostmem_fail_at(0);
    for (uint64_t k = 0; k < i; k++)
        assert_non_null(find_key(&f, key_of(k))); /* probe runs end: one entry is empty */
    assert_null(find_key(&f, key_of(i)));
    link_key(&f, key_of(i++));
    assert_ptr_not_equal(bh__shard_table(&f.shard), t);
    for (uint64_t k = 0; k < i; k++)
        assert_non_null(find_key(&f, key_of(k)));
    table_fixture_fini(&f);
}

/* Every entry's top byte is its key's tag and its exact distance from its
 * home (capped), and every entry's key is found: what the probes, which
 * skip entries by distance, rely on. */
static void assert_entries_exact(table_fixture *f) {
    const bh__table *t = bh__shard_table(&f->shard);
    uint32_t count = 0;
    for (uint32_t j = 0; j <= t->mask; j++) {
        unsigned e = AO_int_load(&t->e[j]);
        if (e == 0)
            continue;
        count++;
        const bh__block *b = bh__slab_at(&f->slab, bh__entry_slot(e));
        uint64_t address = (uint64_t)AO_load(&b->address), h = bh__key_hash(0, address);
        assert_int_equal(bh__entry_top(e), bh__entry_want(bh__entry_tag(h), (j - (uint32_t)h) & t->mask));
        assert_ptr_equal(find_key(f, address), b);
    }
    assert_int_equal(count, f->shard.count);
}

/* A run of 40 keys of one home among others: most sit past the distance
 * cap. Unlinking them one by one in a scrambled order (each unlink moves the
 * later ones back, from past the cap to under it) keeps every distance exact
 * and every key found. */
static void distances_stay_exact_past_the_cap(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    enum { OTHERS = 100, RUN = 40 };
    uint64_t from = 0;
    while (from < OTHERS)
        link_key(&f, key_of(from++));
    uint32_t mask = bh__shard_table(&f.shard)->mask;
    assert_true(OTHERS + RUN <= (mask + 1) / 4 * 3); /* no growth from here */
    uint64_t run[RUN];
    bh__block *blocks[RUN];
    for (int k = 0; k < RUN; k++)
        blocks[k] = link_key(&f, run[k] = next_key_with(&from, mask, 7, -1));
    assert_int_equal(bh__shard_table(&f.shard)->mask, mask);
    assert_entries_exact(&f);
    assert_true(position_of(&f, blocks[RUN - 1]) >= (int)(7 + RUN)); /* past the cap */
    for (int k = 0; k < RUN; k++) {
        int victim = (k * 17) % RUN; /* 17 and 40 are coprime: each once */
        unlink_key(&f, run[victim], blocks[victim]);
        assert_null(find_key(&f, run[victim]));
        assert_entries_exact(&f);
    }
    assert_int_equal(f.shard.count, OTHERS);
    table_fixture_fini(&f);
}

/* An unlink moves a later entry back by the distance the entry holds,
 * without reading the entry's block: with the block's key changed behind the
 * table's back to one whose home is the place the entry sits in, the entry
 * still moves into the hole. An unlink that reads the key for the home (as
 * before the distances) leaves it behind the hole, where no probe finds it. */
static void an_unlink_moves_entries_by_their_distance_not_their_blocks(void **state) {
    (void)state;
    static table_fixture f;
    table_fixture_init(&f);
    uint32_t mask = bh__shard_table(&f.shard)->mask;
    uint64_t from = 0;
    uint64_t ka = next_key_with(&from, mask, 3, -1), kb = next_key_with(&from, mask, 3, -1);
    uint64_t decoy = next_key_with(&from, mask, 4, -1);
    bh__block *a = link_key(&f, ka), *b = link_key(&f, kb);
    assert_int_equal(position_of(&f, b), 4);
    AO_store(&b->address, decoy);
    unlink_key(&f, ka, a);
    AO_store(&b->address, kb);
    assert_int_equal(position_of(&f, b), 3);
    assert_ptr_equal(find_key(&f, kb), b);
    assert_entries_exact(&f);
    table_fixture_fini(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_spreads_aligned_neighbouring_addresses_over_shards_and_buckets),
        cmocka_unit_test(shard_finds_links_unlinks_and_grows),
        cmocka_unit_test(backward_shift_crosses_the_end_of_the_array),
        cmocka_unit_test(tag_collisions_are_told_apart_by_the_key),
        cmocka_unit_test(unlink_of_an_absent_slot_changes_nothing),
        cmocka_unit_test(a_shard_that_cannot_grow_fills_up_then_refuses),
        cmocka_unit_test(distances_stay_exact_past_the_cap),
        cmocka_unit_test(an_unlink_moves_entries_by_their_distance_not_their_blocks),
    };
    return cmocka_run_group_tests_name("table", tests, NULL, NULL);
}
