#include "service/store_config.hpp"

#include <charconv>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/redis_client.hpp"
#include "common/yaml_reader.hpp"

namespace admit::service {

namespace {

using detail::show;

constexpr std::string_view kSqlite = "sqlite:";

class StoreReader : detail::YamlReader {
 public:
  explicit StoreReader(std::string source) : YamlReader(std::move(source), "store") {}

  StoreConfig run(const YAML::Node& node) {
    StoreConfig c;
    if (node.IsScalar()) {
      set_url(c, node, "store");
      return c;
    }
    const auto es = entries(node, "store");
    bool has_url = false;
    for (const Entry& e : es) {  // the URL first: the other keys depend on its kind
      if (e.key == "url") {
        set_url(c, e.value, "store.url");
        has_url = true;
      }
    }
    if (!has_url)
      fail(node, "store.url", show(node), "missing key (memory, sqlite:PATH, redis://...)");
    const Entry* adaptation_entry = nullptr;  // the last of adaptation_{refresh,ttl}_ms
    for (const Entry& e : es) {
      const std::string path = "store." + e.key;
      if (e.key == "url") continue;
      if (e.key == "durability") {
        only(c, StoreKind::sqlite, e, path);
        const std::string v = scalar(e.value, path);
        if (v == "per_op") {
          c.sqlite.durability = Durability::per_op;
        } else if (v == "write_behind") {
          c.sqlite.durability = Durability::write_behind;
        } else {
          fail(e.value, path, v, "expected per_op or write_behind");
        }
      } else if (e.key == "max_keys") {
        if (c.kind != StoreKind::memory) {
          fail(e.key_node, path, e.key, "applies to the memory store only");
        }
        c.memory.max_keys = static_cast<std::size_t>(integer(e.value, path, 1, 1'000'000'000'000));
      } else if (e.key == "write_behind_ms") {
        only(c, StoreKind::sqlite, e, path);
        c.sqlite.write_behind_interval = integer(e.value, path, 1, 3'600'000) * 1000;
      } else if (e.key == "busy_timeout_ms") {
        only(c, StoreKind::sqlite, e, path);
        c.sqlite.busy_timeout = std::chrono::milliseconds(integer(e.value, path, 0, 3'600'000));
      } else if (e.key == "prefix") {
        only(c, StoreKind::redis, e, path);
        c.redis.prefix = scalar(e.value, path);
      } else if (e.key == "username") {
        only(c, StoreKind::redis, e, path);
        c.redis.client.username = scalar(e.value, path);
      } else if (e.key == "password") {
        only(c, StoreKind::redis, e, path);
        c.redis.client.password = scalar(e.value, path);
      } else if (e.key == "command_timeout_ms") {
        only(c, StoreKind::redis, e, path);
        c.redis.client.command_timeout =
            std::chrono::milliseconds(integer(e.value, path, 1, 600'000));
      } else if (e.key == "connect_timeout_ms") {
        only(c, StoreKind::redis, e, path);
        c.redis.client.connect_timeout =
            std::chrono::milliseconds(integer(e.value, path, 1, 600'000));
      } else if (e.key == "unavailable") {
        if (c.kind == StoreKind::memory)
          fail(e.key_node, path, e.key, "the memory store is always available");
        const std::string v = scalar(e.value, path);
        if (v == "fail_closed") {
          c.guard.policy = UnavailablePolicy::fail_closed;
        } else if (v == "fail_open") {
          c.guard.policy = UnavailablePolicy::fail_open;
        } else if (v == "local_fallback") {
          c.guard.policy = UnavailablePolicy::local_fallback;
        } else {
          fail(e.value, path, v, "expected fail_closed, fail_open or local_fallback");
        }
      } else if (e.key == "fleet_size") {
        if (c.kind == StoreKind::memory)
          fail(e.key_node, path, e.key, "the memory store is not shared");
        c.guard.fleet_size = static_cast<int>(integer(e.value, path, 1, 100'000));
      } else if (e.key == "limits") {
        const std::string v = scalar(e.value, path);
        if (v == "local") {
          c.config = ConfigMode::local;
        } else if (v == "store") {
          c.config = ConfigMode::store;
        } else {
          fail(e.value, path, v, "expected local or store");
        }
      } else if (e.key == "limits_ttl_ms") {
        c.config_ttl = integer(e.value, path, 0, 86'400'000) * 1000;
      } else if (e.key == "adaptation") {
        const std::string v = scalar(e.value, path);
        if (v == "auto") {
          c.adaptation = AdaptationMode::automatic;
        } else if (v == "local") {
          c.adaptation = AdaptationMode::local;
        } else if (v == "store") {
          if (c.kind == StoreKind::memory) {
            fail(e.value, path, v, "the memory store is not shared (sqlite, redis only)");
          }
          c.adaptation = AdaptationMode::store;
        } else {
          fail(e.value, path, v, "expected auto, local or store");
        }
      } else if (e.key == "adaptation_refresh_ms") {
        c.adaptation_refresh = integer(e.value, path, 1, 86'400'000) * 1000;
        adaptation_entry = &e;
      } else if (e.key == "adaptation_ttl_ms") {
        c.adaptation_ttl = integer(e.value, path, 1, 31'536'000'000) * 1000;
        adaptation_entry = &e;
      } else if (e.key == "audit_retention") {
        // The newest N audit events of each namespace are kept (every store keeps its own).
        const auto n = static_cast<std::size_t>(integer(e.value, path, 1, 1'000'000'000));
        c.memory.audit_retention = c.sqlite.audit_retention = c.redis.audit_retention = n;
      } else if (e.key == "prune_interval_ms") {
        if (c.kind == StoreKind::redis) {
          fail(e.key_node, path, e.key, "Redis expires its keys by itself (memory, sqlite only)");
        }
        c.prune_interval = std::chrono::milliseconds(integer(e.value, path, 0, 86'400'000));
      } else {
        fail(e.key_node, path, e.key,
             "unknown key (expected url, max_keys, durability, write_behind_ms, busy_timeout_ms, "
             "prefix, username, password, command_timeout_ms, connect_timeout_ms, unavailable, "
             "fleet_size, limits, limits_ttl_ms, adaptation, adaptation_refresh_ms, "
             "adaptation_ttl_ms, audit_retention or prune_interval_ms)");
      }
    }
    if (c.adaptation_ttl < 2 * c.adaptation_refresh) {
      // adaptation_entry: the last of the two keys (one of them was given: the defaults fit)
      fail(adaptation_entry->value, "store." + adaptation_entry->key, show(adaptation_entry->value),
           "adaptation_ttl_ms must be at least 2 * adaptation_refresh_ms");
    }
    return c;
  }

 private:
  void only(const StoreConfig& c, StoreKind kind, const Entry& e, const std::string& path) const {
    if (c.kind != kind) {
      fail(e.key_node, path, e.key,
           std::string("applies to ") + (kind == StoreKind::sqlite ? "sqlite:" : "redis") +
               " stores only");
    }
  }

  void set_url(StoreConfig& c, const YAML::Node& n, const std::string& path) const {
    const std::string url = scalar(n, path);
    try {
      if (url == "memory") {
        c.kind = StoreKind::memory;
        c.url = url;
      } else if (url.starts_with(kSqlite)) {
        c.kind = StoreKind::sqlite;
        c.sqlite.path = url.substr(kSqlite.size());
        if (c.sqlite.path.empty()) fail(n, path, url, "sqlite: needs a file path (sqlite:PATH)");
        c.url = url;
      } else if (url.starts_with("redis://") || url.starts_with("rediss://") ||
                 url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")) {
        // rediss: TLS, its files and checks as URL parameters (?ca=...&cert=...&key=...).
        c.kind = StoreKind::redis;
        c.redis.client = redis::parse_url(url);
        // For logs: the address without credentials or parameters.
        c.url = redis::display_url(c.redis.client);
      } else {
        fail(n, path, url,
             "expected memory, sqlite:PATH, redis://..., rediss://... (TLS), "
             "redis+cluster://... or rediss+cluster://...");
      }
    } catch (const ValidationError& e) {
      if (e.field() == path) throw;  // already located
      fail(n, path, url, e.reason());
    }
  }
};

std::string_view durability_name(Durability d) {
  return d == Durability::per_op ? "per_op" : "write_behind";
}

}  // namespace

StoreConfig parse_store_config(const YAML::Node& node, const std::string& source) {
  return StoreReader(source).run(node);
}

OpenStore::OpenStore(const StoreConfig& config) {
  switch (config.kind) {
    case StoreKind::memory:
      primary_ = std::make_unique<MemoryStore>(config.memory);
      top_ = primary_.get();
      memory_ = static_cast<const MemoryStore*>(top_);
      description_ = config.memory.max_keys == 0
                         ? std::string("memory")
                         : "memory (max_keys " + std::to_string(config.memory.max_keys) + ")";
      return;
    case StoreKind::sqlite:
      primary_ = std::make_unique<SqliteStore>(config.sqlite);
      description_ = config.url + " (" + std::string(durability_name(config.sqlite.durability));
      break;
    case StoreKind::redis:
      primary_ = std::make_unique<RedisStore>(config.redis);
      description_ = config.url + " (" + (config.redis.client.cluster ? "cluster" : "standalone");
      break;
  }
  guard_ = std::make_unique<GuardedStore>(*primary_, config.guard);
  top_ = guard_.get();
  description_ += ", " + std::string(to_string(config.guard.policy));
  if (config.guard.policy == UnavailablePolicy::local_fallback) {
    description_ += " / " + std::to_string(config.guard.fleet_size);
  }
  description_ += ")";
}

OpenStore::~OpenStore() = default;

}  // namespace admit::service
