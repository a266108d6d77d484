/*
 * otab.h - one open-addressing table type for the tracker's tables (private
 * to tools/track/).
 *
 * Linear probing, a keyed hash (a secret per table), power-of-two capacity,
 * grows at 1/2 load, shrinks below 1/8, deletes by backward shift, so no
 * tombstones pile up. Elements are caller-defined structs that start with an
 * okey; the table knows only their size.
 * Must never: hash with a function a client can invert (keys come from the
 * wire), or keep a tombstone. Not thread-safe.
 */
#ifndef BH_TRACK_OTAB_H
#define BH_TRACK_OTAB_H

#include <stddef.h>
#include <stdint.h>

/* Every element starts with its key; used == 0 marks an empty slot. */
typedef struct okey {
    uint64_t a, c;
    uint32_t b, used;
} okey;

typedef struct otab {
    unsigned char *s;
    size_t cap, n, esize; /* cap 0: nothing allocated yet */
    uint64_t secret;      /* the hash key (ot_hash), fixed for the table's life */
    uint16_t *blocks;     /* used slots per OT_BLOCK slots (tables of OT_BLOCKED slots and more), or NULL */
} otab;

#define OT_BLOCK 256u
#define OT_BLOCKED 4096u

/* Slot i of t (0 <= i < t->cap): walks see used == 0 for empty slots. */
static inline okey *ot_slot(const otab *t, size_t i) { return (okey *)(void *)(t->s + i * t->esize); }

/* An empty table of elements of esize bytes, with a fresh hash secret. */
void ot_init(otab *t, size_t esize);
/* The element with key (a, b, c), or NULL. */
void *ot_find(const otab *t, uint64_t a, uint32_t b, uint64_t c);
/* A new zeroed element with key (a, b, c), which must be absent. NULL: ENOMEM.
 * Invalidates pointers into t. */
void *ot_insert(otab *t, uint64_t a, uint32_t b, uint64_t c);
/* Removes the element elem points at. Invalidates pointers into t. */
void ot_remove(otab *t, void *elem);
/* Calls drop for every element and removes those it returns nonzero for
 * (drop may see an element it kept twice); the table shrinks once, at the end. */
void ot_sweep(otab *t, int (*drop)(void *ctx, void *elem), void *ctx);
/* The slot of the n-th used slot in slot order (n < t->n). Costs cap /
 * OT_BLOCK block counts plus one block, not the slots before it: a page of a
 * dump at any offset costs the same. */
size_t ot_nth(const otab *t, size_t n);
/* Frees every element (the table stays usable, empty). */
void ot_free(otab *t);

#endif
