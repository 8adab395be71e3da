#include "schema.hpp"

#include <iterator>
#include <string>

#include "admit/core/error.hpp"
#include "admit/store/sqlite_store.hpp"

namespace admit::sqlite_store {

namespace {

// Schema migrations: kMigrations[v] takes a file from version v to v + 1, inside the opening
// transaction. Version 0 is an empty (or new) file.
//   state: one row per rate / adaptive / window limit of a key. Rate and adaptive: a = TAT
//          (µs since the epoch), b = TAT remainder (in 1/r µs of the limit's interval).
//          Window: a = end of the window counted in (µs since the epoch), b = units used.
//   holds: one row per lease holding slots of a concurrency limit of a key.
//   config (version 2): one row per configuration entry (Store::put_config); kind is
//          to_string(ConfigKind), entity / resource are '' where the kind has none.
//   leases (version 3): one row per durable lease record (Op::lease_record), keyed by the
//          namespace, the op's group and the lease id (the uint64 bit-cast to a signed
//          INTEGER, as holds.lease); data is the record's opaque bytes, expiry µs since the
//          epoch (a record with expiry <= now is gone).
//   audit (version 4): the audit log (Store::append_audit), one row per event, keyed by the
//          namespace and the event's id; time_us is µs since the epoch, state_before and
//          state_after JSON text ('' for none). audit_seq: the last id given per namespace,
//          so ids are never given twice, whatever rows the retention deleted.
//   learned (version 5): one row per learned entry (Store::put_learned); kind is
//          to_string(LearnedKind), limit_name '' for learned limits; version and rank the
//          precedence, expires_at µs since the epoch (a row with expires_at <= now is gone),
//          value the entry's text.
// Strings are stored as they are (no escaping needed: every part is its own column).
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE namespaces (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE
);
CREATE TABLE state (
  ns INTEGER NOT NULL,
  entity TEXT NOT NULL,
  resource TEXT NOT NULL,
  limit_name TEXT NOT NULL,
  limit_kind TEXT NOT NULL,
  a INTEGER NOT NULL,
  b INTEGER NOT NULL,
  PRIMARY KEY (ns, entity, resource, limit_name, limit_kind)
) WITHOUT ROWID;
CREATE TABLE holds (
  ns INTEGER NOT NULL,
  entity TEXT NOT NULL,
  resource TEXT NOT NULL,
  limit_name TEXT NOT NULL,
  lease INTEGER NOT NULL,
  amount INTEGER NOT NULL,
  expiry INTEGER NOT NULL
);
CREATE INDEX holds_by_key ON holds (ns, entity, resource, limit_name);
)sql",
    R"sql(
CREATE TABLE config (
  ns INTEGER NOT NULL,
  kind TEXT NOT NULL,
  entity TEXT NOT NULL,
  resource TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (ns, kind, entity, resource)
) WITHOUT ROWID;
)sql",
    R"sql(
CREATE TABLE leases (
  ns INTEGER NOT NULL,
  grp TEXT NOT NULL,
  id INTEGER NOT NULL,
  data BLOB NOT NULL,
  expiry INTEGER NOT NULL,
  PRIMARY KEY (ns, grp, id)
) WITHOUT ROWID;
)sql",
    R"sql(
CREATE TABLE audit (
  ns INTEGER NOT NULL,
  id INTEGER NOT NULL,
  time_us INTEGER NOT NULL,
  principal TEXT NOT NULL,
  action TEXT NOT NULL,
  entity TEXT NOT NULL,
  resource TEXT NOT NULL,
  state_before TEXT NOT NULL,
  state_after TEXT NOT NULL,
  PRIMARY KEY (ns, id)
);
CREATE TABLE audit_seq (
  ns INTEGER PRIMARY KEY,
  last INTEGER NOT NULL
);
)sql",
    R"sql(
CREATE TABLE learned (
  ns INTEGER NOT NULL,
  kind TEXT NOT NULL,
  entity TEXT NOT NULL,
  resource TEXT NOT NULL,
  limit_name TEXT NOT NULL,
  version INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (ns, kind, entity, resource, limit_name)
) WITHOUT ROWID;
)sql",
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion);

int user_version(Db& db) {
  StmtPtr s = db.prepare("PRAGMA user_version", false);
  if (sqlite3_step(s.get()) != SQLITE_ROW) db.fail("read schema version");
  return sqlite3_column_int(s.get(), 0);
}

}  // namespace

void migrate(Db& db) {
  constexpr int kSchemaVersion = SqliteStore::kSchemaVersion;
  db.exec("BEGIN IMMEDIATE", "begin schema check");
  try {
    const int v = user_version(db);
    if (v > kSchemaVersion) throw IncompatibleSchema(db.path(), v, kSchemaVersion);
    if (v < 0) {
      throw StoreUnavailable("sqlite store '" + db.path() + "': bad schema version " +
                             std::to_string(v));
    }
    for (int from = v; from < kSchemaVersion; ++from) {
      db.exec(kMigrations[from], "migrate schema");
    }
    if (v != kSchemaVersion) {
      const std::string set = "PRAGMA user_version = " + std::to_string(kSchemaVersion);
      db.exec(set.c_str(), "set schema version");
    }
    db.exec("COMMIT", "commit schema");
  } catch (...) {
    if (sqlite3_get_autocommit(db.get()) == 0) {
      sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    throw;
  }
}

}  // namespace admit::sqlite_store
