/*
 * lifecycle.pml - the control-block protocol of src/registry.c, model-checked
 * with spin over every interleaving of NT threads doing OPS operations each
 * on one address.
 *
 * What is modelled, step for step as in the C code:
 *  - the block word (generation, refs): every CAS of ref_get / bh_release is
 *    one atomic step; a stale handle (other generation, or refs 0) changes
 *    nothing;
 *  - the shard lock and what runs under it: find, take a block, publish
 *    (refs 0 -> 1), link / unlink, takeover, retire (generation + 1);
 *  - the last release: FREE report, phase = FREEING, allocator free, then
 *    under the lock: unlink unless taken over, retire;
 *  - bh_alloc: the allocator call (no lock), then under the lock: an existing
 *    linked block must be dying with its free started (takeover), else it is
 *    a conflict;
 *  - bh_lookup / bh_intern of a live address: get unless zero under the lock;
 *    refs 0 is a miss / BH_EBUSY.
 * The allocator hands out the address only when it is free; the reporter
 * checks that ALLOC and FREE alternate. At the end every handle is released:
 * nothing may be left allocated or reported live.
 *
 * Mutants (-DMUTANT_FREE_AFTER_FREE, -DMUTANT_REVIVE) break the protocol on
 * purpose; run.sh checks that spin finds them, so the model can fail.
 *
 * Checked properties (assertions): the allocator never frees what is not
 * allocated (exactly one free per allocation); FREE is reported only for a
 * live allocation and before the address is reported ALLOC again; a dying
 * block is never revived; a takeover only happens after the free started; no
 * leak at the end.
 */
#ifndef NT
#define NT 2
#endif
#ifndef OPS
#define OPS 3
#endif
#define NB 3      /* block slots (the slab + free lists) */
#define NONE 255
#define HS 2      /* handles a thread holds at most */

byte gen[NB];
byte refs[NB];
bool linked[NB];
bool freeing[NB];
bool inuse[NB];   /* taken from the free list, not yet retired */
bool lock;
bit nop;          /* target of else branches (spin needs a real step there) */

bool allocated;   /* the allocator: is the address handed out? */
bool rep_live;    /* the reporter: ALLOC reported, FREE not yet */
byte conflicts;

inline lock_acquire() { atomic { !lock -> lock = true } }
inline lock_release() { lock = false }

/* Under the lock: the linked block, or NONE. */
inline find(r) {
    if
    :: linked[0] -> r = 0
    :: !linked[0] && linked[1] -> r = 1
    :: !linked[0] && !linked[1] && linked[2] -> r = 2
    :: else -> r = NONE
    fi
}

/* Under the lock: a free block, or NONE (the model's host memory ran out). */
inline take_block(r) {
    if
    :: !inuse[0] -> r = 0
    :: inuse[0] && !inuse[1] -> r = 1
    :: inuse[0] && inuse[1] && !inuse[2] -> r = 2
    :: else -> r = NONE
    fi;
    if :: r != NONE -> inuse[r] = true :: else -> nop = 1 fi
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

/* bh_release of slot k; the last reference runs the death protocol. */
inline release(k) {
    b = hb[k];
    atomic {
        /* A thread's own reference is never stale. */
        assert(gen[b] == hg[k] && refs[b] > 0);
        refs[b]--;
        last = (refs[b] == 0)
    }
    hb[k] = NONE;
    if
    :: last ->
#ifndef MUTANT_FREE_AFTER_FREE
        atomic { assert(rep_live); rep_live = false };      /* report FREE */
#endif
        freeing[b] = true;                                  /* phase = FREEING (release) */
        atomic { assert(allocated); allocated = false };    /* allocator.free */
#ifdef MUTANT_FREE_AFTER_FREE
        atomic { assert(rep_live); rep_live = false };      /* mutant: FREE reported after the free */
#endif
        lock_acquire();
        if :: linked[b] -> linked[b] = false :: else -> nop = 1 fi;
        gen[b]++;                                           /* retire: old handles stale */
        inuse[b] = false;
        lock_release()
    :: else -> nop = 1
    fi
}

/* get unless zero on the linked block (bh_lookup, bh_intern alias). */
inline ref_from_table() {
    lock_acquire();
    find(b);
    if
    :: b != NONE ->
        g = gen[b];
        atomic {
            if
#ifdef MUTANT_REVIVE
            :: true -> refs[b]++; ok = true              /* mutant: no get-unless-zero */
#else
            :: refs[b] > 0 -> refs[b]++; ok = true
#endif
            :: else -> ok = false    /* dying: lookup misses, intern is BH_EBUSY */
            fi
        }
    :: else -> ok = false
    fi;
    lock_release();
    if :: ok -> store(b, g) :: else -> nop = 1 fi
}

proctype thread() {
    byte hb[HS], hg[HS];
    byte b, g, nb, i, k, op; /* op: which operation (and a real first step for spin) */
    bool ok, last;
    hb[0] = NONE; hb[1] = NONE;
    i = 0;
    do
    :: i < OPS && HAS_ROOM ->
        i++;
        if
        :: op = 0; /* bh_alloc */
            atomic { if :: !allocated -> allocated = true; ok = true :: else -> ok = false fi };
            if
            :: ok ->
                lock_acquire();
                take_block(nb);
                assert(nb != NONE); /* NB covers NT threads' needs */
                find(b);
                if
                :: b != NONE ->
                    /* The allocator only re-issues a freed address, so the
                     * linked block must be dying with its free started. */
                    assert(refs[b] == 0 && freeing[b]);
                    linked[b] = false                 /* takeover */
                :: else -> nop = 1
                fi;
                freeing[nb] = false;
                refs[nb] = 1;                          /* publish (release RMW) */
                linked[nb] = true;
                g = gen[nb];
                lock_release();
                atomic { assert(!rep_live); rep_live = true };   /* report ALLOC */
                store(nb, g)
            :: else -> nop = 1                            /* BH_EALLOC */
            fi
        :: op = 1; /* bh_lookup or bh_intern of the address */
            ref_from_table()
        :: op = 2; /* bh_retain of a held handle */
            k = (hb[0] != NONE -> 0 : 1);
            if
            :: hb[k] != NONE ->
                b = hb[k]; g = hg[k];
                atomic { assert(gen[b] == g && refs[b] > 0); refs[b]++ };
                store(b, g)
            :: else -> nop = 1
            fi
        :: op = 3; /* bh_release of a held handle */
            if
            :: hb[0] != NONE -> release(0)
            :: hb[1] != NONE -> release(1)
            :: else -> nop = 1
            fi
        fi
    :: else -> break
    od;
    /* Give every reference back. */
    if :: hb[0] != NONE -> release(0) :: else -> nop = 1 fi;
    if :: hb[1] != NONE -> release(1) :: else -> nop = 1 fi
}

init {
    byte t;
    atomic {
        for (t : 1 .. NT) { run thread() }
    };
    (_nr_pr == 1) ->
    assert(!allocated && !rep_live);
    assert(!linked[0] && !linked[1] && !linked[2])
}
