// SqliteStore's connection: an RAII wrapper over one sqlite3 connection and its prepared
// statements. Every failure throws StoreUnavailable naming the file and SQLite's message.
// Query and Txn run on every operation and stay inline. Internal header.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace admit::sqlite_store {

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

struct DbDeleter {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbDeleter>;

// One connection to the file at `path`, with the statements that begin and end transactions.
// Statements prepared from it must be finalised before it is destroyed (declare them after it).
class Db {
 public:
  explicit Db(std::string path) : path_(std::move(path)) {}

  /**
   * Opens (or creates) the file: extended result codes, busy_timeout, journal_mode=WAL,
   * synchronous=FULL; `exclusive` (write_behind) sets locking_mode=EXCLUSIVE before the first
   * WAL access, so the WAL index lives in this process's heap (no -shm sharing).
   */
  void open(std::chrono::milliseconds busy_timeout, bool exclusive);
  // Prepares begin_write / begin_read / commit / rollback (after the schema is in place).
  void prepare_transactions();

  sqlite3* get() const { return db_.get(); }
  const std::string& path() const { return path_; }

  // ---- helpers (all throw StoreUnavailable naming the file) ----

  [[noreturn]] void fail(std::string_view what) const;
  void exec(const char* sql, std::string_view what);
  StmtPtr prepare(const char* sql, bool persistent = true);
  // Steps `s` once (it must finish: no row) and resets it.
  void run_once(const StmtPtr& s, std::string_view what);

 private:
  std::string path_;
  DbPtr db_;  // before the statements below: closed after they are finalised

 public:
  StmtPtr begin_write, begin_read, commit, rollback;
};

// One execution of a prepared statement: binds, steps, resets on destruction.
class Query {
 public:
  Query(const Db& db, const StmtPtr& s) : db_(db), s_(s.get()) {}
  ~Query() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& bind(int i, std::int64_t v) {
    if (sqlite3_bind_int64(s_, i, v) != SQLITE_OK) db_.fail("bind");
    return *this;
  }
  // The text must outlive the query (SQLITE_STATIC); embedded NULs are kept.
  Query& bind(int i, std::string_view v) {
    if (v.size() > static_cast<std::size_t>(INT_MAX)) db_.fail("bind: string too long");
    if (sqlite3_bind_text(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                          SQLITE_STATIC) != SQLITE_OK) {
      db_.fail("bind");
    }
    return *this;
  }
  // Opaque bytes (durable lease records) as a BLOB; empty is a zero-length BLOB, never NULL.
  // The bytes must outlive the query (SQLITE_STATIC).
  Query& bind_blob(int i, std::string_view v) {
    if (v.size() > static_cast<std::size_t>(INT_MAX)) db_.fail("bind: blob too long");
    if (sqlite3_bind_blob(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                          SQLITE_STATIC) != SQLITE_OK) {
      db_.fail("bind");
    }
    return *this;
  }
  /// @return true for a row, false when done.
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.fail(sqlite3_sql(s_));
  }
  std::int64_t col(int i) const { return sqlite3_column_int64(s_, i); }
  /// SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB or SQLITE_NULL: what column i of
  /// the row holds (col() and text() convert any of them).
  int type(int i) const { return sqlite3_column_type(s_, i); }
  std::string text(int i) const {
    const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    if (t == nullptr) return {};
    return std::string(t, static_cast<std::size_t>(sqlite3_column_bytes(s_, i)));
  }
  std::string blob(int i) const {
    const void* b = sqlite3_column_blob(s_, i);
    if (b == nullptr) return {};  // NULL or a zero-length BLOB
    return std::string(static_cast<const char*>(b),
                       static_cast<std::size_t>(sqlite3_column_bytes(s_, i)));
  }

 private:
  const Db& db_;
  sqlite3_stmt* s_;
};

inline void Db::run_once(const StmtPtr& s, std::string_view what) {
  Query q(*this, s);
  if (sqlite3_step(s.get()) != SQLITE_DONE) fail(what);
}

// A transaction, rolled back unless committed.
class Txn {
 public:
  Txn(Db& db, bool write) : db_(db) {
    db.run_once(write ? db.begin_write : db.begin_read, write ? "begin immediate" : "begin");
  }
  ~Txn() {
    if (!done_ && sqlite3_get_autocommit(db_.get()) == 0) {
      sqlite3_step(db_.rollback.get());
      sqlite3_reset(db_.rollback.get());
    }
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  void commit() {
    db_.run_once(db_.commit, "commit");
    done_ = true;
  }

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace admit::sqlite_store
