/*
 * simdev.h - a simulated multi-device memory allocator.
 *
 * Devices 0..N-1, each with two memories (DRAM and L1), each memory a range of
 * fixed-size slots (base + k * slot_size). An allocation takes one slot, so a
 * request larger than the slot size fails. Freed slots are handed out again
 * immediately (LIFO): the behaviour that makes a late duplicate free land on
 * somebody else's allocation in a real runtime.
 *
 * Lock-step mode (a mesh): one address space per memory for all devices. An
 * allocation on any device reserves the address on every device; each device's
 * copy is freed on its own, and the address returns to the pool when every
 * device has freed it.
 *
 * It detects and counts what a real allocator would corrupt itself with: a free
 * of an address that is not allocated on that device (double free), and a free
 * of an address it never hands out (unknown). Thread-safe.
 *
 * Domain keys: a registry's device argument is bh_sim_domain(device, memory),
 * which is the library's BH_DOMAIN(device, BH_MEM_DRAM or BH_MEM_L1), so DRAM
 * and L1 at one numeric address are different allocations and every tool shows
 * the domain as device and memory kind.
 */
#ifndef BUFHANDLE_SIMDEV_H
#define BUFHANDLE_SIMDEV_H

#include <stdint.h>

#include "bufhandle/bufhandle.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bh_sim_mem { BH_SIM_DRAM = BH_MEM_DRAM, BH_SIM_L1 = BH_MEM_L1 } bh_sim_mem;

static inline uint32_t bh_sim_domain(uint32_t device, bh_sim_mem mem) { return BH_DOMAIN(device, mem); }
static inline uint32_t bh_sim_domain_device(uint32_t domain) { return BH_DOMAIN_DEVICE(domain); }
/* Other memory kinds than DRAM and L1 are not simulated: alloc fails, free
 * counts them as unknown. */
#ifdef __cplusplus /* clang++ flags a C cast here, inside extern "C" too */
static inline bh_sim_mem bh_sim_domain_mem(uint32_t domain) {
    return static_cast<bh_sim_mem>(BH_DOMAIN_KIND(domain));
}
#else
static inline bh_sim_mem bh_sim_domain_mem(uint32_t domain) { return (bh_sim_mem)BH_DOMAIN_KIND(domain); }
#endif

typedef struct bh_sim_config {
    uint32_t devices;  /* >= 1 */
    int lockstep;      /* 1: one address space per memory across devices (a mesh) */
    uint64_t base[2];  /* first address of DRAM, L1 */
    uint64_t slot[2];  /* slot size (and alignment) of DRAM, L1; power of two */
    uint32_t slots[2]; /* slots per device of DRAM, L1 */
} bh_sim_config;

typedef struct bh_sim_stats {
    uint64_t allocs; /* per device: a lock-step allocation counts once per device */
    uint64_t alloc_failures, frees;
    uint64_t double_frees;                /* free of an address not allocated on that device */
    uint64_t unknown_frees;               /* free of an address the device never hands out */
    uint64_t live_bytes, peak_live_bytes; /* reserved (slot-sized) bytes over all devices */
} bh_sim_stats;

typedef struct bh_sim bh_sim;

/* A default mesh: DRAM slots of 64 MiB from 0x20000000, L1 slots of 64 KiB from
 * 0x10000; slots per device 1024 and 64. */
bh_sim_config bh_sim_default_config(uint32_t devices, int lockstep);

/* Errors: BH_EINVAL (NULL, zero devices/slots, slot size not a power of two),
 * BH_ENOMEM. */
bh_status bh_sim_create(const bh_sim_config *cfg, bh_sim **out);
void bh_sim_destroy(bh_sim *sim);

/* Raw allocator calls. alloc returns 0 or non-zero (full, too large, bad
 * domain). */
int bh_sim_alloc(bh_sim *sim, uint32_t domain, uint64_t size, uint64_t *address);
void bh_sim_free(bh_sim *sim, uint32_t domain, uint64_t address, uint64_t size);

/* The same two as a bh_allocator for a registry. */
bh_allocator bh_sim_allocator(bh_sim *sim);

void bh_sim_stats_get(bh_sim *sim, bh_sim_stats *out);
/* Addresses allocated now, over every device (0 at the end of a clean run). */
uint64_t bh_sim_live_allocations(bh_sim *sim);

#ifdef __cplusplus
}
#endif

#endif
