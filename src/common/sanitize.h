/*
 * sanitize.h - which sanitizer this translation unit is built with, asked
 * one way everywhere.
 *
 * Owns: BH__ASAN and BH__TSAN, each 0 or 1. gcc defines __SANITIZE_ADDRESS__
 * and __SANITIZE_THREAD__; clang defines neither and answers
 * __has_feature(address_sanitizer) / (thread_sanitizer) instead, so a check
 * of the gcc macros alone is silently off in clang builds (the fuzz preset
 * lost the range index's node poisoning that way).
 * Must never: change behaviour by itself; it only answers the question.
 */
#ifndef BH_COMMON_SANITIZE_H
#define BH_COMMON_SANITIZE_H

#if defined(__SANITIZE_ADDRESS__)
#define BH__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BH__ASAN 1
#endif
#endif
#ifndef BH__ASAN
#define BH__ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define BH__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BH__TSAN 1
#endif
#endif
#ifndef BH__TSAN
#define BH__TSAN 0
#endif

#endif /* BH_COMMON_SANITIZE_H */
