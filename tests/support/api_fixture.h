/*
 * api_fixture.h - the registry the API tests (test_api*.c) run against: a
 * checker's allocator and reporter behind forwarding callbacks, with hooks
 * that call the API from inside the callbacks.
 *
 * Owns: the fixture and its setup/teardown. Must never: hide a failure
 * (teardown checks every allocation was freed and reported exactly once).
 */
#ifndef BH_TEST_API_FIXTURE_H
#define BH_TEST_API_FIXTURE_H

#include <stdint.h>

#include "bufhandle/bufhandle.h"
#include "support/checker.h"

#define BASE 0x10000000ull
#define ALIGN 0x1000ull

typedef struct fixture {
    checker *chk;
    bh_registry *reg;
    /* Hooks run inside the callbacks, to show callbacks may call the API. */
    void (*on_free_report)(struct fixture *f, const bh_event *ev);
    void (*on_allocator_free)(struct fixture *f, uint32_t device, uint64_t address);
    bh_status hook_status[4];
    bh_handle hook_handle;
    int hook_calls;
} fixture;

/* cmocka setup and teardown: devices 0-2 allocate, 3 is adopted. */
int api_setup(void **state);
int api_teardown(void **state);
bh_stats stats_of(bh_registry *reg);
/* A registry of its own with these flags and nothing else (no allocator,
 * no reporter): the cases that need a configuration the fixture has not. */
bh_registry *registry_with(uint32_t flags);

#define T(name) cmocka_unit_test_setup_teardown(name, api_setup, api_teardown)

#endif /* BH_TEST_API_FIXTURE_H */
