// The Limiter's configuration: an immutable Snapshot replaced whole (copy on write) by the
// set_* calls, each thread caching the current one; resolution over a snapshot (through
// resolution.hpp, plus the discovered limits); the parent links, the parent rules and their
// checks.
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
#include "admit/limiter.hpp"
#include "pair_key.hpp"
#include "resolution.hpp"

namespace admit::detail {

// Whether `name` matches the glob `pattern` ('*' any run, '?' one byte, '\' escapes the next
// byte; a trailing '\' is a literal one).
bool glob_match(std::string_view pattern, std::string_view name) noexcept;

// Limiter::set_parent_rules' rules, compiled: patterns without wildcards looked up by name,
// the others matched in order.
struct ParentRules {
  std::vector<ParentRule> rules;
  absl::flat_hash_map<std::string, std::size_t> literal;  // unescaped pattern -> first rule
  std::vector<std::size_t> globs;                         // rules with wildcards, in order

  // The first rule that applies to `entity` (matches it and does not name it as its own
  // parent), or nullptr; its parent may be empty (no parent). The empty name matches none.
  const ParentRule* match(std::string_view entity) const;
};

// Validates every rule (validate_parent_rule) and compiles them.
ParentRules compile_parent_rules(std::vector<ParentRule> rules);

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
  // The parents of entities without an explicit one (local to the Limiter in both modes);
  // null: none.
  std::shared_ptr<const ParentRules> parent_rules;
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

// The parent of `entity`: its explicit one, else the one its first applying parent rule gives
// (`rule`, if given, is set to that rule, or nullptr for an explicit parent or none).
inline std::string_view parent_of(const Snapshot& s, std::string_view entity,
                                  const ParentRule** rule = nullptr) {
  if (rule != nullptr) *rule = nullptr;
  if (!s.entities.empty()) {
    auto e = s.entities.find(av(entity));
    if (e != s.entities.end() && !e->second.parent.empty()) return e->second.parent;
  }
  if (s.parent_rules == nullptr) return {};
  const ParentRule* r = s.parent_rules->match(entity);
  if (r == nullptr) return {};
  if (rule != nullptr) *rule = r;
  return r->parent;
}

// What check_parent_chains() found wrong with a chain of parents.
struct ChainProblem {
  std::string message;
  const ParentRule* rule = nullptr;  // a rule whose link is in that chain, if any
};

// Checks the chain of every entity `s` configures and of every entity a parent rule could
// match (its rule parent's chain plus one) for a cycle or more than `max_depth` ancestors,
// explicit and rule links alike.
std::optional<ChainProblem> check_parent_chains(const Snapshot& s, int max_depth);

// Makes `parent` the parent of `entity` in `s`, refusing a cycle or a chain deeper than
// `max_depth` (through `entity` or any of its descendants, those by rules included). An empty
// parent removes the link (the parent rules apply to `entity` again).
void link_parent(Snapshot& s, const std::string& entity, const std::string& parent, int max_depth);

// Sets the parent rules of `s`, refusing them (ValidationError, field "parent rule") if a
// chain of parents would be a cycle or deeper than `max_depth`.
void set_rules(Snapshot& s, std::shared_ptr<const ParentRules> rules, int max_depth);

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
