// Limit resolution, written once: which configured limit set applies to (entity, resource).
// Most specific first: the entity's limits for the resource, else the entity's defaults, else
// the resource's limits, else the system defaults. Every view of a configuration resolves
// through resolve_limits(): the Limiter's snapshot (its own configuration, or the chain it
// built from the store's entries, config_snapshot.hpp) and admitd's parsed YAML
// (service::resolve_limits). Discovered limits are applied on top by the Limiter
// (config_snapshot.hpp: resolve_in).
#pragma once

#include <concepts>
#include <string_view>
#include <vector>

#include "admit/core/decision.hpp"
#include "admit/core/limit.hpp"

namespace admit::detail {

/// The entity's two levels of a configuration: each the limit set configured there, or nullptr.
struct EntityLevels {
  const std::vector<Limit>* limits = nullptr;    ///< the entity's own, for the resource
  const std::vector<Limit>* defaults = nullptr;  ///< the entity's, for every other resource
};

/// A configuration as resolve_limits() reads it: each level's limit set, nullptr if it has none.
/// An empty set at a level counts as configured (it applies: no limits), except the system's.
template <class V>
concept ConfigView = requires(const V& v, std::string_view entity, std::string_view resource) {
  { v.entity(entity, resource) } -> std::same_as<EntityLevels>;
  { v.resource(resource) } -> std::same_as<const std::vector<Limit>*>;
  { v.system() } -> std::same_as<const std::vector<Limit>*>;  // nullptr when empty
};

/// The configured limit set that applies and the level it came from; limits is nullptr when
/// no level has one.
struct ResolvedLimits {
  const std::vector<Limit>* limits = nullptr;
  ConfigSource source = ConfigSource::system;
};

template <ConfigView V>
ResolvedLimits resolve_limits(const V& view, std::string_view entity, std::string_view resource) {
  const EntityLevels e = view.entity(entity, resource);
  if (e.limits != nullptr) return {e.limits, ConfigSource::entity};
  if (e.defaults != nullptr) return {e.defaults, ConfigSource::entity_default};
  if (const auto* r = view.resource(resource)) return {r, ConfigSource::resource};
  if (const auto* s = view.system()) return {s, ConfigSource::system};
  return {};
}

}  // namespace admit::detail
