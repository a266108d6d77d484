/*
 * diag_tokens.c - debug references: every reference the caller holds is its
 * own token.
 *
 * Owns: the token table of one registry (token value -> record), the
 * acquisition count of each token, the tombstones of released tokens (kept,
 * oldest out first, up to a bound), and the witness calls that make misuse
 * visible to valgrind and ASan (diag_witness.c).
 * Must never: call the registry, the allocator or the reporter with the
 * table locked (they may call back into the registry) except through the
 * do_retain callback, which only takes a block reference; reuse a token
 * value (ids only grow); or let a misuse of one token change another.
 *
 * A token value looks like a handle (bits 24..31 carry the registry tag)
 * but its other bits are a 56-bit id, never reused: a released token stays
 * recognisable for as long as its tombstone is kept. Ids start at 1 in every
 * registry and tags repeat every 255 registries, so the id's top 32 bits are
 * XORed with the registry's random salt, as handle generations are: a token
 * of another registry names one of ours only if the salts agree too.
 */
#include <string.h>

#include "diag.h"
#include "core/internal.h"

enum { REC_FREE = 0, REC_RESERVED, REC_LIVE, REC_TOMB };

#define NONE UINT32_MAX

/* What lookups and the tombstone queue touch, apart from the records (a few
 * hundred bytes each, with their stacks): a hash walk or an eviction stays
 * in this compact array instead of missing the cache on every record. */
typedef struct key {
    uint64_t id;         /* 0 unless LIVE or TOMB */
    uint32_t hash_next;  /* chain in the id hash, NONE at the end */
    uint32_t queue_next; /* tombstone queue, or the free list */
    uint8_t state;       /* REC_* */
} key;

typedef struct rec {
    bh__token_info info;
    uintptr_t cookie; /* the witness's */
} rec;

struct bh__tokens {
    pthread_mutex_t lock; /* guards everything below */
    rec *recs;
    key *keys;         /* one per record, same index */
    uint32_t cap;      /* records allocated */
    uint32_t *buckets; /* id hash: first record of each chain, NONE if empty */
    uint32_t mask;     /* buckets - 1 */
    uint32_t free_head;
    uint32_t tomb_head, tomb_tail, tombs, keep_released;
    uint64_t next_id, live;
    uint32_t tag, salt; /* immutable: the registry's tag and generation salt */
    bh__witness_pool *witness;
};

/* ======================== Token values ======================== */

static bh_handle value_of(const bh__tokens *t, uint64_t id) {
    bh_handle h;
    h.bits = (id & 0xffffffu) | ((uint64_t)t->tag << 24) | ((uint64_t)((uint32_t)(id >> 24) ^ t->salt) << 32);
    return h;
}

/* 0 if the value cannot be one of this table's tokens. */
static uint64_t id_of(const bh__tokens *t, bh_handle h) {
    if (((h.bits >> 24) & 0xffu) != t->tag)
        return 0;
    return (h.bits & 0xffffffu) | ((uint64_t)((uint32_t)(h.bits >> 32) ^ t->salt) << 24);
}

/* Ids are consecutive: multiply to spread them, fold the high half down so
 * the bucket bits depend on all of them. */
static uint32_t bucket_of(const bh__tokens *t, uint64_t id) {
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h ^ (h >> 32)) & t->mask;
}

/* ======================== Table ======================== */

static uint32_t find(const bh__tokens *t, uint64_t id) {
    if (id == 0)
        return NONE;
    for (uint32_t i = t->buckets[bucket_of(t, id)]; i != NONE; i = t->keys[i].hash_next)
        if (t->keys[i].id == id)
            return i;
    return NONE;
}

static void unhash(bh__tokens *t, uint32_t r) {
    uint32_t *p = &t->buckets[bucket_of(t, t->keys[r].id)];
    while (*p != r)
        p = &t->keys[*p].hash_next;
    *p = t->keys[r].hash_next;
}

static void rehash(bh__tokens *t, uint32_t *buckets, uint32_t mask) {
    for (uint32_t b = 0; b <= mask; b++)
        buckets[b] = NONE;
    t->buckets = buckets;
    t->mask = mask;
    for (uint32_t i = 0; i < t->cap; i++) {
        if (t->keys[i].state == REC_LIVE || t->keys[i].state == REC_TOMB) {
            uint32_t b = bucket_of(t, t->keys[i].id);
            t->keys[i].hash_next = buckets[b];
            buckets[b] = i;
        }
    }
}

/* Doubles the records (and the buckets, one per record). Under lock. */
static bh_status grow(bh__tokens *t) {
    uint32_t cap = t->cap != 0 ? t->cap * 2 : 64;
    if (cap > (1u << 30) || bh__witness_reserve(t->witness, cap) != BH_OK)
        return BH_ENOMEM;
    rec *recs = bh__calloc(cap, sizeof(*recs));
    key *keys = bh__calloc(cap, sizeof(*keys));
    uint32_t *buckets = bh__calloc(cap, sizeof(*buckets));
    if (recs == NULL || keys == NULL || buckets == NULL) {
        bh__free(recs);
        bh__free(keys);
        bh__free(buckets);
        return BH_ENOMEM;
    }
    if (t->cap != 0) {
        memcpy(recs, t->recs, t->cap * sizeof(*recs));
        memcpy(keys, t->keys, t->cap * sizeof(*keys));
    }
    for (uint32_t i = cap; i-- > t->cap;) {
        keys[i].queue_next = t->free_head;
        t->free_head = i;
    }
    bh__free(t->recs);
    bh__free(t->keys);
    bh__free(t->buckets);
    t->recs = recs;
    t->keys = keys;
    t->cap = cap;
    rehash(t, buckets, cap - 1);
    return BH_OK;
}

bh_status bh__tokens_create(uint32_t tag, uint32_t salt, uint32_t keep_released, bh__witness_mode witness,
                            bh__tokens **out) {
    bh__tokens *t = bh__calloc(1, sizeof(*t));
    if (t == NULL)
        return BH_ENOMEM;
    t->tag = tag;
    t->salt = salt;
    t->keep_released = keep_released;
    t->free_head = t->tomb_head = t->tomb_tail = NONE;
    t->next_id = 1;
    pthread_mutex_init(&t->lock, NULL);
    if (bh__witness_pool_create(witness, &t->witness) != BH_OK || grow(t) != BH_OK) {
        bh__tokens_destroy(t);
        return BH_ENOMEM;
    }
    *out = t;
    return BH_OK;
}

void bh__tokens_destroy(bh__tokens *t) {
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->lock);
    bh__witness_pool_destroy(t->witness);
    bh__free(t->recs);
    bh__free(t->keys);
    bh__free(t->buckets);
    bh__free(t);
}

/* ======================== Issue ======================== */

bh_status bh__tokens_reserve(bh__tokens *t, bh__token_ticket *ticket) {
    pthread_mutex_lock(&t->lock);
    if (t->free_head == NONE && grow(t) != BH_OK) {
        pthread_mutex_unlock(&t->lock);
        return BH_ENOMEM;
    }
    uint32_t r = t->free_head;
    t->free_head = t->keys[r].queue_next;
    t->keys[r].state = REC_RESERVED;
    pthread_mutex_unlock(&t->lock);
    ticket->rec = r;
    return BH_OK;
}

static void put_free(bh__tokens *t, uint32_t r) {
    /* The record itself is left as it is (issue overwrites every field):
     * an evicted tombstone is cold, and touching it would cost a miss. */
    memset(&t->keys[r], 0, sizeof(t->keys[r]));
    t->keys[r].queue_next = t->free_head;
    t->free_head = r;
}

void bh__tokens_cancel(bh__tokens *t, bh__token_ticket ticket) {
    pthread_mutex_lock(&t->lock);
    put_free(t, ticket.rec);
    pthread_mutex_unlock(&t->lock);
}

bh_handle bh__tokens_issue(bh__tokens *t, bh__token_ticket ticket, bh_handle block, const bh_info *info,
                           const bh__stack *taken) {
    pthread_mutex_lock(&t->lock);
    rec *r = &t->recs[ticket.rec];
    key *k = &t->keys[ticket.rec];
    k->id = t->next_id++;
    r->info.block = block;
    r->info.count = 1;
    r->info.device = info->device;
    r->info.address = info->address;
    r->info.size = info->size;
    if (taken != NULL)
        r->info.taken = *taken;
    else
        r->info.taken.depth = 0;
    r->info.released.depth = 0;
    k->state = REC_LIVE;
    uint32_t b = bucket_of(t, k->id);
    k->hash_next = t->buckets[b];
    t->buckets[b] = ticket.rec;
    r->cookie = bh__witness_take(t->witness, ticket.rec);
    t->live++;
    bh_handle h = value_of(t, k->id);
    pthread_mutex_unlock(&t->lock);
    return h;
}

/* ======================== Use ======================== */

static bh__token_verdict verdict_of(const bh__tokens *t, uint32_t r) {
    if (r == NONE)
        return BH__TOKEN_UNKNOWN;
    return t->keys[r].state == REC_LIVE ? BH__TOKEN_OK : BH__TOKEN_RELEASED;
}

bh__token_verdict bh__tokens_block(bh__tokens *t, bh_handle token, bh_handle *block, bh__token_info *tomb) {
    pthread_mutex_lock(&t->lock);
    uint32_t r = find(t, id_of(t, token));
    bh__token_verdict v = verdict_of(t, r);
    if (v == BH__TOKEN_OK)
        *block = t->recs[r].info.block;
    else if (v == BH__TOKEN_RELEASED && tomb != NULL)
        *tomb = t->recs[r].info;
    pthread_mutex_unlock(&t->lock);
    return v;
}

bh__token_verdict bh__tokens_acquire(bh__tokens *t, bh_handle token,
                                     bh_status (*do_retain)(void *, bh_handle), void *ctx,
                                     bh_status *retain_status) {
    pthread_mutex_lock(&t->lock);
    uint32_t r = find(t, id_of(t, token));
    bh__token_verdict v = verdict_of(t, r);
    *retain_status = BH_OK;
    if (v == BH__TOKEN_OK) {
        rec *x = &t->recs[r];
        if (x->info.count == UINT32_MAX) {
            v = BH__TOKEN_OVERFLOW;
        } else {
            *retain_status = do_retain(ctx, x->info.block);
            if (*retain_status == BH_OK)
                x->info.count++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return v;
}

/* Moves a released record to the tail of the tombstone queue, evicting the
 * oldest tombstone past the bound. Under lock. */
static void entomb(bh__tokens *t, uint32_t r) {
    t->keys[r].state = REC_TOMB;
    t->keys[r].queue_next = NONE;
    if (t->tomb_tail != NONE)
        t->keys[t->tomb_tail].queue_next = r;
    else
        t->tomb_head = r;
    t->tomb_tail = r;
    t->tombs++;
    while (t->tombs > t->keep_released) {
        uint32_t old = t->tomb_head;
        t->tomb_head = t->keys[old].queue_next;
        if (t->tomb_head == NONE)
            t->tomb_tail = NONE;
        t->tombs--;
        unhash(t, old);
        put_free(t, old);
    }
}

bh__token_verdict bh__tokens_release(bh__tokens *t, bh_handle token, bh_handle *block, bh__token_info *info) {
    pthread_mutex_lock(&t->lock);
    uint32_t r = find(t, id_of(t, token));
    bh__token_verdict v = verdict_of(t, r);
    if (v == BH__TOKEN_RELEASED) {
        if (info != NULL)
            *info = t->recs[r].info;
    } else if (v == BH__TOKEN_OK) {
        rec *x = &t->recs[r];
        *block = x->info.block;
        if (--x->info.count == 0) {
            bh__witness_drop(t->witness, r, x->cookie);
            t->live--;
            entomb(t, r);
            v = BH__TOKEN_LAST;
        }
        if (info != NULL)
            *info = x->info;
    }
    pthread_mutex_unlock(&t->lock);
    return v;
}

void bh__tokens_set_released(bh__tokens *t, bh_handle token, const bh__stack *released_at) {
    pthread_mutex_lock(&t->lock);
    uint32_t r = find(t, id_of(t, token));
    if (r != NONE && t->keys[r].state == REC_TOMB)
        t->recs[r].info.released = *released_at;
    pthread_mutex_unlock(&t->lock);
}

void bh__tokens_show_misuse(bh__tokens *t, bh_handle token) {
    pthread_mutex_lock(&t->lock);
    uint32_t r = find(t, id_of(t, token));
    if (r == NONE)
        bh__witness_invalid_drop(t->witness);
    else if (t->keys[r].state == REC_TOMB)
        bh__witness_double_drop(t->witness, r, t->recs[r].cookie);
    pthread_mutex_unlock(&t->lock);
}

/* ======================== Listing ======================== */

void bh__tokens_foreach_live(bh__tokens *t, void (*fn)(void *ctx, const bh__token_info *tok, bh_handle token),
                             void *ctx) {
    pthread_mutex_lock(&t->lock);
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->keys[i].state == REC_LIVE)
            fn(ctx, &t->recs[i].info, value_of(t, t->keys[i].id));
    pthread_mutex_unlock(&t->lock);
}

uint64_t bh__tokens_live(bh__tokens *t) {
    pthread_mutex_lock(&t->lock);
    uint64_t n = t->live;
    pthread_mutex_unlock(&t->lock);
    return n;
}
