// admitd configuration: a YAML file that sets a Limiter's namespace, system defaults,
// per-resource limits and per-entity overrides and parents. See docs/admitd.md for the schema.
// A state file (admit migrate, docs/migrate.md) is the same schema plus a `state:` list of
// usage records.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/core/limit.hpp"
#include "admit/store/sqlite_store.hpp"
#include "service/auth.hpp"
#include "service/proxy/gateway_config.hpp"
#include "service/request_guard.hpp"
#include "service/store_config.hpp"

namespace admit {
class Limiter;
struct ParentRule;
}  // namespace admit

namespace admit::service {

using LimitList = std::vector<Limit>;

struct EntityConfig {
  std::string name;
  std::string parent;                                     ///< empty: no parent
  std::string parent_where;                               ///< "file:line:col" of `parent`
  std::optional<LimitList> defaults;                      ///< for every other resource
  std::vector<std::pair<std::string, LimitList>> limits;  ///< per resource, in file order
};

/// A parent rule (`parent_rules`, `default_parent`): entities not declared under `entities`
/// whose name matches `match` consume from `parent` too.
struct ParentRuleConfig {
  std::string match;   ///< glob over entity names ('*', '?', '\' escapes: admit::ParentRule)
  std::string parent;  ///< declared under `entities`
  std::string path;    ///< YAML path of `parent` ("parent_rules[0].parent", "default_parent")
  std::string where;   ///< "file:line:col" of `parent`
};

/// A parsed and validated configuration (every Limit is already constructed).
/// A provider profile a namespace takes its resources from (`profiles:`): every model of
/// tier `tier` in the provider's profile file (admit::load_profile_by_name) becomes a resource.
struct ProfileConfig {
  std::string provider;  ///< e.g. "openai"
  std::string tier;      ///< e.g. "tier-1"
  std::string where;     ///< "file:line:col" of the entry
};

/// What one namespace has: its limits, entities and parent rules.
struct NamespaceConfig {
  std::string ns = "default";
  LimitList defaults;
  /// In file order: `resources`, after the models of `profiles` that `resources` does not
  /// list (a resource listed there replaces the profile's limits for that model).
  std::vector<std::pair<std::string, LimitList>> resources;
  std::vector<ProfileConfig> profiles;  ///< `profiles`, in file order (already expanded)
  std::vector<EntityConfig> entities;   ///< in file order
  /// `parent_rules` in file order, then `default_parent` as match "*".
  std::vector<ParentRuleConfig> parent_rules;
};

/// A config file. Its first namespace is the Config itself (the top-level `namespace`,
/// `defaults`, ... or the first entry of `namespaces`); `more` holds the others.
struct Config : NamespaceConfig {
  std::string source;                 ///< file name, for messages
  StoreConfig store;                  ///< `store:`; the in-memory store when absent
  std::vector<NamespaceConfig> more;  ///< `namespaces` after the first, in file order
  UsageState state;  ///< a state file's usage records, in file order (a config file: none)
  std::vector<TokenConfig> tokens;  ///< auth.tokens, ${ENV} substituted (Auth)
  GuardOptions http;                ///< http.allowed_origins, http.allowed_hosts (RequestGuard)
  GatewayConfig gateway;            ///< `gateway:` (the OpenAI-compatible routes)

  /// Every namespace: the first, then `more`.
  std::vector<const NamespaceConfig*> namespaces() const;
};

/**
 * Reads and validates a YAML config file. The file is one YAML document; numbers are plain
 * (`500`, not `"500"`); a parent must be declared under `entities`. `${NAME}` in a string
 * value is replaced by the environment variable NAME (an unset one is an error; `$${` is a
 * literal `${`).
 * @throws ValidationError whose field() is the YAML path (e.g. "resources.gpt-4o[1].per"),
 *         whose value() is the offending value and whose message ends with "(file:line:col)".
 */
Config load_config(const std::string& path);

/// Same, from YAML text; `source` names it in messages.
Config parse_config(const std::string& yaml, const std::string& source);

/**
 * Reads and validates a state file: a config file plus `state:`, a list of usage records, each
 * naming a limit that the configuration gives its (entity, resource) (resolve_limits) and that
 * limit's kind. Errors as load_config's ("state[2].limit", ...).
 */
Config load_state_file(const std::string& path);
/// Same, from YAML text; `source` names it in messages.
Config parse_state_file(const std::string& yaml, const std::string& source);

/**
 * `config` and its usage records as a state file, every limit in the schema's own form
 * ({name, per, limit, burst}, ...), which parse_state_file reads back to the same limits.
 * @throws ValidationError naming a limit the schema cannot express: a rate limit whose refill
 *         period is not a whole number of milliseconds.
 */
std::string format_state_file(const Config& config);

/// The limits `config` gives (entity, resource), most specific first: the entity's limits
/// for the resource, else its defaults, else the resource's limits, else the system defaults.
const LimitList& resolve_limits(const NamespaceConfig& config, std::string_view entity,
                                std::string_view resource);

/**
 * The Limiter's parent rules for `config` (Limiter::set_parent_rules): empty without
 * `parent_rules` and `default_parent`; otherwise one rule giving no parent to each entity
 * declared under `entities` (its name escaped: a declared entity has exactly the parent it
 * declares, or none), then config.parent_rules in order.
 */
std::vector<ParentRule> limiter_parent_rules(const NamespaceConfig& config);

/**
 * Applies `config` to `limiter`, whose namespace must be config.ns (a Limiter's namespace is
 * fixed at construction: build it with LimiterOptions{.ns = config.ns}): the limits, the
 * parent rules (limiter_parent_rules, replacing the limiter's), then the parent links.
 * @throws ValidationError on a namespace mismatch or a parent chain the limiter refuses.
 */
void apply_config(const NamespaceConfig& config, Limiter& limiter);

}  // namespace admit::service
