/*
 * checker.h - a checking device allocator and reporter for the tests.
 *
 * The allocator hands out addresses base + i * align (i < slots) per device,
 * LIFO, so a freed address comes straight back, the way the bug shows up in
 * the field. The reporter keeps, per (device, address), whether an ALLOC is
 * outstanding. Together they record every violation of "exactly once":
 * a free of something not allocated, a second free, a FREE without its ALLOC,
 * an ALLOC of an address already reported live, sequence numbers going back
 * for one address, and (checker_leaks) anything left at the end.
 * Devices at or above adopt_from are "adopted": their addresses come from
 * bh_intern, not from the allocator; their free must follow an ALLOC report.
 */
#ifndef BH_TEST_CHECKER_H
#define BH_TEST_CHECKER_H

#include <stddef.h>
#include <stdint.h>

#include "bufhandle/bufhandle.h"

typedef struct checker checker;

typedef struct checker_event {
    bh_event_kind kind;
    uint32_t device;
    uint64_t address;
    uint64_t seq;
} checker_event;

checker *checker_new(uint32_t devices, uint32_t adopt_from, uint32_t slots, uint64_t base, uint64_t align);
void checker_free(checker *c);
bh_allocator checker_allocator(checker *c);
bh_reporter checker_reporter(checker *c);
bh_config checker_config(checker *c);

/* The allocator's k-th call from now fails (k >= 1); 0 disarms. */
void checker_fail_alloc_at(checker *c, long k);
/* Make the next alloc return this address (even if live: simulates a buggy
 * allocator). */
void checker_force_next(checker *c, uint64_t address);

uint64_t checker_errors(const checker *c);         /* violations so far */
const char *checker_first_error(const checker *c); /* "" if none */
uint64_t checker_leaks(const checker *c);          /* allocated or reported live now */
uint64_t checker_alloc_calls(const checker *c);
uint64_t checker_free_calls(const checker *c);
uint64_t checker_alloc_reports(const checker *c);
uint64_t checker_free_reports(const checker *c);
/* Destroys reg, then the checker. Returns 0 if the registry was empty and
 * nothing was violated or left over, else -1. */
int checker_finish(checker *c, bh_registry *reg);
/* Up to the first 256 events, in the order the reporter received them. */
size_t checker_events(const checker *c, const checker_event **events);

/* Reads "[total_ops [threads]]" for the stress tests. Returns 0, or -1 (and
 * prints the usage) when a value is not a positive number or threads > 64. */
int stress_args(int argc, char **argv, const char *name, long *total_ops, int *threads);

#endif
