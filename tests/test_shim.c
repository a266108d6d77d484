/*
 * test_shim.c - the legacy Buffer API on handles: every call, a view at an
 * address alone, every order of destruction of three aliases, mesh buffers,
 * and threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "shim.h"
#include "simdev.h"
#include "track.h"

typedef struct fixture {
    bh_sim *sim;
    bh_registry *reg;
    bh_track *track;
    pthread_mutex_t lock;
    bh_shim_device *dev;
    bh_shim_mesh *mesh;
} fixture;

static void on_report(void *ctx, const bh_event *ev) {
    fixture *f = ctx;
    pthread_mutex_lock(&f->lock);
    if (ev->kind == BH_EVENT_ALLOC)
        bh_track_on_alloc(f->track, 1, ev->device, ev->address, ev->size, 0, 0);
    else
        bh_track_on_free(f->track, 1, ev->device, ev->address);
    pthread_mutex_unlock(&f->lock);
}

static int setup_with(void **state, int lockstep) {
    fixture *f = test_calloc(1, sizeof(*f));
    bh_sim_config sc = bh_sim_default_config(8, lockstep);
    assert_int_equal(bh_sim_create(&sc, &f->sim), BH_OK);
    f->track = bh_track_new(0);
    pthread_mutex_init(&f->lock, NULL);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(f->sim);
    cfg.reporter = (bh_reporter){on_report, f};
    cfg.flags = BH_CONFIG_NO_ENV;
    assert_int_equal(bh_registry_create(&cfg, &f->reg), BH_OK);
    assert_int_equal(bh_shim_device_open(f->reg, 3, &f->dev), BH_OK);
    assert_int_equal(bh_shim_mesh_open(f->reg, 8, &f->mesh), BH_OK);
    *state = f;
    return 0;
}
static int setup(void **state) { return setup_with(state, 0); }
static int setup_lockstep(void **state) { return setup_with(state, 1); }

static bh_sim_stats sim_stats(fixture *f) {
    bh_sim_stats s;
    bh_sim_stats_get(f->sim, &s);
    return s;
}

static bh_track_counts track_counts(fixture *f) {
    bh_track_counts c;
    bh_track_totals(f->track, UINT64_MAX, UINT32_MAX, &c);
    return c;
}

static int teardown(void **state) {
    fixture *f = *state;
    bh_shim_device_close(f->dev);
    bh_shim_mesh_close(f->mesh);
    assert_int_equal(bh_registry_destroy(f->reg), BH_OK);
    bh_sim_stats s = sim_stats(f);
    assert_int_equal(s.double_frees, 0);
    assert_int_equal(s.unknown_frees, 0);
    assert_int_equal(s.allocs, s.frees);
    assert_int_equal(bh_sim_live_allocations(f->sim), 0);
    bh_track_counts c = track_counts(f);
    assert_int_equal(c.unknown_frees, 0);
    assert_int_equal(c.duplicate_allocs, 0);
    assert_int_equal(c.live, 0);
    bh_track_free(f->track);
    bh_sim_destroy(f->sim);
    pthread_mutex_destroy(&f->lock);
    test_free(f);
    return 0;
}

static void every_call_behaves_like_the_legacy_api(void **state) {
    fixture *f = *state;
    bh_shim_buffer *a, *b, *v, *x;
    assert_int_equal(bh_shim_buffer_create(NULL, 64, BH_SIM_DRAM, &a), BH_EINVAL);
    assert_int_equal(bh_shim_buffer_create(f->dev, 0, BH_SIM_DRAM, &a), BH_EINVAL);
    assert_int_equal(bh_shim_buffer_create(f->dev, 1ull << 40, BH_SIM_DRAM, &a), BH_EALLOC); /* too big */
    assert_int_equal(bh_shim_buffer_create(f->dev, 4096, BH_SIM_L1, &a), BH_OK);
    assert_int_equal(bh_shim_buffer_device(a), 3);
    assert_int_equal(bh_shim_buffer_mem(a), BH_SIM_L1);
    assert_int_equal(bh_shim_buffer_size(a), 4096);
    assert_true(bh_shim_buffer_is_allocated(a));
    uint64_t addr = bh_shim_buffer_address(a);

    assert_int_equal(bh_shim_buffer_create_at(f->dev, addr, 4096, BH_SIM_L1, &b), BH_OK);
    assert_true(bh_handle_eq(bh_shim_buffer_handle(a), bh_shim_buffer_handle(b)));
    assert_int_equal(bh_shim_buffer_create_at(f->dev, addr, 8192, BH_SIM_L1, &x), BH_ERANGE);
    assert_int_equal(bh_shim_buffer_view(a, 1024, 1024, &v), BH_OK);
    assert_int_equal(bh_shim_buffer_address(v), addr + 1024);
    assert_int_equal(bh_shim_buffer_view(a, 4000, 1024, &x), BH_ERANGE);
    assert_int_equal(bh_shim_buffer_view(a, 0, 0, &x), BH_EINVAL);

    bh_info info;
    assert_int_equal(bh_info_get(f->reg, bh_shim_buffer_handle(a), &info), BH_OK);
    assert_int_equal(info.refs, 3);

    /* Deallocate is idempotent per object and frees nothing while aliases live. */
    assert_int_equal(bh_shim_buffer_deallocate(a), BH_OK);
    assert_int_equal(bh_shim_buffer_deallocate(a), BH_OK);
    assert_false(bh_shim_buffer_is_allocated(a));
    assert_true(bh_handle_is_null(bh_shim_buffer_handle(a)));
    assert_int_equal(bh_shim_buffer_view(a, 0, 1, &x), BH_ESTALE);
    assert_int_equal(sim_stats(f).frees, 0);
    assert_int_equal(bh_shim_buffer_destroy(a), BH_OK);
    assert_int_equal(bh_shim_buffer_destroy(b), BH_OK);
    assert_int_equal(sim_stats(f).frees, 0);
    assert_int_equal(bh_shim_buffer_destroy(v), BH_OK);
    assert_int_equal(sim_stats(f).frees, 1);
    assert_int_equal(bh_shim_buffer_destroy(NULL), BH_EINVAL);
    assert_int_equal(bh_shim_buffer_deallocate(NULL), BH_EINVAL);

    /* A buffer at an address nobody holds owns it from then on. */
    assert_int_equal(bh_shim_buffer_create(f->dev, 100, BH_SIM_DRAM, &a), BH_OK);
    addr = bh_shim_buffer_address(a);
    assert_int_equal(bh_shim_buffer_create_at(f->dev, addr, 100, BH_SIM_DRAM, &b), BH_OK);
    assert_int_equal(bh_shim_buffer_destroy(a), BH_OK);
    assert_int_equal(sim_stats(f).frees, 1);
    assert_int_equal(bh_shim_buffer_destroy(b), BH_OK);
    assert_int_equal(sim_stats(f).frees, 2);
}

/* A runtime with only an address inside a live buffer (no object of it):
 * view_at is the route; create_at there is an overlap. The views are
 * references to the allocation, freed once when the last goes. */
static void a_view_at_an_address_needs_no_parent_object(void **state) {
    fixture *f = *state;
    bh_shim_buffer *a, *v, *w, *x = NULL;
    assert_int_equal(bh_shim_buffer_create(f->dev, 4096, BH_SIM_L1, &a), BH_OK);
    uint64_t addr = bh_shim_buffer_address(a);
    assert_int_equal(bh_shim_buffer_create_at(f->dev, addr + 1024, 1024, BH_SIM_L1, &x), BH_EOVERLAP);

    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr + 1024, 1024, BH_SIM_L1, &v), BH_OK);
    assert_true(bh_handle_eq(bh_shim_buffer_handle(v), bh_shim_buffer_handle(a)));
    assert_int_equal(bh_shim_buffer_address(v), addr + 1024);
    assert_int_equal(bh_shim_buffer_size(v), 1024);
    assert_int_equal(bh_shim_buffer_device(v), 3);
    assert_int_equal(bh_shim_buffer_mem(v), BH_SIM_L1);
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr + 3072, 1024, BH_SIM_L1, &w),
                     BH_OK); /* to the end */

    /* Refusals take no reference and make no object. */
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr + 4000, 1024, BH_SIM_L1, &x), BH_ERANGE);
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr + 1, UINT64_MAX, BH_SIM_L1, &x), BH_ERANGE);
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr + 4096, 1, BH_SIM_L1, &x), BH_ENOTFOUND);
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr + 1024, 1, BH_SIM_DRAM, &x), BH_ENOTFOUND);
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr, 0, BH_SIM_L1, &x), BH_EINVAL);
    assert_int_equal(bh_shim_buffer_view_at(NULL, addr, 1, BH_SIM_L1, &x), BH_EINVAL);
    assert_int_equal(bh_shim_buffer_view_at(f->dev, addr, 1, BH_SIM_L1, NULL), BH_EINVAL);
    assert_null(x);
    bh_info info;
    assert_int_equal(bh_info_get(f->reg, bh_shim_buffer_handle(a), &info), BH_OK);
    assert_int_equal(info.refs, 3);

    assert_int_equal(bh_shim_buffer_destroy(a), BH_OK);
    assert_int_equal(bh_shim_buffer_destroy(v), BH_OK);
    assert_int_equal(sim_stats(f).frees, 0);
    assert_int_equal(bh_shim_buffer_destroy(w), BH_OK);
    assert_int_equal(sim_stats(f).frees, 1);
}

static void three_aliases_destroyed_in_every_order_free_once(void **state) {
    fixture *f = *state;
    static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int o = 0; o < 6; o++) {
        for (int mode = 0; mode < 2; mode++) { /* destroy, or deallocate then destroy */
            bh_shim_buffer *obj[3];
            assert_int_equal(bh_shim_buffer_create(f->dev, 1 << 20, BH_SIM_DRAM, &obj[0]), BH_OK);
            assert_int_equal(bh_shim_buffer_create_at(f->dev, bh_shim_buffer_address(obj[0]), 1 << 20,
                                                      BH_SIM_DRAM, &obj[1]),
                             BH_OK);
            assert_int_equal(bh_shim_buffer_view(obj[0], 4096, 4096, &obj[2]), BH_OK);
            uint64_t frees = sim_stats(f).frees;
            uint64_t free_reports = track_counts(f).frees;
            for (int i = 0; i < 3; i++) {
                if (mode)
                    assert_int_equal(bh_shim_buffer_deallocate(obj[orders[o][i]]), BH_OK);
                else
                    assert_int_equal(bh_shim_buffer_destroy(obj[orders[o][i]]), BH_OK);
                assert_int_equal(sim_stats(f).frees - frees, i == 2 ? 1 : 0);
            }
            if (mode)
                for (int i = 0; i < 3; i++)
                    assert_int_equal(bh_shim_buffer_destroy(obj[i]), BH_OK);
            assert_int_equal(sim_stats(f).frees - frees, 1);
            assert_int_equal(track_counts(f).frees - free_reports, 1);
        }
    }
}

static void mesh_buffer_frees_each_device_allocation_once(void **state) {
    fixture *f = *state;
    uint64_t rng = 12345;
    for (int round = 0; round < 20; round++) {
        bh_shim_mesh_buffer *mb;
        assert_int_equal(bh_shim_mesh_buffer_create(f->mesh, 1 << 20, BH_SIM_DRAM, &mb), BH_OK);
        bh_shim_buffer *obj[9];
        assert_int_equal(bh_shim_buffer_address(bh_shim_mesh_buffer_backing(mb)),
                         bh_shim_buffer_address(bh_shim_mesh_buffer_device(mb, 7)));
        bh_shim_mesh_buffer_detach(mb, obj);
        uint64_t frees = sim_stats(f).frees, free_reports = track_counts(f).frees;
        /* Destroy the backing buffer and the 8 device buffers in a random order. */
        for (int i = 9; i > 1; i--) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int j = (int)((rng >> 33) % (uint64_t)i);
            bh_shim_buffer *t = obj[i - 1];
            obj[i - 1] = obj[j];
            obj[j] = t;
        }
        for (int i = 0; i < 9; i++)
            assert_int_equal(bh_shim_buffer_destroy(obj[i]), BH_OK);
        assert_int_equal(sim_stats(f).frees - frees, 8);
        assert_int_equal(track_counts(f).frees - free_reports, 8);
    }
    bh_shim_mesh_buffer *mb;
    assert_int_equal(bh_shim_mesh_buffer_create(f->mesh, 4096, BH_SIM_L1, &mb), BH_OK);
    assert_int_equal(bh_shim_mesh_buffer_destroy(mb), BH_OK);
    assert_null(bh_shim_mesh_device(f->mesh, 8));
    assert_int_equal(bh_shim_mesh_devices(f->mesh), 8);
}

/* The mesh port's intermittent BH_EBUSY, made deterministic: the lock-step
 * allocator hands an address out again from inside the last device's free,
 * while that device's dying block is still linked. The new mesh buffer's
 * device buffers adopt their fresh address (0.2 interned it and spun on
 * BH_EBUSY, which cannot clear while the free is still running). */
typedef struct reuse_hook {
    bh_sim *sim;
    bh_shim_mesh *mesh;
    int armed;
    bh_status st;
    bh_shim_mesh_buffer *made;
} reuse_hook;

static int reuse_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    return bh_sim_alloc(((reuse_hook *)ctx)->sim, device, size, address);
}

static void reuse_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    reuse_hook *r = ctx;
    bh_sim_free(r->sim, device, address, size);
    if (r->armed) {
        r->armed = 0;
        r->st = bh_shim_mesh_buffer_create(r->mesh, size, BH_SIM_DRAM, &r->made);
    }
}

static void mesh_buffer_reuses_an_address_whose_last_free_is_still_running(void **state) {
    (void)state;
    reuse_hook r = {NULL, NULL, 0, BH_OK, NULL};
    bh_sim_config sc = bh_sim_default_config(4, 1);
    assert_int_equal(bh_sim_create(&sc, &r.sim), BH_OK);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){reuse_alloc, reuse_free, &r};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_int_equal(bh_shim_mesh_open(reg, 4, &r.mesh), BH_OK);
    bh_shim_mesh_buffer *mb;
    assert_int_equal(bh_shim_mesh_buffer_create(r.mesh, 4096, BH_SIM_DRAM, &mb), BH_OK);
    uint64_t address = bh_shim_buffer_address(bh_shim_mesh_buffer_backing(mb));
    bh_shim_buffer *obj[5];
    bh_shim_mesh_buffer_detach(mb, obj);
    for (int i = 0; i < 4; i++) /* backing, devices 0..2: device 3 is the last to free */
        assert_int_equal(bh_shim_buffer_destroy(obj[i]), BH_OK);
    r.armed = 1;
    assert_int_equal(bh_shim_buffer_destroy(obj[4]), BH_OK);
    assert_int_equal(r.st, BH_OK);
    assert_non_null(r.made);
    assert_int_equal(bh_shim_buffer_address(bh_shim_mesh_buffer_device(r.made, 3)), address);
    bh_stats s;
    assert_int_equal(bh_stats_get(reg, &s), BH_OK);
    assert_int_equal(s.takeovers, 1);
    assert_int_equal(s.busy, 0);
    assert_int_equal(bh_shim_mesh_buffer_destroy(r.made), BH_OK);
    bh_shim_mesh_close(r.mesh);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_sim_stats ss;
    bh_sim_stats_get(r.sim, &ss);
    assert_int_equal(ss.double_frees, 0);
    assert_int_equal(ss.unknown_frees, 0);
    assert_int_equal(ss.frees, 8);
    assert_int_equal(bh_sim_live_allocations(r.sim), 0);
    bh_sim_destroy(r.sim);
}

/* The shim's domains are the library's packing. */
static void shim_domains_are_bh_domain(void **state) {
    (void)state;
    assert_int_equal(bh_sim_domain(5, BH_SIM_L1), BH_DOMAIN(5, BH_MEM_L1));
    assert_int_equal(bh_sim_domain_device(BH_DOMAIN(9, BH_MEM_DRAM)), 9);
    assert_int_equal(bh_sim_domain_mem(BH_DOMAIN(9, BH_MEM_L1)), BH_SIM_L1);
    bh_sim_config sc = bh_sim_default_config(2, 0);
    bh_sim *sim;
    assert_int_equal(bh_sim_create(&sc, &sim), BH_OK);
    uint64_t a;
    assert_int_equal(bh_sim_alloc(sim, BH_DOMAIN(1, BH_MEM_L1), 64, &a), 0);
    assert_int_not_equal(bh_sim_alloc(sim, BH_DOMAIN(1, BH_MEM_TRACE), 64, &a), 0); /* not simulated */
    bh_sim_free(sim, BH_DOMAIN(1, BH_MEM_TRACE), a, 64);
    bh_sim_stats ss;
    bh_sim_stats_get(sim, &ss);
    assert_int_equal(ss.unknown_frees, 1);
    bh_sim_free(sim, BH_DOMAIN(1, BH_MEM_L1), a, 64);
    assert_int_equal(bh_sim_live_allocations(sim), 0);
    bh_sim_destroy(sim);
}

/* Under debug references a view is its own token: the object it was made
 * from can die first and the view's reference is untouched. */
static void a_view_owns_its_own_debug_token(void **state) {
    (void)state;
    bh_sim_config sc = bh_sim_default_config(1, 0);
    bh_sim *sim;
    assert_int_equal(bh_sim_create(&sc, &sim), BH_OK);
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(sim);
    cfg.flags = BH_CONFIG_NO_ENV | BH_CONFIG_DEBUG_REFS;
    bh_registry *reg;
    bh_shim_device *dev;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    assert_int_equal(bh_shim_device_open(reg, 0, &dev), BH_OK);
    bh_shim_buffer *buf, *view;
    assert_int_equal(bh_shim_buffer_create(dev, 8192, BH_SIM_DRAM, &buf), BH_OK);
    assert_int_equal(bh_shim_buffer_view(buf, 4096, 4096, &view), BH_OK);
    bh_handle vh = bh_shim_buffer_handle(view);
    assert_false(bh_handle_eq(vh, bh_shim_buffer_handle(buf)));
    assert_int_equal(bh_shim_buffer_destroy(buf), BH_OK);
    bh_info info;
    assert_int_equal(bh_info_get(reg, vh, &info), BH_OK);
    assert_int_equal(info.refs, 1);
    assert_int_equal(bh_sim_live_allocations(sim), 1);
    assert_int_equal(bh_shim_buffer_destroy(view), BH_OK);
    assert_int_equal(bh_sim_live_allocations(sim), 0);
    bh_shim_device_close(dev);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    bh_sim_destroy(sim);
}

/* ------------------------------------------------------------ threads */

enum { THREADS = 4, ALLOCS = 400, ALIASES = 6 };

typedef struct shared {
    fixture *f;
    bh_shim_buffer *obj[ALLOCS][ALIASES];
    int tid;
} shared;

static shared the_shared;

/* Thread t destroys alias k of every allocation where (i + k) % THREADS == t,
 * so every allocation's objects die on several threads at once. Objects with
 * k == ALIASES-1 are deallocated by two threads at once first. */
static void *destroyer(void *arg) {
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < ALLOCS; i++) {
        for (int k = 0; k < ALIASES; k++) {
            if (k == ALIASES - 1)
                bh_shim_buffer_deallocate(the_shared.obj[i][k]); /* racing, idempotent */
            else if ((i + k) % THREADS == t)
                bh_shim_buffer_destroy(the_shared.obj[i][k]);
        }
    }
    return NULL;
}

static void objects_of_one_allocation_dying_on_many_threads_free_it_once(void **state) {
    fixture *f = *state;
    the_shared.f = f;
    for (int i = 0; i < ALLOCS; i++) {
        bh_shim_device *dev = bh_shim_mesh_device(f->mesh, (uint32_t)(i % 8));
        assert_int_equal(
            bh_shim_buffer_create(dev, 4096, i % 2 ? BH_SIM_L1 : BH_SIM_DRAM, &the_shared.obj[i][0]), BH_OK);
        for (int k = 1; k < ALIASES; k++) {
            bh_shim_buffer *first = the_shared.obj[i][0];
            bh_status st = k % 2 ? bh_shim_buffer_view(first, 0, 1024, &the_shared.obj[i][k])
                                 : bh_shim_buffer_create_at(dev, bh_shim_buffer_address(first), 4096,
                                                            bh_shim_buffer_mem(first), &the_shared.obj[i][k]);
            assert_int_equal(st, BH_OK);
        }
    }
    pthread_t tid[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&tid[t], NULL, destroyer, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(tid[t], NULL);
    for (int i = 0; i < ALLOCS; i++)
        assert_int_equal(bh_shim_buffer_destroy(the_shared.obj[i][ALIASES - 1]), BH_OK);
    assert_int_equal(sim_stats(f).frees, ALLOCS);
    assert_int_equal(track_counts(f).frees, ALLOCS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_call_behaves_like_the_legacy_api, setup, teardown),
        cmocka_unit_test_setup_teardown(a_view_at_an_address_needs_no_parent_object, setup, teardown),
        cmocka_unit_test_setup_teardown(three_aliases_destroyed_in_every_order_free_once, setup, teardown),
        cmocka_unit_test_setup_teardown(mesh_buffer_frees_each_device_allocation_once, setup_lockstep,
                                        teardown),
        cmocka_unit_test_setup_teardown(objects_of_one_allocation_dying_on_many_threads_free_it_once, setup,
                                        teardown),
        cmocka_unit_test(mesh_buffer_reuses_an_address_whose_last_free_is_still_running),
        cmocka_unit_test(shim_domains_are_bh_domain),
        cmocka_unit_test(a_view_owns_its_own_debug_token),
    };
    return cmocka_run_group_tests_name("shim", tests, NULL, NULL);
}
