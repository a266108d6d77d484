/*
 * peer.cpp - the C++ peer (see peer.h): shared_ptr<Block> interned through a
 * mutex-guarded unordered_map of weak_ptr.
 *
 * Owns: the map, its mutex, and the Blocks.
 * Must never: erase an entry that names a newer Block (a creation may have
 * replaced an expired entry between the last release and its deleter: the
 * deleter erases only an expired entry), or be faster by doing less than the
 * idiom (no pooled Blocks, no intrusive counts, no lock-free lookups).
 */
#include "peer.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>

namespace {

struct Key {
    uint32_t device;
    uint64_t address;
    bool operator==(const Key &o) const { return device == o.device && address == o.address; }
};

/* The splitmix64 finaliser, as the C hash baseline uses: libstdc++'s
 * identity hash of an integer would be a weaker (and at page-aligned
 * addresses a worse) choice than a careful author makes. */
struct KeyHash {
    size_t operator()(const Key &k) const {
        uint64_t x = k.address ^ ((uint64_t)k.device << 48);
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 31;
        return (size_t)x;
    }
};

struct Block;
using Map = std::unordered_map<Key, std::weak_ptr<Block>, KeyHash>;

struct Block {
    Key key;
    uint64_t size;
};

} // namespace

struct peer_map {
    std::mutex lock;
    Map map;
};

namespace {

struct Deleter {
    peer_map *m;
    void operator()(Block *b) const {
        {
            std::lock_guard<std::mutex> g(m->lock);
            auto it = m->map.find(b->key);
            if (it != m->map.end() && it->second.expired())
                m->map.erase(it);
        }
        delete b;
    }
};

using Ref = std::shared_ptr<Block>;
static_assert(sizeof(Ref) == sizeof(peer_ref), "peer_ref holds a shared_ptr");

Ref *as_ref(peer_ref *r) { return std::launder(reinterpret_cast<Ref *>(r)); }
const Ref *as_ref(const peer_ref *r) { return std::launder(reinterpret_cast<const Ref *>(r)); }

} // namespace

extern "C" {

peer_map *peer_create(size_t expect) {
    peer_map *m = new (std::nothrow) peer_map;
    if (m != nullptr)
        m->map.reserve(expect); /* presized, as the C hash baseline is */
    return m;
}

void peer_destroy(peer_map *m) { delete m; }

void peer_intern(peer_map *m, uint32_t device, uint64_t address, uint64_t size, peer_ref *out) {
    Key k{device, address};
    std::lock_guard<std::mutex> g(m->lock);
    std::weak_ptr<Block> &w = m->map[k];
    Ref r = w.lock();
    if (!r) {
        r = Ref(new Block{k, size}, Deleter{m});
        w = r;
    }
    new (out) Ref(std::move(r));
}

int peer_lookup(peer_map *m, uint32_t device, uint64_t address, peer_ref *out) {
    Ref r;
    {
        std::lock_guard<std::mutex> g(m->lock);
        auto it = m->map.find(Key{device, address});
        if (it != m->map.end())
            r = it->second.lock();
    }
    if (!r)
        return 0;
    new (out) Ref(std::move(r));
    return 1;
}

void peer_view(const peer_ref *r, peer_ref *out) {
    const Ref &parent = *as_ref(r);
    new (out) Ref(parent, parent.get()); /* the aliasing constructor: the parent's count */
}

/* The last reference runs the Deleter: erase under the lock, free. An empty
 * shared_ptr is two null pointers, which is what a zeroed peer_ref holds. */
void peer_release(peer_ref *r) { as_ref(r)->reset(); }

} // extern "C"
