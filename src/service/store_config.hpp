// admitd's `store:` section: which Store the Limiter runs on (memory, a SQLite file, a Redis
// server or cluster), what happens while it cannot be reached (GuardedStore's policies) and
// where the limits live (ConfigMode) and what is learned (AdaptationMode). Parsed with the rest of
// the config file; open_store() builds the store it describes.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <memory>
#include <string>

#include "admit/core/time.hpp"
#include "admit/limiter.hpp"
#include "admit/store/guarded_store.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/redis_store.hpp"
#include "admit/store/sqlite_store.hpp"
#include "admit/store/store.hpp"

namespace admit::service {

enum class StoreKind { memory, sqlite, redis };

/// A parsed `store:` section (the default is the in-memory store).
struct StoreConfig {
  StoreKind kind = StoreKind::memory;
  std::string url = "memory";  ///< as written, password removed (for logs)
  MemoryStoreOptions memory;   ///< kind memory (`max_keys`)
  SqliteStoreOptions sqlite;   ///< kind sqlite
  RedisStoreOptions redis;     ///< kind redis
  /// sqlite, redis: the unavailable policy (fail_closed unless `unavailable:` says otherwise).
  GuardedStoreOptions guard;
  ConfigMode config = ConfigMode::local;      ///< `limits: local | store`
  Micros config_ttl = 60 * kMicrosPerSecond;  ///< `limits_ttl_ms`
  /// Where learned limits and AIMD rates live: `adaptation: auto | local | store`
  /// (LimiterOptions::adaptation; auto shares them on sqlite per_op and redis).
  AdaptationMode adaptation = AdaptationMode::automatic;
  Micros adaptation_refresh = kMicrosPerSecond;   ///< `adaptation_refresh_ms`
  Micros adaptation_ttl = 10 * kMicrosPerMinute;  ///< `adaptation_ttl_ms`
  /// memory, sqlite: how often admitd prunes idle keys and expired lease records
  /// (`prune_interval_ms`; 0: only as the store grows). Redis expires its keys by itself.
  std::chrono::milliseconds prune_interval{10'000};
};

/**
 * Reads a `store:` value: a URL string (`memory`, `sqlite:PATH`, `redis://...`,
 * `redis+cluster://host:port,host:port`, over TLS `rediss://...` and `rediss+cluster://...`
 * with the TLS files as URL parameters: redis::parse_url) or a mapping with `url` and the
 * options (see docs/admitd.md). `source` names the file in messages.
 * @throws ValidationError naming the YAML path and file:line:col.
 */
StoreConfig parse_store_config(const YAML::Node& node, const std::string& source);

/// The store a StoreConfig describes, with the GuardedStore around it when it is remote.
class OpenStore {
 public:
  explicit OpenStore(const StoreConfig& config);
  ~OpenStore();
  OpenStore(const OpenStore&) = delete;
  OpenStore& operator=(const OpenStore&) = delete;

  /// What the Limiter uses.
  Store& store() const { return *top_; }
  /// "memory", "sqlite:/var/lib/admit.db (per_op, fail_closed)", "redis://host:6379/0 (...)".
  const std::string& describe() const { return description_; }
  /// The GuardedStore around a SQLite or Redis store (its stats, degraded()); null for memory.
  const GuardedStore* guard() const { return guard_.get(); }
  /// The in-memory store (its live keys and key-cap refusals); null for SQLite and Redis.
  const MemoryStore* memory() const { return memory_; }

 private:
  std::unique_ptr<Store> primary_;
  std::unique_ptr<GuardedStore> guard_;
  Store* top_ = nullptr;
  const MemoryStore* memory_ = nullptr;
  std::string description_;
};

}  // namespace admit::service
