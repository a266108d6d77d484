/*
 * annotations.c - the valgrind client requests' cost outside valgrind (see
 * annotations.h).
 *
 * Owns: the probe, and running bh-bench-plain (the same sources, linked
 * against the library built without BH_VALGRIND_ANNOTATIONS) as a child
 * for the other side of each repetition.
 * Must never: let the child's start-up count (it times its own loops and
 * prints them) or leave the child running.
 */
#define _GNU_SOURCE
#include "annotations.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "output.h"
#include "workers.h"

/* The configs table's hot path, once each, 1 thread, 1K live: the sum of
 * the four ns-per-operation figures (and each in part[] if not NULL). */
static double probe(long ops, double part[CW_COUNT]) {
    static const work works[CW_COUNT] = {W_PAIR, W_INTERN, W_LOOKUP, W_CHURN};
    keyset ks;
    ks_create(&ks, IMPL_BH, 0, 1024);
    double sum = 0;
    for (int k = 0; k < CW_COUNT; k++) {
        worker w = {.what = works[k], .ks = &ks, .ops = ops, .h = {ks.own[0]}};
        double ns = run_workers(1, &w, NULL, NULL);
        if (part != NULL)
            part[k] = ns;
        sum += ns;
    }
    ks_destroy(&ks);
    return sum;
}

int annotations_probe_main(long ops) {
    double part[CW_COUNT];
    probe(ops, part);
    printf("%.3f %.3f %.3f %.3f\n", part[0], part[1], part[2], part[3]);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* bh-bench-plain next to this program, or NULL. */
static const char *plain_path(void) {
    static char path[PATH_MAX];
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    if (snprintf(path, sizeof(path), "%s/bh-bench-plain", dirname(self)) >= (int)sizeof(path))
        return NULL;
    return access(path, X_OK) == 0 ? path : NULL;
}

/* One repetition of the probe in bh-bench-plain: the sum of its figures. */
static double probe_plain(const char *path, long ops) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "'%s' --probe-hot-path --ops %ld", path, ops);
    FILE *child = popen(cmd, "r");
    double part[CW_COUNT];
    int got = child != NULL ? fscanf(child, "%lf %lf %lf %lf", &part[0], &part[1], &part[2], &part[3]) : 0;
    if (child == NULL || pclose(child) != 0 || got != CW_COUNT)
        bench_die("bh-bench-plain --probe-hot-path failed");
    return part[0] + part[1] + part[2] + part[3];
}

void section_annotations(const opts *o) {
#if defined(BH_BENCH_ANNOTATED) && !defined(BH_BENCH_PLAIN)
    const char *path = plain_path();
    if (path == NULL) {
        fprintf(stderr, "bh-bench: annotations: no bh-bench-plain next to this program; no row\n");
        return;
    }
    double annotated[MAX_REPS], plain[MAX_REPS];
    for (int r = 0; r < o->reps; r++) {
        annotated[r] = probe(o->ops, NULL);
        plain[r] = probe_plain(path, o->ops);
    }
    figure *f = add_figure("hot path, valgrind annotations on (4 ops, 1K live)", "ns");
    f->bh = bench_median(annotated, o->reps);
    /* "Cost nothing": within 5%, about this machine's run-to-run noise. */
    add_base(f, "same library, annotations compiled out", bench_median(plain, o->reps), 1 / 1.05);
#else
    (void)o;
    (void)probe_plain;
    (void)plain_path;
    fprintf(stderr, "bh-bench: annotations: this library is built without them; no row\n");
#endif
}
