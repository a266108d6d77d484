/*
 * test_fork_held.c - a fork while a parent thread holds one of a registry's
 * table locks: the child's bh_registry_destroy leaves the tables allocated
 * (a held lock may guard a half-done change, and freeing a half-unlinked
 * tree or chunk would free it twice), and frees them when no lock was held.
 *
 *   test_fork_held
 *
 * White-box: a parent thread takes a shard's or a range stripe's lock
 * (range_lock.h: futex words that pthread_mutex_trylock knows nothing of,
 * tried with bh__stripe_lock_try) or the slab's mutex, and keeps it while the
 * main thread forks. The child measures with mallinfo2 how much host memory
 * its destroy gave back, in memory shared with the parent: with a lock held
 * it must be less than with none by at least the slab's chunks (a registry
 * of LIVE blocks holds LIVE * 32 bytes of them). Deterministic: the lock is
 * held across the fork by construction, no timing is involved.
 * Natively only: valgrind and the sanitizers replace malloc, and mallinfo2
 * then does not count what the library frees.
 */
#define _GNU_SOURCE /* mallinfo2, MAP_ANONYMOUS */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/internal.h"
#include "sanitize.h"

#define LIVE 4096u /* blocks the registry holds: LIVE * 32 bytes of slab chunks */
#define SPACING 0x1000u

enum which { NONE, SHARD, STRIPE, SLAB };
static const char *const names[] = {"no", "a shard's", "a range stripe's", "the slab's"};

/* The holder thread's lock and its handshake with the main thread. */
static bh_registry *reg;
static enum which what;
static pthread_mutex_t hs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hs_cond = PTHREAD_COND_INITIALIZER;
static int holding, let_go;

/* Takes (take 1) or lets go of the lock what names: the shards' and the
 * stripes' are range_lock.h's futex words, the slab's a mutex. */
static void use_lock(int take) {
    bh__stripe_lock *l =
        what == SHARD ? &reg->shards[BH__SHARDS - 1].lock : &reg->ranges.stripes[BH__RANGE_STRIPES - 1].lock;
    if (what != SLAB)
        take ? bh__stripe_lock_take(l) : bh__stripe_lock_give(l);
    else
        (void)(take ? pthread_mutex_lock(&reg->slab.lock) : pthread_mutex_unlock(&reg->slab.lock));
}

static void *holder(void *arg) {
    (void)arg;
    use_lock(1);
    pthread_mutex_lock(&hs_lock);
    holding = 1;
    pthread_cond_broadcast(&hs_cond);
    while (!let_go)
        pthread_cond_wait(&hs_cond, &hs_lock);
    pthread_mutex_unlock(&hs_lock);
    use_lock(0);
    return NULL;
}

static size_t in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* Bytes the child's destroy of reg gave back, with w held by a parent
 * thread across the fork. */
static size_t freed_in_child(enum which w) {
    bh_config cfg = {.flags = BH_CONFIG_NO_ENV};
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    static bh_handle h[LIVE];
    for (uint32_t i = 0; i < LIVE; i++)
        assert_int_equal(bh_adopt(reg, BH_DOMAIN(1, BH_MEM_DRAM), (uint64_t)(i + 1) * SPACING, 64, &h[i]),
                         BH_OK);
    size_t *freed = mmap(NULL, sizeof(*freed), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(freed != MAP_FAILED);
    *freed = 0;
    pthread_t t;
    what = w;
    holding = let_go = 0;
    if (w != NONE) {
        assert_int_equal(pthread_create(&t, NULL, holder, NULL), 0);
        pthread_mutex_lock(&hs_lock);
        while (!holding)
            pthread_cond_wait(&hs_cond, &hs_lock);
        pthread_mutex_unlock(&hs_lock);
    }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        size_t before = in_use();
        int rc = bh_registry_destroy(reg) == BH_OK ? 0 : 1;
        size_t after = in_use();
        *freed = before > after ? before - after : 0;
        _exit(rc);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    if (w != NONE) {
        pthread_mutex_lock(&hs_lock);
        let_go = 1;
        pthread_cond_broadcast(&hs_cond);
        pthread_mutex_unlock(&hs_lock);
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    /* The parent's registry is untouched by the child's destroy. */
    for (uint32_t i = 0; i < LIVE; i++)
        assert_int_equal(bh_release(reg, h[i]), BH_OK);
    assert_int_equal(bh_registry_destroy(reg), BH_OK);
    size_t r = *freed;
    munmap(freed, sizeof(*freed));
    print_message("%s lock held at the fork: the child's destroy gave back %zu bytes\n", names[w], r);
    return r;
}

static void skip_without_glibc_malloc(void) {
#if BH__TSAN || BH__ASAN
    print_message("the sanitizers replace malloc (mallinfo2 counts nothing): skipping\n");
    skip();
#endif
}

/* With w held, the child gave back less than with no lock held by at
 * least the slab's chunks: the tables stayed. */
static void the_tables_stay(enum which w) {
    skip_without_glibc_malloc();
    size_t whole = freed_in_child(NONE);
    assert_true(whole > (size_t)LIVE * sizeof(bh__block));
    assert_true(freed_in_child(w) <= whole - (size_t)LIVE * sizeof(bh__block));
}

static void a_held_shard_lock_keeps_the_tables(void **state) {
    (void)state;
    the_tables_stay(SHARD);
}

static void a_held_stripe_lock_keeps_the_tables(void **state) {
    (void)state;
    the_tables_stay(STRIPE);
}

static void a_held_slab_lock_keeps_the_tables(void **state) {
    (void)state;
    the_tables_stay(SLAB);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_held_shard_lock_keeps_the_tables),
        cmocka_unit_test(a_held_stripe_lock_keeps_the_tables),
        cmocka_unit_test(a_held_slab_lock_keeps_the_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
