// Shared adaptation (AdaptationMode::store): what this Limiter learned, written to the store,
// and what every Limiter on the store and namespace learned, read back: learned limits merged
// into the configuration snapshot (of the sets learned for one (entity, resource), the newest
// wins), adaptive limits' AIMD rates handed to their laws (AimdRegistry). The store is read at
// most once per adaptation_refresh, inside a call (refresh_if_due), never per decision.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "admit/core/limit.hpp"
#include "admit/limiter.hpp"
#include "admit/store/store.hpp"
#include "aimd_registry.hpp"
#include "config_snapshot.hpp"

namespace admit::detail {

class SharedAdaptation {
 public:
  // `ns` is the Limiter's namespace (opened after construction).
  SharedAdaptation(Store& store, const Namespace& ns, const LimiterOptions& opt,
                   ConfigSnapshots& config, AimdRegistry& aimd)
      : store_(store), ns_(ns), opt_(opt), config_(config), aimd_(aimd) {}

  // Turns sharing on (the Limiter's constructor, before any other call).
  void enable() { enabled_ = true; }
  bool enabled() const { return enabled_; }

  // Refreshes when adaptation_refresh has passed since the last refresh (or expedite() asked
  // for one): writes what changed here, reads what the fleet wrote. Otherwise one relaxed
  // atomic load. Never throws: a store that cannot be reached leaves everything as it was
  // until the next refresh. One thread refreshes; the others go on meanwhile.
  void refresh_if_due(Micros now) {
    if (enabled_ && now >= due_.load(std::memory_order_relaxed)) refresh(now);
  }
  // Makes the next refresh_if_due() refresh (an adaptive limit decreased here: tell the
  // fleet without waiting for the interval).
  void expedite() {
    if (enabled_) due_.store(0, std::memory_order_relaxed);
  }

  // Limiter::set_discovered_limits: this Limiter's observation of (entity, resource), written
  // to the store at once if it is new (else nothing); applied here at once whatever the store
  // says, unless the store holds a newer one. Never throws StoreUnavailable (a failed write
  // is tried again at the next refresh).
  void set_learned(std::string entity, std::string resource, std::vector<Limit> limits, Micros now);

  // When the store was last read (0: never).
  Micros refreshed_at() const;

 private:
  // A learned set: this Limiter's own observation, or an entry of the store.
  struct Learned {
    std::string entity;
    std::string resource;
    LearnedValue value;                        // value.value: encode_limits() text, or ""
    std::optional<std::vector<Limit>> limits;  // nullopt: a stored text that does not decode
  };
  struct Own {
    Learned set;
    bool dirty = false;     // not written yet
    Micros written_at = 0;  // when it was last written (or seen written)
  };

  void refresh(Micros now);
  // Whether this Limiter's own set of `key` is the one in use (no stored set is newer).
  bool owns(const std::string& key, const Own& o) const;
  // The set in use for `key` (own or stored, the newer); nullptr if neither.
  const Learned* winner(const std::string& key) const;
  // Writes `o` to the store and keeps what the store answered. @throws what the store throws.
  void write_own(const std::string& key, Own& o, Micros now);
  // Replaces the snapshot's discovered limits by the sets in use, if they changed.
  void apply();

  Store& store_;
  const Namespace& ns_;
  const LimiterOptions& opt_;
  ConfigSnapshots& config_;
  AimdRegistry& aimd_;
  bool enabled_ = false;
  std::atomic<Micros> due_{0};

  mutable std::mutex mu_;  // the maps below; held through a refresh's store calls
  absl::flat_hash_map<std::string, Own> own_;         // by pair_key
  absl::flat_hash_map<std::string, Learned> stored_;  // by pair_key, as last read
  Micros refreshed_at_ = 0;
};

}  // namespace admit::detail
