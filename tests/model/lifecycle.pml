/*
 * lifecycle.pml - the control-block protocol of src/core/lifecycle.c and hot.h, model-checked
 * with spin over every interleaving of NT threads doing OPS operations each
 * on NA addresses (1 or 2) of one memory domain.
 *
 * What is modelled, step for step as in the C code:
 *  - the block word (generation, refs): every CAS of ref_get / bh_release is
 *    one atomic step; a stale handle (other generation, or refs 0) changes
 *    nothing;
 *  - the block's key: set when a block is taken for an address, overwritten
 *    when the block is retired (the free list links through the address
 *    field, and a pointer may read as any address: the model writes any
 *    address there); both only while refs is 0, under the shard lock. A slot
 *    never handed out has key 0, a real address. (A link that matches no
 *    address needs no value of its own: a reader that reads it gives up,
 *    and one that reads a matching address fails its CAS, since the block
 *    is no longer live in the generation it loaded; both fall back.)
 *  - the shard lock and what runs under it: find, take a block, publish
 *    (refs 0 -> 1), link / unlink, takeover, retire (generation + 1). Publish
 *    and retire are a load of the word and a store of it changed, two steps
 *    as in go_live() and last_release() (plain release stores since 0.4): an
 *    assertion at the store checks that no other thread changed the word in
 *    between (every CAS expects refs > 0, and the word's refs is 0 there);
 *  - the last release: FREE report, phase = FREEING, allocator free, then
 *    under the lock: unlink unless taken over, retire;
 *  - bh_alloc: the allocator call (no lock), then under the lock: an existing
 *    linked block of that address must be dying with its free started
 *    (takeover), else it is a conflict;
 *  - bh_lookup / bh_intern of a live address, first without the lock (the
 *    lock-free hit), then, if that did not hit, get unless zero under the
 *    lock; refs 0 there is a miss / BH_EBUSY.
 *
 * The lock-free hit, step for step:
 *  1. the table entry, read without the lock, names a block. The model lets
 *     it name ANY block, or none: a stale array, an entry moved by a
 *     backward shift, a tag collision with another key, a block retired and
 *     reused since, a slot never handed out. The hit's correctness must rest
 *     on the steps below alone. Reading the entry and the word are folded
 *     into one step: any interleaving between them only changes which block
 *     the entry names, and every block is already a choice;
 *  2. w = acquire load of the block's word, kept in locals (fg, fr); refs 0
 *     gives up. (The C code may go on probing; earlier probes of a run only
 *     read, so the run is as if its last probe were its only one.)
 *  3. read of the block's key, a step of its own; another key gives up;
 *  4. CAS(word, w, w + 1) as one atomic step: it succeeds only if generation
 *     and refs are both still those of w. Success is a hit: the handle is
 *     (block, fg).
 *  Anything else falls back to the locked path, which decides.
 * spin's interleavings are sequentially consistent: the C11 orderings that
 * make the real reads see these values (acquire word load, release CAS
 * before the death that must precede a key rewrite) are argued in
 * docs/internals.md, not checked here. Sizes, overflow and the range index
 * are not modelled.
 *
 * The allocator hands out an address only when it is free; the reporter
 * checks that ALLOC and FREE alternate per address. At the end every handle
 * is released: nothing may be left allocated, reported live, linked or
 * taken.
 *
 * Mutants (-DMUTANT_*) break the protocol on purpose; run.sh checks that spin
 * finds each, so the model can fail:
 *  FREE_AFTER_FREE  FREE reported after the allocator free;
 *  REVIVE           the locked path takes a reference without get-unless-zero;
 *  LF_REVIVE        the lock-free hit does not give up on refs 0 in step 2;
 *  LF_NO_KEYCHECK   the lock-free hit skips step 3;
 *  LF_STALE_GEN     the lock-free CAS only checks refs > 0, not the word w;
 *  LF_NO_FALLBACK   a lock-free attempt that did not hit is a miss.
 *
 * Checked properties (assertions): the allocator never frees what is not
 * allocated (exactly one free per allocation); FREE is reported only for a
 * live allocation and before the address is reported ALLOC again; a dying
 * block is never revived; a takeover only happens after the free started; at
 * most one block is linked per address; a hit (locked or lock-free) names a
 * live block of the generation it returns and of the address asked for; a
 * lookup of an address whose handle the thread holds never misses; no leak
 * at the end.
 */
#ifndef NT
#define NT 2
#endif
#ifndef OPS
#define OPS 3
#endif
#ifndef NA
#define NA 2      /* addresses (1 or 2) */
#endif
/* Block slots (the slab + free lists). When a thread takes one, the blocks in
 * use are at most the live or not yet freed blocks of the other addresses
 * (NA - 1) and the freed ones not yet retired, one per other thread (NT - 1);
 * take_block asserts that this is enough. */
#define NB (NA + NT - 1)
#if NB > 4
#error "lookup() chooses among 4 blocks at most"
#endif
#define NONE 255
#define HS 2      /* handles a thread holds at most */

byte gen[NB];
byte refs[NB];
byte key[NB];     /* the address of the block's key (0 at start: zeroed memory) */
bool linked[NB];
bool freeing[NB];
bool inuse[NB];   /* taken from the free list, not yet retired */
bool lock;

bool allocated[NA]; /* the allocator: is the address handed out? */
bool rep_live[NA];  /* the reporter: ALLOC reported, FREE not yet */

inline lock_acquire() { atomic { !lock -> lock = true } }
inline lock_release() { lock = false }

/* Under the lock: the block linked for address a, or NONE. Also checks that
 * no other block is linked for a. One step: only lock holders write linked
 * and key. */
inline find(r, a) {
    d_step {
        r = NONE;
        j = 0;
        do
        :: j < NB ->
            if
            :: linked[j] && key[j] == a -> assert(r == NONE); r = j
            :: else -> skip
            fi;
            j++
        :: else -> break
        od;
        j = 0
    }
}

/* Under the lock: a free block for address a (NB covers every need). */
inline take_block(r, a) {
    d_step {
        r = NONE;
        j = 0;
        do
        :: j < NB && inuse[j] -> j++
        :: j < NB && !inuse[j] -> r = j; break
        :: else -> break
        od;
        j = 0;
        assert(r != NONE);
        inuse[r] = true
    };
    key[r] = a /* set_key: the block is free (refs 0), not linked yet */
}

/* The thread's handle slot k: block hb[k] of generation hg[k], or empty. */
inline store(b, g) {
    if
    :: hb[0] == NONE -> hb[0] = b; hg[0] = g
    :: hb[0] != NONE && hb[1] == NONE -> hb[1] = b; hg[1] = g
    :: else -> assert(false) /* callers check for room first */
    fi
}

#define HAS_ROOM (hb[0] == NONE || hb[1] == NONE)
#define HOLDS(a) ((hb[0] != NONE && key[hb[0]] == (a)) || (hb[1] != NONE && key[hb[1]] == (a)))

/* bh_release of slot k; the last reference runs the death protocol. */
inline release(k) {
    b = hb[k];
    atomic {
        /* A thread's own reference is never stale. */
        assert(gen[b] == hg[k] && refs[b] > 0);
        refs[b]--;
        last = (refs[b] == 0);
        hb[k] = NONE;
        hg[k] = 0
    };
    if
    :: last ->
        a = key[b]; /* the owner of the death reads the key: it cannot change now */
#ifndef MUTANT_FREE_AFTER_FREE
        atomic { assert(rep_live[a]); rep_live[a] = false };  /* report FREE */
#endif
        freeing[b] = true;                                    /* phase = FREEING (release) */
        atomic { assert(allocated[a]); allocated[a] = false }; /* allocator.free */
#ifdef MUTANT_FREE_AFTER_FREE
        atomic { assert(rep_live[a]); rep_live[a] = false };  /* mutant: FREE reported after the free */
#endif
        lock_acquire();
        if :: linked[b] -> linked[b] = false :: else -> skip fi;
        lg = gen[b]; lr = refs[b];                            /* retire: load the word, */
        atomic { assert(gen[b] == lg && refs[b] == lr); gen[b] = lg + 1 }; /* store gen + 1 */
        if                                                    /* put_back_block: the free-list */
        :: key[b] = 0                                         /* link, a pointer, which may read */
        :: NA > 1 -> key[b] = NA - 1                          /* as any address */
        fi;
        inuse[b] = false;
        lock_release()
    :: else -> skip
    fi;
    b = 0; a = 0; last = false
}

/* bh_alloc: the allocator hands out any free address, then the block is
 * made under the lock. */
inline alloc() {
    atomic {
        if
        :: !allocated[0] -> a = 0
        :: NA > 1 && !allocated[NA - 1] -> a = NA - 1
        :: else -> a = NONE                                   /* BH_EALLOC */
        fi;
        if :: a != NONE -> allocated[a] = true :: else -> skip fi
    };
    if
    :: a != NONE ->
        lock_acquire();
        find(b, a);
        if
        :: b != NONE ->
            /* The allocator only re-issues a freed address, so the linked
             * block must be dying with its free started. */
            assert(refs[b] == 0 && freeing[b])
        :: else -> skip
        fi;
        take_block(nb, a);
        freeing[nb] = false;
        lg = gen[nb]; lr = refs[nb];                          /* publish: load the word, */
        atomic { assert(gen[nb] == lg && refs[nb] == lr); refs[nb] = lr + 1 }; /* store refs + 1 (release) */
        linked[nb] = true;
        if :: b != NONE -> linked[b] = false :: else -> skip fi; /* takeover */
        g = gen[nb];
        lock_release();
        atomic { assert(!rep_live[a]); rep_live[a] = true };  /* report ALLOC */
        store(nb, g)
    :: else -> skip
    fi;
    a = 0; b = 0; nb = 0; g = 0
}

/* bh_lookup or bh_intern of address a (a live key: a hit or a miss). */
inline lookup(a) {
    ok = false;
    /* Lock-free steps 1 and 2: the entry names block fb (or none); the word. */
    atomic {
        if
        :: fb = 0
        :: fb = 1
        :: NB > 2 -> fb = 2
        :: NB > 3 -> fb = 3
        :: fb = NONE
        fi;
        if :: fb != NONE -> fg = gen[fb]; fr = refs[fb] :: else -> skip fi
    };
    if
#ifdef MUTANT_LF_REVIVE
    :: fb != NONE ->                                          /* mutant: refs 0 goes on */
#else
    :: fb != NONE && fr > 0 ->
#endif
        if
#ifdef MUTANT_LF_NO_KEYCHECK
        :: true ->
#else
        :: key[fb] == a ->                                    /* step 3: the key */
#endif
            atomic {                                          /* step 4: CAS(word, w, w + 1) */
                if
#ifdef MUTANT_LF_STALE_GEN
                :: refs[fb] > 0 ->
#else
                :: gen[fb] == fg && refs[fb] == fr ->
#endif
                    assert(gen[fb] == fg && refs[fb] > 0 && key[fb] == a);
                    refs[fb]++;
                    ok = true
                :: else -> skip
                fi
            }
        :: else -> skip
        fi
    :: else -> skip
    fi;
    if
    :: ok -> store(fb, fg)
#ifdef MUTANT_LF_NO_FALLBACK
    :: else -> skip
#else
    :: else ->
        /* The locked path: get unless zero on the linked block. */
        lock_acquire();
        find(b, a);
        if
        :: b != NONE ->
            g = gen[b];
            atomic {
                if
#ifdef MUTANT_REVIVE
                :: true ->                                    /* mutant: no get-unless-zero */
#else
                :: refs[b] > 0 ->
#endif
                    assert(gen[b] == g && refs[b] > 0 && key[b] == a);
                    refs[b]++;
                    ok = true
                :: else -> skip  /* dying: lookup misses, intern is BH_EBUSY */
                fi
            }
        :: else -> skip
        fi;
        lock_release();
        if :: ok -> store(b, g) :: else -> skip fi
#endif
    fi;
    /* A key this thread holds a reference to is live and linked: never a miss. */
    assert(ok || !HOLDS(a));
    fb = 0; fg = 0; fr = 0; b = 0; g = 0; ok = false
}

proctype thread() {
    byte hb[HS], hg[HS];
    byte a, b, g, nb, i, j, k, fb, fg, fr;
    byte lg, lr; /* publish and retire: the word as loaded */
    bool ok, last;
    hb[0] = NONE; hb[1] = NONE;
    i = 0;
    do
    :: i < OPS && HAS_ROOM ->
        i++;
        if
        :: k = 0; alloc()                                     /* bh_alloc */
        :: k = 1; lookup(0)                                   /* bh_lookup / bh_intern */
        :: NA > 1 -> k = 1; lookup(NA - 1)
        :: k = 2;                                             /* bh_retain of a held handle */
            k = (hb[0] != NONE -> 0 : 1);
            if
            :: hb[k] != NONE ->
                b = hb[k]; g = hg[k];
                atomic { assert(gen[b] == g && refs[b] > 0); refs[b]++ };
                store(b, g);
                b = 0; g = 0
            :: else -> skip
            fi
        :: k = 3;                                             /* bh_release of a held handle */
            if
            :: hb[0] != NONE -> release(0)
            :: hb[1] != NONE -> release(1)
            :: else -> skip
            fi
        fi;
        k = 0
    :: else -> break
    od;
    /* Give every reference back. */
    if :: hb[0] != NONE -> release(0) :: else -> skip fi;
    if :: hb[1] != NONE -> release(1) :: else -> skip fi
}

init {
    byte t;
    atomic {
        for (t : 1 .. NT) { run thread() }
    };
    (_nr_pr == 1) ->
    for (t : 0 .. NA - 1) { assert(!allocated[t] && !rep_live[t]) };
    for (t : 0 .. NB - 1) { assert(!linked[t] && !inuse[t]) }
}
