// Limiter: the API most users need. Resolves limits for (entity, resource) along the entity's
// ancestors, applies one all-or-nothing operation through a Store, returns Decisions and
// Leases, waits in FIFO order per key when asked to, and reports stats.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/amounts.hpp"
#include "admit/core/clock.hpp"
#include "admit/core/decision.hpp"
#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/core/timer.hpp"
#include "admit/lease.hpp"
#include "admit/store/store.hpp"

namespace admit {

/// Where the limits set through a Limiter (set_limits() and friends) live.
enum class ConfigMode : std::uint8_t {
  /// In this Limiter's memory: resolution never leaves the process (the default).
  local,
  /**
   * In the Store (Store::put_config), shared by every Limiter on the same store and
   * namespace, across processes. Each Limiter resolves entity > entity default > resource >
   * system through a cache whose entries it reads again after config_ttl, so a change made
   * anywhere is seen everywhere within config_ttl (at once by the Limiter that made it). When
   * the store cannot be read, expired entries are used as they are (CacheStats::stale); with
   * nothing cached the call fails like any store operation (code store_unavailable).
   */
  store,
};

/// Where what a Limiter learns lives: the limits learned from a provider
/// (set_discovered_limits, Discovery) and the AIMD rates of its adaptive limits.
enum class AdaptationMode : std::uint8_t {
  /// `store` when the store is shared by processes and keeps learned state (capabilities():
  /// distributed, as a RedisStore, or durable, as a per_op SqliteStore; and learned), else
  /// `local` (a MemoryStore, a write_behind SqliteStore): what a fleet operator expects.
  automatic,
  /// In this Limiter's memory: each process learns alone.
  local,
  /**
   * In the store (Store::put_learned), shared by every Limiter on the same store and
   * namespace, across processes, so a fleet paces to the same learned numbers: a limit one
   * process learns and a decrease of an adaptive limit's rate after a 429 one process sees
   * are used by every other within adaptation_refresh. Learned limits: the newest
   * observation wins. AIMD rates: a decrease is never undone by an increase made before it
   * was seen. docs/design.md, "Shared adaptation", has the rules.
   */
  store,
};

struct LimiterOptions {
  std::string ns = "default";               ///< namespace: tenants never see each other's keys
  Micros lease_ttl = 5 * kMicrosPerMinute;  ///< default lease TTL
  int max_parent_depth = 8;                 ///< ancestors deeper than this are refused
  ConfigMode config = ConfigMode::local;    ///< where limits live (see ConfigMode)
  /// ConfigMode::store: how long a configuration entry read from the store is used (>= 0;
  /// 0 reads the store on every resolution).
  Micros config_ttl = 60 * kMicrosPerSecond;
  AdaptationMode adaptation = AdaptationMode::automatic;  ///< where learned values live
  /// AdaptationMode::store: how often this Limiter writes what changed in what it learned and
  /// reads what the others wrote (> 0), through its Clock: a value another process wrote is
  /// used here at most this long after (once this Limiter is called again: the library owns
  /// no threads, so the refresh runs inside a call, one store read per interval, never per
  /// decision).
  Micros adaptation_refresh = kMicrosPerSecond;
  /// AdaptationMode::store: how long a learned value lives in the store after it was last
  /// written (>= 2 * adaptation_refresh). Each process writes its own again every
  /// adaptation_ttl / 2 while it is used, so the values of a process that is gone leave the
  /// fleet after this.
  Micros adaptation_ttl = 10 * kMicrosPerMinute;
};

/// The configuration cache of a Limiter in ConfigMode::store (all zero in local mode).
struct CacheStats {
  std::uint64_t hits = 0;    ///< resolutions answered from the cache alone
  std::uint64_t misses = 0;  ///< resolutions that read the store (one batched read per level)
  std::uint64_t stale = 0;   ///< expired entries used because the store could not be read
  std::size_t entries = 0;   ///< configuration entries cached now
  Micros ttl = 0;            ///< LimiterOptions::config_ttl
};

/// Per-call options.
struct AcquireOptions {
  Micros lease_ttl = 0;     ///< 0 = LimiterOptions::lease_ttl
  bool with_stats = false;  ///< fill Decision::stats when allowed (denials always have them)
  std::stop_token stop;     ///< acquire(): cancels the wait promptly
  /**
   * Keep the lease's record in the store (the store must have StoreCapabilities::leases), so
   * any Limiter on the same store and namespace, in any process, can take it up by its token
   * (Lease::token, Limiter::resume) to adjust, extend, commit or roll it back: a load
   * balancer may send those to another process than the acquire. Its ends are exactly once
   * across processes (the store compares and swaps the record); one not ended by its expiry
   * is committed by the store. Costs a record write with the acquire and a store operation
   * for every end.
   */
  bool durable = false;
};

/// One limit's state as an outside source of truth (a provider's response) reports it; see
/// Limiter::clamp().
struct StateClamp {
  std::string limit;            ///< a limit of the entity's own (not an ancestor's)
  std::int64_t available = -1;  ///< at most this many units are available now; < 0: no bound
  Micros until = 0;             ///< nothing is available before this instant; 0: no hold
};

/**
 * A rule giving entities without an explicit parent (Limiter::set_parent) a parent by their
 * name, so entities nobody registered (dynamic users) share a budget: see
 * Limiter::set_parent_rules().
 */
struct ParentRule {
  /// Glob over entity names: '*' matches any run of bytes (also none), '?' exactly one byte,
  /// '\' makes the next byte literal ("\*" is a '*'). "*" alone matches every entity.
  std::string pattern;
  /// The parent of the entities the pattern matches; empty: they get no parent (an exception
  /// to the rules after this one).
  std::string parent;

  bool operator==(const ParentRule&) const = default;
};

/// @throws ValidationError unless `rule.pattern` is 1 to 256 printable ASCII bytes without
/// spaces whose escapes are complete (no trailing '\'), `rule.parent` is empty or a valid
/// name (validate_name), and a pattern without wildcards does not name its own parent.
void validate_parent_rule(const ParentRule& rule);

/// Stats of every limit of one (entity, resource), ancestors included.
struct ResourceStats {
  std::string entity;
  std::string resource;
  std::vector<LimitStatus> limits;
};

/**
 * Thread-safe. The Store and Clock must outlive the Limiter; Leases must not outlive it.
 */
/// One request of Limiter::try_acquire_many(): try_acquire()'s arguments. The strings and
/// amounts must outlive the call.
struct AcquireRequest {
  std::string_view entity;
  std::string_view resource;
  const Amounts& amounts;
};

class Limiter {
  struct Impl;         // src/limiter/limiter_impl.hpp
  struct AsyncWaiter;  // src/limiter/async_wait.cpp

 public:
  Limiter(Store& store, const Clock& clock, LimiterOptions options = {});
  ~Limiter();
  Limiter(const Limiter&) = delete;
  Limiter& operator=(const Limiter&) = delete;

  // ---- configuration (thread-safe; visible to the next call) ----
  // ConfigMode::store: each call writes the store (@throws StoreUnavailable if it cannot).

  /// System defaults: used for any resource without more specific limits.
  void set_default_limits(std::vector<Limit> limits);
  /// Limits of a resource (e.g. a model), for every entity without an override.
  void set_limits(std::string resource, std::vector<Limit> limits);
  /// An entity's own limits for one resource (most specific).
  void set_entity_limits(std::string entity, std::string resource, std::vector<Limit> limits);
  /// An entity's own limits for every resource it has no specific limits for.
  void set_entity_default_limits(std::string entity, std::vector<Limit> limits);
  /// Makes `parent` an ancestor of `entity`: every acquire of `entity` also consumes from
  /// `parent` (and its ancestors), all or nothing. An explicit parent wins over the parent
  /// rules; an empty parent removes the link (the rules apply to `entity` again).
  /// @throws ValidationError on a cycle or a chain deeper than max_parent_depth (counting the
  ///         links the parent rules make).
  void set_parent(std::string entity, std::string parent);
  /// The parent of `entity`: the one set_parent() gave it, else the one the parent rules give
  /// it; empty if none. @throws ValidationError for an invalid name; StoreUnavailable
  /// (ConfigMode::store: the link is read from the store).
  std::string parent(std::string_view entity) const;
  /**
   * Parents by name, for entities nobody registered: an entity without an explicit parent
   * (set_parent) gets the parent of the first rule whose pattern matches its name, skipping
   * rules that would name the entity itself (with {"team-*", "team-shared"}, team-shared
   * matches but gets no parent from that rule; a later rule may give it one). A rule with an
   * empty parent gives the entities it matches no parent. The empty entity name matches no
   * rule. {"*", "shared"} as the last rule is a default parent. Replaces the rules set before
   * ({} removes them).
   *
   * The parents the rules give are links like explicit ones: consumed from, all or nothing,
   * and checked together with the explicit links, here and at every later set_parent, which
   * refuse a change (ValidationError; here field "parent rule" and the pattern of a rule in
   * the chain as value) when some entity's chain would be a cycle (explicit and rule links,
   * e.g. {"*", "org"} with set_parent("org", "team"): team gets the parent org) or deeper
   * than max_parent_depth, where an entity a rule matches has 1 + the rule parent's
   * ancestors. A refused change leaves everything as it was. A chain is never followed
   * further than max_parent_depth parents in any case.
   *
   * ConfigMode::store: the rules stay in this Limiter (the store keeps the explicit links,
   * which are checked against them when set): configure every process on the store with the
   * same rules, or entities resolve to different parents in different processes.
   * @throws ValidationError for a malformed rule (validate_parent_rule) or a refused chain;
   *         StoreUnavailable (ConfigMode::store, rules not empty) if the stored links cannot
   *         be read.
   */
  void set_parent_rules(std::vector<ParentRule> rules);
  /// The rules set_parent_rules() set, in order.
  std::vector<ParentRule> parent_rules() const;
  /// Removes limits set by the calls above (resource-level, entity-level or both).
  void remove_limits(std::string_view resource);
  void remove_entity_limits(std::string_view entity, std::string_view resource);
  /// Removes what set_entity_default_limits() set for `entity`.
  void remove_entity_default_limits(std::string_view entity);

  /**
   * Limits learned from a provider for (entity, resource) (see Discovery): each replaces the
   * resolved limit of the same name, or is added; they report ConfigSource::discovered.
   * They follow later configuration changes (the rest of the set still resolves as
   * configured). Replaces what was learned before; an empty list forgets it.
   * Changing limits invalidates cached plans: call it when a learned value changes, not per
   * response.
   *
   * AdaptationMode::store: also written to the store at once (a call that changes nothing
   * writes nothing), so every Limiter on the store and namespace uses it within its
   * adaptation_refresh; of the sets processes learned for one (entity, resource) the newest
   * wins everywhere (an empty list forgets it across the fleet until someone learns again or
   * adaptation_ttl passes). If the store cannot be written, it applies here at once and is
   * written at a later refresh: never throws StoreUnavailable.
   */
  void set_discovered_limits(std::string entity, std::string resource, std::vector<Limit> limits);
  /// What this Limiter has learned (set_discovered_limits) and where its adaptive limits'
  /// AIMD laws stand, for monitoring (admitd's /metrics). A snapshot; thread-safe.
  /// AdaptationMode::store: the values shared by the fleet as this Limiter last read them
  /// (read again first when adaptation_refresh has passed): what other processes learned
  /// included, also the AIMD rates of adaptive limits this Limiter has not used yet.
  struct Adaptation {
    struct Learned {
      std::string entity;
      std::string resource;
      std::vector<Limit> limits;
    };
    struct Rate {
      std::string entity;
      std::string resource;
      std::string limit;
      double rate = 0;  ///< units per second now
    };
    std::vector<Learned> discovered;
    std::vector<Rate> aimd;
    bool shared = false;      ///< AdaptationMode::store in effect (shares_adaptation())
    Micros refreshed_at = 0;  ///< shared: when the store was last read (0: not yet)
  };
  Adaptation adaptation() const;
  /// The limits learned for (entity, resource) and in use here: what set_discovered_limits()
  /// holds, or (AdaptationMode::store) a newer set another process learned; empty if none.
  std::vector<Limit> discovered_limits(std::string_view entity, std::string_view resource) const;
  /// Whether what this Limiter learns is shared through the store (LimiterOptions::adaptation
  /// resolved: store, or automatic on a shared store).
  bool shares_adaptation() const;
  /// A number that changes whenever the limits this Limiter resolves may have changed: every
  /// configuration call above, a learned set (set_discovered_limits, and in
  /// AdaptationMode::store one another process learned: like resolve(), this call first
  /// reads the store when adaptation_refresh has passed), invalidate_config(). For callers
  /// that cache what resolve() returned (a Scheduler's limit names): resolve again when it
  /// changed. Cheap: an atomic load (and a clock read) when no refresh is due.
  /// ConfigMode::store: entries read again after config_ttl do not change it.
  std::uint64_t config_version() const;

  /// The limits that apply to (entity, resource) itself and where each came from.
  /// ConfigMode::store: through the cache; @throws StoreUnavailable with nothing cached.
  std::vector<std::pair<Limit, ConfigSource>> resolve(std::string_view entity,
                                                      std::string_view resource) const;
  /// Resource names with limits configured, sorted. ConfigMode::store: read from the store.
  std::vector<std::string> resources() const;

  /// ConfigMode::store: the configuration cache's counters.
  CacheStats cache_stats() const;
  /// ConfigMode::store: forgets every cached entry, so the next resolutions read the store.
  void invalidate_config();

  // ---- admission ----

  /**
   * Non-blocking: consumes `amounts` from every limit of the entity and its ancestors, all or
   * nothing. A limit not named in `amounts` consumes 0, except concurrency limits (1 slot).
   * @return an active Lease if allowed; otherwise an inactive one whose decision() says why
   *         (code store_unavailable when the store could not be reached: fail closed; wrap
   *         the store in a GuardedStore for fail_open or local_fallback). The lease commits
   *         when its scope ends normally and rolls back when an exception ends it (see
   *         Lease): `if (limiter.try_acquire(...)) call();` commits at once, so it enforces
   *         rate and window limits but holds no concurrency slot during call(); write
   *         `if (auto lease = limiter.try_acquire(...)) { call(); }` to hold one.
   */
  Lease try_acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                    const AcquireOptions& options = {});

  /**
   * try_acquire() of many requests at once, for servers that decide requests arriving
   * together: `out[i]` is what try_acquire(requests[i]...) would return, the requests taken in
   * order, all at one clock reading. The store sees them as batches of up to 64 ops
   * (Store::apply_batch): MemoryStore fetches every key's state into the cache before it
   * decides the first, so the memory waits of random keys overlap; RedisStore sends
   * consecutive ones in one script run. As with try_acquire_async(), a store's failure is a
   * decision (code store_unavailable, its reason), never an exception. Durable leases
   * (options.durable) are acquired one by one.
   */
  std::vector<Lease> try_acquire_many(std::span<const AcquireRequest> requests,
                                      const AcquireOptions& options = {});

  /**
   * The plain case in one call: try_acquire() then commit(), no lease to manage. What rate
   * and window limits consumed is kept (record_usage() can add to it later; a refund needs
   * a lease's adjust()). Concurrency limits are checked, not held: the request is denied
   * (concurrency_exceeded) while leases hold every slot, and otherwise its slot is released
   * before this returns, so the call it admits does not count as in flight. Hold a lease for
   * the call to count it; name the limit with amount 0 to skip the check.
   * @return the decision of the try_acquire (options.lease_ttl does not matter).
   */
  Decision consume(std::string_view entity, std::string_view resource, const Amounts& amounts,
                   const AcquireOptions& options = {});

  /// Receives the Lease of a try_acquire_async(). Must not throw and must not block.
  using AcquireCallback = std::function<void(Lease)>;

  /**
   * try_acquire() without blocking on the store (Store::apply_async): `done` receives the
   * Lease exactly once, on any thread: before this returns when the answer needs no store
   * (an invalid request, code queue_ahead) or the store answers synchronously (MemoryStore,
   * SqliteStore), otherwise on the store's I/O thread (RedisStore), so `done` must be quick
   * and must not block. Same decisions as try_acquire(): code store_unavailable for a
   * StoreUnavailable, and also for any other exception the store reports (its what() as the
   * reason), so no exception escapes on the store's thread. The arguments may be destroyed
   * as soon as this returns. Only the acquire itself is asynchronous: in ConfigMode::store,
   * limits not cached are read from the store before this returns.
   *
   * Inside `done`, adjust or end the lease with its asynchronous forms (adjust_async,
   * commit_async, rollback_async), which never wait for the store. The synchronous ones
   * (adjust, rollback, and ending a lease that holds concurrency slots: commit, or its
   * destructor, since a lease `done` lets go of commits like any lease whose scope ends
   * normally) call the store synchronously: on a RedisStore's I/O thread that would block the
   * thread it waits for (it throws std::logic_error instead), so move the lease out (to a
   * queue, another thread) first; its scope starts anew where it is moved to. The Limiter and its
   * Store must outlive every pending `done`.
   */
  void try_acquire_async(std::string_view entity, std::string_view resource, const Amounts& amounts,
                         AcquireCallback done, const AcquireOptions& options = {});

  /**
   * Waits until the request fits or `timeout` passes, in FIFO order per (entity, resource)
   * so a large request is not starved by small ones.
   * @throws RateLimitExceeded (code timeout, cancelled, exceeds_capacity or
   *         store_unavailable) if it cannot.
   */
  Lease acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                std::chrono::microseconds timeout, const AcquireOptions& options = {});

  /// A pending acquire_async(). Copyable; every copy refers to the same wait.
  class AsyncWait {
   public:
    AsyncWait() = default;
    /// Ends the wait promptly: `done` receives an inactive lease with code cancelled (on the
    /// timer's loop). An attempt already admitted by the store is rolled back. Thread-safe,
    /// idempotent; a no-op once `done` has run.
    void cancel();

   private:
    friend class Limiter;
    explicit AsyncWait(std::shared_ptr<AsyncWaiter> w) : waiter_(std::move(w)) {}
    std::shared_ptr<AsyncWaiter> waiter_;
  };

  /**
   * acquire() without blocking a thread: waits on `timer`'s event loop until the request
   * fits or `timeout` passes, in the same FIFO order per (entity, resource) as acquire()
   * (blocking and asynchronous waiters share the queue). Only the head of a queue tries, each
   * time at its denial's exact retry_after (bounded by the deadline) or as soon as capacity
   * comes back; each try is a try_acquire_async(), so nothing waits on the store. Waiting
   * costs memory (one small object per waiter), not a thread.
   *
   * `done` receives the Lease exactly once, on the timer's loop, never inside this call: an
   * allowed one; or an inactive one whose decision's code is timeout, cancelled (cancel(), or
   * options.stop), exceeds_capacity, store_unavailable, unknown_limit or invalid_argument
   * (acquire() throws for those; a denial is a value here). The Limiter must outlive every
   * pending wait. admit/async.hpp's async_acquire() is this call with a completion token.
   * @throws ValidationError if `timer` or `done` is empty.
   */
  AsyncWait acquire_async(std::string_view entity, std::string_view resource,
                          const Amounts& amounts, std::chrono::microseconds timeout,
                          std::shared_ptr<Timer> timer, AcquireCallback done,
                          const AcquireOptions& options = {});

  /**
   * The completion-token forms of try_acquire_async() and acquire_async() (Boost.Asio:
   * a callback, asio::use_future, asio::use_awaitable, ...), signature void(Lease), the
   * completion running on the token's associated executor; async_acquire's timer runs on it
   * too, and per-operation cancellation (asio::cancellation_slot: terminal, partial, total)
   * cancels the wait. Defined in admit/async.hpp (link admit::sched), which must be included
   * to call them:
   *
   *   Lease lease = co_await limiter.async_acquire(user, model, {{"rpm", 1}, {"tpm", 1200}},
   *                                                5s, asio::use_awaitable);
   */
  template <class CompletionToken>
  auto async_try_acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                         CompletionToken&& token);
  template <class CompletionToken>
  auto async_try_acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                         const AcquireOptions& options, CompletionToken&& token);
  template <class CompletionToken>
  auto async_acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                     std::chrono::microseconds timeout, CompletionToken&& token);
  template <class CompletionToken>
  auto async_acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                     std::chrono::microseconds timeout, const AcquireOptions& options,
                     CompletionToken&& token);

  /**
   * Takes up a durable lease (AcquireOptions::durable) by its token, as acquired by any
   * Limiter on this store and namespace: an active Lease holding what the lease holds now,
   * its decision allowed (no stats), ending with its scope as any lease (detach() it to let it
   * live on). Two Limiters may resume one lease; of their changes, the first wins and the
   * other gets LeaseNotFound.
   * @throws ValidationError for a malformed token; LeaseNotFound if the store holds no such
   *         lease (never acquired, ended, expired, another namespace); StoreUnavailable.
   */
  Lease resume(std::string_view token);

  /// Dry run: the decision try_acquire would take now, consuming nothing. It looks at the
  /// limits only, not at callers waiting in acquire() (try_acquire would say queue_ahead).
  /// decide, record_usage and a lease's adjust/commit/rollback report an unreachable store
  /// as code store_unavailable; clamp, reset, stats throw StoreUnavailable.
  Decision decide(std::string_view entity, std::string_view resource, const Amounts& amounts);

  /// Counts usage after the fact, unconditionally (buckets may go into debt).
  Decision record_usage(std::string_view entity, std::string_view resource, const Amounts& amounts);

  /**
   * Lowers the state of (entity, resource)'s own limits to what the provider reports: at most
   * `available` units now, none before `until`. Never raises a bucket (a provider's report
   * is older than the requests still on their way to it). Concurrency limits and names that
   * match no limit are skipped. Wakes no waiter (nothing was freed).
   * @return the state of every limit clamped, afterwards.
   */
  std::vector<LimitStatus> clamp(std::string_view entity, std::string_view resource,
                                 std::span<const StateClamp> clamps);

  /// Forgets the usage state of (entity, resource): its buckets are full again.
  void reset(std::string_view entity, std::string_view resource);
  /// Forgets every usage state of this limiter's namespace.
  void reset_all();

  // ---- stats ----

  /// Current state of every limit of (entity, resource), ancestors included.
  ResourceStats stats(std::string_view entity, std::string_view resource);
  /// stats(entity, r) for every configured resource r, sorted by resource.
  std::vector<ResourceStats> all_stats(std::string_view entity = "");

  /// Callers waiting in acquire() or acquire_async() on (entity, resource).
  std::size_t waiting(std::string_view entity, std::string_view resource) const;

  // ---- the audit log (the store's, of this Limiter's namespace; admit/store/audit.hpp) ----
  // The Limiter writes no event by itself (set_limits() and friends do not): the caller that
  // makes a change knows who made it, and writes the event.

  /**
   * Appends `event` to the store's audit log of this Limiter's namespace (Store::append_audit);
   * a `time` of 0 is filled with clock().now().
   * @return the id the store gave the event.
   * @throws ValidationError (validate_audit_event); StoreUnavailable (also from a store
   *         without an audit log: capabilities().audit false).
   */
  std::uint64_t audit(AuditEvent event);
  /// The events of this Limiter's namespace that `query` selects (Store::read_audit).
  /// @throws ValidationError (validate_audit_query); StoreUnavailable.
  std::vector<AuditEvent> audit_log(const AuditQuery& query = {});

  const Clock& clock() const;
  Store& store();
  const LimiterOptions& options() const;

 private:
  friend class Lease;  // a lease's adjust and end go through impl_
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit
