// Compiles the public headers alone as C++17: extern "C" linkage, no C-only
// syntax, and no warning a C++ user turns on (CMakeLists.txt adds
// -Wold-style-cast and -Wuseless-cast to this file) from bufhandle.hpp.
#include "bufhandle/bufhandle.hpp"

static_assert(bufhandle::domain(3, BH_MEM_L1) == 0x31u, "device 3, L1");
static_assert(bufhandle::domain_device(bufhandle::domain(0xabc, 9)) == 0xabcu, "device of a domain");
static_assert(bufhandle::domain_kind(bufhandle::domain(7, 0x1f)) == 0xfu, "kind keeps 4 bits");

int bh_header_check_cpp();
int bh_header_check_cpp() { return bh_handle_is_null(BH_HANDLE_NULL) ? BH_OK : BH_EINVAL; }
