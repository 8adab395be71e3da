// RedisStore: the distributed store. Every operation runs atomically in a Lua script (EVALSHA;
// concurrent acquires of one hash slot share a run) on a real Redis, standalone or Cluster, so
// a fleet of processes shares exact limits. Decisions use the Redis server's clock; the state
// of one (namespace, entity, resource) is one Redis hash, and all keys of one operation share
// a hash slot (Op::group). See docs/stores.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "admit/store/redis_client.hpp"
#include "admit/store/store.hpp"

namespace admit {

struct RedisStoreOptions {
  /// The server or cluster, timeouts, AUTH (redis::parse_url fills the common fields).
  redis::ClientOptions client;
  /// First part of every key: "<prefix>:{<namespace>:<group>}:<resource>:<entity>". Several
  /// independent deployments may share one Redis under different prefixes. Non-empty, no '{',
  /// '}' or glob characters.
  std::string prefix = "admit";
  /// Decide at the Redis server's clock (TIME, inside the script): every process of a fleet
  /// then shares one clock and idle keys expire by themselves. false: at Op::now, the
  /// caller's clock (tests with a ManualClock; keys then never expire: call prune()).
  bool server_time = true;
  /**
   * Local over-limit cache: when the server denies an acquire because a limit cannot give
   * `n` units before T, later acquires (or decides) of >= n units on that limit are denied
   * here until T without a round trip. Never admits more than the server would: a denial
   * stays true until T unless capacity is returned (a release or refund from this process
   * drops the entry; one from another process only makes this process wait a little longer
   * than it had to). Concurrency limits are never cached.
   */
  bool deny_cache = true;
  std::size_t deny_cache_entries = 1 << 16;  ///< cleared when full
  /// The audit log: the newest events kept per namespace (>= 1; each append trims the
  /// namespace's stream to it exactly, so the processes of a fleet should agree on it).
  std::size_t audit_retention = kDefaultAuditRetention;
};

/// Counters since construction (relaxed; each read atomically).
struct RedisStoreStats {
  std::uint64_t scripts = 0;        ///< script runs (EVALSHA round trips)
  std::uint64_t local_denials = 0;  ///< acquires/decides answered by the deny cache
  std::uint64_t clock_retries = 0;  ///< runs repeated because the clock estimate was off
};

/**
 * The store on Redis. Thread-safe; any number of threads share one pipelined connection per
 * node, so many operations are in flight at once. A failed request (timeout, connection
 * lost, cluster unavailable) throws StoreUnavailable; the client reconnects by itself on a
 * later operation.
 *
 * Group commit: an acquire or decide of rate and adaptive limits only (the script's fast
 * path) goes out at once while its lane (its hash slot in a cluster; the server when
 * standalone) has fewer than 2 script runs in flight; otherwise it waits for the lane's next
 * run, which carries up to 64 waiting ops in one EVALSHA, each applied on its own
 * (all-or-nothing), in order, at one server instant. No timer: runs grow only under
 * concurrency, so a lone caller's op is always a run of its own. A failed run throws
 * StoreUnavailable to each of its callers.
 *
 * Leases survive their owner: a concurrency hold records its expiry in Redis, so when a
 * process dies holding slots, every other process sees them freed after the lease TTL.
 *
 * Durable lease records (Op::lease_record, get_lease; capabilities().leases): one Redis hash
 * per lease, lease_key_of(), in the hash slot of its (namespace, group)'s usage keys, so the
 * script that applies an op checks and changes the record in the same atomic run. A guard
 * that does not match makes the script answer an error that apply() throws (and
 * apply_async() reports) as LeaseNotFound, with nothing changed.
 */
class RedisStore final : public Store {
 public:
  /// @throws ValidationError for bad options (nothing connects before the first operation).
  explicit RedisStore(RedisStoreOptions options);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  bool apply(const Op& op, std::span<ItemResult> results) override;
  /**
   * apply() without blocking, for every kind of op: sends it and returns at once; `done`
   * runs on the client's I/O thread when the reply comes (so it must be quick and must not
   * block), with what apply() would return or the StoreUnavailable it would throw (a failed
   * request, an error reply). An acquire or decide of rate and adaptive limits only (the
   * fast path) joins its lane's group commit; any other op (windows, concurrency slots,
   * release, adjust, record, read, reset, clamp) is a script run of its own, from a copy of
   * the op (sent again from the I/O thread when the server's clock was outside the window
   * bounds sent). Only an op with nothing to send (no items, or answered from the deny
   * cache) completes here, before this returns, on this thread. Callable from a callback on
   * the I/O thread (no synchronous client call on this path).
   */
  void apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done) override;
  /// The record of a durable lease: one HMGET of lease_key_of(), its expiry compared with
  /// `now` (with server_time, with `now` plus the server's clock offset as last seen).
  /// reset_namespace() deletes the records of the namespace; expired ones are deleted by
  /// prune() (without server_time) or by Redis a minute after their expiry (with it).
  /// @throws StoreUnavailable; std::logic_error on the client's I/O thread (in a callback).
  std::optional<LeaseRecord> get_lease(const Namespace& ns, std::string_view group,
                                       std::uint64_t lease_id, Micros now) override;
  /**
   * Store::apply_batch: consecutive fast-path ops (acquire or decide of rate and adaptive
   * limits only) of one lane go to Redis in one script run (up to 64 per run, a run per
   * change of lane); any other op runs alone, after the ones before it are answered.
   * Independent of the group commit of concurrent apply() calls. A failed run fails each of
   * its ops with StoreUnavailable (applied or not: a lost connection), and every later op
   * with it, unsent; a guarded op whose record did not match gets LeaseNotFound, and the
   * ops after it go on.
   */
  void apply_batch(std::span<const Op> ops, std::span<const std::span<ItemResult>> results,
                   std::span<bool> ok, std::span<std::exception_ptr> errors) override;
  Namespace open_namespace(std::string_view name) override;
  /// Deletes every key of the namespace, lease records included (SCAN on every master, then
  /// UNLINK).
  void reset_namespace(const Namespace& ns) override;
  /// Removes idle fields from every key under the prefix (a SCAN of every master). With
  /// server_time Redis expires idle keys by itself; this only tidies partly idle hashes.
  /// Without it, also deletes the lease records expired at `now` (counted in the result).
  std::size_t prune(Micros now) override;
  /// Limit states plus keys with holders under the prefix (fields of its hashes; a SCAN).
  std::size_t size() const override;
  StoreCapabilities capabilities() const override;
  std::string name() const override { return "redis"; }

  /// Configuration: one hash per namespace, config_key_of(ns), a field per entry (HSET, HDEL,
  /// HMGET: one round trip per call). Kept by reset_namespace, prune and size.
  void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) override;
  void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                  std::span<std::optional<std::string>> values) override;
  std::vector<ConfigEntry> list_config(const Namespace& ns) override;

  /// The audit log: one stream per namespace, audit_key_of(), and its id counter (one script
  /// run per append: INCR and XADD together, so ids increase in append order across the fleet;
  /// one per read, more only to replace entries that are not events). Kept by reset_namespace,
  /// prune and size. @throws std::logic_error on the client's I/O thread (in a callback).
  std::uint64_t append_audit(const Namespace& ns, AuditEvent event) override;
  std::vector<AuditEvent> read_audit(const Namespace& ns, const AuditQuery& query) override;

  /// Learned state: one hash per namespace, learned_key_of(), a field per entry; one script
  /// run per put (read, merge, write together, so concurrent writers of the fleet merge in
  /// turn) and per list (which also deletes the expired fields). Expiry is by the callers'
  /// `now`, not the server's clock. Kept by reset_namespace, prune and size.
  /// @throws std::logic_error on the client's I/O thread (in a callback).
  LearnedValue put_learned(const Namespace& ns, const LearnedKey& key, const LearnedValue& value,
                           Micros now) override;
  std::vector<LearnedEntry> list_learned(const Namespace& ns, Micros now) override;

  RedisStoreStats stats() const;
  const RedisStoreOptions& options() const;
  /// The underlying client (its stats, or commands of your own on the same connections).
  redis::Client& client();

  /// The Redis key of a (namespace, group, entity, resource): "<prefix>:{<ns>:<group>}:
  /// <resource>:<entity>", each part percent-encoded (every byte but [A-Za-z0-9._~@/+=-]),
  /// so crafted ids cannot collide and the hash tag is exactly the namespace and group.
  std::string key_of(std::string_view ns, std::string_view group, const KeyParts& key) const;
  /// The Redis hash of a namespace's configuration: "<prefix>:{<ns>}" (percent-encoded).
  std::string config_key_of(std::string_view ns) const;
  /// The Redis stream of a namespace's audit log: "<prefix>:{<ns>}#audit" (an event of id n is
  /// the entry "n-0"; fields t, p, a, e, r, b, f), its id counter "<prefix>:{<ns>}#audit:seq".
  std::string audit_key_of(std::string_view ns) const;
  /// The Redis hash of a namespace's learned state: "<prefix>:{<ns>}#learned"; a field per
  /// entry, "<kind>:<entity>:<resource>:<limit>" (kind l(imits) or r(ate), the names
  /// percent-encoded), its value "<version> <rank> <expires_at> <value>".
  std::string learned_key_of(std::string_view ns) const;
  /// The Redis hash of a durable lease's record: "<prefix>:{<ns>:<group>}#lease:<id>" (id in
  /// decimal; fields "d", the record, and "x", its expiry in µs). No usage key has a '#'
  /// after its tag, so none can be named so.
  std::string lease_key_of(std::string_view ns, std::string_view group,
                           std::uint64_t lease_id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit
