/*
 * model.h - an exact reference model of the bufhandle contract, for
 * differential tests (the API fuzzer, the model-based stress test).
 *
 * Operations (model_step's code byte): below 0x80, code % 8 picks alloc,
 * intern, lookup, retain, release, info, a forced allocator result, a forged
 * handle; from 0x80, (code - 0x80) % MODEL_NEW_OPS picks adopt,
 * lookup_containing at an offset, intern of a wide range, adopt of a wide
 * range (wide: reaching into the next one or two addresses, so overlaps
 * happen; the model checks them against every live range).
 *
 * A model owns a few devices (dev_base .. dev_base + MODEL_DEVS - 1) and a
 * handful of addresses on each. model_step() runs one operation on the real
 * registry and on the model and compares: the status, the handle (same
 * allocation, same handle; a new allocation never gets a live one's handle),
 * bh_info_get, the allocator calls and the reports (kind, device, address,
 * size; seq increasing). Single actor per model: several models on one
 * registry, each driven by its own thread, stay exact.
 *
 * The registry's allocator and reporter must route calls for the model's
 * devices to model_alloc / model_free / model_report (see model_route_*).
 */
#ifndef BH_TEST_MODEL_H
#define BH_TEST_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "bufhandle/bufhandle.h"

#define MODEL_DEVS 3
#define MODEL_SLOTS 6   /* addresses the fake allocator hands out per device */
#define MODEL_ADDRS 8   /* addresses operations may name (2 beyond the pool) */
#define MODEL_REGS 8    /* handle registers */
#define MODEL_NEW_OPS 4 /* operations added in 0.3 (codes 0x80 and up) */

typedef struct model model;

/* NULL on host memory failure. */
model *model_new(uint32_t dev_base);
void model_free(model *m);

/* One operation from three bytes. Returns 0, or -1 on a mismatch (then
 * model_error() says what). */
int model_step(model *m, bh_registry *reg, uint8_t code, uint8_t a, uint8_t b);
/* Releases every reference the model holds. Returns 0 or -1. */
int model_finish(model *m, bh_registry *reg);
const char *model_error(const model *m);
uint64_t model_ops(const model *m);

/* Routing: a registry shared by models[0..n-1], model i owning devices
 * i * MODEL_DEVS .. (its dev_base must be that). ctx = the route. */
typedef struct model_route {
    model **models;
    size_t n;
} model_route;
bh_allocator model_route_allocator(model_route *r);
bh_reporter model_route_reporter(model_route *r);

#endif
