/*
 * test_slab.c - white-box tests of the slab of control blocks
 * (src/core/slab.c): slots map to distinct blocks that never move, one block
 * a cache line and consecutive fresh blocks on different pairs of lines,
 * host memory exhaustion answered with no block, huge pages advised for the
 * large chunks only.
 *
 * Must never depend on a registry (the slab is driven alone) or on the
 * machine having transparent huge pages (without them that test skips).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/internal.h"

static void slab_slots_map_to_distinct_stable_blocks(void **state) {
    (void)state;
    bh__slab slab;
    bh__slab_init(&slab);
    assert_null(bh__slab_at(&slab, 1));
    enum { N = 5000 };
    static bh__block *seen[N + 1];
    uint32_t total = 0;
    while (total < N) {
        bh__block *head;
        uint32_t got = bh__slab_take_fresh(&slab, 100, &head);
        assert_true(got > 0);
        for (bh__block *b = head; b != NULL; b = bh__block_next_free(b)) {
            uint32_t slot = bh__block_slot(b);
            /* Slot 0 and the rest of its pair of lines are never handed out. */
            assert_true(slot >= BH__BLOCKS_PER_PAIR && slot <= N + 100);
            assert_ptr_equal(bh__slab_at(&slab, slot), b);
            /* No block spans two cache lines (one miss per block). */
            assert_int_equal((uintptr_t)b % sizeof(bh__block), 0);
            /* Consecutive fresh blocks never share a line, nor a pair of
             * lines (the adjacent-line prefetcher's unit). */
            const bh__block *next = bh__block_next_free(b);
            if (next != NULL)
                assert_int_not_equal((uintptr_t)b / (2 * BH__CACHE_LINE),
                                     (uintptr_t)next / (2 * BH__CACHE_LINE));
            if (slot <= N) {
                assert_null(seen[slot]);
                seen[slot] = b;
            }
            total++;
        }
    }
    /* Earlier blocks did not move while later chunks were added. */
    for (uint32_t s = BH__BLOCKS_PER_PAIR; s <= N; s++)
        assert_ptr_equal(bh__slab_at(&slab, s), seen[s]);
    /* Every slot of every chunk so far decodes (the directory holds a base,
     * not the chunk's address) to a block inside that chunk's allocation,
     * and a chunk's blocks are consecutive. */
    for (uint32_t c = 0; c < BH__SLAB_CHUNKS && slab.raw[c] != NULL; c++) {
        uint32_t first = bh__slab_chunk_first(c), n = BH__SLAB_BASE << c;
        const char *lo = slab.raw[c], *hi = lo + (size_t)n * sizeof(bh__block) + 2 * BH__CACHE_LINE;
        for (uint32_t s = c == 0 ? 1 : first; s < first + n; s++) {
            const bh__block *b = bh__slab_at(&slab, s);
            assert_non_null(b);
            assert_true((const char *)b >= lo && (const char *)(b + 1) <= hi);
            if (s > first)
                assert_ptr_equal(b, bh__slab_at(&slab, s - 1) + 1);
        }
    }
    /* Slots far beyond anything handed out have no memory, nor do the first
     * and last slots of the first chunk not made yet. */
    assert_null(bh__slab_at(&slab, BH__SLOT_MASK));
    uint32_t absent = bh__slab_chunk_of(slab.next_fresh - 1) + 1;
    assert_null(bh__slab_at(&slab, bh__slab_chunk_first(absent)));
    assert_null(bh__slab_at(&slab, bh__slab_chunk_first(absent + 1) - 1));
    bh__slab_fini(&slab);
}

static void slab_reports_host_memory_exhaustion(void **state) {
    (void)state;
    bh__slab slab;
    bh__slab_init(&slab);
    bh__hostmem_fail_at(1);
    bh__block *head;
    assert_int_equal(bh__slab_take_fresh(&slab, 4, &head), 0);
    assert_null(head);
    assert_int_equal(bh__slab_take_fresh(&slab, 4, &head), 4);
    bh__slab_fini(&slab);
}

/* The VmFlags line of the mapping that contains p, from /proc/self/smaps
 * (empty if not found). */
static void vm_flags_of(const void *p, char *out, size_t len) {
    out[0] = '\0';
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL)
        return;
    char line[512];
    int inside = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, len, "%s", line);
            break;
        }
    }
    fclose(f);
}

/* Chunks of 2 MiB and more are touched at random: the slab asks for
 * transparent huge pages over their aligned part (one TLB entry per 2 MiB).
 * The kernel marks advised mappings "hg" in smaps; without THP support the
 * advice cannot be given, and there is nothing to check. */
static void large_slab_chunks_are_advised_to_use_huge_pages(void **state) {
    (void)state;
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK) != 0)
        skip();
    bh__slab slab;
    bh__slab_init(&slab);
    /* Up to chunk 11 (4 MiB of blocks): it holds a whole aligned 2 MiB. */
    const uint32_t c = 11;
    while (slab.raw[c] == NULL) {
        bh__block *head;
        assert_true(bh__slab_take_fresh(&slab, 4096, &head) > 0);
    }
    const uintptr_t huge = BH__HUGE_PAGE;
    uintptr_t aligned = ((uintptr_t)slab.raw[c] + huge - 1) & ~(huge - 1);
    char flags[512];
    vm_flags_of((const void *)aligned, flags, sizeof(flags));
    assert_non_null(strstr(flags, " hg"));
    /* Small chunks are left alone: chunk 0 shares the heap with everything. */
    vm_flags_of(slab.raw[0], flags, sizeof(flags));
    assert_null(strstr(flags, " hg"));
    bh__slab_fini(&slab);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slab_slots_map_to_distinct_stable_blocks),
        cmocka_unit_test(slab_reports_host_memory_exhaustion),
        cmocka_unit_test(large_slab_chunks_are_advised_to_use_huge_pages),
    };
    return cmocka_run_group_tests_name("slab", tests, NULL, NULL);
}
