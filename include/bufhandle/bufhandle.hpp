// bufhandle.hpp - header-only C++17 RAII wrapper over the bufhandle C API.
//
//   bufhandle::registry reg(cfg);                  // owns a bh_registry
//   uint32_t dev4 = bufhandle::domain(4, BH_MEM_DRAM); // device 4, DRAM
//   bufhandle::handle a = reg.alloc(dev4, 1 << 20); // one reference
//   bufhandle::handle b = a;                       // copy = a new reference
//   bufhandle::handle c = std::move(b);            // move = steal, b is empty
//   a.address(), a.size(), a.use_count();          // 0x..., 1048576, 2
//   // a and c release in their destructors; the last one frees and reports.
//
// ERRORS. Every operation that can fail comes twice: one throws
// bufhandle::error, whose what() names the call, the device, address and
// sizes it was about (and, for BH_ERANGE, BH_EEXIST and BH_EOVERLAP, the live
// allocation it ran into), and what to do where the status's own text cannot say it; the other takes a
// `bh_status &` last, is noexcept, sets the status and returns an empty handle on failure, for callers that
// handle BH_EBUSY and friends in their normal flow:
//
//   bh_status st;
//   bufhandle::handle h = reg.intern(dev, address, size, st);
//   if (st == BH_EBUSY) ... // being freed: this copy of the address is stale
//                           // (an address you have just allocated: reg.adopt)
//   if (st == BH_EOVERLAP)  // inside a live allocation: a view of it, which must fit
//       h = reg.lookup_containing(dev, address, size, st); // BH_ERANGE if it does not
//
// A destructor never throws: a failed release in a handle's destructor is
// ignored (it can only be BH_ESTALE: the reference was already gone).
//
// SHUTDOWN ORDER. Destroy every handle before its registry, and keep the
// allocator (and reporter) the registry calls alive until the registry is
// destroyed: the last release of a handle calls allocator.free. A registry
// destroyed while handles are live cannot be destroyed (bh_registry_destroy
// answers BH_EBUSY); ~registry then prints the live allocations to stderr and
// leaks the registry, so the handles stay valid and their last release still
// frees through the allocator, which must therefore still exist. With
// on_live_handles::abort it prints the same and calls std::abort() instead.
#ifndef BUFHANDLE_HPP
#define BUFHANDLE_HPP

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "bufhandle.h"

namespace bufhandle {

// What a failed call was about. Fields a call did not have stay unset (has_*).
struct call_info {
    const char *function = ""; // a string literal: the C function's name
    bool has_device = false, has_address = false, has_size = false, has_handle = false;
    uint32_t device = 0; // the memory domain passed to the C API (BH_DOMAIN)
    uint64_t address = 0, size = 0;
    uint64_t handle_bits = 0;
    bool empty = false;    // called on an empty handle or registry
    bool has_live = false; // the live allocation the call ran into
    uint64_t live_address = 0, live_size = 0;

    static call_info on_device(const char *f, uint32_t device) {
        call_info c;
        c.function = f;
        c.has_device = true;
        c.device = device;
        return c;
    }
    call_info &with_address(uint64_t a) {
        has_address = true;
        address = a;
        return *this;
    }
    call_info &with_size(uint64_t s) {
        has_size = true;
        size = s;
        return *this;
    }
};

// BH_DOMAIN, BH_DOMAIN_DEVICE and BH_DOMAIN_KIND without the C macros' casts,
// which -Wold-style-cast and -Wuseless-cast flag in C++ code.
constexpr uint32_t domain(uint32_t device, uint32_t kind) noexcept { return BH_DOMAIN(device, kind); }
constexpr uint32_t domain_device(uint32_t domain) noexcept { return BH_DOMAIN_DEVICE(domain); }
constexpr uint32_t domain_kind(uint32_t domain) noexcept { return BH_DOMAIN_KIND(domain); }

// The name of a memory kind (BH_MEM_*), or nullptr for the caller's own 5..15.
inline const char *kind_name(uint32_t kind) noexcept {
    static const char *const names[] = BH_MEM_KIND_NAMES;
    return kind < sizeof(names) / sizeof(names[0]) ? names[kind] : nullptr;
}

// A domain as people read it: "device 4 L1" (domain_device, domain_kind),
// "device 4 kind 9" for a kind of the caller's own.
inline std::string domain_string(uint32_t domain) {
    std::string s = "device " + std::to_string(domain_device(domain));
    const char *kind = kind_name(domain_kind(domain));
    return kind != nullptr ? s + " " + kind : s + " kind " + std::to_string(domain_kind(domain));
}

namespace detail {

inline std::string hex(uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof(b), "0x%" PRIx64, v);
    return b;
}

// What to do about a status, where the call says more than the status's own
// text (which is shared by every call that returns it); "" elsewhere.
inline const char *advice(bh_status status, const call_info &c) {
    auto is = [&](const char *f) { return std::strcmp(c.function, f) == 0; };
    if (c.empty)
        return "";
    if (status == BH_EINVAL && c.has_size && c.size == 0)
        return " (size 0)";
    if (status == BH_EINVAL && is("bh_alloc"))
        return " (the registry's config has no allocator: bh_config.allocator.alloc)";
    if (status == BH_EINVAL && is("bh_alloc_ex"))
        return " (an allocator argument needs bh_config.alloc_ex and BH_CONFIG_ALLOC_EX in "
               "bh_config.flags)";
    if (status == BH_EINVAL && (is("bh_intern") || is("bh_adopt")))
        return " (the range runs past 2^64)";
    if (status == BH_EINVAL && is("bh_lookup_containing"))
        return " (the registry has BH_CONFIG_NO_OVERLAP_CHECK: no range index to ask)";
    if (status == BH_ENOTFOUND && is("bh_intern"))
        return " (strict interning, BH_DEBUG=strict or BH_CONFIG_STRICT_INTERN, creates nothing: this "
               "address is stale, its buffer was freed; for an address you have just allocated "
               "yourself, use adopt)";
    if (status == BH_EBUSY && is("bh_registry_destroy"))
        return " (here: live handles; release every one first, stats().live_handles counts them and "
               "bh_registry_dump lists them; the registry is unchanged and usable)";
    return "";
}

inline std::string describe(bh_status status, const call_info &c) {
    std::string s = c.function;
    s += '(';
    const char *sep = "";
    auto field = [&](const std::string &f) {
        s += sep;
        s += f;
        sep = ", ";
    };
    if (c.has_device)
        field(domain_string(c.device));
    if (c.has_address)
        field("address " + hex(c.address));
    if (c.has_size)
        field("size " + std::to_string(c.size));
    if (c.has_handle)
        field("handle " + hex(c.handle_bits));
    s += "): ";
    if (c.empty)
        s += "the object is empty (moved from, reset, or never made): ";
    s += bh_status_name(status);
    s += ": ";
    s += bh_strerror(status);
    s += advice(status, c);
    if (c.has_live)
        s += "; the live allocation it meets: " + hex(c.live_address) + ", size " +
             std::to_string(c.live_size);
    return s;
}

} // namespace detail

class error : public std::runtime_error {
  public:
    // what(): "WHAT: <text of status>" (the 0.2 form, kept for callers that
    // throw it; call() is empty then).
    explicit error(bh_status status, const char *what)
        : std::runtime_error(std::string(what) + ": " + bh_strerror(status)), status_(status) {}
    // what(): "bh_intern(device 4 DRAM, address 0x..., size 4096): BH_ERANGE: ...".
    error(bh_status status, const call_info &call)
        : std::runtime_error(detail::describe(status, call)), status_(status), call_(call) {}

    bh_status status() const noexcept { return status_; }
    const call_info &call() const noexcept { return call_; }
    uint32_t device() const noexcept { return call_.device; }
    uint64_t address() const noexcept { return call_.address; }
    uint64_t size() const noexcept { return call_.size; }

  private:
    bh_status status_;
    call_info call_;
};

inline void check(bh_status st, const char *what) {
    if (st != BH_OK)
        throw error(st, what);
}

inline void check(bh_status st, const call_info &call) {
    if (st != BH_OK)
        throw error(st, call);
}

// One counted reference to a control block, or empty.
class handle {
  public:
    handle() noexcept = default;
    // Takes over a reference the caller already holds (a bh_handle from the C
    // API): the handle releases it, the caller no longer does. Takes no new
    // reference and never touches the allocator; release_to_c() is its
    // inverse. Not registry::adopt, which is bh_adopt: owning an address the
    // caller has just allocated itself (the same word, an unrelated call).
    static handle adopt(bh_registry *reg, bh_handle h) noexcept { return handle(reg, h); }

    // A new reference to the same allocation (copy() below takes it).
    handle(const handle &o) : handle(o.copy_or_throw()) {}
    handle(handle &&o) noexcept
        : reg_(std::exchange(o.reg_, nullptr)), h_(std::exchange(o.h_, BH_HANDLE_NULL)) {}
    handle &operator=(handle o) noexcept { // copy-and-swap: copy retains, old value released
        swap(o);
        return *this;
    }
    ~handle() { reset(); }

    // The copy constructor without the exception: an empty handle and the
    // status on failure (copying an empty handle gives an empty one, BH_OK).
    // The one place a copy takes its reference: bh_dup, so that with
    // BH_CONFIG_DEBUG_REFS every handle object owns its own token.
    handle copy(bh_status &st) const noexcept {
        bh_handle h = BH_HANDLE_NULL;
        st = reg_ == nullptr ? BH_OK : bh_dup(reg_, h_, &h);
        return st == BH_OK && reg_ != nullptr ? handle(reg_, h) : handle();
    }

    void swap(handle &o) noexcept {
        std::swap(reg_, o.reg_);
        std::swap(h_, o.h_);
    }
    // Drops the reference now (no-op when empty).
    void reset() noexcept {
        bh_status ignored;
        reset(ignored);
    }
    // The same, with bh_release's status (BH_OK when empty).
    void reset(bh_status &st) noexcept {
        st = reg_ == nullptr ? BH_OK : bh_release(reg_, h_);
        reg_ = nullptr;
        h_ = BH_HANDLE_NULL;
    }
    // Gives the reference to the caller (who must bh_release it).
    bh_handle release_to_c() noexcept {
        reg_ = nullptr;
        return std::exchange(h_, BH_HANDLE_NULL);
    }

    // A snapshot of the allocation. Throws error (BH_EINVAL on an empty handle,
    // BH_ESTALE if the reference is gone).
    bh_info info() const {
        bh_status st;
        bh_info i = info(st);
        check(st, about("bh_info_get"));
        return i;
    }
    bh_info info(bh_status &st) const noexcept {
        bh_info i{};
        st = reg_ == nullptr ? BH_EINVAL : bh_info_get(reg_, h_, &i);
        return i;
    }
    uint32_t device() const { return info().device; }
    uint64_t address() const { return info().address; }
    uint64_t size() const { return info().size; }
    // References to the allocation right now (all holders together; a racy
    // snapshot, like std::shared_ptr::use_count); 0 for an empty handle.
    uint32_t use_count() const noexcept {
        bh_status st;
        bh_info i = info(st);
        return st == BH_OK ? i.refs : 0;
    }
    bool empty() const noexcept { return reg_ == nullptr; }
    // "empty", or "device 4, address 0x..., size 4096, 2 references".
    std::string to_string() const {
        if (empty())
            return "empty";
        bh_status st;
        bh_info i = info(st);
        if (st != BH_OK)
            return std::string("handle ") + detail::hex(h_.bits) + ": " + bh_status_name(st);
        return domain_string(i.device) + ", address " + detail::hex(i.address) + ", size " +
               std::to_string(i.size) + ", " + std::to_string(i.refs) +
               (i.refs == 1 ? " reference" : " references");
    }

    bh_handle get() const noexcept { return h_; }
    bh_registry *registry() const noexcept { return reg_; }
    explicit operator bool() const noexcept { return reg_ != nullptr; }
    // Identity of the reference, not of the allocation: with BH_CONFIG_DEBUG_REFS
    // (BH_DEBUG=refs) a copy is a token of its own and compares unequal to its
    // original. "Same allocation?" is device() and address() equal.
    friend bool operator==(const handle &a, const handle &b) noexcept { return a.h_.bits == b.h_.bits; }
    friend bool operator!=(const handle &a, const handle &b) noexcept { return !(a == b); }

  private:
    handle(bh_registry *reg, bh_handle h) noexcept : reg_(reg), h_(h) {}
    handle copy_or_throw() const {
        bh_status st;
        handle h = copy(st);
        check(st, about("bh_dup"));
        return h;
    }
    call_info about(const char *function) const {
        call_info c;
        c.function = function;
        c.empty = reg_ == nullptr;
        c.has_handle = !c.empty;
        c.handle_bits = h_.bits;
        return c;
    }
    bh_registry *reg_ = nullptr;
    bh_handle h_ = BH_HANDLE_NULL;
};

// What ~registry does when handles are still live (see SHUTDOWN ORDER above).
// Both print the live allocations to stderr first.
enum class on_live_handles {
    report, // leak the registry: the handles stay valid
    abort,  // std::abort(): catch the shutdown-order bug where it happens
};

// Owns a registry. Operations on an empty registry (moved from, or a failed
// non-throwing construction) fail with BH_EINVAL.
class registry {
  public:
    explicit registry(const bh_config *cfg = nullptr, on_live_handles mode = on_live_handles::report)
        : mode_(mode) {
        check(bh_registry_create(cfg, &reg_), "bh_registry_create");
    }
    explicit registry(const bh_config &cfg, on_live_handles mode = on_live_handles::report)
        : registry(&cfg, mode) {}
    // Without the exception: empty (get() == nullptr) and st set on failure.
    registry(const bh_config &cfg, bh_status &st, on_live_handles mode = on_live_handles::report) noexcept
        : mode_(mode) {
        st = bh_registry_create(&cfg, &reg_);
        if (st != BH_OK)
            reg_ = nullptr;
    }
    registry(const registry &) = delete;
    registry &operator=(const registry &) = delete;
    registry(registry &&o) noexcept : reg_(std::exchange(o.reg_, nullptr)), mode_(o.mode_) {}
    registry &operator=(registry &&o) noexcept {
        if (this != &o) {
            close();
            reg_ = std::exchange(o.reg_, nullptr);
            mode_ = o.mode_;
        }
        return *this;
    }
    ~registry() { close(); }

    // Throws error(BH_EBUSY) while handles live; the registry stays usable.
    void destroy() {
        bh_status st;
        destroy(st);
        check(st, about("bh_registry_destroy"));
    }
    void destroy(bh_status &st) noexcept {
        st = reg_ == nullptr ? BH_EINVAL : bh_registry_destroy(reg_);
        if (st == BH_OK)
            reg_ = nullptr;
    }

    // bh_alloc; with an argument, bh_alloc_ex (see ALLOCATION CONTEXT in
    // bufhandle.h: arg reaches bh_config.alloc_ex untouched).
    handle alloc(uint32_t device, uint64_t size, void *arg = nullptr) {
        bh_status st;
        return checked(
            alloc(device, size, arg, st), st,
            call_info::on_device(arg != nullptr ? "bh_alloc_ex" : "bh_alloc", device).with_size(size));
    }
    handle alloc(uint32_t device, uint64_t size, bh_status &st) noexcept {
        return alloc(device, size, nullptr, st);
    }
    handle alloc(uint32_t device, uint64_t size, void *arg, bh_status &st) noexcept {
        bh_handle h;
        st = reg_ == nullptr ? BH_EINVAL : bh_alloc_ex(reg_, device, size, arg, &h);
        return made(h, st);
    }
    // bh_adopt: an address the caller has just allocated itself; a live one
    // there is BH_EEXIST (never BH_EBUSY). Not handle::adopt, which wraps a
    // bh_handle the caller already holds.
    handle adopt(uint32_t device, uint64_t address, uint64_t size) {
        bh_status st;
        return checked(adopt(device, address, size, st), st,
                       call_info::on_device("bh_adopt", device).with_address(address).with_size(size));
    }
    handle adopt(uint32_t device, uint64_t address, uint64_t size, bh_status &st) noexcept {
        bh_handle h;
        st = reg_ == nullptr ? BH_EINVAL : bh_adopt(reg_, device, address, size, &h);
        return made(h, st);
    }
    // bh_intern: a buffer re-created at an address (an alias of the live one).
    handle intern(uint32_t device, uint64_t address, uint64_t size) {
        bh_status st;
        return checked(intern(device, address, size, st), st,
                       call_info::on_device("bh_intern", device).with_address(address).with_size(size));
    }
    handle intern(uint32_t device, uint64_t address, uint64_t size, bh_status &st) noexcept {
        bh_handle h;
        st = reg_ == nullptr ? BH_EINVAL : bh_intern(reg_, device, address, size, &h);
        return made(h, st);
    }
    handle lookup(uint32_t device, uint64_t address) {
        bh_status st;
        return checked(lookup(device, address, st), st,
                       call_info::on_device("bh_lookup", device).with_address(address));
    }
    handle lookup(uint32_t device, uint64_t address, bh_status &st) noexcept {
        bh_handle h;
        st = reg_ == nullptr ? BH_EINVAL : bh_lookup(reg_, device, address, &h);
        return made(h, st);
    }
    // bh_lookup_containing: the live allocation whose range holds address (a
    // view at an offset; the handle's address() is the allocation's start).
    handle lookup_containing(uint32_t device, uint64_t address) {
        bh_status st;
        return checked(lookup_containing(device, address, st), st,
                       call_info::on_device("bh_lookup_containing", device).with_address(address));
    }
    handle lookup_containing(uint32_t device, uint64_t address, bh_status &st) noexcept {
        bh_handle h;
        st = reg_ == nullptr ? BH_EINVAL : bh_lookup_containing(reg_, device, address, &h);
        return made(h, st);
    }
    // The same for a buffer [address, address + size) at an offset of a live
    // allocation, which must hold all of it: BH_ERANGE when the range runs past
    // the allocation's end (what() names the allocation, and nothing is taken),
    // BH_EINVAL for size 0. The answer to an intern's BH_EOVERLAP with the
    // intern's own size; the three-argument form checks the address only.
    handle lookup_containing(uint32_t device, uint64_t address, uint64_t size) {
        bh_status st;
        return checked(
            lookup_containing(device, address, size, st), st,
            call_info::on_device("bh_lookup_containing", device).with_address(address).with_size(size));
    }
    handle lookup_containing(uint32_t device, uint64_t address, uint64_t size, bh_status &st) noexcept {
        handle h = lookup_containing(device, address, st);
        bh_info i{};
        if (st == BH_OK)
            i = h.info(st);
        if (st == BH_OK && size == 0)
            st = BH_EINVAL;
        else if (st == BH_OK && size > i.size - (address - i.address)) // address - i.address < i.size
            st = BH_ERANGE;
        if (st != BH_OK)
            h.reset();
        return h;
    }
    bh_stats stats() const {
        bh_status st;
        bh_stats s = stats(st);
        check(st, about("bh_stats_get"));
        return s;
    }
    bh_stats stats(bh_status &st) const noexcept {
        bh_stats s{};
        st = reg_ == nullptr ? BH_EINVAL : bh_stats_get(reg_, &s);
        return s;
    }
    bh_registry *get() const noexcept { return reg_; }
    on_live_handles mode() const noexcept { return mode_; }

  private:
    call_info about(const char *function) const {
        call_info c;
        c.function = function;
        c.empty = reg_ == nullptr;
        return c;
    }
    handle made(bh_handle h, bh_status st) const noexcept {
        return st == BH_OK ? handle::adopt(reg_, h) : handle();
    }
    // The throwing variants: st is read after the call (it is a reference).
    handle checked(handle h, const bh_status &st, const call_info &c) const {
        if (st != BH_OK)
            throw error(st, with_live(st, c));
        return h;
    }
    call_info with_live(bh_status st, call_info c) const {
        c.empty = reg_ == nullptr;
        // An alias larger than the allocation it names, an adopt of a live
        // address, a range overlapping a live allocation: say which one (the
        // one covering either end of the range; a snapshot, and the reference
        // taken to read it is given back at once).
        if ((st == BH_ERANGE || st == BH_EEXIST || st == BH_EOVERLAP) && reg_ != nullptr && c.has_address) {
            const uint64_t last = c.address + (c.has_size && c.size > 0 ? c.size - 1 : 0);
            for (uint64_t a : {c.address, last}) {
                bh_handle h;
                bh_info i;
                if (bh_lookup_containing(reg_, c.device, a, &h) != BH_OK &&
                    bh_lookup(reg_, c.device, a, &h) != BH_OK) // BH_CONFIG_NO_OVERLAP_CHECK
                    continue;
                if (bh_info_get(reg_, h, &i) == BH_OK) {
                    c.has_live = true;
                    c.live_address = i.address;
                    c.live_size = i.size;
                }
                (void)bh_release(reg_, h);
                break;
            }
        }
        return c;
    }
    // Destroys the registry; with live handles prints them and leaks it (or
    // aborts): destroying it under them would leave them dangling.
    void close() noexcept {
        if (reg_ == nullptr || bh_registry_destroy(reg_) == BH_OK) {
            reg_ = nullptr;
            return;
        }
        report_live(stderr);
        if (mode_ == on_live_handles::abort) {
            std::fputs("bufhandle::registry: aborting (on_live_handles::abort)\n", stderr);
            std::abort();
        }
        reg_ = nullptr; // leaked on purpose
    }
    // What is live, then the registry's own list of it (bh_registry_dump:
    // domain, address, size, references; with BH_CONFIG_STACKS also where each
    // allocation and reference was made).
    void report_live(FILE *out) const noexcept {
        bh_stats s{};
        (void)bh_stats_get(reg_, &s);
        // In abort mode nothing is leaked: the process ends after the list.
        const char *fate = mode_ == on_live_handles::abort
                               ? "It aborts after the list (on_live_handles::abort).\n"
                               : "It is leaked so that their handles stay valid; the last release of each "
                                 "still calls the\nallocator, which must outlive the registry.\n";
        std::fprintf(out,
                     "bufhandle::registry destroyed with %" PRIu64 " live allocation%s (%" PRIu64
                     " bytes), listed below.\n%sDestroy every handle before its registry.\n"
                     "(BH_DEBUG=stacks shows where each allocation was made.)\n",
                     s.live_handles, s.live_handles == 1 ? "" : "s", s.live_bytes, fate);
        (void)bh_registry_dump(reg_, out, 0);
        std::fflush(out);
    }

    bh_registry *reg_ = nullptr;
    on_live_handles mode_ = on_live_handles::report;
};

} // namespace bufhandle

#endif // BUFHANDLE_HPP
