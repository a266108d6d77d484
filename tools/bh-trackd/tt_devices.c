/*
 * tt_devices.c - the devices bh-trackd --compat-tt describes in answer to
 * TT's DEVICE_INFO_QUERY (docs/protocol.md, "DEVICE_INFO").
 *
 * The server finds no devices (it is not the runtime), so, as TT's server on
 * a host without devices, it answers num_devices 0, is_available 0, unless
 * the operator describes them: --tt-devices SPEC or --tt-devices-file FILE,
 * SPEC being "count=N,arch=NAME,dram=BYTES,l1=BYTES[,dram_channels=N]
 * [,l1_per_core=BYTES]" (all devices alike; a FILE holds one SPEC, lines
 * starting with '#' are comments, lines are joined with ',').
 * Owns: parsing the description, the DEVICE_INFO_RESPONSE fields of the 112-
 * and 144-byte layouts.
 * Must never: derive a count from device ids on the wire (a huge id would
 * claim that many devices), or answer a 72-byte client (TT's 72-byte server
 * does not know the query).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trackd.h"

static const char *const arch_names[] = {"invalid", "grayskull", "wormhole_b0", "blackhole", "quasar"};

/* One "key=value" of a SPEC. 0, or -1 with err filled. */
static int field(td_tt_devices *d, const char *kv, size_t n, char *err, size_t cap) {
    const char *eq = memchr(kv, '=', n);
    if (eq == NULL) {
        snprintf(err, cap, "'%.*s' is no key=value", (int)n, kv);
        return -1;
    }
    size_t klen = (size_t)(eq - kv);
    char val[64];
    size_t vlen = n - klen - 1;
    if (vlen == 0 || vlen >= sizeof(val)) {
        snprintf(err, cap, "bad value for '%.*s'", (int)klen, kv);
        return -1;
    }
    memcpy(val, eq + 1, vlen);
    val[vlen] = '\0';
    if (klen == 4 && strncmp(kv, "arch", 4) == 0) {
        for (uint32_t a = 1; a < sizeof(arch_names) / sizeof(arch_names[0]); a++)
            if (strcmp(val, arch_names[a]) == 0) {
                d->arch = a;
                return 0;
            }
        snprintf(err, cap, "arch is one of grayskull, wormhole_b0, blackhole, quasar");
        return -1;
    }
    static const struct {
        const char *name;
        uint64_t max;
    } keys[] = {{"count", 1u << 16},
                {"dram", UINT64_MAX},
                {"l1", UINT64_MAX},
                {"dram_channels", UINT32_MAX},
                {"l1_per_core", UINT32_MAX}};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        if (strlen(keys[k].name) != klen || strncmp(kv, keys[k].name, klen) != 0)
            continue;
        uint64_t v;
        if (td_parse_u64(val, &v) != 0 || v > keys[k].max) {
            snprintf(err, cap, "%s needs a number up to %llu", keys[k].name, (unsigned long long)keys[k].max);
            return -1;
        }
        uint64_t *dst[] = {NULL, &d->dram, &d->l1, NULL, NULL};
        if (dst[k] != NULL)
            *dst[k] = v;
        else
            *(k == 0 ? &d->count : k == 3 ? &d->dram_channels : &d->l1_per_core) = (uint32_t)v;
        return 0;
    }
    snprintf(err, cap, "unknown key '%.*s'", (int)klen, kv);
    return -1;
}

int td_tt_devices_parse(td_tt_devices *d, const char *spec, char *err, size_t cap) {
    td_tt_devices x = {0};
    for (const char *p = spec; *p != '\0';) {
        size_t n = strcspn(p, ",");
        if (n > 0 && field(&x, p, n, err, cap) != 0)
            return -1;
        p += n + (p[n] == ',');
    }
    if (x.count == 0 || x.arch == 0 || x.dram == 0 || x.l1 == 0) {
        snprintf(err, cap, "count, arch, dram and l1 are needed");
        return -1;
    }
    *d = x;
    return 0;
}

int td_tt_devices_file(td_tt_devices *d, const char *path, char *err, size_t cap) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    char spec[1024] = "", line[256];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (strlen(spec) + strlen(line) + 2 > sizeof(spec)) {
            fclose(f);
            snprintf(err, cap, "%s: too long", path);
            return -1;
        }
        if (spec[0] != '\0')
            strcat(spec, ",");
        strcat(spec, line);
    }
    fclose(f);
    return td_tt_devices_parse(d, spec, err, cap);
}

void td_tt_device_info(const td_server *s, int32_t device, size_t rec, uint8_t *out) {
    const td_tt_devices *d = &s->tt_devs;
    /* The fields start at 72 (112-byte layout) or 88 (144: after cb/kernel). */
    uint8_t *p = out + (rec == BH_TT_RECORD_144 ? 88 : 72);
    int exists = device < 0 ? d->count > 0 : (uint32_t)device < d->count;
    bh_put32(p + 32, (uint32_t)exists); /* is_available */
    bh_put32(p + 36, d->count);         /* num_devices */
    if (device < 0 || !exists)
        return;
    bh_put64(p, d->dram);
    bh_put64(p + 8, d->l1);
    bh_put32(p + 16, d->arch);
    bh_put32(p + 20, d->dram_channels);
    uint64_t per_channel = d->dram_channels > 0 ? d->dram / d->dram_channels : 0;
    bh_put32(p + 24, per_channel <= UINT32_MAX ? (uint32_t)per_channel : 0); /* does not fit u32: 0 */
    bh_put32(p + 28, d->l1_per_core);
}
