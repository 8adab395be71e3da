// RedisStore's configuration: one hash per namespace, "<prefix>:{<ns>}" (its own slot; no
// usage-state pattern matches it), a field per entry: "<kind>:<entity>:<resource>" with kind
// s(ystem), r(esource), d(efault of an entity), e(ntity) or p(arent) and the names
// percent-encoded (empty when unused), so fields never collide and list_config can decode
// them.
#include <algorithm>
#include <tuple>

#include "admit/core/error.hpp"
#include "key_codec.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

constexpr std::string_view kConfigKinds = "srdep";  // indexed by ConfigKind

std::string config_field(const ConfigKey& k) {
  return redis_store::kind_field(kConfigKinds[static_cast<std::size_t>(k.kind)],
                                 {k.entity, k.resource});
}

std::optional<ConfigEntry> parse_config_field(std::string_view f) {
  std::string parts[2];
  const auto kind = redis_store::parse_kind_field(f, kConfigKinds, parts);
  if (!kind) return std::nullopt;
  return ConfigEntry{static_cast<ConfigKind>(*kind), std::move(parts[0]), std::move(parts[1]), {}};
}

[[noreturn]] void config_failed(const char* what, const redis::Reply& r) {
  throw StoreUnavailable(std::string("redis ") + what + ": " + redis::to_string(r));
}

}  // namespace

std::string RedisStore::config_key_of(std::string_view ns) const {
  return redis_store::config_key(impl_->o.prefix, ns);
}

void RedisStore::put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) {
  validate_config_key(key);
  const std::string k = config_key_of(ns.name);
  const redis::Reply r =
      value.empty()
          ? impl_->client.command_for_key(k, {"HDEL", k, config_field(key)})
          : impl_->client.command_for_key(k, {"HSET", k, config_field(key), std::string(value)});
  if (!r.is_integer()) config_failed("put_config", r);
}

void RedisStore::get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                            std::span<std::optional<std::string>> values) {
  validate_config_read(keys, values);
  if (keys.empty()) return;
  std::vector<std::string> args{"HMGET", config_key_of(ns.name)};
  for (const ConfigKey& key : keys) args.push_back(config_field(key));
  const redis::Reply r = impl_->client.command_for_key(args[1], args);
  if (!r.is_array() || r.elements.size() != keys.size()) config_failed("get_config", r);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const redis::Reply& e = r.elements[i];
    values[i] = e.is_nil() ? std::nullopt : std::optional<std::string>(e.str);
  }
}

std::vector<ConfigEntry> RedisStore::list_config(const Namespace& ns) {
  const std::string k = config_key_of(ns.name);
  const redis::Reply r = impl_->client.command_for_key(k, {"HGETALL", k});
  if (!r.is_array() || r.elements.size() % 2 != 0) config_failed("list_config", r);
  std::vector<ConfigEntry> out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    auto e = parse_config_field(r.elements[i].str);
    if (!e) continue;  // not a field this store writes
    e->value = r.elements[i + 1].str;
    out.push_back(std::move(*e));
  }
  std::sort(out.begin(), out.end(), [](const ConfigEntry& a, const ConfigEntry& b) {
    return std::tie(a.kind, a.entity, a.resource) < std::tie(b.kind, b.entity, b.resource);
  });
  return out;
}

}  // namespace admit
