/*
 * three_aliases.c - the bug in thirty lines, then the fix.
 *
 * Three buffer objects stand for one allocation at device 4, address
 * 695055872: the allocation, a buffer re-created at its address, and a view.
 * The old way, each object frees and reports on its own. With bufhandle each
 * is a reference to one control block.
 */
#include <bufhandle/bufhandle.h>
#include <stdio.h>
#include <string.h>

#define DEVICE BH_DOMAIN(4, BH_MEM_DRAM) /* device 4, DRAM: the memory domain the registry keys on */
#define ADDRESS 695055872ull

typedef struct sim {
    int live; /* is the address allocated? */
    int frees, double_frees;
    int free_reports, unknown_frees; /* a tracker's view: FREE of what it does not know */
    int tracked;                     /* ALLOC reported and not yet FREE'd */
} sim;

static int sim_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    sim *s = ctx;
    (void)device, (void)size;
    if (s->live)
        return 1;
    s->live = 1;
    *address = ADDRESS;
    return 0;
}

static void sim_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    sim *s = ctx;
    (void)device, (void)address, (void)size;
    s->frees++;
    if (!s->live)
        s->double_frees++;
    s->live = 0;
}

static void sim_report(void *ctx, const bh_event *ev) {
    sim *s = ctx;
    if (ev->kind == BH_EVENT_ALLOC) {
        s->tracked = 1;
        return;
    }
    s->free_reports++;
    if (!s->tracked)
        s->unknown_frees++;
    s->tracked = 0;
}

static void print_row(const char *how, const sim *s) {
    printf("%-22s %6d %13d %13d %15d\n", how, s->frees, s->double_frees, s->free_reports, s->unknown_frees);
}

int main(void) {
    printf("%-22s %6s %13s %13s %15s\n", "", "frees", "double frees", "FREE reports", "unknown FREEs");

    /* The old way: every object deallocates and reports on its own. */
    sim old;
    memset(&old, 0, sizeof(old));
    uint64_t address;
    sim_alloc(&old, DEVICE, 4096, &address);
    sim_report(&old, &(bh_event){BH_EVENT_ALLOC, DEVICE, address, 4096, 1});
    for (int object = 0; object < 3; object++) {
        sim_report(&old, &(bh_event){BH_EVENT_FREE, DEVICE, address, 4096, 2 + (uint64_t)object});
        sim_free(&old, DEVICE, address, 4096);
    }
    print_row("raw Buffer objects", &old);

    /* The handle way. */
    sim fixed;
    memset(&fixed, 0, sizeof(fixed));
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){sim_alloc, sim_free, &fixed};
    cfg.reporter = (bh_reporter){sim_report, &fixed};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    bh_handle a, b, c;
    if (bh_registry_create(&cfg, &reg) != BH_OK || bh_alloc(reg, DEVICE, 4096, &a) != BH_OK ||
        bh_intern(reg, DEVICE, ADDRESS, 4096, &b) != BH_OK ||
        bh_intern(reg, DEVICE, ADDRESS, 1024, &c) != BH_OK) {
        fprintf(stderr, "three_aliases: setup failed\n");
        return 1;
    }
    bh_release(reg, b);
    bh_release(reg, a);
    bh_release(reg, c);
    print_row("bufhandle references", &fixed);
    if (bh_registry_destroy(reg) != BH_OK)
        return 1;

    int ok = fixed.frees == 1 && fixed.double_frees == 0 && fixed.free_reports == 1 &&
             fixed.unknown_frees == 0 && old.double_frees > 0;
    printf("\n%s\n", ok ? "bufhandle: one allocation, three aliases, freed and reported exactly once."
                        : "bufhandle: UNEXPECTED RESULT");
    return ok ? 0 : 1;
}
