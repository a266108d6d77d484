/* A consumer of the installed package: three aliases, one free. */
#include <bufhandle/bufhandle.h>
#include <stdio.h>
#include <string.h>

static int frees;
static int fake_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)ctx, (void)device, (void)size;
    *address = 695055872;
    return 0;
}
static void fake_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)address, (void)size;
    frees++;
}

int main(void) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){fake_alloc, fake_free, NULL};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    bh_handle a, b, c;
    if (bh_registry_create(&cfg, &reg) != BH_OK ||
        bh_alloc(reg, BH_DOMAIN(4, BH_MEM_DRAM), 4096, &a) != BH_OK ||
        bh_intern(reg, BH_DOMAIN(4, BH_MEM_DRAM), 695055872, 4096, &b) != BH_OK ||
        bh_lookup(reg, BH_DOMAIN(4, BH_MEM_DRAM), 695055872, &c) != BH_OK)
        return 1;
    bh_release(reg, b);
    bh_release(reg, a);
    bh_release(reg, c);
    if (frees != 1 || bh_registry_destroy(reg) != BH_OK)
        return 1;
    printf("consumer: bufhandle %s, %d free for 3 aliases\n", bh_version(), frees);
    return 0;
}
