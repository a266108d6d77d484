/*
 * fuzz_api.c - API operation sequences, checked against a reference model.
 *
 * Each input is a program of operations (alloc, intern, lookup, retain,
 * release, info, forced allocator results, stats) run on a real registry and
 * on a plain model of the contract: a list of allocations with reference
 * counts. Both sides get their own copy of one deterministic fake allocator.
 * After every operation the statuses, the allocator calls and the reports
 * (kind, device, address, size, seq) must be identical, and handles must name
 * the same allocations. Single-threaded: the model is exact.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bufhandle/bufhandle.h"

#define DEVS 3
#define SLOTS 6    /* addresses the allocator hands out per device */
#define ADDRS 8    /* addresses the program may name (2 beyond the pool) */
#define BASE 0x100000ull
#define ALIGN 0x1000ull
#define HSLOTS 8   /* handle registers of the program */
#define MAXB 512   /* model allocations per input (more than 300 operations can make) */
#define LOG 1024

/* ------------------------------------------------------------ fake allocator */

typedef struct fake {
    uint8_t used[DEVS][ADDRS];
    int forced;
    uint64_t forced_address;
    uint64_t log[LOG][3]; /* op (1 alloc, 2 free), device, address */
    int nlog;
} fake;

static void fake_log(fake *f, uint64_t op, uint64_t dev, uint64_t addr) {
    if (f->nlog < LOG) {
        f->log[f->nlog][0] = op;
        f->log[f->nlog][1] = dev;
        f->log[f->nlog][2] = addr;
        f->nlog++;
    }
}

static int fake_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    fake *f = ctx;
    (void)size;
    if (device >= DEVS)
        return 1;
    if (f->forced) {
        f->forced = 0;
        *address = f->forced_address;
        fake_log(f, 1, device, *address);
        return 0;
    }
    for (int i = 0; i < SLOTS; i++) {
        if (!f->used[device][i]) {
            f->used[device][i] = 1;
            *address = BASE + (uint64_t)i * ALIGN;
            fake_log(f, 1, device, *address);
            return 0;
        }
    }
    fake_log(f, 1, device, 0);
    return 1;
}

static void fake_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    fake *f = ctx;
    (void)size;
    fake_log(f, 2, device, address);
    uint64_t i = (address - BASE) / ALIGN;
    if (device < DEVS && address >= BASE && i < ADDRS)
        f->used[device][i] = 0;
}

/* ------------------------------------------------------------ reports */

typedef struct events {
    bh_event ev[LOG];
    int n;
} events;

static void record(void *ctx, const bh_event *ev) {
    events *e = ctx;
    if (e->n < LOG)
        e->ev[e->n++] = *ev;
}

/* ------------------------------------------------------------ model */

typedef struct mblock {
    int live;
    uint32_t dev;
    uint64_t addr, size;
    uint32_t refs;
    uint64_t bits; /* the real handle, once seen */
} mblock;

typedef struct model {
    mblock b[MAXB];
    int nb;
    fake alloc;
    events out;
    uint64_t seq;
} model;

static int m_find(model *m, uint32_t dev, uint64_t addr) {
    for (int i = 0; i < m->nb; i++)
        if (m->b[i].live && m->b[i].dev == dev && m->b[i].addr == addr)
            return i;
    return -1;
}

static void m_report(model *m, bh_event_kind kind, const mblock *b) {
    bh_event ev = {kind, b->dev, b->addr, b->size, ++m->seq};
    record(&m->out, &ev);
}

static int m_new(model *m, uint32_t dev, uint64_t addr, uint64_t size) {
    if (m->nb == MAXB)
        return -1;
    m->b[m->nb] = (mblock){1, dev, addr, size, 1, 0};
    m_report(m, BH_EVENT_ALLOC, &m->b[m->nb]);
    return m->nb++;
}

/* ------------------------------------------------------------ the check */

static void fail(const char *what, int op) {
    fprintf(stderr, "fuzz_api: mismatch: %s at operation %d\n", what, op);
    abort();
}

/* The real handle of model block i must be consistent with what we saw. */
static void same_handle(model *m, int i, bh_handle h, int op) {
    if (m->b[i].bits == 0) {
        for (int k = 0; k < m->nb; k++)
            if (k != i && m->b[k].live && m->b[k].bits == h.bits)
                fail("new allocation got a live allocation's handle", op);
        m->b[i].bits = h.bits;
    } else if (m->b[i].bits != h.bits) {
        fail("alias got a different handle", op);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static model m;
    static fake real_alloc;
    static events real_out;
    memset(&m, 0, sizeof(m));
    memset(&real_alloc, 0, sizeof(real_alloc));
    memset(&real_out, 0, sizeof(real_out));
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = (bh_allocator){fake_alloc, fake_free, &real_alloc};
    cfg.reporter = (bh_reporter){record, &real_out};
    cfg.flags = BH_CONFIG_NO_ENV;
    bh_registry *reg;
    if (bh_registry_create(&cfg, &reg) != BH_OK)
        abort();
    bh_handle hreg[HSLOTS];
    int mreg[HSLOTS]; /* model block of each register, -1: none */
    memset(hreg, 0, sizeof(hreg));
    for (int k = 0; k < HSLOTS; k++)
        mreg[k] = -1;

    int op = 0;
    for (size_t p = 0; p + 3 <= size && op < 300; p += 3, op++) {
        uint8_t code = data[p] % 8, a = data[p + 1], b = data[p + 2];
        int k = a % HSLOTS;
        uint32_t dev = (uint32_t)(b % DEVS);
        uint64_t addr = BASE + (uint64_t)((b / DEVS) % ADDRS) * ALIGN;
        uint64_t sz = (uint64_t)(a / HSLOTS % 4) * 64; /* 0 tests EINVAL */
        bh_status got = BH_OK, want = BH_OK;
        bh_handle h = BH_HANDLE_NULL;
        int mi = -1;
        switch (code) {
        case 0: /* alloc */
            got = bh_alloc(reg, dev, sz, &h);
            if (sz == 0) {
                want = BH_EINVAL;
            } else {
                uint64_t address;
                if (fake_alloc(&m.alloc, dev, sz, &address) != 0)
                    want = BH_EALLOC;
                else if (m_find(&m, dev, address) >= 0)
                    want = BH_EEXIST;
                else if ((mi = m_new(&m, dev, address, sz)) < 0)
                    goto done; /* the model is full: stop here */
            }
            break;
        case 1: /* intern */
            got = bh_intern(reg, dev, addr, sz, &h);
            if (sz == 0) {
                want = BH_EINVAL;
            } else if ((mi = m_find(&m, dev, addr)) >= 0) {
                if (sz > m.b[mi].size) {
                    want = BH_ERANGE;
                    mi = -1;
                } else {
                    m.b[mi].refs++;
                }
            } else if ((mi = m_new(&m, dev, addr, sz)) < 0) {
                goto done;
            }
            break;
        case 2: /* lookup */
            got = bh_lookup(reg, dev, addr, &h);
            if ((mi = m_find(&m, dev, addr)) >= 0)
                m.b[mi].refs++;
            else
                want = BH_ENOTFOUND;
            break;
        case 3: /* retain register k */
        case 4: /* release register k */
        case 5: /* info of register k */
        {
            int r = mreg[k];
            if (code == 3)
                got = bh_retain(reg, hreg[k]);
            else if (code == 4)
                got = bh_release(reg, hreg[k]);
            bh_info info;
            if (code == 5)
                got = bh_info_get(reg, hreg[k], &info);
            if (r < 0)
                want = BH_EINVAL; /* null handle */
            else if (!m.b[r].live)
                want = BH_ESTALE;
            else if (code == 3)
                m.b[r].refs++;
            else if (code == 4 && --m.b[r].refs == 0) {
                m_report(&m, BH_EVENT_FREE, &m.b[r]);
                fake_free(&m.alloc, m.b[r].dev, m.b[r].addr, m.b[r].size);
                m.b[r].live = 0;
            } else if (code == 5 && got == BH_OK &&
                       (info.device != m.b[r].dev || info.address != m.b[r].addr || info.size != m.b[r].size ||
                        info.refs != m.b[r].refs))
                fail("bh_info_get", op);
            break;
        }
        case 6: /* the allocator's next result is forced (maybe a live address) */
            real_alloc.forced = m.alloc.forced = 1;
            real_alloc.forced_address = m.alloc.forced_address = addr;
            break;
        case 7: { /* stats */
            bh_stats st;
            got = bh_stats_get(reg, &st);
            uint64_t live = 0;
            for (int i = 0; i < m.nb; i++)
                live += (uint64_t)m.b[i].live;
            if (st.live_handles != live)
                fail("live_handles", op);
            break;
        }
        }
        if (got != want)
            fail(bh_status_name(got), op);
        if (mi >= 0 && want == BH_OK) {
            same_handle(&m, mi, h, op);
            hreg[k] = h;
            mreg[k] = mi;
        }
        if (real_out.n != m.out.n || memcmp(real_out.ev, m.out.ev, (size_t)m.out.n * sizeof(bh_event)) != 0)
            fail("reports", op);
        if (real_alloc.nlog != m.alloc.nlog ||
            memcmp(real_alloc.log, m.alloc.log, (size_t)m.alloc.nlog * sizeof(real_alloc.log[0])) != 0)
            fail("allocator calls", op);
    }
done:
    /* Give every reference back: the registry must then be empty. */
    for (int i = 0; i < m.nb; i++)
        while (m.b[i].live && m.b[i].refs > 0) {
            if (bh_release(reg, (bh_handle){m.b[i].bits}) != BH_OK)
                fail("final release", op);
            if (--m.b[i].refs == 0)
                m.b[i].live = 0;
        }
    if (bh_registry_destroy(reg) != BH_OK)
        fail("destroy", op);
    return 0;
}
