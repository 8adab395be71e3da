// RedisStore's audit log: one stream per namespace and its id counter, both in the namespace's
// hash slot, changed and read by src/store/redis/audit.lua (its own script, apart from the
// limits' admit.lua). An entry that is not an event as the script writes it (an id other than
// "n-0", a missing or malformed field, a value out of bounds) is skipped on read.
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/error.hpp"
#include "audit_lua.hpp"
#include "key_codec.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

// Shared by every RedisStore (a Script's copies share its SHA1 once loaded).
const redis::Script& audit_script() {
  static const redis::Script script{redis::detail::kAuditLua};
  return script;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && p == end && !s.empty();
}

// An entry of the stream as XRANGE returns it, {id, {field, value, ...}}, as an event; nullopt
// for an entry the script did not write as one (a field given twice counts as its last value,
// as the script's filter reads it).
std::optional<AuditEvent> parse_entry(const redis::Reply& entry) {
  const std::string& sid = entry.elements[0].str;
  const auto dash = sid.find('-');
  if (dash == std::string::npos || std::string_view(sid).substr(dash + 1) != "0") {
    return std::nullopt;
  }
  AuditEvent e;
  if (!parse_int(std::string_view(sid).substr(0, dash), e.id) || e.id == 0) return std::nullopt;
  const redis::Reply& fields = entry.elements[1];
  if (!fields.is_array() || fields.elements.size() % 2 != 0) return std::nullopt;
  std::string* slots[] = {nullptr,     &e.principal, &e.action, &e.entity,
                          &e.resource, &e.before,    &e.after};
  constexpr std::string_view kNames = "tpaerbf";  // the fields, in the order of slots
  std::string time;
  slots[0] = &time;
  unsigned seen = 0;
  for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
    const redis::Reply& name = fields.elements[i];
    const redis::Reply& value = fields.elements[i + 1];
    if (!name.is_string() || !value.is_string()) return std::nullopt;
    if (name.str.size() != 1) continue;  // not a field of the script's
    const auto at = kNames.find(name.str[0]);
    if (at == std::string_view::npos) continue;
    *slots[at] = value.str;
    seen |= 1U << at;
  }
  if (seen != (1U << kNames.size()) - 1 || !parse_int(time, e.time)) return std::nullopt;
  try {
    validate_audit_event(e);
  } catch (const ValidationError&) {
    return std::nullopt;
  }
  return e;
}

}  // namespace

std::string RedisStore::audit_key_of(std::string_view ns) const {
  return redis_store::audit_key(impl_->o.prefix, ns);
}

std::uint64_t RedisStore::append_audit(const Namespace& ns, AuditEvent event) {
  validate_audit_event(event);
  const std::string k = audit_key_of(ns.name);
  const redis::Reply r = impl_->client.evalsha(
      audit_script(), {k, k + ":seq"},
      {"append", std::to_string(impl_->o.audit_retention), std::to_string(event.time),
       std::move(event.principal), std::move(event.action), std::move(event.entity),
       std::move(event.resource), std::move(event.before), std::move(event.after)});
  if (!r.is_integer() || r.integer <= 0) {
    throw StoreUnavailable("redis append_audit: " + redis::to_string(r));
  }
  return static_cast<std::uint64_t>(r.integer);
}

std::vector<AuditEvent> RedisStore::read_audit(const Namespace& ns, const AuditQuery& query) {
  validate_audit_query(query);
  std::vector<AuditEvent> out;
  // Inclusive stream ids: after_id + 1 .. before_id - 1 (an id alone means "n-0" as a start,
  // "n-<any>" as an end).
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  if (query.after_id == kMax || query.before_id == 1) return out;
  if (query.before_id != 0 && query.after_id + 1 > query.before_id - 1) return out;
  std::string from = std::to_string(query.after_id + 1);
  std::string to = query.before_id == 0 ? "+" : std::to_string(query.before_id - 1);
  const std::string k = audit_key_of(ns.name);
  const std::vector<std::string> keys{k, k + ":seq"};
  for (;;) {
    const std::size_t want = query.limit - out.size();
    const redis::Reply r =
        impl_->client.evalsha(audit_script(), keys,
                              {"read", from, to, std::to_string(want), query.entity, query.resource,
                               query.newest_first ? "1" : "0"});
    if (!r.is_array() || r.elements.size() > want) {
      throw StoreUnavailable("redis read_audit: " + redis::to_string(r));
    }
    for (const redis::Reply& entry : r.elements) {
      if (!entry.is_array() || entry.elements.size() != 2 || !entry.elements[0].is_string()) {
        throw StoreUnavailable("redis read_audit: an entry " + redis::to_string(entry));
      }
      // The next run starts after this entry, whatever it holds.
      (query.newest_first ? to : from) = "(" + entry.elements[0].str;
      std::optional<AuditEvent> e = parse_entry(entry);
      if (e && audit_matches(*e, query)) out.push_back(std::move(*e));
    }
    // Fewer entries than asked: the stream has no more. Otherwise some were skipped: read on.
    if (r.elements.size() < want || out.size() == query.limit) return out;
  }
}

}  // namespace admit
