// bufhandle.hpp - header-only C++17 RAII wrapper over the bufhandle C API.
//
//   bufhandle::registry reg(cfg);                  // owns a bh_registry
//   bufhandle::handle a = reg.alloc(4, 1 << 20);   // one reference
//   bufhandle::handle b = a;                       // copy = bh_retain
//   bufhandle::handle c = std::move(b);            // move = steal, b is empty
//   // a and c release in their destructors; the last one frees and reports.
//
// Errors are thrown as bufhandle::error, which carries the bh_status. A
// destructor never throws: a failed release in a destructor is ignored (it
// can only be BH_ESTALE, which means the reference was already gone).
#ifndef BUFHANDLE_HPP
#define BUFHANDLE_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "bufhandle.h"

namespace bufhandle {

class error : public std::runtime_error {
  public:
    explicit error(bh_status status, const char *what)
        : std::runtime_error(std::string(what) + ": " + bh_strerror(status)), status_(status) {}
    bh_status status() const noexcept { return status_; }

  private:
    bh_status status_;
};

inline void check(bh_status st, const char *what) {
    if (st != BH_OK)
        throw error(st, what);
}

// One counted reference to a control block, or empty.
class handle {
  public:
    handle() noexcept = default;
    // Adopts a reference the caller already holds (from the C API).
    static handle adopt(bh_registry *reg, bh_handle h) noexcept { return handle(reg, h); }

    handle(const handle &o) : reg_(o.reg_), h_(o.h_) {
        if (reg_ != nullptr)
            check(bh_retain(reg_, h_), "bh_retain");
    }
    handle(handle &&o) noexcept
        : reg_(std::exchange(o.reg_, nullptr)), h_(std::exchange(o.h_, BH_HANDLE_NULL)) {}
    handle &operator=(handle o) noexcept { // copy-and-swap: copy retains, old value released
        swap(o);
        return *this;
    }
    ~handle() { reset(); }

    void swap(handle &o) noexcept {
        std::swap(reg_, o.reg_);
        std::swap(h_, o.h_);
    }
    // Drops the reference now (no-op when empty).
    void reset() noexcept {
        if (reg_ != nullptr)
            (void)bh_release(reg_, h_);
        reg_ = nullptr;
        h_ = BH_HANDLE_NULL;
    }
    // Gives the reference to the caller (who must bh_release it).
    bh_handle release_to_c() noexcept {
        reg_ = nullptr;
        return std::exchange(h_, BH_HANDLE_NULL);
    }

    bh_info info() const {
        bh_info i{};
        check(reg_ == nullptr ? BH_EINVAL : bh_info_get(reg_, h_, &i), "bh_info_get");
        return i;
    }
    bh_handle get() const noexcept { return h_; }
    bh_registry *registry() const noexcept { return reg_; }
    explicit operator bool() const noexcept { return reg_ != nullptr; }
    friend bool operator==(const handle &a, const handle &b) noexcept { return a.h_.bits == b.h_.bits; }
    friend bool operator!=(const handle &a, const handle &b) noexcept { return !(a == b); }

  private:
    handle(bh_registry *reg, bh_handle h) noexcept : reg_(reg), h_(h) {}
    bh_registry *reg_ = nullptr;
    bh_handle h_ = BH_HANDLE_NULL;
};

// Owns a registry. The destructor destroys it; if handles are still live the
// registry is leaked rather than destroyed under them (bh_registry_destroy
// answers BH_EBUSY): release every handle first, or call destroy() to see it.
class registry {
  public:
    explicit registry(const bh_config *cfg = nullptr) {
        check(bh_registry_create(cfg, &reg_), "bh_registry_create");
    }
    explicit registry(const bh_config &cfg) : registry(&cfg) {}
    registry(const registry &) = delete;
    registry &operator=(const registry &) = delete;
    registry(registry &&o) noexcept : reg_(std::exchange(o.reg_, nullptr)) {}
    registry &operator=(registry &&o) noexcept {
        if (this != &o) {
            if (reg_ != nullptr)
                (void)bh_registry_destroy(reg_);
            reg_ = std::exchange(o.reg_, nullptr);
        }
        return *this;
    }
    ~registry() {
        if (reg_ != nullptr)
            (void)bh_registry_destroy(reg_);
    }
    // Throws error(BH_EBUSY) while handles live; the registry stays usable.
    void destroy() {
        check(reg_ == nullptr ? BH_EINVAL : bh_registry_destroy(reg_), "bh_registry_destroy");
        reg_ = nullptr;
    }

    handle alloc(uint32_t device, uint64_t size) {
        bh_handle h;
        check(bh_alloc(reg_, device, size, &h), "bh_alloc");
        return handle::adopt(reg_, h);
    }
    handle intern(uint32_t device, uint64_t address, uint64_t size) {
        bh_handle h;
        check(bh_intern(reg_, device, address, size, &h), "bh_intern");
        return handle::adopt(reg_, h);
    }
    handle lookup(uint32_t device, uint64_t address) {
        bh_handle h;
        check(bh_lookup(reg_, device, address, &h), "bh_lookup");
        return handle::adopt(reg_, h);
    }
    bh_stats stats() const {
        bh_stats s{};
        check(bh_stats_get(reg_, &s), "bh_stats_get");
        return s;
    }
    bh_registry *get() const noexcept { return reg_; }

  private:
    bh_registry *reg_ = nullptr;
};

} // namespace bufhandle

#endif // BUFHANDLE_HPP
