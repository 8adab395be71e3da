// SqliteStore beyond the conformance suite: its file (schema version, migration, listable rows),
// errors, several processes on one file, and what survives a SIGKILL in each durability mode.
// Processes are synchronised with pipes and waitpid only (no sleeps); files live in a fresh
// mkdtemp directory removed at the end.
#include "admit/store/sqlite_store.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using test::available;
using test::cat;
using test::kStart;
using test::take;

constexpr Micros kSec = kMicrosPerSecond;

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
using test::TempDir;

SqliteStoreOptions opts(const std::string& path, Durability d = Durability::per_op) {
  SqliteStoreOptions o;
  o.path = path;
  o.durability = d;
  return o;
}

// ---- raw SQLite, to look at the file as another tool would ----

struct RawDb {
  explicit RawDb(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) ADD_FAILURE() << sqlite3_errmsg(db);
  }
  ~RawDb() { sqlite3_close(db); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << (err != nullptr ? err : "?");
    }
    sqlite3_free(err);
  }
  /// Every row of `sql`, columns joined by '|'.
  std::vector<std::string> rows(const std::string& sql) {
    std::vector<std::string> out;
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
      return out;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        if (i > 0) row += '|';
        const auto* t = sqlite3_column_text(s, i);
        row += t != nullptr ? reinterpret_cast<const char*>(t) : "NULL";
      }
      out.push_back(row);
    }
    sqlite3_finalize(s);
    return out;
  }
  sqlite3* db = nullptr;
};

// ---- processes and pipes ----

/// Runs `body` in a forked child, which exits with its return value (97 on an exception)
/// without returning into the test framework.
pid_t spawn(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    int rc = 97;
    try {
      rc = body();
    } catch (const std::exception& e) {
      const std::string msg = std::string("child: ") + e.what() + "\n";
      (void)!write(2, msg.data(), msg.size());
    }
    _exit(rc);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

bool write_all(int fd, const void* p, std::size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// false at end of file (or error) before n bytes.
bool read_all(int fd, void* p, std::size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

struct Pipe {
  Pipe() {
    if (pipe(fd) != 0) ADD_FAILURE() << "pipe: " << std::strerror(errno);
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  void close_read() {
    if (fd[0] >= 0) close(fd[0]);
    fd[0] = -1;
  }
  void close_write() {
    if (fd[1] >= 0) close(fd[1]);
    fd[1] = -1;
  }
  int fd[2] = {-1, -1};
};

/// A Limiter over `store` at the fixed instant kStart with one large daily bucket "rpd": every
/// acquire of 1 takes exactly one unit and nothing refills worth a unit.
struct Counter {
  static constexpr std::int64_t kCap = 1'000'000'000;
  explicit Counter(Store& store) : limiter(store, clock) {
    limiter.set_limits("m", {Limit::per_day("rpd", kCap)});
  }
  bool acquire() {
    Lease l = limiter.try_acquire("u", "m", {{"rpd", 1}});
    const bool ok = l.allowed();
    l.commit();
    return ok;
  }
  std::int64_t consumed() { return kCap - available(limiter, "u", "m", "rpd"); }
  ManualClock clock{kStart};
  Limiter limiter;
};

std::int64_t consumed_in(const std::string& path) {
  SqliteStore store(opts(path));
  Counter c(store);
  return c.consumed();
}

// ------------------------------------------------------------------------ the file

// Verifies a new file gets schema version 5, and a file from a newer version is refused with
// IncompatibleSchema naming the file and both versions, and left untouched.
TEST(SqliteStoreFile, SchemaVersionIsCheckedNewerIsRefused) {
  static_assert(SqliteStore::kSchemaVersion == 5);
  TempDir dir;
  const std::string path = dir.file("state.db");
  { SqliteStore store(opts(path)); }
  {
    RawDb raw(path);
    EXPECT_EQ(raw.rows("PRAGMA user_version"), std::vector<std::string>{"5"});
    raw.exec("PRAGMA user_version = 6");
  }
  try {
    SqliteStore store(opts(path));
    ADD_FAILURE() << "opened a version 6 file";
  } catch (const IncompatibleSchema& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_EQ(e.version(), 6);
    EXPECT_EQ(e.supported(), SqliteStore::kSchemaVersion);
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("version 6"), std::string::npos) << what;
    EXPECT_NE(what.find("version 5"), std::string::npos) << what;
  }
  EXPECT_THROW(SqliteStore(opts(path, Durability::write_behind)), IncompatibleSchema);
  RawDb raw(path);
  EXPECT_EQ(raw.rows("PRAGMA user_version"), std::vector<std::string>{"6"});
}

// Verifies a version 1 file (written here with version 1's DDL, as admit 0.1 did) is migrated
// to version 5 when opened, in both modes, keeping its namespaces, state rows and holds; the
// new config table then works.
TEST(SqliteStoreFile, Version1FileIsMigratedKeepingItsState) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    const std::string path = dir.file(d == Durability::per_op ? "a.db" : "b.db");
    {
      RawDb raw(path);
      raw.exec(R"sql(
BEGIN;
CREATE TABLE namespaces (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE state (
  ns INTEGER NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL,
  limit_name TEXT NOT NULL, limit_kind TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
  PRIMARY KEY (ns, entity, resource, limit_name, limit_kind)) WITHOUT ROWID;
CREATE TABLE holds (
  ns INTEGER NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL, limit_name TEXT NOT NULL,
  lease INTEGER NOT NULL, amount INTEGER NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX holds_by_key ON holds (ns, entity, resource, limit_name);
PRAGMA user_version = 1;
COMMIT;)sql");
      // u's rpm bucket: 4 of 10 taken at kStart (TAT = kStart + 4 * 6 s); one slot held.
      raw.exec(
          cat("INSERT INTO namespaces (id, name) VALUES (1, 'default');"
              "INSERT INTO state VALUES (1, 'u', 'm', 'rpm', 'rate', ",
              kStart + 24 * kSec,
              ", 0);"
              "INSERT INTO holds VALUES (1, 'u', 'm', 'slots', 7, 1, ",
              kStart + 60 * kSec, ");"));
    }
    {
      SqliteStore store(opts(path, d));
      ManualClock clock(kStart);
      Limiter limiter(store, clock);
      limiter.set_limits("m", {Limit::per_minute("rpm", 10), Limit::concurrency("slots", 3)});
      EXPECT_EQ(available(limiter, "u", "m", "rpm"), 6);
      EXPECT_EQ(available(limiter, "u", "m", "slots"), 2);
      const Namespace ns = store.open_namespace("default");
      EXPECT_EQ(ns.id, 1u);
      store.put_config(ns, {ConfigKind::parent, "u", ""}, "team");
      EXPECT_EQ(store.list_config(ns),
                (std::vector<ConfigEntry>{{ConfigKind::parent, "u", "", "team"}}));
    }
    RawDb raw(path);
    EXPECT_EQ(raw.rows("PRAGMA user_version"), std::vector<std::string>{"5"});
    EXPECT_EQ(raw.rows("SELECT ns, kind, entity, resource, value FROM config"),
              std::vector<std::string>{"1|parent|u||team"});
    EXPECT_EQ(raw.rows("SELECT entity, a FROM state"),
              std::vector<std::string>{cat("u|", kStart + 24 * kSec)});
  }
}

// Verifies a version 2 file (written here with version 2's DDL) is migrated to version 5 when
// opened, in both modes, keeping its state and configuration, and gains the leases table:
// a durable lease acquired there keeps its record in it.
TEST(SqliteStoreFile, Version2FileIsMigratedGainingLeases) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    const std::string path = dir.file(d == Durability::per_op ? "a.db" : "b.db");
    {
      RawDb raw(path);
      raw.exec(R"sql(
BEGIN;
CREATE TABLE namespaces (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE state (
  ns INTEGER NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL,
  limit_name TEXT NOT NULL, limit_kind TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
  PRIMARY KEY (ns, entity, resource, limit_name, limit_kind)) WITHOUT ROWID;
CREATE TABLE holds (
  ns INTEGER NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL, limit_name TEXT NOT NULL,
  lease INTEGER NOT NULL, amount INTEGER NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX holds_by_key ON holds (ns, entity, resource, limit_name);
CREATE TABLE config (
  ns INTEGER NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL,
  value TEXT NOT NULL, PRIMARY KEY (ns, kind, entity, resource)) WITHOUT ROWID;
PRAGMA user_version = 2;
COMMIT;)sql");
      // u's rpm bucket: 4 of 10 taken at kStart; u's parent configured.
      raw.exec(
          cat("INSERT INTO namespaces (id, name) VALUES (1, 'default');"
              "INSERT INTO state VALUES (1, 'u', 'm', 'rpm', 'rate', ",
              kStart + 24 * kSec,
              ", 0);"
              "INSERT INTO config VALUES (1, 'parent', 'u', '', 'team');"));
    }
    std::uint64_t id = 0;
    {
      SqliteStore store(opts(path, d));
      const Namespace ns = store.open_namespace("default");
      EXPECT_EQ(store.list_config(ns),
                (std::vector<ConfigEntry>{{ConfigKind::parent, "u", "", "team"}}));
      ManualClock clock(kStart);
      Limiter limiter(store, clock);
      limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
      EXPECT_EQ(available(limiter, "u", "m", "rpm"), 6);
      AcquireOptions durable;
      durable.durable = true;
      durable.lease_ttl = 60 * kSec;
      Lease l = limiter.try_acquire("v", "m", {{"rpm", 2}}, durable);
      ASSERT_TRUE(l.allowed()) << l.decision().reason;
      id = l.id();
      const std::string token = l.detach();
      ASSERT_TRUE(store.get_lease(ns, "v", id, kStart).has_value());
    }
    RawDb raw(path);
    EXPECT_EQ(raw.rows("PRAGMA user_version"), std::vector<std::string>{"5"});
    EXPECT_EQ(raw.rows("SELECT ns, grp, id, expiry FROM leases"),
              std::vector<std::string>{
                  cat("1|v|", std::bit_cast<std::int64_t>(id), "|", kStart + 60 * kSec)});
    EXPECT_EQ(raw.rows("SELECT entity, a FROM state WHERE entity = 'u'"),
              std::vector<std::string>{cat("u|", kStart + 24 * kSec)});
  }
}

// Verifies an empty file (version 0) is migrated in place, and state survives close and
// reopen in both durability modes.
TEST(SqliteStoreFile, EmptyFileIsMigratedAndReopenKeepsState) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    const std::string path = dir.file(d == Durability::per_op ? "a.db" : "b.db");
    { std::ofstream(path).flush(); }  // a 0-byte file: SQLite's empty database
    ASSERT_TRUE(std::filesystem::exists(path));
    {
      SqliteStore store(opts(path, d));
      Counter c(store);
      for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.acquire());
    }
    {
      SqliteStore store(opts(path, d));
      Counter c(store);
      EXPECT_EQ(c.consumed(), 5);
      ASSERT_TRUE(c.acquire());
    }
    EXPECT_EQ(consumed_in(path), 6);
    RawDb raw(path);
    EXPECT_EQ(raw.rows("PRAGMA user_version"), std::vector<std::string>{"5"});
  }
}

// Verifies the file stores the real strings of every key (listable), the lease id of a hold
// bit-cast to a signed INTEGER, and that a second store on the file sees the state at once.
TEST(SqliteStoreFile, RowsHoldTheRealKeyStrings) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  SqliteStore store(opts(path));
  ManualClock clock(kStart);
  LimiterOptions lo;
  lo.ns = "tenant";
  Limiter limiter(store, clock, lo);
  limiter.set_limits("gpt-4o", {Limit::per_minute("rpm", 10), Limit::daily("rpd", 100),
                                Limit::concurrency("inflight", 2)});
  Lease lease = limiter.try_acquire("user:1", "gpt-4o", {{"rpm", 3}, {"rpd", 4}});
  ASSERT_TRUE(lease.allowed());
  RawDb raw(path);
  EXPECT_EQ(raw.rows("SELECT n.name, s.entity, s.resource, s.limit_name, s.limit_kind "
                     "FROM state s JOIN namespaces n ON n.id = s.ns ORDER BY s.limit_name"),
            (std::vector<std::string>{"tenant|user:1|gpt-4o|rpd|window",
                                      "tenant|user:1|gpt-4o|rpm|rate"}));
  EXPECT_EQ(raw.rows("SELECT entity, resource, limit_name, lease, amount FROM holds"),
            std::vector<std::string>{
                cat("user:1|gpt-4o|inflight|", std::bit_cast<std::int64_t>(lease.id()), "|1")});
  SqliteStore second(opts(path));
  Limiter other(second, clock, lo);
  other.set_limits("gpt-4o", {Limit::per_minute("rpm", 10), Limit::daily("rpd", 100),
                              Limit::concurrency("inflight", 2)});
  EXPECT_EQ(available(other, "user:1", "gpt-4o", "rpm"), 7);
  EXPECT_EQ(available(other, "user:1", "gpt-4o", "inflight"), 1);
  lease.commit();
  EXPECT_EQ(available(other, "user:1", "gpt-4o", "inflight"), 2);
}

// Verifies capabilities and name per durability mode.
TEST(SqliteStoreFile, Capabilities) {
  TempDir dir;
  SqliteStore a(opts(dir.file("a.db")));
  EXPECT_EQ(a.name(), "sqlite");
  EXPECT_TRUE(a.capabilities().durable);
  EXPECT_FALSE(a.capabilities().distributed);
  EXPECT_FALSE(a.capabilities().server_time);
  EXPECT_TRUE(a.capabilities().leases);
  EXPECT_TRUE(a.capabilities().audit);
  SqliteStore b(opts(dir.file("b.db"), Durability::write_behind));
  EXPECT_FALSE(b.capabilities().durable);
  EXPECT_TRUE(b.capabilities().leases);
  EXPECT_TRUE(b.capabilities().audit);
  EXPECT_EQ(a.durable_ops(), 0u);
}

// ------------------------------------------------------------------------ errors

// Verifies bad options throw ValidationError, and a file SQLite cannot open or read throws
// StoreUnavailable naming the file (never a crash).
TEST(SqliteStoreErrors, BadOptionsAndUnreadableFiles) {
  TempDir dir;
  EXPECT_THROW(SqliteStore(opts("")), ValidationError);
  SqliteStoreOptions o = opts(dir.file("x.db"), Durability::write_behind);
  o.write_behind_interval = 0;
  EXPECT_THROW(SqliteStore{o}, ValidationError);
  o = opts(dir.file("x.db"));
  o.busy_timeout = std::chrono::milliseconds(-1);
  EXPECT_THROW(SqliteStore{o}, ValidationError);

  const std::string missing = dir.file("no/such/dir/state.db");
  try {
    SqliteStore store(opts(missing));
    ADD_FAILURE() << "opened " << missing;
  } catch (const StoreUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }

  const std::string garbage = dir.file("garbage.db");
  {
    std::ofstream f(garbage, std::ios::binary);
    for (int i = 0; i < 8192; ++i) f.put(static_cast<char>('x' + i % 3));
  }
  try {
    SqliteStore store(opts(garbage));
    ADD_FAILURE() << "opened " << garbage;
  } catch (const StoreUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find(garbage), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a database"), std::string::npos) << e.what();
  }
}

// Verifies a write_behind store locks its file exclusively: no other store (either mode) can
// open it while it is open, and it can once it closed.
TEST(SqliteStoreErrors, WriteBehindLocksTheFileExclusively) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  SqliteStoreOptions quick = opts(path);
  quick.busy_timeout = std::chrono::milliseconds(0);
  {
    SqliteStore owner(opts(path, Durability::write_behind));
    EXPECT_THROW(SqliteStore{quick}, StoreUnavailable);
    SqliteStoreOptions wb = quick;
    wb.durability = Durability::write_behind;
    EXPECT_THROW(SqliteStore{wb}, StoreUnavailable);
  }
  {
    SqliteStore user(quick);  // per_op: free again
    SqliteStoreOptions wb = quick;
    wb.durability = Durability::write_behind;
    EXPECT_THROW(SqliteStore{wb}, StoreUnavailable);  // and not while a per_op store is open
  }
  SqliteStore owner(opts(path, Durability::write_behind));
}

// Verifies a full disk (the file size limit, RLIMIT_FSIZE, in a child) makes the store throw
// StoreUnavailable naming the file (the acquire's decision: store_unavailable), and that every
// acquire acknowledged before it is on disk while the failed one changed nothing.
TEST(SqliteStoreErrors, DiskFullThrowsAndKeepsAcknowledgedOps) {
  TempDir dir;
  const std::string path = dir.file("full.db");
  { SqliteStore create(opts(path)); }
  Pipe p;
  const pid_t pid = spawn([&] {
    p.close_read();
    signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead of killing
    SqliteStore store(opts(path));
    ManualClock clock(kStart);
    Limiter limiter(store, clock);
    limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
    const rlimit lim{256 * 1024, 256 * 1024};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 2;
    const std::string pad(200, 'p');  // long keys: the file grows quickly
    for (std::uint64_t n = 0; n < 100'000; ++n) {
      const Decision d = take(limiter, cat("user-", n, pad), "m", {{"rpm", 1}});
      if (d.allowed) continue;
      if (d.code != Code::store_unavailable) return 3;
      // The Limiter reports the store's StoreUnavailable as a decision (fail closed).
      const std::string& msg = d.reason;
      const std::uint64_t len = msg.size();
      return write_all(p.fd[1], &n, 8) && write_all(p.fd[1], &len, 8) &&
                     write_all(p.fd[1], msg.data(), msg.size())
                 ? 0
                 : 4;
    }
    return 5;  // never full
  });
  p.close_write();
  std::uint64_t acked = 0;
  std::uint64_t len = 0;
  const bool got = read_all(p.fd[0], &acked, 8) && read_all(p.fd[0], &len, 8);
  std::string msg(got ? len : 0, '\0');
  const bool got_msg = got && read_all(p.fd[0], msg.data(), msg.size());
  const int status = wait_status(pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  ASSERT_TRUE(got_msg);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_GT(acked, 10u) << msg;

  SqliteStore store(opts(path));
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
  const std::string pad(200, 'p');
  for (std::uint64_t n = 0; n < acked; ++n) {
    ASSERT_EQ(available(limiter, cat("user-", n, pad), "m", "rpm"), 9) << n;
  }
  EXPECT_EQ(available(limiter, cat("user-", acked, pad), "m", "rpm"), 10);
}

// Verifies a write_behind store whose flush fails (file size limit in a child) stops
// acknowledging: apply() throws StoreUnavailable until a flush succeeds again, and then every
// acknowledged acquire reaches the file.
TEST(SqliteStoreErrors, WriteBehindFlushFailureStopsAcknowledging) {
  TempDir dir;
  const std::string path = dir.file("wb-full.db");
  { SqliteStore create(opts(path)); }
  Pipe p;
  const pid_t pid = spawn([&] {
    p.close_read();
    signal(SIGXFSZ, SIG_IGN);
    SqliteStoreOptions o = opts(path, Durability::write_behind);
    o.write_behind_interval = 3600 * kSec;  // flushes only when asked
    SqliteStore store(o);
    ManualClock clock(kStart);
    Limiter limiter(store, clock);
    limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
    rlimit lim{};
    if (getrlimit(RLIMIT_FSIZE, &lim) != 0) return 2;
    const rlim_t unlimited = lim.rlim_cur;
    lim.rlim_cur = 256 * 1024;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 2;
    const std::string pad(200, 'p');
    std::uint64_t acked = 0;
    bool failed = false;
    for (std::uint64_t n = 0; n < 100'000 && !failed; ++n) {
      if (!take(limiter, cat("user-", n, pad), "m", {{"rpm", 1}}).allowed) return 3;
      ++acked;
      if (n % 5 == 4) {
        try {
          store.flush();
        } catch (const StoreUnavailable&) {
          failed = true;
        }
      }
    }
    if (!failed) return 5;
    // No more acknowledgements while the changes cannot be written.
    if (take(limiter, "after-failure", "m", {{"rpm", 1}}).code != Code::store_unavailable) {
      return 6;
    }
    lim.rlim_cur = unlimited;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 2;
    store.flush();  // succeeds: the pending changes reach the file
    if (!take(limiter, "after-recovery", "m", {{"rpm", 1}}).allowed) return 7;
    ++acked;
    store.flush();
    return write_all(p.fd[1], &acked, 8) ? 0 : 4;
  });
  p.close_write();
  std::uint64_t acked = 0;
  const bool got = read_all(p.fd[0], &acked, 8);
  const int status = wait_status(pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  ASSERT_TRUE(got);
  SqliteStore store(opts(path));
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
  const std::string pad(200, 'p');
  for (std::uint64_t n = 0; n + 1 < acked; ++n) {
    ASSERT_EQ(available(limiter, cat("user-", n, pad), "m", "rpm"), 9) << n;
  }
  EXPECT_EQ(available(limiter, "after-failure", "m", "rpm"), 10);
  EXPECT_EQ(available(limiter, "after-recovery", "m", "rpm"), 9);
}

// Verifies the file does not grow with every key ever seen: once a store inserted as many rows
// as the file had live ones (at least 4096), it prunes idle rows by itself.
TEST(SqliteStoreFile, IdleRowsArePrunedAutomatically) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    SqliteStore store(opts(dir.file(d == Durability::per_op ? "a.db" : "b.db"), d));
    const Namespace ns = store.open_namespace("churn");
    const Limit rps = Limit::per_second("rps", 1);  // a key is idle 1 s after its use
    constexpr int kPerRound = 2100;
    constexpr int kBatch = 100;  // keys per operation: one transaction each
    Micros now = kStart;
    for (int round = 0; round < 2; ++round) {
      for (int first = 0; first < kPerRound; first += kBatch) {
        std::vector<std::string> names;
        for (int i = first; i < first + kBatch; ++i) names.push_back(cat("r", round, "-k", i));
        std::vector<KeyParts> keys;
        std::vector<OpItem> items;
        for (std::size_t i = 0; i < names.size(); ++i) {
          keys.push_back(KeyParts{names[i], "res"});
          items.push_back(OpItem{static_cast<std::uint16_t>(i), &rps, 1, 0});
        }
        std::vector<ItemResult> res(items.size());
        Op op;
        op.kind = OpKind::acquire;
        op.ns = &ns;
        op.now = now;
        op.keys = keys;
        op.items = items;
        ASSERT_TRUE(store.apply(op, res));
      }
      now += 2 * kSec;
    }
    // 4,200 keys were written; the prune at the 4,096th insert dropped the 2,100 of round 0.
    EXPECT_EQ(store.size(), static_cast<std::size_t>(kPerRound));
    EXPECT_EQ(store.prune(now), static_cast<std::size_t>(kPerRound));
    EXPECT_EQ(store.size(), 0u);
  }
}

// ------------------------------------------------------------------------ processes

// Verifies two processes acquiring on one limit of one file are admitted exactly the limit's
// capacity in total: no lost update, no double grant.
TEST(SqliteStoreProcesses, TwoProcessesAdmitExactlyTheCapacity) {
  TempDir dir;
  const std::string path = dir.file("shared.db");
  constexpr int kCapacity = 120;
  constexpr int kEach = 100;
  { SqliteStore create(opts(path)); }
  Pipe go;
  Pipe results;
  std::vector<pid_t> pids;
  for (int c = 0; c < 2; ++c) {
    pids.push_back(spawn([&] {
      go.close_write();
      results.close_read();
      SqliteStore store(opts(path));
      ManualClock clock(kStart);
      Limiter limiter(store, clock);
      limiter.set_limits("m", {Limit::per_day("rpd", kCapacity)});
      char start = 0;
      (void)read_all(go.fd[0], &start, 1);  // returns at EOF: the parent closed it
      std::uint64_t admitted = 0;
      for (int i = 0; i < kEach; ++i) admitted += take(limiter, "u", "m", {{"rpd", 1}}).allowed;
      return write_all(results.fd[1], &admitted, 8) ? 0 : 4;
    }));
  }
  go.close_write();  // both start together
  results.close_write();
  std::uint64_t total = 0;
  for (int c = 0; c < 2; ++c) {
    std::uint64_t n = 0;
    ASSERT_TRUE(read_all(results.fd[0], &n, 8));
    EXPECT_GT(n, 0u);
    total += n;
  }
  for (const pid_t pid : pids) {
    const int status = wait_status(pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_EQ(total, static_cast<std::uint64_t>(kCapacity));
  SqliteStore store(opts(path));
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  limiter.set_limits("m", {Limit::per_day("rpd", kCapacity)});
  EXPECT_EQ(available(limiter, "u", "m", "rpd"), 0);
}

/// What a killed child acknowledged: its last report before it died.
struct Acked {
  std::uint64_t ops = 0;      // acquires acknowledged
  std::uint64_t durable = 0;  // of which the store said were on disk
};

/**
 * Forks a child that acquires in a loop on `path` and reports (ops, durable) on a pipe after
 * every acknowledged acquire (`each` decides when to report and what is durable), kills it
 * with SIGKILL once the reports satisfy `enough`, and returns its last report.
 */
Acked run_and_kill(const std::string& path, SqliteStoreOptions o,
                   const std::function<bool(SqliteStore&, std::uint64_t)>& report_now,
                   const std::function<bool(const Acked&)>& enough) {
  Pipe p;
  const pid_t pid = spawn([&] {
    p.close_read();
    SqliteStore store(o);
    Counter c(store);
    for (std::uint64_t n = 1;; ++n) {
      if (!c.acquire()) return 3;
      if (!report_now(store, n)) continue;
      const std::uint64_t msg[2] = {n, store.durable_ops()};
      if (!write_all(p.fd[1], msg, sizeof msg)) return 4;
    }
  });
  p.close_write();
  Acked last;
  std::uint64_t msg[2];
  while (!enough(last) && read_all(p.fd[0], msg, sizeof msg)) last = Acked{msg[0], msg[1]};
  kill(pid, SIGKILL);
  while (read_all(p.fd[0], msg, sizeof msg)) last = Acked{msg[0], msg[1]};  // sent before death
  const int status = wait_status(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  (void)path;
  return last;
}

// Verifies per_op durability: a child acquiring in a loop is SIGKILLed mid-load (three times
// on one file); after each kill every acknowledged acquire is in the file, plus at most the
// one that committed but was not reported yet.
TEST(SqliteStoreCrash, PerOpKeepsEveryAcknowledgedAcquireAfterSigkill) {
  TempDir dir;
  const std::string path = dir.file("kill.db");
  { SqliteStore create(opts(path)); }
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(cat("round ", round));
    const std::int64_t before = consumed_in(path);
    const Acked a = run_and_kill(
        path, opts(path), [](SqliteStore&, std::uint64_t) { return true; },
        [](const Acked& x) { return x.ops >= 30; });
    ASSERT_GE(a.ops, 30u);
    EXPECT_EQ(a.durable, a.ops);  // per_op: durable when acknowledged
    const std::int64_t consumed = consumed_in(path) - before;
    EXPECT_GE(consumed, static_cast<std::int64_t>(a.ops));
    EXPECT_LE(consumed, static_cast<std::int64_t>(a.ops) + 1);
  }
}

// Verifies write_behind's bound with flushes the child forces: it reports after every 7th
// acquire, once flush() returned; after SIGKILL the file holds every reported acquire and at
// most the 7 of one flush more (the flush after the last report may have committed).
TEST(SqliteStoreCrash, WriteBehindLosesAtMostTheUnflushedOpsAfterSigkill) {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  constexpr std::uint64_t kEvery = 7;
  SqliteStoreOptions o = opts(path, Durability::write_behind);
  o.write_behind_interval = 3600 * kSec;  // only the forced flushes
  const std::int64_t before = consumed_in(path);
  const Acked a = run_and_kill(
      path, o,
      [](SqliteStore& s, std::uint64_t n) {
        if (n % kEvery != 0) return false;
        s.flush();
        return true;
      },
      [](const Acked& x) { return x.ops >= 20 * kEvery; });
  ASSERT_GE(a.ops, 20 * kEvery);
  EXPECT_EQ(a.durable, a.ops);
  const std::int64_t consumed = consumed_in(path) - before;
  EXPECT_GE(consumed, static_cast<std::int64_t>(a.ops));
  EXPECT_LE(consumed, static_cast<std::int64_t>(a.ops + kEvery));
}

// Verifies write_behind's interval flusher: the child reports (acquires, durable_ops()) after
// each acquire with a 2 ms interval; once the flusher made 50 acquires durable it is SIGKILLed;
// the file then holds at least every acquire durable_ops() had reported.
TEST(SqliteStoreCrash, WriteBehindIntervalFlushesSurviveSigkill) {
  TempDir dir;
  const std::string path = dir.file("wb-interval.db");
  SqliteStoreOptions o = opts(path, Durability::write_behind);
  o.write_behind_interval = 2000;
  const std::int64_t before = consumed_in(path);
  const Acked a = run_and_kill(
      path, o, [](SqliteStore&, std::uint64_t) { return true; },
      [](const Acked& x) { return x.durable >= 50; });
  ASSERT_GE(a.durable, 50u);
  const std::int64_t consumed = consumed_in(path) - before;
  EXPECT_GE(consumed, static_cast<std::int64_t>(a.durable));
  EXPECT_LE(consumed, static_cast<std::int64_t>(a.ops) + 1);
}

// ------------------------------------------------------------------------ configuration

const ConfigKey kSystem{ConfigKind::system, "", ""};
const ConfigKey kGpt{ConfigKind::resource, "", "gpt-4o"};
const ConfigKey kTeamGpt{ConfigKind::entity, "team", "gpt-4o"};
const ConfigKey kTeamDefault{ConfigKind::entity_default, "team", ""};
const ConfigKey kUserParent{ConfigKind::parent, "user", ""};

std::optional<std::string> get_one(Store& store, const Namespace& ns, const ConfigKey& key) {
  std::optional<std::string> v;
  store.get_config(ns, std::span(&key, 1), std::span(&v, 1));
  return v;
}

// Verifies put / get / list / erase in both modes, the list's order (kind as declared, then
// entity, resource), namespaces kept apart, reset_namespace and prune keeping configuration,
// bad keys refused, and every entry surviving close and reopen.
TEST(SqliteStoreConfig, PutGetListEraseAndReopen) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    const std::string path = dir.file(d == Durability::per_op ? "a.db" : "b.db");
    const std::vector<ConfigEntry> expected = {
        {ConfigKind::system, "", "", "[1]"},
        {ConfigKind::resource, "", "gpt-4o", "[2]"},
        {ConfigKind::entity_default, "team", "", "[3]"},
        {ConfigKind::entity, "team", "gpt-4o", "[4]"},
        {ConfigKind::parent, "user", "", "team"},
    };
    {
      SqliteStore store(opts(path, d));
      const Namespace ns = store.open_namespace("default");
      const Namespace other = store.open_namespace("other");
      store.put_config(ns, kUserParent, "team");
      store.put_config(ns, kTeamGpt, "[4]");
      store.put_config(ns, kTeamDefault, "[3]");
      store.put_config(ns, kGpt, "[0]");
      store.put_config(ns, kGpt, "[2]");  // overwrites
      store.put_config(ns, kSystem, "[1]");
      store.put_config(ns, {ConfigKind::resource, "", "gone"}, "[9]");
      store.put_config(ns, {ConfigKind::resource, "", "gone"}, "");  // erases
      store.put_config(other, kGpt, "[other]");
      EXPECT_EQ(store.list_config(ns), expected);

      const std::vector<ConfigKey> keys = {kGpt,
                                           {ConfigKind::resource, "", "gone"},
                                           kUserParent,
                                           {ConfigKind::entity, "user", "gpt-4o"}};
      std::vector<std::optional<std::string>> values(keys.size(), std::string("stale"));
      store.get_config(ns, keys, values);
      EXPECT_EQ(values, (std::vector<std::optional<std::string>>{"[2]", std::nullopt, "team",
                                                                 std::nullopt}));
      EXPECT_EQ(get_one(store, other, kGpt), "[other]");
      EXPECT_EQ(store.list_config(other).size(), 1u);

      store.reset_namespace(ns);
      EXPECT_EQ(store.prune(kStart + 3600 * kSec), 0u);
      EXPECT_EQ(store.list_config(ns), expected);
      EXPECT_EQ(store.size(), 0u);  // configuration is not usage state

      EXPECT_THROW(store.put_config(ns, {ConfigKind::system, "x", ""}, "[]"), ValidationError);
      EXPECT_THROW(store.put_config(ns, {ConfigKind::entity, "", "gpt-4o"}, "[]"), ValidationError);
      EXPECT_THROW(store.put_config(ns, {ConfigKind::parent, "a b", ""}, "c"), ValidationError);
      EXPECT_THROW(get_one(store, ns, {ConfigKind::resource, "", ""}), ValidationError);
      std::vector<std::optional<std::string>> two(2);
      EXPECT_THROW(store.get_config(ns, std::span(&kGpt, 1), two), ValidationError);
    }
    SqliteStore store(opts(path, d));
    const Namespace ns = store.open_namespace("default");
    EXPECT_EQ(store.list_config(ns), expected);
    EXPECT_EQ(get_one(store, ns, kTeamDefault), "[3]");
  }
}

// Verifies two per_op stores on one file (as two processes would have) each see the other's
// configuration writes, overwrites and erasures at once: reads come from the file.
TEST(SqliteStoreConfig, SecondStoreOnTheFileSeesWrites) {
  TempDir dir;
  const std::string path = dir.file("shared.db");
  SqliteStore a(opts(path));
  SqliteStore b(opts(path));
  const Namespace na = a.open_namespace("default");
  const Namespace nb = b.open_namespace("default");
  ASSERT_EQ(na.id, nb.id);
  EXPECT_EQ(get_one(b, nb, kGpt), std::nullopt);
  a.put_config(na, kGpt, "[1]");
  EXPECT_EQ(get_one(b, nb, kGpt), "[1]");
  b.put_config(nb, kGpt, "[2]");
  b.put_config(nb, kUserParent, "team");
  EXPECT_EQ(get_one(a, na, kGpt), "[2]");
  EXPECT_EQ(a.list_config(na).size(), 2u);
  a.put_config(na, kUserParent, "");
  EXPECT_EQ(get_one(b, nb, kUserParent), std::nullopt);
  EXPECT_EQ(b.list_config(nb),
            (std::vector<ConfigEntry>{{ConfigKind::resource, "", "gpt-4o", "[2]"}}));
}

// Verifies a write_behind store writes configuration to the file at once, in its own
// transaction: a child puts an entry (with usage state pending, never flushed), reports on a
// pipe and is SIGKILLed; the entry is in the file, the unflushed state is not.
TEST(SqliteStoreConfig, WriteBehindWritesConfigurationAtOnce) {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  Pipe p;
  const pid_t pid = spawn([&] {
    p.close_read();
    SqliteStoreOptions o = opts(path, Durability::write_behind);
    o.write_behind_interval = 3600 * kSec;  // no flush before the kill
    SqliteStore store(o);
    Counter c(store);
    if (!c.acquire()) return 2;
    store.put_config(store.open_namespace("default"), kGpt, "[1]");
    const char done = 'y';
    if (!write_all(p.fd[1], &done, 1)) return 3;
    for (;;) pause();
  });
  p.close_write();
  char got = 0;
  ASSERT_TRUE(read_all(p.fd[0], &got, 1));
  kill(pid, SIGKILL);
  const int status = wait_status(pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  SqliteStore store(opts(path));
  EXPECT_EQ(get_one(store, store.open_namespace("default"), kGpt), "[1]");
  EXPECT_EQ(consumed_in(path), 0);
}

// ------------------------------------------------------------------------ usage state

// Verifies export_state reads every state row and hold of one namespace (sorted, the lease id
// back as the uint64 it was), and import_state into another file replaces what was there and
// decides alike: the same availability, the same retry for the next denial.
TEST(SqliteStoreState, ExportImportRoundTrip) {
  TempDir dir;
  const std::vector<Limit> limits = {Limit::per_minute("rpm", 10), Limit::daily("rpd", 100),
                                     Limit::concurrency("slots", 3)};
  ManualClock clock(kStart);
  LimiterOptions lo;
  lo.ns = "tenant";
  SqliteStore src(opts(dir.file("src.db")));
  Limiter from(src, clock, lo);
  from.set_limits("gpt-4o", limits);
  Lease held = from.try_acquire("user:1", "gpt-4o", {{"rpm", 3}, {"rpd", 4}});
  ASSERT_TRUE(held.allowed());
  ASSERT_TRUE(take(from, "user:2", "gpt-4o", {{"rpm", 10}}).allowed);
  {
    Limiter other_ns(src, clock);  // namespace "default": not exported
    other_ns.set_limits("gpt-4o", limits);
    ASSERT_TRUE(take(other_ns, "user:1", "gpt-4o", {{"rpm", 1}}).allowed);
  }

  const UsageState state = src.export_state(src.open_namespace("tenant"));
  ASSERT_EQ(state.rows.size(), 3u);
  EXPECT_EQ(state.rows[0], (StateRow{"user:1", "gpt-4o", "rpd", LimitKind::window,
                                     kStart + 6400 * kSec, 4}));  // the end of kStart's UTC day
  EXPECT_EQ(state.rows[1],
            (StateRow{"user:1", "gpt-4o", "rpm", LimitKind::rate, kStart + 18 * kSec, 0}));
  EXPECT_EQ(state.rows[2].entity, "user:2");
  ASSERT_EQ(state.holds.size(), 1u);
  EXPECT_EQ(state.holds[0].lease, held.id());
  EXPECT_EQ(state.holds[0].limit, "slots");
  EXPECT_EQ(state.holds[0].amount, 1);

  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    SqliteStore dst(opts(dir.file(d == Durability::per_op ? "a.db" : "b.db"), d));
    Limiter to(dst, clock, lo);
    to.set_limits("gpt-4o", limits);
    ASSERT_TRUE(take(to, "user:3", "gpt-4o", {{"rpm", 5}}).allowed);  // replaced by the import
    const Namespace ns = dst.open_namespace("tenant");
    dst.put_config(ns, kGpt, "[kept]");
    dst.import_state(ns, state);
    EXPECT_EQ(dst.export_state(ns), state);
    EXPECT_EQ(get_one(dst, ns, kGpt), "[kept]");
    EXPECT_EQ(available(to, "user:3", "gpt-4o", "rpm"), 10);
    EXPECT_EQ(available(to, "user:1", "gpt-4o", "rpm"), 7);
    EXPECT_EQ(available(to, "user:1", "gpt-4o", "rpd"), 96);
    EXPECT_EQ(available(to, "user:1", "gpt-4o", "slots"), 2);
    const Decision a = take(from, "user:2", "gpt-4o", {{"rpm", 1}});
    const Decision b = take(to, "user:2", "gpt-4o", {{"rpm", 1}});
    EXPECT_FALSE(b.allowed);
    EXPECT_EQ(b.retry_after, a.retry_after);
    EXPECT_EQ(b.retry_after, 6 * kSec);
  }
}

// Verifies import_state refuses bad rows with ValidationError before writing anything.
TEST(SqliteStoreState, ImportRefusesBadRowsAndChangesNothing) {
  TempDir dir;
  SqliteStore store(opts(dir.file("s.db")));
  const Namespace ns = store.open_namespace("default");
  const UsageState good{{{"u", "m", "rpm", LimitKind::rate, kStart, 0}},
                        {{"u", "m", "slots", 1, 1, kStart}}};
  store.import_state(ns, good);
  auto refused = [&](UsageState bad, const std::string& field) {
    try {
      store.import_state(ns, bad);
      ADD_FAILURE() << "imported a bad state (" << field << ")";
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), field) << e.what();
    }
    EXPECT_EQ(store.export_state(ns), good);
  };
  UsageState bad = good;
  bad.rows.push_back(bad.rows[0]);
  refused(bad, "state row");
  bad = good;
  bad.rows[0].kind = LimitKind::concurrency;
  refused(bad, "state row kind");
  bad = good;
  bad.rows[0].b = -1;
  refused(bad, "state row b");
  bad = good;
  bad.holds[0].amount = 0;
  refused(bad, "hold amount");
  bad = good;
  bad.holds[0].entity = "a b";
  refused(bad, "entity");
  store.import_state(ns, UsageState{});
  EXPECT_EQ(store.size(), 0u);
}

// Verifies import_state with configuration entries replaces the namespace's whole
// configuration and state together (other namespaces untouched), and that a bad entry is
// refused with nothing changed.
TEST(SqliteStoreState, ImportWithConfigurationReplacesBoth) {
  TempDir dir;
  SqliteStore store(opts(dir.file("s.db")));
  const Namespace ns = store.open_namespace("default");
  const Namespace other = store.open_namespace("other");
  store.put_config(ns, {ConfigKind::resource, {}, "old"}, "[1]");
  store.put_config(other, {ConfigKind::resource, {}, "m"}, "[2]");
  const UsageState state{{{"u", "m", "rpm", LimitKind::rate, kStart, 0}}, {}};
  const std::vector<ConfigEntry> config = {{ConfigKind::system, "", "", "[3]"},
                                           {ConfigKind::parent, "u", "", "team"}};
  store.import_state(ns, state, &config);
  EXPECT_EQ(store.list_config(ns), config);
  EXPECT_EQ(store.export_state(ns), state);
  EXPECT_EQ(store.list_config(other).size(), 1u);

  std::vector<ConfigEntry> bad = config;
  bad.push_back({ConfigKind::entity, "u", "", "[4]"});  // an entity entry needs a resource
  EXPECT_THROW(store.import_state(ns, UsageState{}, &bad), ValidationError);
  bad.back() = {ConfigKind::entity, "u", "m", ""};
  EXPECT_THROW(store.import_state(ns, UsageState{}, &bad), ValidationError);
  EXPECT_EQ(store.list_config(ns), config);
  EXPECT_EQ(store.export_state(ns), state);
}

// Verifies namespaces() lists every namespace of the file, sorted.
TEST(SqliteStoreState, NamespacesAreListed) {
  TempDir dir;
  SqliteStore store(opts(dir.file("s.db")));
  EXPECT_TRUE(store.namespaces().empty());
  store.open_namespace("zeta");
  store.open_namespace("alpha");
  EXPECT_EQ(store.namespaces(), (std::vector<std::string>{"alpha", "zeta"}));
}

// ------------------------------------------------------------------------ durable leases

/// A Limiter at the fixed instant kStart with a daily token budget and 3 concurrency slots
/// (every lease holds one): nothing refills, so every unit taken or refunded shows.
struct Leases {
  static constexpr std::int64_t kCap = 1000;
  static constexpr std::int64_t kSlots = 3;
  explicit Leases(Store& store) : limiter(store, clock) {
    limiter.set_limits("m", {Limit::per_day("tpd", kCap), Limit::concurrency("slots", kSlots)});
  }
  static AcquireOptions durable() {
    AcquireOptions o;
    o.durable = true;
    o.lease_ttl = 60 * kSec;
    return o;
  }
  /// Acquires a durable lease of `tokens` and lets go of it; returns its token.
  std::string detached(std::int64_t tokens) {
    Lease l = limiter.try_acquire("u", "m", {{"tpd", tokens}}, durable());
    if (!l.allowed()) ADD_FAILURE() << l.decision().reason;
    return l.allowed() ? l.detach() : std::string();
  }
  std::int64_t tokens() { return available(limiter, "u", "m", "tpd"); }
  std::int64_t slots() { return available(limiter, "u", "m", "slots"); }
  ManualClock clock{kStart};
  Limiter limiter;
};

/// The decision of ending `lease` (rollback: refund, else commit), as the store reported it.
Decision end_lease(Lease& lease, bool refund) {
  Decision out;
  auto done = [&out](Decision d) { out = std::move(d); };
  if (refund) {
    lease.rollback_async(done);
  } else {
    lease.commit_async(done);
  }
  return out;  // SqliteStore answers before *_async returns
}

// Verifies a durable lease outlives its store: acquired (per_op, and write_behind, which
// flushes as it closes), the store closed, a new store on the file and a new Limiter resume it
// by its token with what it holds (usage, slot, expiry) and commit it exactly once: the record
// goes, the usage stays, the slot is freed, and a copy resumed before the commit finds nothing
// and changes nothing, in this store and after another reopen.
TEST(SqliteStoreLeases, DurableLeaseSurvivesReopenAndIsCommittedOnce) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    const std::string path = dir.file(d == Durability::per_op ? "a.db" : "b.db");
    std::string token;
    {
      SqliteStore store(opts(path, d));
      Leases a(store);
      ASSERT_TRUE(a.limiter.consume("u", "m", {{"tpd", 100}}).allowed);
      token = a.detached(600);
      ASSERT_FALSE(token.empty());
      EXPECT_EQ(a.tokens(), 300);
      EXPECT_EQ(a.slots(), Leases::kSlots - 1);
    }
    {
      RawDb raw(path);
      EXPECT_EQ(raw.rows("SELECT grp, expiry FROM leases"),
                std::vector<std::string>{cat("u|", kStart + 60 * kSec)});
    }
    {
      SqliteStore store(opts(path));
      Leases b(store);
      EXPECT_EQ(b.tokens(), 300);
      EXPECT_EQ(b.slots(), Leases::kSlots - 1);  // the lease's slot is still held
      Lease copy = b.limiter.resume(token);
      Lease l = b.limiter.resume(token);
      ASSERT_TRUE(l.active());
      EXPECT_EQ(l.entity(), "u");
      EXPECT_EQ(l.expires_at(), kStart + 60 * kSec);
      const Decision done = end_lease(l, /*refund=*/false);
      EXPECT_EQ(done.code, Code::ok) << done.reason;
      EXPECT_FALSE(l.active());
      EXPECT_EQ(b.tokens(), 300);  // committed: the usage stays
      EXPECT_EQ(b.slots(), Leases::kSlots);
      EXPECT_THROW((void)b.limiter.resume(token), LeaseNotFound);
      const Decision again = end_lease(copy, /*refund=*/true);
      EXPECT_EQ(again.code, Code::lease_not_found) << again.reason;
      EXPECT_EQ(b.tokens(), 300);  // no refund after the end
    }
    SqliteStore store(opts(path));
    Leases c(store);
    EXPECT_EQ(c.tokens(), 300);
    EXPECT_EQ(c.slots(), Leases::kSlots);
    EXPECT_THROW((void)c.limiter.resume(token), LeaseNotFound);
    RawDb raw(path);
    EXPECT_TRUE(raw.rows("SELECT * FROM leases").empty());
  }
}

// Verifies two processes (each its own per_op SqliteStore on the file) that resumed one durable
// lease and end it at the same moment end it exactly once: one rollback refunds, the other
// reports lease_not_found and refunds nothing. Five rounds, a fresh lease each.
TEST(SqliteStoreLeases, TwoProcessesEndOneLeaseExactlyOnce) {
  TempDir dir;
  const std::string path = dir.file("shared.db");
  {
    SqliteStore store(opts(path));
    Leases setup(store);
    ASSERT_TRUE(setup.limiter.consume("u", "m", {{"tpd", 100}}).allowed);
  }
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(cat("round ", round));
    std::string token;
    {
      SqliteStore store(opts(path));
      Leases owner(store);
      token = owner.detached(600);
      ASSERT_FALSE(token.empty());
      ASSERT_EQ(owner.tokens(), 300);
    }  // closed: no store crosses fork()
    Pipe ready;
    Pipe go;
    Pipe results;
    std::vector<pid_t> pids;
    for (int c = 0; c < 2; ++c) {
      pids.push_back(spawn([&] {
        ready.close_read();
        go.close_write();
        results.close_read();
        SqliteStore store(opts(path));
        Leases mine(store);
        Lease l = mine.limiter.resume(token);
        const char r = 'r';
        if (!write_all(ready.fd[1], &r, 1)) return 4;
        char start = 0;
        (void)read_all(go.fd[0], &start, 1);  // returns at EOF: the parent closed it
        const Decision d = end_lease(l, /*refund=*/true);
        const char code = d.code == Code::ok ? 'o' : d.code == Code::lease_not_found ? 'n' : '?';
        return write_all(results.fd[1], &code, 1) ? 0 : 4;
      }));
    }
    ready.close_write();
    go.close_read();
    results.close_write();
    for (int c = 0; c < 2; ++c) {  // both resumed the lease before either ends it
      char r = 0;
      ASSERT_TRUE(read_all(ready.fd[0], &r, 1));
    }
    go.close_write();  // both end it together
    std::string codes;
    for (int c = 0; c < 2; ++c) {
      char code = 0;
      ASSERT_TRUE(read_all(results.fd[0], &code, 1));
      codes += code;
    }
    for (const pid_t pid : pids) {
      const int status = wait_status(pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    }
    std::sort(codes.begin(), codes.end());
    EXPECT_EQ(codes, "no");  // one lease_not_found, one ok
    SqliteStore store(opts(path));
    Leases after(store);
    EXPECT_EQ(after.tokens(), 900);  // refunded exactly once
    EXPECT_EQ(after.slots(), Leases::kSlots);
    EXPECT_THROW((void)after.limiter.resume(token), LeaseNotFound);
  }
}

// Verifies what a crash of a write_behind store does to durable leases: records go to the file
// with their usage, in the same flush. A child acquires leases A and C, flushes, then ends C
// and acquires B (neither flushed) and is SIGKILLed: A and C are in the file with their usage
// (C's end was lost with its refund), B is not, nor is its usage; ending C then refunds once.
TEST(SqliteStoreLeases, WriteBehindCrashKeepsRecordsWithTheirUsage) {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  Pipe p;
  const pid_t pid = spawn([&] {
    p.close_read();
    SqliteStoreOptions o = opts(path, Durability::write_behind);
    o.write_behind_interval = 3600 * kSec;  // only the forced flush
    SqliteStore store(o);
    Leases wb(store);
    std::string tokens[3];
    tokens[0] = wb.detached(10);
    tokens[1] = wb.detached(5);
    store.flush();
    wb.limiter.resume(tokens[1]).rollback();
    if (wb.tokens() != Leases::kCap - 10) return 2;
    tokens[2] = wb.detached(20);
    for (const std::string& t : tokens) {
      const std::uint64_t len = t.size();
      if (t.empty() || !write_all(p.fd[1], &len, 8) || !write_all(p.fd[1], t.data(), t.size())) {
        return 3;
      }
    }
    for (;;) pause();
  });
  p.close_write();
  std::string tokens[3];
  for (std::string& t : tokens) {
    std::uint64_t len = 0;
    ASSERT_TRUE(read_all(p.fd[0], &len, 8));
    t.resize(len);
    ASSERT_TRUE(read_all(p.fd[0], t.data(), t.size()));
  }
  kill(pid, SIGKILL);
  const int status = wait_status(pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;

  SqliteStore store(opts(path));
  Leases after(store);
  EXPECT_EQ(after.tokens(), Leases::kCap - 15);  // A and C; not B
  EXPECT_EQ(after.slots(), Leases::kSlots - 2);
  Lease a = after.limiter.resume(tokens[0]);
  EXPECT_EQ(a.expires_at(), kStart + 60 * kSec);
  (void)a.detach();  // lives on
  EXPECT_THROW((void)after.limiter.resume(tokens[2]), LeaseNotFound);
  Lease c = after.limiter.resume(tokens[1]);
  EXPECT_EQ(end_lease(c, /*refund=*/true).code, Code::ok);
  EXPECT_EQ(after.tokens(), Leases::kCap - 10);
  EXPECT_EQ(after.slots(), Leases::kSlots - 1);
  EXPECT_THROW((void)after.limiter.resume(tokens[1]), LeaseNotFound);
}

// Verifies get_lease, prune and reset_namespace on records in both modes: an expired record
// is not returned and prune deletes it (counted), reset_namespace deletes the namespace's
// records only, import_state deletes them and export_state leaves them out.
TEST(SqliteStoreLeases, RecordsArePrunedResetAndNotExported) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    SqliteStore store(opts(dir.file(d == Durability::per_op ? "a.db" : "b.db"), d));
    const Namespace ns = store.open_namespace("default");
    const Namespace other = store.open_namespace("other");
    const Limit rpd = Limit::per_day("rpd", 100);
    auto acquire = [&](const Namespace& n, std::uint64_t id, Micros expiry) {
      const KeyParts key{"u", "m"};
      const OpItem item{0, &rpd, 1, 0};
      ItemResult res;
      Op op;
      op.kind = OpKind::acquire;
      op.ns = &n;
      op.now = kStart;
      op.keys = std::span(&key, 1);
      op.items = std::span(&item, 1);
      op.group = "u";
      op.lease_id = id;
      op.lease_expiry = expiry;
      op.lease_record = "rec";
      return store.apply(op, std::span(&res, 1));
    };
    ASSERT_TRUE(acquire(ns, 1, kStart + 10 * kSec));
    ASSERT_TRUE(acquire(ns, 2, kStart + 90 * kSec));
    ASSERT_TRUE(acquire(other, 3, kStart + 90 * kSec));
    EXPECT_TRUE(store.get_lease(ns, "u", 1, kStart + 10 * kSec - 1).has_value());
    EXPECT_FALSE(store.get_lease(ns, "u", 1, kStart + 10 * kSec).has_value());
    // Idle state is none of it (the daily window runs on): one expired record.
    EXPECT_EQ(store.prune(kStart + 10 * kSec), 1u);
    if (d == Durability::per_op) {  // write_behind holds the file exclusively
      RawDb raw(store.options().path);
      EXPECT_EQ(raw.rows("SELECT id FROM leases ORDER BY id"),
                (std::vector<std::string>{"2", "3"}));
    }
    EXPECT_TRUE(store.get_lease(ns, "u", 2, kStart).has_value());
    EXPECT_EQ(store.export_state(ns).rows.size(), 1u);
    EXPECT_TRUE(store.export_state(ns).holds.empty());
    store.reset_namespace(ns);
    EXPECT_FALSE(store.get_lease(ns, "u", 2, kStart).has_value());
    EXPECT_TRUE(store.get_lease(other, "u", 3, kStart).has_value());
    store.import_state(other, store.export_state(other));
    EXPECT_FALSE(store.get_lease(other, "u", 3, kStart).has_value());
    EXPECT_EQ(store.prune(kStart + 100 * kSec), 0u);
  }
}

// ------------------------------------------------------------------------ the audit log

std::vector<std::uint64_t> ids_of_events(const std::vector<AuditEvent>& events) {
  std::vector<std::uint64_t> ids;
  for (const AuditEvent& e : events) ids.push_back(e.id);
  return ids;
}

AuditEvent audit_event(int n, std::string entity = "") {
  AuditEvent e;
  e.time = kStart + n;
  e.principal = "config:/etc/admit/admit.yaml";
  e.action = "limits_set";
  e.entity = std::move(entity);
  e.resource = std::string("m");  // not = "m": GCC 12's -Wrestrict false positive here
  e.before = n == 1 ? "" : cat("[", n - 1, "]");
  e.after = cat("[", n, "]");
  return e;
}

// Verifies a version 3 file (written here with version 3's DDL) is migrated to version 5 when
// opened, in both modes, keeping its state, configuration and lease records, and gains the
// audit log (events appended there are rows of the `audit` table, their ids in `audit_seq`) and
// the learned state (entries put there are rows of the `learned` table).
TEST(SqliteStoreFile, Version3FileIsMigratedGainingTheAuditLog) {
  TempDir dir;
  for (const Durability d : {Durability::per_op, Durability::write_behind}) {
    SCOPED_TRACE(d == Durability::per_op ? "per_op" : "write_behind");
    const std::string path = dir.file(d == Durability::per_op ? "a.db" : "b.db");
    {
      RawDb raw(path);
      raw.exec(R"sql(
BEGIN;
CREATE TABLE namespaces (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE state (
  ns INTEGER NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL,
  limit_name TEXT NOT NULL, limit_kind TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
  PRIMARY KEY (ns, entity, resource, limit_name, limit_kind)) WITHOUT ROWID;
CREATE TABLE holds (
  ns INTEGER NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL, limit_name TEXT NOT NULL,
  lease INTEGER NOT NULL, amount INTEGER NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX holds_by_key ON holds (ns, entity, resource, limit_name);
CREATE TABLE config (
  ns INTEGER NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL, resource TEXT NOT NULL,
  value TEXT NOT NULL, PRIMARY KEY (ns, kind, entity, resource)) WITHOUT ROWID;
CREATE TABLE leases (
  ns INTEGER NOT NULL, grp TEXT NOT NULL, id INTEGER NOT NULL, data BLOB NOT NULL,
  expiry INTEGER NOT NULL, PRIMARY KEY (ns, grp, id)) WITHOUT ROWID;
PRAGMA user_version = 3;
COMMIT;)sql");
      // u's rpm bucket: 4 of 10 taken at kStart; u's parent configured; a lease record of v.
      raw.exec(
          cat("INSERT INTO namespaces (id, name) VALUES (1, 'default');"
              "INSERT INTO state VALUES (1, 'u', 'm', 'rpm', 'rate', ",
              kStart + 24 * kSec,
              ", 0);"
              "INSERT INTO config VALUES (1, 'parent', 'u', '', 'team');"
              "INSERT INTO leases VALUES (1, 'v', 7, x'0102', ",
              kStart + 60 * kSec, ");"));
    }
    {
      SqliteStore store(opts(path, d));
      const Namespace ns = store.open_namespace("default");
      EXPECT_EQ(store.list_config(ns),
                (std::vector<ConfigEntry>{{ConfigKind::parent, "u", "", "team"}}));
      const auto record = store.get_lease(ns, "v", 7, kStart);
      ASSERT_TRUE(record.has_value());
      EXPECT_EQ(record->data, std::string("\x01\x02"));
      ManualClock clock(kStart);
      Limiter limiter(store, clock);
      limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
      EXPECT_EQ(available(limiter, "u", "m", "rpm"), 6);
      EXPECT_TRUE(limiter.audit_log().empty());
      EXPECT_EQ(limiter.audit(audit_event(1, "u")), 1u);
      EXPECT_EQ(limiter.audit(audit_event(2)), 2u);
      EXPECT_EQ(ids_of_events(limiter.audit_log()), (std::vector<std::uint64_t>{1, 2}));
      EXPECT_EQ(store
                    .put_learned(ns, {LearnedKind::rate, "u", "m", "aimd"},
                                 {2, 20'000'000, kStart + 60 * kSec, "20"}, kStart)
                    .value,
                "20");
    }
    RawDb raw(path);
    EXPECT_EQ(
        raw.rows("SELECT ns, kind, entity, resource, limit_name, version, rank, expires_at, "
                 "value FROM learned"),
        std::vector<std::string>{cat("1|rate|u|m|aimd|2|20000000|", kStart + 60 * kSec, "|20")});
    EXPECT_EQ(raw.rows("PRAGMA user_version"), std::vector<std::string>{"5"});
    EXPECT_EQ(raw.rows("SELECT ns, id, time_us, principal, action, entity, resource, "
                       "state_before, state_after FROM audit ORDER BY id"),
              (std::vector<std::string>{
                  cat("1|1|", kStart + 1, "|config:/etc/admit/admit.yaml|limits_set|u|m||[1]"),
                  cat("1|2|", kStart + 2, "|config:/etc/admit/admit.yaml|limits_set||m|[1]|[2]")}));
    EXPECT_EQ(raw.rows("SELECT ns, last FROM audit_seq"), std::vector<std::string>{"1|2"});
    EXPECT_EQ(raw.rows("SELECT entity, a FROM state WHERE entity = 'u'"),
              std::vector<std::string>{cat("u|", kStart + 24 * kSec)});
  }
}

// Verifies a write_behind store writes audit events to the file at once, in append order: a
// child appends three (with usage state pending, never flushed), reports their ids on a pipe
// and is SIGKILLed; the events are in the file, the unflushed state is not, and the next id
// follows them.
TEST(SqliteStoreAudit, WriteBehindWritesEventsAtOnceInOrder) {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  Pipe p;
  const pid_t pid = spawn([&] {
    p.close_read();
    SqliteStoreOptions o = opts(path, Durability::write_behind);
    o.write_behind_interval = 3600 * kSec;  // no flush before the kill
    SqliteStore store(o);
    Counter c(store);
    std::uint64_t ids[3] = {};
    for (int i = 0; i < 3; ++i) {
      if (!c.acquire()) return 2;
      ids[i] = c.limiter.audit(audit_event(i + 1, cat("e", i)));
    }
    if (!write_all(p.fd[1], ids, sizeof ids)) return 3;
    for (;;) pause();
  });
  p.close_write();
  std::uint64_t ids[3] = {};
  ASSERT_TRUE(read_all(p.fd[0], ids, sizeof ids));
  kill(pid, SIGKILL);
  const int status = wait_status(pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  EXPECT_EQ(std::vector<std::uint64_t>(ids, ids + 3), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(consumed_in(path), 0);
  SqliteStore store(opts(path));
  const Namespace ns = store.open_namespace("default");
  std::vector<AuditEvent> want;
  for (int i = 0; i < 3; ++i) {
    want.push_back(audit_event(i + 1, cat("e", i)));
    want.back().id = static_cast<std::uint64_t>(i + 1);
  }
  EXPECT_EQ(store.read_audit(ns, {}), want);
  EXPECT_EQ(store.append_audit(ns, audit_event(4)), 4u);
}

// Verifies rows no SqliteStore wrote (a hand-edited or damaged file) are skipped, never
// returned or crashed on, with pages still full where valid events remain; and a damaged id
// sequence (not an integer, negative, at the end of the range, or behind the rows) makes an
// append throw StoreUnavailable having changed nothing.
TEST(SqliteStoreAudit, CorruptRowsAreSkippedAndABadSequenceIsRefused) {
  TempDir dir;
  const std::string path = dir.file("audit.db");
  SqliteStore store(opts(path));
  const Namespace ns = store.open_namespace("default");
  EXPECT_EQ(store.append_audit(ns, audit_event(1)), 1u);
  EXPECT_EQ(store.append_audit(ns, audit_event(2)), 2u);
  const std::string ok_row = "'config:x', 'limits_set', 'e', 'm', '', '[1]'";
  RawDb raw(path);
  raw.exec(cat("INSERT INTO audit VALUES (1, 3, 'soon', ", ok_row, ");",  // time not a number
               "INSERT INTO audit VALUES (1, 'x', 5, ", ok_row, ");",     // id not a number
               "INSERT INTO audit VALUES (1, 4.5, 5, ", ok_row, ");",     // id not an integer
               "INSERT INTO audit VALUES (1, 5, 5, 'a' || char(10) || 'b', 'limits_set', '', "
               "'', '', '');",                                                     // control char
               "INSERT INTO audit VALUES (1, 6, 5, 'p', 'BAD', '', '', '', '');",  // action
               "INSERT INTO audit VALUES (1, 7, 5, 'p', 'limits_set', '', '', 'not json', '');",
               "INSERT INTO audit VALUES (1, 8, 5, x'ff', 'limits_set', '', '', '', '');",
               "INSERT INTO audit VALUES (1, 9, -5, 'p', 'limits_set', '', '', '', '');",
               "INSERT INTO audit VALUES (1, 10, 5, 'p', 'limits_set', 'has space', '', '', '');",
               "INSERT INTO audit VALUES (1, -1, 5, 'p', 'limits_set', '', '', '', '');",
               "INSERT INTO audit VALUES (1, 0, 5, 'p', 'limits_set', '', '', '', '');",
               "INSERT INTO audit VALUES (1, 11, 5, 'by hand', 'limits_set', 'e', 'm', '', '[0]');",
               "UPDATE audit_seq SET last = 11;"));
  AuditEvent by_hand{11, 5, "by hand", "limits_set", "e", "m", "", "[0]"};
  std::vector<AuditEvent> want = {audit_event(1), audit_event(2), by_hand};
  want[0].id = 1;
  want[1].id = 2;
  EXPECT_EQ(store.read_audit(ns, {}), want);
  EXPECT_EQ(store.read_audit(ns, {.newest_first = true}),
            (std::vector<AuditEvent>{want[2], want[1], want[0]}));
  EXPECT_EQ(store.read_audit(ns, {.after_id = 2, .limit = 1}), std::vector<AuditEvent>{by_hand});
  EXPECT_EQ(store.read_audit(ns, {.before_id = 11, .limit = 1, .newest_first = true}),
            std::vector<AuditEvent>{want[1]});
  EXPECT_EQ(store.read_audit(ns, {.entity = "e"}), std::vector<AuditEvent>{by_hand});

  for (const char* last :
       {"'abc'", "-3", "0.5", "9223372036854775806", "9223372036854775807", "1"}) {
    SCOPED_TRACE(last);
    raw.exec(cat("UPDATE audit_seq SET last = ", last));
    EXPECT_THROW((void)store.append_audit(ns, audit_event(12)), StoreUnavailable);
    EXPECT_EQ(raw.rows("SELECT last FROM audit_seq"),
              raw.rows(cat("SELECT ", last)));  // rolled back
    EXPECT_EQ(store.read_audit(ns, {}), want);
  }
  raw.exec("UPDATE audit_seq SET last = 11");
  EXPECT_EQ(store.append_audit(ns, audit_event(12)), 12u);
}

// Verifies bad audit_retention options are refused before the file is touched.
TEST(SqliteStoreAudit, RetentionMustKeepAnEvent) {
  TempDir dir;
  SqliteStoreOptions o = opts(dir.file("r.db"));
  o.audit_retention = 0;
  EXPECT_THROW(SqliteStore{o}, ValidationError);
  EXPECT_FALSE(std::filesystem::exists(o.path));
}

}  // namespace
}  // namespace admit
