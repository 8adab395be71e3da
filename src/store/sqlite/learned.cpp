// SqliteStore's learned state (Store::put_learned / list_learned): the `learned` table (schema
// version 5). A put reads the row, merges (merge_learned) and writes it in one BEGIN IMMEDIATE
// transaction, in both durability modes (write_behind caches no learned state), so processes
// sharing the file merge in turn. Reads come from the file; a row that is not an entry as a
// put writes it (an unknown kind, numbers out of bounds) is skipped.
#include <algorithm>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "admit/core/error.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

constexpr LearnedKind kLearnedKinds[] = {LearnedKind::limits, LearnedKind::rate};

}  // namespace

void SqliteStore::Impl::prepare_learned() {
  learned_get = db.prepare(
      "SELECT version, rank, expires_at, value FROM learned WHERE ns = ?1 AND kind = ?2 AND "
      "entity = ?3 AND resource = ?4 AND limit_name = ?5");
  learned_put = db.prepare(
      "INSERT INTO learned (ns, kind, entity, resource, limit_name, version, rank, expires_at, "
      "value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
      "ON CONFLICT (ns, kind, entity, resource, limit_name) DO UPDATE SET "
      "version = excluded.version, rank = excluded.rank, expires_at = excluded.expires_at, "
      "value = excluded.value");
  learned_list = db.prepare(
      "SELECT kind, entity, resource, limit_name, version, rank, expires_at, value FROM learned "
      "WHERE ns = ?1 AND expires_at > ?2");
  learned_prune = db.prepare("DELETE FROM learned WHERE expires_at <= ?1");
}

LearnedValue SqliteStore::put_learned(const Namespace& ns, const LearnedKey& key,
                                      const LearnedValue& value, Micros now) {
  validate_learned_key(key);
  validate_learned_value(value, now);
  Impl& im = *impl_;
  const auto bind_key = [&](Impl::Query& q) {
    q.bind(1, static_cast<std::int64_t>(ns.id))
        .bind(2, to_string(key.kind))
        .bind(3, key.entity)
        .bind(4, key.resource)
        .bind(5, key.limit);
  };
  std::lock_guard g(im.mu);
  Impl::Txn txn(im.db, true);
  std::optional<LearnedValue> stored;
  {
    Impl::Query q(im.db, im.learned_get);
    bind_key(q);
    if (q.step()) stored = LearnedValue{q.col(0), q.col(1), q.col(2), q.text(3)};
  }
  const LearnedValue merged = merge_learned(stored, value, now);
  if (!stored || merged != *stored) {
    Impl::Query q(im.db, im.learned_put);
    bind_key(q);
    q.bind(6, merged.version).bind(7, merged.rank).bind(8, merged.expires_at).bind(9, merged.value);
    q.step();
  }
  txn.commit();
  return merged;
}

std::vector<LearnedEntry> SqliteStore::list_learned(const Namespace& ns, Micros now) {
  Impl& im = *impl_;
  std::vector<LearnedEntry> out;
  {
    std::lock_guard g(im.mu);
    Impl::Txn txn(im.db, false);
    {
      Impl::Query q(im.db, im.learned_list);
      q.bind(1, static_cast<std::int64_t>(ns.id)).bind(2, now);
      while (q.step()) {
        const std::optional<LearnedKind> k = sqlite_store::parse_enum(q.text(0), kLearnedKinds);
        if (!k) continue;
        LearnedEntry e{*k, q.text(1), q.text(2), q.text(3),
                       LearnedValue{q.col(4), q.col(5), q.col(6), q.text(7)}};
        try {
          validate_learned_key({e.kind, e.entity, e.resource, e.limit});
          validate_learned_value(e.value, now);
        } catch (const ValidationError&) {
          continue;  // not a row put_learned wrote
        }
        out.push_back(std::move(e));
      }
    }
    txn.commit();
  }
  std::sort(out.begin(), out.end(), [](const LearnedEntry& x, const LearnedEntry& y) {
    return std::tie(x.kind, x.entity, x.resource, x.limit) <
           std::tie(y.kind, y.entity, y.resource, y.limit);
  });
  return out;
}

}  // namespace admit
