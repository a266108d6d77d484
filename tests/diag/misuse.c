/*
 * misuse.c - a small program that misuses debug tokens one way, so that
 * test_diag_checkers can run it under valgrind's memcheck and in an ASan build
 * and check that the checker itself reports the misuse, with its own stacks.
 *
 *   diag_misuse double    a token released twice
 *   diag_misuse unknown   a token that was never issued is released
 *   diag_misuse leak      a token is never released (the registry is kept)
 *   diag_misuse clean     correct use: the checker must report nothing
 */
#include <stdio.h>
#include <string.h>

#include "bufhandle/bufhandle.h"

static int dev_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)ctx;
    (void)device;
    (void)size;
    *address = 0x40000;
    return 0;
}

static void dev_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx;
    (void)device;
    (void)address;
    (void)size;
}

static bh_registry *reg; /* reachable to the end: only tokens can leak */

/* Never inlined: the checkers' stacks must name them. */
__attribute__((noinline)) static bh_handle take_the_token(bh_handle owner) {
    bh_handle t;
    if (bh_dup(reg, owner, &t) != BH_OK)
        t = BH_HANDLE_NULL;
    return t;
}
__attribute__((noinline)) static bh_status release_it_first(bh_handle t) { return bh_release(reg, t); }
__attribute__((noinline)) static bh_status release_it_again(bh_handle t) { return bh_release(reg, t); }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "clean";
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){dev_alloc, dev_free, NULL};
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_DEBUG_REFS | BH_CONFIG_STACKS;
    bh_handle owner, t;
    if (bh_registry_create(&cfg, &reg) != BH_OK || bh_alloc(reg, 1, 4096, &owner) != BH_OK)
        return 2;
    t = take_the_token(owner);
    if (strcmp(mode, "leak") == 0) {
        /* t is dropped on the floor: nothing else refers to it. */
        printf("leaked\n");
        return 0;
    }
    if (release_it_first(t) != BH_OK)
        return 3;
    if (strcmp(mode, "double") == 0 && release_it_again(t) != BH_ESTALE)
        return 4;
    if (strcmp(mode, "unknown") == 0) {
        bh_handle forged = {t.bits + 0x1000};
        if (release_it_again(forged) != BH_ESTALE)
            return 5;
    }
    if (bh_release(reg, owner) != BH_OK || bh_registry_destroy(reg) != BH_OK)
        return 6;
    printf("done\n");
    return 0;
}
