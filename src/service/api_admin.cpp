// The admin routes: limits at system, resource and entity level and parents (PUT, DELETE),
// and the read-only views of them (resolve) and of usage (stats). Limits travel in the exact
// form the stores keep them in (admit/core/limit_codec.hpp).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"
#include "admit/limiter.hpp"
#include "admit/store/audit.hpp"
#include "service/api_impl.hpp"

namespace admit::service {

namespace {

// Which level a /v1/limits/... path names.
struct Level {
  enum Kind { system, per_resource, per_entity_default, per_entity } kind = system;
  std::string entity;
  std::string resource;
};

Level level_of(const ApiRequest& r) {
  Level l;
  if (r.path == "/v1/limits/system") return l;
  if (r.path.starts_with("/v1/limits/resources/")) {
    l.kind = Level::per_resource;
    l.resource = r.params.at(0);
    validate_name("resource", l.resource);
  } else if (r.params.size() == 2) {
    l.kind = Level::per_entity;
    l.entity = r.params.at(0);
    l.resource = r.params.at(1);
    validate_name("entity", l.entity);
    validate_name("resource", l.resource);
  } else {
    l.kind = Level::per_entity_default;
    l.entity = r.params.at(0);
    validate_name("entity", l.entity);
  }
  return l;
}

/// The limits `limiter` has at level `l` (its own, not inherited), as limit_codec's JSON.
std::string limits_at(const Limiter& limiter, const Level& l) {
  // A level below the resource's is read through a resource that has no limits of its own.
  std::string resource = l.resource;
  if (resource.empty()) {
    const std::vector<std::string> configured = limiter.resources();
    resource = "audit-probe";
    while (std::find(configured.begin(), configured.end(), resource) != configured.end()) {
      resource += "-";
    }
  }
  const ConfigSource want = l.kind == Level::system               ? ConfigSource::system
                            : l.kind == Level::per_resource       ? ConfigSource::resource
                            : l.kind == Level::per_entity_default ? ConfigSource::entity_default
                                                                  : ConfigSource::entity;
  std::vector<Limit> out;
  for (const auto& [limit, source] : limiter.resolve(l.entity, resource)) {
    if (source == want) out.push_back(limit);
  }
  return encode_limits(out);
}

json::object status_object(const LimitStatus& s) {
  json::object o{{"entity", s.entity},
                 {"limit", s.limit},
                 {"kind", std::string(to_string(s.kind))},
                 {"source", std::string(to_string(s.source))},
                 {"capacity", s.capacity},
                 {"available", s.available},
                 {"reset_after_us", s.reset_after}};
  if (s.kind == LimitKind::adaptive) o["rate"] = s.rate;
  if (s.shadow) o["shadow"] = true;
  return o;
}

json::object stats_object(const ResourceStats& rs) {
  json::array limits;
  for (const LimitStatus& s : rs.limits) limits.push_back(status_object(s));
  return json::object{
      {"entity", rs.entity}, {"resource", rs.resource}, {"limits", std::move(limits)}};
}

}  // namespace

Response Api::Impl::resolve(const ApiRequest& r) {
  const std::optional<std::string> entity = query_param(r.query, "entity");
  const std::optional<std::string> resource = query_param(r.query, "resource");
  if (!resource) throw BadRequest{"missing query parameter", "resource", "missing_field"};
  validate_name("resource", *resource);
  if (entity) validate_name("entity", *entity);
  json::array limits;
  for (const auto& [limit, source] : lim(r).resolve(entity.value_or(""), *resource)) {
    limits.push_back(limit_object(limit, source));
  }
  return reply(200, json::object{{"entity", entity.value_or("")},
                                 {"resource", *resource},
                                 {"limits", std::move(limits)}});
}

Response Api::Impl::stats(const ApiRequest& r) {
  const std::optional<std::string> entity = query_param(r.query, "entity");
  const std::optional<std::string> resource = query_param(r.query, "resource");
  if (entity) validate_name("entity", *entity);
  if (resource) validate_name("resource", *resource);
  if (!entity) throw BadRequest{"missing query parameter", "entity", "missing_field"};
  json::array out;
  if (resource) {
    out.push_back(stats_object(lim(r).stats(*entity, *resource)));
  } else {
    for (const ResourceStats& rs : lim(r).all_stats(*entity)) out.push_back(stats_object(rs));
  }
  return reply(200, json::object{{"namespace", lim(r).options().ns}, {"stats", std::move(out)}});
}

Response Api::Impl::put_limits(const ApiRequest& r) {
  const Level l = level_of(r);
  const json::object o = body_of(r);
  only_fields(o, {"limits"});
  const json::value* v = o.if_contains("limits");
  if (v == nullptr) throw BadRequest{"missing field", "limits", "missing_field"};
  if (!v->is_array()) throw BadRequest{"must be an array of limits", "limits", "invalid_type"};
  std::vector<Limit> limits = decode_limits(json::serialize(*v));  // ValidationError -> 400
  const std::string after = encode_limits(limits);
  const json::value echo = json::parse(after);
  const std::string before = limits_at(lim(r), l);
  switch (l.kind) {
    case Level::system:
      lim(r).set_default_limits(std::move(limits));
      break;
    case Level::per_resource:
      lim(r).set_limits(l.resource, std::move(limits));
      break;
    case Level::per_entity_default:
      lim(r).set_entity_default_limits(l.entity, std::move(limits));
      break;
    case Level::per_entity:
      lim(r).set_entity_limits(l.entity, l.resource, std::move(limits));
      break;
  }
  audit(r, AuditAction::limits_set, l.entity, l.resource, before, after);
  return reply(200, json::object{{"entity", l.entity}, {"resource", l.resource}, {"limits", echo}});
}

Response Api::Impl::delete_limits(const ApiRequest& r) {
  const Level l = level_of(r);
  const std::string before = limits_at(lim(r), l);
  switch (l.kind) {
    case Level::system:
      lim(r).set_default_limits({});
      break;
    case Level::per_resource:
      lim(r).remove_limits(l.resource);
      break;
    case Level::per_entity_default:
      lim(r).remove_entity_default_limits(l.entity);
      break;
    case Level::per_entity:
      lim(r).remove_entity_limits(l.entity, l.resource);
      break;
  }
  audit(r, AuditAction::limits_deleted, l.entity, l.resource, before, "");
  return reply(200, json::object{{"entity", l.entity}, {"resource", l.resource}});
}

Response Api::Impl::put_parent(const ApiRequest& r) {
  const std::string& entity = r.params.at(0);
  validate_name("entity", entity);
  const json::object o = body_of(r);
  only_fields(o, {"parent"});
  const json::value* v = o.if_contains("parent");
  if (v == nullptr) throw BadRequest{"missing field", "parent", "missing_field"};
  const std::string parent = name_field(*v, "parent");
  const std::string before = lim(r).parent(entity);
  lim(r).set_parent(entity, parent);  // ValidationError on a cycle or too deep a chain
  audit(r, AuditAction::parent_set, entity, "", json_string(before), json_string(parent));
  return reply(200, json::object{{"entity", entity}, {"parent", parent}});
}

Response Api::Impl::delete_parent(const ApiRequest& r) {
  const std::string& entity = r.params.at(0);
  validate_name("entity", entity);
  const std::string before = lim(r).parent(entity);
  lim(r).set_parent(entity, "");
  audit(r, AuditAction::parent_deleted, entity, "", json_string(before), "");
  return reply(200, json::object{{"entity", entity}, {"parent", nullptr}});
}

}  // namespace admit::service
