/*
 * test_unload.c - the library unloaded (dlclose) while a thread it numbered
 * lives on.
 *
 * A thread that counts takes an owned counter stripe and sets a pthread key
 * whose destructor gives the stripe back at thread exit (src/stats.c). If the
 * library is unloaded first, that destructor would point into unmapped code:
 * the library's destructor deletes the key, so the thread exits cleanly.
 * Three rounds of load, count on 21 threads, unload with one thread still
 * holding a number, let it exit. Without the key deletion the holder crashes
 * at exit (SIGSEGV in the first round).
 *
 * The library is loaded with dlopen from the path given as argv[1] (the test
 * is not linked against it, so it can really go away).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "sanitize.h"

static const char *lib_path;

static struct {
    void *dl;
    bh_status (*create)(const bh_config *, bh_registry **);
    bh_status (*destroy)(bh_registry *);
    bh_status (*intern)(bh_registry *, uint32_t, uint64_t, uint64_t, bh_handle *);
    bh_status (*retain)(bh_registry *, bh_handle);
    bh_status (*release)(bh_registry *, bh_handle);
    bh_status (*stats)(bh_registry *, bh_stats *);
} lib;

static bh_registry *reg;
static bh_handle handle;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int counted, may_exit;

/* dlsym returns an object pointer; POSIX guarantees it converts to a
 * function pointer, ISO C does not say so: memcpy keeps -Wpedantic quiet. */
static void sym(void *fn_ptr, size_t size, const char *name) {
    void *p = dlsym(lib.dl, name);
    assert_non_null(p);
    memcpy(fn_ptr, &p, size);
}

static void load(void) {
    lib.dl = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(lib.dl);
    sym(&lib.create, sizeof(lib.create), "bh_registry_create");
    sym(&lib.destroy, sizeof(lib.destroy), "bh_registry_destroy");
    sym(&lib.intern, sizeof(lib.intern), "bh_intern");
    sym(&lib.retain, sizeof(lib.retain), "bh_retain");
    sym(&lib.release, sizeof(lib.release), "bh_release");
    sym(&lib.stats, sizeof(lib.stats), "bh_stats_get");
}

static void count_100(void) {
    for (int i = 0; i < 100; i++)
        if (lib.retain(reg, handle) != BH_OK || lib.release(reg, handle) != BH_OK)
            return; /* the totals check below fails */
}

/* Counts (so it holds a number), then waits past the unload to exit. */
static void *holder(void *arg) {
    (void)arg;
    count_100();
    pthread_mutex_lock(&mu);
    counted = 1;
    pthread_cond_broadcast(&cv);
    while (!may_exit)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void *counter(void *arg) {
    (void)arg;
    count_100();
    return NULL;
}

static void a_thread_outlives_the_library_that_numbered_it(void **state) {
    (void)state;
    for (int round = 0; round < 3; round++) {
        load();
        bh_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.flags = BH_CONFIG_NO_ENV;
        assert_int_equal(lib.create(&cfg, &reg), BH_OK);
        assert_int_equal(lib.intern(reg, 0, 0x10000, 64, &handle), BH_OK);
        counted = may_exit = 0;
        pthread_t h, c[20];
        assert_int_equal(pthread_create(&h, NULL, holder, NULL), 0);
        pthread_mutex_lock(&mu);
        while (!counted)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        for (int i = 0; i < 20; i++)
            assert_int_equal(pthread_create(&c[i], NULL, counter, NULL), 0);
        for (int i = 0; i < 20; i++)
            assert_int_equal(pthread_join(c[i], NULL), 0);
        bh_stats s;
        assert_int_equal(lib.stats(reg, &s), BH_OK);
        assert_int_equal(s.retains, 21 * 100); /* every count landed, owned or shared */
        assert_int_equal(lib.release(reg, handle), BH_OK);
        assert_int_equal(lib.destroy(reg), BH_OK);
        assert_int_equal(dlclose(lib.dl), 0);
#if !BH__ASAN && !BH__TSAN
        /* Really gone (sanitizer runtimes may keep it mapped). */
        void *still = dlopen(lib_path, RTLD_NOW | RTLD_NOLOAD);
        if (still != NULL)
            dlclose(still);
        assert_null(still);
#endif
        pthread_mutex_lock(&mu);
        may_exit = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        assert_int_equal(pthread_join(h, NULL), 0); /* its key destructor must not run */
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_unload PATH-TO-libbufhandle.so\n");
        return 2;
    }
    lib_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_thread_outlives_the_library_that_numbered_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
