/*
 * status.c - text for status codes, and the version string.
 *
 * Owns: bh_strerror, bh_status_name, bh_version, all generated from
 * BH_STATUS_MAP so a new code cannot be added without its text.
 * Must never: allocate or depend on locale.
 */
#include "internal.h"

const char *bh_strerror(bh_status status) {
    switch (status) {
#define XX(name, code, text)                                                                                 \
    case BH_##name:                                                                                          \
        return text;
        BH_STATUS_MAP(XX)
#undef XX
    }
    return "unknown status";
}

const char *bh_status_name(bh_status status) {
    switch (status) {
#define XX(name, code, text)                                                                                 \
    case BH_##name:                                                                                          \
        return "BH_" #name;
        BH_STATUS_MAP(XX)
#undef XX
    }
    return "BH_UNKNOWN";
}

const char *bh_version(void) { return BH_VERSION_STRING; }
