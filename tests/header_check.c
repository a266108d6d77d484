/* Compiles the public header alone as C11 with -Wall -Wextra -Wpedantic -Werror. */
#include "bufhandle/bufhandle.h"

int bh_header_check_c(void);
int bh_header_check_c(void) { return bh_handle_is_null(BH_HANDLE_NULL) ? BH_OK : BH_EINVAL; }
