// Compiles the public header alone as C++17: extern "C" linkage, no C-only syntax.
#include "bufhandle/bufhandle.h"

int bh_header_check_cpp();
int bh_header_check_cpp() { return bh_handle_is_null(BH_HANDLE_NULL) ? BH_OK : BH_EINVAL; }
