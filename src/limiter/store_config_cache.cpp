#include "store_config_cache.hpp"

#include <algorithm>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"

namespace admit::detail {

std::string StoreConfigCache::entry_key(const ConfigKey& k) {
  std::string key(1, static_cast<char>('0' + static_cast<int>(k.kind)));
  key += pair_key(k.entity, k.resource);
  return key;
}

StoreConfigCache::CachedEntry StoreConfigCache::decode(const ConfigKey& k,
                                                       const std::optional<std::string>& value,
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
              std::string(k.entity.empty() ? k.resource : k.entity) +
              "' do not decode: " + x.what();
  }
  return e;
}

std::vector<StoreConfigCache::CachedEntry> StoreConfigCache::fetch(std::span<const ConfigKey> keys,
                                                                   Micros now, bool& read) {
  std::vector<CachedEntry> out(keys.size());
  std::vector<ConfigKey> ask;
  std::vector<std::size_t> which;
  std::uint64_t gen;
  {
    std::lock_guard g(mu_);
    gen = gen_;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      auto it = entries_.find(entry_key(keys[i]));
      if (it != entries_.end()) out[i] = it->second;
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
    store_.get_config(ns_, ask, values);
  } catch (const StoreUnavailable&) {
    for (const std::size_t i : which) {
      if (!out[i].present) throw;
    }
    stale_.fetch_add(which.size(), std::memory_order_relaxed);
    return out;
  }
  std::lock_guard g(mu_);
  for (std::size_t j = 0; j < which.size(); ++j) {
    out[which[j]] = decode(ask[j], values[j], now);
    if (gen == gen_) entries_.insert_or_assign(entry_key(ask[j]), out[which[j]]);
  }
  if (entries_.size() >= prune_at_) {
    absl::erase_if(entries_, [&](const auto& kv) { return !fresh(kv.second, now); });
    prune_at_ = std::max<std::size_t>(1024, 2 * entries_.size());
  }
  return out;
}

std::shared_ptr<const Snapshot> StoreConfigCache::chain(std::string_view entity,
                                                        std::string_view resource, Micros now,
                                                        Micros* fresh_until) {
  const std::uint64_t version = snapshots_.version();
  thread_local std::string pk;  // pair_key(entity, resource), its buffer reused
  pk.clear();
  append_pair_key(pk, entity, resource);
  {
    std::lock_guard g(mu_);
    auto it = chains_.find(pk);
    if (it != chains_.end() && it->second.version == version && now < it->second.fresh_until) {
      hits_.fetch_add(1, std::memory_order_relaxed);
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
  std::vector<std::string> names{std::string(entity)};  // the chain: entity, then parents
  // The parent rules are this Limiter's own (not stored): they give a parent to each member
  // of the chain the store gives none.
  const std::shared_ptr<const ParentRules> rules = snapshots_.current().parent_rules;
  for (int depth = 0;; ++depth) {
    const std::string& e = names.back();
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
    if (conf.parent.empty() && rules != nullptr) {
      if (const ParentRule* r = rules->match(e)) conf.parent = r->parent;
    }
    if (conf.parent.empty() || depth >= opt_.max_parent_depth) break;
    if (std::find(names.begin(), names.end(), conf.parent) != names.end()) {
      throw ValidationError("parent", conf.parent,
                            "the stored parents of " + std::string(entity) + " make a cycle");
    }
    names.push_back(conf.parent);
    keys.clear();
  }
  const Snapshot& cur = snapshots_.current();
  if (!cur.discovered.empty()) {
    for (const std::string& e : names) {
      auto d = cur.discovered.find(pair_key(e, resource));
      if (d != cur.discovered.end()) snap->discovered.insert(*d);
    }
    if (!snap->discovered.empty()) remerge(*snap);
  }
  (read ? misses_ : hits_).fetch_add(1, std::memory_order_relaxed);
  const Micros until = oldest + opt_.config_ttl;
  if (fresh_until != nullptr) *fresh_until = until;
  std::lock_guard g(mu_);
  if (chains_.size() >= prune_at_) {
    absl::erase_if(chains_, [&](const auto& kv) { return !(now < kv.second.fresh_until); });
  }
  chains_.insert_or_assign(pk, CachedChain{snap, until, version});
  return snap;
}

void StoreConfigCache::invalidate() {
  {
    std::lock_guard g(mu_);
    entries_.clear();
    chains_.clear();
    ++gen_;
  }
  snapshots_.bump();
}

CacheStats StoreConfigCache::stats() const {
  CacheStats st;
  st.hits = hits_.load(std::memory_order_relaxed);
  st.misses = misses_.load(std::memory_order_relaxed);
  st.stale = stale_.load(std::memory_order_relaxed);
  st.ttl = opt_.config_ttl;
  std::lock_guard g(mu_);
  st.entries = entries_.size();
  return st;
}

}  // namespace admit::detail
