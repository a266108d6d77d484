/*
 * shim.c - see shim.h.
 *
 * Owns: the legacy-shaped objects and the rule "one object, one reference".
 * Must never: free or report anything itself: every free and report goes
 * through the registry, which does it once per allocation.
 */
#include "shim.h"

#include <atomic_ops.h>
#include <stdlib.h>

struct bh_shim_device {
    bh_registry *reg;
    uint32_t id;
};

struct bh_shim_buffer {
    bh_registry *reg;
    AO_t handle_bits; /* ATOMIC: the reference this object holds; 0 once deallocated */
    uint32_t device;
    bh_sim_mem mem;
    uint64_t address, size;
};

struct bh_shim_mesh {
    bh_registry *reg;
    uint32_t devices;
    bh_shim_device *dev; /* [devices] */
};

struct bh_shim_mesh_buffer {
    bh_shim_mesh *mesh;
    bh_shim_buffer *backing;
    bh_shim_buffer **per_device; /* [mesh->devices] */
};

/* ------------------------------------------------------------ devices */

bh_status bh_shim_device_open(bh_registry *reg, uint32_t device_id, bh_shim_device **out) {
    if (reg == NULL || out == NULL)
        return BH_EINVAL;
    bh_shim_device *dev = malloc(sizeof(*dev));
    if (dev == NULL)
        return BH_ENOMEM;
    dev->reg = reg;
    dev->id = device_id;
    *out = dev;
    return BH_OK;
}

void bh_shim_device_close(bh_shim_device *dev) { free(dev); }
uint32_t bh_shim_device_id(const bh_shim_device *dev) { return dev->id; }

/* ------------------------------------------------------------ buffers */

/* Wraps a reference the caller already holds into a new object; on host
 * memory failure the reference is dropped again. */
static bh_status wrap(bh_registry *reg, bh_handle h, uint32_t device, bh_sim_mem mem, uint64_t address,
                      uint64_t size, bh_shim_buffer **out) {
    bh_shim_buffer *b = malloc(sizeof(*b));
    if (b == NULL) {
        bh_release(reg, h);
        return BH_ENOMEM;
    }
    b->reg = reg;
    AO_store(&b->handle_bits, (AO_t)h.bits); /* relaxed: the object is not shared yet */
    b->device = device;
    b->mem = mem;
    b->address = address;
    b->size = size;
    *out = b;
    return BH_OK;
}

/* The allocation of a reference the caller holds (it cannot be stale); on
 * failure the reference is dropped. */
static bh_status info_of_held(bh_registry *reg, bh_handle h, bh_info *info) {
    bh_status st = bh_info_get(reg, h, info);
    if (st != BH_OK)
        bh_release(reg, h);
    return st;
}

bh_status bh_shim_buffer_create(bh_shim_device *dev, uint64_t size, bh_sim_mem mem, bh_shim_buffer **out) {
    if (dev == NULL || out == NULL)
        return BH_EINVAL;
    bh_handle h;
    bh_status st = bh_alloc(dev->reg, bh_sim_domain(dev->id, mem), size, &h);
    bh_info info;
    if (st != BH_OK || (st = info_of_held(dev->reg, h, &info)) != BH_OK)
        return st;
    return wrap(dev->reg, h, dev->id, mem, info.address, size, out);
}

/* A buffer at a caller-given address, through bh_intern or bh_adopt (same
 * signature, different ownership rule). */
typedef bh_status (*at_address_fn)(bh_registry *, uint32_t, uint64_t, uint64_t, bh_handle *);

static bh_status buffer_at(at_address_fn fn, bh_shim_device *dev, uint64_t address, uint64_t size,
                           bh_sim_mem mem, bh_shim_buffer **out) {
    if (dev == NULL || out == NULL)
        return BH_EINVAL;
    bh_handle h;
    bh_status st = fn(dev->reg, bh_sim_domain(dev->id, mem), address, size, &h);
    if (st != BH_OK)
        return st;
    return wrap(dev->reg, h, dev->id, mem, address, size, out);
}

bh_status bh_shim_buffer_create_at(bh_shim_device *dev, uint64_t address, uint64_t size, bh_sim_mem mem,
                                   bh_shim_buffer **out) {
    return buffer_at(bh_intern, dev, address, size, mem, out);
}

bh_status bh_shim_buffer_adopt(bh_shim_device *dev, uint64_t address, uint64_t size, bh_sim_mem mem,
                               bh_shim_buffer **out) {
    return buffer_at(bh_adopt, dev, address, size, mem, out);
}

bh_status bh_shim_buffer_view(bh_shim_buffer *buf, uint64_t offset, uint64_t size, bh_shim_buffer **out) {
    if (buf == NULL || out == NULL || size == 0)
        return BH_EINVAL;
    if (offset > buf->size || size > buf->size - offset)
        return BH_ERANGE;
    /* Relaxed: this object's user is this thread (see shim.h); only a racing
     * deallocate may zero it, and bh_retain checks the handle anyway. */
    bh_handle h = {(uint64_t)AO_load(&buf->handle_bits)};
    if (bh_handle_is_null(h))
        return BH_ESTALE;
    /* bh_dup, not bh_retain: under debug references each object owns its
     * own token, so a release through the wrong object is caught there. */
    bh_handle v;
    bh_status st = bh_dup(buf->reg, h, &v);
    if (st != BH_OK)
        return st;
    return wrap(buf->reg, v, buf->device, buf->mem, buf->address + offset, size, out);
}

bh_status bh_shim_buffer_view_at(bh_shim_device *dev, uint64_t address, uint64_t size, bh_sim_mem mem,
                                 bh_shim_buffer **out) {
    if (dev == NULL || out == NULL || size == 0)
        return BH_EINVAL;
    bh_handle h;
    bh_status st = bh_lookup_containing(dev->reg, bh_sim_domain(dev->id, mem), address, &h);
    bh_info info;
    if (st != BH_OK || (st = info_of_held(dev->reg, h, &info)) != BH_OK)
        return st;
    if (size > info.address + info.size - address) { /* address is inside the allocation: no wrap */
        bh_release(dev->reg, h);
        return BH_ERANGE;
    }
    return wrap(dev->reg, h, dev->id, mem, address, size, out);
}

bh_status bh_shim_buffer_deallocate(bh_shim_buffer *buf) {
    if (buf == NULL)
        return BH_EINVAL;
    /* Take the reference out of the object atomically, so that two threads
     * deallocating one object release it once. Full barrier: not needed for
     * the handle value itself, but cheap and keeps the object's last use on
     * this thread ordered before the release. */
    AO_t bits = AO_load(&buf->handle_bits); /* relaxed: the CAS's first guess */
    while (bits != 0) {
        AO_t seen = AO_fetch_compare_and_swap_full(&buf->handle_bits, bits, 0);
        if (seen == bits)
            return bh_release(buf->reg, (bh_handle){(uint64_t)bits});
        bits = seen;
    }
    return BH_OK;
}

bh_status bh_shim_buffer_destroy(bh_shim_buffer *buf) {
    if (buf == NULL)
        return BH_EINVAL;
    bh_status st = bh_shim_buffer_deallocate(buf);
    free(buf);
    return st;
}

uint64_t bh_shim_buffer_address(const bh_shim_buffer *buf) { return buf->address; }
uint64_t bh_shim_buffer_size(const bh_shim_buffer *buf) { return buf->size; }
uint32_t bh_shim_buffer_device(const bh_shim_buffer *buf) { return buf->device; }
bh_sim_mem bh_shim_buffer_mem(const bh_shim_buffer *buf) { return buf->mem; }
/* Relaxed snapshots: they publish nothing and order nothing. */
int bh_shim_buffer_is_allocated(const bh_shim_buffer *buf) { return AO_load(&buf->handle_bits) != 0; }
bh_handle bh_shim_buffer_handle(const bh_shim_buffer *buf) {
    return (bh_handle){(uint64_t)AO_load(&buf->handle_bits)};
}

/* ------------------------------------------------------------ mesh */

bh_status bh_shim_mesh_open(bh_registry *reg, uint32_t devices, bh_shim_mesh **out) {
    if (reg == NULL || out == NULL || devices == 0)
        return BH_EINVAL;
    bh_shim_mesh *mesh = malloc(sizeof(*mesh));
    bh_shim_device *dev = calloc(devices, sizeof(*dev));
    if (mesh == NULL || dev == NULL) {
        free(mesh);
        free(dev);
        return BH_ENOMEM;
    }
    for (uint32_t i = 0; i < devices; i++)
        dev[i] = (bh_shim_device){reg, i};
    mesh->reg = reg;
    mesh->devices = devices;
    mesh->dev = dev;
    *out = mesh;
    return BH_OK;
}

void bh_shim_mesh_close(bh_shim_mesh *mesh) {
    if (mesh == NULL)
        return;
    free(mesh->dev);
    free(mesh);
}

uint32_t bh_shim_mesh_devices(const bh_shim_mesh *mesh) { return mesh->devices; }
bh_shim_device *bh_shim_mesh_device(bh_shim_mesh *mesh, uint32_t i) {
    return i < mesh->devices ? &mesh->dev[i] : NULL;
}

bh_status bh_shim_mesh_buffer_destroy(bh_shim_mesh_buffer *mb) {
    if (mb == NULL)
        return BH_EINVAL;
    bh_status first = BH_OK;
    for (uint32_t i = 0; i < mb->mesh->devices; i++) {
        if (mb->per_device[i] == NULL)
            continue;
        bh_status st = bh_shim_buffer_destroy(mb->per_device[i]);
        if (first == BH_OK)
            first = st;
    }
    if (mb->backing != NULL) {
        bh_status st = bh_shim_buffer_destroy(mb->backing);
        if (first == BH_OK)
            first = st;
    }
    free(mb->per_device);
    free(mb);
    return first;
}

/* Device i's buffer of a mesh buffer whose backing buffer was just allocated.
 * Device 0's is an alias of the backing buffer. Every other device's address
 * was reserved by that same lock-step allocation, so it is fresh: adopt it.
 * (bh_intern would answer BH_EBUSY while the previous block at that address,
 * whose free has run, is still being unlinked: 0.2 spun on that.) */
static bh_status device_buffer(bh_shim_mesh_buffer *mb, uint32_t i, uint64_t size, bh_sim_mem mem,
                               bh_shim_buffer **out) {
    uint64_t address = mb->backing->address;
    if (i == 0)
        return bh_shim_buffer_create_at(&mb->mesh->dev[0], address, size, mem, out);
    return bh_shim_buffer_adopt(&mb->mesh->dev[i], address, size, mem, out);
}

/* After a failed mesh buffer creation, the devices that got no buffer still
 * hold the lock-step allocation: claim each one and drop it at once, so the
 * allocator gets it back (reported as an ALLOC/FREE pair). Best effort: on
 * failure here the allocation stays lost, as it would without the shim. */
static void give_back_unclaimed(bh_shim_mesh_buffer *mb, uint64_t size, bh_sim_mem mem) {
    for (uint32_t i = 0; i < mb->mesh->devices; i++) {
        if (mb->per_device[i] != NULL)
            continue;
        bh_shim_buffer *b;
        if (device_buffer(mb, i, size, mem, &b) == BH_OK)
            bh_shim_buffer_destroy(b);
    }
}

bh_status bh_shim_mesh_buffer_create(bh_shim_mesh *mesh, uint64_t size, bh_sim_mem mem,
                                     bh_shim_mesh_buffer **out) {
    if (mesh == NULL || out == NULL)
        return BH_EINVAL;
    bh_shim_mesh_buffer *mb = calloc(1, sizeof(*mb));
    if (mb == NULL)
        return BH_ENOMEM;
    mb->mesh = mesh;
    mb->per_device = calloc(mesh->devices, sizeof(*mb->per_device));
    if (mb->per_device == NULL) {
        free(mb);
        return BH_ENOMEM;
    }
    bh_status st = bh_shim_buffer_create(&mesh->dev[0], size, mem, &mb->backing);
    for (uint32_t i = 0; st == BH_OK && i < mesh->devices; i++)
        st = device_buffer(mb, i, size, mem, &mb->per_device[i]);
    if (st != BH_OK) {
        if (mb->backing != NULL)
            give_back_unclaimed(mb, size, mem);
        bh_shim_mesh_buffer_destroy(mb); /* gives back whatever was made */
        return st;
    }
    *out = mb;
    return BH_OK;
}

void bh_shim_mesh_buffer_detach(bh_shim_mesh_buffer *mb, bh_shim_buffer **objects) {
    objects[0] = mb->backing;
    for (uint32_t i = 0; i < mb->mesh->devices; i++)
        objects[1 + i] = mb->per_device[i];
    free(mb->per_device);
    free(mb);
}

bh_shim_buffer *bh_shim_mesh_buffer_backing(bh_shim_mesh_buffer *mb) { return mb->backing; }
bh_shim_buffer *bh_shim_mesh_buffer_device(bh_shim_mesh_buffer *mb, uint32_t i) {
    return i < mb->mesh->devices ? mb->per_device[i] : NULL;
}
