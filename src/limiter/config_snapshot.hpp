// The Limiter's configuration: an immutable Snapshot replaced whole (copy on write) by the
// set_* calls, each thread caching the current one; resolution over a snapshot (through
// resolution.hpp, plus the discovered limits); the parent links and their checks.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/core/decision.hpp"
#include "admit/core/limit.hpp"
#include "pair_key.hpp"
#include "resolution.hpp"

namespace admit::detail {

// Immutable configuration; replaced whole (copy on write) by the set_* calls. In
// ConfigMode::store also the chain of one (entity, resource) built from the store's entries
// (StoreConfigCache).
struct Snapshot {
  struct EntityConf {
    std::optional<std::vector<Limit>> defaults;
    absl::flat_hash_map<std::string, std::vector<Limit>> per_resource;
    std::string parent;
  };
  // Limits learned for one (entity, resource), and the configured set with them merged in
  // (kept current by ConfigSnapshots::update, so resolution stays one lookup).
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

// A Snapshot as resolve_limits() reads it (ConfigView).
struct SnapshotView {
  const Snapshot& s;

  EntityLevels entity(std::string_view name, std::string_view res) const {
    if (s.entities.empty()) return {};
    auto e = s.entities.find(av(name));
    if (e == s.entities.end()) return {};
    auto r = e->second.per_resource.find(av(res));
    return {r != e->second.per_resource.end() ? &r->second : nullptr,
            e->second.defaults ? &*e->second.defaults : nullptr};
  }
  const std::vector<Limit>* resource(std::string_view res) const {
    auto r = s.resources.find(av(res));
    return r == s.resources.end() ? nullptr : &r->second;
  }
  const std::vector<Limit>* system() const { return s.system.empty() ? nullptr : &s.system; }
};

struct Resolved {
  const std::vector<Limit>* limits = nullptr;
  ConfigSource source = ConfigSource::system;
  const std::vector<ConfigSource>* sources = nullptr;  // per limit, when they differ

  ConfigSource source_of(std::size_t i) const { return sources ? (*sources)[i] : source; }
};

// Configured limits only (no discovered ones): entity > entity default > resource > system.
inline Resolved resolve_configured(const Snapshot& s, std::string_view entity,
                                   std::string_view resource) {
  const ResolvedLimits r = resolve_limits(SnapshotView{s}, entity, resource);
  return {r.limits, r.source};
}

// The limits of (entity, resource): the discovered ones merged into the configured set if any
// were learned, else the configured set.
Resolved resolve_in(const Snapshot& s, std::string_view entity, std::string_view resource);

// Recomputes every discovered entry's merged set: the configured limits, each replaced by the
// learned limit of the same name, then the learned limits no configured one names.
void remerge(Snapshot& s);

inline std::string_view parent_of(const Snapshot& s, std::string_view entity) {
  if (s.entities.empty()) return {};
  auto e = s.entities.find(av(entity));
  return e == s.entities.end() ? std::string_view{} : std::string_view(e->second.parent);
}

// Makes `parent` the parent of `entity` in `s`, refusing a cycle or a chain deeper than
// `max_depth` (through `entity` or any of its descendants). An empty parent removes the link.
void link_parent(Snapshot& s, const std::string& entity, const std::string& parent, int max_depth);

// @throws ValidationError if two limits of the set share a name.
void check_unique_names(const std::vector<Limit>& limits);

// The current Snapshot of one Limiter and its version, cached per thread: a call reads one
// atomic (the version) and touches no shared reference count.
class ConfigSnapshots {
 public:
  /// Distinct per Limiter (per-thread caches are keyed by it).
  std::uint64_t uid() const { return uid_; }
  /// Bumped by every change (and by ConfigMode::store's invalidations): plans cached for an
  /// older version are built again.
  std::uint64_t version() const { return version_.load(std::memory_order_acquire); }

  const Snapshot& current() const { return *current_ptr(); }
  // The owning pointer behind current(), for caches that must keep the snapshot alive.
  const std::shared_ptr<const Snapshot>& current_ptr() const;

  // Replaces the snapshot by a copy changed by f(Snapshot&), with the discovered limits
  // merged again.
  template <class F>
  void update(F&& f) {
    std::lock_guard g(mu_);
    auto next = std::make_shared<Snapshot>(*cfg_);
    f(*next);
    if (!next->discovered.empty()) remerge(*next);
    cfg_ = std::move(next);
    version_.fetch_add(1, std::memory_order_release);
  }

  // A new version with the same snapshot (the store's configuration changed).
  void bump() {
    std::lock_guard g(mu_);
    version_.fetch_add(1, std::memory_order_release);
  }

 private:
  std::uint64_t uid_ = next_uid();
  mutable std::mutex mu_;
  std::shared_ptr<const Snapshot> cfg_ = std::make_shared<Snapshot>();
  std::atomic<std::uint64_t> version_{1};

  static std::uint64_t next_uid();
};

}  // namespace admit::detail
