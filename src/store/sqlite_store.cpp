// SqliteStore: the class, its op paths (apply in per_op and write_behind, durable lease records
// included), get_lease, namespaces, pruning and size. What the parts share is
// SqliteStore::Impl (sqlite/store_impl.hpp); the connection is sqlite/db.{hpp,cpp}, the schema
// sqlite/schema.{hpp,cpp}, the flusher of write_behind sqlite/write_behind.cpp, configuration
// sqlite/config.cpp, usage export / import sqlite/usage_io.cpp.
#include "admit/store/sqlite_store.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "admit/core/error.hpp"
#include "sqlite/schema.hpp"
#include "sqlite/store_impl.hpp"

namespace admit {

SqliteStore::Impl::Impl(SqliteStoreOptions o) : opt(std::move(o)), db(opt.path) {
  if (opt.path.empty()) throw ValidationError("path", opt.path, "must name a file");
  if (opt.write_behind_interval <= 0) {
    throw ValidationError("write_behind_interval", std::to_string(opt.write_behind_interval),
                          "must be > 0");
  }
  if (opt.busy_timeout.count() < 0 || opt.busy_timeout.count() > INT_MAX) {
    throw ValidationError("busy_timeout", std::to_string(opt.busy_timeout.count()),
                          "must be 0 to 2^31-1 ms");
  }
  validate_audit_retention(opt.audit_retention);
  db.open(opt.busy_timeout, !per_op());
  sqlite_store::migrate(db);

  db.prepare_transactions();
  get_state = db.prepare(
      "SELECT a, b FROM state WHERE ns = ?1 AND entity = ?2 AND resource = ?3 AND "
      "limit_name = ?4 AND limit_kind = ?5");
  put_state = db.prepare(
      "INSERT INTO state (ns, entity, resource, limit_name, limit_kind, a, b) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
      "ON CONFLICT (ns, entity, resource, limit_name, limit_kind) "
      "DO UPDATE SET a = excluded.a, b = excluded.b");
  del_state = db.prepare(
      "DELETE FROM state WHERE ns = ?1 AND entity = ?2 AND resource = ?3 AND "
      "limit_name = ?4 AND limit_kind = ?5");
  get_holds = db.prepare(
      "SELECT lease, amount, expiry FROM holds WHERE ns = ?1 AND entity = ?2 AND "
      "resource = ?3 AND limit_name = ?4 ORDER BY rowid");
  del_holds = db.prepare(
      "DELETE FROM holds WHERE ns = ?1 AND entity = ?2 AND resource = ?3 AND limit_name = ?4");
  put_hold = db.prepare(
      "INSERT INTO holds (ns, entity, resource, limit_name, lease, amount, expiry) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  ns_put = db.prepare("INSERT INTO namespaces (name) VALUES (?1) ON CONFLICT (name) DO NOTHING");
  ns_get = db.prepare("SELECT id FROM namespaces WHERE name = ?1");
  ns_del_state = db.prepare("DELETE FROM state WHERE ns = ?1");
  ns_del_holds = db.prepare("DELETE FROM holds WHERE ns = ?1");
  prune_groups = db.prepare(
      "SELECT COUNT(*) FROM (SELECT 1 FROM holds GROUP BY ns, entity, resource, limit_name "
      "HAVING MAX(expiry) <= ?1)");
  prune_holds = db.prepare("DELETE FROM holds WHERE expiry <= ?1");
  prune_state = db.prepare("DELETE FROM state WHERE a < ?1");
  count_keys = db.prepare(
      "SELECT (SELECT COUNT(*) FROM state) + (SELECT COUNT(*) FROM (SELECT DISTINCT ns, "
      "entity, resource, limit_name FROM holds))");
  cfg_put = db.prepare(
      "INSERT INTO config (ns, kind, entity, resource, value) VALUES (?1, ?2, ?3, ?4, ?5) "
      "ON CONFLICT (ns, kind, entity, resource) DO UPDATE SET value = excluded.value");
  cfg_del = db.prepare(
      "DELETE FROM config WHERE ns = ?1 AND kind = ?2 AND entity = ?3 AND resource = ?4");
  cfg_del_all = db.prepare("DELETE FROM config WHERE ns = ?1");
  cfg_get = db.prepare(
      "SELECT value FROM config WHERE ns = ?1 AND kind = ?2 AND entity = ?3 AND resource = ?4");
  cfg_list = db.prepare("SELECT kind, entity, resource, value FROM config WHERE ns = ?1");
  ns_list = db.prepare("SELECT name FROM namespaces ORDER BY name");
  ns_rows = db.prepare(
      "SELECT entity, resource, limit_name, limit_kind, a, b FROM state WHERE ns = ?1 "
      "ORDER BY entity, resource, limit_name, limit_kind");
  ns_holds = db.prepare(
      "SELECT entity, resource, limit_name, lease, amount, expiry FROM holds WHERE ns = ?1 "
      "ORDER BY entity, resource, limit_name, rowid");
  lease_get = db.prepare("SELECT data, expiry FROM leases WHERE ns = ?1 AND grp = ?2 AND id = ?3");
  // An op's change (per_op): as a MemoryStore, a put of expiry 0 keeps a stored record's expiry.
  lease_put = db.prepare(
      "INSERT INTO leases (ns, grp, id, data, expiry) VALUES (?1, ?2, ?3, ?4, ?5) "
      "ON CONFLICT (ns, grp, id) DO UPDATE SET data = excluded.data, "
      "expiry = CASE excluded.expiry WHEN 0 THEN leases.expiry ELSE excluded.expiry END");
  // A cached record as it is (write_behind's flush).
  lease_replace = db.prepare(
      "INSERT INTO leases (ns, grp, id, data, expiry) VALUES (?1, ?2, ?3, ?4, ?5) "
      "ON CONFLICT (ns, grp, id) DO UPDATE SET data = excluded.data, expiry = excluded.expiry");
  lease_del = db.prepare("DELETE FROM leases WHERE ns = ?1 AND grp = ?2 AND id = ?3");
  ns_del_leases = db.prepare("DELETE FROM leases WHERE ns = ?1");
  prune_leases = db.prepare("DELETE FROM leases WHERE expiry <= ?1");
  prepare_audit();
  prepare_learned();

  if (!per_op()) start_flusher();
}

// ---- the op paths (inline into SqliteStore::apply, as when they were defined in the class) ----

inline bool SqliteStore::Impl::apply_per_op(const Op& op, std::span<ItemResult> results) {
  const bool writes = detail::consumes(op.kind) || op.kind == OpKind::reset;
  bool ok = false;
  {
    Txn txn(db, writes);
    try {
      // A durable lease's record is checked, and changed, in the transaction of its usage.
      if (detail::guards_record(op)) check_file_record(op);
      resolve(op);
      Access acc{*this};
      ok = detail::run(op, results, acc);
      for (const Entry* e : dirty) write(*e);
      write_record_change(op, detail::record_change(op, ok));
      txn.commit();
    } catch (...) {
      drop_cache();
      throw;
    }
  }
  drop_cache();
  durable = ++ops;
  if (inserted_since_prune >= prune_at) {
    try {
      prune_locked(op.now);
    } catch (const StoreUnavailable&) {  // the op is done; pruning is retried later
    }
  }
  return ok;
}

inline bool SqliteStore::Impl::apply_write_behind(const Op& op, std::span<ItemResult> results) {
  if (flush_error) throw StoreUnavailable(*flush_error);
  // Loads only, and checks: a failure (or LeaseNotFound) changes nothing.
  Record* rec = nullptr;
  if (detail::guards_record(op)) {
    rec = &cached_record(op);
    detail::check_record(op, rec->present ? &rec->data : nullptr, rec->expiry);
  } else if (op.kind == OpKind::acquire && !op.lease_record.empty()) {
    rec = &cached_record(op);
  }
  resolve(op);
  Access acc{*this};
  const bool ok = detail::run(op, results, acc);
  // The record goes to the file with the entries the op dirtied, in one flush.
  if (rec != nullptr) change_record(*rec, detail::record_change(op, ok));
  ++ops;
  if (cache.size() + records.size() >= prune_at) {
    try {
      prune_locked(op.now);
    } catch (const StoreUnavailable&) {  // a failed flush is in flush_error
    }
  }
  return ok;
}

// ---- pruning and size ----

std::int64_t SqliteStore::Impl::count_locked() {
  Query q(db, count_keys);
  if (!q.step()) db.fail("count keys");
  return q.col(0);
}

std::size_t SqliteStore::Impl::prune_locked(Micros now) {
  if (!per_op()) flush_locked();
  std::int64_t groups = 0;
  std::int64_t states = 0;
  std::int64_t leases = 0;
  std::int64_t remaining = 0;
  {
    Txn txn(db, true);
    {
      Query q(db, prune_groups);
      q.bind(1, now);
      if (q.step()) groups = q.col(0);
    }
    {
      Query q(db, prune_holds);
      q.bind(1, now);
      q.step();
    }
    {
      Query q(db, prune_state);
      q.bind(1, now);
      q.step();
      states = sqlite3_changes64(db.get());
    }
    {
      Query q(db, prune_leases);
      q.bind(1, now);
      q.step();
      leases = sqlite3_changes64(db.get());
    }
    {
      Query q(db, learned_prune);  // not usage state: not counted
      q.bind(1, now);
      q.step();
    }
    remaining = count_locked();
    txn.commit();
  }
  expired_leases.fetch_add(static_cast<std::uint64_t>(leases), std::memory_order_relaxed);
  // write_behind: everything is flushed, so the file holds what the cache held; drop it
  // (rows are loaded again on use). This is what bounds the cache's memory.
  if (!per_op()) drop_cache();
  inserted_since_prune = 0;
  prune_at = std::max(sqlite_store::kMinPruneAt, 2 * static_cast<std::size_t>(remaining));
  return static_cast<std::size_t>(states + groups + leases);
}

// ---- SqliteStore ----

SqliteStore::SqliteStore(SqliteStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

SqliteStore::~SqliteStore() = default;

bool SqliteStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  return im.per_op() ? im.apply_per_op(op, results) : im.apply_write_behind(op, results);
}

std::optional<LeaseRecord> SqliteStore::get_lease(const Namespace& ns, std::string_view group,
                                                  std::uint64_t lease_id, Micros now) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  LeaseRecord rec;
  bool has = false;
  const auto cached = im.per_op()
                          ? im.records.end()
                          : im.records.find(sqlite_store::record_key(ns.id, group, lease_id));
  if (cached != im.records.end()) {  // write_behind: the cache is the truth for what it holds
    has = cached->second.present;
    if (has) rec = LeaseRecord{cached->second.data, cached->second.expiry};
  } else {
    Impl::Txn txn(im.db, false);
    has = im.read_record(ns.id, group, lease_id, rec.data, rec.expiry);
    txn.commit();
  }
  if (!has || rec.expiry <= now) return std::nullopt;
  return rec;
}

Namespace SqliteStore::open_namespace(std::string_view name) {
  validate_name("namespace", name);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  std::int64_t id = 0;
  {
    Impl::Txn txn(im.db, true);
    {
      Impl::Query q(im.db, im.ns_put);
      q.bind(1, name);
      q.step();
    }
    {
      Impl::Query q(im.db, im.ns_get);
      q.bind(1, name);
      if (!q.step()) im.db.fail("read namespace id");
      id = q.col(0);
    }
    txn.commit();
  }
  if (id <= 0 || id > static_cast<std::int64_t>(UINT32_MAX)) {
    throw StoreUnavailable("sqlite store '" + im.opt.path + "': namespace id " +
                           std::to_string(id) + " out of range");
  }
  return Namespace{std::string(name), static_cast<std::uint32_t>(id)};
}

void SqliteStore::reset_namespace(const Namespace& ns) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  {
    Impl::Txn txn(im.db, true);
    im.delete_usage(ns.id);
    txn.commit();
  }
  im.drop_cached(ns.id);
}

std::vector<std::string> SqliteStore::namespaces() const {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  std::vector<std::string> out;
  Impl::Txn txn(im.db, false);
  {
    Impl::Query q(im.db, im.ns_list);
    while (q.step()) out.push_back(q.text(0));
  }
  txn.commit();
  return out;
}

std::size_t SqliteStore::prune(Micros now) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  return im.prune_locked(now);
}

std::size_t SqliteStore::size() const {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  if (!im.per_op()) im.flush_locked();
  return static_cast<std::size_t>(im.count_locked());
}

std::optional<std::uint64_t> SqliteStore::expired_leases() const {
  return impl_->expired_leases.load(std::memory_order_relaxed);
}

StoreCapabilities SqliteStore::capabilities() const {
  StoreCapabilities c;
  c.durable = impl_->per_op();
  c.leases = true;
  c.audit = true;
  c.learned = true;
  return c;
}

void SqliteStore::flush() {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  if (!im.per_op()) im.flush_locked();
}

std::uint64_t SqliteStore::durable_ops() const {
  std::lock_guard g(impl_->mu);
  return impl_->durable;
}

const SqliteStoreOptions& SqliteStore::options() const { return impl_->opt; }

}  // namespace admit
