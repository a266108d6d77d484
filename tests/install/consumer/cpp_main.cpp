// A C++ consumer of the installed package (the static library and
// bufhandle.hpp): copies are references, the last one frees.
#include <bufhandle/bufhandle.hpp>
#include <cstdio>

namespace {
int frees;
int fake_alloc(void *, uint32_t, uint64_t, uint64_t *address) {
    *address = 695055872;
    return 0;
}
void fake_free(void *, uint32_t, uint64_t, uint64_t) { frees++; }
} // namespace

int main() {
    bh_config cfg{};
    cfg.allocator = bh_allocator{fake_alloc, fake_free, nullptr};
    cfg.flags = BH_CONFIG_NO_ENV;
    try {
        bufhandle::registry reg(cfg);
        {
            const uint32_t dev4 = BH_DOMAIN(4, BH_MEM_DRAM);
            bufhandle::handle a = reg.alloc(dev4, 4096);
            bufhandle::handle b = a;
            bufhandle::handle c = reg.lookup(dev4, 695055872);
            if (frees != 0 || a.use_count() != 3)
                return 1;
        }
        reg.destroy();
    } catch (const bufhandle::error &e) {
        std::fprintf(stderr, "cpp consumer: %s\n", e.what());
        return 1;
    }
    if (frees != 1)
        return 1;
    std::printf("cpp consumer: bufhandle %s, %d free for 3 references\n", bh_version(), frees);
    return 0;
}
