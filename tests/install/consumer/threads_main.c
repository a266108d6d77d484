/* A threaded consumer of the installed package, for helgrind and drd: four
 * threads intern, look up and release the same eight addresses with no
 * synchronisation of their own, so aliases take the lock-free hit, and each
 * address's last release (and its allocator free) happens on whichever
 * thread lets go last. Every allocation has host state that its holders read
 * and its allocator free writes: only the library's orderings keep those
 * apart. Each thread also reads the registry's statistics now and then, as
 * a monitor would while others count. Exit 0 when every allocation reported
 * was freed exactly once. */
#include <bufhandle/bufhandle.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define THREADS 4
#define ADDRESSES 8
#define ROUNDS 300

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* the application's own counts */
static long frees, creations;
static unsigned long freed_times[ADDRESSES]; /* host state of each address: read by holders */

static void count_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)ctx, (void)device, (void)size;
    freed_times[address / 4096 - 1]++; /* no holder is left to read it */
    pthread_mutex_lock(&lock);
    frees++;
    pthread_mutex_unlock(&lock);
}

static void count_alloc(void *ctx, const bh_event *ev) {
    (void)ctx;
    if (ev->kind != BH_EVENT_ALLOC)
        return;
    pthread_mutex_lock(&lock);
    creations++;
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    bh_registry *reg = arg;
    uint32_t dom = BH_DOMAIN(1, BH_MEM_DRAM);
    for (unsigned r = 0; r < ROUNDS; r++) {
        unsigned i = r % ADDRESSES;
        uint64_t address = 4096 * (uint64_t)(i + 1);
        bh_handle h, l;
        bh_status st = bh_intern(reg, dom, address, 64, &h);
        if (st == BH_EBUSY)
            continue; /* its previous block is being freed right now */
        if (st != BH_OK)
            return "bh_intern failed";
        bh_info info;
        if (bh_info_get(reg, h, &info) != BH_OK || info.address != address)
            return "bh_info_get failed";
        unsigned long seen = freed_times[i]; /* a holder's read: the free cannot run now */
        if (bh_lookup(reg, dom, address, &l) != BH_OK)
            return "bh_lookup missed a held address";
        if (freed_times[i] != seen)
            return "freed while held";
        if (bh_release(reg, l) != BH_OK || bh_release(reg, h) != BH_OK)
            return "bh_release failed";
        bh_stats stats;
        if (r % 32 == 0 && bh_stats_get(reg, &stats) != BH_OK)
            return "bh_stats_get failed";
    }
    return NULL;
}

int main(void) {
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){NULL, count_free, NULL};
    cfg.reporter = (bh_reporter){count_alloc, NULL};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        return 1;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, reg);
    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *err;
        pthread_join(t[i], &err);
        if (err != NULL) {
            fprintf(stderr, "threads_main: %s\n", (const char *)err);
            bad = 1;
        }
    }
    if (bh_registry_destroy(reg) != BH_OK || frees != creations) {
        fprintf(stderr, "threads_main: %ld frees for %ld creations\n", frees, creations);
        bad = 1;
    }
    return bad;
}
