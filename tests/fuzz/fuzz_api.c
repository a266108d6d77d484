/*
 * fuzz_api.c - API operation sequences, checked against the reference model
 * (tests/support/model.c): every input is a program of 3-byte operations
 * (alloc, intern, lookup, retain, release, info, forced allocator results,
 * forged handles; adopt, lookup_containing, and wide ranges that overlap). After every operation the status,
 * the handle, the allocator calls and the reports must be what the model says.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bufhandle/bufhandle.h"
#include "support/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model *m = model_new(0);
    model_route route = {&m, 1};
    bh_config cfg = {0};
    cfg.allocator = model_route_allocator(&route);
    cfg.reporter = model_route_reporter(&route);
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    if (m == NULL || bh_registry_create(&cfg, &reg) != BH_OK)
        abort();
    for (size_t p = 0; p + 3 <= size && p < 3 * 300; p += 3) {
        if (model_step(m, reg, data[p], data[p + 1], data[p + 2]) != 0) {
            fprintf(stderr, "fuzz_api: %s\n", model_error(m));
            abort();
        }
    }
    if (model_finish(m, reg) != 0 || bh_registry_destroy(reg) != BH_OK) {
        fprintf(stderr, "fuzz_api: %s\n", model_error(m));
        abort();
    }
    model_free(m);
    return 0;
}
