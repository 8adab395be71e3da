#include "config_snapshot.hpp"

#include <algorithm>

#include "admit/core/error.hpp"

namespace admit::detail {

namespace {

std::atomic<std::uint64_t> g_next_limiter_uid{1};

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

Resolved resolve_in(const Snapshot& s, std::string_view entity, std::string_view resource) {
  if (!s.discovered.empty()) {
    auto d = s.discovered.find(pair_key(entity, resource));
    if (d != s.discovered.end()) {
      return {&d->second.merged, ConfigSource::discovered, &d->second.sources};
    }
  }
  return resolve_configured(s, entity, resource);
}

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

void link_parent(Snapshot& s, const std::string& entity, const std::string& parent, int max_depth) {
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

std::uint64_t ConfigSnapshots::next_uid() { return g_next_limiter_uid.fetch_add(1); }

const std::shared_ptr<const Snapshot>& ConfigSnapshots::current_ptr() const {
  const std::uint64_t v = version_.load(std::memory_order_acquire);
  for (auto& e : t_snapshots) {
    if (e.uid == uid_ && e.version == v) return e.snap;
  }
  TlsSnapshot* slot = nullptr;
  for (auto& e : t_snapshots) {
    if (e.uid == uid_) slot = &e;
  }
  if (slot == nullptr) {
    slot = &t_snapshots[t_snapshot_victim];
    t_snapshot_victim = (t_snapshot_victim + 1) % t_snapshots.size();
  }
  std::lock_guard g(mu_);
  *slot = TlsSnapshot{uid_, version_.load(std::memory_order_relaxed), cfg_};
  return slot->snap;
}

}  // namespace admit::detail
