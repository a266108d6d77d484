/*
 * runtime.c - bh-demo's two runtimes behind one interface, and the tracker
 * they report to.
 *
 * Raw: each Buffer object frees and reports on its own, as the original
 * runtime does. Handles: the same calls through the shim (one FREE, at the
 * last release). Both report to the in-process tracker (and through it to
 * bh-trackd).
 * Owns: the rt_ops tables, the raw buffer objects, the tracker's numbering.
 * Must never: decide what a run shows (workload.c and output.c do), or report
 * outside the tracker's order (the raw runtime's reports are numbered and
 * sent under its lock).
 */
#include <stdlib.h>

#include "demo.h"

/* ======================== Tracker (in process) ======================== */

/* Under tr->lock. */
static void tracker_record(tracker *tr, const bh_event *ev) {
    if (ev->kind == BH_EVENT_ALLOC) {
        tr->alloc_reports++;
        bh_track_on_alloc(tr->t, 1, ev->device, ev->address, ev->size, 0, 0);
    } else {
        tr->free_reports++;
        bh_track_on_free(tr->t, 1, ev->device, ev->address);
    }
}

/* The raw runtime: numbered and sent under the lock, so always in order. */
void demo_tracker_event(tracker *tr, bh_event_kind kind, uint32_t domain, uint64_t address, uint64_t size) {
    pthread_mutex_lock(&tr->lock);
    bh_event ev = {kind, domain, address, size, ++tr->seq};
    tracker_record(tr, &ev);
    if (tr->sock.report != NULL)
        tr->sock.report(tr->sock.ctx, &ev);
    if (tr->tt_fd >= 0 && demo_tt_send(tr->tt_fd, tr->tt_size, &ev) == 0)
        tr->tt_records++;
    pthread_mutex_unlock(&tr->lock);
}

/* The registry's reporter: numbered by the registry; the socket reporter
 * puts concurrent reports back in seq order itself, so it is called outside
 * our lock (a thread starved on our lock would hold up everyone's reports). */
void demo_tracker_report(void *ctx, const bh_event *ev) {
    tracker *tr = ctx;
    pthread_mutex_lock(&tr->lock);
    tracker_record(tr, ev);
    pthread_mutex_unlock(&tr->lock);
    if (tr->sock.report != NULL)
        tr->sock.report(tr->sock.ctx, ev);
}

/* ======================== Two runtimes ======================== */

/* --- raw: each object frees and reports on its own ------------------------ */

typedef struct raw_buffer {
    uint32_t domain;
    uint64_t address, size;
    int allocated;
} raw_buffer;

static raw_buffer *raw_new(uint32_t domain, uint64_t address, uint64_t size) {
    raw_buffer *b = malloc(sizeof(*b));
    if (b != NULL)
        *b = (raw_buffer){domain, address, size, 1};
    return b;
}

static int raw_mesh_create(runtime *rt, uint64_t size, bh_sim_mem mem, void **objects) {
    uint64_t address;
    uint32_t domain0 = bh_sim_domain(0, mem);
    if (bh_sim_alloc(rt->sim, domain0, size, &address) != 0)
        return -1;
    demo_tracker_event(rt->tr, BH_EVENT_ALLOC, domain0, address, size);
    objects[0] = raw_new(domain0, address, size);
    /* Per-device buffers "at the address": no allocation, no ALLOC report, but
     * each has its own allocated flag and will free and report. */
    for (uint32_t d = 0; d < rt->devices; d++)
        objects[1 + d] = raw_new(bh_sim_domain(d, mem), address, size);
    return 0;
}

static void *raw_create_at(runtime *rt, void *like, uint32_t device) {
    (void)rt;
    raw_buffer *b = like;
    return raw_new(bh_sim_domain(device, bh_sim_domain_mem(b->domain)), b->address, b->size);
}

static void *raw_view(runtime *rt, void *of, uint64_t offset, uint64_t size) {
    (void)rt;
    raw_buffer *b = of;
    raw_buffer *v = raw_new(b->domain, b->address + offset, size);
    /* The runtime frees a view through the allocation it views. */
    if (v != NULL)
        v->address = b->address;
    return v;
}

static void raw_destroy(runtime *rt, void *obj) {
    raw_buffer *b = obj;
    if (b == NULL)
        return;
    if (b->allocated) { /* per-object flag: cannot see the other objects */
        demo_tracker_event(rt->tr, BH_EVENT_FREE, b->domain, b->address, b->size);
        bh_sim_free(rt->sim, b->domain, b->address, b->size);
        b->allocated = 0;
    }
    free(b);
}

const rt_ops demo_raw_ops = {raw_mesh_create, raw_create_at, raw_view, raw_destroy};

/* --- handles: the same calls through the shim ----------------------------- */

static int shim_mesh_create(runtime *rt, uint64_t size, bh_sim_mem mem, void **objects) {
    bh_shim_mesh_buffer *mb;
    if (bh_shim_mesh_buffer_create(rt->mesh, size, mem, &mb) != BH_OK)
        return -1;
    /* The objects leave the container so that they can die in any order. */
    bh_shim_mesh_buffer_detach(mb, (bh_shim_buffer **)objects);
    return 0;
}

static void *shim_create_at(runtime *rt, void *like, uint32_t device) {
    bh_shim_buffer *b = like, *out;
    if (bh_shim_buffer_create_at(bh_shim_mesh_device(rt->mesh, device), bh_shim_buffer_address(b),
                                 bh_shim_buffer_size(b), bh_shim_buffer_mem(b), &out) != BH_OK)
        return NULL;
    return out;
}

static void *shim_view(runtime *rt, void *of, uint64_t offset, uint64_t size) {
    (void)rt;
    bh_shim_buffer *out;
    return bh_shim_buffer_view(of, offset, size, &out) == BH_OK ? out : NULL;
}

static void shim_destroy(runtime *rt, void *obj) {
    (void)rt;
    if (obj != NULL)
        bh_shim_buffer_destroy(obj);
}

const rt_ops demo_shim_ops = {shim_mesh_create, shim_create_at, shim_view, shim_destroy};
