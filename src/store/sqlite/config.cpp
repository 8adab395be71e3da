// SqliteStore's configuration (Store::put_config / get_config / list_config): the `config`
// table, written at once in its own transaction in both durability modes and always read from
// the file, so a store sees what other processes wrote.
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

constexpr ConfigKind kConfigKinds[] = {ConfigKind::system, ConfigKind::resource,
                                       ConfigKind::entity_default, ConfigKind::entity,
                                       ConfigKind::parent};

}  // namespace

void SqliteStore::put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) {
  validate_config_key(key);
  Impl& im = *impl_;
  std::lock_guard g(im.mu);
  Impl::Txn txn(im.db, true);
  {
    Impl::Query q(im.db, value.empty() ? im.cfg_del : im.cfg_put);
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
  Impl::Txn txn(im.db, false);  // one snapshot for every key
  for (std::size_t i = 0; i < keys.size(); ++i) {
    Impl::Query q(im.db, im.cfg_get);
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
    Impl::Txn txn(im.db, false);
    {
      Impl::Query q(im.db, im.cfg_list);
      q.bind(1, static_cast<std::int64_t>(ns.id));
      while (q.step()) {
        const std::string kind = q.text(0);
        const std::optional<ConfigKind> k = sqlite_store::parse_enum(kind, kConfigKinds);
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

}  // namespace admit
