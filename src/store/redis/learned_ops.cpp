// RedisStore's learned state: one hash per namespace in the namespace's hash slot, changed and
// read by src/store/redis/learned.lua (its own script). A field is "<kind>:<entity>:<resource>:
// <limit>" (kind l or r, the names percent-encoded), its value "<version> <rank> <expires_at>
// <value>". A field or value this store did not write is skipped on read.
#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "admit/core/error.hpp"
#include "key_codec.hpp"
#include "learned_lua.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

constexpr std::string_view kLearnedKinds = "lr";  // indexed by LearnedKind

// Shared by every RedisStore (a Script's copies share its SHA1 once loaded).
const redis::Script& learned_script() {
  static const redis::Script script{redis::detail::kLearnedLua};
  return script;
}

std::string learned_field(const LearnedKey& k) {
  return redis_store::kind_field(kLearnedKinds[static_cast<std::size_t>(k.kind)],
                                 {k.entity, k.resource, k.limit});
}

std::optional<LearnedEntry> parse_learned_field(std::string_view f) {
  std::string parts[3];
  const auto kind = redis_store::parse_kind_field(f, kLearnedKinds, parts);
  if (!kind) return std::nullopt;
  LearnedEntry e;
  e.kind = static_cast<LearnedKind>(*kind);
  e.entity = std::move(parts[0]);
  e.resource = std::move(parts[1]);
  e.limit = std::move(parts[2]);
  return e;
}

bool parse_number(std::string_view& s, std::int64_t& out) {
  const auto space = s.find(' ');
  if (space == std::string_view::npos || space == 0) return false;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + space, out);
  if (ec != std::errc() || p != s.data() + space) return false;
  s.remove_prefix(space + 1);
  return true;
}

// A stored value, "<version> <rank> <expires_at> <value>"; nullopt if it is not one.
std::optional<LearnedValue> parse_learned_value(std::string_view s) {
  LearnedValue v;
  if (!parse_number(s, v.version) || !parse_number(s, v.rank) || !parse_number(s, v.expires_at)) {
    return std::nullopt;
  }
  v.value.assign(s);
  return v;
}

[[noreturn]] void learned_failed(const char* what, const redis::Reply& r) {
  throw StoreUnavailable(std::string("redis ") + what + ": " + redis::to_string(r));
}

}  // namespace

std::string RedisStore::learned_key_of(std::string_view ns) const {
  return redis_store::learned_key(impl_->o.prefix, ns);
}

LearnedValue RedisStore::put_learned(const Namespace& ns, const LearnedKey& key,
                                     const LearnedValue& value, Micros now) {
  validate_learned_key(key);
  validate_learned_value(value, now);
  const redis::Reply r = impl_->client.evalsha(
      learned_script(), {learned_key_of(ns.name)},
      {"put", learned_field(key), std::to_string(value.version), std::to_string(value.rank),
       std::to_string(value.expires_at), value.value, std::to_string(now)});
  if (!r.is_string()) learned_failed("put_learned", r);
  std::optional<LearnedValue> stored = parse_learned_value(r.str);
  if (!stored) learned_failed("put_learned", r);
  return std::move(*stored);
}

std::vector<LearnedEntry> RedisStore::list_learned(const Namespace& ns, Micros now) {
  const redis::Reply r = impl_->client.evalsha(learned_script(), {learned_key_of(ns.name)},
                                               {"list", std::to_string(now)});
  if (!r.is_array() || r.elements.size() % 2 != 0) learned_failed("list_learned", r);
  std::vector<LearnedEntry> out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    std::optional<LearnedEntry> e = parse_learned_field(r.elements[i].str);
    std::optional<LearnedValue> v = parse_learned_value(r.elements[i + 1].str);
    if (!e || !v) continue;  // not an entry this store writes
    e->value = std::move(*v);
    try {
      validate_learned_key({e->kind, e->entity, e->resource, e->limit});
      validate_learned_value(e->value, now);
    } catch (const ValidationError&) {
      continue;
    }
    out.push_back(std::move(*e));
  }
  std::sort(out.begin(), out.end(), [](const LearnedEntry& a, const LearnedEntry& b) {
    return std::tie(a.kind, a.entity, a.resource, a.limit) <
           std::tie(b.kind, b.entity, b.resource, b.limit);
  });
  return out;
}

}  // namespace admit
