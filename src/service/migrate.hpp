// admit migrate, in process: a YAML state file (docs/migrate.md: admitd's config schema plus
// usage records) into a SqliteStore's configuration and usage state, and back. The store holds
// limits as the Limiter reads them (Store::put_config); see config_entries for the mapping.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "admit/store/store.hpp"
#include "service/config.hpp"

namespace admit::service {

/// What one migration moved.
struct MigrationSummary {
  std::string ns;              ///< the namespace migrated
  std::size_t limit_sets = 0;  ///< configuration entries holding limits (every kind but parent)
  std::size_t parents = 0;     ///< parent entries
  std::size_t state_rows = 0;  ///< rate and window states
  std::size_t holds = 0;       ///< concurrency holds
  /// Export: usage rows left out because no configured limit of their key has their name and
  /// kind (limits removed since, discovered or adaptive ones); each is reported to progress.
  std::size_t skipped = 0;
};

/// Receives progress and warnings, one line at a time (no newline). May be empty.
using Progress = std::function<void(const std::string&)>;

/**
 * Imports the state file `yaml_path` into the SqliteStore file `db_path` (created if missing):
 * the file's namespace then holds exactly the file's configuration and usage state (earlier
 * entries and state of that namespace are replaced; other namespaces are untouched). The file
 * is read and checked completely before the database is opened. The usage state is written in
 * one transaction, each configuration entry in its own.
 * @throws ValidationError for a bad file (its message ends with "(file:line:col)");
 *         IncompatibleSchema for a database of a newer version; StoreUnavailable.
 */
MigrationSummary migrate_yaml_to_sqlite(const std::string& yaml_path, const std::string& db_path,
                                        const Progress& progress = {});

struct ExportOptions {
  std::string ns = "default";  ///< the namespace to export
  bool force = false;          ///< overwrite an existing YAML file
};

/**
 * Exports one namespace of the SqliteStore file `db_path` (which must exist and know the
 * namespace) to the state file `yaml_path`. The text is read back with parse_state_file before
 * it is written (to a temporary file, renamed over `yaml_path`): what is written imports again.
 * @throws ValidationError (no such file or namespace, `yaml_path` exists without force, a limit
 *         or entry the YAML schema cannot express); IncompatibleSchema; StoreUnavailable.
 */
MigrationSummary migrate_sqlite_to_yaml(const std::string& db_path, const std::string& yaml_path,
                                        const ExportOptions& options = {},
                                        const Progress& progress = {});

/**
 * The store configuration of `config`, sorted like Store::list_config: system defaults (if
 * any) -> {system}; each resource -> {resource, "", resource}; an entity's defaults ->
 * {entity_default, entity}; its limits for a resource -> {entity, entity, resource}; limit
 * sets as encode_limits() text; its parent -> {parent, entity} = the parent's name.
 */
std::vector<ConfigEntry> config_entries(const Config& config);

/**
 * The Config those entries describe (config_entries' inverse), namespace `ns`; `source` names
 * the origin in messages. @throws ValidationError naming an entry whose value does not decode.
 */
Config config_from_entries(const std::vector<ConfigEntry>& entries, const std::string& ns,
                           const std::string& source);

}  // namespace admit::service
