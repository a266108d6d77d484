/* model.c - see model.h. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE 0x100000ull
#define ALIGN 0x1000ull
#define LOG 64 /* calls/events one operation can cause, at most 2 */

typedef struct fake {
    uint8_t used[MODEL_DEVS][MODEL_ADDRS];
    int forced;
    uint64_t forced_address;
} fake;

typedef struct call {
    uint64_t op, dev, addr, size; /* op: 1 alloc, 2 free, 3 ALLOC report, 4 FREE report */
} call;

typedef struct calls {
    call c[LOG];
    int n;
} calls;

/* The model's view of one address: the allocation there, if any. */
typedef struct slot {
    int live;
    uint32_t gen; /* allocations made at this address so far */
    uint64_t size;
    uint32_t refs;
    uint64_t bits; /* the real handle of the live allocation */
} slot;

typedef struct reg_ {
    int used;
    uint32_t dev, addr, gen; /* which allocation it names */
    bh_handle h;
} reg_;

struct model {
    uint32_t dev_base;
    fake real_fake, model_fake; /* the registry's allocator, and the model's copy */
    calls real, expect;         /* this operation's allocator calls and reports */
    slot s[MODEL_DEVS][MODEL_ADDRS];
    reg_ r[MODEL_REGS];
    uint64_t last_seq, ops;
    char error[160];
};

model *model_new(uint32_t dev_base) {
    model *m = calloc(1, sizeof(*m));
    if (m != NULL)
        m->dev_base = dev_base;
    return m;
}

void model_free(model *m) { free(m); }
const char *model_error(const model *m) { return m->error; }
uint64_t model_ops(const model *m) { return m->ops; }

static void log_call(calls *c, uint64_t op, uint64_t dev, uint64_t addr, uint64_t size) {
    if (c->n < LOG)
        c->c[c->n++] = (call){op, dev, addr, size};
}

/* ------------------------------------------------------------ fake allocator */

static int fake_alloc(fake *f, calls *log, uint32_t dev, uint64_t *address) {
    if (f->forced) {
        f->forced = 0;
        *address = f->forced_address;
        log_call(log, 1, dev, *address, 0);
        return 0;
    }
    for (int i = 0; i < MODEL_SLOTS; i++) {
        if (!f->used[dev][i]) {
            f->used[dev][i] = 1;
            *address = BASE + (uint64_t)i * ALIGN;
            log_call(log, 1, dev, *address, 0);
            return 0;
        }
    }
    log_call(log, 1, dev, 0, 0);
    return 1;
}

static void fake_free(fake *f, calls *log, uint32_t dev, uint64_t address) {
    log_call(log, 2, dev, address, 0);
    uint64_t i = (address - BASE) / ALIGN;
    if (address >= BASE && i < MODEL_ADDRS)
        f->used[dev][i] = 0;
}

/* ------------------------------------------------------------ routing */

static model *route(model_route *r, uint32_t device) {
    size_t i = device / MODEL_DEVS;
    return i < r->n ? r->models[i] : NULL;
}

static int route_alloc(void *ctx, uint32_t device, uint64_t size, uint64_t *address) {
    (void)size;
    model *m = route(ctx, device);
    return m == NULL ? 1 : fake_alloc(&m->real_fake, &m->real, device - m->dev_base, address);
}

static void route_free(void *ctx, uint32_t device, uint64_t address, uint64_t size) {
    (void)size;
    model *m = route(ctx, device);
    if (m != NULL)
        fake_free(&m->real_fake, &m->real, device - m->dev_base, address);
}

static void route_report(void *ctx, const bh_event *ev) {
    model *m = route(ctx, ev->device);
    if (m == NULL)
        return;
    if (ev->seq <= m->last_seq)
        snprintf(m->error, sizeof(m->error), "seq went back: %llu after %llu", (unsigned long long)ev->seq,
                 (unsigned long long)m->last_seq);
    m->last_seq = ev->seq;
    log_call(&m->real, ev->kind == BH_EVENT_ALLOC ? 3 : 4, ev->device - m->dev_base, ev->address, ev->size);
}

bh_allocator model_route_allocator(model_route *r) { return (bh_allocator){route_alloc, route_free, r}; }
bh_reporter model_route_reporter(model_route *r) { return (bh_reporter){route_report, r}; }

/* ------------------------------------------------------------ the model */

static int mismatch(model *m, const char *what, bh_status got, bh_status want) {
    if (m->error[0] == '\0')
        snprintf(m->error, sizeof(m->error), "op %llu: %s: got %s, want %s", (unsigned long long)m->ops, what,
                 bh_status_name(got), bh_status_name(want));
    return -1;
}

static slot *slot_at(model *m, uint32_t dev, uint64_t address) {
    uint64_t i = (address - BASE) / ALIGN;
    return address >= BASE && (address - BASE) % ALIGN == 0 && i < MODEL_ADDRS ? &m->s[dev][i] : NULL;
}

/* A new allocation at (dev, address). */
static void born(model *m, slot *sl, uint32_t dev, uint64_t address, uint64_t size) {
    sl->live = 1;
    sl->gen++;
    sl->size = size;
    sl->refs = 1;
    sl->bits = 0;
    log_call(&m->expect, 3, dev, address, size);
}

/* A live allocation of dev, other than at address, whose range meets
 * [address, address + size); NULL if none. */
static slot *overlapping(model *m, uint32_t dev, uint64_t address, uint64_t size) {
    for (uint32_t i = 0; i < MODEL_ADDRS; i++) {
        slot *o = &m->s[dev][i];
        uint64_t start = BASE + i * ALIGN;
        if (o->live && start != address && start < address + size && address < start + o->size)
            return o;
    }
    return NULL;
}

/* The live allocation of dev whose range contains address, and its index. */
static slot *containing(model *m, uint32_t dev, uint64_t address, uint32_t *index) {
    for (uint32_t i = 0; i < MODEL_ADDRS; i++) {
        slot *o = &m->s[dev][i];
        uint64_t start = BASE + i * ALIGN;
        if (o->live && address >= start && address - start < o->size) {
            *index = i;
            return o;
        }
    }
    return NULL;
}

/* Checks h against the allocation in sl and fills register k. */
static int took(model *m, slot *sl, uint32_t dev, uint32_t addr_i, int k, bh_handle h) {
    if (sl->bits == 0) {
        for (uint32_t d = 0; d < MODEL_DEVS; d++)
            for (uint32_t i = 0; i < MODEL_ADDRS; i++)
                if (&m->s[d][i] != sl && m->s[d][i].live && m->s[d][i].bits == h.bits)
                    return mismatch(m, "new allocation got a live allocation's handle", BH_OK, BH_OK);
        sl->bits = h.bits;
    } else if (sl->bits != h.bits) {
        return mismatch(m, "an alias got another handle", BH_OK, BH_OK);
    }
    m->r[k] = (reg_){1, dev, addr_i, sl->gen, h};
    return 0;
}

/* The allocation register k names, or NULL if it is gone (stale). */
static slot *named(model *m, const reg_ *r) {
    slot *sl = &m->s[r->dev][r->addr];
    return sl->live && sl->gen == r->gen ? sl : NULL;
}

int model_step(model *m, bh_registry *reg, uint8_t code, uint8_t a, uint8_t b) {
    m->ops++;
    m->real.n = m->expect.n = 0;
    int k = a % MODEL_REGS;
    uint32_t dev = (uint32_t)(b % MODEL_DEVS);
    uint32_t addr_i = (uint32_t)((b / MODEL_DEVS) % MODEL_ADDRS);
    uint64_t address = BASE + addr_i * ALIGN;
    uint64_t size = (uint64_t)(a / MODEL_REGS % 4) * 64; /* 0: EINVAL */
    /* Wide ranges for the 0.3 operations: into the next one or two addresses. */
    uint64_t wide = ALIGN * (1 + a / MODEL_REGS % 2) + 64;
    uint32_t rdev = m->dev_base + dev;
    bh_handle h = BH_HANDLE_NULL;
    bh_status got = BH_OK, want = BH_OK;
    slot *sl = NULL;
    /* Codes below 0x80 keep the 0.2 operations (and the old corpus its
     * meaning); the upper half selects the 0.3 ones. */
    unsigned op = code < 0x80 ? code % 8u : 8u + (unsigned)(code - 0x80) % MODEL_NEW_OPS;
    switch (op) {
    case 0: /* alloc */
        got = bh_alloc(reg, rdev, size, &h);
        if (size == 0) {
            want = BH_EINVAL;
        } else if (fake_alloc(&m->model_fake, &m->expect, dev, &address) != 0) {
            want = BH_EALLOC;
        } else if (((sl = slot_at(m, dev, address)) != NULL && sl->live) ||
                   overlapping(m, dev, address, size)) {
            want = BH_EEXIST; /* conflict (exact or overlapping): nothing freed, nothing reported */
            sl = NULL;
        } else if (sl != NULL) {
            born(m, sl, dev, address, size);
            addr_i = (uint32_t)((address - BASE) / ALIGN);
        }
        break;
    case 10: /* intern of a wide range */
        size = wide;
        /* fall through */
    case 1: /* intern */
        got = bh_intern(reg, rdev, address, size, &h);
        sl = &m->s[dev][addr_i];
        if (size == 0) {
            want = BH_EINVAL;
            sl = NULL;
        } else if (sl->live && size > sl->size) {
            want = BH_ERANGE;
            sl = NULL;
        } else if (sl->live) {
            sl->refs++;
        } else if (overlapping(m, dev, address, size)) {
            want = BH_EOVERLAP;
            sl = NULL;
        } else {
            born(m, sl, dev, address, size);
        }
        break;
    case 9: /* lookup_containing at an offset into an address */
        address += (uint64_t)(a / MODEL_REGS % 4) * (ALIGN / 4);
        got = bh_lookup_containing(reg, rdev, address, &h);
        sl = containing(m, dev, address, &addr_i);
        if (sl != NULL)
            sl->refs++;
        else
            want = BH_ENOTFOUND;
        break;
    case 11: /* adopt of a wide range */
        size = wide;
        /* fall through */
    case 8: /* adopt: the caller allocated the address itself */
        got = bh_adopt(reg, rdev, address, size, &h);
        sl = &m->s[dev][addr_i];
        if (size == 0) {
            want = BH_EINVAL;
            sl = NULL;
        } else if (sl->live) {
            want = BH_EEXIST; /* conflict: nothing freed, nothing reported */
            sl = NULL;
        } else if (overlapping(m, dev, address, size)) {
            want = BH_EOVERLAP;
            sl = NULL;
        } else {
            born(m, sl, dev, address, size);
        }
        break;
    case 2: /* lookup */
        got = bh_lookup(reg, rdev, address, &h);
        sl = &m->s[dev][addr_i];
        if (sl->live) {
            sl->refs++;
        } else {
            want = BH_ENOTFOUND;
            sl = NULL;
        }
        break;
    case 3: /* retain register k */
    case 4: /* release register k */
    case 5: /* info of register k */
    {
        reg_ *r = &m->r[k];
        slot *n = r->used ? named(m, r) : NULL;
        bh_info info;
        if (op == 3)
            got = bh_retain(reg, r->h);
        else if (op == 4)
            got = bh_release(reg, r->h);
        else
            got = bh_info_get(reg, r->h, &info);
        if (!r->used)
            want = BH_EINVAL; /* the null handle */
        else if (n == NULL)
            want = BH_ESTALE;
        else if (op == 3)
            n->refs++;
        else if (op == 4 && --n->refs == 0) {
            log_call(&m->expect, 4, r->dev, BASE + r->addr * ALIGN, n->size);
            fake_free(&m->model_fake, &m->expect, r->dev, BASE + r->addr * ALIGN);
            n->live = 0;
        } else if (op == 5 && got == BH_OK &&
                   (info.device != m->dev_base + r->dev || info.address != BASE + r->addr * ALIGN ||
                    info.size != n->size || info.refs != n->refs)) {
            return mismatch(m, "bh_info_get fields", got, want);
        }
        break;
    }
    case 6: /* the allocator's next result is forced (maybe a live address) */
        m->real_fake.forced = m->model_fake.forced = 1;
        m->real_fake.forced_address = m->model_fake.forced_address = address;
        break;
    case 7: /* a forged handle: same shape as register k's, other generation */
        if (m->r[k].used) {
            bh_handle forged = {m->r[k].h.bits ^ (0x5a5aull << 40)};
            got = bh_retain(reg, forged);
            want = BH_ESTALE;
        }
        break;
    }
    if (got != want)
        return mismatch(m, "status", got, want);
    if (sl != NULL && took(m, sl, dev, addr_i, k, h) != 0)
        return -1;
    if (m->real.n != m->expect.n || memcmp(m->real.c, m->expect.c, (size_t)m->real.n * sizeof(call)) != 0)
        return mismatch(m, "allocator calls or reports differ", got, want);
    return m->error[0] == '\0' ? 0 : -1;
}

int model_finish(model *m, bh_registry *reg) {
    for (uint32_t d = 0; d < MODEL_DEVS; d++) {
        for (uint32_t i = 0; i < MODEL_ADDRS; i++) {
            slot *sl = &m->s[d][i];
            while (sl->live) {
                if (bh_release(reg, (bh_handle){sl->bits}) != BH_OK)
                    return mismatch(m, "final release", BH_ESTALE, BH_OK);
                if (--sl->refs == 0)
                    sl->live = 0;
            }
        }
    }
    return m->error[0] == '\0' ? 0 : -1;
}
