#include "service/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <tuple>

#include "admit/adapt/profiles.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "common/yaml_reader.hpp"
#include "limiter/resolution.hpp"

namespace admit::service {

namespace {

using detail::fail_at;
using detail::join;
using detail::show;
using detail::where;

// The schema's names of limit forms, shared by the parser and format_state_file.
struct PerUnit {
  std::string_view name;  // `per: minute`
  Micros period;
  Limit (*make)(std::string, std::int64_t, std::int64_t);
};
constexpr PerUnit kPerUnits[] = {{"second", kMicrosPerSecond, &Limit::per_second},
                                 {"minute", kMicrosPerMinute, &Limit::per_minute},
                                 {"hour", kMicrosPerHour, &Limit::per_hour},
                                 {"day", kMicrosPerDay, &Limit::per_day}};
// A state record's `kind` is to_string(LimitKind): the kinds a state file's limits have.
constexpr LimitKind kRecordKinds[] = {LimitKind::rate, LimitKind::window, LimitKind::concurrency};

using Entry = detail::YamlReader::Entry;

const Entry* find_entry(const std::vector<Entry>& es, std::string_view k) {
  for (const Entry& e : es) {
    if (e.key == k) return &e;
  }
  return nullptr;
}

class Parser : detail::YamlReader {
 public:
  /// @param with_state read a state file: accept (and check) a `state:` list.
  Parser(std::string source, bool with_state)
      : YamlReader(std::move(source), "config"), with_state_(with_state) {}

  Config run(const std::string& text) {
    YAML::Node root;
    try {
      std::vector<YAML::Node> docs = YAML::LoadAll(text);
      if (docs.size() > 1) {
        fail_at(second_document(text), "config", source_,
                "a second YAML document (a config file is one document; remove the '---' "
                "and merge it into the first)");
      }
      if (!docs.empty()) root = docs.front();
    } catch (const YAML::Exception& e) {
      fail_at(where(source_, e.mark), "config", source_, "YAML syntax error: " + e.msg);
    }
    if (!root.IsMap()) {
      fail(root, "config", source_,
           "expected a mapping with namespace, defaults, resources and entities");
    }
    Config cfg;
    cfg.source = source_;
    std::optional<YAML::Node> state_list;
    std::optional<ParentRuleConfig> default_parent;
    const Entry* top_level = nullptr;  // the first key of a namespace's at the top level
    const Entry* nested = nullptr;     // `namespaces`
    const std::vector<Entry> top = entries(root, "");
    for (const Entry& e : top) {
      if (e.key == "namespace") {
        cfg.ns = name(e.value, "namespace", "namespace");
        top_level = top_level != nullptr ? top_level : &e;
      } else if (namespace_key(e, "", cfg, default_parent)) {
        top_level = top_level != nullptr ? top_level : &e;
      } else if (e.key == "namespaces") {
        nested = &e;
      } else if (e.key == "store") {
        cfg.store = parse_store_config(e.value, source_);
      } else if (e.key == "auth") {
        cfg.tokens = auth(e.value);
      } else if (e.key == "http") {
        cfg.http = http(e.value);
      } else if (e.key == "gateway" && !with_state_) {
        cfg.gateway = parse_gateway_config(e.value, source_);
      } else if (e.key == "state" && with_state_) {
        state_list = e.value;  // checked against the limits once they are all read
      } else {
        fail(e.key_node, e.key, e.key,
             std::string("unknown key (expected namespace, namespaces, store, defaults, "
                         "resources, profiles, entities, parent_rules, default_parent") +
                 (with_state_ ? ", auth, http or state)" : ", auth, http or gateway)"));
      }
    }
    finish_namespace(cfg, "", std::move(default_parent));
    if (nested != nullptr) {
      if (top_level != nullptr) {
        fail(top_level->key_node, top_level->key, top_level->key,
             "a namespace's key at the top level of a file with 'namespaces' (move it under "
             "namespaces.<name>)");
      }
      if (with_state_) {
        fail(nested->key_node, "namespaces", "namespaces",
             "a state file holds one namespace (use the top-level form)");
      }
      namespaces(nested->value, cfg);
    }
    if (state_list) state(*state_list, cfg);
    return cfg;
  }

 private:
  /// Reads `e` into `cfg` if it is one of a namespace's keys (defaults, resources, profiles,
  /// entities, parent_rules, default_parent); `prefix` starts its YAML paths.
  bool namespace_key(const Entry& e, const std::string& prefix, NamespaceConfig& cfg,
                     std::optional<ParentRuleConfig>& default_parent) const {
    const std::string path = prefix + e.key;
    if (e.key == "defaults") {
      cfg.defaults = limits(e.value, path);
    } else if (e.key == "resources") {
      for (const Entry& r : entries(e.value, path)) {
        const std::string rp = path + "." + r.key;
        check_name(r.key_node, rp, "resource", r.key);
        cfg.resources.emplace_back(r.key, limits(r.value, rp));
      }
    } else if (e.key == "profiles") {
      if (!e.value.IsSequence()) {
        fail(e.value, path, show(e.value), "expected a list of {provider, tier}");
      }
      for (std::size_t i = 0; i < e.value.size(); ++i) {
        cfg.profiles.push_back(profile(e.value[i], path + "[" + std::to_string(i) + "]"));
      }
    } else if (e.key == "entities") {
      for (const Entry& en : entries(e.value, path)) cfg.entities.push_back(entity(en, prefix));
    } else if (e.key == "parent_rules") {
      if (!e.value.IsSequence()) {
        fail(e.value, path, show(e.value), "expected a list of {match, parent}");
      }
      for (std::size_t i = 0; i < e.value.size(); ++i) {
        cfg.parent_rules.push_back(parent_rule(e.value[i], path + "[" + std::to_string(i) + "]"));
      }
    } else if (e.key == "default_parent") {
      ParentRuleConfig r;
      r.match = "*";
      r.parent = name(e.value, path, "parent");
      r.path = path;
      r.where = where(source_, e.value.Mark());
      default_parent = std::move(r);
    } else {
      return false;
    }
    return true;
  }

  /// The checks and expansions of a namespace once its keys are read.
  void finish_namespace(NamespaceConfig& cfg, const std::string& prefix,
                        std::optional<ParentRuleConfig> default_parent) const {
    if (default_parent) cfg.parent_rules.push_back(std::move(*default_parent));  // the last rule
    check_parents_declared(cfg, prefix);
    check_cycles(cfg, prefix);
    expand_profiles(cfg, prefix);
  }

  // `namespaces: {NAME: {defaults, resources, ...}, ...}`: the first is `cfg` itself.
  void namespaces(const YAML::Node& n, Config& cfg) const {
    const std::vector<Entry> es = entries(n, "namespaces");
    if (es.empty()) fail(n, "namespaces", show(n), "expected at least one namespace");
    for (std::size_t i = 0; i < es.size(); ++i) {
      const Entry& e = es[i];
      const std::string prefix = "namespaces." + e.key + ".";
      check_name(e.key_node, "namespaces." + e.key, "namespace", e.key);
      NamespaceConfig& ns = i == 0 ? static_cast<NamespaceConfig&>(cfg) : cfg.more.emplace_back();
      ns.ns = e.key;
      std::optional<ParentRuleConfig> default_parent;
      if (!e.value.IsNull()) {
        for (const Entry& k : entries(e.value, "namespaces." + e.key)) {
          if (!namespace_key(k, prefix, ns, default_parent)) {
            fail(k.key_node, prefix + k.key, k.key,
                 "unknown key (expected defaults, resources, profiles, entities, parent_rules "
                 "or default_parent)");
          }
        }
      }
      finish_namespace(ns, prefix, std::move(default_parent));
    }
  }

  // `{provider: openai, tier: tier-1}`.
  ProfileConfig profile(const YAML::Node& n, const std::string& path) const {
    ProfileConfig p;
    p.where = where(source_, n.Mark());
    bool has_provider = false;
    bool has_tier = false;
    for (const Entry& e : entries(n, path)) {
      const std::string kp = join(path, e.key);
      if (e.key == "provider") {
        p.provider = string(e.value, kp);
        has_provider = true;
      } else if (e.key == "tier") {
        p.tier = string(e.value, kp);
        has_tier = true;
      } else {
        fail(e.key_node, kp, e.key, "unknown key (expected provider and tier)");
      }
    }
    if (!has_provider) fail(n, join(path, "provider"), "", "missing");
    if (!has_tier) fail(n, join(path, "tier"), "", "missing");
    return p;
  }

  /// Puts the models of each profile before `resources`, those `resources` lists left out.
  void expand_profiles(NamespaceConfig& cfg, const std::string& prefix) const {
    if (cfg.profiles.empty()) return;
    std::vector<std::pair<std::string, LimitList>> from_profiles;
    for (std::size_t i = 0; i < cfg.profiles.size(); ++i) {
      const ProfileConfig& pc = cfg.profiles[i];
      const std::string path = prefix + "profiles[" + std::to_string(i) + "]";
      ProviderProfile p;
      try {
        p = load_profile_by_name(pc.provider, pc.tier);
      } catch (const ValidationError& x) {
        const bool tier = x.field() == "tier";
        fail_at(pc.where, join(path, tier ? "tier" : "provider"), tier ? pc.tier : pc.provider,
                x.reason());
      }
      for (const auto& [model, quota] : p.models) {
        const auto listed = [&](const auto& r) { return r.first == model; };
        if (std::any_of(cfg.resources.begin(), cfg.resources.end(), listed)) continue;
        const auto earlier = std::find_if(from_profiles.begin(), from_profiles.end(), listed);
        if (earlier != from_profiles.end()) {
          fail_at(pc.where, path, pc.provider + "/" + pc.tier,
                  "model '" + model + "' is also in an earlier profile (list it under " + prefix +
                      "resources to choose its limits)");
        }
        from_profiles.emplace_back(model, to_limits(quota, p.day_time_zone, ZeroQuota::unlimited));
      }
    }
    for (auto& r : cfg.resources) from_profiles.push_back(std::move(r));
    cfg.resources = std::move(from_profiles);
  }

  std::string string(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a string");
    return expand_env(n, path);
  }

  /// "file:line:1" of the marker that starts the second document: a "---" after content, or
  /// a "..." (which ends the first); the file alone if none is found.
  std::string second_document(const std::string& text) const {
    bool content = false;  // a line of the first document that is not blank or a comment
    std::size_t line = 1;
    for (std::size_t pos = 0; pos < text.size(); ++line) {
      const std::size_t end = std::min(text.find('\n', pos), text.size());
      const std::string_view l(text.data() + pos, end - pos);
      const bool start = l.starts_with("---");
      if ((start && content) || l.starts_with("...")) {
        return source_ + ":" + std::to_string(line) + ":1";
      }
      const std::size_t first = l.find_first_not_of(" \t\r");
      if (!start && first != std::string_view::npos && l[first] != '#' && l[first] != '%') {
        content = true;
      }
      pos = end + 1;
    }
    return source_;
  }

  std::string name(const YAML::Node& n, const std::string& path, std::string_view field) const {
    std::string s = string(n, path);
    check_name(n, path, field, s);
    return s;
  }

  std::int64_t integer(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a non-negative integer");
    const std::string& s = n.Scalar();
    if (n.Tag() != "?") {  // quoted ("!") or explicitly tagged: a string, not a number
      fail(n, path, s, "a quoted string where a number belongs (write it without quotes)");
    }
    std::int64_t v = 0;
    const char* end = s.data() + s.size();
    const auto [p, ec] = std::from_chars(s.data(), end, v);
    if (ec == std::errc::result_out_of_range) fail(n, path, s, "out of range");
    if (s.empty() || s.front() == '-' || ec != std::errc() || p != end) {
      fail(n, path, s, "expected a non-negative integer");
    }
    if (v > kMaxExact) fail(n, path, s, "must be below 2^53");
    return v;
  }

  LimitList limits(const YAML::Node& n, const std::string& path) const {
    if (!n.IsSequence()) fail(n, path, show(n), "expected a list of limits");
    LimitList out;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const std::string p = path + "[" + std::to_string(i) + "]";
      const YAML::Node item = n[i];
      Limit l = limit(item, p);
      for (std::size_t j = 0; j < out.size(); ++j) {
        if (out[j].name() == l.name()) {
          fail(item, p + ".name", l.name(),
               "duplicate limit name (also at " + path + "[" + std::to_string(j) + "])");
        }
      }
      out.push_back(std::move(l));
    }
    return out;
  }

  /// A plain `true` or `false` (not quoted, no other spelling).
  bool boolean(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar() || n.Tag() != "?" || (n.Scalar() != "true" && n.Scalar() != "false")) {
      fail(n, path, show(n), "expected true or false");
    }
    return n.Scalar() == "true";
  }

  // One limit object; any form may carry `shadow: true` (Limit::shadow: reported, not enforced).
  Limit limit(const YAML::Node& n, const std::string& path) const {
    static constexpr std::string_view kKinds[] = {"per", "period_ms", "window", "concurrency",
                                                  "adaptive"};
    static const std::map<std::string_view, std::vector<std::string_view>> kAllowed = {
        {"per", {"name", "per", "limit", "burst"}},
        {"adaptive", {"name", "adaptive", "burst"}},
        {"period_ms", {"name", "period_ms", "capacity", "refill"}},
        {"window", {"name", "window", "limit", "reset_at", "time_zone"}},
        {"concurrency", {"name", "concurrency"}},
    };
    const std::vector<Entry> es = entries(n, path);
    auto find = [&](std::string_view k) { return find_entry(es, k); };
    const Entry* kind = nullptr;
    for (const std::string_view k : kKinds) {
      const Entry* e = find(k);
      if (e == nullptr) continue;
      if (kind != nullptr) {
        fail(e->key_node, join(path, e->key), e->key,
             "conflicts with '" + kind->key +
                 "' (a limit has exactly one of per, period_ms, window, concurrency, "
                 "adaptive)");
      }
      kind = e;
    }
    if (kind == nullptr) {
      fail(n, path, show(n),
           "a limit needs one of per, period_ms, window, concurrency or adaptive");
    }
    const auto& allowed = kAllowed.at(kind->key);
    for (const Entry& e : es) {
      if (e.key == "shadow") continue;  // every form
      if (std::find(allowed.begin(), allowed.end(), e.key) == allowed.end()) {
        const bool known = e.key == "limit" || e.key == "burst" || e.key == "capacity" ||
                           e.key == "refill" || e.key == "reset_at" || e.key == "time_zone";
        fail(e.key_node, join(path, e.key), e.key,
             known ? "not allowed with '" + kind->key + "'" : std::string("unknown key"));
      }
    }
    auto need = [&](std::string_view k) -> const Entry& {
      const Entry* e = find(k);
      if (e == nullptr) {
        fail(n, join(path, std::string(k)), "", "missing (required with '" + kind->key + "')");
      }
      return *e;
    };
    auto int_of = [&](std::string_view k, std::int64_t fallback) {
      const Entry* e = find(k);
      return e == nullptr ? fallback : integer(e->value, join(path, e->key));
    };
    auto str_of = [&](std::string_view k, std::string fallback) {
      const Entry* e = find(k);
      return e == nullptr ? fallback : string(e->value, join(path, e->key));
    };

    const std::string lname = string(need("name").value, join(path, "name"));
    const Entry* shadow_e = find("shadow");
    const bool shadow = shadow_e != nullptr && boolean(shadow_e->value, join(path, "shadow"));
    const std::string kpath = join(path, kind->key);
    // The library validates the rest; its errors are mapped back to the YAML key below.
    try {
      if (kind->key == "per") {
        const std::string unit = string(kind->value, kpath);
        const std::int64_t lim = integer(need("limit").value, join(path, "limit"));
        const std::int64_t burst = int_of("burst", 0);
        for (const PerUnit& u : kPerUnits) {
          if (unit == u.name) return u.make(lname, lim, burst).with_shadow(shadow);
        }
        fail(kind->value, kpath, unit, "expected second, minute, hour or day");
      }
      if (kind->key == "period_ms") {
        const std::int64_t ms = integer(kind->value, kpath);
        if (ms > kMaxExact / 1000) fail(kind->value, kpath, std::to_string(ms), "too large");
        const std::int64_t cap = integer(need("capacity").value, join(path, "capacity"));
        const std::int64_t refill = integer(need("refill").value, join(path, "refill"));
        return Limit::custom(lname, cap, refill, std::chrono::milliseconds(ms)).with_shadow(shadow);
      }
      if (kind->key == "window") {
        const std::string unit = string(kind->value, kpath);
        const std::optional<WindowUnit> u = window_unit_from(unit);  // `window: day`
        if (!u) fail(kind->value, kpath, unit, "expected minute, hour, day, week or month");
        const std::int64_t lim = integer(need("limit").value, join(path, "limit"));
        WindowSpec spec{*u, str_of("reset_at", "00:00"), str_of("time_zone", "UTC")};
        return Limit::window(lname, lim, std::move(spec)).with_shadow(shadow);
      }
      if (kind->key == "adaptive") {
        const AimdOptions o = aimd(kind->value, kpath);
        const Entry* burst = find("burst");
        return Limit::adaptive(lname, o,
                               burst == nullptr ? 1 : integer(burst->value, join(path, "burst")))
            .with_shadow(shadow);
      }
      return Limit::concurrency(lname, integer(kind->value, kpath)).with_shadow(shadow);
    } catch (const ValidationError& e) {
      if (e.field() == kpath || e.field().starts_with(path + ".")) throw;  // ours already
      const std::string key = yaml_key(e.field(), kind->key, find("burst") != nullptr);
      const Entry* at = key.empty() ? nullptr : find(key);
      if (at == nullptr) fail(n, path, e.value(), e.reason());
      // Report the value as written in the file (the library may have converted it).
      fail(at->value, join(path, key), at->value.IsScalar() ? at->value.Scalar() : e.value(),
           e.reason());
    }
  }

  /// A plain non-negative number (integer or decimal, not quoted).
  double real(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a number");
    const std::string& s = n.Scalar();
    if (n.Tag() != "?") {
      fail(n, path, s, "a quoted string where a number belongs (write it without quotes)");
    }
    double v = 0;
    const char* end = s.data() + s.size();
    const auto [p, ec] = std::from_chars(s.data(), end, v);
    if (s.empty() || ec != std::errc() || p != end || !std::isfinite(v) || v < 0) {
      fail(n, path, s, "expected a non-negative number");
    }
    return v;
  }

  // `adaptive: {max_rate, initial_rate, min_rate, additive_increase, multiplicative_decrease,
  // slow_start_threshold}`: AimdOptions, rates in units per second.
  AimdOptions aimd(const YAML::Node& n, const std::string& path) const {
    AimdOptions o;
    bool has_max = false;
    for (const Entry& e : entries(n, path)) {
      const std::string p = join(path, e.key);
      if (e.key == "max_rate") {
        o.max_rate = real(e.value, p);
        has_max = true;
      } else if (e.key == "initial_rate") {
        o.initial_rate = real(e.value, p);
      } else if (e.key == "min_rate") {
        o.min_rate = real(e.value, p);
      } else if (e.key == "additive_increase") {
        o.additive_increase = real(e.value, p);
      } else if (e.key == "multiplicative_decrease") {
        o.multiplicative_decrease = real(e.value, p);
      } else if (e.key == "slow_start_threshold") {
        o.slow_start_threshold = real(e.value, p);
      } else {
        fail(e.key_node, p, e.key,
             "unknown key (expected max_rate, initial_rate, min_rate, additive_increase, "
             "multiplicative_decrease or slow_start_threshold)");
      }
    }
    if (!has_max) fail(n, join(path, "max_rate"), "", "missing (the rate's upper bound)");
    try {
      validate(o);
    } catch (const ValidationError& x) {
      const std::string key = x.field().substr(x.field().rfind('.') + 1);
      const YAML::Node at = n[key];
      if (at) fail(at, join(path, key), at.IsScalar() ? at.Scalar() : x.value(), x.reason());
      fail(n, path, x.value(), x.reason());
    }
    return o;
  }

  /// The YAML key behind a field name the Limit factories report.
  static std::string yaml_key(const std::string& field, const std::string& kind, bool has_burst) {
    if (field == "limit name") return "name";
    if (field == "rate") return "limit";
    if (field == "burst") return "burst";
    if (field == "capacity") {
      if (kind == "per") return has_burst ? "burst" : "limit";
      return kind == "period_ms" ? "capacity" : "limit";
    }
    if (field == "refill_amount") return "refill";
    if (field == "refill_period") return "period_ms";
    if (field == "slots") return "concurrency";
    if (field == "reset_at" || field == "time_zone") return field;
    if (kind == "adaptive") return "adaptive";  // an AimdOptions field (min_rate too slow, ...)
    return {};
  }

  EntityConfig entity(const Entry& en, const std::string& prefix) const {
    const std::string path = prefix + "entities." + en.key;
    check_name(en.key_node, path, "entity", en.key);
    EntityConfig out;
    out.name = en.key;
    out.parent_where = where(source_, en.key_node.Mark());
    if (en.value.IsNull()) return out;  // "user-1:" alone: declared, nothing set
    for (const Entry& e : entries(en.value, path)) {
      const std::string p = join(path, e.key);
      if (e.key == "parent") {
        out.parent_where = where(source_, e.value.Mark());
        if (e.value.IsNull()) continue;
        out.parent = string(e.value, p);
        if (!out.parent.empty()) check_name(e.value, p, "parent", out.parent);
        if (out.parent == out.name)
          fail(e.value, p, out.parent, "an entity cannot be its own parent");
      } else if (e.key == "defaults") {
        out.defaults = limits(e.value, p);
      } else if (e.key == "limits") {
        for (const Entry& r : entries(e.value, p)) {
          const std::string rp = join(p, r.key);
          check_name(r.key_node, rp, "resource", r.key);
          out.limits.emplace_back(r.key, limits(r.value, rp));
        }
      } else {
        fail(e.key_node, p, e.key, "unknown key (expected parent, defaults or limits)");
      }
    }
    return out;
  }

  // `{match: "user-*", parent: team-a}`.
  ParentRuleConfig parent_rule(const YAML::Node& n, const std::string& path) const {
    ParentRuleConfig r;
    const Entry* match = nullptr;
    const std::vector<Entry> es = entries(n, path);
    for (const Entry& e : es) {
      const std::string p = join(path, e.key);
      if (e.key == "match") {
        match = &e;
        r.match = string(e.value, p);
        try {
          validate_parent_rule(ParentRule{r.match, ""});
        } catch (const ValidationError& x) {
          fail(e.value, p, r.match, x.reason());
        }
      } else if (e.key == "parent") {
        r.parent = name(e.value, p, "parent");
        r.path = p;
        r.where = where(source_, e.value.Mark());
      } else {
        fail(e.key_node, p, e.key, "unknown key (expected match and parent)");
      }
    }
    if (match == nullptr) fail(n, join(path, "match"), "", "missing");
    if (r.path.empty()) fail(n, join(path, "parent"), "", "missing");
    try {
      validate_parent_rule(ParentRule{r.match, r.parent});
    } catch (const ValidationError& x) {
      fail(match->value, join(path, "match"), r.match, x.reason());
    }
    return r;
  }

  // ---- state records ----

  std::uint64_t lease_id(const YAML::Node& n, const std::string& path) const {
    const std::string s = string(n, path);
    std::uint64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
      fail(n, path, s, "expected a lease id (an integer from 0 to 2^64-1)");
    }
    return v;
  }

  void state(const YAML::Node& list, Config& cfg) const {
    if (!list.IsSequence()) fail(list, "state", show(list), "expected a list of state records");
    // (entity, resource, limit) of each rate / window record -> its index, for duplicates.
    std::map<std::tuple<std::string, std::string, std::string>, std::size_t> seen;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string path = "state[" + std::to_string(i) + "]";
      const YAML::Node n = list[i];
      const std::vector<Entry> es = entries(n, path);
      auto need = [&](std::string_view k) -> const Entry& {
        const Entry* e = find_entry(es, k);
        if (e == nullptr) fail(n, join(path, std::string(k)), "", "missing");
        return *e;
      };
      const std::string entity = name(need("entity").value, join(path, "entity"), "entity");
      const std::string resource = name(need("resource").value, join(path, "resource"), "resource");
      const Entry& limit_e = need("limit");
      const std::string limit = name(limit_e.value, join(path, "limit"), "limit name");
      const Entry& kind_e = need("kind");
      const std::string kind_text = string(kind_e.value, join(path, "kind"));
      const LimitKind* kind = std::find_if(std::begin(kRecordKinds), std::end(kRecordKinds),
                                           [&](LimitKind k) { return to_string(k) == kind_text; });
      if (kind == std::end(kRecordKinds)) {
        fail(kind_e.value, join(path, "kind"), kind_text, "expected rate, window or concurrency");
      }
      static const std::map<LimitKind, std::vector<std::string_view>> kFields = {
          {LimitKind::rate, {"tat_us", "tat_rem"}},
          {LimitKind::window, {"window_end_us", "used"}},
          {LimitKind::concurrency, {"lease", "amount", "expiry_us"}},
      };
      const auto& fields = kFields.at(*kind);
      for (const Entry& e : es) {
        if (e.key == "entity" || e.key == "resource" || e.key == "limit" || e.key == "kind" ||
            std::find(fields.begin(), fields.end(), e.key) != fields.end()) {
          continue;
        }
        bool other_kind = false;
        for (const auto& [k, f] : kFields) {
          other_kind = other_kind || std::find(f.begin(), f.end(), e.key) != f.end();
        }
        fail(e.key_node, join(path, e.key), e.key,
             other_kind ? "not allowed with kind " + kind_text : std::string("unknown key"));
      }

      const std::string who = "entity '" + entity + "' on resource '" + resource + "'";
      const LimitList& limits = resolve_limits(cfg, entity, resource);
      const auto l = std::find_if(limits.begin(), limits.end(),
                                  [&](const Limit& x) { return x.name() == limit; });
      if (l == limits.end()) {
        std::string names;
        for (const Limit& x : limits) names += (names.empty() ? "" : ", ") + x.name();
        fail(limit_e.value, join(path, "limit"), limit,
             "no limit of that name applies to " + who +
                 (names.empty() ? " (it has no limits)" : " (its limits: " + names + ")"));
      }
      if (l->kind() != *kind) {
        fail(kind_e.value, join(path, "kind"), kind_text,
             "limit '" + limit + "' of " + who + " is a " + std::string(to_string(l->kind())) +
                 " limit");
      }
      auto num = [&](std::string_view k) {
        return integer(need(k).value, join(path, std::string(k)));
      };
      if (*kind == LimitKind::concurrency) {
        HoldRow h{entity,        resource,
                  limit,         lease_id(need("lease").value, join(path, "lease")),
                  num("amount"), num("expiry_us")};
        if (h.amount < 1) {
          fail(need("amount").value, join(path, "amount"), std::to_string(h.amount),
               "must be >= 1");
        }
        cfg.state.holds.push_back(std::move(h));
        continue;
      }
      const auto [dup, fresh] = seen.try_emplace({entity, resource, limit}, i);
      if (!fresh) {
        fail(n, path, entity + "/" + resource + "/" + limit,
             "duplicate state record (also at state[" + std::to_string(dup->second) + "])");
      }
      const bool rate = *kind == LimitKind::rate;
      const Entry* rem = find_entry(es, "tat_rem");
      cfg.state.rows.push_back(StateRow{
          entity, resource, limit, *kind, num(rate ? "tat_us" : "window_end_us"),
          rate ? (rem == nullptr ? 0 : integer(rem->value, join(path, "tat_rem"))) : num("used")});
    }
  }

  // ---- auth and http ----

  std::vector<std::string> string_list(const YAML::Node& n, const std::string& path) const {
    if (!n.IsSequence()) fail(n, path, show(n), "expected a list of strings");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n.size(); ++i) {
      out.push_back(string(n[i], path + "[" + std::to_string(i) + "]"));
    }
    return out;
  }

  std::vector<TokenConfig> auth(const YAML::Node& n) const {
    std::vector<TokenConfig> out;
    for (const Entry& e : entries(n, "auth")) {
      if (e.key != "tokens") {
        fail(e.key_node, join("auth", e.key), e.key, "unknown key (expected tokens)");
      }
      if (!e.value.IsSequence()) {
        fail(e.value, "auth.tokens", show(e.value), "expected a list of tokens");
      }
      for (std::size_t i = 0; i < e.value.size(); ++i) {
        out.push_back(token(e.value[i], "auth.tokens[" + std::to_string(i) + "]", out));
      }
    }
    return out;
  }

  TokenConfig token(const YAML::Node& n, const std::string& path,
                    const std::vector<TokenConfig>& before) const {
    static const std::string kHidden = "(hidden)";  // a token never appears in a message
    TokenConfig t;
    t.where = where(source_, n.Mark());
    bool has_token = false;
    for (const Entry& e : entries(n, path)) {
      const std::string p = join(path, e.key);
      if (e.key == "token") {
        t.token = string(e.value, p);
        has_token = true;
        if (t.token.size() < kMinTokenLength) {
          fail(e.value, p, kHidden,
               "shorter than " + std::to_string(kMinTokenLength) +
                   " bytes (after ${ENV} substitution)");
        }
        if (!std::all_of(t.token.begin(), t.token.end(),
                         [](char c) { return c > ' ' && c <= '~'; })) {
          fail(e.value, p, kHidden, "holds a space, a control character or a non-ASCII byte");
        }
        for (std::size_t j = 0; j < before.size(); ++j) {
          if (before[j].token == t.token) {
            fail(e.value, p, kHidden, "the same token as auth.tokens[" + std::to_string(j) + "]");
          }
        }
      } else if (e.key == "scope") {
        const std::string s = string(e.value, p);
        const std::optional<Scope> scope = scope_from(s);
        if (!scope) fail(e.value, p, s, "expected decide or admin");
        t.scope = *scope;
      } else if (e.key == "namespaces") {
        t.namespaces = string_list(e.value, p);
        for (std::size_t j = 0; j < t.namespaces.size(); ++j) {
          check_name(e.value[j], p + "[" + std::to_string(j) + "]", "namespace", t.namespaces[j]);
        }
      } else if (e.key == "name") {
        t.name = name(e.value, p, "token name");
      } else {
        fail(e.key_node, p, e.key, "unknown key (expected token, scope, namespaces or name)");
      }
    }
    if (!has_token) fail(n, join(path, "token"), "", "missing");
    return t;
  }

  GuardOptions http(const YAML::Node& n) const {
    GuardOptions out;
    for (const Entry& e : entries(n, "http")) {
      const std::string p = join("http", e.key);
      if (e.key == "allowed_origins") {
        out.allowed_origins = string_list(e.value, p);
        for (std::size_t i = 0; i < out.allowed_origins.size(); ++i) {
          const std::string& o = out.allowed_origins[i];
          const std::size_t host = o.find("://");
          if (!(o.starts_with("http://") || o.starts_with("https://")) || o.size() == host + 3 ||
              o.find('/', host + 3) != std::string::npos) {
            fail(e.value[i], p + "[" + std::to_string(i) + "]", o,
                 "expected an origin: http[s]://HOST[:PORT], no path");
          }
        }
      } else if (e.key == "allowed_hosts") {
        out.allowed_hosts = string_list(e.value, p);
        for (std::size_t i = 0; i < out.allowed_hosts.size(); ++i) {
          const std::string& h = out.allowed_hosts[i];
          if (h.empty() || h.find_first_of(" /\t") != std::string::npos) {
            fail(e.value[i], p + "[" + std::to_string(i) + "]", h,
                 "expected a host name, HOST:PORT or *");
          }
        }
      } else {
        fail(e.key_node, p, e.key, "unknown key (expected allowed_origins or allowed_hosts)");
      }
    }
    return out;
  }

  static void check_parents_declared(const NamespaceConfig& cfg, const std::string& prefix) {
    std::set<std::string_view> declared;
    for (const auto& e : cfg.entities) declared.insert(e.name);
    for (const auto& e : cfg.entities) {
      if (!e.parent.empty() && declared.count(e.parent) == 0) {
        fail_at(e.parent_where, prefix + "entities." + e.name + ".parent", e.parent,
                "parent is not declared under entities (add '" + e.parent + ": {}' there)");
      }
    }
    for (const auto& r : cfg.parent_rules) {
      if (declared.count(r.parent) == 0) {
        fail_at(r.where, r.path, r.parent,
                "parent is not declared under entities (add '" + r.parent + ": {}' there)");
      }
    }
  }

  static void check_cycles(const NamespaceConfig& cfg, const std::string& prefix) {
    std::map<std::string_view, std::string_view> parent;
    for (const auto& e : cfg.entities) parent[e.name] = e.parent;
    for (const auto& e : cfg.entities) {
      std::string chain = e.name;
      std::string_view p = e.parent;
      for (std::size_t steps = 0; !p.empty() && steps <= cfg.entities.size(); ++steps) {
        chain += " -> " + std::string(p);
        if (p == e.name) {
          fail_at(e.parent_where, prefix + "entities." + e.name + ".parent", e.parent,
                  "parent chain is a cycle: " + chain);
        }
        const auto it = parent.find(p);
        p = it == parent.end() ? std::string_view{} : it->second;
      }
    }
  }

  bool with_state_;
};

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ValidationError("config", path, ec ? ec.message() : "not a readable file");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in)
    throw ValidationError("config", path, std::string("cannot read: ") + std::strerror(errno));
  return text.str();
}

// ---- writing: each limit in the schema's own form ----

void emit_limit(YAML::Emitter& out, const Limit& l, const std::string& path) {
  out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << l.name();
  switch (l.kind()) {
    case LimitKind::rate: {
      const auto u = std::find_if(std::begin(kPerUnits), std::end(kPerUnits),
                                  [&](const PerUnit& p) { return p.period == l.refill_period(); });
      if (l.unlimited()) {
        out << YAML::Key << "per" << YAML::Value << "minute" << YAML::Key << "limit" << YAML::Value
            << 0;
      } else if (u != std::end(kPerUnits)) {
        out << YAML::Key << "per" << YAML::Value << std::string(u->name) << YAML::Key << "limit"
            << YAML::Value << l.refill_amount();
        if (l.capacity() != l.refill_amount()) {
          out << YAML::Key << "burst" << YAML::Value << l.capacity();
        }
      } else if (l.refill_period() % 1000 == 0) {
        out << YAML::Key << "period_ms" << YAML::Value << l.refill_period() / 1000 << YAML::Key
            << "capacity" << YAML::Value << l.capacity() << YAML::Key << "refill" << YAML::Value
            << l.refill_amount();
      } else {
        throw ValidationError(path, l.describe(),
                              "has no form in the YAML schema: its refill period is not a whole "
                              "number of milliseconds");
      }
      break;
    }
    case LimitKind::window: {
      const WindowSpec& w = l.window_spec();
      out << YAML::Key << "window" << YAML::Value << std::string(to_string(w.unit)) << YAML::Key
          << "limit" << YAML::Value << l.capacity() << YAML::Key << "reset_at" << YAML::Value
          << YAML::DoubleQuoted << w.reset_at << YAML::Key << "time_zone" << YAML::Value
          << w.time_zone;
      break;
    }
    case LimitKind::concurrency:
      out << YAML::Key << "concurrency" << YAML::Value << l.capacity();
      break;
    case LimitKind::adaptive: {
      const AimdOptions& o = l.aimd_options();
      out << YAML::Key << "adaptive" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
          << "max_rate" << YAML::Value << o.max_rate << YAML::Key << "initial_rate" << YAML::Value
          << o.initial_rate << YAML::Key << "min_rate" << YAML::Value << o.min_rate << YAML::Key
          << "additive_increase" << YAML::Value << o.additive_increase << YAML::Key
          << "multiplicative_decrease" << YAML::Value << o.multiplicative_decrease;
      if (o.slow_start_threshold) {
        out << YAML::Key << "slow_start_threshold" << YAML::Value << *o.slow_start_threshold;
      }
      out << YAML::EndMap << YAML::Key << "burst" << YAML::Value << l.capacity();
      break;
    }
  }
  if (l.shadow()) out << YAML::Key << "shadow" << YAML::Value << true;
  out << YAML::EndMap;
}

void emit_limits(YAML::Emitter& out, const LimitList& limits, const std::string& path) {
  if (limits.empty()) out << YAML::Flow;  // `[]` on the key's line
  out << YAML::BeginSeq;
  for (std::size_t i = 0; i < limits.size(); ++i) {
    emit_limit(out, limits[i], path + "[" + std::to_string(i) + "]");
  }
  out << YAML::EndSeq;
}

void emit_state(YAML::Emitter& out, const UsageState& state) {
  auto key = [&out](const auto& r, LimitKind kind) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "entity" << YAML::Value << r.entity
        << YAML::Key << "resource" << YAML::Value << r.resource << YAML::Key << "limit"
        << YAML::Value << r.limit << YAML::Key << "kind" << YAML::Value
        << std::string(to_string(kind));
  };
  out << YAML::BeginSeq;
  for (const StateRow& r : state.rows) {
    key(r, r.kind);
    if (r.kind == LimitKind::window) {
      out << YAML::Key << "window_end_us" << YAML::Value << r.a << YAML::Key << "used"
          << YAML::Value << r.b;
    } else {
      out << YAML::Key << "tat_us" << YAML::Value << r.a << YAML::Key << "tat_rem" << YAML::Value
          << r.b;
    }
    out << YAML::EndMap;
  }
  for (const HoldRow& h : state.holds) {
    key(h, LimitKind::concurrency);
    out << YAML::Key << "lease" << YAML::Value << h.lease << YAML::Key << "amount" << YAML::Value
        << h.amount << YAML::Key << "expiry_us" << YAML::Value << h.expiry << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

}  // namespace

std::vector<const NamespaceConfig*> Config::namespaces() const {
  std::vector<const NamespaceConfig*> out{this};
  for (const NamespaceConfig& n : more) out.push_back(&n);
  return out;
}

Config parse_config(const std::string& yaml, const std::string& source) {
  return Parser(source, false).run(yaml);
}

Config load_config(const std::string& path) { return parse_config(read_file(path), path); }

Config parse_state_file(const std::string& yaml, const std::string& source) {
  return Parser(source, true).run(yaml);
}

Config load_state_file(const std::string& path) { return parse_state_file(read_file(path), path); }

std::string format_state_file(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "namespace" << YAML::Value << config.ns;
  if (!config.defaults.empty()) {
    out << YAML::Key << "defaults" << YAML::Value;
    emit_limits(out, config.defaults, "defaults");
  }
  if (!config.resources.empty()) {
    out << YAML::Key << "resources" << YAML::Value << YAML::BeginMap;
    for (const auto& [resource, limits] : config.resources) {
      out << YAML::Key << resource << YAML::Value;
      emit_limits(out, limits, "resources." + resource);
    }
    out << YAML::EndMap;
  }
  if (!config.entities.empty()) {
    out << YAML::Key << "entities" << YAML::Value << YAML::BeginMap;
    for (const EntityConfig& e : config.entities) {
      const std::string path = "entities." + e.name;
      out << YAML::Key << e.name << YAML::Value << YAML::BeginMap;
      if (!e.parent.empty()) out << YAML::Key << "parent" << YAML::Value << e.parent;
      if (e.defaults) {
        out << YAML::Key << "defaults" << YAML::Value;
        emit_limits(out, *e.defaults, path + ".defaults");
      }
      if (!e.limits.empty()) {
        out << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
        for (const auto& [resource, limits] : e.limits) {
          out << YAML::Key << resource << YAML::Value;
          emit_limits(out, limits, path + ".limits." + resource);
        }
        out << YAML::EndMap;
      }
      out << YAML::EndMap;
    }
    // A parent with nothing of its own (a store keeps only the link) is declared, as the
    // schema requires.
    std::set<std::string_view> declared;
    for (const EntityConfig& e : config.entities) declared.insert(e.name);
    for (const EntityConfig& e : config.entities) {
      if (!e.parent.empty() && declared.insert(e.parent).second) {
        out << YAML::Key << e.parent << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::EndMap;
      }
    }
    out << YAML::EndMap;
  }
  // parent_rules, then default_parent (the last rule, its path "default_parent").
  const ParentRuleConfig* default_parent = nullptr;
  bool listed = false;
  for (const ParentRuleConfig& r : config.parent_rules) {
    if (r.path.ends_with("default_parent")) {
      default_parent = &r;
      continue;
    }
    if (!listed) out << YAML::Key << "parent_rules" << YAML::Value << YAML::BeginSeq;
    listed = true;
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "match" << YAML::Value << YAML::DoubleQuoted
        << r.match << YAML::Key << "parent" << YAML::Value << r.parent << YAML::EndMap;
  }
  if (listed) out << YAML::EndSeq;
  if (default_parent != nullptr) {
    out << YAML::Key << "default_parent" << YAML::Value << default_parent->parent;
  }
  if (!config.state.rows.empty() || !config.state.holds.empty()) {
    out << YAML::Key << "state" << YAML::Value;
    emit_state(out, config.state);
  }
  out << YAML::EndMap;
  if (!out.good()) throw std::logic_error("format_state_file: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

namespace {

// A parsed configuration as the Limiter's resolution reads it (admit::detail::ConfigView).
struct ConfigFileView {
  const NamespaceConfig& c;

  admit::detail::EntityLevels entity(std::string_view name, std::string_view res) const {
    const auto e = std::find_if(c.entities.begin(), c.entities.end(),
                                [&](const EntityConfig& x) { return x.name == name; });
    if (e == c.entities.end()) return {};
    admit::detail::EntityLevels out;
    for (const auto& [r, limits] : e->limits) {
      if (r == res) {
        out.limits = &limits;
        break;
      }
    }
    if (e->defaults) out.defaults = &*e->defaults;
    return out;
  }
  const LimitList* resource(std::string_view res) const {
    for (const auto& [r, limits] : c.resources) {
      if (r == res) return &limits;
    }
    return nullptr;
  }
  const LimitList* system() const { return c.defaults.empty() ? nullptr : &c.defaults; }
};

}  // namespace

const LimitList& resolve_limits(const NamespaceConfig& config, std::string_view entity,
                                std::string_view resource) {
  const auto r = admit::detail::resolve_limits(ConfigFileView{config}, entity, resource);
  return r.limits != nullptr ? *r.limits : config.defaults;  // none: the (empty) defaults
}

std::vector<ParentRule> limiter_parent_rules(const NamespaceConfig& config) {
  std::vector<ParentRule> out;
  if (config.parent_rules.empty()) return out;
  // Declared entities first, with no parent: the rules are for the others.
  for (const EntityConfig& e : config.entities) {
    std::string literal;
    for (const char c : e.name) {
      if (c == '*' || c == '?' || c == '\\') literal += '\\';
      literal += c;
    }
    out.push_back(ParentRule{std::move(literal), ""});
  }
  for (const ParentRuleConfig& r : config.parent_rules)
    out.push_back(ParentRule{r.match, r.parent});
  return out;
}

void apply_config(const NamespaceConfig& config, Limiter& limiter) {
  if (limiter.options().ns != config.ns) {
    throw ValidationError("namespace", config.ns,
                          "the limiter was built for namespace '" + limiter.options().ns + "'");
  }

  limiter.set_default_limits(config.defaults);
  for (const auto& [resource, limits] : config.resources) limiter.set_limits(resource, limits);
  for (const auto& e : config.entities) {
    if (e.defaults) limiter.set_entity_default_limits(e.name, *e.defaults);
    for (const auto& [resource, limits] : e.limits)
      limiter.set_entity_limits(e.name, resource, limits);
  }
  // The parent rules before the links: every entity this file declares is exempt from them,
  // so the links already there (those a reload keeps, apply_config_change) and each one made
  // below give chains that are parts of the final ones, never a cycle the file does not have.
  try {
    limiter.set_parent_rules(limiter_parent_rules(config));
  } catch (const ValidationError& x) {
    const auto r = std::find_if(config.parent_rules.begin(), config.parent_rules.end(),
                                [&](const ParentRuleConfig& c) { return c.match == x.value(); });
    if (r == config.parent_rules.end()) throw;
    fail_at(r->where, r->path, r->parent, x.reason());
  }
  // Parents root-first (an entity's parent linked before it), so a chain deeper than
  // max_parent_depth is refused by Limiter::set_parent at the link of the entity whose
  // ancestors it counts, and reported there.
  std::map<std::string_view, const EntityConfig*> by_name;
  for (const auto& e : config.entities) by_name[e.name] = &e;
  std::set<std::string_view> linked;
  std::vector<const EntityConfig*> pending;  // an entity, then the ancestors to link first
  for (const auto& leaf : config.entities) {
    for (const EntityConfig* e = &leaf; e != nullptr && linked.insert(e->name).second;) {
      pending.push_back(e);
      const auto p = by_name.find(e->parent);
      e = p == by_name.end() ? nullptr : p->second;
    }
    for (; !pending.empty(); pending.pop_back()) {
      const EntityConfig& e = *pending.back();
      if (e.parent.empty()) continue;
      try {
        limiter.set_parent(e.name, e.parent);
      } catch (const ValidationError& x) {
        fail_at(e.parent_where, "entities." + e.name + ".parent", e.parent, x.reason());
      }
    }
  }
}

}  // namespace admit::service
