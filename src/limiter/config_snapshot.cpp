#include "config_snapshot.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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

bool glob_match(std::string_view pattern, std::string_view name) noexcept {
  // Greedy with one backtrack point: the last '*' seen and where its run would end.
  std::size_t p = 0;
  std::size_t n = 0;
  std::size_t star = std::string_view::npos;
  std::size_t star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size()) {
      const char c = pattern[p];
      if (c == '*') {
        star = ++p;
        star_n = n;
        continue;
      }
      if (c == '?') {
        ++p;
        ++n;
        continue;
      }
      if (c == '\\' && p + 1 < pattern.size()) {
        if (pattern[p + 1] == name[n]) {
          p += 2;
          ++n;
          continue;
        }
      } else if (c == name[n]) {
        ++p;
        ++n;
        continue;
      }
    }
    if (star == std::string_view::npos) return false;
    p = star;  // the last '*' takes one more byte
    n = ++star_n;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {

// The text a pattern without wildcards matches (escapes removed), or nullopt if it has some.
std::optional<std::string> literal_text(std::string_view pattern) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '*' || c == '?') return std::nullopt;
    if (c == '\\' && i + 1 < pattern.size()) ++i;
    out += pattern[i];
  }
  return out;
}

}  // namespace

const ParentRule* ParentRules::match(std::string_view entity) const {
  if (entity.empty()) return nullptr;
  std::size_t best = rules.size();
  if (!literal.empty()) {
    auto it = literal.find(av(entity));
    if (it != literal.end()) best = it->second;
  }
  for (const std::size_t i : globs) {
    if (i >= best) break;
    const ParentRule& r = rules[i];
    if (r.parent != entity && glob_match(r.pattern, entity)) return &r;
  }
  return best < rules.size() ? &rules[best] : nullptr;
}

ParentRules compile_parent_rules(std::vector<ParentRule> rules) {
  ParentRules out;
  for (std::size_t i = 0; i < rules.size(); ++i) {
    validate_parent_rule(rules[i]);
    if (auto text = literal_text(rules[i].pattern)) {
      out.literal.try_emplace(std::move(*text), i);
    } else {
      out.globs.push_back(i);
    }
  }
  out.rules = std::move(rules);
  return out;
}

std::optional<ChainProblem> check_parent_chains(const Snapshot& s, int max_depth) {
  const std::string deeper = " would be deeper than max_parent_depth " + std::to_string(max_depth);
  std::vector<std::string_view> seen;
  // Walks up from `first` (the chain's ancestors so far: `ancestors`, `via` the rule that gave
  // the first link, if any).
  auto walk = [&](std::string_view first, int ancestors, const ParentRule* via,
                  const std::string& who) -> std::optional<ChainProblem> {
    seen.assign({first});
    const ParentRule* rule = nullptr;
    for (std::string_view p = parent_of(s, first, &rule); !p.empty(); p = parent_of(s, p, &rule)) {
      if (via == nullptr) via = rule;
      if (std::find(seen.begin(), seen.end(), p) != seen.end()) {
        std::string chain;
        for (std::string_view e : seen) chain.append(e).append(" -> ");
        chain.append(p);
        return ChainProblem{"the parents of " + who + " make a cycle: " + chain, via};
      }
      seen.push_back(p);
      if (++ancestors > max_depth) return ChainProblem{"the chain of " + who + deeper, via};
    }
    return std::nullopt;
  };
  for (const auto& [name, conf] : s.entities) {
    if (auto problem = walk(name, 0, nullptr, name)) return problem;
  }
  if (s.parent_rules != nullptr) {
    for (const ParentRule& r : s.parent_rules->rules) {
      if (r.parent.empty()) continue;
      const std::string who = "an entity matching '" + r.pattern + "'";
      if (max_depth < 1) return ChainProblem{"the chain of " + who + deeper, &r};
      if (auto problem = walk(r.parent, 1, &r, who)) return problem;
    }
  }
  return std::nullopt;
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
  // The new link also deepens every chain through `entity` (its descendants, explicit or by
  // a parent rule): a chain built leaf-first must be refused here, not silently cut at
  // max_parent_depth by the plan. Removing a link may make one too: `entity` falls back to
  // the parent rules.
  if (auto problem = check_parent_chains(s, max_depth)) {
    throw ValidationError("parent", parent, problem->message);
  }
}

void set_rules(Snapshot& s, std::shared_ptr<const ParentRules> rules, int max_depth) {
  s.parent_rules = rules != nullptr && !rules->rules.empty() ? std::move(rules) : nullptr;
  if (s.parent_rules == nullptr) return;  // removing rules shortens chains only
  if (auto problem = check_parent_chains(s, max_depth)) {
    const ParentRule* r = problem->rule != nullptr ? problem->rule : &s.parent_rules->rules.front();
    throw ValidationError("parent rule", r->pattern, problem->message);
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

namespace admit {

void validate_parent_rule(const ParentRule& rule) {
  // As validate_name, but up to 256 bytes: a 128-byte name with escapes fits.
  if (rule.pattern.empty() || rule.pattern.size() > 256) {
    throw ValidationError("parent rule", rule.pattern, "must be 1 to 256 bytes");
  }
  for (const char c : rule.pattern) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      throw ValidationError("parent rule", rule.pattern, "must be printable ASCII without spaces");
    }
  }
  std::size_t escapes = 0;  // backslashes just before the end
  for (auto it = rule.pattern.rbegin(); it != rule.pattern.rend() && *it == '\\'; ++it) {
    ++escapes;
  }
  if (escapes % 2 == 1) {
    throw ValidationError("parent rule", rule.pattern,
                          "ends with an incomplete escape (write \\\\ for a backslash)");
  }
  if (rule.parent.empty()) return;
  validate_name("parent", rule.parent);
  if (const auto text = detail::literal_text(rule.pattern); text && *text == rule.parent) {
    throw ValidationError("parent rule", rule.pattern,
                          "would make " + rule.parent + " its own parent");
  }
}

}  // namespace admit
