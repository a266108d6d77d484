/*
 * test_fork.c - fork() while threads use a registry: the child gets
 * BH_EFORKED at once from every call on a registry its parent made (no hang
 * on a lock a parent thread held, no allocator.free of the parent's device
 * memory, no report), bh_registry_destroy frees the host memory, and a
 * registry the child makes works.
 *
 *   test_fork [children]   (default 24)
 *
 * Two threads allocate, alias, look up and release on two registries (one
 * plain, one with debug tokens) while the main thread forks children one
 * after another. A child that blocks is not waited for forever: the parent
 * polls waitpid for a generous 60 s per child, then kills it and counts it
 * hung; a child that spins is stopped by RLIMIT_CPU (5 s of CPU). The
 * allocator and the reporter count, in memory shared with the children,
 * every call made by a process other than the parent.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic_ops.h>
#include <cmocka.h>

#include "bufhandle/bufhandle.h"
#include "sanitize.h"

#define HANG_LIMIT_S 60
#define CHILD_CPU_S 5

/* In memory shared with every child. */
typedef struct shared {
    AO_t next_address;  /* the bump allocator */
    AO_t child_frees;   /* allocator.free called by a process other than the parent */
    AO_t child_reports; /* reports made by one */
    AO_t parent_allocs; /* ALLOC reports in the parent */
    AO_t parent_frees;  /* allocator.free in the parent */
} shared;

static shared *sh;
static pid_t parent;
static AO_t stop;

static int bump_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)ctx, (void)device;
    *address = (uint64_t)AO_fetch_and_add(&sh->next_address, (AO_t)((size + 4095) & ~(uint64_t)4095));
    return 0;
}

static void counted_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)address, (void)size;
    AO_fetch_and_add1(getpid() == parent ? &sh->parent_frees : &sh->child_frees);
}

static void counted_report(void *ctx, const bh_event *ev) {
    (void)ctx;
    if (getpid() != parent)
        AO_fetch_and_add1(&sh->child_reports);
    else if (ev->kind == BH_EVENT_ALLOC)
        AO_fetch_and_add1(&sh->parent_allocs);
}

static bh_registry *make(uint32_t flags) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){bump_alloc, counted_free, NULL};
    cfg.reporter = (bh_reporter){counted_report, NULL};
    cfg.flags = BH_CONFIG_NO_ENV | flags;
    bh_registry *reg = NULL;
    assert_int_equal(bh_registry_create(&cfg, &reg), BH_OK);
    return reg;
}

/* ======================== The parent's threads ======================== */

static void *churn(void *arg) {
    bh_registry *reg = arg;
    uint32_t dom = BH_DOMAIN(1, BH_MEM_DRAM);
    while (!AO_load_acquire(&stop)) {
        bh_handle a, b, c;
        uint64_t address;
        if (bh_alloc_addr(reg, dom, 4096, &a, &address) != BH_OK)
            return "bh_alloc_addr";
        if (bh_intern(reg, dom, address, 4096, &b) != BH_OK || bh_lookup(reg, dom, address, &c) != BH_OK)
            return "alias";
        if (bh_release(reg, c) != BH_OK || bh_release(reg, b) != BH_OK || bh_release(reg, a) != BH_OK)
            return "release";
    }
    return NULL;
}

/* ======================== The child ======================== */

/* Every call on a registry the parent made, with a handle the parent holds:
 * BH_EFORKED. Returns 0, or the number of the check that failed. */
static int parents_registry_is_forked(bh_registry *reg, bh_handle held, uint64_t address) {
    uint32_t dom = BH_DOMAIN(1, BH_MEM_DRAM);
    bh_handle h;
    bh_info info;
    bh_stats st;
    uint64_t got;
    const bh_status answers[] = {
        bh_alloc(reg, dom, 4096, &h),
        bh_alloc_addr(reg, dom, 4096, &h, &got),
        bh_alloc_ex(reg, dom, 4096, NULL, &h),
        bh_adopt(reg, dom, 1u << 30, 4096, &h),
        bh_intern(reg, dom, address, 4096, &h),
        bh_lookup(reg, dom, address, &h),
        bh_lookup_containing(reg, dom, address + 1, &h),
        bh_retain(reg, held),
        bh_info_get(reg, held, &info),
        bh_dup(reg, held, &h),
        bh_release(reg, held),
        bh_stats_get(reg, &st),
        bh_registry_dump(reg, stderr, 0),
    };
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++)
        if (answers[i] != BH_EFORKED)
            return 10 + (int)i;
    /* Host memory only: no free, no report (checked by the parent). */
    if (bh_registry_destroy(reg) != BH_OK)
        return 30;
    return 0;
}

static int child_frees;
static void child_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)address, (void)size;
    child_frees++;
}

/* A registry the child makes is the child's own and works. */
static int own_registry_works(void) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){NULL, child_free, NULL};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    bh_handle a, b;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        return 40;
    if (bh_intern(reg, 7, 0x1000, 64, &a) != BH_OK || bh_intern(reg, 7, 0x1000, 64, &b) != BH_OK ||
        bh_release(reg, a) != BH_OK || bh_release(reg, b) != BH_OK)
        return 41;
    if (child_frees != 1 || bh_registry_destroy(reg) != BH_OK)
        return 42;
    return 0;
}

typedef struct held {
    bh_registry *reg;
    bh_handle h;
    uint64_t address;
} held;

static void run_child(const held *regs, int n) {
    struct rlimit cpu = {CHILD_CPU_S, CHILD_CPU_S};
    (void)setrlimit(RLIMIT_CPU, &cpu);
    for (int i = 0; i < n; i++) {
        int rc = parents_registry_is_forked(regs[i].reg, regs[i].h, regs[i].address);
        if (rc != 0)
            _exit(rc + 50 * i);
    }
    _exit(own_registry_works());
}

/* ======================== The parent ======================== */

/* The child's exit status, or -1 if it was still running after
 * HANG_LIMIT_S (it is killed). Polls: the bound is for a hung child only. */
static int reap(pid_t pid) {
    struct timespec t0, now, nap = {0, 2 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > HANG_LIMIT_S) {
            kill(pid, SIGKILL);
            (void)waitpid(pid, &status, 0);
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

static long children = 24;

/* The fork loops below skip under ASan and TSan: gcc 12's sanitizers take
 * none of their allocator's locks across fork(), so a child forked while a
 * parent thread was inside malloc or free may find one held by a thread it
 * does not have, and wait for it forever. Caught under gdb with the loops
 * run beside two busy loops (ASan: 13 of about 4,600 children): each hung
 * child had its one thread in __sanitizer::Mutex::Lock of a size class's
 * region, in SizeClassAllocator64::GetFromAllocator, under asan_calloc or
 * asan_posix_memalign, called by bh_registry_create (bh__diag_attach,
 * bh__tokens_create) or the range pool's first arena; no lock of the
 * library's was held. libasan 12 has no fork handler at all (upstream
 * compiler-rt added one for ASan in LLVM 18). Stopping the parent's threads
 * outside malloc around each fork would also stop them outside the
 * library's locks, which is what these loops fork beside, so they skip;
 * the debug build runs them. */
static void skip_under_a_sanitizer(void) {
#if BH__TSAN || BH__ASAN
    print_message("the sanitizers of gcc 12 cannot fork a process whose threads allocate: skipping\n");
    skip();
#endif
}

static void children_of_a_threaded_process_get_eforked_and_never_hang(void **state) {
    (void)state;
    skip_under_a_sanitizer();
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    sh->next_address = 1u << 20;
    parent = getpid();
    held regs[2];
    regs[0].reg = make(0);
    regs[1].reg = make(BH_CONFIG_DEBUG_REFS | BH_CONFIG_HISTORY);
    for (int i = 0; i < 2; i++)
        assert_int_equal(
            bh_alloc_addr(regs[i].reg, BH_DOMAIN(1, BH_MEM_DRAM), 4096, &regs[i].h, &regs[i].address), BH_OK);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, regs[i].reg), 0);

    int hung = 0, failed = 0, first_failure = 0;
    for (long k = 0; k < children; k++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            run_child(regs, 2);
        int rc = reap(pid);
        if (rc == -1)
            hung++;
        else if (rc != 0 && failed++ == 0)
            first_failure = rc;
    }
    AO_store_release(&stop, 1);
    for (int i = 0; i < 2; i++) {
        void *err;
        pthread_join(t[i], &err);
        if (err != NULL)
            fail_msg("parent thread: %s", (const char *)err);
    }
    printf("fork loop: %ld children, %d hung, %d failed (first exit status %d), %lu allocator frees and %lu "
           "reports in children\n",
           children, hung, failed, first_failure, (unsigned long)sh->child_frees,
           (unsigned long)sh->child_reports);
    assert_int_equal(hung, 0);
    assert_int_equal(failed, 0);
    assert_int_equal(sh->child_frees, 0);
    assert_int_equal(sh->child_reports, 0);

    /* The parent is untouched: its registries work and free what they made. */
    for (int i = 0; i < 2; i++) {
        bh_stats st;
        assert_int_equal(bh_stats_get(regs[i].reg, &st), BH_OK);
        assert_int_equal(st.live_handles, 1);
        assert_int_equal(bh_release(regs[i].reg, regs[i].h), BH_OK);
        assert_int_equal(bh_registry_destroy(regs[i].reg), BH_OK);
    }
    assert_int_equal(sh->parent_frees, sh->parent_allocs);
    munmap(sh, sizeof(*sh));
}

/* A parent thread makes and destroys registries with diagnostics (their
 * process-wide lists: issuers, and with BH_LEAK_REPORT in the environment
 * the at-exit leak report's list) while the main thread forks: each child
 * makes such a registry of its own and must never find those lists locked
 * by the parent thread. diag_flags: the registries' flags (BH_CONFIG_NO_ENV
 * keeps the environment out). */
static uint32_t diag_flags;

static bh_registry *make_diag(bh_allocator allocator) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = allocator;
    cfg.flags = diag_flags;
    bh_registry *reg = NULL;
    return bh_registry_create(&cfg, &reg) == BH_OK ? reg : NULL;
}

static void *make_diag_registries(void *arg) {
    (void)arg;
    while (!AO_load_acquire(&stop)) {
        bh_registry *reg = make_diag((bh_allocator){bump_alloc, counted_free, NULL});
        if (reg == NULL)
            return "bh_registry_create";
        if (bh_registry_destroy(reg) != BH_OK)
            return "bh_registry_destroy";
    }
    return NULL;
}

static void diag_child(void) {
    struct rlimit cpu = {CHILD_CPU_S, CHILD_CPU_S};
    (void)setrlimit(RLIMIT_CPU, &cpu);
    bh_registry *reg = make_diag((bh_allocator){NULL, child_free, NULL});
    _exit(reg == NULL || bh_registry_destroy(reg) != BH_OK);
}

static long diag_children = 600;

static void fork_beside_diagnostic_registries(uint32_t flags, long n) {
    skip_under_a_sanitizer();
    diag_flags = flags;
    AO_store_release(&stop, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, make_diag_registries, NULL), 0);
    int hung = 0, failed = 0;
    for (long k = 0; k < n; k++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            diag_child();
        int rc = reap(pid);
        hung += rc == -1;
        failed += rc > 0;
    }
    AO_store_release(&stop, 1);
    void *err;
    pthread_join(t, &err);
    if (err != NULL)
        fail_msg("parent thread: %s", (const char *)err);
    printf("diagnostic registries: %ld children, %d hung, %d failed\n", n, hung, failed);
    assert_int_equal(hung, 0);
    assert_int_equal(failed, 0);
}

static void a_child_makes_a_diagnostic_registry_while_a_parent_thread_does(void **state) {
    (void)state;
    fork_beside_diagnostic_registries(BH_CONFIG_NO_ENV | BH_CONFIG_DEBUG_REFS, diag_children);
}

/* The leak report's list is joined only through the environment. Its lock
 * is held for a smaller share of the parent thread's loop than the issuers'
 * (a registry without tokens is made faster), so more children: without the
 * fork handlers about one child in a thousand hung. */
static void a_child_makes_a_leak_reported_registry_while_a_parent_thread_does(void **state) {
    (void)state;
    unsetenv("BH_DEBUG");
    setenv("BH_LEAK_REPORT", "1", 1);
    fork_beside_diagnostic_registries(0, 3 * diag_children);
    unsetenv("BH_LEAK_REPORT");
}

static void eforked_has_a_name_and_a_message(void **state) {
    (void)state;
    assert_int_equal(BH_EFORKED, -11);
    assert_string_equal(bh_status_name(BH_EFORKED), "BH_EFORKED");
    assert_true(strlen(bh_strerror(BH_EFORKED)) > 0);
}

int main(int argc, char **argv) {
    if (argc > 1 && (children = strtol(argv[1], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: test_fork [children]\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(eforked_has_a_name_and_a_message),
        cmocka_unit_test(children_of_a_threaded_process_get_eforked_and_never_hang),
        cmocka_unit_test(a_child_makes_a_diagnostic_registry_while_a_parent_thread_does),
        cmocka_unit_test(a_child_makes_a_leak_reported_registry_while_a_parent_thread_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
