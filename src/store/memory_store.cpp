#include "admit/store/memory_store.hpp"

#define XXH_INLINE_ALL
#include <absl/container/flat_hash_map.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "admit/core/error.hpp"
#include "kernel.hpp"
#include "slot_table.hpp"

namespace admit {

namespace {

// A key's identity: 16-bit namespace id in the top bits of `hi`, 112 keyed-hash bits.
using detail::Fp;
struct FpHash {
  std::size_t operator()(const Fp& f) const { return f.lo; }  // already uniformly random
};

using detail::Hold;
using detail::Holds;
using detail::Slot;

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

// The fingerprint of one limit's state under a key's fingerprint `base`.
inline Fp derive_fp(const Fp& base, const Limit& l) {
  const std::uint64_t m = l.name_hash();
  return Fp{base.lo ^ (m * 0x9E3779B97F4A7C15ULL), base.hi ^ ((m >> 17) & ~kNsMask)};
}

struct alignas(64) Shard {
  std::mutex mu;
  detail::SlotTable states;
  absl::flat_hash_map<Fp, Holds, FpHash> holds;
  std::size_t prune_at = kMinPruneAt;

  std::size_t prune_locked(Micros now) {
    std::size_t n =
        states.erase_if([now](const Fp&, const Slot& s) { return detail::idle(s, now); });
    n += absl::erase_if(holds, [now](auto& kv) {
      std::erase_if(kv.second, [now](const Hold& h) { return detail::expired(h, now); });
      return kv.second.empty();
    });
    prune_at = std::max(kMinPruneAt, 2 * states.size());
    return n;
  }
};

}  // namespace

struct MemoryStore::Impl {
  std::unique_ptr<Shard[]> shards;
  std::size_t nshards = 0;
  std::size_t mask = 0;
  alignas(16) std::array<unsigned char, 192> secret{};
  std::mutex ns_mu;
  std::vector<std::string> namespaces;  // index = id - 1

  // Durable lease records by lease_key(): few (one per lease in flight), off the hot path.
  std::mutex lease_mu;
  absl::flat_hash_map<std::string, LeaseRecord> leases;

  // (namespace, lease id, group) as one map key.
  static std::string lease_key(const Namespace& ns, std::string_view group, std::uint64_t id) {
    std::string k(12 + group.size(), '\0');
    std::memcpy(k.data(), &ns.id, 4);
    std::memcpy(k.data() + 4, &id, 8);
    if (!group.empty()) std::memcpy(k.data() + 12, group.data(), group.size());
    return k;
  }

  // Limit configuration, sorted as list_config() reports it.
  using ConfigId = std::tuple<std::uint32_t, ConfigKind, std::string, std::string>;
  std::mutex cfg_mu;
  std::map<ConfigId, std::string, std::less<>> config;

  std::size_t shard_cap = 0;  // MemoryStoreOptions::max_keys per shard; 0 = none
  std::atomic<std::uint64_t> cap_refusals{0};
  std::atomic<std::uint64_t> expired_leases{0};  // lease records prune() found expired

  // The audit log of each namespace (by id): its last id given and the events kept, by
  // ascending id (appended in id order, dropped from the front).
  struct AuditLog {
    std::uint64_t last = 0;
    std::deque<AuditEvent> events;
  };
  std::mutex audit_mu;
  std::map<std::uint32_t, AuditLog> audit;

  // Learned state, sorted as list_learned() reports it; expired entries are dropped by the
  // calls that meet them.
  using LearnedId = std::tuple<std::uint32_t, LearnedKind, std::string, std::string, std::string>;
  std::mutex learned_mu;
  std::map<LearnedId, LearnedValue, std::less<>> learned;
  std::size_t audit_retention = kDefaultAuditRetention;

  explicit Impl(const MemoryStoreOptions& o)
      : nshards(std::bit_ceil(std::max<std::size_t>(o.shards, 1))),
        shard_cap(o.max_keys == 0 ? 0 : (o.max_keys + nshards - 1) / nshards),
        audit_retention(o.audit_retention) {
    validate_audit_retention(audit_retention);
    shards = std::make_unique<Shard[]>(nshards);
    for (std::size_t i = 0; i < nshards; ++i) shards[i].states.set_huge_pages(o.huge_pages);
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

  static Fp derive(const Fp& base, const Limit& l) { return derive_fp(base, l); }

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

namespace {

constexpr std::size_t kOneKeyItems = 8;

// How both apply() paths' Access types locate a key's state in its (locked) shard.
[[gnu::always_inline]] inline Slot* find_state(Shard& sh, Fp f, bool create) {
  return create ? &sh.states.try_emplace(f) : sh.states.find(f);
}
[[gnu::always_inline]] inline Holds* find_holds(Shard& sh, Fp f, bool create) {
  if (create) return &sh.holds[f];
  auto found = sh.holds.find(f);
  return found == sh.holds.end() ? nullptr : &found->second;
}
inline void forget_key(Shard& sh, Fp f) {
  sh.states.erase(f);
  sh.holds.erase(f);
}

// apply() for the usual op: one prepared key (every item in one shard), no key cap, no
// durable record. One lock, no sorting, nothing on the heap, the kernel's state lookups
// inlined: the same steps as the general path below, specialised.
bool apply_one_key(Shard* shards, const Op& op, std::span<ItemResult> results) {
  const KeyHandle& h = op.handles[0];
  Shard& sh = shards[h.w[2] - 1];
  std::lock_guard g(sh.mu);
  if (detail::consumes(op.kind)) {
    if (sh.states.size() >= sh.prune_at) sh.prune_locked(op.now);
    // Pass 1 keeps pointers to slots: no rehash may happen between two of its inserts.
    if (op.items.size() > 1) sh.states.reserve(sh.states.size() + op.items.size());
  }
  struct Access {
    Shard& sh;
    const Op& op;
    Fp base;
    Slot* slots[kOneKeyItems];

    Fp fp(std::size_t i) const { return derive_fp(base, *op.items[i].limit); }
    void forget(std::size_t i) { forget_key(sh, fp(i)); }
    [[gnu::always_inline]] Slot* state(std::size_t i, bool create) {
      return slots[i] = find_state(sh, fp(i), create);
    }
    Slot& state_again(std::size_t i) { return *slots[i]; }
    void state_changed(std::size_t) {}
    Holds* holds(std::size_t i, bool create) { return find_holds(sh, fp(i), create); }
    void holds_changed(std::size_t i, Holds* hl) {
      if (hl != nullptr && hl->empty()) sh.holds.erase(fp(i));
    }
  } acc{sh, op, Fp{h.w[0], h.w[1]}, {}};
  return detail::run(op, results, acc);
}

}  // namespace

bool MemoryStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  if (op.keys.size() == 1 && op.handles.size() == 1 && !op.handles[0].empty() &&
      op.items.size() <= kOneKeyItems && im.shard_cap == 0 && op.lease_record.empty() &&
      !detail::guards_record(op)) {
    return apply_one_key(im.shards.get(), op, results);
  }
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
    order.resize_down(
        static_cast<std::size_t>(std::unique(order.begin(), order.end()) - order.begin()));
  }
  for (const std::size_t s : order) im.shards[s].mu.lock();
  struct Unlock {
    Impl& im;
    Buf<std::size_t>& order;
    ~Unlock() {
      for (std::size_t* it = order.end(); it != order.begin();) im.shards[*--it].mu.unlock();
    }
  } unlock{im, order};

  if (detail::consumes(op.kind)) {
    for (const std::size_t s : order) {
      Shard& sh = im.shards[s];
      if (sh.states.size() >= sh.prune_at) sh.prune_locked(now);
      // Pass 1 keeps pointers to slots: no rehash may happen between two of its inserts.
      if (op.items.size() > 1) sh.states.reserve(sh.states.size() + op.items.size());
    }
  }

  // The key cap: an acquire or record needing a new key in a full shard (after pruning it) is
  // refused before anything changes.
  if (im.shard_cap != 0 && (op.kind == OpKind::acquire || op.kind == OpKind::record)) {
    for (const OpItem& it : op.items) {
      Shard& sh = im.shards[shard_ids[it.key]];
      if (sh.states.size() + sh.holds.size() < im.shard_cap) continue;
      const Fp f = Impl::derive(bases[it.key], *it.limit);
      const bool exists =
          it.limit->kind() == LimitKind::concurrency ? sh.holds.contains(f) : sh.states.contains(f);
      if (exists) continue;
      sh.prune_locked(now);
      if (sh.states.size() + sh.holds.size() < im.shard_cap) continue;
      im.cap_refusals.fetch_add(1, std::memory_order_relaxed);
      throw StoreUnavailable("memory store: max_keys reached (" +
                             std::to_string(im.shard_cap * im.nshards) +
                             " live keys); a new key waits until idle ones are pruned");
    }
  }

  // The kernel checks and changes; this store only locates state in the locked shards.
  struct Access {
    Shard* shards;
    const Op& op;
    Buf<Fp>& bases;
    Buf<std::size_t>& shard_ids;
    Buf<Slot*> slots;  // pass 1's slots, for pass 2 (no rehash in between: reserved above)

    Shard& shard(std::size_t i) const { return shards[shard_ids[op.items[i].key]]; }
    Fp fp(std::size_t i) const {
      const OpItem& it = op.items[i];
      return Impl::derive(bases[it.key], *it.limit);
    }
    void forget(std::size_t i) { forget_key(shard(i), fp(i)); }
    Slot* state(std::size_t i, bool create) {
      return slots[i] = find_state(shard(i), fp(i), create);
    }
    Slot& state_again(std::size_t i) { return *slots[i]; }
    void state_changed(std::size_t) {}
    Holds* holds(std::size_t i, bool create) { return find_holds(shard(i), fp(i), create); }
    void holds_changed(std::size_t i, Holds* h) {
      if (h != nullptr && h->empty()) shard(i).holds.erase(fp(i));
    }
  } acc{im.shards.get(), op, bases, shard_ids, Buf<Slot*>(op.items.size())};
  if (!detail::guards_record(op) && op.lease_record.empty()) return detail::run(op, results, acc);

  // A durable lease: its record changes with its usage, under the shard locks (taken first).
  std::lock_guard g(im.lease_mu);
  std::string key = Impl::lease_key(*op.ns, op.group, op.lease_id);
  auto found = im.leases.find(key);
  if (detail::guards_record(op)) {
    const bool has = found != im.leases.end();
    detail::check_record(op, has ? &found->second.data : nullptr, has ? found->second.expiry : 0);
  }
  const bool ok = detail::run(op, results, acc);
  const detail::RecordChange c = detail::record_change(op, ok);
  if (c.kind == detail::RecordChange::erase) {
    im.leases.erase(found);
  } else if (c.kind == detail::RecordChange::put) {
    if (found == im.leases.end()) {
      im.leases.emplace(std::move(key), LeaseRecord{std::string(c.data), c.expiry});
    } else {
      found->second.data.assign(c.data);
      if (c.expiry != 0) found->second.expiry = c.expiry;
    }
  }
  return ok;
}

void MemoryStore::apply_batch(std::span<const Op> ops,
                              std::span<const std::span<ItemResult>> results, std::span<bool> ok,
                              std::span<std::exception_ptr> errors) {
  // The prefetches read only the ops; Store::apply_batch checks the spans before applying.
  for (const Op& op : ops) {
    if (op.handles.size() != op.keys.size()) continue;
    for (const OpItem& it : op.items) prefetch(op.handles[it.key], *it.limit);
  }
  Store::apply_batch(ops, results, ok, errors);
}

// A hint read without the shard's lock (SlotTable::prefetch).
void MemoryStore::prefetch(const KeyHandle& key, const Limit& limit) const noexcept {
  if (key.empty() || limit.kind() == LimitKind::concurrency) return;
  impl_->shards[key.w[2] - 1].states.prefetch(derive_fp(Fp{key.w[0], key.w[1]}, limit));
}

std::optional<LeaseRecord> MemoryStore::get_lease(const Namespace& ns, std::string_view group,
                                                  std::uint64_t lease_id, Micros now) {
  std::lock_guard g(impl_->lease_mu);
  const auto found = impl_->leases.find(Impl::lease_key(ns, group, lease_id));
  if (found == impl_->leases.end() || found->second.expiry <= now) return std::nullopt;
  return found->second;
}

void MemoryStore::reset_namespace(const Namespace& ns) {
  const std::uint64_t tag = std::uint64_t{ns.id} << kNsShift;
  {
    std::lock_guard g(impl_->lease_mu);
    absl::erase_if(impl_->leases,
                   [&ns](const auto& kv) { return std::memcmp(kv.first.data(), &ns.id, 4) == 0; });
  }
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    sh.states.erase_if([tag](const Fp& f, const Slot&) { return (f.hi & kNsMask) == tag; });
    absl::erase_if(sh.holds, [tag](const auto& kv) { return (kv.first.hi & kNsMask) == tag; });
  }
}

std::size_t MemoryStore::prune(Micros now) {
  std::size_t n = 0;
  {
    std::lock_guard g(impl_->lease_mu);
    const std::size_t expired =
        absl::erase_if(impl_->leases, [now](const auto& kv) { return kv.second.expiry <= now; });
    impl_->expired_leases.fetch_add(expired, std::memory_order_relaxed);
    n += expired;
  }
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    n += sh.prune_locked(now);
  }
  return n;
}

std::optional<std::uint64_t> MemoryStore::expired_leases() const {
  return impl_->expired_leases.load(std::memory_order_relaxed);
}

std::uint64_t MemoryStore::key_cap_refusals() const {
  return impl_->cap_refusals.load(std::memory_order_relaxed);
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

void MemoryStore::put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) {
  validate_config_key(key);
  Impl::ConfigId id{ns.id, key.kind, std::string(key.entity), std::string(key.resource)};
  std::lock_guard g(impl_->cfg_mu);
  if (value.empty()) {
    impl_->config.erase(id);
  } else {
    impl_->config.insert_or_assign(std::move(id), std::string(value));
  }
}

void MemoryStore::get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                             std::span<std::optional<std::string>> values) {
  validate_config_read(keys, values);
  std::lock_guard g(impl_->cfg_mu);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto it = impl_->config.find(Impl::ConfigId{
        ns.id, keys[i].kind, std::string(keys[i].entity), std::string(keys[i].resource)});
    values[i] = it == impl_->config.end() ? std::nullopt : std::optional(it->second);
  }
}

std::vector<ConfigEntry> MemoryStore::list_config(const Namespace& ns) {
  std::vector<ConfigEntry> out;
  std::lock_guard g(impl_->cfg_mu);
  for (auto it = impl_->config.lower_bound(Impl::ConfigId{ns.id, ConfigKind::system, "", ""});
       it != impl_->config.end() && std::get<0>(it->first) == ns.id; ++it) {
    const auto& [id, kind, entity, resource] = it->first;
    out.push_back(ConfigEntry{kind, entity, resource, it->second});
  }
  return out;
}

// ---- the audit log ----

std::uint64_t MemoryStore::append_audit(const Namespace& ns, AuditEvent event) {
  validate_audit_event(event);
  std::lock_guard g(impl_->audit_mu);
  Impl::AuditLog& log = impl_->audit[ns.id];
  event.id = ++log.last;
  log.events.push_back(std::move(event));
  while (log.events.size() > impl_->audit_retention) log.events.pop_front();
  return log.last;
}

std::vector<AuditEvent> MemoryStore::read_audit(const Namespace& ns, const AuditQuery& query) {
  validate_audit_query(query);
  std::vector<AuditEvent> out;
  std::lock_guard g(impl_->audit_mu);
  const auto found = impl_->audit.find(ns.id);
  if (found == impl_->audit.end()) return out;
  const std::deque<AuditEvent>& events = found->second.events;
  const auto by_id = [](const AuditEvent& e, std::uint64_t id) { return e.id < id; };
  // [first, last): the events within the query's bounds.
  auto first = std::lower_bound(events.begin(), events.end(), query.after_id, by_id);
  if (first != events.end() && first->id == query.after_id) ++first;
  const auto last = query.before_id == 0
                        ? events.end()
                        : std::lower_bound(first, events.end(), query.before_id, by_id);
  const auto take = [&](const AuditEvent& e) {
    if (audit_matches(e, query)) out.push_back(e);
    return out.size() < query.limit;
  };
  if (query.newest_first) {
    for (auto it = last; it != first;) {
      if (!take(*--it)) break;
    }
  } else {
    for (auto it = first; it != last; ++it) {
      if (!take(*it)) break;
    }
  }
  return out;
}

// ---- learned state ----

LearnedValue MemoryStore::put_learned(const Namespace& ns, const LearnedKey& key,
                                      const LearnedValue& value, Micros now) {
  validate_learned_key(key);
  validate_learned_value(value, now);
  Impl::LearnedId id{ns.id, key.kind, std::string(key.entity), std::string(key.resource),
                     std::string(key.limit)};
  std::lock_guard g(impl_->learned_mu);
  auto it = impl_->learned.find(id);
  std::optional<LearnedValue> stored;
  if (it != impl_->learned.end()) stored = it->second;
  LearnedValue merged = merge_learned(stored, value, now);
  if (it == impl_->learned.end()) {
    impl_->learned.emplace(std::move(id), merged);
  } else {
    it->second = merged;
  }
  return merged;
}

std::vector<LearnedEntry> MemoryStore::list_learned(const Namespace& ns, Micros now) {
  std::vector<LearnedEntry> out;
  std::lock_guard g(impl_->learned_mu);
  auto it = impl_->learned.lower_bound(Impl::LearnedId{ns.id, LearnedKind::limits, "", "", ""});
  while (it != impl_->learned.end() && std::get<0>(it->first) == ns.id) {
    if (it->second.expires_at <= now) {
      it = impl_->learned.erase(it);
      continue;
    }
    const auto& [id, kind, entity, resource, limit] = it->first;
    out.push_back(LearnedEntry{kind, entity, resource, limit, it->second});
    ++it;
  }
  return out;
}

std::size_t MemoryStore::memory_bytes() const {
  std::size_t n = sizeof(Impl) + impl_->nshards * sizeof(Shard);
  for (std::size_t i = 0; i < impl_->nshards; ++i) {
    Shard& sh = impl_->shards[i];
    std::lock_guard g(sh.mu);
    n += sh.states.bytes();
    n += sh.holds.capacity() * (sizeof(std::pair<const Fp, std::vector<Hold>>) + 1);
    for (const auto& kv : sh.holds) n += kv.second.capacity() * sizeof(Hold);
  }
  return n;
}

}  // namespace admit
