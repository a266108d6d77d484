/*
 * hostmem.c - every host allocation the library makes goes through here.
 *
 * Owns: the calloc/free wrappers, the test-only fault hook that makes the
 * k-th allocation fail (so tests can walk every BH_ENOMEM path), and the
 * transparent-huge-page advice for large, randomly accessed arrays.
 * Must never: abort or print on failure; callers turn NULL into BH_ENOMEM.
 */
#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Countdown to the injected failure; 0 = disarmed. Relaxed is enough: the hook
 * is armed by a test before the calls it targets, from the same thread or
 * through the test's own synchronisation. */
static AO_t fail_countdown;
/* Host allocations attempted so far, so a test can walk every k. */
static AO_t attempts;

/* Relaxed, both: see fail_countdown and attempts above. */
void bh__hostmem_fail_at(long k) { AO_store(&fail_countdown, k > 0 ? (AO_t)k : 0); }

long bh__hostmem_attempts(void) { return (long)AO_load(&attempts); }

static int injected_failure(void) {
    (void)AO_fetch_and_add1(&attempts); /* relaxed: a statistic */
    for (;;) {
        AO_t left = AO_load(&fail_countdown); /* relaxed: the CAS's guess */
        if (left == 0)
            return 0;
        /* CAS so that concurrent callers consume distinct countdown values:
         * exactly one of them sees the failure. Relaxed: no data is published. */
        if (AO_compare_and_swap(&fail_countdown, left, left - 1))
            return left == 1;
    }
}

void *bh__calloc(size_t n, size_t size) {
    if (injected_failure())
        return NULL;
    return calloc(n, size);
}

void *bh__alloc_aligned(size_t align, size_t size) {
    void *p = NULL;
    if (injected_failure() || posix_memalign(&p, align, size) != 0)
        return NULL;
    return p;
}

void *bh__zalloc_aligned(size_t align, size_t size) {
    void *p = bh__alloc_aligned(align, size);
    return p != NULL ? memset(p, 0, size) : NULL;
}

void bh__free(void *p) { free(p); }

/* A control-block chunk or a table array of a large registry is touched at
 * random: with 4 KiB pages nearly every access past a few thousand live
 * handles also misses the TLB, and a page walk under virtualisation costs as
 * much as the cache miss itself. Transparent huge pages cover 2 MiB per TLB
 * entry. Only whole 2 MiB-aligned stretches inside [p, p + len) can become
 * huge pages, so smaller ranges are left alone; the kernel may ignore the
 * advice (THP "never", no free huge pages), which is fine: it is advice.
 * Resident memory still grows only as pages are touched, now in steps of up
 * to 2 MiB. */
void bh__advise_huge(void *p, size_t len) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = BH__HUGE_PAGE;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(huge - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* advice: failure changes nothing */
#else
    (void)p;
    (void)len;
#endif
}
