#include "admit/store/memory_store.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/core/rate.hpp"

namespace admit {

namespace {

// A key's identity: 16-bit namespace id in the top bits of `hi`, 112 keyed-hash bits.
struct Fp {
  std::uint64_t lo;  // no initialisers: arrays of Fp stay uninitialised on the hot path
  std::uint64_t hi;
  bool operator==(const Fp& o) const { return lo == o.lo && hi == o.hi; }
};
struct FpHash {
  std::size_t operator()(const Fp& f) const { return f.lo; }  // already uniformly random
};

// Rate: (tat.us, tat.rem). Window: (window end, used).
struct Slot {
  std::int64_t a = 0;
  std::int64_t b = 0;
};

struct Hold {
  std::uint64_t lease = 0;
  std::int64_t amount = 0;
  Micros expiry = 0;
};

// n elements, inline up to N (uninitialised for trivial T), on the heap beyond.
template <class T, std::size_t N = 8>
class Buf {
 public:
  explicit Buf(std::size_t n) : n_(n) {
    if (n > N) heap_ = std::make_unique<T[]>(n);
  }
  T* begin() { return heap_ ? heap_.get() : inline_; }
  T* end() { return begin() + n_; }
  T& operator[](std::size_t i) { return begin()[i]; }
  void resize_down(std::size_t n) { n_ = n; }

 private:
  T inline_[N];
  std::unique_ptr<T[]> heap_;
  std::size_t n_;
};

constexpr int kNsShift = 48;
constexpr std::uint64_t kNsMask = std::uint64_t{0xffff} << kNsShift;
constexpr std::size_t kMinPruneAt = 4096;

// Idle: a full bucket or a finished window is indistinguishable from no state at all.
bool idle(const Slot& s, Micros now) { return s.a < now; }

struct alignas(64) Shard {
  std::mutex mu;
  absl::flat_hash_map<Fp, Slot, FpHash> states;
  absl::flat_hash_map<Fp, std::vector<Hold>, FpHash> holds;
  std::size_t prune_at = kMinPruneAt;

  std::size_t prune_locked(Micros now) {
    std::size_t n = absl::erase_if(states, [now](const auto& kv) { return idle(kv.second, now); });
    n += absl::erase_if(holds, [now](auto& kv) {
      std::erase_if(kv.second, [now](const Hold& h) { return h.expiry <= now; });
      return kv.second.empty();
    });
    prune_at = std::max(kMinPruneAt, 2 * states.size());
    return n;
  }
};

std::int64_t held_after_expiry(std::vector<Hold>& v, Micros now) {
  std::erase_if(v, [now](const Hold& h) { return h.expiry <= now; });
  std::int64_t held = 0;
  for (const auto& h : v) held += h.amount;
  return held;
}

// Earliest wait after which enough holders have expired for `n` more slots.
Micros concurrency_retry(std::vector<Hold> v, std::int64_t held, std::int64_t n,
                         std::int64_t slots, Micros now) {
  std::sort(v.begin(), v.end(), [](const Hold& x, const Hold& y) { return x.expiry < y.expiry; });
  for (const auto& h : v) {
    held -= h.amount;
    if (held + n <= slots) return h.expiry - now;
  }
  return 0;
}

}  // namespace

struct MemoryStore::Impl {
  std::unique_ptr<Shard[]> shards;
  std::size_t nshards = 0;
  std::size_t mask = 0;
  alignas(16) std::array<unsigned char, 192> secret{};
  std::mutex ns_mu;
  std::vector<std::string> namespaces;  // index = id - 1

  explicit Impl(const MemoryStoreOptions& o)
      : nshards(std::bit_ceil(std::max<std::size_t>(o.shards, 1))) {
    shards = std::make_unique<Shard[]>(nshards);
    mask = nshards - 1;
    std::mt19937_64 rng;
    if (o.seed != 0) {
      rng.seed(o.seed);
    } else {
      std::random_device rd;
      rng.seed((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
    }
    for (std::size_t i = 0; i < secret.size(); i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(secret.data() + i, &v, 8);
    }
  }

  // Hash of (len(entity), entity, resource): length-prefixed so "a:b"+"c" != "a"+"b:c".
  Fp base(const Namespace& ns, const KeyParts& k) const {
    std::array<char, 256> buf;
    const std::size_t len = 4 + k.entity.size() + k.resource.size();
    std::unique_ptr<char[]> heap;
    char* p = buf.data();
    if (len > buf.size()) {
      heap = std::make_unique_for_overwrite<char[]>(len);
      p = heap.get();
    }
    const auto el = static_cast<std::uint32_t>(k.entity.size());
    std::memcpy(p, &el, 4);
    std::memcpy(p + 4, k.entity.data(), k.entity.size());
    std::memcpy(p + 4 + k.entity.size(), k.resource.data(), k.resource.size());
    const XXH128_hash_t h = XXH3_128bits_withSecret(p, len, secret.data(), secret.size());
    return Fp{h.low64, (h.high64 & ~kNsMask) | (std::uint64_t{ns.id} << kNsShift)};
  }

  static Fp derive(const Fp& base, const Limit& l) {
    const std::uint64_t m = l.name_hash();
    return Fp{base.lo ^ (m * 0x9E3779B97F4A7C15ULL), base.hi ^ ((m >> 17) & ~kNsMask)};
  }

  std::size_t shard_of(const Fp& base) const { return (base.hi ^ (base.lo >> 32)) & mask; }
};

MemoryStore::MemoryStore(MemoryStoreOptions options) : impl_(std::make_unique<Impl>(options)) {}
MemoryStore::~MemoryStore() = default;

KeyHandle MemoryStore::prepare(const Namespace& ns, const KeyParts& key) const {
  const Fp b = impl_->base(ns, key);
  return KeyHandle{{b.lo, b.hi, impl_->shard_of(b) + 1}};
}

Namespace MemoryStore::open_namespace(std::string_view name) {
  validate_name("namespace", name);
  std::lock_guard g(impl_->ns_mu);
  auto& v = impl_->namespaces;
  auto it = std::find(v.begin(), v.end(), name);
  if (it != v.end()) {
    return Namespace{std::string(name), static_cast<std::uint32_t>(it - v.begin() + 1)};
  }
  if (v.size() >= 0xfffe) {
    throw ValidationError("namespace", std::string(name), "too many namespaces (65534)");
  }
  v.emplace_back(name);
  return Namespace{std::string(name), static_cast<std::uint32_t>(v.size())};
}

bool MemoryStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  const Micros now = op.now;
  const std::size_t nkeys = op.keys.size();
  Buf<Fp> bases(nkeys);
  Buf<std::size_t> shard_ids(nkeys);
  const bool prepared = op.handles.size() == nkeys;
  for (std::size_t i = 0; i < nkeys; ++i) {
    if (prepared && !op.handles[i].empty()) {
      bases[i] = Fp{op.handles[i].w[0], op.handles[i].w[1]};
      shard_ids[i] = op.handles[i].w[2] - 1;
    } else {
      bases[i] = im.base(*op.ns, op.keys[i]);
      shard_ids[i] = im.shard_of(bases[i]);
    }
  }
  // Lock every shard involved in index order (no deadlock between multi-key ops).
  Buf<std::size_t> order(nkeys);
  std::copy(shard_ids.begin(), shard_ids.end(), order.begin());
  if (nkeys > 1) {
    std::sort(order.begin(), order.end());
    order.resize_down(static_cast<std::size_t>(std::unique(order.begin(), order.end()) - order.begin()));
  }
  for (const std::size_t s : order) im.shards[s].mu.lock();
  struct Unlock {
    Impl& im;
    Buf<std::size_t>& order;
    ~Unlock() {
      for (std::size_t* it = order.end(); it != order.begin();) im.shards[*--it].mu.unlock();
    }
  } unlock{im, order};

  const bool consumes = op.kind == OpKind::acquire || op.kind == OpKind::record ||
                        op.kind == OpKind::adjust || op.kind == OpKind::release ||
                        op.kind == OpKind::clamp;
  if (consumes) {
    for (const std::size_t s : order) {
      Shard& sh = im.shards[s];
      if (sh.states.size() >= sh.prune_at) sh.prune_locked(now);
      // Pass 1 keeps pointers to slots: no rehash may happen between two of its inserts.
      if (op.items.size() > 1) sh.states.reserve(sh.states.size() + op.items.size());
    }
  }

  // Pass 1: locate state and check.
  Slot fresh{};  // stands in for absent state in read-only ops
  Buf<Slot*> slots(op.items.size());
  bool all_ok = true;
  for (std::size_t i = 0; i < op.items.size(); ++i) {
    const OpItem& it = op.items[i];
    const Limit& l = *it.limit;
    Shard& sh = im.shards[shard_ids[it.key]];
    const Fp fp = Impl::derive(bases[it.key], l);
    ItemResult& res = results[i];
    res = ItemResult{};
    // Only a positive amount is checked: an item with amount 0 is reported, never denied.
    const bool checks = (op.kind == OpKind::acquire || op.kind == OpKind::decide) && it.amount > 0;
    if (op.kind == OpKind::reset) {
      sh.states.erase(fp);
      sh.holds.erase(fp);
      continue;
    }
    if (l.kind() == LimitKind::concurrency) {
      auto found = sh.holds.find(fp);
      std::int64_t held = 0;
      if (found != sh.holds.end()) held = held_after_expiry(found->second, now);
      res.held = held;
      if (checks) {
        const std::int64_t n = it.amount;
        if (n > l.capacity()) {
          res.ok = false;
          res.never = true;
        } else if (held + n > l.capacity()) {
          res.ok = false;
          res.retry_after = concurrency_retry(found->second, held, n, l.capacity(), now);
        }
      }
      res.available = std::max<std::int64_t>(0, l.capacity() - held);
      all_ok = all_ok && res.ok;
      continue;
    }
    Slot* slot;
    if (consumes) {
      slot = &sh.states.try_emplace(fp).first->second;
    } else {
      auto found = sh.states.find(fp);
      slot = found == sh.states.end() ? &fresh : &found->second;
    }
    slots[i] = slot;
    if (l.kind() == LimitKind::rate || l.kind() == LimitKind::adaptive) {
      const auto& p = it.rate != nullptr ? *it.rate : l.rate();
      const rate::Tat tat = rate::normalize(p, {slot->a, slot->b});
      if (checks) {
        const rate::Check c = rate::check(p, tat, it.amount, now);
        res.ok = c.ok;
        res.never = c.never;
        res.retry_after = c.retry_after;
      }
      if (op.report || !res.ok) {
        res.available = rate::available(p, tat, now);
        res.reset_after = rate::reset_after(tat, now);
      }
    } else {  // window
      Micros end = slot->a;
      std::int64_t used = slot->b;
      if (end <= now) {
        end = l.window_at(now).end;
        used = 0;
      }
      if (checks) {
        if (it.amount > l.capacity()) {
          res.ok = false;
          res.never = true;
        } else if (used + it.amount > l.capacity()) {
          res.ok = false;
          res.retry_after = end - now;
        }
      }
      res.window_end = end;
      res.available = std::max<std::int64_t>(0, l.capacity() - used);
      res.reset_after = end - now;
    }
    all_ok = all_ok && res.ok;
  }
  if (op.kind == OpKind::decide || op.kind == OpKind::read || op.kind == OpKind::reset) {
    return all_ok;
  }
  if (op.kind == OpKind::acquire && !all_ok) return false;

  // Pass 2: apply.
  for (std::size_t i = 0; i < op.items.size(); ++i) {
    const OpItem& it = op.items[i];
    const Limit& l = *it.limit;
    ItemResult& res = results[i];
    if (l.kind() == LimitKind::concurrency) {
      Shard& sh = im.shards[shard_ids[it.key]];
      const Fp fp = Impl::derive(bases[it.key], l);
      if (op.kind == OpKind::acquire && it.amount > 0) {
        sh.holds[fp].push_back(Hold{op.lease_id, it.amount, op.lease_expiry});
        res.held += it.amount;
      } else if (op.kind == OpKind::release) {
        auto found = sh.holds.find(fp);
        if (found != sh.holds.end()) {
          std::erase_if(found->second, [&](const Hold& h) { return h.lease == op.lease_id; });
          res.held = held_after_expiry(found->second, now);
          if (found->second.empty()) sh.holds.erase(found);
        }
      }
      res.available = std::max<std::int64_t>(0, l.capacity() - res.held);
      continue;
    }
    Slot& slot = *slots[i];
    std::int64_t delta = it.amount;
    if (op.kind == OpKind::release) delta = -delta;
    if (l.kind() == LimitKind::rate || l.kind() == LimitKind::adaptive) {
      const auto& p = it.rate != nullptr ? *it.rate : l.rate();
      rate::Tat tat = rate::normalize(p, {slot.a, slot.b});
      if (op.kind == OpKind::clamp) {
        tat = rate::clamp(p, tat, std::max<std::int64_t>(it.amount, 0), it.until, now);
      } else if (delta > 0) {
        tat = rate::consume(p, tat, delta, now);
      } else if (delta < 0) {
        tat = rate::refund(p, tat, -delta, now);
      }
      slot = Slot{tat.us, tat.rem};
      if (op.report) {
        res.available = rate::available(p, tat, now);
        res.reset_after = rate::reset_after(tat, now);
      }
    } else {
      if (slot.a <= now) slot = Slot{res.window_end, 0};
      const bool same_window = it.window_end == 0 || it.window_end == slot.a;
      if (op.kind == OpKind::clamp) {
        const std::int64_t floor_used =
            it.until > now ? l.capacity() : l.capacity() - std::max<std::int64_t>(it.amount, 0);
        slot.b = std::max(slot.b, floor_used);
      } else if (delta > 0) {
        slot.b += delta;
      } else if (delta < 0 && same_window) {
        slot.b = std::max<std::int64_t>(0, slot.b + delta);
      }
      res.window_end = slot.a;
      res.available = std::max<std::int64_t>(0, l.capacity() - slot.b);
    }
  }
  return all_ok;
}

void MemoryStore::reset_namespace(const Namespace& ns) {
  const std::uint64_t tag = std::uint64_t{ns.id} << kNsShift;
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    absl::erase_if(sh.states, [tag](const auto& kv) { return (kv.first.hi & kNsMask) == tag; });
    absl::erase_if(sh.holds, [tag](const auto& kv) { return (kv.first.hi & kNsMask) == tag; });
  }
}

std::size_t MemoryStore::prune(Micros now) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    n += sh.prune_locked(now);
  }
  return n;
}

std::size_t MemoryStore::size() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    n += sh.states.size() + sh.holds.size();
  }
  return n;
}

std::size_t MemoryStore::memory_bytes() const {
  std::size_t n = sizeof(Impl) + impl_->nshards * sizeof(Shard);
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    n += sh.states.capacity() * (sizeof(std::pair<const Fp, Slot>) + 1);
    n += sh.holds.capacity() * (sizeof(std::pair<const Fp, std::vector<Hold>>) + 1);
    for (const auto& kv : sh.holds) n += kv.second.capacity() * sizeof(Hold);
  }
  return n;
}

}  // namespace admit
