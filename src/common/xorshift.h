/*
 * xorshift.h - xorshift64* (Vigna), the one pseudo-random sequence of the
 * benchmark, the demo and the stress tests.
 *
 * Owns: a fast, seedable, reproducible sequence (the same seed gives the
 * same workload in every run, so a failure can be replayed).
 * Must never: be used where an attacker must not predict the output (it is
 * not a cryptographic generator), or be seeded with 0 (it stays 0).
 */
#ifndef BH_XORSHIFT_H
#define BH_XORSHIFT_H

#include <stdint.h>

/* The next number of the sequence whose state is *s (never 0). */
static inline uint64_t bh__xorshift64s(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

#endif /* BH_XORSHIFT_H */
