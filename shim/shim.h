/*
 * shim.h - the legacy raw-Buffer API, re-implemented on bufhandle handles.
 *
 * A runtime ported from raw Buffer objects keeps its call sites' shape:
 *
 *   old (raw object)                         new (shim)
 *   Buffer::create(device, size, type)       bh_shim_buffer_create(dev, size, mem, &b)
 *   Buffer::create(device, addr, size, type) bh_shim_buffer_create_at(dev, addr, size, mem, &b)
 *   (an address the caller allocated)        bh_shim_buffer_adopt(dev, addr, size, mem, &b)
 *   buffer->view(offset, size)               bh_shim_buffer_view(b, offset, size, &v)
 *   (a view at an address, no parent object) bh_shim_buffer_view_at(dev, addr, size, mem, &v)
 *   buffer->deallocate()                     bh_shim_buffer_deallocate(b)
 *   delete buffer                            bh_shim_buffer_destroy(b)
 *   buffer->address() / size() / device()    bh_shim_buffer_address(b) / _size / _device
 *   (nothing)                                bh_shim_buffer_handle(b): port the call site
 *
 * Each shim object holds exactly one reference to the control block of its
 * allocation: a buffer created at the address of a live buffer, or a view, is
 * an alias, not a second owner. Deallocating an object drops its reference
 * (idempotent per object, also when two threads race on it); the allocator free
 * and the FREE report run once, when the last object lets go, whatever the
 * order and whichever threads.
 *
 * A mesh of N devices with a lock-step allocator (see simdev.h) is represented
 * as in the runtime we port from: one backing buffer plus one buffer per device
 * at the same address. With the shim the backing buffer and device 0's buffer
 * are two references to one block, and every device's allocation is freed and
 * reported exactly once.
 *
 * Objects are not internally locked beyond deallocate: like the raw objects
 * they replace, one object is used by one thread at a time (but different
 * objects naming one allocation may live on different threads).
 */
#ifndef BUFHANDLE_SHIM_H
#define BUFHANDLE_SHIM_H

#include <stdint.h>

#include "bufhandle/bufhandle.h"
#include "simdev.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bh_shim_device bh_shim_device;
typedef struct bh_shim_buffer bh_shim_buffer;
typedef struct bh_shim_mesh bh_shim_mesh;
typedef struct bh_shim_mesh_buffer bh_shim_mesh_buffer;

/* A device is a registry plus a device id; its memories are the domains
 * bh_sim_domain(id, mem) = BH_DOMAIN(id, mem). Errors: BH_EINVAL, BH_ENOMEM. */
bh_status bh_shim_device_open(bh_registry *reg, uint32_t device_id, bh_shim_device **out);
/* Holds no reference: close it before destroying the registry, like every shim
 * object (docs/porting.md, "Shutdown order"). NULL does nothing. */
void bh_shim_device_close(bh_shim_device *dev);
uint32_t bh_shim_device_id(const bh_shim_device *dev);

/* Allocates: bh_alloc on the device's memory. Errors: as bh_alloc. */
bh_status bh_shim_buffer_create(bh_shim_device *dev, uint64_t size, bh_sim_mem mem, bh_shim_buffer **out);
/* A buffer at an existing address: bh_intern. An alias if the address is live
 * (size must fit: BH_ERANGE), else it owns the allocation from now on.
 * BH_EOVERLAP: the range meets a live buffer that starts elsewhere; for a
 * buffer inside that one, take bh_shim_buffer_view of it. */
bh_status bh_shim_buffer_create_at(bh_shim_device *dev, uint64_t address, uint64_t size, bh_sim_mem mem,
                                   bh_shim_buffer **out);
/* A buffer at an address this code has just allocated itself from the
 * registry allocator's memory (a lock-step allocator serving every device of a
 * mesh): bh_adopt. It owns the allocation; unlike create_at it never answers
 * BH_EBUSY when the previous block of that address is still finishing its
 * free. Errors: as bh_adopt (BH_EEXIST: the address is live). */
bh_status bh_shim_buffer_adopt(bh_shim_device *dev, uint64_t address, uint64_t size, bh_sim_mem mem,
                               bh_shim_buffer **out);
/* A view of [offset, offset + size) of a buffer: one more reference to the
 * buffer's allocation. Errors: BH_EINVAL, BH_ERANGE (outside the buffer),
 * BH_ESTALE (the buffer was deallocated). */
bh_status bh_shim_buffer_view(bh_shim_buffer *buf, uint64_t offset, uint64_t size, bh_shim_buffer **out);
/* A view of [address, address + size) inside the live buffer that contains
 * address, for a runtime that has the address and not that buffer's object:
 * bh_lookup_containing, one more reference to that allocation (create_at
 * there is BH_EOVERLAP). Errors: BH_EINVAL (NULL, size 0, or the registry
 * has BH_CONFIG_NO_OVERLAP_CHECK), BH_ENOTFOUND (no live buffer contains
 * address), BH_ERANGE (the view runs past that buffer's end), BH_EOVERFLOW. */
bh_status bh_shim_buffer_view_at(bh_shim_device *dev, uint64_t address, uint64_t size, bh_sim_mem mem,
                                 bh_shim_buffer **out);
/* Drops this object's reference. BH_OK also when already deallocated. */
bh_status bh_shim_buffer_deallocate(bh_shim_buffer *buf);
/* Deallocates if needed and frees the object. NULL is BH_EINVAL. */
bh_status bh_shim_buffer_destroy(bh_shim_buffer *buf);

/* The object's own range: a view answers its allocation's address + offset and
 * its own size (the allocation's are bh_info_get of bh_shim_buffer_handle).
 * They keep answering after deallocate. */
uint64_t bh_shim_buffer_address(const bh_shim_buffer *buf);
uint64_t bh_shim_buffer_size(const bh_shim_buffer *buf);
uint32_t bh_shim_buffer_device(const bh_shim_buffer *buf);
bh_sim_mem bh_shim_buffer_mem(const bh_shim_buffer *buf);
int bh_shim_buffer_is_allocated(const bh_shim_buffer *buf);
/* The handle behind the object (null once deallocated). No reference is added:
 * to keep the allocation beyond the object's life, take a reference of your
 * own with bh_dup(reg, h, &mine) and release mine (not h) when done; under
 * BH_DEBUG=refs only bh_dup gives the new holder a token of its own (see
 * docs/porting.md). */
bh_handle bh_shim_buffer_handle(const bh_shim_buffer *buf);

/* A mesh of devices 0..devices-1 on one registry whose allocator is lock-step. */
bh_status bh_shim_mesh_open(bh_registry *reg, uint32_t devices, bh_shim_mesh **out);
void bh_shim_mesh_close(bh_shim_mesh *mesh);
uint32_t bh_shim_mesh_devices(const bh_shim_mesh *mesh);
bh_shim_device *bh_shim_mesh_device(bh_shim_mesh *mesh, uint32_t i);

/* Backing buffer allocated on device 0, then a buffer at its address on every
 * device (device 0's is an alias of the backing buffer). */
bh_status bh_shim_mesh_buffer_create(bh_shim_mesh *mesh, uint64_t size, bh_sim_mem mem,
                                     bh_shim_mesh_buffer **out);
bh_shim_buffer *bh_shim_mesh_buffer_backing(bh_shim_mesh_buffer *mb);
bh_shim_buffer *bh_shim_mesh_buffer_device(bh_shim_mesh_buffer *mb, uint32_t i);
/* Moves the objects out to the caller, who destroys each when and where it
 * likes: objects[0] the backing buffer, objects[1 + i] device i's buffer
 * (room for 1 + devices). Frees the container. */
void bh_shim_mesh_buffer_detach(bh_shim_mesh_buffer *mb, bh_shim_buffer **objects);
/* Destroys every device buffer and the backing buffer, in that order. */
bh_status bh_shim_mesh_buffer_destroy(bh_shim_mesh_buffer *mb);

#ifdef __cplusplus
}
#endif

#endif
