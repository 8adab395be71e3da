// Store: applies one multi-key, multi-limit operation atomically and reports per-limit results.
// The core decides (admit/core/rate.hpp and friends); a store keeps the state and makes each
// operation all-or-nothing. The Limiter above resolves limits and builds Decisions.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/limit.hpp"
#include "admit/core/time.hpp"
#include "admit/store/audit.hpp"
#include "admit/store/learned.hpp"

namespace admit {

/// (entity, resource) within an operation's namespace: the unit whose limits live together.
/// Stores escape or hash the parts so that no crafted id collides with another
/// (a:b + c != a + b:c), and keys of different namespaces never meet.
struct KeyParts {
  std::string_view entity;
  std::string_view resource;
};

/// A store's precomputed form of one key (for MemoryStore: its fingerprint and shard), so
/// that callers who use a key again skip hashing it. Opaque to callers; all zero = none.
struct KeyHandle {
  std::uint64_t w[3] = {0, 0, 0};
  bool empty() const { return w[0] == 0 && w[1] == 0 && w[2] == 0; }
};

/// A namespace as a store knows it: its name and the store's handle for it.
struct Namespace {
  std::string name;
  std::uint32_t id = 0;
};

enum class OpKind : std::uint8_t {
  acquire,  ///< check every item with amount > 0; consume all or none
  decide,   ///< check every item; change nothing
  record,   ///< consume every item unconditionally (debt allowed)
  adjust,   ///< add each delta (positive: more usage, may go into debt; negative: refund)
  release,  ///< end a lease: refund each amount (if in the same window) and free its slots
  read,     ///< report state; change nothing
  reset,    ///< forget the items' state (their buckets are full again)
  /// lower each item's state to what an outside source of truth (a provider) reports: at
  /// most `amount` units available now, none before `until`; never raises it
  clamp,
  /// move a lease's end: its concurrency holds (items) and its record (Op::lease_guard) are
  /// reclaimed at Op::lease_expiry instead (earlier or later); checks nothing, refunds nothing
  extend,
};

/// One limit of one key in an operation.
struct OpItem {
  std::uint16_t key = 0;  ///< index into Op::keys
  const Limit* limit = nullptr;
  /// acquire/decide/record: amount; adjust: delta; release: refund; clamp: most available
  std::int64_t amount = 0;
  Micros window_end = 0;  ///< adjust/release on windows: the window the lease counted in
  /// Adaptive limits: the parameters at the controller's current rate (Limit::rate_at);
  /// nullptr = limit->rate(). Stores use it in place of the limit's own for this op.
  const RateParams* rate = nullptr;
  Micros until = 0;  ///< clamp: nothing is available before this instant (0: none)
};

struct Op {
  OpKind kind = OpKind::decide;
  const Namespace* ns = nullptr;  ///< every key of an op is in this namespace
  /// Placement group of every key of the op: a distributed store keeps the keys of one group
  /// together (RedisStore: one Redis Cluster hash slot), so an op over them stays atomic. It
  /// is part of each key's identity there: a key must always be named with the same group.
  /// The Limiter passes the root of the entity's parent chain (the chain's last entity), so
  /// the keys of one organisation share a slot and different organisations spread.
  /// MemoryStore and SqliteStore ignore it.
  std::string_view group;
  Micros now = 0;
  std::span<const KeyParts> keys;
  std::span<const OpItem> items;
  /// Optional: prepare()d handles of `keys`, same order. Empty = the store derives them.
  std::span<const KeyHandle> handles;
  std::uint64_t lease_id = 0;  ///< acquire: holder of concurrency slots; release: whose to free
  Micros lease_expiry = 0;     ///< acquire: when the slots are reclaimed if never released
  /// Fill available / reset_after for every item. Without it a store may leave them 0 on
  /// items that are ok (denied items always carry them).
  bool report = true;

  /**
   * Durable leases (a lease any process on the store can take up by its id, see
   * Store::get_lease). A lease record is opaque bytes kept per (namespace, group, lease_id)
   * until its expiry, changed only together with the lease's usage:
   *   - acquire with a non-empty `lease_record`: if admitted, the store keeps it as the
   *     record of lease_id, expiring at lease_expiry (an existing record of that id is
   *     replaced);
   *   - adjust, release and extend with `lease_guard`: the op applies only if the record of
   *     lease_id exists (not expired) and equals `lease_record`; otherwise nothing changes and
   *     apply throws LeaseNotFound. Then adjust replaces the record by `lease_record_next`
   *     (same expiry), extend replaces it and moves its expiry to lease_expiry, release
   *     deletes it. So of two processes ending or adjusting one lease at once, one wins and
   *     the other is told (compare and swap on the record): nothing is refunded twice.
   * Without a record or a guard an op works as it always did.
   */
  std::string_view lease_record;
  std::string_view lease_record_next;  ///< adjust / extend with lease_guard: the new record
  bool lease_guard = false;
};

/// A durable lease's record as the store keeps it (Store::get_lease).
struct LeaseRecord {
  std::string data;   ///< Op::lease_record as last written
  Micros expiry = 0;  ///< when the store drops it (µs since the epoch, the store's clock)
};

/// What a store reports for each item.
struct ItemResult {
  bool ok = true;
  bool never = false;  ///< amount > capacity
  std::int64_t available = 0;
  Micros retry_after = 0;  ///< exact, for this item alone
  Micros reset_after = 0;  ///< until full (rate) / until the window ends (window)
  Micros window_end = 0;   ///< window items: the window the amount counted in
  std::int64_t held = 0;   ///< concurrency items: slots held after the op
};

/// What a stored configuration entry holds. A Limiter resolves the limits of (entity,
/// resource) as entity > entity_default > resource > system, walking `parent` links.
enum class ConfigKind : std::uint8_t {
  system,          ///< limits for every resource without more specific ones (no names)
  resource,        ///< limits of one resource for every entity (resource)
  entity_default,  ///< an entity's limits for every resource it has no entity entry for (entity)
  entity,          ///< an entity's limits for one resource (entity and resource)
  parent,          ///< an entity's parent: the value is the parent's name (entity)
};
/// "system", "resource", "entity_default", "entity", "parent".
std::string_view to_string(ConfigKind k);

/// Names one configuration entry of a namespace. The names a kind does not use are empty.
struct ConfigKey {
  ConfigKind kind = ConfigKind::system;
  std::string_view entity;
  std::string_view resource;
};

/// One stored configuration entry (see list_config).
struct ConfigEntry {
  ConfigKind kind = ConfigKind::system;
  std::string entity;
  std::string resource;
  /// Limit sets: encode_limits() text; parent: the parent's name.
  std::string value;
  bool operator==(const ConfigEntry&) const = default;
};

/// Checks that `key` names exactly what its kind uses (valid names, the others empty).
/// @throws ValidationError naming the field.
void validate_config_key(const ConfigKey& key);
/// Checks a get_config() call: one value slot per key, every key valid.
/// @throws ValidationError naming the field.
void validate_config_read(std::span<const ConfigKey> keys,
                          std::span<const std::optional<std::string>> values);

/// Checks an apply_batch() call: one results span, ok and error slot per op.
/// @throws std::invalid_argument.
void check_batch(std::span<const Op> ops, std::span<const std::span<ItemResult>> results,
                 std::span<const bool> ok, std::span<const std::exception_ptr> errors);

/// What a store can do (reported, not configured).
struct StoreCapabilities {
  bool durable = false;
  bool distributed = false;
  bool server_time = false;  ///< decisions use the store's clock, not the caller's
  bool leases = false;       ///< keeps durable lease records (Op::lease_record, get_lease)
  bool audit = false;        ///< keeps an audit log (append_audit, read_audit)
  bool learned = false;      ///< keeps learned state (put_learned, list_learned)
};

/**
 * A deep copy of an Op: namespace, group, key names, handles, limits and rate parameters
 * owned here, so the op can be applied after the caller's Op and everything it pointed to
 * are gone (a Store::apply_async that answers later). Not copyable: op() views its members.
 */
class OwnedOp {
 public:
  explicit OwnedOp(const Op& op);
  OwnedOp(const OwnedOp&) = delete;
  OwnedOp& operator=(const OwnedOp&) = delete;

  const Op& op() const { return op_; }

 private:
  Namespace ns_;
  std::string group_;
  std::vector<std::string> names_;  // entity, resource of each key (keys_ views them)
  std::vector<KeyParts> keys_;
  std::vector<KeyHandle> handles_;
  std::vector<Limit> limits_;
  std::vector<RateParams> rates_;
  std::vector<OpItem> items_;
  std::string lease_record_;
  std::string lease_record_next_;
  Op op_;
};

/**
 * The storage seam. Implementations must make apply() atomic across all its keys.
 * Thread-safe.
 */
class Store {
 public:
  virtual ~Store() = default;

  /**
   * Applies `op` atomically. For acquire, consumes only if every item is ok. An item of a
   * shadow limit (Limit::shadow) is checked and reported like the others but never refuses:
   * when it is not ok the op goes on without it (an acquire consumes the other items and
   * leaves that one unchanged: no charge, no concurrency slot).
   * @param results one entry per op.items, filled in order.
   * @return true if every item was ok or of a shadow limit (for acquire: consumed; for
   *         others: always true except decide, which reports like acquire).
   * @throws StoreUnavailable if the store cannot be reached.
   */
  virtual bool apply(const Op& op, std::span<ItemResult> results) = 0;

  /// What apply_async() reports: apply()'s return value, or (ok false) the exception apply()
  /// would have thrown.
  using ApplyCallback = std::function<void(bool ok, std::exception_ptr error)>;

  /**
   * apply() without blocking the caller on the store's round trip. Reads `op` (and what it
   * points to) only before it returns; fills `results`, which must stay valid until then,
   * and then calls `done` exactly once, on any thread: perhaps before apply_async returns,
   * perhaps on the store's I/O thread (so `done` must not block and should be quick). The
   * default applies synchronously and then calls `done`; RedisStore sends the op and
   * returns (see there). `done` must not throw. Failures reach `done`; an implementation
   * that throws anyway must not have called `done` (nor call it later).
   */
  virtual void apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done);

  /**
   * Applies `ops` in order, each atomically on its own, with the outcome apply() one after
   * the other would give, in fewer steps where the store can: MemoryStore brings every op's
   * state into the cache before it applies the first (one overlapped memory wait for the
   * batch instead of one per op); RedisStore sends consecutive fast-path ops of one lane in
   * one script run. The default calls apply() for each op.
   * @param results results[i] receives ops[i]'s item results (as apply's `results`).
   * @param ok ok[i] receives what apply(ops[i]) returns (false when it failed).
   * @param errors errors[i] receives the exception apply(ops[i]) would throw, or null. After
   *        a StoreUnavailable a store may fail the later ops with it without trying them.
   * @throws std::invalid_argument unless results, ok and errors have one entry per op.
   */
  virtual void apply_batch(std::span<const Op> ops, std::span<const std::span<ItemResult>> results,
                           std::span<bool> ok, std::span<std::exception_ptr> errors);

  /// Precomputes what the store derives from a key; pass it in Op::handles to skip that work.
  /// The default returns an empty handle (nothing to precompute). Thread-safe.
  virtual KeyHandle prepare(const Namespace& ns, const KeyParts& key) const {
    (void)ns;
    (void)key;
    return {};
  }

  /// A hint that an op on `limit` of the prepared key `key` (prepare()) follows soon: a store
  /// may start bringing that state into the cache meanwhile (MemoryStore does). The default
  /// does nothing. Thread-safe; never fails.
  virtual void prefetch(const KeyHandle& key, const Limit& limit) const noexcept {
    (void)key;
    (void)limit;
  }

  /// Registers (or finds) a namespace. @throws ValidationError on a bad name.
  virtual Namespace open_namespace(std::string_view name) = 0;
  /// Clears every key of a namespace. Thread-safe.
  virtual void reset_namespace(const Namespace& ns) = 0;
  /// Evicts idle state (full buckets, finished windows, no holders). @return keys evicted.
  virtual std::size_t prune(Micros now) = 0;
  /// Keys currently held (rate/window states plus concurrency holders).
  virtual std::size_t size() const = 0;
  /// Durable lease records this store object removed because their TTL passed before a
  /// commit or rollback (orphaned leases), counted as prune() removes them; nullopt when the
  /// store cannot see it (RedisStore: Redis expires its records by itself). Thread-safe.
  virtual std::optional<std::uint64_t> expired_leases() const { return std::nullopt; }
  virtual StoreCapabilities capabilities() const = 0;
  virtual std::string name() const = 0;

  // ---- limit configuration: shared by every process on the store ----
  // Values are opaque text to the store (the Limiter writes encode_limits() text and parent
  // names). Configuration is not usage state: reset_namespace() and prune() keep it.

  /**
   * Writes one entry of `ns`'s configuration; an empty `value` erases it. Atomic per entry;
   * visible to every later get_config on this store (all processes).
   * @throws ValidationError for a bad key (validate_config_key); StoreUnavailable.
   */
  virtual void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) = 0;
  /**
   * Reads several entries in one round trip: values[i] = keys[i]'s value, nullopt if absent.
   * @throws ValidationError for a bad key or values.size() != keys.size()
   *         (validate_config_read); StoreUnavailable.
   */
  virtual void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                          std::span<std::optional<std::string>> values) = 0;
  /// Every entry of `ns`, sorted by (kind, entity, resource). @throws StoreUnavailable.
  virtual std::vector<ConfigEntry> list_config(const Namespace& ns) = 0;

  // ---- durable leases (Op::lease_record) ----

  /**
   * The record of lease `lease_id` in (`ns`, `group`), nullopt if there is none (never
   * written, deleted by a release, or expired at `now`). `group` is the Op::group the lease
   * was acquired with. The default (a store without durable leases) returns nullopt.
   * @throws StoreUnavailable.
   */
  virtual std::optional<LeaseRecord> get_lease(const Namespace& ns, std::string_view group,
                                               std::uint64_t lease_id, Micros now) {
    (void)ns;
    (void)group;
    (void)lease_id;
    (void)now;
    return std::nullopt;
  }

  // ---- the audit log (admit/store/audit.hpp) ----
  // Kept per namespace, shared by every process on the store; not usage state:
  // reset_namespace(), prune() and size() leave it alone. Each store keeps the newest
  // `audit_retention` events of a namespace (an option of the store; kDefaultAuditRetention).

  /**
   * Appends `event` to `ns`'s log, after the events appended before it (by any process on
   * the store), and drops the oldest beyond the retention. Atomic; durable as the store's
   * configuration is (SqliteStore: on disk when this returns, in both durability modes).
   * @return the id the store gave it (event.id is ignored): greater than every id of `ns`
   *         before it; 1, 2, 3, ... from a new namespace.
   * @throws ValidationError (validate_audit_event); StoreUnavailable if the store cannot be
   *         reached, and from a store that keeps no audit log (capabilities().audit false:
   *         this default).
   */
  virtual std::uint64_t append_audit(const Namespace& ns, AuditEvent event);
  /**
   * The events of `ns`'s log that `query` selects (see AuditQuery), in its order. Every event
   * returned passes validate_audit_event and has an id > 0: an entry the store cannot read
   * as one (a corrupt row, a foreign stream entry) is skipped.
   * @throws ValidationError (validate_audit_query); StoreUnavailable. The default (a store
   *         without an audit log) returns nothing.
   */
  virtual std::vector<AuditEvent> read_audit(const Namespace& ns, const AuditQuery& query);

  // ---- learned state (admit/store/learned.hpp) ----
  // What Limiters learned (discovered limits, adaptive limits' AIMD rates), kept per
  // namespace and shared by every process on the store. Neither usage state nor
  // configuration: reset_namespace() and size() leave it alone, list_config() does not show
  // it; an entry lives until its expiry (prune() may delete expired ones, uncounted).

  /**
   * Merges `value` into `ns`'s entry `key` atomically, as merge_learned() says: it replaces
   * what is stored when nothing live is (absent, or expired at `now`) or when its precedence
   * is greater; equal precedences keep the stored value with the later expiry; otherwise
   * nothing changes. Of concurrent writers (any process) the greatest precedence wins,
   * whatever the order they arrive in.
   * @return the entry's value as stored afterwards (the winner).
   * @throws ValidationError (validate_learned_key, validate_learned_value); StoreUnavailable
   *         if the store cannot be reached, and from a store that keeps no learned state
   *         (capabilities().learned false: this default).
   */
  virtual LearnedValue put_learned(const Namespace& ns, const LearnedKey& key,
                                   const LearnedValue& value, Micros now);
  /**
   * Every entry of `ns` that has not expired at `now`, sorted by (kind, entity, resource,
   * limit). Expired entries may be deleted on the way.
   * @throws StoreUnavailable. The default (a store without learned state) returns nothing.
   */
  virtual std::vector<LearnedEntry> list_learned(const Namespace& ns, Micros now);
};

}  // namespace admit
