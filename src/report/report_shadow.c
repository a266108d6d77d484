/*
 * report_shadow.c - each stream's shadow of its live set (report_socket.h),
 * the source of every resync.
 *
 * Owns: the chained, incrementally grown table of live allocations, the
 * owed list of a snapshot being sent, and copying a snapshot chunk.
 * Must never: be touched without the stream's lock, rehash the whole set
 * in one call (growth moves a few buckets per call), or grow while a
 * snapshot's cursor walks the table.
 */
#include <string.h>

#include "report_socket.h"

/* ======================== Shadow live set (under s->lock) ======================== */

static snode *node_take(shadow *sh) {
    if (sh->spare == NULL) {
        nblock *b = bh__calloc(1, sizeof(*b));
        if (b == NULL)
            return NULL;
        b->next = sh->blocks;
        sh->blocks = b;
        for (int i = 0; i < NODE_BLOCK; i++) {
            b->n[i].next = sh->spare;
            sh->spare = &b->n[i];
        }
    }
    snode *x = sh->spare;
    sh->spare = x->next;
    return x;
}

void rs_node_give(shadow *sh, snode *x) {
    x->next = sh->spare;
    sh->spare = x;
}

void rs_migrate(shadow *sh, size_t buckets) {
    while (sh->old != NULL && buckets-- > 0) {
        snode *x = sh->old[sh->moved];
        while (x != NULL) {
            snode *next = x->next;
            size_t b = (size_t)bh__key_hash(x->device, x->address) & (sh->nb - 1);
            x->next = sh->tab[b];
            sh->tab[b] = x;
            x = next;
        }
        sh->old[sh->moved] = NULL;
        if (++sh->moved == sh->old_nb) {
            bh__free(sh->old);
            sh->old = NULL;
            sh->old_nb = sh->moved = 0;
        }
    }
}

/* The head of the chain that holds (or would hold) the key; *bucket is its
 * index and *in_tab says whether that is an index into tab (else old). */
static snode **chain_of(shadow *sh, uint32_t device, uint64_t address, size_t *bucket, int *in_tab) {
    uint64_t h = bh__key_hash(device, address);
    if (sh->old != NULL && (size_t)(h & (sh->old_nb - 1)) >= sh->moved) {
        *bucket = (size_t)(h & (sh->old_nb - 1));
        *in_tab = 0;
        return &sh->old[*bucket];
    }
    *bucket = (size_t)(h & (sh->nb - 1));
    *in_tab = 1;
    return &sh->tab[*bucket];
}

/* The link in the chain at head that points to the key's node (to NULL if
 * it is not there). */
static snode **find(snode **head, uint32_t device, uint64_t address) {
    snode **p = head;
    while (*p != NULL && !((*p)->device == device && (*p)->address == address))
        p = &(*p)->next;
    return p;
}

/* What every put and delete does while the table grows (a test, not a call,
 * on the report path when it does not). */
static void migrate_some(shadow *sh) {
    if (sh->old != NULL)
        rs_migrate(sh, 2);
}

void rs_shadow_free(shadow *sh) {
    while (sh->blocks != NULL) {
        nblock *b = sh->blocks;
        sh->blocks = b->next;
        bh__free(b);
    }
    bh__free(sh->tab);
    bh__free(sh->old);
    memset(sh, 0, sizeof(*sh));
}

/* A node of the snapshot being sent, deleted (or replaced) before the cursor
 * reached its bucket: the snapshot still owes it, so it is parked on the owed
 * list instead of being reused. No growth runs during a snapshot, so the
 * bucket is a tab index. */
static void owe(stream *s, snode *x, size_t bucket, int in_tab) {
    if (s->snap_active && in_tab && x->epoch != s->snap_epoch && bucket >= s->snap_cursor) {
        x->next = s->owed;
        s->owed = x;
    } else {
        rs_node_give(&s->live, x);
    }
}

/* Under s->lock. Returns 0, or -1 when host memory ran out (the set is then
 * incomplete, and the caller counts a drop). */
int rs_shadow_put(stream *s, uint32_t device, uint64_t address, uint64_t size, uint64_t since) {
    shadow *sh = &s->live;
    migrate_some(sh);
    if (sh->tab == NULL) {
        sh->tab = bh__calloc(64, sizeof(snode *));
        if (sh->tab == NULL)
            return -1;
        sh->nb = 64;
    } else if (sh->old == NULL && !s->snap_active && sh->n >= sh->nb) {
        /* Start growing (no growth during a snapshot: its cursor walks tab).
         * The new table is one calloc; moving the nodes is spread out. */
        snode **tab = bh__calloc(sh->nb * 2, sizeof(snode *));
        if (tab != NULL) { /* else chains just get longer */
            sh->old = sh->tab;
            sh->old_nb = sh->nb;
            sh->moved = 0;
            sh->tab = tab;
            sh->nb *= 2;
        }
    }
    size_t bucket;
    int in_tab;
    snode **head = chain_of(sh, device, address, &bucket, &in_tab); /* one hash per report */
    snode **p = find(head, device, address);
    snode *x = *p;
    if (x != NULL) { /* ALLOC of a live key (a naive client): replace */
        *p = x->next;
        sh->n--;
        owe(s, x, bucket, in_tab);
    }
    x = node_take(sh);
    if (x == NULL)
        return -1;
    *x = (snode){*head, address, size, since, device, s->snap_epoch};
    *head = x;
    sh->n++;
    return 0;
}

/* Under s->lock. */
void rs_shadow_del(stream *s, uint32_t device, uint64_t address) {
    shadow *sh = &s->live;
    if (sh->tab == NULL)
        return;
    migrate_some(sh);
    size_t bucket;
    int in_tab;
    snode **p = find(chain_of(sh, device, address, &bucket, &in_tab), device, address);
    snode *x = *p;
    if (x == NULL)
        return;
    *p = x->next;
    sh->n--;
    owe(s, x, bucket, in_tab);
}

/* Entry i of the chunk being copied is node x. */
static void take(conn *c, size_t i, const snode *x) {
    c->snap[i] = (kentry){x->address, x->device, 1, x->device};
    c->snap_size[i] = x->size;
    c->snap_since[i] = x->since;
}

/* Under s->lock: copies up to CHUNK entries of s's snapshot into c->snap
 * (owed nodes first, then buckets from the cursor). Returns the count; 0
 * means the snapshot is complete. */
size_t rs_copy_chunk(conn *c, stream *s) {
    size_t n = 0;
    while (s->owed != NULL && n < CHUNK) {
        snode *x = s->owed;
        s->owed = x->next;
        take(c, n++, x);
        rs_node_give(&s->live, x);
    }
    shadow *sh = &s->live;
    size_t scanned = 0;
    while (s->snap_cursor < sh->nb && n < CHUNK && scanned++ < 4 * CHUNK) {
        size_t len = 0;
        for (snode *x = sh->tab[s->snap_cursor]; x != NULL; x = x->next)
            len += x->epoch != s->snap_epoch;
        if (n + len > c->snap_cap) {
            if (n > 0)
                break; /* the next chunk takes this bucket whole */
            /* A chain longer than a chunk (only with colliding keys): make room. */
            kentry *e = bh__calloc(len, sizeof(*e));
            uint64_t *sz = bh__calloc(len, sizeof(*sz)), *since = bh__calloc(len, sizeof(*since));
            if (e == NULL || sz == NULL || since == NULL) {
                bh__free(e);
                bh__free(sz);
                bh__free(since);
                break; /* retried next step */
            }
            bh__free(c->snap);
            bh__free(c->snap_size);
            bh__free(c->snap_since);
            c->snap = e;
            c->snap_size = sz;
            c->snap_since = since;
            c->snap_cap = len;
        }
        for (snode *x = sh->tab[s->snap_cursor]; x != NULL; x = x->next) {
            if (x->epoch == s->snap_epoch)
                continue; /* inserted after the snapshot point */
            take(c, n++, x);
        }
        s->snap_cursor++;
    }
    return n;
}
