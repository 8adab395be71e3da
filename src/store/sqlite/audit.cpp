// SqliteStore's audit log (Store::append_audit / read_audit): the `audit` table (schema
// version 4) and `audit_seq`, the last id given per namespace. An append is its own BEGIN
// IMMEDIATE ... COMMIT in both durability modes (write_behind caches no event), so it is on disk
// when it returns and the ids of every process on the file follow the order of their appends.
// Reads come from the file; a row that is not a valid event is skipped.
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "admit/core/error.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

constexpr std::int64_t kMaxId = std::numeric_limits<std::int64_t>::max();

}  // namespace

void SqliteStore::Impl::prepare_audit() {
  // The next id of a namespace: 1 for its first event, then one more than the last given.
  audit_next = db.prepare(
      "INSERT INTO audit_seq (ns, last) VALUES (?1, 1) "
      "ON CONFLICT (ns) DO UPDATE SET last = last + 1 RETURNING last");
  audit_put = db.prepare(
      "INSERT INTO audit (ns, id, time_us, principal, action, entity, resource, state_before, "
      "state_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  // Retention: keeps the ids above ?2 (the newest audit_retention of a namespace).
  audit_trim = db.prepare("DELETE FROM audit WHERE ns = ?1 AND id <= ?2");
  // Walked through the primary key's index (ns, id), row by row: a read stops stepping when it
  // has its events, whatever the filters skip.
  constexpr const char* kSelect =
      "SELECT id, time_us, principal, action, entity, resource, state_before, state_after "
      "FROM audit WHERE ns = ?1 AND id > ?2 AND id < ?3 AND (?4 = '' OR entity = ?4) AND "
      "(?5 = '' OR resource = ?5) ORDER BY id ";
  audit_asc = db.prepare((std::string(kSelect) + "ASC").c_str());
  audit_desc = db.prepare((std::string(kSelect) + "DESC").c_str());
}

std::uint64_t SqliteStore::append_audit(const Namespace& ns, AuditEvent event) {
  validate_audit_event(event);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  std::int64_t id = 0;
  Impl::Txn txn(im.db, true);
  {
    Impl::Query q(im.db, im.audit_next);
    q.bind(1, static_cast<std::int64_t>(ns.id));
    if (!q.step()) im.db.fail("audit: next id");
    // A sequence that is not a positive integer below 2^63 - 1 (a hand-edited file) is refused
    // rather than wrapped or reused.
    if (q.type(0) != SQLITE_INTEGER || q.col(0) <= 0 || q.col(0) == kMaxId) {
      throw StoreUnavailable("sqlite store '" + im.opt.path + "': audit_seq of namespace " +
                             std::to_string(ns.id) + " holds '" + printable(q.text(0)) +
                             "', not an id");
    }
    id = q.col(0);
  }
  {
    Impl::Query q(im.db, im.audit_put);
    q.bind(1, static_cast<std::int64_t>(ns.id))
        .bind(2, id)
        .bind(3, event.time)
        .bind(4, event.principal)
        .bind(5, event.action)
        .bind(6, event.entity)
        .bind(7, event.resource)
        .bind(8, event.before)
        .bind(9, event.after);
    q.step();
  }
  const auto keep = static_cast<std::uint64_t>(im.opt.audit_retention);
  if (static_cast<std::uint64_t>(id) > keep) {
    Impl::Query q(im.db, im.audit_trim);
    q.bind(1, static_cast<std::int64_t>(ns.id)).bind(2, id - static_cast<std::int64_t>(keep));
    q.step();
  }
  txn.commit();
  return static_cast<std::uint64_t>(id);
}

std::vector<AuditEvent> SqliteStore::read_audit(const Namespace& ns, const AuditQuery& query) {
  validate_audit_query(query);
  std::vector<AuditEvent> out;
  // Ids are positive INTEGERs below 2^63 - 1: bounds beyond that select nothing.
  if (query.after_id >= static_cast<std::uint64_t>(kMaxId)) return out;
  const std::int64_t above = static_cast<std::int64_t>(query.after_id);
  const std::int64_t below =
      query.before_id == 0 || query.before_id > static_cast<std::uint64_t>(kMaxId)
          ? kMaxId
          : static_cast<std::int64_t>(query.before_id);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  Impl::Txn txn(im.db, false);
  {
    Impl::Query q(im.db, query.newest_first ? im.audit_desc : im.audit_asc);
    q.bind(1, static_cast<std::int64_t>(ns.id))
        .bind(2, above)
        .bind(3, below)
        .bind(4, query.entity)
        .bind(5, query.resource);
    while (out.size() < query.limit && q.step()) {
      if (q.type(0) != SQLITE_INTEGER || q.type(1) != SQLITE_INTEGER || q.col(0) <= 0) continue;
      AuditEvent e{static_cast<std::uint64_t>(q.col(0)),
                   q.col(1),
                   q.text(2),
                   q.text(3),
                   q.text(4),
                   q.text(5),
                   q.text(6),
                   q.text(7)};
      try {
        validate_audit_event(e);
      } catch (const ValidationError&) {
        continue;  // not an event this store wrote
      }
      out.push_back(std::move(e));
    }
  }
  txn.commit();
  return out;
}

}  // namespace admit
