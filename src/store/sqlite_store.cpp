#include "admit/store/sqlite_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "kernel.hpp"

namespace admit {

namespace {

using detail::Hold;
using detail::Holds;
using detail::Slot;

// The file grows with the keys ever seen unless idle rows are deleted: prune whenever this
// process inserted as many rows as were live after the last prune (amortised O(1) per insert).
constexpr std::size_t kMinPruneAt = 4096;

// Schema migrations: kMigrations[v] takes a file from version v to v + 1, inside the opening
// transaction. Version 0 is an empty (or new) file.
//   state: one row per rate / adaptive / window limit of a key. Rate and adaptive: a = TAT
//          (µs since the epoch), b = TAT remainder (in 1/r µs of the limit's interval).
//          Window: a = end of the window counted in (µs since the epoch), b = units used.
//   holds: one row per lease holding slots of a concurrency limit of a key.
//   config (version 2): one row per configuration entry (Store::put_config); kind is
//          to_string(ConfigKind), entity / resource are '' where the kind has none.
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
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion);

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

struct DbDeleter {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbDeleter>;

// One state row (rate / adaptive / window) or one key's holds (concurrency), as this process
// knows it. per_op: loaded in the operation's transaction and dropped after it. write_behind:
// cached until the next prune; the cache is the truth for every row it holds.
struct Entry {
  std::uint32_t ns = 0;
  std::string entity;
  std::string resource;
  std::string limit;
  LimitKind kind = LimitKind::rate;
  bool present = false;  // state rows: a slot exists (absent = fresh)
  Slot slot;
  Holds holds;
  bool in_file = false;  // the file has its row (state) or rows (holds)
  bool dirty = false;    // differs from the file; listed in Impl::dirty

  bool concurrency() const { return kind == LimitKind::concurrency; }
  bool exists() const { return concurrency() ? !holds.empty() : present; }
};

// (namespace, entity, resource, kind, limit) as one map key: length-prefixed, so no two
// tuples share a key.
std::string cache_key(std::uint32_t ns, const KeyParts& k, const Limit& l) {
  std::string s;
  s.reserve(13 + k.entity.size() + k.resource.size() + l.name().size());
  auto put32 = [&s](std::uint32_t v) {
    char b[4];
    std::memcpy(b, &v, 4);
    s.append(b, 4);
  };
  put32(ns);
  put32(static_cast<std::uint32_t>(k.entity.size()));
  s.append(k.entity);
  put32(static_cast<std::uint32_t>(k.resource.size()));
  s.append(k.resource);
  s.push_back(static_cast<char>(l.kind()));
  s.append(l.name());
  return s;
}

// The enum value whose to_string() is `text`, if any.
template <class Enum, std::size_t N>
std::optional<Enum> parse_enum(std::string_view text, const Enum (&all)[N]) {
  for (const Enum e : all) {
    if (to_string(e) == text) return e;
  }
  return std::nullopt;
}
constexpr ConfigKind kConfigKinds[] = {ConfigKind::system, ConfigKind::resource,
                                       ConfigKind::entity_default, ConfigKind::entity,
                                       ConfigKind::parent};
constexpr LimitKind kStateKinds[] = {LimitKind::rate, LimitKind::adaptive, LimitKind::window};

// import_state's checks, before anything is written.
void validate_usage(const UsageState& state) {
  auto names = [](const auto& r) {
    validate_name("entity", r.entity);
    validate_name("resource", r.resource);
    validate_name("limit name", r.limit);
  };
  auto non_negative = [](const char* field, std::int64_t v) {
    if (v < 0) throw ValidationError(field, std::to_string(v), "must be >= 0");
  };
  std::set<std::tuple<std::string_view, std::string_view, std::string_view, LimitKind>> seen;
  for (const StateRow& r : state.rows) {
    names(r);
    if (r.kind == LimitKind::concurrency) {
      throw ValidationError("state row kind", r.entity + "/" + r.resource + "/" + r.limit,
                            "concurrency state is a hold, not a row");
    }
    non_negative("state row a", r.a);
    non_negative("state row b", r.b);
    if (!seen.emplace(r.entity, r.resource, r.limit, r.kind).second) {
      throw ValidationError("state row", r.entity + "/" + r.resource + "/" + r.limit,
                            "appears twice");
    }
  }
  for (const HoldRow& h : state.holds) {
    names(h);
    if (h.amount < 1) {
      throw ValidationError("hold amount", std::to_string(h.amount), "must be >= 1");
    }
    non_negative("hold expiry", h.expiry);
  }
}

}  // namespace

struct SqliteStore::Impl {
  SqliteStoreOptions opt;
  DbPtr db;  // first member: closed after every statement is finalised
  mutable std::mutex mu;

  // Prepared once per connection.
  StmtPtr begin_write, begin_read, commit, rollback;
  StmtPtr get_state, put_state, del_state, get_holds, del_holds, put_hold;
  StmtPtr ns_put, ns_get, ns_del_state, ns_del_holds;
  StmtPtr prune_groups, prune_holds, prune_state, count_keys;
  StmtPtr cfg_put, cfg_del, cfg_del_all, cfg_get, cfg_list, ns_list, ns_rows, ns_holds;

  std::unordered_map<std::string, Entry> cache;  // node-based: Entry* stay valid on insert
  std::vector<Entry*> dirty;
  std::vector<Entry*> items;  // scratch: the entry of each item of the current op

  std::uint64_t ops = 0;      // apply() calls that returned
  std::uint64_t durable = 0;  // ... of which on disk
  std::size_t inserted_since_prune = 0;
  std::size_t prune_at = kMinPruneAt;
  std::optional<std::string> flush_error;  // write_behind: the last flush failed

  std::condition_variable flusher_cv;
  bool stopping = false;
  std::thread flusher;

  explicit Impl(SqliteStoreOptions o) : opt(std::move(o)) {
    if (opt.path.empty()) throw ValidationError("path", opt.path, "must name a file");
    if (opt.write_behind_interval <= 0) {
      throw ValidationError("write_behind_interval", std::to_string(opt.write_behind_interval),
                            "must be > 0");
    }
    if (opt.busy_timeout.count() < 0 || opt.busy_timeout.count() > INT_MAX) {
      throw ValidationError("busy_timeout", std::to_string(opt.busy_timeout.count()),
                            "must be 0 to 2^31-1 ms");
    }
    sqlite3* raw = nullptr;
    const int rc =
        sqlite3_open_v2(opt.path.c_str(), &raw,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    db.reset(raw);
    if (rc != SQLITE_OK) {
      throw StoreUnavailable("sqlite store '" + opt.path + "': cannot open: " +
                             (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
    }
    sqlite3_extended_result_codes(db.get(), 1);
    sqlite3_busy_timeout(db.get(), static_cast<int>(opt.busy_timeout.count()));
    // write_behind: the first lock taken is kept until the store closes. Set before the
    // first WAL access, so the WAL index lives in this process's heap (no -shm sharing).
    if (!per_op()) exec("PRAGMA locking_mode=EXCLUSIVE", "set locking mode");
    {
      StmtPtr jm = prepare("PRAGMA journal_mode=WAL", false);
      if (sqlite3_step(jm.get()) != SQLITE_ROW) fail("enable WAL");
      const auto* mode = sqlite3_column_text(jm.get(), 0);
      const std::string got = mode != nullptr ? reinterpret_cast<const char*>(mode) : "";
      if (got != "wal") {
        throw StoreUnavailable("sqlite store '" + opt.path + "': cannot enable WAL (journal mode " +
                               got + ")");
      }
    }
    exec("PRAGMA synchronous=FULL", "set synchronous=FULL");
    migrate();

    begin_write = prepare("BEGIN IMMEDIATE");
    begin_read = prepare("BEGIN");
    commit = prepare("COMMIT");
    rollback = prepare("ROLLBACK");
    get_state = prepare(
        "SELECT a, b FROM state WHERE ns = ?1 AND entity = ?2 AND resource = ?3 AND "
        "limit_name = ?4 AND limit_kind = ?5");
    put_state = prepare(
        "INSERT INTO state (ns, entity, resource, limit_name, limit_kind, a, b) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT (ns, entity, resource, limit_name, limit_kind) "
        "DO UPDATE SET a = excluded.a, b = excluded.b");
    del_state = prepare(
        "DELETE FROM state WHERE ns = ?1 AND entity = ?2 AND resource = ?3 AND "
        "limit_name = ?4 AND limit_kind = ?5");
    get_holds = prepare(
        "SELECT lease, amount, expiry FROM holds WHERE ns = ?1 AND entity = ?2 AND "
        "resource = ?3 AND limit_name = ?4 ORDER BY rowid");
    del_holds = prepare(
        "DELETE FROM holds WHERE ns = ?1 AND entity = ?2 AND resource = ?3 AND limit_name = ?4");
    put_hold = prepare(
        "INSERT INTO holds (ns, entity, resource, limit_name, lease, amount, expiry) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    ns_put = prepare("INSERT INTO namespaces (name) VALUES (?1) ON CONFLICT (name) DO NOTHING");
    ns_get = prepare("SELECT id FROM namespaces WHERE name = ?1");
    ns_del_state = prepare("DELETE FROM state WHERE ns = ?1");
    ns_del_holds = prepare("DELETE FROM holds WHERE ns = ?1");
    prune_groups = prepare(
        "SELECT COUNT(*) FROM (SELECT 1 FROM holds GROUP BY ns, entity, resource, limit_name "
        "HAVING MAX(expiry) <= ?1)");
    prune_holds = prepare("DELETE FROM holds WHERE expiry <= ?1");
    prune_state = prepare("DELETE FROM state WHERE a < ?1");
    count_keys = prepare(
        "SELECT (SELECT COUNT(*) FROM state) + (SELECT COUNT(*) FROM (SELECT DISTINCT ns, "
        "entity, resource, limit_name FROM holds))");
    cfg_put = prepare(
        "INSERT INTO config (ns, kind, entity, resource, value) VALUES (?1, ?2, ?3, ?4, ?5) "
        "ON CONFLICT (ns, kind, entity, resource) DO UPDATE SET value = excluded.value");
    cfg_del = prepare(
        "DELETE FROM config WHERE ns = ?1 AND kind = ?2 AND entity = ?3 AND resource = ?4");
    cfg_del_all = prepare("DELETE FROM config WHERE ns = ?1");
    cfg_get = prepare(
        "SELECT value FROM config WHERE ns = ?1 AND kind = ?2 AND entity = ?3 AND resource = ?4");
    cfg_list = prepare("SELECT kind, entity, resource, value FROM config WHERE ns = ?1");
    ns_list = prepare("SELECT name FROM namespaces ORDER BY name");
    ns_rows = prepare(
        "SELECT entity, resource, limit_name, limit_kind, a, b FROM state WHERE ns = ?1 "
        "ORDER BY entity, resource, limit_name, limit_kind");
    ns_holds = prepare(
        "SELECT entity, resource, limit_name, lease, amount, expiry FROM holds WHERE ns = ?1 "
        "ORDER BY entity, resource, limit_name, rowid");

    if (!per_op()) flusher = std::thread([this] { flush_loop(); });
  }

  ~Impl() {
    if (flusher.joinable()) {
      {
        std::lock_guard g(mu);
        stopping = true;
      }
      flusher_cv.notify_all();
      flusher.join();
      std::lock_guard g(mu);
      try {
        flush_locked();
      } catch (const std::exception&) {  // nowhere to report it; the bound still holds
      }
    }
  }

  bool per_op() const { return opt.durability == Durability::per_op; }

  // ---- SQLite helpers (all throw StoreUnavailable naming the file) ----

  [[noreturn]] void fail(std::string_view what) const {
    throw StoreUnavailable("sqlite store '" + opt.path + "': " + std::string(what) + ": " +
                           sqlite3_errmsg(db.get()));
  }

  void exec(const char* sql, std::string_view what) {
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(what);
  }

  StmtPtr prepare(const char* sql, bool persistent = true) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db.get(), sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0, &s,
                           nullptr) != SQLITE_OK) {
      sqlite3_finalize(s);
      fail("prepare");
    }
    return StmtPtr(s);
  }

  // One execution of a prepared statement: binds, steps, resets on destruction.
  class Query {
   public:
    Query(const Impl& im, const StmtPtr& s) : im_(im), s_(s.get()) {}
    ~Query() {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
    Query(const Query&) = delete;
    Query& operator=(const Query&) = delete;

    Query& bind(int i, std::int64_t v) {
      if (sqlite3_bind_int64(s_, i, v) != SQLITE_OK) im_.fail("bind");
      return *this;
    }
    // The text must outlive the query (SQLITE_STATIC); embedded NULs are kept.
    Query& bind(int i, std::string_view v) {
      if (v.size() > static_cast<std::size_t>(INT_MAX)) im_.fail("bind: string too long");
      if (sqlite3_bind_text(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                            SQLITE_STATIC) != SQLITE_OK) {
        im_.fail("bind");
      }
      return *this;
    }
    /// @return true for a row, false when done.
    bool step() {
      const int rc = sqlite3_step(s_);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      im_.fail(sqlite3_sql(s_));
    }
    std::int64_t col(int i) const { return sqlite3_column_int64(s_, i); }
    std::string text(int i) const {
      const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
      if (t == nullptr) return {};
      return std::string(t, static_cast<std::size_t>(sqlite3_column_bytes(s_, i)));
    }

   private:
    const Impl& im_;
    sqlite3_stmt* s_;
  };

  void run_once(const StmtPtr& s, std::string_view what) {
    Query q(*this, s);
    if (sqlite3_step(s.get()) != SQLITE_DONE) fail(what);
  }

  // A transaction, rolled back unless committed.
  class Txn {
   public:
    Txn(Impl& im, bool write) : im_(im) {
      im.run_once(write ? im.begin_write : im.begin_read, write ? "begin immediate" : "begin");
    }
    ~Txn() {
      if (!done_ && sqlite3_get_autocommit(im_.db.get()) == 0) {
        sqlite3_step(im_.rollback.get());
        sqlite3_reset(im_.rollback.get());
      }
    }
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    void commit() {
      im_.run_once(im_.commit, "commit");
      done_ = true;
    }

   private:
    Impl& im_;
    bool done_ = false;
  };

  int user_version() {
    StmtPtr s = prepare("PRAGMA user_version", false);
    if (sqlite3_step(s.get()) != SQLITE_ROW) fail("read schema version");
    return sqlite3_column_int(s.get(), 0);
  }

  void migrate() {
    exec("BEGIN IMMEDIATE", "begin schema check");
    try {
      const int v = user_version();
      if (v > SqliteStore::kSchemaVersion) {
        throw IncompatibleSchema(opt.path, v, SqliteStore::kSchemaVersion);
      }
      if (v < 0) {
        throw StoreUnavailable("sqlite store '" + opt.path + "': bad schema version " +
                               std::to_string(v));
      }
      for (int from = v; from < SqliteStore::kSchemaVersion; ++from) {
        exec(kMigrations[from], "migrate schema");
      }
      if (v != SqliteStore::kSchemaVersion) {
        const std::string set = "PRAGMA user_version = " + std::to_string(kSchemaVersion);
        exec(set.c_str(), "set schema version");
      }
      exec("COMMIT", "commit schema");
    } catch (...) {
      if (sqlite3_get_autocommit(db.get()) == 0) {
        sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      }
      throw;
    }
  }

  // ---- rows ----

  void bind_key(Query& q, const Entry& e) {
    q.bind(1, static_cast<std::int64_t>(e.ns))
        .bind(2, e.entity)
        .bind(3, e.resource)
        .bind(4, e.limit);
    if (!e.concurrency()) q.bind(5, to_string(e.kind));
  }

  void load(Entry& e) {
    if (e.concurrency()) {
      Query q(*this, get_holds);
      bind_key(q, e);
      while (q.step()) {
        e.holds.push_back(Hold{std::bit_cast<std::uint64_t>(q.col(0)), q.col(1), q.col(2)});
      }
      e.in_file = !e.holds.empty();
    } else {
      Query q(*this, get_state);
      bind_key(q, e);
      e.present = e.in_file = q.step();
      if (e.present) e.slot = Slot{q.col(0), q.col(1)};
    }
  }

  // Writes `e` to the file (inside a transaction); settle() it once that commits.
  void write(const Entry& e) {
    if (e.concurrency()) {
      if (e.in_file) {
        Query q(*this, del_holds);
        bind_key(q, e);
        q.step();
      }
      for (const Hold& h : e.holds) {
        Query q(*this, put_hold);
        bind_key(q, e);
        q.bind(5, std::bit_cast<std::int64_t>(h.lease)).bind(6, h.amount).bind(7, h.expiry);
        q.step();
      }
    } else if (e.present) {
      Query q(*this, put_state);
      bind_key(q, e);
      q.bind(6, e.slot.a).bind(7, e.slot.b);
      q.step();
    } else if (e.in_file) {
      Query q(*this, del_state);
      bind_key(q, e);
      q.step();
    }
    if (!e.in_file && e.exists()) ++inserted_since_prune;
  }

  void settle(Entry& e) {
    e.in_file = e.exists();
    e.dirty = false;
  }

  void mark_dirty(Entry& e) {
    if (!e.dirty) {
      e.dirty = true;
      dirty.push_back(&e);
    }
  }

  // Finds (or loads) the entry of every item of `op` into `items`.
  void resolve(const Op& op) {
    items.clear();
    for (const OpItem& it : op.items) {
      const KeyParts& k = op.keys[it.key];
      auto [pos, fresh] = cache.try_emplace(cache_key(op.ns->id, k, *it.limit));
      Entry& e = pos->second;
      if (fresh) {
        e.ns = op.ns->id;
        e.entity.assign(k.entity);
        e.resource.assign(k.resource);
        e.limit = it.limit->name();
        e.kind = it.limit->kind();
        try {
          load(e);
        } catch (...) {
          cache.erase(pos);
          throw;
        }
      }
      items.push_back(&e);
    }
  }

  // The kernel's view of the resolved entries.
  struct Access {
    Impl& im;
    void forget(std::size_t i) {
      Entry& e = *im.items[i];
      e.present = false;
      e.slot = Slot{};
      e.holds.clear();
      im.mark_dirty(e);
    }
    Slot* state(std::size_t i, bool create) {
      Entry& e = *im.items[i];
      if (!e.present) {
        if (!create) return nullptr;
        e.present = true;
        e.slot = Slot{};
      }
      return &e.slot;
    }
    Slot& state_again(std::size_t i) { return im.items[i]->slot; }
    void state_changed(std::size_t i) { im.mark_dirty(*im.items[i]); }
    Holds* holds(std::size_t i, bool create) {
      Entry& e = *im.items[i];
      // Rows in the file whose holds all expired still exist: pass 2 must see (and delete)
      // them, as a MemoryStore erases a key's emptied hold list.
      return create || e.in_file || !e.holds.empty() ? &e.holds : nullptr;
    }
    void holds_changed(std::size_t i, Holds* h) {
      if (h != nullptr) im.mark_dirty(*im.items[i]);
    }
  };

  void drop_cache() {
    cache.clear();
    dirty.clear();
    items.clear();
  }

  // Deletes the state rows and holds of namespace `id` (inside a write transaction).
  void delete_usage(std::uint32_t id) {
    for (const StmtPtr* s : {&ns_del_state, &ns_del_holds}) {
      Query q(*this, *s);
      q.bind(1, static_cast<std::int64_t>(id));
      q.step();
    }
  }

  // write_behind: what the file now holds for namespace `id` supersedes what is cached for
  // it, pending or not.
  void drop_cached(std::uint32_t id) {
    std::erase_if(dirty, [&](const Entry* e) { return e->ns == id; });
    std::erase_if(cache, [&](const auto& kv) { return kv.second.ns == id; });
  }

  void bind_config_key(Query& q, const Namespace& ns, const ConfigKey& key) {
    q.bind(1, static_cast<std::int64_t>(ns.id))
        .bind(2, to_string(key.kind))
        .bind(3, key.entity)
        .bind(4, key.resource);
  }

  bool apply_per_op(const Op& op, std::span<ItemResult> results) {
    const bool writes = detail::consumes(op.kind) || op.kind == OpKind::reset;
    bool ok = false;
    {
      Txn txn(*this, writes);
      try {
        resolve(op);
        Access acc{*this};
        ok = detail::run(op, results, acc);
        for (const Entry* e : dirty) write(*e);
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

  bool apply_write_behind(const Op& op, std::span<ItemResult> results) {
    if (flush_error) throw StoreUnavailable(*flush_error);
    resolve(op);  // loads only: a failure changes nothing
    Access acc{*this};
    const bool ok = detail::run(op, results, acc);
    ++ops;
    if (cache.size() >= prune_at) {
      try {
        prune_locked(op.now);
      } catch (const StoreUnavailable&) {  // a failed flush is in flush_error
      }
    }
    return ok;
  }

  // Writes every dirty entry in one transaction.
  void flush_locked() {
    if (dirty.empty()) {
      durable = ops;
      flush_error.reset();
      return;
    }
    try {
      Txn txn(*this, true);
      for (const Entry* e : dirty) write(*e);
      txn.commit();
    } catch (const StoreUnavailable& e) {
      flush_error = std::string(e.what()) + " (write-behind flush failed; changes kept pending)";
      throw;
    }
    for (Entry* e : dirty) settle(*e);
    dirty.clear();
    durable = ops;
    flush_error.reset();
  }

  void flush_loop() {
    std::unique_lock lk(mu);
    const auto interval = std::chrono::microseconds(opt.write_behind_interval);
    auto next = std::chrono::steady_clock::now() + interval;
    while (!stopping) {
      flusher_cv.wait_until(lk, next, [this] { return stopping; });
      if (stopping) break;
      try {
        flush_locked();
      } catch (const std::exception&) {  // kept in flush_error; apply() reports it
      }
      next += interval;
      next = std::max(next, std::chrono::steady_clock::now());
    }
  }

  std::int64_t count_locked() {
    Query q(*this, count_keys);
    if (!q.step()) fail("count keys");
    return q.col(0);
  }

  std::size_t prune_locked(Micros now) {
    if (!per_op()) flush_locked();
    std::int64_t groups = 0;
    std::int64_t states = 0;
    std::int64_t remaining = 0;
    {
      Txn txn(*this, true);
      {
        Query q(*this, prune_groups);
        q.bind(1, now);
        if (q.step()) groups = q.col(0);
      }
      {
        Query q(*this, prune_holds);
        q.bind(1, now);
        q.step();
      }
      {
        Query q(*this, prune_state);
        q.bind(1, now);
        q.step();
        states = sqlite3_changes64(db.get());
      }
      remaining = count_locked();
      txn.commit();
    }
    // write_behind: everything is flushed, so the file holds what the cache held; drop it
    // (rows are loaded again on use). This is what bounds the cache's memory.
    if (!per_op()) drop_cache();
    inserted_since_prune = 0;
    prune_at = std::max(kMinPruneAt, 2 * static_cast<std::size_t>(remaining));
    return static_cast<std::size_t>(states + groups);
  }
};

SqliteStore::SqliteStore(SqliteStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

SqliteStore::~SqliteStore() = default;

bool SqliteStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  return im.per_op() ? im.apply_per_op(op, results) : im.apply_write_behind(op, results);
}

Namespace SqliteStore::open_namespace(std::string_view name) {
  validate_name("namespace", name);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  std::int64_t id = 0;
  {
    Impl::Txn txn(im, true);
    {
      Impl::Query q(im, im.ns_put);
      q.bind(1, name);
      q.step();
    }
    {
      Impl::Query q(im, im.ns_get);
      q.bind(1, name);
      if (!q.step()) im.fail("read namespace id");
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
    Impl::Txn txn(im, true);
    im.delete_usage(ns.id);
    txn.commit();
  }
  im.drop_cached(ns.id);
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

StoreCapabilities SqliteStore::capabilities() const {
  StoreCapabilities c;
  c.durable = impl_->per_op();
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

void SqliteStore::put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) {
  validate_config_key(key);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  Impl::Txn txn(im, true);
  {
    Impl::Query q(im, value.empty() ? im.cfg_del : im.cfg_put);
    im.bind_config_key(q, ns, key);
    if (!value.empty()) q.bind(5, value);
    q.step();
  }
  txn.commit();
}

void SqliteStore::get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                             std::span<std::optional<std::string>> values) {
  validate_config_read(keys, values);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  Impl::Txn txn(im, false);  // one snapshot for every key
  for (std::size_t i = 0; i < keys.size(); ++i) {
    Impl::Query q(im, im.cfg_get);
    im.bind_config_key(q, ns, keys[i]);
    values[i] = q.step() ? std::optional<std::string>(q.text(0)) : std::nullopt;
  }
  txn.commit();
}

std::vector<ConfigEntry> SqliteStore::list_config(const Namespace& ns) {
  Impl& im = *impl_;
  std::vector<ConfigEntry> out;
  {
    std::lock_guard g(im.mu);
    Impl::Txn txn(im, false);
    {
      Impl::Query q(im, im.cfg_list);
      q.bind(1, static_cast<std::int64_t>(ns.id));
      while (q.step()) {
        const std::string kind = q.text(0);
        const std::optional<ConfigKind> k = parse_enum(kind, kConfigKinds);
        if (!k) {
          throw StoreUnavailable("sqlite store '" + im.opt.path +
                                 "': config row of unknown kind '" + kind + "'");
        }
        out.push_back(ConfigEntry{*k, q.text(1), q.text(2), q.text(3)});
      }
    }
    txn.commit();
  }
  std::sort(out.begin(), out.end(), [](const ConfigEntry& x, const ConfigEntry& y) {
    return std::tie(x.kind, x.entity, x.resource) < std::tie(y.kind, y.entity, y.resource);
  });
  return out;
}

std::vector<std::string> SqliteStore::namespaces() const {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  std::vector<std::string> out;
  Impl::Txn txn(im, false);
  {
    Impl::Query q(im, im.ns_list);
    while (q.step()) out.push_back(q.text(0));
  }
  txn.commit();
  return out;
}

UsageState SqliteStore::export_state(const Namespace& ns) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  if (!im.per_op()) im.flush_locked();
  UsageState out;
  Impl::Txn txn(im, false);  // one snapshot of rows and holds
  {
    Impl::Query q(im, im.ns_rows);
    q.bind(1, static_cast<std::int64_t>(ns.id));
    while (q.step()) {
      const std::string kind = q.text(3);
      const std::optional<LimitKind> k = parse_enum(kind, kStateKinds);
      if (!k) {
        throw StoreUnavailable("sqlite store '" + im.opt.path + "': state row of unknown kind '" +
                               kind + "'");
      }
      out.rows.push_back(StateRow{q.text(0), q.text(1), q.text(2), *k, q.col(4), q.col(5)});
    }
  }
  {
    Impl::Query q(im, im.ns_holds);
    q.bind(1, static_cast<std::int64_t>(ns.id));
    while (q.step()) {
      out.holds.push_back(HoldRow{q.text(0), q.text(1), q.text(2),
                                  std::bit_cast<std::uint64_t>(q.col(3)), q.col(4), q.col(5)});
    }
  }
  txn.commit();
  return out;
}

void SqliteStore::import_state(const Namespace& ns, const UsageState& state,
                               const std::vector<ConfigEntry>* config) {
  validate_usage(state);
  if (config != nullptr) {
    for (const ConfigEntry& e : *config) {
      validate_config_key(ConfigKey{e.kind, e.entity, e.resource});
      if (e.value.empty()) throw ValidationError("config value", "", "must not be empty");
    }
  }
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  {
    Impl::Txn txn(im, true);
    im.delete_usage(ns.id);
    const auto id = static_cast<std::int64_t>(ns.id);
    if (config != nullptr) {
      Impl::Query(im, im.cfg_del_all).bind(1, id).step();
      for (const ConfigEntry& e : *config) {
        Impl::Query q(im, im.cfg_put);
        im.bind_config_key(q, ns, ConfigKey{e.kind, e.entity, e.resource});
        q.bind(5, e.value);
        q.step();
      }
    }
    for (const StateRow& r : state.rows) {
      Impl::Query q(im, im.put_state);
      q.bind(1, id).bind(2, r.entity).bind(3, r.resource).bind(4, r.limit);
      q.bind(5, to_string(r.kind)).bind(6, r.a).bind(7, r.b);
      q.step();
    }
    for (const HoldRow& h : state.holds) {
      Impl::Query q(im, im.put_hold);
      q.bind(1, id).bind(2, h.entity).bind(3, h.resource).bind(4, h.limit);
      q.bind(5, std::bit_cast<std::int64_t>(h.lease)).bind(6, h.amount).bind(7, h.expiry);
      q.step();
    }
    txn.commit();
  }
  im.drop_cached(ns.id);
  im.inserted_since_prune += state.rows.size() + state.holds.size();
}

}  // namespace admit
