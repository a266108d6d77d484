/*
 * test_stats.c - white-box tests of the event counters: exact sums, and the
 * owned stripes' thread numbers, which exiting threads give back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/internal.h"
#include "support/checker.h"

#define BASE 0x40000000ull
#define ALIGN 0x1000ull

/* One registry with one live handle that every counting thread retains and
 * releases. */
typedef struct fixture {
    checker *chk;
    bh_registry *reg;
    bh_handle h;
} fixture;

static void fixture_open(fixture *f) {
    f->chk = checker_new(2, 1, 4, BASE, ALIGN);
    bh_config cfg = checker_config(f->chk);
    assert_int_equal(bh_registry_create(&cfg, &f->reg), BH_OK);
    assert_int_equal(bh_alloc(f->reg, 0, 64, &f->h), BH_OK);
}

/* Checks that every pair was counted, and closes. */
static void fixture_close(fixture *f, uint64_t pairs) {
    bh_stats s;
    assert_int_equal(bh_stats_get(f->reg, &s), BH_OK);
    assert_int_equal(s.retains, pairs);
    assert_int_equal(s.releases, pairs);
    assert_int_equal(bh_release(f->reg, f->h), BH_OK);
    assert_int_equal(checker_finish(f->chk, f->reg), 0);
}

static void pairs(const fixture *f, int n) {
    for (int i = 0; i < n; i++) {
        bh_retain(f->reg, f->h);
        bh_release(f->reg, f->h);
    }
}

static int owns_a_stripe(void) { return bh__thread_number < BH__OWNED_STRIPES; }

/* A thread that counts n pairs and says whether it ended on an owned stripe. */
typedef struct counting_job {
    const fixture *f;
    int n;
    int owned;
} counting_job;

static void *count_pairs(void *arg) {
    counting_job *j = arg;
    pairs(j->f, j->n);
    j->owned = owns_a_stripe();
    return NULL;
}

static int run_counting_thread(const fixture *f, int n) {
    counting_job j = {f, n, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, count_pairs, &j), 0);
    pthread_join(t, NULL);
    return j.owned;
}

/* ------------------------------------------------------------ sums */

/* More threads than owned stripes at once: the shared stripes lose nothing
 * either. */
static void counters_are_exact_with_more_threads_than_stripes(void **state) {
    (void)state;
    enum { THREADS = 2 * BH__STRIPES + 3 };
    fixture f;
    fixture_open(&f);
    counting_job j[THREADS];
    pthread_t tid[THREADS];
    for (int t = 0; t < THREADS; t++) {
        j[t] = (counting_job){&f, 1000, 0};
        assert_int_equal(pthread_create(&tid[t], NULL, count_pairs, &j[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(tid[t], NULL);
    fixture_close(&f, THREADS * 1000);
}

/* Each stripe is one 128-byte pair of lines in every registry: with the
 * registry only line-aligned, the stripes array sat at 64 mod 128 and each
 * stripe's second line shared a pair (which x86 prefetches together) with
 * the next stripe's first, where its thread counts retains and releases. */
static void every_stripe_is_a_128_byte_pair_of_its_own(void **state) {
    (void)state;
    enum { REGISTRIES = 8 }; /* several allocations, at different offsets */
    bh_registry *reg[REGISTRIES];
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.flags = BH_CONFIG_NO_ENV;
    for (int r = 0; r < REGISTRIES; r++) {
        assert_int_equal(bh_registry_create(&cfg, &reg[r]), BH_OK);
        for (unsigned s = 0; s < BH__STRIPES; s++)
            assert_int_equal((uintptr_t)&reg[r]->stats.stripes[s] % 128, 0);
    }
    for (int r = 0; r < REGISTRIES; r++)
        assert_int_equal(bh_registry_destroy(reg[r]), BH_OK);
}

/* ------------------------------------------------------------ thread numbers */

/* 0.3.0 numbered threads once, in order: from the 17th thread of the process
 * on, every thread counted with locked adds on a shared stripe, forever. An
 * exiting thread now gives its number back. */
static void an_exiting_thread_gives_its_owned_stripe_to_the_next(void **state) {
    (void)state;
    enum { THREADS = 100, PAIRS = 300 };
    fixture f;
    fixture_open(&f); /* this thread counts: it holds its number throughout */
    unsigned free_before = bh__thread_numbers_free();
    assert_true(free_before > 0);
    for (int t = 0; t < THREADS; t++)
        assert_true(run_counting_thread(&f, PAIRS));
    assert_int_equal(bh__thread_numbers_free(), free_before);
    assert_true(run_counting_thread(&f, PAIRS)); /* a fresh thread, after all of them */
    fixture_close(&f, (THREADS + 1) * PAIRS);
}

/* Steady threads count without pause while waves of short threads, more
 * than there are owned stripes at once, start, count and exit: numbers change
 * hands (and shared threads trade up) while others count. Under TSan this is
 * the handover's race check; everywhere, the sums stay exact. */
typedef struct steady_job {
    const fixture *f;
    atomic_int *stop;
    uint64_t done;
} steady_job;

static void *count_until_stopped(void *arg) {
    steady_job *j = arg;
    while (!atomic_load_explicit(j->stop, memory_order_relaxed)) {
        pairs(j->f, 10);
        j->done += 10;
        sched_yield(); /* under valgrind, threads take turns: let the waves run */
    }
    return NULL;
}

enum { WAVES = 5, WAVE = 10, WAVE_PAIRS = 300 };

typedef struct churn_job {
    const fixture *f;
    int owned; /* threads that ended on an owned stripe */
} churn_job;

static void *churn_waves(void *arg) {
    churn_job *c = arg;
    for (int w = 0; w < WAVES; w++) {
        counting_job j[WAVE];
        pthread_t tid[WAVE];
        for (int t = 0; t < WAVE; t++) {
            j[t] = (counting_job){c->f, WAVE_PAIRS, 0};
            if (pthread_create(&tid[t], NULL, count_pairs, &j[t]) != 0)
                return NULL; /* the missing pairs fail the sum */
        }
        for (int t = 0; t < WAVE; t++) {
            pthread_join(tid[t], NULL);
            c->owned += j[t].owned;
        }
    }
    return NULL;
}

static void owned_stripes_change_hands_while_others_count(void **state) {
    (void)state;
    enum { STEADY = 4, CHURNERS = 2 };
    fixture f;
    fixture_open(&f);
    unsigned free_before = bh__thread_numbers_free();
    atomic_int stop = 0;
    steady_job s[STEADY];
    churn_job c[CHURNERS];
    pthread_t st[STEADY], ct[CHURNERS];
    for (int t = 0; t < STEADY; t++) {
        s[t] = (steady_job){&f, &stop, 0};
        assert_int_equal(pthread_create(&st[t], NULL, count_until_stopped, &s[t]), 0);
    }
    for (int t = 0; t < CHURNERS; t++) {
        c[t] = (churn_job){&f, 0};
        assert_int_equal(pthread_create(&ct[t], NULL, churn_waves, &c[t]), 0);
    }
    int owned = 0;
    for (int t = 0; t < CHURNERS; t++) {
        pthread_join(ct[t], NULL);
        owned += c[t].owned;
    }
    atomic_store(&stop, 1);
    uint64_t total = (uint64_t)CHURNERS * WAVES * WAVE * WAVE_PAIRS;
    for (int t = 0; t < STEADY; t++) {
        pthread_join(st[t], NULL);
        total += s[t].done;
    }
    /* More threads owned a stripe than there are owned stripes: numbers were
     * reused. */
    assert_true(owned > BH__OWNED_STRIPES);
    assert_int_equal(bh__thread_numbers_free(), free_before);
    fixture_close(&f, total);
}

/* Something that counts after the library's key destructor ran (here
 * another key's destructor, which glibc runs later) must not write the
 * stripe it gave back: it counts on a shared one. */
static pthread_key_t late_key;
static const fixture *late_fixture;
static int late_owned = -1;

static void late_dtor(void *value) {
    (void)value;
    pairs(late_fixture, 10);
    late_owned = owns_a_stripe();
}

static void *count_then_set_late_key(void *arg) {
    pairs(arg, 10);
    pthread_setspecific(late_key, arg);
    return NULL;
}

static void a_thread_counting_after_its_number_went_back_counts_on_a_shared_stripe(void **state) {
    (void)state;
    fixture f;
    fixture_open(&f); /* the library's key exists: ours is created after it */
    assert_int_equal(pthread_key_create(&late_key, late_dtor), 0);
    late_fixture = &f;
    unsigned free_before = bh__thread_numbers_free();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, count_then_set_late_key, &f), 0);
    pthread_join(t, NULL);
    assert_int_equal(late_owned, 0);
    assert_int_equal(bh__thread_numbers_free(), free_before);
    pthread_key_delete(late_key);
    fixture_close(&f, 20);
}

/* A forked child has only the forking thread: the numbers its parent's other
 * threads held are free in the child. */
typedef struct holder {
    const fixture *f;
    pthread_barrier_t *counted, *release;
} holder;

static void *count_and_hold(void *arg) {
    holder *h = arg;
    pairs(h->f, 10);
    pthread_barrier_wait(h->counted);
    pthread_barrier_wait(h->release);
    return NULL;
}

static void *count_once(void *arg) {
    pairs(arg, 10);
    return (void *)(intptr_t)owns_a_stripe();
}

static void a_forked_child_gets_the_numbers_of_the_threads_it_lost(void **state) {
    (void)state;
#if BH__TSAN
    /* TSan cannot start threads in the child of a threaded process. */
    print_message("ThreadSanitizer cannot start threads in a forked child: skipping\n");
    skip();
#endif
    enum { HOLDERS = BH__OWNED_STRIPES };
    fixture f;
    fixture_open(&f);
    pthread_barrier_t counted, release;
    pthread_barrier_init(&counted, NULL, HOLDERS + 1);
    pthread_barrier_init(&release, NULL, HOLDERS + 1);
    holder h = {&f, &counted, &release};
    pthread_t tid[HOLDERS];
    for (int t = 0; t < HOLDERS; t++)
        assert_int_equal(pthread_create(&tid[t], NULL, count_and_hold, &h), 0);
    pthread_barrier_wait(&counted);
    assert_int_equal(bh__thread_numbers_free(), 0); /* this thread's and the holders' */
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned want = owns_a_stripe() ? BH__OWNED_STRIPES - 1 : BH__OWNED_STRIPES;
        if (bh__thread_numbers_free() != want)
            _exit(1);
        /* The inherited registry is the parent's (BH_EFORKED): count on one
         * of the child's own; thread numbers are the process's. */
        fixture g;
        fixture_open(&g);
        pthread_t t;
        void *owned = NULL;
        if (pthread_create(&t, NULL, count_once, (void *)&g) != 0 || pthread_join(t, &owned) != 0)
            _exit(2);
        _exit(owned != NULL ? 0 : 3);
    }
    int status = -1;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    pthread_barrier_wait(&release);
    for (int t = 0; t < HOLDERS; t++)
        pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&counted);
    pthread_barrier_destroy(&release);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    fixture_close(&f, HOLDERS * 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counters_are_exact_with_more_threads_than_stripes),
        cmocka_unit_test(every_stripe_is_a_128_byte_pair_of_its_own),
        cmocka_unit_test(an_exiting_thread_gives_its_owned_stripe_to_the_next),
        cmocka_unit_test(owned_stripes_change_hands_while_others_count),
        cmocka_unit_test(a_thread_counting_after_its_number_went_back_counts_on_a_shared_stripe),
        cmocka_unit_test(a_forked_child_gets_the_numbers_of_the_threads_it_lost),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
