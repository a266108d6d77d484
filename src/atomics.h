/*
 * atomics.h - the library's atomic vocabulary and race-detector annotations.
 *
 * Owns: the include of <atomic_ops.h> (libatomic_ops, gcc __atomic builtins
 * mode, which ThreadSanitizer sees) and the happens-before annotations that let
 * helgrind and drd understand synchronisation done with atomics.
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
#define BH__HAPPENS_BEFORE(addr) ANNOTATE_HAPPENS_BEFORE(addr)
#define BH__HAPPENS_AFTER(addr) ANNOTATE_HAPPENS_AFTER(addr)
#define BH__HAPPENS_FORGET(addr) ANNOTATE_HAPPENS_BEFORE_FORGET_ALL(addr)
#else
#define BH__HAPPENS_BEFORE(addr) ((void)(addr))
#define BH__HAPPENS_AFTER(addr) ((void)(addr))
#define BH__HAPPENS_FORGET(addr) ((void)(addr))
#endif

#endif /* BH_ATOMICS_H */
