// test_cpp.cpp - the C++17 RAII wrapper: copy retains, move steals, the
// destructor releases, errors throw bufhandle::error with the status.
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <csetjmp>
#include <utility>
#include <vector>
extern "C" {
#include <cmocka.h>
}

#include "bufhandle/bufhandle.hpp"

namespace {

struct counting_allocator {
    int allocs = 0, frees = 0;
    uint64_t next = 0x1000;
    static int alloc(void *ctx, uint32_t, uint64_t, uint64_t *address) {
        auto *self = static_cast<counting_allocator *>(ctx);
        self->allocs++;
        *address = self->next;
        self->next += 0x1000;
        return 0;
    }
    static void free(void *ctx, uint32_t, uint64_t, uint64_t) {
        static_cast<counting_allocator *>(ctx)->frees++;
    }
    bh_config config() {
        bh_config cfg{};
        cfg.allocator = bh_allocator{&counting_allocator::alloc, &counting_allocator::free, this};
        cfg.flags = BH_CONFIG_NO_ENV;
        return cfg;
    }
};

uint32_t refs(const bufhandle::handle &h) { return h.info().refs; }

void copy_retains_move_steals_destructor_releases(void **) {
    counting_allocator a;
    bh_config cfg = a.config();
    bufhandle::registry reg(cfg);
    {
        bufhandle::handle h = reg.alloc(1, 4096);
        assert_int_equal(refs(h), 1);
        {
            bufhandle::handle copy = h;
            assert_true(copy == h);
            assert_int_equal(refs(h), 2);
            bufhandle::handle moved = std::move(copy);
            assert_false(static_cast<bool>(copy));
            assert_int_equal(refs(h), 2);
            bufhandle::handle assigned;
            assigned = moved;
            assert_int_equal(refs(h), 3);
        }
        assert_int_equal(refs(h), 1);
        assert_int_equal(a.frees, 0);
    }
    assert_int_equal(a.frees, 1);
}

void aliases_from_intern_and_lookup_free_once(void **) {
    counting_allocator a;
    bh_config cfg = a.config();
    bufhandle::registry reg(cfg);
    {
        std::vector<bufhandle::handle> v;
        v.push_back(reg.alloc(4, 1 << 20));
        uint64_t address = v[0].info().address;
        v.push_back(reg.intern(4, address, 4096));
        v.push_back(reg.lookup(4, address));
        assert_int_equal(refs(v[0]), 3);
        v.erase(v.begin());
        assert_int_equal(a.frees, 0);
    }
    assert_int_equal(a.frees, 1);
    assert_int_equal(reg.stats().frees, 1);
}

void errors_throw_with_their_status(void **) {
    counting_allocator a;
    bh_config cfg = a.config();
    bufhandle::registry reg(cfg);
    bh_status seen = BH_OK;
    try {
        reg.lookup(0, 0x1234);
    } catch (const bufhandle::error &e) {
        seen = e.status();
    }
    assert_int_equal(seen, BH_ENOTFOUND);
    try {
        reg.alloc(0, 0);
    } catch (const bufhandle::error &e) {
        seen = e.status();
    }
    assert_int_equal(seen, BH_EINVAL);

    bufhandle::handle h = reg.alloc(0, 64);
    try {
        reg.destroy();
    } catch (const bufhandle::error &e) {
        seen = e.status();
    }
    assert_int_equal(seen, BH_EBUSY);
    assert_int_equal(refs(h), 1); // still usable after EBUSY

    // A handle given to C and adopted back keeps exactly one reference.
    bh_handle raw = h.release_to_c();
    assert_false(static_cast<bool>(h));
    bufhandle::handle back = bufhandle::handle::adopt(reg.get(), raw);
    assert_int_equal(refs(back), 1);
    back.reset();
    assert_int_equal(a.frees, 1);
    try {
        bufhandle::handle stale = bufhandle::handle::adopt(reg.get(), raw);
        bufhandle::handle copy = stale; // retain of a stale handle throws
        (void)copy;
    } catch (const bufhandle::error &e) {
        seen = e.status();
    }
    assert_int_equal(seen, BH_ESTALE);
    reg.destroy();
}

} // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(copy_retains_move_steals_destructor_releases),
        cmocka_unit_test(aliases_from_intern_and_lookup_free_once),
        cmocka_unit_test(errors_throw_with_their_status),
    };
    return cmocka_run_group_tests_name("cpp", tests, nullptr, nullptr);
}
