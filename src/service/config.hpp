// admitd configuration: a YAML file that sets a Limiter's namespace, system defaults,
// per-resource limits and per-entity overrides and parents. See docs/admitd.md for the schema.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/limit.hpp"

namespace admit {
class Limiter;
}

namespace admit::service {

using LimitList = std::vector<Limit>;

struct EntityConfig {
  std::string name;
  std::string parent;                                     ///< empty: no parent
  std::string parent_where;                               ///< "file:line:col" of `parent`
  std::optional<LimitList> defaults;                      ///< for every other resource
  std::vector<std::pair<std::string, LimitList>> limits;  ///< per resource, in file order
};

/// A parsed and validated configuration (every Limit is already constructed).
struct Config {
  std::string source;  ///< file name, for messages
  std::string ns = "default";
  LimitList defaults;
  std::vector<std::pair<std::string, LimitList>> resources;  ///< in file order
  std::vector<EntityConfig> entities;                        ///< in file order
};

/**
 * Reads and validates a YAML config file.
 * @throws ValidationError whose field() is the YAML path (e.g. "resources.gpt-4o[1].per"),
 *         whose value() is the offending value and whose message ends with "(file:line:col)".
 */
Config load_config(const std::string& path);

/// Same, from YAML text; `source` names it in messages.
Config parse_config(const std::string& yaml, const std::string& source);

/**
 * Applies `config` to `limiter`, whose namespace must be config.ns (a Limiter's namespace is
 * fixed at construction: build it with LimiterOptions{.ns = config.ns}).
 * @throws ValidationError on a namespace mismatch or a parent chain the limiter refuses.
 */
void apply_config(const Config& config, Limiter& limiter);

}  // namespace admit::service
