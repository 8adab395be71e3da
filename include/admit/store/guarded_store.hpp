// GuardedStore: a Store decorator that decides what happens while its primary store (e.g. a
// RedisStore) cannot be reached: refuse (fail_closed), admit everything (fail_open) or enforce
// this process's share of every limit in a local MemoryStore (local_fallback). Every operation
// tries the primary first, so the store recovers by itself as soon as the primary answers
// again. See docs/stores.md, "When the store is unavailable".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "admit/store/memory_store.hpp"
#include "admit/store/store.hpp"

namespace admit {

/// What apply() does when the primary throws StoreUnavailable.
enum class UnavailablePolicy : std::uint8_t {
  /// Rethrow StoreUnavailable: the Limiter's decision is Code::store_unavailable.
  fail_closed,
  /// Every item is ok (acquire and decide are allowed) and reports a full limit; nothing is
  /// counted anywhere. Counted in GuardedStoreStats::fail_open_allowed.
  fail_open,
  /// Apply the operation to a local MemoryStore whose limits are the configured ones divided
  /// by GuardedStoreOptions::fleet_size (this process's share of the fleet's limits).
  local_fallback,
};
/// "fail_closed", "fail_open", "local_fallback".
std::string_view to_string(UnavailablePolicy p);

struct GuardedStoreOptions {
  UnavailablePolicy policy = UnavailablePolicy::fail_closed;
  /**
   * local_fallback: how many processes share the primary's limits. Each limit's capacity
   * (burst, window quota, concurrency slots) is divided by it, rounded down but at least 1;
   * a rate or adaptive limit's refill rate is divided by it exactly (its interval per unit
   * is multiplied by fleet_size). Unlimited limits stay unlimited. >= 1.
   */
  int fleet_size = 1;
};

/// Counters since construction (relaxed; each read atomically).
struct GuardedStoreStats {
  std::uint64_t primary_failures = 0;   ///< ops the primary failed with StoreUnavailable
  std::uint64_t fail_open_allowed = 0;  ///< fail_open: acquire/decide ops allowed unchecked
  std::uint64_t fallback_ops = 0;       ///< local_fallback: ops applied to the local store
  std::uint64_t recoveries = 0;         ///< transitions degraded -> healthy
};

/**
 * Wraps a primary Store. apply() forwards to the primary; on StoreUnavailable it marks the
 * store degraded and follows the policy. The first apply() that started after the last
 * failure and that the primary serves marks it healthy again (a recovery). A RedisStore's client
 * fails fast while it backs off between reconnects, so trying the primary on every operation costs
 * little during an outage.
 *
 * State the local fallback kept while degraded is not merged back into the primary: after a
 * recovery the primary's state is what it was (or, for a restarted Redis, empty), and the
 * fallback keeps its own for the next outage.
 *
 * Thread-safe. The primary must outlive the GuardedStore when passed by reference.
 */
class GuardedStore final : public Store {
 public:
  /// @throws ValidationError if options.fleet_size < 1.
  explicit GuardedStore(Store& primary, GuardedStoreOptions options = {});
  /// Owns the primary. @throws ValidationError if `primary` is null or fleet_size < 1.
  explicit GuardedStore(std::unique_ptr<Store> primary, GuardedStoreOptions options = {});
  ~GuardedStore() override;
  GuardedStore(const GuardedStore&) = delete;
  GuardedStore& operator=(const GuardedStore&) = delete;

  /// The primary's apply(); on StoreUnavailable, the policy's answer (fail_closed rethrows).
  bool apply(const Op& op, std::span<ItemResult> results) override;
  /// The primary's apply_async(); when it reports StoreUnavailable, the policy's answer as in
  /// apply(), given on the thread that reported it (fail_closed passes the error on). Counts
  /// and degraded() as apply(). fail_open and local_fallback copy `op` (keys, limits) to
  /// answer after it is gone; fail_closed copies nothing.
  void apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done) override;
  /// The primary's handles (Op::handles go to the primary; the fallback derives its own).
  KeyHandle prepare(const Namespace& ns, const KeyParts& key) const override;
  Namespace open_namespace(std::string_view name) override;
  /// Clears the namespace in the fallback, then in the primary (which may throw).
  void reset_namespace(const Namespace& ns) override;
  /// Prunes the fallback and the primary (which may throw); @return keys evicted from both.
  std::size_t prune(Micros now) override;
  /// The primary's.
  std::size_t size() const override;
  std::optional<std::uint64_t> expired_leases() const override;
  /// The primary's.
  StoreCapabilities capabilities() const override;
  /// "guarded(<primary's name>)".
  std::string name() const override;

  /// The primary's configuration, under every policy: a StoreUnavailable reaches the caller
  /// (a Limiter keeping its limits in the store then serves what it cached, however old; see
  /// LimiterOptions::config_ttl). Configuration calls do not change degraded().
  void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) override;
  void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                  std::span<std::optional<std::string>> values) override;
  std::vector<ConfigEntry> list_config(const Namespace& ns) override;
  /// The primary's (a lease acquired on the fallback has no record there).
  std::optional<LeaseRecord> get_lease(const Namespace& ns, std::string_view group,
                                       std::uint64_t lease_id, Micros now) override;
  /// The primary's audit log, under every policy: a StoreUnavailable (or any error) reaches
  /// the caller, so an event is never kept only in this process or silently lost; nothing
  /// goes to the fallback. Audit calls do not change degraded().
  std::uint64_t append_audit(const Namespace& ns, AuditEvent event) override;
  std::vector<AuditEvent> read_audit(const Namespace& ns, const AuditQuery& query) override;
  /// The primary's learned state, under every policy: a StoreUnavailable reaches the caller
  /// (a Limiter sharing what it learns then keeps its own values and tries again at its next
  /// refresh). Learned-state calls do not change degraded().
  LearnedValue put_learned(const Namespace& ns, const LearnedKey& key, const LearnedValue& value,
                           Micros now) override;
  std::vector<LearnedEntry> list_learned(const Namespace& ns, Micros now) override;

  /// True after the primary's apply() threw StoreUnavailable (or its apply_async() reported
  /// it), until an apply() or apply_async() that started after that failure succeeds.
  bool degraded() const;
  GuardedStoreStats stats() const;
  const GuardedStoreOptions& options() const;
  Store& primary();
  /// The local store of local_fallback (empty under the other policies).
  MemoryStore& fallback();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit
