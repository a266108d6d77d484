/*
 * annotations.h - bh-bench's "annotations" row: what the library's valgrind
 * client requests cost outside valgrind.
 *
 * Owns: the hot-path probe (retain+release, intern alias+release,
 * lookup+release, last release+new intern, 1 thread, 1K live), run here on
 * the default (annotated) library and in bh-bench-plain, the same benchmark
 * linked against the library built without annotations.
 * Must never: compare figures from different runs (the two sides alternate
 * repetition by repetition).
 */
#ifndef BH_BENCH_ANNOTATIONS_H
#define BH_BENCH_ANNOTATIONS_H

#include "bench.h"

/* bh-bench-plain --probe-hot-path: one repetition of the probe, its four
 * ns-per-operation figures on one line of stdout. Returns the exit status. */
int annotations_probe_main(long ops);
/* The row (skipped, with a note on stderr, when this library is not
 * annotated or bh-bench-plain is not next to this program). */
void section_annotations(const opts *o);

#endif
