/*
 * atomics.h - the library's atomic vocabulary and race-detector annotations.
 *
 * Owns: the include of <atomic_ops.h> (libatomic_ops, gcc __atomic builtins
 * mode, which ThreadSanitizer sees) and the happens-before and lock
 * annotations that let helgrind and drd understand synchronisation done with
 * atomics.
 * Must never: define an atomic operation of its own in inline assembly (TSan
 * would not see it), or make the annotations do anything in builds without
 * BH_VALGRIND_ANNOTATIONS.
 */
#ifndef BH_ATOMICS_H
#define BH_ATOMICS_H

#ifdef AO_DISABLE_GCC_ATOMICS
#error "bufhandle needs libatomic_ops in gcc-builtins mode (ThreadSanitizer cannot see its asm)"
#endif
#include <atomic_ops.h>

#if defined(BH_VALGRIND_ANNOTATIONS) && BH_VALGRIND_ANNOTATIONS
/* helgrind.h first: drd.h alone lacks ANNOTATE_HAPPENS_BEFORE_FORGET_ALL. */
#include <valgrind/helgrind.h>
/* RUNNING_ON_VALGRIND, read once when the library is loaded (registry.c).
 * A client request is an inline asm statement that clobbers memory: inline
 * on the hot path it costs the surrounding code its registers (about 5 ns
 * per release in bh-bench's "annotations" section). Behind this flag,
 * outside valgrind, it is one load and a branch predicted not taken. */
extern int bh__under_valgrind;
#define BH__UNDER_VALGRIND __builtin_expect(bh__under_valgrind, 0)
#define BH__HAPPENS_BEFORE(addr)                                                                             \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_HAPPENS_BEFORE(addr);                                                                   \
    } while (0)
#define BH__HAPPENS_AFTER(addr)                                                                              \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_HAPPENS_AFTER(addr);                                                                    \
    } while (0)
#define BH__HAPPENS_FORGET(addr)                                                                             \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_HAPPENS_BEFORE_FORGET_ALL(addr);                                                        \
    } while (0)
/* A lock of the library's own (not a pthread mutex): helgrind and drd see
 * it as a writer-held rwlock, so they check the order it is taken in
 * against every other lock (helgrind's "lock order violated") and derive
 * the ordering between its holders from it, as for a mutex. helgrind.h's
 * rwlock requests, because drd honours them too (it ignores helgrind's
 * VALGRIND_HG_MUTEX_* ones). _TAKEN once the lock is held, _GIVING before
 * it is let go: the next holder's _TAKEN then follows this one's _GIVING. */
#define BH__LOCK_CREATED(lock)                                                                               \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_RWLOCK_CREATE(lock);                                                                    \
    } while (0)
#define BH__LOCK_DESTROYED(lock)                                                                             \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_RWLOCK_DESTROY(lock);                                                                   \
    } while (0)
#define BH__LOCK_TAKEN(lock)                                                                                 \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_RWLOCK_ACQUIRED((lock), 1);                                                             \
    } while (0)
#define BH__LOCK_GIVING(lock)                                                                                \
    do {                                                                                                     \
        if (BH__UNDER_VALGRIND)                                                                              \
            ANNOTATE_RWLOCK_RELEASED((lock), 1);                                                             \
    } while (0)
/* Memory accessed only with atomic operations that no lock or happens-before
 * edge orders (lock-free readers that validate what they read): helgrind and
 * drd cannot tell an atomic load or store from a plain one, so they stop
 * checking the range; _END before the memory goes back to the allocator. */
#define BH__ATOMIC_RANGE(addr, len) VALGRIND_HG_DISABLE_CHECKING((addr), (len))
#define BH__ATOMIC_RANGE_END(addr, len) VALGRIND_HG_ENABLE_CHECKING((addr), (len))
#else
#define BH__HAPPENS_BEFORE(addr) ((void)(addr))
#define BH__HAPPENS_AFTER(addr) ((void)(addr))
#define BH__HAPPENS_FORGET(addr) ((void)(addr))
#define BH__LOCK_CREATED(lock) ((void)(lock))
#define BH__LOCK_DESTROYED(lock) ((void)(lock))
#define BH__LOCK_TAKEN(lock) ((void)(lock))
#define BH__LOCK_GIVING(lock) ((void)(lock))
#define BH__ATOMIC_RANGE(addr, len) ((void)(addr), (void)(len))
#define BH__ATOMIC_RANGE_END(addr, len) ((void)(addr), (void)(len))
#endif

#endif /* BH_ATOMICS_H */
