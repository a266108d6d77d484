/*
 * fmix.h - MurmurHash3's 64-bit finaliser, shared by the library's key hash
 * and bh-trackd's tables (tools/track).
 *
 * Owns: one bijective mixer that spreads every input bit over the whole word.
 * Must never: be the only defence of a table whose keys an attacker chooses
 * (it is public and invertible: mix a secret in first, as tools/track does).
 */
#ifndef BH_FMIX_H
#define BH_FMIX_H

#include <stdint.h>

static inline uint64_t bh__fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

#endif /* BH_FMIX_H */
