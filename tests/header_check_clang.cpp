// Compiles every installed header as a C++17 user's clang++ sees it, with the
// warnings such a user turns on (tests/CMakeLists.txt: -Wold-style-cast,
// -Wconversion, ...). clang++, unlike GCC, flags C casts inside extern "C"
// blocks too, so the shim's inline functions are checked here, not in
// header_check.cpp (built by the project's compiler).
#include "bufhandle/bufhandle.hpp"
#include "shim.h"

static_assert(sizeof(bh_shim_buffer *) == sizeof(void *), "the shim's types are declared");
