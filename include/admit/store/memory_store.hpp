// MemoryStore: the embedded default store. Sharded hash tables, one mutex per shard (no
// global lock). Keys are 128-bit fingerprints from a per-store random secret (XXH3-128), kept
// beside their state in the table's entry (32 bytes), so an active key with one limit costs
// 32-64 bytes with the table's growth steps; idle keys are evicted, so memory follows the
// active keys, not every key ever seen.
#pragma once

#include <cstdint>
#include <memory>

#include "admit/store/store.hpp"

namespace admit {

struct MemoryStoreOptions {
  std::size_t shards = 64;  ///< rounded up to a power of two
  /// Secret seed for key fingerprints; 0 = random per store (recommended).
  std::uint64_t seed = 0;
  /**
   * The most live keys (states and hold lists) the store keeps; 0 = no cap. Split evenly over
   * the shards: a shard holds at most ceil(max_keys / shards). An acquire or record that needs
   * a new key in a full shard first prunes that shard's idle keys; if it is still full, the op
   * is refused with StoreUnavailable (code store_unavailable: nothing is evicted, so no live
   * usage is ever lost) and counted (key_cap_refusals). Keys already live keep working; lease
   * ops (adjust, release, extend) and clamps are never refused.
   */
  std::size_t max_keys = 0;
  /// The audit log: the newest events kept per namespace (>= 1; append_audit drops older ones).
  std::size_t audit_retention = kDefaultAuditRetention;
  /// Ask the kernel to back shard tables of 2 MiB or more with transparent huge pages
  /// (madvise; effective when /sys/kernel/mm/transparent_hugepage/enabled is `always` or
  /// `madvise`): a random key then costs one TLB miss less. BENCHMARKS.md has the figures.
  bool huge_pages = true;
};

/**
 * In-process store. Thread-safe. A key's fingerprint is its namespace's 16-bit id plus a
 * 112-bit XXH3 hash keyed by a secret random seed: keys of different namespaces never share
 * state, and two keys of one namespace do only on a fingerprint collision (probability about
 * n^2 / 2^113 for n live keys; ids cannot be aimed at one another without the secret).
 */
class MemoryStore final : public Store {
 public:
  /// @throws ValidationError for a bad audit_retention.
  explicit MemoryStore(MemoryStoreOptions options = {});
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  bool apply(const Op& op, std::span<ItemResult> results) override;
  /// Store::apply_batch: first brings the state of every item of every prepared op (Op::handles)
  /// into the cache, so a batch of random keys waits for memory about once, not once per op;
  /// then applies the ops in order as apply() does.
  void apply_batch(std::span<const Op> ops, std::span<const std::span<ItemResult>> results,
                   std::span<bool> ok, std::span<std::exception_ptr> errors) override;
  KeyHandle prepare(const Namespace& ns, const KeyParts& key) const override;
  /// Brings the table entry of (key, limit) into the cache (rate and window limits).
  void prefetch(const KeyHandle& key, const Limit& limit) const noexcept override;
  Namespace open_namespace(std::string_view name) override;
  void reset_namespace(const Namespace& ns) override;
  std::size_t prune(Micros now) override;
  std::size_t size() const override;
  std::optional<std::uint64_t> expired_leases() const override;
  /// Ops refused because a shard was full (MemoryStoreOptions::max_keys).
  std::uint64_t key_cap_refusals() const;
  StoreCapabilities capabilities() const override {
    return {.leases = true, .audit = true, .learned = true};
  }
  std::string name() const override { return "memory"; }

  void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) override;
  std::optional<LeaseRecord> get_lease(const Namespace& ns, std::string_view group,
                                       std::uint64_t lease_id, Micros now) override;
  void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                  std::span<std::optional<std::string>> values) override;
  std::vector<ConfigEntry> list_config(const Namespace& ns) override;

  /// The audit log: per namespace, in memory (as long as the store lives), the newest
  /// MemoryStoreOptions::audit_retention events.
  std::uint64_t append_audit(const Namespace& ns, AuditEvent event) override;
  std::vector<AuditEvent> read_audit(const Namespace& ns, const AuditQuery& query) override;

  /// Learned state: per namespace, in memory (as long as the store lives). Shared by the
  /// Limiters on this store object only, which by default keep what they learn to themselves
  /// (AdaptationMode::automatic: this store is not shared by processes).
  LearnedValue put_learned(const Namespace& ns, const LearnedKey& key, const LearnedValue& value,
                           Micros now) override;
  std::vector<LearnedEntry> list_learned(const Namespace& ns, Micros now) override;

  /// Bytes held by the tables (slots and control bytes, excluding malloc overhead).
  std::size_t memory_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit
