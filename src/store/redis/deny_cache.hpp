// RedisStore's local over-limit cache (RedisStoreOptions::deny_cache): denials the server
// gave, kept per (Redis key, limit) until they expire, so later acquires of as much or more
// are denied without a round trip. Header-only: it is consulted on every acquire.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <absl/hash/hash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../kernel.hpp"
#include "admit/store/store.hpp"

namespace admit::redis_store {

/// One denial cached: acquiring >= min_amount of this limit fails until `until` (caller clock).
struct Denial {
  std::int64_t min_amount = 0;
  Micros until = 0;
  std::int64_t available = 0;
  Micros reset_at = 0;
  RateParams params;  // the limit as it was: another configuration does not match
  std::int64_t capacity = 0;
};

inline bool same_limit(const Denial& d, const OpItem& it) {
  return d.capacity == it.limit->capacity() && d.params == detail::params(it);
}

/// The cache, sharded by key; cleared shard by shard when full.
class DenyCache {
 public:
  explicit DenyCache(std::size_t max_entries)
      : max_per_shard_(std::max<std::size_t>(max_entries / kShards, 1)) {}

  bool empty() const { return size_.load(std::memory_order_relaxed) == 0; }

  /// The cache's key of a limit of a Redis key.
  static std::string cache_key(const std::string& redis_key, std::string_view limit) {
    std::string k = redis_key;
    k += '\0';
    k += limit;
    return k;
  }

  /// Answers an acquire/decide (`keys`: its Redis keys) when one of its items is known
  /// denied: fills `results` and returns true. Concurrency limits are never cached. A known
  /// denial of a shadow limit (Limit::shadow) never refuses the op: it is only reported
  /// (ok false) when another item's known denial answers the op here.
  bool answer(const Op& op, const std::vector<std::string>& keys, std::span<ItemResult> results) {
    bool denied = false;
    for (std::size_t i = 0; i < op.items.size(); ++i) {
      const OpItem& it = op.items[i];
      results[i] = ItemResult{};
      if (it.amount <= 0 || it.limit->kind() == LimitKind::concurrency) continue;
      const auto d = find(cache_key(keys[it.key], it.limit->name()));
      if (!d || d->until <= op.now || it.amount < d->min_amount || !same_limit(*d, it)) continue;
      ItemResult& r = results[i];
      r.ok = false;
      r.retry_after = d->until - op.now;
      r.available = d->available;
      r.reset_after = std::max<Micros>(0, d->reset_at - op.now);
      denied = denied || !it.limit->shadow();
    }
    return denied;
  }

  /// Caches the denial in `r` (of `amount` units of a rate-like limit at the caller's `now`).
  void remember(const std::string& redis_key, std::string_view limit, std::int64_t amount,
                Micros now, const RateParams& params, std::int64_t capacity, const ItemResult& r) {
    if (r.ok || r.never || r.retry_after <= 0) return;
    put(cache_key(redis_key, limit),
        Denial{amount, now + r.retry_after, r.available, now + r.reset_after, params, capacity});
  }

  /// Drops the denials of an op's limits (a release, adjust or reset may give capacity back).
  void forget(const Op& op, const std::vector<std::string>& keys) {
    for (const OpItem& it : op.items) erase(cache_key(keys[it.key], it.limit->name()));
  }

  std::optional<Denial> find(const std::string& key) {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    const auto it = s.map.find(key);
    if (it == s.map.end()) return std::nullopt;
    return it->second;
  }
  void put(const std::string& key, const Denial& d) {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    if (s.map.size() >= max_per_shard_) {
      size_.fetch_sub(s.map.size(), std::memory_order_relaxed);
      s.map.clear();
    }
    if (s.map.insert_or_assign(key, d).second) size_.fetch_add(1, std::memory_order_relaxed);
  }
  void erase(const std::string& key) {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    if (s.map.erase(key) > 0) size_.fetch_sub(1, std::memory_order_relaxed);
  }
  void clear() {
    for (Shard& s : shards_) {
      std::lock_guard g(s.mu);
      size_.fetch_sub(s.map.size(), std::memory_order_relaxed);
      s.map.clear();
    }
  }

 private:
  static constexpr std::size_t kShards = 16;
  struct Shard {
    std::mutex mu;
    absl::flat_hash_map<std::string, Denial> map;
  };
  Shard& shard(const std::string& key) { return shards_[absl::Hash<std::string>{}(key) % kShards]; }
  std::array<Shard, kShards> shards_;
  std::size_t max_per_shard_;
  std::atomic<std::size_t> size_{0};
};

}  // namespace admit::redis_store
