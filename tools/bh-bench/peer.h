/*
 * peer.h - the C++ peer bh-bench measures bufhandle against: what a C++
 * runtime author writes instead of a handle library.
 *
 * Owns: a std::shared_ptr<Block> per live allocation, interned through one
 * mutex-guarded std::unordered_map of std::weak_ptr keyed by (device,
 * address); the last shared_ptr's deleter erases the map entry and frees
 * the Block. A reference is a shared_ptr, held in a peer_ref's bytes.
 * Must never: call into bufhandle, or cut a corner the idiom does not
 * (every reference is a real shared_ptr, every creation allocates a Block
 * and its control block, every last release takes the map's mutex).
 */
#ifndef BH_BENCH_PEER_H
#define BH_BENCH_PEER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A std::shared_ptr<Block> (two pointers), stored in C memory. Empty when
 * zeroed. */
typedef struct peer_ref {
    void *p[2];
} peer_ref;

typedef struct peer_map peer_map;
peer_map *peer_create(size_t expect);
/* Every reference must have been released. */
void peer_destroy(peer_map *m);
/* A reference to the Block at (device, address): the live one if the map
 * has it, else a new Block of size bytes. *out must be empty. */
void peer_intern(peer_map *m, uint32_t device, uint64_t address, uint64_t size, peer_ref *out);
/* A reference to the live Block at (device, address): 1, or 0 if none. */
int peer_lookup(peer_map *m, uint32_t device, uint64_t address, peer_ref *out);
/* A view into the Block r names: an aliasing shared_ptr (the idiom's view:
 * it shares r's count and touches no map). *out must be empty. */
void peer_view(const peer_ref *r, peer_ref *out);
/* Drops r (leaves it empty); the last reference erases and frees. */
void peer_release(peer_ref *r);

#ifdef __cplusplus
}
#endif

#endif
