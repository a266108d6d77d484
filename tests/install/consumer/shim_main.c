/* A consumer of the installed shim: three raw-Buffer-shaped objects for one
 * allocation on the simulated device, one allocator free. It leaves the
 * environment on, so BH_TRACK_SOCKET sends its reports to a bh-trackd. */
#include <bufhandle/shim/shim.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    bh_sim_config sc = bh_sim_default_config(1, 0);
    bh_sim *sim;
    if (bh_sim_create(&sc, &sim) != BH_OK)
        return 1;
    bh_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.allocator = bh_sim_allocator(sim);
    bh_registry *reg;
    bh_shim_device *dev;
    bh_shim_buffer *a, *b, *c;
    if (bh_registry_create(&cfg, &reg) != BH_OK || bh_shim_device_open(reg, 0, &dev) != BH_OK ||
        bh_shim_buffer_create(dev, 1 << 20, BH_SIM_DRAM, &a) != BH_OK ||
        bh_shim_buffer_create_at(dev, bh_shim_buffer_address(a), 1 << 20, BH_SIM_DRAM, &b) != BH_OK ||
        bh_shim_buffer_view(a, 0, 4096, &c) != BH_OK)
        return 1;
    bh_shim_buffer_destroy(b);
    bh_shim_buffer_destroy(a);
    bh_shim_buffer_destroy(c);
    bh_shim_device_close(dev);
    bh_sim_stats st;
    bh_sim_stats_get(sim, &st);
    if (bh_registry_destroy(reg) != BH_OK || st.allocs != 1 || st.frees != 1 || st.double_frees != 0)
        return 1;
    bh_sim_destroy(sim);
    printf("shim consumer: 3 buffer objects, %llu allocator free\n", (unsigned long long)st.frees);
    return 0;
}
