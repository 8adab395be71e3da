// SqliteStore::Impl: the state every part of SqliteStore shares, and which file does what with
// it. The class, the op paths (apply per_op and write_behind), get_lease, namespaces and
// pruning are in sqlite_store.cpp, the flusher of write_behind in write_behind.cpp,
// configuration in config.cpp, the audit log in audit.cpp, learned state in learned.cpp, usage
// export / import in usage_io.cpp; the connection is db.hpp, the schema schema.hpp. The row and
// lease-record functions below run on every operation (of a durable lease) and stay inline.
// Internal header.
#pragma once

#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../kernel.hpp"
#include "admit/store/sqlite_store.hpp"
#include "db.hpp"

namespace admit {

namespace sqlite_store {

// The file grows with the keys ever seen unless idle rows are deleted: prune whenever this
// process inserted as many rows as were live after the last prune (amortised O(1) per insert).
inline constexpr std::size_t kMinPruneAt = 4096;

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
  detail::Slot slot;
  detail::Holds holds;
  bool in_file = false;  // the file has its row (state) or rows (holds)
  bool dirty = false;    // differs from the file; listed in Impl::dirty

  bool concurrency() const { return kind == LimitKind::concurrency; }
  bool exists() const { return concurrency() ? !holds.empty() : present; }
};

// A durable lease's record (Op::lease_record) as a write_behind store knows it: loaded from the
// file on first use, then the truth for as long as it is cached (as an Entry is), written with
// the dirty entries in the flush's transaction. per_op keeps none: its ops read and write the
// `leases` table inside their own transaction.
struct Record {
  std::uint32_t ns = 0;
  std::string group;
  std::uint64_t id = 0;
  bool present = false;  // a record exists (it may have expired: prune deletes it)
  std::string data;
  Micros expiry = 0;
  bool in_file = false;  // the file has its row
  bool dirty = false;    // differs from the file; listed in Impl::dirty_records
};

// (namespace, lease id, group) as one map key: the group is the only variable-length part.
inline std::string record_key(std::uint32_t ns, std::string_view group, std::uint64_t id) {
  std::string k(12 + group.size(), '\0');
  std::memcpy(k.data(), &ns, 4);
  std::memcpy(k.data() + 4, &id, 8);
  if (!group.empty()) std::memcpy(k.data() + 12, group.data(), group.size());
  return k;
}

// (namespace, entity, resource, kind, limit) as one map key: length-prefixed, so no two
// tuples share a key.
inline std::string cache_key(std::uint32_t ns, const KeyParts& k, const Limit& l) {
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

// The enum value whose to_string() is `text`, if any (kind columns read back).
template <class Enum, std::size_t N>
std::optional<Enum> parse_enum(std::string_view text, const Enum (&all)[N]) {
  for (const Enum e : all) {
    if (to_string(e) == text) return e;
  }
  return std::nullopt;
}

}  // namespace sqlite_store

struct SqliteStore::Impl {
  using Db = sqlite_store::Db;
  using Entry = sqlite_store::Entry;
  using Record = sqlite_store::Record;
  using Query = sqlite_store::Query;
  using StmtPtr = sqlite_store::StmtPtr;
  using Txn = sqlite_store::Txn;

  SqliteStoreOptions opt;
  Db db;  // before the statements: closed after every statement is finalised
  mutable std::mutex mu;

  // Prepared once per connection (the transactions' are in db).
  StmtPtr get_state, put_state, del_state, get_holds, del_holds, put_hold;
  StmtPtr ns_put, ns_get, ns_del_state, ns_del_holds;
  StmtPtr prune_groups, prune_holds, prune_state, count_keys;
  StmtPtr cfg_put, cfg_del, cfg_del_all, cfg_get, cfg_list, ns_list, ns_rows, ns_holds;
  StmtPtr lease_get, lease_put, lease_replace, lease_del, ns_del_leases, prune_leases;
  StmtPtr audit_next, audit_put, audit_trim, audit_asc, audit_desc;  // sqlite/audit.cpp
  StmtPtr learned_get, learned_put, learned_list, learned_prune;     // sqlite/learned.cpp

  std::unordered_map<std::string, Entry> cache;  // node-based: Entry* stay valid on insert
  std::vector<Entry*> dirty;
  std::vector<Entry*> items;  // scratch: the entry of each item of the current op
  // write_behind: durable lease records this process touched (few: one per lease in flight).
  std::unordered_map<std::string, Record> records;  // by record_key(); node-based as cache
  std::vector<Record*> dirty_records;

  std::uint64_t ops = 0;      // apply() calls that returned
  std::uint64_t durable = 0;  // ... of which on disk
  std::size_t inserted_since_prune = 0;
  std::atomic<std::uint64_t> expired_leases{0};  // lease rows prune_locked() found expired
  std::size_t prune_at = sqlite_store::kMinPruneAt;
  std::optional<std::string> flush_error;  // write_behind: the last flush failed

  std::condition_variable flusher_cv;
  bool stopping = false;
  std::thread flusher;

  // sqlite_store.cpp: checks the options, opens the file, migrates it, prepares the
  // statements and (write_behind) starts the flusher.
  explicit Impl(SqliteStoreOptions o);
  ~Impl() { stop_flusher(); }

  bool per_op() const { return opt.durability == Durability::per_op; }

  // ---- rows (inline: every operation) ----

  void bind_key(Query& q, const Entry& e) {
    q.bind(1, static_cast<std::int64_t>(e.ns))
        .bind(2, e.entity)
        .bind(3, e.resource)
        .bind(4, e.limit);
    if (!e.concurrency()) q.bind(5, to_string(e.kind));
  }

  void load(Entry& e) {
    if (e.concurrency()) {
      Query q(db, get_holds);
      bind_key(q, e);
      while (q.step()) {
        e.holds.push_back(detail::Hold{std::bit_cast<std::uint64_t>(q.col(0)), q.col(1), q.col(2)});
      }
      e.in_file = !e.holds.empty();
    } else {
      Query q(db, get_state);
      bind_key(q, e);
      e.present = e.in_file = q.step();
      if (e.present) e.slot = detail::Slot{q.col(0), q.col(1)};
    }
  }

  // Writes `e` to the file (inside a transaction); settle() it once that commits.
  void write(const Entry& e) {
    if (e.concurrency()) {
      if (e.in_file) {
        Query q(db, del_holds);
        bind_key(q, e);
        q.step();
      }
      for (const detail::Hold& h : e.holds) {
        Query q(db, put_hold);
        bind_key(q, e);
        q.bind(5, std::bit_cast<std::int64_t>(h.lease)).bind(6, h.amount).bind(7, h.expiry);
        q.step();
      }
    } else if (e.present) {
      Query q(db, put_state);
      bind_key(q, e);
      q.bind(6, e.slot.a).bind(7, e.slot.b);
      q.step();
    } else if (e.in_file) {
      Query q(db, del_state);
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
      auto [pos, fresh] = cache.try_emplace(sqlite_store::cache_key(op.ns->id, k, *it.limit));
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

  // ---- durable lease records (inline: every op of a durable lease) ----

  void bind_lease_key(Query& q, std::uint32_t ns, std::string_view group, std::uint64_t id) {
    q.bind(1, static_cast<std::int64_t>(ns))
        .bind(2, group)
        .bind(3, std::bit_cast<std::int64_t>(id));
  }

  // Reads the record of (ns, group, id) from the file: false if it has none.
  bool read_record(std::uint32_t ns, std::string_view group, std::uint64_t id, std::string& data,
                   Micros& expiry) {
    Query q(db, lease_get);
    bind_lease_key(q, ns, group, id);
    if (!q.step()) return false;
    data = q.blob(0);
    expiry = q.col(1);
    return true;
  }

  // per_op: checks op's guard against the file (inside the op's transaction).
  // @throws LeaseNotFound.
  void check_file_record(const Op& op) {
    std::string data;
    Micros expiry = 0;
    const bool has = read_record(op.ns->id, op.group, op.lease_id, data, expiry);
    detail::check_record(op, has ? &data : nullptr, expiry);
  }

  // per_op: writes what the applied op does to its record (inside the op's transaction), as
  // a MemoryStore does: a put of expiry 0 (adjust) keeps the stored expiry.
  void write_record_change(const Op& op, const detail::RecordChange& c) {
    if (c.kind == detail::RecordChange::none) return;
    Query q(db, c.kind == detail::RecordChange::erase ? lease_del : lease_put);
    bind_lease_key(q, op.ns->id, op.group, op.lease_id);
    if (c.kind == detail::RecordChange::put) q.bind_blob(4, c.data).bind(5, c.expiry);
    q.step();
    if (op.kind == OpKind::acquire) ++inserted_since_prune;
  }

  // write_behind: the cached record of op's lease, loaded from the file on first use.
  Record& cached_record(const Op& op) {
    auto [pos, fresh] =
        records.try_emplace(sqlite_store::record_key(op.ns->id, op.group, op.lease_id));
    Record& r = pos->second;
    if (fresh) {
      r.ns = op.ns->id;
      r.group.assign(op.group);
      r.id = op.lease_id;
      try {
        r.present = r.in_file = read_record(r.ns, r.group, r.id, r.data, r.expiry);
      } catch (...) {
        records.erase(pos);
        throw;
      }
    }
    return r;
  }

  // write_behind: what the applied op does to its (cached) record, as a MemoryStore does.
  void change_record(Record& r, const detail::RecordChange& c) {
    if (c.kind == detail::RecordChange::none) return;
    if (c.kind == detail::RecordChange::erase) {
      r.present = false;
      r.data.clear();
      r.expiry = 0;
    } else {
      r.data.assign(c.data);
      if (!r.present || c.expiry != 0) r.expiry = c.expiry;
      r.present = true;
    }
    if (!r.dirty) {
      r.dirty = true;
      dirty_records.push_back(&r);
    }
  }

  // write_behind: writes `r` to the file (inside the flush's transaction); settle() it once
  // that commits.
  void write(const Record& r) {
    if (r.present) {
      Query q(db, lease_replace);
      bind_lease_key(q, r.ns, r.group, r.id);
      q.bind_blob(4, r.data).bind(5, r.expiry);
      q.step();
      if (!r.in_file) ++inserted_since_prune;
    } else if (r.in_file) {
      Query q(db, lease_del);
      bind_lease_key(q, r.ns, r.group, r.id);
      q.step();
    }
  }

  void settle(Record& r) {
    r.in_file = r.present;
    r.dirty = false;
  }

  // The kernel's view of the resolved entries.
  struct Access {
    Impl& im;
    void forget(std::size_t i) {
      Entry& e = *im.items[i];
      e.present = false;
      e.slot = detail::Slot{};
      e.holds.clear();
      im.mark_dirty(e);
    }
    detail::Slot* state(std::size_t i, bool create) {
      Entry& e = *im.items[i];
      if (!e.present) {
        if (!create) return nullptr;
        e.present = true;
        e.slot = detail::Slot{};
      }
      return &e.slot;
    }
    detail::Slot& state_again(std::size_t i) { return im.items[i]->slot; }
    void state_changed(std::size_t i) { im.mark_dirty(*im.items[i]); }
    detail::Holds* holds(std::size_t i, bool create) {
      Entry& e = *im.items[i];
      // Rows in the file whose holds all expired still exist: pass 2 must see (and delete)
      // them, as a MemoryStore erases a key's emptied hold list.
      return create || e.in_file || !e.holds.empty() ? &e.holds : nullptr;
    }
    void holds_changed(std::size_t i, detail::Holds* h) {
      if (h != nullptr) im.mark_dirty(*im.items[i]);
    }
  };

  void drop_cache() {
    cache.clear();
    dirty.clear();
    items.clear();
    records.clear();
    dirty_records.clear();
  }

  // Deletes the state rows, holds and lease records of namespace `id` (inside a write
  // transaction).
  void delete_usage(std::uint32_t id) {
    for (const StmtPtr* s : {&ns_del_state, &ns_del_holds, &ns_del_leases}) {
      Query q(db, *s);
      q.bind(1, static_cast<std::int64_t>(id));
      q.step();
    }
  }

  // write_behind: what the file now holds for namespace `id` supersedes what is cached for
  // it, pending or not.
  void drop_cached(std::uint32_t id) {
    std::erase_if(dirty, [&](const Entry* e) { return e->ns == id; });
    std::erase_if(cache, [&](const auto& kv) { return kv.second.ns == id; });
    std::erase_if(dirty_records, [&](const Record* r) { return r->ns == id; });
    std::erase_if(records, [&](const auto& kv) { return kv.second.ns == id; });
  }

  void bind_config_key(Query& q, const Namespace& ns, const ConfigKey& key) {
    q.bind(1, static_cast<std::int64_t>(ns.id))
        .bind(2, to_string(key.kind))
        .bind(3, key.entity)
        .bind(4, key.resource);
  }

  // ---- sqlite_store.cpp: the op paths and pruning ----

  bool apply_per_op(const Op& op, std::span<ItemResult> results);
  bool apply_write_behind(const Op& op, std::span<ItemResult> results);
  std::int64_t count_locked();
  std::size_t prune_locked(Micros now);

  // ---- audit.cpp: the audit log ----

  // Prepares the audit_* statements (the constructor calls it).
  void prepare_audit();

  // ---- learned.cpp: learned state ----

  // Prepares the learned_* statements (the constructor calls it).
  void prepare_learned();

  // ---- write_behind.cpp: the flusher ----

  // Writes every dirty entry and lease record in one transaction. @throws StoreUnavailable
  // (kept pending).
  void flush_locked();
  void start_flusher();
  // Stops the flusher and writes what is pending (a failure there is not reported).
  void stop_flusher();
  void flush_loop();
};

}  // namespace admit
