// RedisStore's key codec: how (namespace, group, resource, entity) become Redis key names,
// each part percent-encoded through Boost.URL. The layout is in docs/stores.md ("Layout"); the
// encoded bytes must never change, or the keys of earlier versions are lost.
#pragma once

#include <boost/url/encode.hpp>
#include <boost/url/grammar/lut_chars.hpp>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "admit/store/store.hpp"

namespace admit::redis_store {

/// The bytes a key part keeps as they are; every other byte becomes "%XX" (upper-case hex).
/// No ':', '{', '}' or glob character is among them, so parts joined by ':' stay apart, the
/// hash tag is exactly "{<ns>:<group>}" and SCAN patterns match literally.
inline constexpr boost::urls::grammar::lut_chars kKeyPartChars(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~@/+=-");

/// Appends `part` percent-encoded to `out`.
inline void encode_part(std::string& out, std::string_view part) {
  const std::size_t at = out.size();
  const std::size_t n = boost::urls::encoded_size(part, kKeyPartChars);
  out.resize(at + n);
  boost::urls::encode(out.data() + at, n, part, kKeyPartChars);
}

/// The inverse of encode_part; nullopt for text encode_part cannot have written.
std::optional<std::string> decode_part(std::string_view s);

/// A hash field "<kind>:<part>:<part>..." (one kind letter, each part encoded): the fields of
/// the configuration and learned-state hashes.
std::string kind_field(char kind, std::initializer_list<std::string_view> parts);
/// The inverse of kind_field: the kind's index in `kinds`, `parts.size()` parts decoded into
/// `parts`; nullopt for a field kind_field cannot have written with those kinds and that many
/// parts.
std::optional<std::size_t> parse_kind_field(std::string_view field, std::string_view kinds,
                                            std::span<std::string> parts);

/// A limit state's key: "<prefix>:{<ns>:<group>}:<resource>:<entity>" (parts encoded).
inline std::string usage_key(std::string_view prefix, std::string_view ns, std::string_view group,
                             const KeyParts& key) {
  std::string k;
  k.reserve(prefix.size() + ns.size() + group.size() + key.entity.size() + key.resource.size() + 8);
  k += prefix;
  k += ":{";
  encode_part(k, ns);
  k += ':';
  encode_part(k, group);
  k += "}:";
  encode_part(k, key.resource);
  k += ':';
  encode_part(k, key.entity);
  return k;
}

/// A durable lease's record (Op::lease_record): "<prefix>:{<ns>:<group>}#lease:<id>" (id in
/// decimal), in the hash slot of the usage keys of its (namespace, group). No usage key has a
/// '#' after its tag ('#' is not in kKeyPartChars), so no entity or resource can name it, and
/// usage_pattern() ("}:" after the tag) never matches it; namespace_pattern() does.
inline std::string lease_key(std::string_view prefix, std::string_view ns, std::string_view group,
                             std::uint64_t lease_id) {
  std::string k;
  k.reserve(prefix.size() + ns.size() + group.size() + 32);
  k += prefix;
  k += ":{";
  encode_part(k, ns);
  k += ':';
  encode_part(k, group);
  k += "}#lease:";
  k += std::to_string(lease_id);
  return k;
}

/// A namespace's configuration hash: "<prefix>:{<ns>}".
std::string config_key(std::string_view prefix, std::string_view ns);
/// A namespace's audit log, a stream: "<prefix>:{<ns>}#audit", in the slot of its
/// configuration hash; its id counter is the string "<prefix>:{<ns>}#audit:seq". No other
/// pattern (usage, lease, namespace) matches either: no ':' follows their '}'.
std::string audit_key(std::string_view prefix, std::string_view ns);
/// A namespace's learned state, a hash: "<prefix>:{<ns>}#learned", in the slot of its
/// configuration hash; no other pattern matches it (no ':' follows its '}').
std::string learned_key(std::string_view prefix, std::string_view ns);
/// SCAN pattern of every usage-state key of a namespace: "<prefix>:{<ns>:*".
std::string namespace_pattern(std::string_view prefix, std::string_view ns);
/// SCAN pattern of every usage-state key ("<prefix>:{<ns>:<group>}:..."), not the
/// configuration hashes ("<prefix>:{<ns>}": no ':' follows the '}').
std::string usage_pattern(std::string_view prefix);

/// SCAN pattern of every durable lease record ("<prefix>:{<ns>:<group>}#lease:<id>").
std::string lease_pattern(std::string_view prefix);

/// @throws ValidationError unless `prefix` is non-empty and free of '{', '}' and glob
///         characters.
void validate_prefix(const std::string& prefix);

}  // namespace admit::redis_store
