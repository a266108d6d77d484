/*
 * inlined.c - a program built with -O2 whose double release happens in a
 * function inlined into main, so that test_diag_reports can check that the
 * misuse report's stack names the inlined function as its own frame (and
 * main as the next one, at the call).
 *
 * Prints "lines BUG CALL" to stdout before the culprit runs (an ASan build
 * of the library stops the program at the double release): the line of the
 * culprit release inside bug_double and the line in main that calls it. The
 * report goes to stderr.
 */
#include <stdio.h>

#include "bufhandle/bufhandle.h"

static int call_line;

/* Always inlined: at -O2 its code sits inside main, with no frame of its own. */
static inline __attribute__((always_inline)) bh_status bug_double(bh_registry *reg, bh_handle t) {
    printf("lines %d %d\n", __LINE__ + 2, call_line);
    fflush(stdout);
    bh_status st = bh_release(reg, t); /* the bug: this token was released already */
    return st;
}

int main(void) {
    bh_config cfg = {0};
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_DEBUG_REFS | BH_CONFIG_STACKS;
    bh_registry *reg;
    bh_handle owner, copy;
    if (bh_registry_create(&cfg, &reg) != BH_OK || bh_intern(reg, 0, 0x40000, 4096, &owner) != BH_OK ||
        bh_dup(reg, owner, &copy) != BH_OK || bh_release(reg, copy) != BH_OK)
        return 2;
    call_line = __LINE__ + 1;
    bh_status st = bug_double(reg, copy);
    if (st != BH_ESTALE || bh_release(reg, owner) != BH_OK || bh_registry_destroy(reg) != BH_OK)
        return 3;
    return 0;
}
