// ConfigMode::store: the configuration entries a Limiter read from the Store, each used for
// config_ttl, and the chains (one Snapshot per (entity, resource) and its parents) built from
// them.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "admit/limiter.hpp"
#include "admit/store/store.hpp"
#include "config_snapshot.hpp"

namespace admit::detail {

class StoreConfigCache {
 public:
  // `ns` is the Limiter's namespace (opened after construction); `snapshots` holds the version
  // that chains are cached for and the discovered limits merged into them.
  StoreConfigCache(Store& store, const Namespace& ns, const LimiterOptions& opt,
                   ConfigSnapshots& snapshots)
      : store_(store), ns_(ns), opt_(opt), snapshots_(snapshots) {}

  // The configuration that resolves (entity, resource) and its chain of parents: a Snapshot
  // built from the cached entries of the chain (read from the store when expired), with the
  // parents the Limiter's parent rules give members the store gives none, plus the
  // discovered limits, valid until *fresh_until. @throws StoreUnavailable (nothing cached and
  // no store); ValidationError (a stored entry that does not decode, a cycle of parents).
  std::shared_ptr<const Snapshot> chain(std::string_view entity, std::string_view resource,
                                        Micros now, Micros* fresh_until);

  // Writes one configuration entry to the store; this Limiter then reads it back from there.
  void write(const ConfigKey& key, std::string_view value) {
    store_.put_config(ns_, key, value);
    invalidate();
  }

  // Forgets every cached entry and chain (and makes cached plans stale).
  void invalidate();

  CacheStats stats() const;

 private:
  struct CachedEntry {
    bool present = false;                              // cached at all
    std::shared_ptr<const std::vector<Limit>> limits;  // limit kinds; null: no such entry
    std::string parent;                                // parent kind; empty: none
    std::string error;                                 // the stored text does not decode
    Micros loaded_at = 0;
  };
  struct CachedChain {
    std::shared_ptr<const Snapshot> snap;
    Micros fresh_until = 0;
    std::uint64_t version = 0;
  };

  static std::string entry_key(const ConfigKey& k);
  static CachedEntry decode(const ConfigKey& k, const std::optional<std::string>& value,
                            Micros now);
  bool fresh(const CachedEntry& e, Micros now) const {
    return e.present && now - e.loaded_at < opt_.config_ttl;
  }
  // The entries of `keys`: fresh ones from the cache, the others read in one batch. When the
  // store cannot be read, cached entries are used however old (counted); with none, the
  // StoreUnavailable goes on. Sets `read` if the store was asked.
  std::vector<CachedEntry> fetch(std::span<const ConfigKey> keys, Micros now, bool& read);

  Store& store_;
  const Namespace& ns_;
  const LimiterOptions& opt_;
  ConfigSnapshots& snapshots_;

  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, CachedEntry> entries_;  // by entry_key
  absl::flat_hash_map<std::string, CachedChain> chains_;   // by pair_key
  std::uint64_t gen_ = 0;  // bumped by every local write: reads begun before it are dropped
  std::size_t prune_at_ = 1024;
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, stale_{0};
};

}  // namespace admit::detail
