// Compiles the public headers alone as C++17: extern "C" linkage, no C-only
// syntax, and no warning a C++ user turns on (CMakeLists.txt adds
// -Wold-style-cast, -Wuseless-cast, -Wzero-as-null-pointer-constant and
// -Wconversion to this file) from bufhandle.hpp or from bufhandle.h's macros
// used as C++ code uses them: with literals, variables of every integer
// width, an enum and a domain already uint32_t, in constant expressions and
// case labels.
#include "bufhandle/bufhandle.hpp"

static_assert(bufhandle::domain(3, BH_MEM_L1) == 0x31u, "device 3, L1");
static_assert(bufhandle::domain_device(bufhandle::domain(0xabc, 9)) == 0xabcu, "device of a domain");
static_assert(bufhandle::domain_kind(bufhandle::domain(7, 0x1f)) == 0xfu, "kind keeps 4 bits");
static_assert(BH_DOMAIN(3, BH_MEM_L1) == 0x31u, "the macro, as the function");
static_assert(BH_DOMAIN_DEVICE(BH_DOMAIN(0xabc, 9)) == 0xabcu && BH_DOMAIN_KIND(BH_DOMAIN(7, 0x1f)) == 0xfu,
              "device and kind of a domain");

enum header_check_kind { HEADER_CHECK_KIND = 7 };

int bh_header_check_cpp();
uint32_t bh_header_check_domains(int device, unsigned kind, uint64_t wide, uint32_t domain, uint16_t narrow);

int bh_header_check_cpp() { return bh_handle_is_null(BH_HANDLE_NULL) ? BH_OK : BH_EINVAL; }

uint32_t bh_header_check_domains(int device, unsigned kind, uint64_t wide, uint32_t domain, uint16_t narrow) {
    switch (domain) {
    case BH_DOMAIN(1, BH_MEM_DRAM):
        return BH_DOMAIN_DEVICE(domain);
    default:
        break;
    }
    return BH_DOMAIN(device, kind) ^ BH_DOMAIN(wide, HEADER_CHECK_KIND) ^ BH_DOMAIN(domain, domain) ^
           BH_DOMAIN(narrow, BH_MEM_L1) ^ BH_DOMAIN_DEVICE(wide) ^ BH_DOMAIN_KIND(domain) ^
           BH_DOMAIN_KIND(device);
}
