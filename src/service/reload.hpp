// Reloading admitd's config while it serves (SIGHUP): the new file is parsed and checked in
// full before anything changes, so a bad file is refused and the old config keeps serving.
// Limits, entities and parents change in place (what the new file no longer has is removed);
// the store, the set of namespaces and the access sections (auth, http) need a restart, and a file
// that changes them is refused with that message.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "service/config.hpp"

namespace admit {
class Limiter;
}

namespace admit::service {

/// What reload() did.
struct ReloadResult {
  bool applied = false;
  std::string message;  ///< why not, or what changed ("3 resources, 2 entities")
};

/**
 * Makes `limiter` follow `next` instead of `current`: removes the resources, entity limits,
 * entity defaults and parent links `current` set and `next` does not, then applies `next`
 * (apply_config). Both must be for the limiter's namespace.
 * @throws ValidationError like apply_config (a parent chain the limiter refuses).
 */
void apply_config_change(const NamespaceConfig& current, const NamespaceConfig& next,
                         Limiter& limiter);

/// Why `next` cannot replace `current` without a restart (store, namespaces, auth or http
/// changed), or empty if it can.
std::string restart_needed(const Config& current, const Config& next);

/// A namespace's config as an audit event's state: {"resources": {name: limits}, "entities":
/// [names], "parent_rules": N}; the limits give way to names alone when that exceeds the
/// audit log's 64 KiB.
std::string audit_summary(const NamespaceConfig& ns);

/// The config file admitd serves, reloadable. Thread-safe (reloads are serialised).
class Reloader {
 public:
  /// Called after a reload was applied, with the new config (e.g. to relabel metrics).
  using Applied = std::function<void(const Config&)>;

  /// `current` is what `limiter` was configured with from `path`; `limiter` must outlive this.
  Reloader(std::string path, Config current, Limiter& limiter, Applied on_applied = {});
  /// Several namespaces: `limiters[i]` serves current.namespaces()[i]; each must outlive this.
  Reloader(std::string path, Config current, std::vector<Limiter*> limiters,
           Applied on_applied = {});

  /// Reads the file again and applies it, or refuses it and keeps the current config; logs a
  /// JSON line either way. An applied reload appends a config_reloaded event to each
  /// namespace's audit log, `principal` its author ("config:PATH" when empty: a SIGHUP), with
  /// a summary of the namespace before and after (audit_summary).
  ReloadResult reload(std::string_view principal = {});

  /// The config in force.
  Config current() const;

 private:
  const std::string path_;
  const std::vector<Limiter*> limiters_;
  const Applied on_applied_;
  mutable std::mutex mu_;
  Config current_;
};

}  // namespace admit::service
