#include "service/reload.hpp"

#include <boost/json.hpp>
#include <exception>
#include <set>
#include <string_view>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"
#include "admit/limiter.hpp"
#include "admit/store/audit.hpp"
#include "common/log.hpp"

namespace admit::service {

namespace {

bool same_store(const StoreConfig& a, const StoreConfig& b) {
  return a.kind == b.kind && a.url == b.url && a.sqlite.path == b.sqlite.path &&
         a.sqlite.durability == b.sqlite.durability && a.redis.prefix == b.redis.prefix &&
         a.redis.client.password == b.redis.client.password &&
         a.redis.client.username == b.redis.client.username &&
         a.redis.client.tls == b.redis.client.tls && a.guard.policy == b.guard.policy &&
         a.guard.fleet_size == b.guard.fleet_size && a.config == b.config &&
         a.config_ttl == b.config_ttl && a.adaptation == b.adaptation &&
         a.adaptation_refresh == b.adaptation_refresh && a.adaptation_ttl == b.adaptation_ttl;
}

bool same_tokens(const std::vector<TokenConfig>& a, const std::vector<TokenConfig>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].token != b[i].token || a[i].scope != b[i].scope ||
        a[i].namespaces != b[i].namespaces || a[i].name != b[i].name) {
      return false;
    }
  }
  return true;
}

const EntityConfig* find_entity(const NamespaceConfig& c, std::string_view name) {
  for (const EntityConfig& e : c.entities) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace

std::string restart_needed(const Config& current, const Config& next) {
  const auto names = [](const Config& c) {
    std::string out;
    for (const NamespaceConfig* n : c.namespaces())
      out += (out.empty() ? "'" : ", '") + n->ns + "'";
    return out;
  };
  if (names(current) != names(next)) {
    return "the namespaces changed (" + names(current) + " -> " + names(next) + ")";
  }
  if (!same_store(current.store, next.store)) return "the store section changed";
  if (!same_tokens(current.tokens, next.tokens)) return "the auth section changed";
  if (current.http.allowed_origins != next.http.allowed_origins ||
      current.http.allowed_hosts != next.http.allowed_hosts) {
    return "the http section changed";
  }
  if (current.gateway != next.gateway) return "the gateway section changed";
  return {};
}

void apply_config_change(const NamespaceConfig& current, const NamespaceConfig& next,
                         Limiter& limiter) {
  std::set<std::string_view> resources;
  for (const auto& r : next.resources) resources.insert(r.first);
  for (const auto& r : current.resources) {
    if (!resources.contains(r.first)) limiter.remove_limits(r.first);
  }
  for (const EntityConfig& old : current.entities) {
    const EntityConfig* now = find_entity(next, old.name);
    for (const auto& [resource, limits] : old.limits) {
      bool kept = false;
      if (now != nullptr) {
        for (const auto& r : now->limits) kept = kept || r.first == resource;
      }
      if (!kept) limiter.remove_entity_limits(old.name, resource);
    }
    if (old.defaults && (now == nullptr || !now->defaults)) {
      limiter.remove_entity_default_limits(old.name);
    }
    if (!old.parent.empty() && (now == nullptr || now->parent != old.parent)) {
      limiter.set_parent(old.name, "");  // unlinked first: the new links are made root-first
    }
  }
  apply_config(next, limiter);
}

Reloader::Reloader(std::string path, Config current, Limiter& limiter, Applied on_applied)
    : Reloader(std::move(path), std::move(current), std::vector<Limiter*>{&limiter},
               std::move(on_applied)) {}

Reloader::Reloader(std::string path, Config current, std::vector<Limiter*> limiters,
                   Applied on_applied)
    : path_(std::move(path)),
      limiters_(std::move(limiters)),
      on_applied_(std::move(on_applied)),
      current_(std::move(current)) {}

std::string audit_summary(const NamespaceConfig& ns) {
  for (const bool with_limits : {true, false}) {
    boost::json::object resources;
    boost::json::array names;
    for (const auto& [name, limits] : ns.resources) {
      if (with_limits) {
        resources[name] = boost::json::parse(encode_limits(limits));
      } else {
        names.push_back(boost::json::string(name));
      }
    }
    boost::json::array entities;
    for (const EntityConfig& e : ns.entities) entities.push_back(boost::json::string(e.name));
    boost::json::object o;
    if (with_limits) {
      o["resources"] = std::move(resources);
    } else {
      o["resource_names"] = std::move(names);
    }
    o["entities"] = std::move(entities);
    o["parent_rules"] = ns.parent_rules.size();
    std::string text = boost::json::serialize(o);
    if (text.size() <= kAuditMaxStateBytes) return text;
  }
  return "{\"truncated\":true}";
}

ReloadResult Reloader::reload(std::string_view principal) {
  std::lock_guard g(mu_);
  ReloadResult r;
  try {
    Config next = load_config(path_);
    if (std::string why = restart_needed(current_, next); !why.empty()) {
      r.message = why + ": restart admitd to apply it; still serving the previous config";
    } else {
      const std::vector<const NamespaceConfig*> before = current_.namespaces();
      const std::vector<const NamespaceConfig*> after = next.namespaces();
      std::size_t resources = 0;
      std::size_t entities = 0;
      for (std::size_t i = 0; i < after.size(); ++i) {
        apply_config_change(*before[i], *after[i], *limiters_[i]);
        resources += after[i]->resources.size();
        entities += after[i]->entities.size();
      }
      r.applied = true;
      r.message = std::to_string(resources) + " resources, " + std::to_string(entities) +
                  " entities" +
                  (after.size() > 1 ? " in " + std::to_string(after.size()) + " namespaces" : "");
      for (std::size_t i = 0; i < after.size(); ++i) {
        AuditEvent e;
        e.principal = principal.empty() ? "config:" + path_ : std::string(principal);
        e.action = std::string(to_string(AuditAction::config_reloaded));
        e.before = audit_summary(*before[i]);
        e.after = audit_summary(*after[i]);
        try {
          (void)limiters_[i]->audit(std::move(e));
        } catch (const std::exception& x) {
          log::json_line(log::Level::error, boost::json::object{{"msg", "audit event not written"},
                                                                {"action", "config_reloaded"},
                                                                {"namespace", after[i]->ns},
                                                                {"error", x.what()}});
        }
      }
      current_ = std::move(next);
      if (on_applied_) on_applied_(current_);
    }
  } catch (const std::exception& e) {
    r.message = std::string(e.what()) + "; still serving the previous config";
  }
  log::json_line(
      r.applied ? log::Level::info : log::Level::error,
      boost::json::object{{"msg", r.applied ? "config reloaded" : "config reload refused"},
                          {"config", path_},
                          {"detail", r.message}});
  return r;
}

Config Reloader::current() const {
  std::lock_guard g(mu_);
  return current_;
}

}  // namespace admit::service
