// SqliteStore's usage export and import (export_state / import_state): a namespace's state rows
// and holds as UsageState, what `admit migrate` builds on (docs/migrate.md). Durable lease
// records are not usage state here: export leaves them out, import deletes the namespace's
// (they describe the usage it replaces).
#include <bit>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "admit/core/error.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

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

UsageState SqliteStore::export_state(const Namespace& ns) {
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  if (!im.per_op()) im.flush_locked();
  UsageState out;
  Impl::Txn txn(im.db, false);  // one snapshot of rows and holds
  {
    Impl::Query q(im.db, im.ns_rows);
    q.bind(1, static_cast<std::int64_t>(ns.id));
    while (q.step()) {
      const std::string kind = q.text(3);
      const std::optional<LimitKind> k = sqlite_store::parse_enum(kind, kStateKinds);
      if (!k) {
        throw StoreUnavailable("sqlite store '" + im.opt.path + "': state row of unknown kind '" +
                               kind + "'");
      }
      out.rows.push_back(StateRow{q.text(0), q.text(1), q.text(2), *k, q.col(4), q.col(5)});
    }
  }
  {
    Impl::Query q(im.db, im.ns_holds);
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
    Impl::Txn txn(im.db, true);
    im.delete_usage(ns.id);
    const auto id = static_cast<std::int64_t>(ns.id);
    if (config != nullptr) {
      Impl::Query(im.db, im.cfg_del_all).bind(1, id).step();
      for (const ConfigEntry& e : *config) {
        Impl::Query q(im.db, im.cfg_put);
        im.bind_config_key(q, ns, ConfigKey{e.kind, e.entity, e.resource});
        q.bind(5, e.value);
        q.step();
      }
    }
    for (const StateRow& r : state.rows) {
      Impl::Query q(im.db, im.put_state);
      q.bind(1, id).bind(2, r.entity).bind(3, r.resource).bind(4, r.limit);
      q.bind(5, to_string(r.kind)).bind(6, r.a).bind(7, r.b);
      q.step();
    }
    for (const HoldRow& h : state.holds) {
      Impl::Query q(im.db, im.put_hold);
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
