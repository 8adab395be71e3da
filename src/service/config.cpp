#include "service/config.hpp"

#include <yaml-cpp/yaml.h>

#include "common/yaml_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>

#include "admit/core/error.hpp"
#include "admit/limiter.hpp"

namespace admit::service {

namespace {

using detail::fail_at;
using detail::join;
using detail::show;
using detail::where;

class Parser : detail::YamlReader {
 public:
  explicit Parser(std::string source) : YamlReader(std::move(source), "config") {}

  Config run(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      fail_at(where(source_, e.mark), "config", source_, "YAML syntax error: " + e.msg);
    }
    if (!root.IsMap()) {
      fail(root, "config", source_,
           "expected a mapping with namespace, defaults, resources and entities");
    }
    Config cfg;
    cfg.source = source_;
    for (const Entry& e : entries(root, "")) {
      if (e.key == "namespace") {
        cfg.ns = name(e.value, "namespace", "namespace");
      } else if (e.key == "defaults") {
        cfg.defaults = limits(e.value, "defaults");
      } else if (e.key == "resources") {
        for (const Entry& r : entries(e.value, "resources")) {
          const std::string path = "resources." + r.key;
          check_name(r.key_node, path, "resource", r.key);
          cfg.resources.emplace_back(r.key, limits(r.value, path));
        }
      } else if (e.key == "entities") {
        for (const Entry& en : entries(e.value, "entities")) {
          cfg.entities.push_back(entity(en));
        }
      } else {
        fail(e.key_node, e.key, e.key,
             "unknown key (expected namespace, defaults, resources or entities)");
      }
    }
    check_cycles(cfg);
    return cfg;
  }

 private:
  std::string string(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a string");
    return n.Scalar();
  }

  std::string name(const YAML::Node& n, const std::string& path, std::string_view field) const {
    std::string s = string(n, path);
    check_name(n, path, field, s);
    return s;
  }

  std::int64_t integer(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a non-negative integer");
    const std::string& s = n.Scalar();
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

  Limit limit(const YAML::Node& n, const std::string& path) const {
    static constexpr std::string_view kKinds[] = {"per", "period_ms", "window", "concurrency"};
    static const std::map<std::string_view, std::vector<std::string_view>> kAllowed = {
        {"per", {"name", "per", "limit", "burst"}},
        {"period_ms", {"name", "period_ms", "capacity", "refill"}},
        {"window", {"name", "window", "limit", "reset_at", "time_zone"}},
        {"concurrency", {"name", "concurrency"}},
    };
    const std::vector<Entry> es = entries(n, path);
    auto find = [&](std::string_view k) -> const Entry* {
      for (const Entry& e : es) {
        if (e.key == k) return &e;
      }
      return nullptr;
    };
    const Entry* kind = nullptr;
    for (const std::string_view k : kKinds) {
      const Entry* e = find(k);
      if (e == nullptr) continue;
      if (kind != nullptr) {
        fail(e->key_node, join(path, e->key), e->key,
             "conflicts with '" + kind->key +
                 "' (a limit has exactly one of per, period_ms, window, concurrency)");
      }
      kind = e;
    }
    if (kind == nullptr) {
      fail(n, path, show(n), "a limit needs one of per, period_ms, window or concurrency");
    }
    const auto& allowed = kAllowed.at(kind->key);
    for (const Entry& e : es) {
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
        fail(n, join(path, std::string(k)), "",
             "missing (required with '" + kind->key + "')");
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
    const std::string kpath = join(path, kind->key);
    // The library validates the rest; its errors are mapped back to the YAML key below.
    try {
      if (kind->key == "per") {
        const std::string unit = string(kind->value, kpath);
        const std::int64_t lim = integer(need("limit").value, join(path, "limit"));
        const std::int64_t burst = int_of("burst", 0);
        if (unit == "second") return Limit::per_second(lname, lim, burst);
        if (unit == "minute") return Limit::per_minute(lname, lim, burst);
        if (unit == "hour") return Limit::per_hour(lname, lim, burst);
        if (unit == "day") return Limit::per_day(lname, lim, burst);
        fail(kind->value, kpath, unit, "expected second, minute, hour or day");
      }
      if (kind->key == "period_ms") {
        const std::int64_t ms = integer(kind->value, kpath);
        if (ms > kMaxExact / 1000) fail(kind->value, kpath, std::to_string(ms), "too large");
        const std::int64_t cap = integer(need("capacity").value, join(path, "capacity"));
        const std::int64_t refill = integer(need("refill").value, join(path, "refill"));
        return Limit::custom(lname, cap, refill, std::chrono::milliseconds(ms));
      }
      if (kind->key == "window") {
        static const std::map<std::string, WindowUnit, std::less<>> kUnits = {
            {"minute", WindowUnit::minute}, {"hour", WindowUnit::hour},
            {"day", WindowUnit::day},       {"week", WindowUnit::week},
            {"month", WindowUnit::month}};
        const std::string unit = string(kind->value, kpath);
        const auto u = kUnits.find(unit);
        if (u == kUnits.end()) {
          fail(kind->value, kpath, unit, "expected minute, hour, day, week or month");
        }
        const std::int64_t lim = integer(need("limit").value, join(path, "limit"));
        return Limit::window(lname, lim,
                             WindowSpec{u->second, str_of("reset_at", "00:00"),
                                        str_of("time_zone", "UTC")});
      }
      return Limit::concurrency(lname, integer(kind->value, kpath));
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
    return {};
  }

  EntityConfig entity(const Entry& en) const {
    const std::string path = "entities." + en.key;
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
        if (out.parent == out.name) fail(e.value, p, out.parent, "an entity cannot be its own parent");
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

  static void check_cycles(const Config& cfg) {
    std::map<std::string_view, std::string_view> parent;
    for (const auto& e : cfg.entities) parent[e.name] = e.parent;
    for (const auto& e : cfg.entities) {
      std::string chain = e.name;
      std::string_view p = e.parent;
      for (std::size_t steps = 0; !p.empty() && steps <= cfg.entities.size(); ++steps) {
        chain += " -> " + std::string(p);
        if (p == e.name) {
          fail_at(e.parent_where, "entities." + e.name + ".parent", e.parent,
                  "parent chain is a cycle: " + chain);
        }
        const auto it = parent.find(p);
        p = it == parent.end() ? std::string_view{} : it->second;
      }
    }
  }

};

}  // namespace

Config parse_config(const std::string& yaml, const std::string& source) {
  return Parser(source).run(yaml);
}

Config load_config(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ValidationError("config", path, ec ? ec.message() : "not a readable file");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) throw ValidationError("config", path, std::string("cannot read: ") + std::strerror(errno));
  return parse_config(text.str(), path);
}

void apply_config(const Config& config, Limiter& limiter) {
  if (limiter.options().ns != config.ns) {
    throw ValidationError("namespace", config.ns,
                          "the limiter was built for namespace '" + limiter.options().ns +
                              "' (" + config.source + ")");
  }
  // The whole chain must fit max_parent_depth: Limiter::set_parent only sees the ancestors
  // of the new parent, not the entities already below `entity`.
  std::map<std::string_view, std::string_view> parent;
  for (const auto& e : config.entities) parent[e.name] = e.parent;
  for (const auto& e : config.entities) {
    int depth = 0;
    for (std::string_view p = e.parent; !p.empty(); ++depth) {
      const auto it = parent.find(p);
      p = it == parent.end() ? std::string_view{} : it->second;
    }
    if (depth > limiter.options().max_parent_depth) {
      fail_at(e.parent_where, "entities." + e.name + ".parent", e.parent,
              "ancestor chain of " + std::to_string(depth) + " is deeper than max_parent_depth " +
                  std::to_string(limiter.options().max_parent_depth));
    }
  }

  limiter.set_default_limits(config.defaults);
  for (const auto& [resource, limits] : config.resources) limiter.set_limits(resource, limits);
  for (const auto& e : config.entities) {
    if (e.defaults) limiter.set_entity_default_limits(e.name, *e.defaults);
    for (const auto& [resource, limits] : e.limits) limiter.set_entity_limits(e.name, resource, limits);
  }
  for (const auto& e : config.entities) {
    if (e.parent.empty()) continue;
    try {
      limiter.set_parent(e.name, e.parent);
    } catch (const ValidationError& x) {
      fail_at(e.parent_where, "entities." + e.name + ".parent", e.parent, x.reason());
    }
  }
}

}  // namespace admit::service
