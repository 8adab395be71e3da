#include "service/migrate.hpp"

#include <stdlib.h>  // mkstemp (POSIX)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"
#include "admit/store/sqlite_store.hpp"

namespace admit::service {

namespace {

void say(const Progress& progress, const std::string& line) {
  if (progress) progress(line);
}

void count(MigrationSummary& s, const std::vector<ConfigEntry>& entries) {
  for (const ConfigEntry& e : entries) ++(e.kind == ConfigKind::parent ? s.parents : s.limit_sets);
}

bool same_key(const ConfigEntry& a, const ConfigEntry& b) {
  return std::tie(a.kind, a.entity, a.resource) == std::tie(b.kind, b.entity, b.resource);
}

// Whether `config` gives (entity, resource) a limit `name` of `kind`: usage state of anything
// else cannot be written to (or read from) a state file.
bool configured(const Config& config, const std::string& entity, const std::string& resource,
                const std::string& name, LimitKind kind) {
  const LimitList& limits = resolve_limits(config, entity, resource);
  return std::any_of(limits.begin(), limits.end(),
                     [&](const Limit& l) { return l.name() == name && l.kind() == kind; });
}

constexpr const char* kExists = "already exists (force / --force overwrites it)";

// Writes `text` to a temporary file beside `path` (mode 0644), then moves it to `path`:
// renamed over it with `force`, else linked (which fails if `path` appeared meanwhile).
void write_file(const std::string& path, const std::string& text, bool force) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    throw Error("cannot create a file beside '" + path + "': " + std::strerror(errno));
  }
  int err = fchmod(fd, 0644) == 0 ? 0 : errno;
  for (std::size_t done = 0; err == 0 && done < text.size();) {
    const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w > 0) {
      done += static_cast<std::size_t>(w);
    } else if (w == 0 || errno != EINTR) {
      err = w == 0 ? EIO : errno;
    }
  }
  if (err == 0 && fsync(fd) != 0) err = errno;
  if (close(fd) != 0 && err == 0) err = errno;
  if (err == 0 &&
      (force ? rename(tmp.c_str(), path.c_str()) : link(tmp.c_str(), path.c_str())) != 0) {
    err = errno;
  }
  if (err != 0 || !force) unlink(tmp.c_str());  // a rename moved it
  if (err == EEXIST) throw ValidationError("output file", path, kExists);
  if (err != 0) throw Error("cannot write '" + path + "': " + std::strerror(err));
}

}  // namespace

std::vector<ConfigEntry> config_entries(const Config& config) {
  std::vector<ConfigEntry> out;
  if (!config.defaults.empty()) {
    out.push_back({ConfigKind::system, "", "", encode_limits(config.defaults)});
  }
  for (const auto& [resource, limits] : config.resources) {
    out.push_back({ConfigKind::resource, "", resource, encode_limits(limits)});
  }
  for (const EntityConfig& e : config.entities) {
    if (e.defaults)
      out.push_back({ConfigKind::entity_default, e.name, "", encode_limits(*e.defaults)});
    for (const auto& [resource, limits] : e.limits) {
      out.push_back({ConfigKind::entity, e.name, resource, encode_limits(limits)});
    }
    if (!e.parent.empty()) out.push_back({ConfigKind::parent, e.name, "", e.parent});
  }
  std::sort(out.begin(), out.end(), [](const ConfigEntry& a, const ConfigEntry& b) {
    return std::tie(a.kind, a.entity, a.resource) < std::tie(b.kind, b.entity, b.resource);
  });
  return out;
}

Config config_from_entries(const std::vector<ConfigEntry>& entries, const std::string& ns,
                           const std::string& source) {
  Config c;
  c.source = source;
  c.ns = ns;
  auto entity = [&c](const std::string& name) -> EntityConfig& {
    for (EntityConfig& e : c.entities) {
      if (e.name == name) return e;
    }
    EntityConfig& e = c.entities.emplace_back();
    e.name = name;
    e.parent_where = c.source;
    return e;
  };
  for (const ConfigEntry& e : entries) {
    if (e.kind == ConfigKind::parent) {
      entity(e.entity).parent = e.value;
      continue;
    }
    LimitList limits;
    try {
      limits = decode_limits(e.value);
    } catch (const ValidationError& x) {
      const std::string name =
          e.entity + (e.entity.empty() || e.resource.empty() ? "" : "/") + e.resource;
      throw ValidationError(
          "config entry " + std::string(to_string(e.kind)) + (name.empty() ? "" : " " + name),
          e.value.substr(0, 80), std::string(x.what()) + " (" + source + ")");
    }
    switch (e.kind) {
      case ConfigKind::system:
        c.defaults = std::move(limits);
        break;
      case ConfigKind::resource:
        c.resources.emplace_back(e.resource, std::move(limits));
        break;
      case ConfigKind::entity_default:
        entity(e.entity).defaults = std::move(limits);
        break;
      case ConfigKind::entity:
        entity(e.entity).limits.emplace_back(e.resource, std::move(limits));
        break;
      case ConfigKind::parent:
        break;  // above
    }
  }
  std::sort(c.resources.begin(), c.resources.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::sort(c.entities.begin(), c.entities.end(),
            [](const EntityConfig& a, const EntityConfig& b) { return a.name < b.name; });
  for (EntityConfig& e : c.entities) {
    std::sort(e.limits.begin(), e.limits.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  return c;
}

MigrationSummary migrate_yaml_to_sqlite(const std::string& yaml_path, const std::string& db_path,
                                        const Progress& progress) {
  say(progress, "reading " + yaml_path);
  const Config config = load_state_file(yaml_path);
  const std::vector<ConfigEntry> entries = config_entries(config);

  say(progress, "writing " + db_path + " (namespace " + config.ns + ")");
  SqliteStore store(SqliteStoreOptions{.path = db_path});
  const Namespace ns = store.open_namespace(config.ns);
  const std::vector<ConfigEntry> before = store.list_config(ns);
  const auto erased = static_cast<std::size_t>(
      std::count_if(before.begin(), before.end(), [&](const ConfigEntry& old) {
        return std::none_of(entries.begin(), entries.end(),
                            [&](const ConfigEntry& e) { return same_key(e, old); });
      }));
  store.import_state(ns, config.state, &entries);  // one transaction: all of it or nothing
  if (erased > 0) {
    say(progress, "erased " + std::to_string(erased) + " earlier configuration " +
                      (erased == 1 ? "entry" : "entries") + " not in the file");
  }

  MigrationSummary s;
  s.ns = config.ns;
  count(s, entries);
  s.state_rows = config.state.rows.size();
  s.holds = config.state.holds.size();
  return s;
}

MigrationSummary migrate_sqlite_to_yaml(const std::string& db_path, const std::string& yaml_path,
                                        const ExportOptions& options, const Progress& progress) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(db_path, ec)) {
    throw ValidationError("database", db_path, ec ? ec.message() : "no such file");
  }
  if (!options.force && std::filesystem::exists(yaml_path, ec)) {
    throw ValidationError("output file", yaml_path, kExists);
  }
  say(progress, "reading " + db_path + " (namespace " + options.ns + ")");
  SqliteStore store(SqliteStoreOptions{.path = db_path});
  const std::vector<std::string> names = store.namespaces();
  if (std::find(names.begin(), names.end(), options.ns) == names.end()) {
    std::string known;
    for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
    throw ValidationError(
        "namespace", options.ns,
        "is not in " + db_path +
            (known.empty() ? " (it has none)" : " (its namespaces: " + known + ")"));
  }
  const Namespace ns = store.open_namespace(options.ns);
  Config config = config_from_entries(store.list_config(ns), options.ns, db_path);
  UsageState state = store.export_state(ns);

  MigrationSummary s;
  s.ns = options.ns;
  auto skip = [&](const auto& r, LimitKind kind) {
    if (configured(config, r.entity, r.resource, r.limit, kind)) return false;
    ++s.skipped;
    say(progress, "warning: skipped the " + std::string(to_string(kind)) + " state of " + r.entity +
                      " on " + r.resource + ": no configured limit '" + r.limit +
                      "' of that kind applies to it");
    return true;
  };
  std::erase_if(state.rows, [&](const StateRow& r) { return skip(r, r.kind); });
  std::erase_if(state.holds, [&](const HoldRow& h) { return skip(h, LimitKind::concurrency); });
  config.state = std::move(state);

  const std::string text = format_state_file(config);
  (void)parse_state_file(text, "the export of " + db_path);  // what is written imports again
  say(progress, "writing " + yaml_path);
  write_file(yaml_path, text, options.force);

  count(s, config_entries(config));
  s.state_rows = config.state.rows.size();
  s.holds = config.state.holds.size();
  return s;
}

}  // namespace admit::service
