/*
 * sat.h - saturating sums of 64-bit counts, shared by bh-trackd and its
 * tracker (tools/track).
 *
 * Owns: one addition that stops at UINT64_MAX instead of wrapping, for
 * sums of counts each within its bound whose total is not (many clients,
 * devices or processes).
 * Must never: be used where the exact value matters past 2^64 - 1 (a sum
 * that must come back down exactly after subtractions carries into a
 * second word instead, as TT's table does).
 */
#ifndef BH_SAT_H
#define BH_SAT_H

#include <stdint.h>

static inline uint64_t bh__sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

#endif /* BH_SAT_H */
