// SqliteStore: the embedded durable store. One SQLite file (WAL) holds every key's state under
// its real strings (namespace, entity, resource, limit), so state can be listed and migrated
// (export_state / import_state), the limit configuration every process shares (put_config),
// durable lease records (Op::lease_record, get_lease), committed with the lease's usage, and
// the audit log (append_audit, read_audit).
// Two durability modes: per_op (one fsync'd transaction per operation: an acknowledged
// operation survives a process kill and a power loss; several processes may share the file)
// and write_behind (state cached in memory, flushed in one transaction every interval; a crash
// loses at most about one interval's operations; one process only). See docs/stores.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admit/store/store.hpp"

namespace admit {

enum class Durability : std::uint8_t {
  /// Every apply() is one BEGIN IMMEDIATE ... COMMIT transaction with synchronous=FULL: an
  /// operation that returned is on disk. Any number of processes may share the file.
  per_op,
  /**
   * State lives in memory (the rows this process touched, loaded from the file on first use)
   * and is written in one transaction every write_behind_interval. A crash (process kill or
   * power loss) loses at most the operations acknowledged after the last completed flush:
   * those of one interval plus the duration of one flush. The file is locked exclusively for
   * as long as the store is open: one process only.
   */
  write_behind,
};

/// One rate, adaptive or window limit's state of one key, as the file stores it.
struct StateRow {
  std::string entity;
  std::string resource;
  std::string limit;
  LimitKind kind = LimitKind::rate;  ///< rate, adaptive or window
  /// rate/adaptive: the TAT, µs since the epoch; window: the end of the window counted in, µs
  std::int64_t a = 0;
  /// rate/adaptive: the TAT's remainder, in units of 1/r µs; window: the units used in it
  std::int64_t b = 0;
  bool operator==(const StateRow&) const = default;
};

/// One lease's slots of one concurrency limit of one key.
struct HoldRow {
  std::string entity;
  std::string resource;
  std::string limit;
  std::uint64_t lease = 0;
  std::int64_t amount = 0;  ///< slots held, >= 1
  Micros expiry = 0;        ///< when the slots are reclaimed, µs since the epoch
  bool operator==(const HoldRow&) const = default;
};

/// The usage state of one namespace (not its configuration): what SqliteStore::export_state
/// reads and import_state writes.
struct UsageState {
  std::vector<StateRow> rows;  ///< sorted by (entity, resource, limit, kind name)
  std::vector<HoldRow> holds;  ///< sorted by (entity, resource, limit), then in hold order
  bool operator==(const UsageState&) const = default;
};

struct SqliteStoreOptions {
  std::string path;  ///< the database file; created (with its schema) if missing
  Durability durability = Durability::per_op;
  /// write_behind only: time between two flushes (> 0).
  Micros write_behind_interval = 100 * 1000;
  /// How long an operation waits for another process's transaction before it fails with
  /// StoreUnavailable ("database is locked").
  std::chrono::milliseconds busy_timeout{5000};
  /// The audit log: the newest events kept per namespace (>= 1; append_audit deletes older
  /// ones). Processes sharing the file should agree on it (each append trims to its own).
  std::size_t audit_retention = kDefaultAuditRetention;
};

/**
 * The durable embedded store. Thread-safe: one SQLite connection guarded by one mutex (the
 * operations of one process are serialised; SQLite allows one writer at a time anyway).
 * Processes sharing a file (per_op) are serialised by SQLite's locks: BEGIN IMMEDIATE, with
 * busy_timeout, so no update is lost.
 *
 * Durable leases (capabilities().leases): a lease record is read, checked and written in the
 * transaction of its op (per_op), or cached with the rows it goes with and flushed in the same
 * transaction as they are (write_behind), so a record and its lease's usage are on disk
 * together or not at all.
 *
 * Every SQLite failure (cannot open, disk full, corrupt file, locked beyond busy_timeout)
 * throws StoreUnavailable naming the file and SQLite's message; the operation then changed
 * nothing. A file with a newer schema throws IncompatibleSchema and is left untouched.
 */
class SqliteStore final : public Store {
 public:
  /// Schema version this build writes (PRAGMA user_version); older files are migrated.
  static constexpr int kSchemaVersion = 5;

  /**
   * Opens or creates the file and migrates its schema.
   * @throws ValidationError for bad options; IncompatibleSchema for a newer file;
   *         StoreUnavailable if SQLite cannot open, read or lock it (write_behind: another
   *         process has it open).
   */
  explicit SqliteStore(SqliteStoreOptions options);
  /// write_behind: flushes what is pending (a failure there is not reported).
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  bool apply(const Op& op, std::span<ItemResult> results) override;
  Namespace open_namespace(std::string_view name) override;
  void reset_namespace(const Namespace& ns) override;
  /// Deletes idle rows: rate/window state with a < now (full buckets, finished windows),
  /// expired holds and expired lease records (counted one each). A full scan of the tables.
  /// write_behind: flushes first.
  std::size_t prune(Micros now) override;
  /// State rows plus keys with holders (lease records are not counted). write_behind:
  /// flushes first.
  std::size_t size() const override;
  std::optional<std::uint64_t> expired_leases() const override;
  StoreCapabilities capabilities() const override;
  std::string name() const override { return "sqlite"; }

  /// Configuration is written to the file at once, in its own transaction, in both modes;
  /// reads come from the file, so a store sees what other processes wrote (per_op).
  void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) override;
  void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                  std::span<std::optional<std::string>> values) override;
  std::vector<ConfigEntry> list_config(const Namespace& ns) override;

  /// The record of a durable lease (the `leases` table). per_op: read from the file, so a
  /// store sees what other processes wrote; write_behind: from the cache where it holds the
  /// record, else from the file. @throws StoreUnavailable.
  std::optional<LeaseRecord> get_lease(const Namespace& ns, std::string_view group,
                                       std::uint64_t lease_id, Micros now) override;

  /// The audit log (the `audit` table): an append is its own transaction, written to the file
  /// at once in both durability modes (write_behind does not cache it), so an event is on disk
  /// when append_audit returns, and ids follow the order of the appends of every process on
  /// the file. Reads come from the file. Not part of export_state / import_state.
  std::uint64_t append_audit(const Namespace& ns, AuditEvent event) override;
  std::vector<AuditEvent> read_audit(const Namespace& ns, const AuditQuery& query) override;

  /// Learned state (the `learned` table): a put is its own transaction (read, merge, write), in
  /// both durability modes; reads come from the file, so processes sharing it (per_op) share
  /// what their Limiters learn. prune() deletes expired rows (not counted). Not part of
  /// export_state / import_state.
  LearnedValue put_learned(const Namespace& ns, const LearnedKey& key, const LearnedValue& value,
                           Micros now) override;
  std::vector<LearnedEntry> list_learned(const Namespace& ns, Micros now) override;

  /// Every namespace the file knows (open_namespace registers one), sorted by name.
  std::vector<std::string> namespaces() const;
  /// The usage state of `ns` as of now, idle rows and expired holds included (prune() drops
  /// them); durable lease records are not part of it. write_behind: flushes first.
  /// @throws StoreUnavailable.
  UsageState export_state(const Namespace& ns);
  /**
   * Replaces the usage state of `ns` (every state row and hold; its durable lease records
   * are deleted, as they describe usage that is replaced) with `state`, and, given
   * `config`, its whole configuration with those entries (else the configuration stays), in
   * one transaction: a failure leaves the namespace as it was.
   * @throws ValidationError before writing anything: a bad name or config key, an empty
   *         config value, a row of kind concurrency, a negative number, a hold of amount < 1,
   *         a row twice; StoreUnavailable.
   */
  void import_state(const Namespace& ns, const UsageState& state,
                    const std::vector<ConfigEntry>* config = nullptr);

  /// write_behind: writes every pending change now, in one transaction. per_op: nothing to do.
  /// @throws StoreUnavailable if the write fails (the changes stay pending).
  void flush();
  /// apply() calls of this object whose effects are on disk (per_op: every one that returned;
  /// write_behind: those before the last completed flush). Thread-safe.
  std::uint64_t durable_ops() const;
  const SqliteStoreOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit
