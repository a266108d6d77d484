/*
 * reporter.c - a program that reports to a bh-trackd through the library's
 * default reporter (BH_TRACK_SOCKET) and knows what it sent: ALLOCS
 * allocations of 4 KiB on device DEVICE, the first FREES of them released,
 * the rest left live at exit (the daemon then counts them as leaks).
 *
 *   reporter DEVICE ALLOCS FREES
 *
 * Built against an installed library (the package test, with CMake and with
 * pkg-config) and in the tree (the two-host Prometheus test). Public API only.
 */
#include <bufhandle/bufhandle.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Device memory: a bump allocator; addresses are never reused here. */
static int bump_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)device;
    uint64_t *next = ctx;
    *address = *next;
    *next += size;
    return 0;
}

static void bump_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)address, (void)size;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: reporter DEVICE ALLOCS FREES\n");
        return 2;
    }
    unsigned device = (unsigned)strtoul(argv[1], NULL, 10);
    size_t allocs = strtoul(argv[2], NULL, 10), frees = strtoul(argv[3], NULL, 10);
    if (frees > allocs || allocs > 1000000)
        return 2;
    uint64_t next = 0x10000000;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){bump_alloc, bump_free, &next};
    bh_registry *reg;
    bh_handle *h = calloc(allocs ? allocs : 1, sizeof(*h));
    if (h == NULL || bh_registry_create(&cfg, &reg) != BH_OK)
        return 1;
    for (size_t k = 0; k < allocs; k++)
        if (bh_alloc(reg, BH_DOMAIN(device, BH_MEM_DRAM), 4096, &h[k]) != BH_OK)
            return 1;
    for (size_t k = 0; k < frees; k++)
        if (bh_release(reg, h[k]) != BH_OK)
            return 1;
    /* The live ones stay live: exit without releasing them or destroying the
     * registry (the reporter flushes at exit). */
    printf("reporter: device %u, %zu ALLOC, %zu FREE, %zu live at exit\n", device, allocs, frees,
           allocs - frees);
    free(h);
    return 0;
}
