#include "admit/limiter.hpp"

#include "admit/core/aimd.hpp"
#include "admit/core/limit_codec.hpp"

#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <random>

#include <boost/container/small_vector.hpp>

namespace admit {

namespace {

template <class T>
using SmallVec = boost::container::small_vector<T, 4>;

constexpr std::size_t kMaxIdBytes = 256;

// Debian's Abseil has its own string_view type; heterogeneous lookups go through it.
absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// (entity, resource) as one map key: length-prefixed, so no two pairs share a key.
void append_pair_key(std::string& out, std::string_view entity, std::string_view resource) {
  char len[24];
  const auto r = std::to_chars(len, len + sizeof len, entity.size());
  out.append(len, r.ptr).append(1, ':').append(entity).append(resource);
}
std::string pair_key(std::string_view entity, std::string_view resource) {
  std::string k;
  append_pair_key(k, entity, resource);
  return k;
}

// Immutable configuration; replaced whole (copy on write) by the set_* calls.
struct Snapshot {
  struct EntityConf {
    std::optional<std::vector<Limit>> defaults;
    absl::flat_hash_map<std::string, std::vector<Limit>> per_resource;
    std::string parent;
  };
  // Limits learned for one (entity, resource), and the configured set with them merged in
  // (kept current by Impl::update, so resolution stays one lookup).
  struct Discovered {
    std::string entity;
    std::string resource;
    std::vector<Limit> learned;
    std::vector<Limit> merged;
    std::vector<ConfigSource> sources;  // one per merged limit
  };
  std::vector<Limit> system;
  absl::flat_hash_map<std::string, std::vector<Limit>> resources;
  absl::flat_hash_map<std::string, EntityConf> entities;
  absl::flat_hash_map<std::string, Discovered> discovered;  // by pair_key
};

struct Resolved {
  const std::vector<Limit>* limits = nullptr;
  ConfigSource source = ConfigSource::system;
  const std::vector<ConfigSource>* sources = nullptr;  // per limit, when they differ

  ConfigSource source_of(std::size_t i) const { return sources ? (*sources)[i] : source; }
};

// Configured limits only (no discovered ones): entity > entity default > resource > system.
Resolved resolve_configured(const Snapshot& s, std::string_view entity,
                            std::string_view resource) {
  if (!s.entities.empty()) {
    auto e = s.entities.find(av(entity));
    if (e != s.entities.end()) {
      auto r = e->second.per_resource.find(av(resource));
      if (r != e->second.per_resource.end()) return {&r->second, ConfigSource::entity};
      if (e->second.defaults) return {&*e->second.defaults, ConfigSource::entity_default};
    }
  }
  auto r = s.resources.find(av(resource));
  if (r != s.resources.end()) return {&r->second, ConfigSource::resource};
  if (!s.system.empty()) return {&s.system, ConfigSource::system};
  return {};
}

Resolved resolve_in(const Snapshot& s, std::string_view entity, std::string_view resource) {
  if (!s.discovered.empty()) {
    auto d = s.discovered.find(pair_key(entity, resource));
    if (d != s.discovered.end()) {
      return {&d->second.merged, ConfigSource::discovered, &d->second.sources};
    }
  }
  return resolve_configured(s, entity, resource);
}

// Recomputes every discovered entry's merged set: the configured limits, each replaced by the
// learned limit of the same name, then the learned limits no configured one names.
void remerge(Snapshot& s) {
  for (auto& [key, d] : s.discovered) {
    d.merged.clear();
    d.sources.clear();
    const Resolved base = resolve_configured(s, d.entity, d.resource);
    std::vector<char> used(d.learned.size(), 0);
    if (base.limits != nullptr) {
      for (const Limit& l : *base.limits) {
        auto it = std::find_if(d.learned.begin(), d.learned.end(),
                               [&](const Limit& x) { return x.name() == l.name(); });
        if (it == d.learned.end()) {
          d.merged.push_back(l);
          d.sources.push_back(base.source);
        } else {
          used[static_cast<std::size_t>(it - d.learned.begin())] = 1;
          d.merged.push_back(*it);
          d.sources.push_back(ConfigSource::discovered);
        }
      }
    }
    for (std::size_t i = 0; i < d.learned.size(); ++i) {
      if (used[i] == 0) {
        d.merged.push_back(d.learned[i]);
        d.sources.push_back(ConfigSource::discovered);
      }
    }
  }
}

std::string_view parent_of(const Snapshot& s, std::string_view entity) {
  if (s.entities.empty()) return {};
  auto e = s.entities.find(av(entity));
  return e == s.entities.end() ? std::string_view{} : std::string_view(e->second.parent);
}

// Makes `parent` the parent of `entity` in `s`, refusing a cycle or a chain deeper than
// `max_depth` (through `entity` or any of its descendants). An empty parent removes the link.
void link_parent(Snapshot& s, const std::string& entity, const std::string& parent,
                 int max_depth) {
  // Walk up from the new parent: reaching `entity` is a cycle; count the depth.
  int depth = 1;
  for (std::string_view p = parent; !p.empty(); p = parent_of(s, p)) {
    if (p == entity) throw ValidationError("parent", parent, "would make a cycle with " + entity);
    if (++depth > max_depth + 1) {
      throw ValidationError("parent", parent,
                            "chain deeper than max_parent_depth " + std::to_string(max_depth));
    }
  }
  s.entities[entity].parent = parent;
  // The new link also deepens every chain through `entity` (its descendants): a chain built
  // leaf-first must be refused here, not silently cut at max_parent_depth by the plan.
  for (const auto& [name, conf] : s.entities) {
    int ancestors = 0;
    for (std::string_view p = conf.parent; !p.empty(); p = parent_of(s, p)) {
      if (++ancestors > max_depth) {
        throw ValidationError("parent", parent,
                              "the chain of " + name + " would be deeper than max_parent_depth " +
                                  std::to_string(max_depth));
      }
    }
  }
}

void check_unique_names(const std::vector<Limit>& limits) {
  for (std::size_t i = 0; i < limits.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (limits[i].name() == limits[j].name()) {
        throw ValidationError("limit name", limits[i].name(), "appears twice in one limit set");
      }
    }
  }
}

std::string format_micros(Micros us) {
  char buf[64];
  if (us % kMicrosPerSecond == 0) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(us / kMicrosPerSecond));
  } else {
    std::snprintf(buf, sizeof buf, "%.6gs", static_cast<double>(us) / 1e6);
  }
  return buf;
}

std::atomic<std::uint64_t> g_next_limiter_uid{1};

// Lease ids: each thread takes them in blocks so the hot path does not contend on one
// counter. The blocks start at a random point of the 64-bit space, so processes sharing a
// store (SQLite, Redis) hold distinct ids: two processes' ranges overlap with probability
// about (their leases) / 2^54.
std::uint64_t random_lease_block() {
  std::random_device rd;
  const std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return (r >> 10) | 1;  // block * 1024 stays below 2^64; never 0
}
std::atomic<std::uint64_t> g_next_lease_block{random_lease_block()};
constexpr std::uint64_t kLeaseBlock = 1024;
thread_local std::uint64_t t_lease_next = 0;
thread_local std::uint64_t t_lease_end = 0;

std::uint64_t next_lease_id() {
  if (t_lease_next == t_lease_end) {
    t_lease_next = g_next_lease_block.fetch_add(1, std::memory_order_relaxed) * kLeaseBlock;
    t_lease_end = t_lease_next + kLeaseBlock;
  }
  return t_lease_next++;
}

// Per-thread cache of the current snapshot, so a call reads one atomic (the version) and
// touches no shared reference count.
struct TlsSnapshot {
  std::uint64_t uid = 0;
  std::uint64_t version = 0;
  std::shared_ptr<const Snapshot> snap;
};
thread_local std::array<TlsSnapshot, 4> t_snapshots;
thread_local std::size_t t_snapshot_victim = 0;

}  // namespace

// One resolved call: the keys of the chain and one entry per limit.
struct Limiter::Plan {
  struct Entry {
    std::uint16_t key = 0;
    const Limit* limit = nullptr;
    std::int64_t amount = 0;
    ConfigSource source = ConfigSource::system;
    AimdLaw* aimd = nullptr;  // adaptive limits (plan cache: owned by lease_key)
  };
  SmallVec<KeyParts> keys;
  SmallVec<KeyHandle> handles;  // the store's prepared keys (plan cache only)
  SmallVec<Entry> entries;
  SmallVec<const Limit*> unlimited;  // named limits that are 0 = unlimited (never stored)
  bool adaptive = false;             // some entry has an AIMD law (plan cache only)
  std::shared_ptr<const detail::LeaseKey> lease_key;  // plan cache only: shared by its leases
  Code error = Code::ok;
  std::string error_reason;
};

struct Limiter::Impl {
  Impl(Store& s, const LimiterOptions& o) : store(s), opt(o) {}

  Store& store;
  const LimiterOptions& opt;
  std::uint64_t uid = g_next_limiter_uid.fetch_add(1);
  Namespace ns;

  mutable std::mutex cfg_mu;
  std::shared_ptr<const Snapshot> cfg = std::make_shared<Snapshot>();
  std::atomic<std::uint64_t> cfg_version{1};

  // Adaptive limits: one AIMD control law per (entity, resource, limit), made on first use
  // and replaced when the limit's settings change.
  struct Adaptive {
    Limit limit;
    std::shared_ptr<AimdLaw> ctl;
  };
  mutable std::mutex aimd_mu;
  absl::flat_hash_map<std::string, Adaptive> controllers;

  // The control law of limit `l` of (entity, resource); nullptr if none yet and !create.
  std::shared_ptr<AimdLaw> controller(const Limit& l, std::string_view entity,
                                      std::string_view resource, bool create) {
    std::string k = pair_key(entity, resource);
    k += '\0';
    k += l.name();
    std::lock_guard g(aimd_mu);
    auto it = controllers.find(k);
    if (it != controllers.end() && it->second.limit == l) return it->second.ctl;
    if (!create) return nullptr;
    auto ctl = std::make_shared<AimdLaw>(l.aimd_options());
    controllers.insert_or_assign(std::move(k), Adaptive{l, ctl});
    return ctl;
  }

  struct Waiter {
    std::condition_variable cv;
    bool notified = false;  // guarded by wait_mu
  };
  std::mutex wait_mu;
  absl::flat_hash_map<std::string, std::deque<Waiter*>> queues;  // FIFO per pair_key
  std::atomic<std::size_t> waiters{0};

  const Snapshot& current() const { return *current_ptr(); }
  // The owning pointer behind current(), for caches that must keep the snapshot alive.
  const std::shared_ptr<const Snapshot>& current_ptr() const {
    const std::uint64_t v = cfg_version.load(std::memory_order_acquire);
    for (auto& e : t_snapshots) {
      if (e.uid == uid && e.version == v) return e.snap;
    }
    TlsSnapshot* slot = nullptr;
    for (auto& e : t_snapshots) {
      if (e.uid == uid) slot = &e;
    }
    if (slot == nullptr) {
      slot = &t_snapshots[t_snapshot_victim];
      t_snapshot_victim = (t_snapshot_victim + 1) % t_snapshots.size();
    }
    std::lock_guard g(cfg_mu);
    *slot = TlsSnapshot{uid, cfg_version.load(std::memory_order_relaxed), cfg};
    return slot->snap;
  }

  template <class F>
  void update(F&& f) {
    std::lock_guard g(cfg_mu);
    auto next = std::make_shared<Snapshot>(*cfg);
    f(*next);
    if (!next->discovered.empty()) remerge(*next);
    cfg = std::move(next);
    cfg_version.fetch_add(1, std::memory_order_release);
  }

  // ---- ConfigMode::store: entries read from the store, and the chains built from them ----

  struct CachedEntry {
    bool present = false;                              // cached at all
    std::shared_ptr<const std::vector<Limit>> limits;  // limit kinds; null: no such entry
    std::string parent;                                // parent kind; empty: none
    std::string error;                                 // the stored text does not decode
    Micros loaded_at = 0;
  };
  struct CachedChain {
    std::shared_ptr<const Snapshot> snap;
    Micros fresh_until = 0;
    std::uint64_t version = 0;
  };
  mutable std::mutex cache_mu;
  absl::flat_hash_map<std::string, CachedEntry> entries;  // by entry_key
  absl::flat_hash_map<std::string, CachedChain> chains;   // by pair_key
  std::uint64_t cache_gen = 0;  // bumped by every local write: reads begun before it are dropped
  std::size_t prune_at = 1024;
  std::atomic<std::uint64_t> hits{0}, misses{0}, stale{0};

  static std::string entry_key(const ConfigKey& k) {
    std::string key(1, static_cast<char>('0' + static_cast<int>(k.kind)));
    key += pair_key(k.entity, k.resource);
    return key;
  }

  bool fresh(const CachedEntry& e, Micros now) const {
    return e.present && now - e.loaded_at < opt.config_ttl;
  }

  static CachedEntry decode(const ConfigKey& k, const std::optional<std::string>& value,
                            Micros now) {
    CachedEntry e;
    e.present = true;
    e.loaded_at = now;
    if (!value) return e;
    if (k.kind == ConfigKind::parent) {
      e.parent = *value;
      return e;
    }
    try {
      e.limits = std::make_shared<const std::vector<Limit>>(decode_limits(*value));
    } catch (const ValidationError& x) {
      e.error = "stored " + std::string(to_string(k.kind)) + " limits of '" +
                std::string(k.entity.empty() ? k.resource : k.entity) + "' do not decode: " +
                x.what();
    }
    return e;
  }

  // The entries of `keys`: fresh ones from the cache, the others read in one batch. When the
  // store cannot be read, cached entries are used however old (counted); with none, the
  // StoreUnavailable goes on. Sets `read` if the store was asked.
  std::vector<CachedEntry> fetch(std::span<const ConfigKey> keys, Micros now, bool& read) {
    std::vector<CachedEntry> out(keys.size());
    std::vector<ConfigKey> ask;
    std::vector<std::size_t> which;
    std::uint64_t gen;
    {
      std::lock_guard g(cache_mu);
      gen = cache_gen;
      for (std::size_t i = 0; i < keys.size(); ++i) {
        auto it = entries.find(entry_key(keys[i]));
        if (it != entries.end()) out[i] = it->second;
        if (!fresh(out[i], now)) {
          ask.push_back(keys[i]);
          which.push_back(i);
        }
      }
    }
    if (ask.empty()) return out;
    read = true;
    std::vector<std::optional<std::string>> values(ask.size());
    try {
      store.get_config(ns, ask, values);
    } catch (const StoreUnavailable&) {
      for (const std::size_t i : which) {
        if (!out[i].present) throw;
      }
      stale.fetch_add(which.size(), std::memory_order_relaxed);
      return out;
    }
    std::lock_guard g(cache_mu);
    for (std::size_t j = 0; j < which.size(); ++j) {
      out[which[j]] = decode(ask[j], values[j], now);
      if (gen == cache_gen) entries.insert_or_assign(entry_key(ask[j]), out[which[j]]);
    }
    if (entries.size() >= prune_at) {
      absl::erase_if(entries, [&](const auto& kv) { return !fresh(kv.second, now); });
      prune_at = std::max<std::size_t>(1024, 2 * entries.size());
    }
    return out;
  }

  // The configuration that resolves (entity, resource) and its chain of parents, as a
  // Snapshot: the whole configuration in local mode; in store mode one built from the cached
  // entries of the chain (read from the store when expired) plus the discovered limits, valid
  // until *fresh_until. @throws StoreUnavailable (nothing cached and no store); ValidationError
  // (a stored entry that does not decode, a cycle of parents).
  std::shared_ptr<const Snapshot> view(std::string_view entity, std::string_view resource,
                                       Micros now, Micros* fresh_until) {
    if (opt.config == ConfigMode::local) {
      if (fresh_until != nullptr) *fresh_until = std::numeric_limits<Micros>::max();
      return current_ptr();
    }
    const std::uint64_t version = cfg_version.load(std::memory_order_acquire);
    thread_local std::string pk;  // pair_key(entity, resource), its buffer reused
    pk.clear();
    append_pair_key(pk, entity, resource);
    {
      std::lock_guard g(cache_mu);
      auto it = chains.find(pk);
      if (it != chains.end() && it->second.version == version && now < it->second.fresh_until) {
        hits.fetch_add(1, std::memory_order_relaxed);
        if (fresh_until != nullptr) *fresh_until = it->second.fresh_until;
        return it->second.snap;
      }
    }
    auto snap = std::make_shared<Snapshot>();
    Micros oldest = now;
    bool read = false;
    auto use = [&](const CachedEntry& e) -> const CachedEntry& {
      if (!e.error.empty()) throw ValidationError("stored config", std::string(entity), e.error);
      oldest = std::min(oldest, e.loaded_at);
      return e;
    };
    std::vector<ConfigKey> keys = {{ConfigKind::system, {}, {}},
                                   {ConfigKind::resource, {}, resource}};
    std::vector<std::string> chain{std::string(entity)};
    for (int depth = 0;; ++depth) {
      const std::string& e = chain.back();
      keys.push_back({ConfigKind::entity, e, resource});
      keys.push_back({ConfigKind::entity_default, e, {}});
      keys.push_back({ConfigKind::parent, e, {}});
      const std::vector<CachedEntry> got = fetch(keys, now, read);
      std::size_t o = 0;
      if (depth == 0) {
        if (const auto& sys = use(got[0]); sys.limits) snap->system = *sys.limits;
        if (const auto& res = use(got[1]); res.limits) {
          snap->resources.emplace(std::string(resource), *res.limits);
        }
        o = 2;
      }
      Snapshot::EntityConf& conf = snap->entities[e];
      if (const auto& own = use(got[o]); own.limits) {
        conf.per_resource.emplace(std::string(resource), *own.limits);
      }
      if (const auto& def = use(got[o + 1]); def.limits) conf.defaults = *def.limits;
      conf.parent = use(got[o + 2]).parent;
      if (conf.parent.empty() || depth >= opt.max_parent_depth) break;
      if (std::find(chain.begin(), chain.end(), conf.parent) != chain.end()) {
        throw ValidationError("parent", conf.parent,
                              "the stored parents of " + std::string(entity) + " make a cycle");
      }
      chain.push_back(conf.parent);
      keys.clear();
    }
    const Snapshot& cur = current();
    if (!cur.discovered.empty()) {
      for (const std::string& e : chain) {
        auto d = cur.discovered.find(pair_key(e, resource));
        if (d != cur.discovered.end()) snap->discovered.insert(*d);
      }
      if (!snap->discovered.empty()) remerge(*snap);
    }
    (read ? misses : hits).fetch_add(1, std::memory_order_relaxed);
    const Micros until = oldest + opt.config_ttl;
    if (fresh_until != nullptr) *fresh_until = until;
    std::lock_guard g(cache_mu);
    if (chains.size() >= prune_at) {
      absl::erase_if(chains, [&](const auto& kv) { return !(now < kv.second.fresh_until); });
    }
    chains.insert_or_assign(pk, CachedChain{snap, until, version});
    return snap;
  }

  // Writes one configuration entry to the store; this Limiter then reads it back from there.
  void write_config(const ConfigKey& key, std::string_view value) {
    store.put_config(ns, key, value);
    invalidate();
  }

  void invalidate() {
    {
      std::lock_guard g(cache_mu);
      entries.clear();
      chains.clear();
      ++cache_gen;
    }
    std::lock_guard g(cfg_mu);
    cfg_version.fetch_add(1, std::memory_order_release);
  }

  // Wakes the head of every queue: capacity came back somewhere.
  void notify_all_heads() {
    if (waiters.load(std::memory_order_acquire) == 0) return;
    std::lock_guard g(wait_mu);
    for (auto& [k, q] : queues) {
      if (!q.empty()) {
        q.front()->notified = true;
        q.front()->cv.notify_all();
      }
    }
  }
};

Limiter::Limiter(Store& store, const Clock& clock, LimiterOptions options)
    : store_(store), clock_(clock), options_(std::move(options)),
      impl_(std::make_unique<Impl>(store_, options_)) {
  if (options_.lease_ttl <= 0) {
    throw ValidationError("lease_ttl", std::to_string(options_.lease_ttl), "must be > 0");
  }
  if (options_.max_parent_depth < 0 || options_.max_parent_depth > 64) {
    throw ValidationError("max_parent_depth", std::to_string(options_.max_parent_depth),
                          "must be within 0..64");
  }
  if (options_.config_ttl < 0) {
    throw ValidationError("config_ttl", std::to_string(options_.config_ttl), "must be >= 0");
  }
  impl_->ns = store_.open_namespace(options_.ns);
}

Limiter::~Limiter() = default;

// ---------------------------------------------------------------- configuration

void Limiter::set_default_limits(std::vector<Limit> limits) {
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->write_config({ConfigKind::system, {}, {}}, encode_limits(limits));
  }
  impl_->update([&](Snapshot& s) { s.system = std::move(limits); });
}

void Limiter::set_limits(std::string resource, std::vector<Limit> limits) {
  validate_name("resource", resource);
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->write_config({ConfigKind::resource, {}, resource}, encode_limits(limits));
  }
  impl_->update([&](Snapshot& s) { s.resources[std::move(resource)] = std::move(limits); });
}

void Limiter::set_entity_limits(std::string entity, std::string resource,
                                std::vector<Limit> limits) {
  validate_name("entity", entity);
  validate_name("resource", resource);
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->write_config({ConfigKind::entity, entity, resource}, encode_limits(limits));
  }
  impl_->update([&](Snapshot& s) {
    s.entities[std::move(entity)].per_resource[std::move(resource)] = std::move(limits);
  });
}

void Limiter::set_entity_default_limits(std::string entity, std::vector<Limit> limits) {
  validate_name("entity", entity);
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->write_config({ConfigKind::entity_default, entity, {}}, encode_limits(limits));
  }
  impl_->update([&](Snapshot& s) { s.entities[std::move(entity)].defaults = std::move(limits); });
}

void Limiter::set_parent(std::string entity, std::string parent) {
  validate_name("entity", entity);
  if (!parent.empty()) validate_name("parent", parent);
  if (impl_->opt.config == ConfigMode::store) {
    // Checked against every link stored now (another process may add one concurrently: a
    // cycle is then refused when a chain is resolved).
    Snapshot links;
    for (const ConfigEntry& e : store_.list_config(impl_->ns)) {
      if (e.kind == ConfigKind::parent) links.entities[e.entity].parent = e.value;
    }
    link_parent(links, entity, parent, options_.max_parent_depth);
    impl_->write_config({ConfigKind::parent, entity, {}}, parent);
    return;
  }
  impl_->update([&](Snapshot& s) { link_parent(s, entity, parent, options_.max_parent_depth); });
}

void Limiter::remove_limits(std::string_view resource) {
  if (impl_->opt.config == ConfigMode::store) {
    const ConfigKey key{ConfigKind::resource, {}, resource};
    validate_config_key(key);
    return impl_->write_config(key, {});
  }
  impl_->update([&](Snapshot& s) { s.resources.erase(std::string(resource)); });
}

void Limiter::remove_entity_limits(std::string_view entity, std::string_view resource) {
  if (impl_->opt.config == ConfigMode::store) {
    const ConfigKey key{ConfigKind::entity, entity, resource};
    validate_config_key(key);
    return impl_->write_config(key, {});
  }
  impl_->update([&](Snapshot& s) {
    auto e = s.entities.find(av(entity));
    if (e != s.entities.end()) e->second.per_resource.erase(std::string(resource));
  });
}

void Limiter::set_discovered_limits(std::string entity, std::string resource,
                                    std::vector<Limit> limits) {
  validate_name("entity", entity);
  validate_name("resource", resource);
  check_unique_names(limits);
  impl_->update([&](Snapshot& s) {
    if (limits.empty()) {
      s.discovered.erase(pair_key(entity, resource));
      return;
    }
    auto& d = s.discovered[pair_key(entity, resource)];
    d.entity = std::move(entity);
    d.resource = std::move(resource);
    d.learned = std::move(limits);
  });
}

std::vector<Limit> Limiter::discovered_limits(std::string_view entity,
                                              std::string_view resource) const {
  const Snapshot& s = impl_->current();
  auto d = s.discovered.find(pair_key(entity, resource));
  return d == s.discovered.end() ? std::vector<Limit>{} : d->second.learned;
}

std::vector<std::pair<Limit, ConfigSource>> Limiter::resolve(std::string_view entity,
                                                             std::string_view resource) const {
  const auto snap = impl_->view(entity, resource, clock_.now(), nullptr);
  const Resolved r = resolve_in(*snap, entity, resource);
  std::vector<std::pair<Limit, ConfigSource>> out;
  if (r.limits != nullptr) {
    for (std::size_t i = 0; i < r.limits->size(); ++i) {
      out.emplace_back((*r.limits)[i], r.source_of(i));
    }
  }
  return out;
}

std::vector<std::string> Limiter::resources() const {
  std::vector<std::string> out;
  if (impl_->opt.config == ConfigMode::store) {
    for (ConfigEntry& e : store_.list_config(impl_->ns)) {
      if (e.kind == ConfigKind::resource || e.kind == ConfigKind::entity) {
        out.push_back(std::move(e.resource));
      }
    }
  } else {
    const Snapshot& s = impl_->current();
    for (const auto& [name, limits] : s.resources) out.push_back(name);
    for (const auto& [entity, conf] : s.entities) {
      for (const auto& [name, limits] : conf.per_resource) out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

CacheStats Limiter::cache_stats() const {
  const Impl& im = *impl_;
  CacheStats st;
  if (options_.config != ConfigMode::store) return st;
  st.hits = im.hits.load(std::memory_order_relaxed);
  st.misses = im.misses.load(std::memory_order_relaxed);
  st.stale = im.stale.load(std::memory_order_relaxed);
  st.ttl = options_.config_ttl;
  std::lock_guard g(im.cache_mu);
  st.entries = im.entries.size();
  return st;
}

void Limiter::invalidate_config() {
  if (options_.config == ConfigMode::store) impl_->invalidate();
}

// ---------------------------------------------------------------- planning

namespace {

// Empties a plan (no keys, no entries, no error).
void clear_plan(auto& plan) {
  plan.keys.clear();
  plan.handles.clear();
  plan.entries.clear();
  plan.unlimited.clear();
  plan.adaptive = false;
  plan.lease_key.reset();
  plan.error = Code::ok;
  plan.error_reason.clear();
}

// Resolves the chain of keys and every limit that applies (amounts 0).
void resolve_chain(const Snapshot& snap, std::string_view entity, std::string_view resource,
                   int max_depth, auto& plan) {
  clear_plan(plan);
  if (resource.empty() || resource.size() > kMaxIdBytes || entity.size() > kMaxIdBytes) {
    plan.error = Code::invalid_argument;
    plan.error_reason = "entity and resource must be at most 256 bytes; resource non-empty";
    return;
  }
  std::string_view e = entity;
  for (int depth = 0; depth <= max_depth; ++depth) {
    const Resolved r = resolve_in(snap, e, resource);
    const auto key = static_cast<std::uint16_t>(plan.keys.size());
    plan.keys.push_back(KeyParts{e, resource});
    if (r.limits != nullptr) {
      for (std::size_t i = 0; i < r.limits->size(); ++i) {
        const Limit& l = (*r.limits)[i];
        if (l.unlimited()) {
          plan.unlimited.push_back(&l);
        } else {
          plan.entries.push_back({key, &l, 0, r.source_of(i), nullptr});
        }
      }
    }
    e = parent_of(snap, e);
    if (e.empty()) break;
  }
}

// The placement group of the chain of `entity` (Op::group): its root, as far as a chain of
// `max_depth` parents reaches (the last key resolve_chain would make).
std::string_view chain_root(const Snapshot& snap, std::string_view entity, int max_depth) {
  std::string_view e = entity;
  for (int depth = 0; depth < max_depth; ++depth) {
    const std::string_view p = parent_of(snap, e);
    if (p.empty()) break;
    e = p;
  }
  return e;
}

// Sets each entry's amount from `amounts` (concurrency and adaptive limits default to 1) and checks
// them: negative, unknown name, or beyond the exact range is an error in plan.error.
void apply_amounts(const Amounts& amounts, std::string_view entity, std::string_view resource,
                   auto& plan) {
  SmallVec<char> matched(amounts.size(), 0);  // amounts[i] named some limit
  for (auto& en : plan.entries) {
    const Limit& l = *en.limit;
    en.amount = l.kind() == LimitKind::concurrency || l.kind() == LimitKind::adaptive ? 1 : 0;
    std::size_t i = 0;
    for (const auto& a : amounts) {
      if (a.name == l.name()) {
        en.amount = a.value;
        matched[i] = 1;
      }
      ++i;
    }
  }
  for (const Limit* l : plan.unlimited) {
    std::size_t i = 0;
    for (const auto& a : amounts) {
      if (a.name == l->name()) matched[i] = 1;
      ++i;
    }
  }
  std::size_t i = 0;
  for (const auto& a : amounts) {
    if (a.value < 0) {
      plan.error = Code::invalid_argument;
      plan.error_reason = "amount of '" + a.name + "' is negative";
      return;
    }
    if (matched[i] == 0 && a.value != 0) {
      plan.error = Code::unknown_limit;
      plan.error_reason = "no limit named '" + a.name + "' applies to " + std::string(entity) +
                          " on " + std::string(resource);
      return;
    }
    ++i;
  }
  for (const auto& en : plan.entries) {
    if (en.amount > en.limit->max_amount()) {
      plan.error = Code::invalid_argument;
      plan.error_reason = "amount " + std::to_string(en.amount) + " of '" + en.limit->name() +
                          "' is beyond the exact range (" +
                          std::to_string(en.limit->max_amount()) + ")";
      return;
    }
  }
}

LimitStatus status_of(const KeyParts& k, const Limit& l, ConfigSource src, const ItemResult& r,
                      double rate = 0) {
  return LimitStatus{std::string(k.entity), l.name(),    l.kind(),      src, l.capacity(),
                     r.available,           r.reset_after, rate};
}

// An adaptive limit's parameters at its controller's rate now (the initial rate without one).
RateParams adaptive_params(const Limit& l, const AimdLaw* ctl, double* rate_out = nullptr) {
  const double rate = ctl != nullptr ? ctl->current_rate()
                                     : std::clamp(l.aimd_options().initial_rate,
                                                  l.aimd_options().min_rate,
                                                  l.aimd_options().max_rate);
  if (rate_out != nullptr) *rate_out = rate;
  return l.rate_at(rate);
}

Code code_for(LimitKind k) {
  switch (k) {
    case LimitKind::rate: return Code::rate_exceeded;
    case LimitKind::window: return Code::window_exceeded;
    case LimitKind::concurrency: return Code::concurrency_exceeded;
    case LimitKind::adaptive: return Code::rate_exceeded;
  }
  return Code::rate_exceeded;
}

}  // namespace

// fill_decision's slow part: the stats and, if denied, the violations, code and reason.
static void fill_details(Decision& d, const detail::LeaseKey& key, std::span<const OpItem> ops,
                         std::span<const std::size_t> entries,
                         std::span<const ItemResult> results, bool allowed) {
  d.stats.reserve(ops.size());
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const auto& it = key.items[entries[j]];
    const ItemResult& r = results[j];
    d.stats.push_back(LimitStatus{key.entities[it.key], it.limit.name(), it.limit.kind(),
                                  it.source, it.limit.capacity(), r.available, r.reset_after,
                                  0});
  }
  if (allowed) return;
  bool never = false;
  const Violation* worst = nullptr;
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const ItemResult& r = results[j];
    if (r.ok) continue;
    const auto& it = key.items[entries[j]];
    d.violations.push_back(Violation{key.entities[it.key], it.limit.name(), it.limit.kind(),
                                     ops[j].amount, r.available, r.retry_after});
    never = never || r.never;
  }
  for (const auto& v : d.violations) {
    if (worst == nullptr || v.retry_after > worst->retry_after) worst = &v;
  }
  if (never) {
    d.code = Code::exceeds_capacity;
    for (std::size_t j = 0, v = 0; j < ops.size(); ++j) {
      if (results[j].ok) continue;
      if (results[j].never) {
        const Violation& x = d.violations[v];
        d.reason = "'" + x.limit + "' of " + x.entity + " on " + key.resource +
                   " can never fit " + std::to_string(x.requested) + " (capacity " +
                   std::to_string(key.items[entries[j]].limit.capacity()) + ")";
        break;
      }
      ++v;
    }
    return;
  }
  d.code = code_for(worst->kind);
  d.retry_after = worst->retry_after;
  d.reason = "'" + worst->limit + "' of " + worst->entity + " on " + key.resource +
             ": requested " + std::to_string(worst->requested) + ", available " +
             std::to_string(worst->available) + ", retry in " + format_micros(d.retry_after);
}

// Fills `d` from the store's answer to an op over `key`'s limits: `results[j]` answers
// `ops[j]`, which is entry `entries[j]` of `key` (a plan's entries are its lease key's items).
// Reads only `key` and the spans, never the plan, so an asynchronous completion can use it.
static inline void fill_decision(Decision& d, const detail::LeaseKey& key,
                                 std::span<const OpItem> ops, std::span<const std::size_t> entries,
                                 std::span<const ItemResult> results, bool allowed,
                                 bool with_stats) {
  d.allowed = allowed;
  d.code = Code::ok;
  d.retry_after = 0;
  if (with_stats || !allowed) fill_details(d, key, ops, entries, results, allowed);
}

// ---------------------------------------------------------------- admission

// The plan of (entity, resource) with `amounts` applied. Plans are cached per thread and
// keyed by the config version, so a caller that uses the same key again resolves nothing
// and hashes nothing. The reference is valid until this thread's next call.
Limiter::Plan& Limiter::plan_for(std::string_view entity, std::string_view resource,
                                 const Amounts& amounts, Micros now) {
  struct Cache {
    std::uint64_t uid = 0;
    std::uint64_t version = 0;
    std::string entity;
    std::string resource;
    // The snapshot the plan points into (Limit*, parent names). Owned here: the TLS snapshot
    // slot can be evicted by other limiters' stats()/resolve() while this plan stays cached,
    // and a concurrent set_* would then free it under a cache hit (use-after-free).
    std::shared_ptr<const Snapshot> snap;
    Micros fresh_until = 0;  // ConfigMode::store: when the configuration must be read again
    Plan plan;
  };
  static thread_local Cache t_cache;
  Cache& c = t_cache;
  const std::uint64_t version = impl_->cfg_version.load(std::memory_order_acquire);
  if (c.uid != impl_->uid || c.version != version || c.entity != entity ||
      c.resource != resource || c.plan.error != Code::ok || !(now < c.fresh_until)) {
    c.uid = impl_->uid;
    c.version = version;
    c.entity.assign(entity);
    c.resource.assign(resource);
    try {
      c.snap = impl_->view(c.entity, c.resource, now, &c.fresh_until);
    } catch (const Error& e) {  // ConfigMode::store: no configuration to resolve with
      clear_plan(c.plan);
      c.snap.reset();
      c.plan.error = dynamic_cast<const StoreUnavailable*>(&e) != nullptr ? Code::store_unavailable
                                                                          : Code::invalid_argument;
      c.plan.error_reason = e.what();
      return c.plan;
    }
    resolve_chain(*c.snap, c.entity, c.resource, options_.max_parent_depth, c.plan);
    for (const auto& k : c.plan.keys) c.plan.handles.push_back(store_.prepare(impl_->ns, k));
    auto key = std::make_shared<detail::LeaseKey>();
    key->resource = c.resource;
    for (const auto& k : c.plan.keys) key->entities.emplace_back(k.entity);
    for (auto& en : c.plan.entries) {
      std::shared_ptr<AimdLaw> ctl;
      if (en.limit->kind() == LimitKind::adaptive) {
        ctl = impl_->controller(*en.limit, c.plan.keys[en.key].entity, c.resource, true);
        en.aimd = ctl.get();
        c.plan.adaptive = true;
      }
      key->items.push_back({*en.limit, en.source, en.key, std::move(ctl)});
    }
    c.plan.lease_key = std::move(key);
  }
  if (c.plan.error == Code::ok) apply_amounts(amounts, entity, resource, c.plan);
  return c.plan;
}

namespace {
// Per-thread scratch for one operation, reused so the hot path allocates nothing.
struct Scratch {
  std::vector<OpItem> ops;
  std::vector<std::size_t> entries;  // per op item: the plan entry it takes from
  std::vector<ItemResult> results;
  std::vector<RateParams> rates;  // adaptive items' parameters (reserved: pointers stay valid)
  std::vector<std::uint64_t> epochs;  // per entry: adaptive controllers' epoch at the op
};
thread_local Scratch t_scratch;

// A decision the store could not make: code store_unavailable, the store's reason.
void unavailable(Decision& d, std::string_view reason) {
  d.allowed = false;
  d.code = Code::store_unavailable;
  d.reason = reason;
  d.stats.clear();
}
void unavailable(Decision& d, const StoreUnavailable& e) { unavailable(d, e.what()); }

// The items of an acquire over `plan`: one per entry with an amount (the others are not sent),
// the item for entry i pointing at limit_of(i) (that entry's limit or a copy of it); adaptive
// entries at their controller's rate now, its epoch in epochs[i]. Fills `entries` with each
// item's entry. @return whether some item takes a concurrency slot.
template <class Plan, class Ops, class Entries, class Rates, class Epochs, class LimitOf>
bool acquire_items(const Plan& plan, Ops& ops, Entries& entries, Rates& rates, Epochs& epochs,
                   LimitOf&& limit_of) {
  ops.clear();
  entries.clear();
  rates.clear();
  if (plan.adaptive) {
    rates.reserve(plan.entries.size());
    epochs.resize(plan.entries.size());
  }
  bool slots = false;
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    if (en.amount == 0) continue;
    OpItem& it = ops.emplace_back(OpItem{en.key, limit_of(i), en.amount, 0});
    if (en.aimd != nullptr) {
      const AimdState st = en.aimd->state();  // rate and epoch of one instant
      epochs[i] = st.epoch;
      it.rate = &rates.emplace_back(en.limit->rate_at(st.rate));
    }
    entries.push_back(i);
    slots = slots || en.limit->kind() == LimitKind::concurrency;
  }
  return slots;
}
}  // namespace

// Everything an asynchronous acquire needs once the store answers, owned in one allocation:
// nothing in it points into the per-thread plan cache (the next call on the thread may
// overwrite it) or into a configuration snapshot (a set_* may free it). The op's items point
// at the lease key's copies of the limits and at `rates`.
struct Limiter::AsyncAcquire {
  Limiter* limiter = nullptr;
  AcquireCallback done;
  Lease lease;  // its decision's `now` is set
  std::shared_ptr<const detail::LeaseKey> key;
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> entries;
  SmallVec<ItemResult> results;
  SmallVec<RateParams> rates;
  SmallVec<std::uint64_t> epochs;
  std::uint64_t id = 0;
  Micros expires_at = 0;
  bool adaptive = false;
  bool slots = false;
  bool with_stats = false;
};

// Inlined into attempt(), the hot path, and into the asynchronous path.
[[gnu::always_inline]] Limiter::Plan* Limiter::prepare_acquire(
    Lease& lease, std::string_view entity, std::string_view resource, const Amounts& amounts,
    bool respect_queue) {
  Decision& d = lease.decision_;
  d.now = clock_.now();
  Plan& plan = plan_for(entity, resource, amounts, d.now);
  if (plan.error != Code::ok) {
    d.code = plan.error;
    d.reason = plan.error_reason;
    return nullptr;
  }
  if (respect_queue && impl_->waiters.load(std::memory_order_acquire) > 0) {
    std::lock_guard g(impl_->wait_mu);
    auto q = impl_->queues.find(pair_key(entity, resource));
    if (q != impl_->queues.end() && !q->second.empty()) {
      d.code = Code::queue_ahead;
      d.reason = std::to_string(q->second.size()) + " caller(s) wait on this key first";
      return nullptr;
    }
  }
  return &plan;
}

[[gnu::always_inline]] void Limiter::finish_acquire(
    Lease& lease, const std::shared_ptr<const detail::LeaseKey>& key,
    std::span<const OpItem> ops, std::span<const std::size_t> entries,
    std::span<const ItemResult> results, std::span<const std::uint64_t> epochs, bool ok,
    bool with_stats, bool slots, std::uint64_t id, Micros expires_at) {
  if (ok) {
    // The lease holds everything before it becomes active (limiter_): if fill_decision()
    // throws, its destructor (during unwinding: a rollback) refunds all it consumed. Only
    // resize() can throw before that (out of memory); the usage then stays counted and
    // concurrency slots return at their TTL.
    lease.id_ = id;
    lease.holds_slots_ = slots;
    lease.expires_at_ = expires_at;
    lease.key_ = key;
    lease.held_.resize(key->items.size());
    for (std::size_t j = 0; j < ops.size(); ++j) {
      const std::size_t i = entries[j];
      lease.held_[i] = Lease::Held{ops[j].amount, results[j].window_end};
      if (!epochs.empty() && key->items[i].aimd) {
        lease.held_[i].window_end = static_cast<Micros>(epochs[i]);
      }
    }
    lease.limiter_ = this;
  }
  fill_decision(lease.decision_, *key, ops, entries, results, ok, with_stats);
}

Lease Limiter::attempt(std::string_view entity, std::string_view resource, const Amounts& amounts,
                       const AcquireOptions& options, bool respect_queue) {
  Lease lease;
  const Plan* plan = prepare_acquire(lease, entity, resource, amounts, respect_queue);
  if (plan == nullptr) return lease;
  Scratch& sc = t_scratch;
  const bool slots = acquire_items(*plan, sc.ops, sc.entries, sc.rates, sc.epochs,
                                   [plan](std::size_t i) { return plan->entries[i].limit; });
  const std::uint64_t id = slots ? next_lease_id() : 0;
  const Micros now = lease.decision_.now;
  const Micros expires_at = now + (options.lease_ttl > 0 ? options.lease_ttl : options_.lease_ttl);
  sc.results.resize(sc.ops.size());
  bool ok = true;
  if (!sc.ops.empty()) {
    const Op op{.kind = OpKind::acquire, .ns = &impl_->ns, .group = plan->keys.back().entity,
                .now = now, .keys = plan->keys,
                .items = sc.ops, .handles = plan->handles, .lease_id = id,
                .lease_expiry = expires_at, .report = options.with_stats};
    try {
      ok = store_.apply(op, sc.results);
    } catch (const StoreUnavailable& e) {  // the store's policy was to fail closed
      unavailable(lease.decision_, e);
      return lease;
    }
  }
  finish_acquire(lease, plan->lease_key, sc.ops, sc.entries, sc.results,
                 plan->adaptive ? std::span<const std::uint64_t>(sc.epochs)
                                : std::span<const std::uint64_t>(),
                 ok, options.with_stats, slots, id, expires_at);
  return lease;
}

void Limiter::complete_async(AsyncAcquire* ctx, bool ok, std::exception_ptr error) noexcept {
  std::unique_ptr<AsyncAcquire> c(ctx);
  Lease& lease = c->lease;
  if (error) {
    // No exception may escape on the store's thread: every failure is a decision.
    try {
      std::rethrow_exception(error);
    } catch (const StoreUnavailable& e) {
      unavailable(lease.decision_, e);
    } catch (const std::exception& e) {
      unavailable(lease.decision_, e.what());
    } catch (...) {
      unavailable(lease.decision_, "the store failed with an unknown exception");
    }
  } else {
    c->limiter->finish_acquire(lease, c->key, c->ops, c->entries, c->results,
                               c->adaptive ? std::span<const std::uint64_t>(c->epochs)
                                           : std::span<const std::uint64_t>(),
                               ok, c->with_stats, c->slots, c->id, c->expires_at);
  }
  AcquireCallback done = std::move(c->done);
  Lease out = std::move(lease);
  c.reset();  // the context is freed before `done` runs
  done(std::move(out));
}

void Limiter::try_acquire_async(std::string_view entity, std::string_view resource,
                                const Amounts& amounts, AcquireCallback done,
                                const AcquireOptions& options) {
  Lease lease;
  const Plan* plan = prepare_acquire(lease, entity, resource, amounts, /*respect_queue=*/true);
  if (plan == nullptr) {
    done(std::move(lease));
    return;
  }
  auto c = std::make_unique<AsyncAcquire>();
  c->limiter = this;
  c->key = plan->lease_key;
  const detail::LeaseKey* key = c->key.get();
  c->slots = acquire_items(*plan, c->ops, c->entries, c->rates, c->epochs,
                           [key](std::size_t i) { return &key->items[i].limit; });
  c->adaptive = plan->adaptive;
  c->id = c->slots ? next_lease_id() : 0;
  const Micros now = lease.decision_.now;
  c->expires_at = now + (options.lease_ttl > 0 ? options.lease_ttl : options_.lease_ttl);
  c->with_stats = options.with_stats;
  c->results.resize(c->ops.size());
  c->lease = std::move(lease);
  c->done = std::move(done);
  if (c->ops.empty()) return complete_async(c.release(), true, nullptr);
  // The op points into the plan (keys, handles) and the context; the store reads it only
  // before apply_async returns. From here the context belongs to the completion.
  const Op op{.kind = OpKind::acquire, .ns = &impl_->ns, .group = plan->keys.back().entity,
              .now = now, .keys = plan->keys,
              .items = c->ops, .handles = plan->handles, .lease_id = c->id,
              .lease_expiry = c->expires_at, .report = options.with_stats};
  AsyncAcquire* ctx = c.release();
  try {
    store_.apply_async(op, ctx->results, [ctx](bool ok, std::exception_ptr error) noexcept {
      complete_async(ctx, ok, std::move(error));
    });
  } catch (...) {  // apply_async should report failures through the callback; it threw before
    complete_async(ctx, false, std::current_exception());  // taking it, so it never calls it
  }
}

Lease Limiter::try_acquire(std::string_view entity, std::string_view resource,
                           const Amounts& amounts, const AcquireOptions& options) {
  return attempt(entity, resource, amounts, options, /*respect_queue=*/true);
}

Decision Limiter::consume(std::string_view entity, std::string_view resource,
                          const Amounts& amounts, const AcquireOptions& options) {
  Lease lease = attempt(entity, resource, amounts, options, /*respect_queue=*/true);
  lease.commit();  // frees a concurrency slot at once: consume() checks those limits only
  return std::move(lease.decision_);
}

Lease Limiter::acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                       std::chrono::microseconds timeout, const AcquireOptions& options) {
  Impl& im = *impl_;
  // Saturated: microseconds::max() ("forever") overflowed now + timeout into the past, so the
  // call timed out at once. 2^51 µs (~71 years) is forever enough and keeps every clock's
  // deadline arithmetic (nanosecond conversions included) in range.
  const Micros deadline = clock_.now() + std::clamp<Micros>(timeout.count(), 0, kMaxExact / 4);
  const std::string qk = pair_key(entity, resource);
  Impl::Waiter self;
  {
    std::lock_guard g(im.wait_mu);
    im.queues[qk].push_back(&self);
    im.waiters.fetch_add(1, std::memory_order_acq_rel);
  }
  auto leave = [&] {
    std::lock_guard g(im.wait_mu);
    auto q = im.queues.find(qk);
    if (q == im.queues.end()) return;
    auto& dq = q->second;
    const bool was_head = !dq.empty() && dq.front() == &self;
    dq.erase(std::find(dq.begin(), dq.end(), &self));
    im.waiters.fetch_sub(1, std::memory_order_acq_rel);
    if (dq.empty()) {
      im.queues.erase(q);
    } else if (was_head) {
      dq.front()->notified = true;
      dq.front()->cv.notify_all();
    }
  };
  std::stop_callback on_stop(options.stop, [&] {
    std::lock_guard g(im.wait_mu);
    self.notified = true;
    self.cv.notify_all();
  });

  Decision last;
  for (;;) {
    bool head;
    {
      std::lock_guard g(im.wait_mu);
      head = im.queues[qk].front() == &self;
      self.notified = false;
    }
    Micros wake_at = deadline;
    if (head) {
      Lease lease;
      try {
        lease = attempt(entity, resource, amounts, options, /*respect_queue=*/false);
      } catch (...) {  // never leave this frame's waiter in the queue
        leave();
        throw;
      }
      if (lease.allowed()) {
        leave();
        return lease;
      }
      last = lease.decision();
      switch (last.code) {
        case Code::exceeds_capacity:
        case Code::store_unavailable:
          leave();
          throw RateLimitExceeded(std::move(last));
        case Code::unknown_limit:
        case Code::invalid_argument:
          leave();
          throw ValidationError("amounts", std::string(to_string(last.code)), last.reason);
        default:
          break;
      }
      if (last.retry_after > 0) wake_at = std::min(deadline, last.now + last.retry_after);
    }
    const Micros now = clock_.now();
    const bool stopped = options.stop.stop_requested();
    if (now >= deadline || stopped) {
      leave();
      last.allowed = false;
      last.code = stopped ? Code::cancelled : Code::timeout;
      last.now = now;
      last.reason = (stopped ? "cancelled while waiting" : "deadline passed while waiting") +
                    (last.reason.empty() ? std::string() : "; last: " + last.reason);
      throw RateLimitExceeded(std::move(last));
    }
    std::unique_lock lk(im.wait_mu);
    if (!self.notified) clock_.wait_until(lk, self.cv, wake_at);
  }
}

Decision Limiter::decide(std::string_view entity, std::string_view resource,
                         const Amounts& amounts) {
  return planned_op(OpKind::decide, entity, resource, amounts);
}

Decision Limiter::record_usage(std::string_view entity, std::string_view resource,
                               const Amounts& amounts) {
  return planned_op(OpKind::record, entity, resource, amounts);
}

// decide (check, change nothing) or record (consume unconditionally), reporting every limit.
Decision Limiter::planned_op(OpKind kind, std::string_view entity, std::string_view resource,
                             const Amounts& amounts) {
  Decision d;
  d.now = clock_.now();
  const Plan& plan = plan_for(entity, resource, amounts, d.now);
  if (plan.error != Code::ok) {
    d.code = plan.error;
    d.reason = plan.error_reason;
    return d;
  }
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> entries;  // per op item: its plan entry
  SmallVec<RateParams> rates;
  rates.reserve(plan.entries.size());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    // Usage counted after the fact holds no slot. Every other limit is reported; the store
    // checks only positive amounts, so a limit the request does not touch cannot deny it.
    if (kind == OpKind::record && en.limit->kind() == LimitKind::concurrency) continue;
    OpItem& it = ops.emplace_back(OpItem{en.key, en.limit, en.amount, 0});
    if (en.aimd != nullptr) it.rate = &rates.emplace_back(adaptive_params(*en.limit, en.aimd));
    entries.push_back(i);
  }
  SmallVec<ItemResult> results(ops.size());
  bool ok = true;
  if (!ops.empty()) {
    const Op op{.kind = kind, .ns = &impl_->ns, .group = plan.keys.back().entity, .now = d.now,
                .keys = plan.keys, .items = ops,
                .handles = plan.handles, .lease_id = 0, .lease_expiry = 0, .report = true};
    try {
      ok = store_.apply(op, results) || kind == OpKind::record;
    } catch (const StoreUnavailable& e) {
      unavailable(d, e);
      return d;
    }
  }
  fill_decision(d, *plan.lease_key, ops, entries, results, ok, /*with_stats=*/true);
  return d;
}

Decision Limiter::lease_op(Lease& lease, const Amounts* deltas, bool refund) {
  Decision d;
  d.now = clock_.now();
  d.allowed = true;
  d.code = Code::ok;
  const bool expired = d.now >= lease.expires_at_;
  const detail::LeaseKey& lk = *lease.key_;
  SmallVec<KeyParts> keys;
  for (const auto& e : lk.entities) keys.push_back(KeyParts{e, lk.resource});
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> which;
  SmallVec<RateParams> rates;
  rates.reserve(lk.items.size());
  bool returns_capacity = false;
  if (deltas != nullptr) {
    for (const auto& a : *deltas) {
      bool found = false;
      for (const auto& it : lk.items) {
        if (it.limit.name() != a.name) continue;
        found = true;
        if (it.limit.kind() == LimitKind::concurrency) {
          throw ValidationError("limit", a.name, "a concurrency limit cannot be adjusted");
        }
      }
      if (!found) throw ValidationError("limit", a.name, "not a limit of this lease");
    }
    for (std::size_t i = 0; i < lk.items.size(); ++i) {
      const auto& it = lk.items[i];
      const Lease::Held& h = lease.held_[i];
      if (it.limit.kind() == LimitKind::concurrency) continue;
      std::int64_t delta = deltas->get(it.limit.name());
      if (delta < 0) delta = std::max(delta, -h.consumed);  // never refund more than consumed
      if (delta == 0) continue;
      if (delta > it.limit.max_amount()) {
        throw ValidationError("amount", std::to_string(delta), "beyond the exact range");
      }
      returns_capacity = returns_capacity || delta < 0;
      ops.push_back(OpItem{it.key, &it.limit, delta, h.window_end});
      which.push_back(i);
      if (it.aimd) ops.back().rate = &rates.emplace_back(adaptive_params(it.limit, it.aimd.get()));
    }
  } else {
    for (std::size_t i = 0; i < lk.items.size(); ++i) {
      const auto& it = lk.items[i];
      const Lease::Held& h = lease.held_[i];
      const bool slots = it.limit.kind() == LimitKind::concurrency && h.consumed > 0;
      const bool give_back = refund && !expired && h.consumed > 0 &&
                             it.limit.kind() != LimitKind::concurrency;
      if (!slots && !give_back) continue;
      ops.push_back(OpItem{it.key, &it.limit, give_back ? h.consumed : 0, h.window_end});
      which.push_back(i);
      if (it.aimd) ops.back().rate = &rates.emplace_back(adaptive_params(it.limit, it.aimd.get()));
      returns_capacity = true;
    }
  }
  if (ops.empty()) return d;
  SmallVec<ItemResult> results(ops.size());
  const Op op{.kind = deltas != nullptr ? OpKind::adjust : OpKind::release,
              .ns = &impl_->ns,
              .group = lk.entities.back(),
              .now = d.now,
              .keys = keys,
              .items = ops,
              .handles = {},
              .lease_id = lease.id_,
              .lease_expiry = 0,
              .report = true};
  try {
    store_.apply(op, results);
  } catch (const StoreUnavailable& e) {  // the lease's usage stays; slots go at their TTL
    unavailable(d, e);
    return d;
  }
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const auto& it = lk.items[which[j]];
    Lease::Held& h = lease.held_[which[j]];
    if (deltas != nullptr) {
      if (ops[j].amount > 0 && it.limit.kind() == LimitKind::window &&
          results[j].window_end != h.window_end) {
        // Counted in a new window: the old window's usage can never be refunded, so only this
        // delta is refundable now (a later refund must not take other callers' usage).
        h.consumed = ops[j].amount;
      } else {
        h.consumed += ops[j].amount;
      }
      if (ops[j].amount > 0 && it.limit.kind() == LimitKind::window) {
        h.window_end = results[j].window_end;
      }
    }
    d.stats.push_back(LimitStatus{lk.entities[it.key], it.limit.name(), it.limit.kind(),
                                  it.source, it.limit.capacity(),
                                  results[j].available, results[j].reset_after});
  }
  if (returns_capacity) impl_->notify_all_heads();
  return d;
}

void Limiter::reset(std::string_view entity, std::string_view resource) {
  const Micros now = clock_.now();
  const auto snap = impl_->view(entity, resource, now, nullptr);
  Plan plan;
  resolve_chain(*snap, entity, resource, 0, plan);
  if (plan.error != Code::ok) throw ValidationError("resource", std::string(resource), plan.error_reason);
  SmallVec<OpItem> ops;
  for (const auto& en : plan.entries) ops.push_back(OpItem{en.key, en.limit, 0, 0});
  if (!ops.empty()) {
    SmallVec<ItemResult> results(ops.size());
    const Op op{.kind = OpKind::reset, .ns = &impl_->ns,
                .group = chain_root(*snap, entity, options_.max_parent_depth),
                .now = now, .keys = plan.keys,
                .items = ops, .handles = {}, .lease_id = 0, .lease_expiry = 0, .report = true};
    store_.apply(op, results);
  }
  impl_->notify_all_heads();
}

void Limiter::reset_all() {
  store_.reset_namespace(impl_->ns);
  impl_->notify_all_heads();
}

// ---------------------------------------------------------------- stats

ResourceStats Limiter::stats(std::string_view entity, std::string_view resource) {
  ResourceStats out{std::string(entity), std::string(resource), {}};
  const Micros now = clock_.now();
  const auto snap = impl_->view(entity, resource, now, nullptr);
  Plan plan;
  resolve_chain(*snap, entity, resource, options_.max_parent_depth, plan);
  if (plan.error != Code::ok) throw ValidationError("resource", std::string(resource), plan.error_reason);
  SmallVec<OpItem> ops;
  SmallVec<RateParams> rates;
  SmallVec<double> adaptive_rates(plan.entries.size(), 0.0);
  rates.reserve(plan.entries.size());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    OpItem& it = ops.emplace_back(OpItem{en.key, en.limit, 0, 0});
    if (en.limit->kind() == LimitKind::adaptive) {
      const auto ctl =
          impl_->controller(*en.limit, plan.keys[en.key].entity, resource, /*create=*/false);
      it.rate = &rates.emplace_back(adaptive_params(*en.limit, ctl.get(), &adaptive_rates[i]));
    }
  }
  SmallVec<ItemResult> results(ops.size());
  if (!ops.empty()) {
    const Op op{.kind = OpKind::read, .ns = &impl_->ns, .group = plan.keys.back().entity,
                .now = now, .keys = plan.keys,
                .items = ops, .handles = {}, .lease_id = 0, .lease_expiry = 0, .report = true};
    store_.apply(op, results);
  }
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    out.limits.push_back(
        status_of(plan.keys[en.key], *en.limit, en.source, results[i], adaptive_rates[i]));
  }
  return out;
}

std::vector<LimitStatus> Limiter::clamp(std::string_view entity, std::string_view resource,
                                        std::span<const StateClamp> clamps) {
  const Micros now = clock_.now();
  const auto snap = impl_->view(entity, resource, now, nullptr);
  Plan plan;
  resolve_chain(*snap, entity, resource, 0, plan);  // the entity's own key only
  if (plan.error != Code::ok) throw ValidationError("resource", std::string(resource), plan.error_reason);
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> which;
  SmallVec<RateParams> rates;
  rates.reserve(plan.entries.size());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    if (en.limit->kind() == LimitKind::concurrency) continue;
    for (const StateClamp& c : clamps) {
      if (c.limit != en.limit->name()) continue;
      if (c.available < 0 && c.until == 0) continue;
      OpItem& it = ops.emplace_back(
          OpItem{en.key, en.limit, c.available < 0 ? en.limit->capacity() : c.available, 0});
      it.until = c.until;
      if (en.limit->kind() == LimitKind::adaptive) {
        const auto ctl = impl_->controller(*en.limit, entity, resource, false);
        it.rate = &rates.emplace_back(adaptive_params(*en.limit, ctl.get()));
      }
      which.push_back(i);
      break;
    }
  }
  std::vector<LimitStatus> out;
  if (ops.empty()) return out;
  SmallVec<ItemResult> results(ops.size());
  const Op op{.kind = OpKind::clamp, .ns = &impl_->ns,
              .group = chain_root(*snap, entity, options_.max_parent_depth),
              .now = now, .keys = plan.keys,
              .items = ops, .handles = {}, .lease_id = 0, .lease_expiry = 0, .report = true};
  store_.apply(op, results);
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const auto& en = plan.entries[which[j]];
    out.push_back(status_of(plan.keys[en.key], *en.limit, en.source, results[j]));
  }
  return out;
}

std::vector<ResourceStats> Limiter::all_stats(std::string_view entity) {
  std::vector<ResourceStats> out;
  for (const auto& r : resources()) out.push_back(stats(entity, r));
  return out;
}

std::size_t Limiter::waiting(std::string_view entity, std::string_view resource) const {
  std::lock_guard g(impl_->wait_mu);
  auto q = impl_->queues.find(pair_key(entity, resource));
  return q == impl_->queues.end() ? 0 : q->second.size();
}

}  // namespace admit
