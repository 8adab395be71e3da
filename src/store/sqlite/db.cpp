#include "db.hpp"

#include "admit/core/error.hpp"

namespace admit::sqlite_store {

void Db::open(std::chrono::milliseconds busy_timeout, bool exclusive) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path_.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  db_.reset(raw);
  if (rc != SQLITE_OK) {
    throw StoreUnavailable("sqlite store '" + path_ + "': cannot open: " +
                           (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(db_.get(), 1);
  sqlite3_busy_timeout(db_.get(), static_cast<int>(busy_timeout.count()));
  // write_behind: the first lock taken is kept until the store closes. Set before the
  // first WAL access, so the WAL index lives in this process's heap (no -shm sharing).
  if (exclusive) exec("PRAGMA locking_mode=EXCLUSIVE", "set locking mode");
  {
    StmtPtr jm = prepare("PRAGMA journal_mode=WAL", false);
    if (sqlite3_step(jm.get()) != SQLITE_ROW) fail("enable WAL");
    const auto* mode = sqlite3_column_text(jm.get(), 0);
    const std::string got = mode != nullptr ? reinterpret_cast<const char*>(mode) : "";
    if (got != "wal") {
      throw StoreUnavailable("sqlite store '" + path_ + "': cannot enable WAL (journal mode " +
                             got + ")");
    }
  }
  exec("PRAGMA synchronous=FULL", "set synchronous=FULL");
}

void Db::prepare_transactions() {
  begin_write = prepare("BEGIN IMMEDIATE");
  begin_read = prepare("BEGIN");
  commit = prepare("COMMIT");
  rollback = prepare("ROLLBACK");
}

void Db::fail(std::string_view what) const {
  throw StoreUnavailable("sqlite store '" + path_ + "': " + std::string(what) + ": " +
                         sqlite3_errmsg(db_.get()));
}

void Db::exec(const char* sql, std::string_view what) {
  if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(what);
}

StmtPtr Db::prepare(const char* sql, bool persistent) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_.get(), sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0, &s,
                         nullptr) != SQLITE_OK) {
    sqlite3_finalize(s);
    fail("prepare");
  }
  return StmtPtr(s);
}

}  // namespace admit::sqlite_store
