/*
 * sanitize_check.c - src/common/sanitize.h answers for gcc and for clang
 * alike. Compiled (syntax only) by CTest with each compiler and sanitizer:
 * clang defines no __SANITIZE_ADDRESS__, and a check of that alone left
 * clang's ASan builds (the fuzz preset) without range-node poisoning.
 *
 * Owns: nothing at run time. Must never: be linked into anything.
 */
#include "sanitize.h"

#if defined(EXPECT_ASAN)
_Static_assert(BH__ASAN == 1 && BH__TSAN == 0, "an ASan build is seen as one");
#elif defined(EXPECT_TSAN)
_Static_assert(BH__ASAN == 0 && BH__TSAN == 1, "a TSan build is seen as one");
#else
_Static_assert(BH__ASAN == 0 && BH__TSAN == 0, "a plain build is seen as one");
#endif
