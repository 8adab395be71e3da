// The audit log's events: their bounds (what every store accepts and returns), the standard
// actions and the JSON line form.
#include "admit/store/audit.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <iterator>
#include <string>
#include <system_error>

#include "admit/core/error.hpp"

namespace admit {

namespace {

constexpr AuditAction kActions[] = {
    AuditAction::limits_set,     AuditAction::limits_deleted,   AuditAction::parent_set,
    AuditAction::parent_deleted, AuditAction::parent_rules_set, AuditAction::config_reloaded,
    AuditAction::state_reset,
};

[[noreturn]] void too_long(std::string_view field, std::string_view value, std::size_t max) {
  throw ValidationError(std::string(field), std::string(value.substr(0, 64)),
                        "must be at most " + std::to_string(max) + " bytes (has " +
                            std::to_string(value.size()) + ")");
}

// Length of the UTF-8 sequence starting at s[i] if it is well formed (no overlong forms, no
// surrogates, at most U+10FFFF); 0 otherwise.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (b(k) < 0x80 || b(k) > 0xbf) return 0;
  }
  return n;
}

void check_principal(std::string_view p) {
  if (p.empty()) throw ValidationError("principal", "", "must not be empty");
  if (p.size() > kAuditMaxPrincipalBytes) too_long("principal", p, kAuditMaxPrincipalBytes);
  for (std::size_t i = 0; i < p.size();) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (c < 0x20 || c == 0x7f) {
      throw ValidationError("principal", std::string(p), "must not contain control characters");
    }
    const std::size_t n = utf8_sequence(p, i);
    if (n == 0) throw ValidationError("principal", std::string(p), "must be valid UTF-8");
    i += n;
  }
}

void check_action(std::string_view a) {
  if (a.empty()) throw ValidationError("action", "", "must not be empty");
  if (a.size() > kAuditMaxActionBytes) too_long("action", a, kAuditMaxActionBytes);
  if (a[0] < 'a' || a[0] > 'z') {
    throw ValidationError("action", std::string(a), "must start with a letter a-z");
  }
  for (const char c : a) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) throw ValidationError("action", std::string(a), "must be made of [a-z0-9_.-]");
  }
}

// An entity or resource: empty, or printable ASCII without spaces.
void check_name(std::string_view field, std::string_view v) {
  if (v.size() > kAuditMaxNameBytes) too_long(field, v, kAuditMaxNameBytes);
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      throw ValidationError(std::string(field), std::string(v),
                            "must be printable ASCII without spaces");
    }
  }
}

void check_state(std::string_view field, std::string_view v) {
  if (v.size() > kAuditMaxStateBytes) too_long(field, v, kAuditMaxStateBytes);
  if (v.empty()) return;
  std::error_code ec;
  (void)boost::json::parse(v, ec);
  if (ec) {
    throw ValidationError(std::string(field), std::string(v.substr(0, 64)),
                          "must be empty or one JSON document (" + ec.message() + ")");
  }
}

boost::json::value state_value(const std::string& text) {
  if (text.empty()) return nullptr;
  std::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  if (ec) return boost::json::value(text);
  return v;
}

}  // namespace

std::string_view to_string(AuditAction a) {
  switch (a) {
    case AuditAction::limits_set:
      return "limits_set";
    case AuditAction::limits_deleted:
      return "limits_deleted";
    case AuditAction::parent_set:
      return "parent_set";
    case AuditAction::parent_deleted:
      return "parent_deleted";
    case AuditAction::parent_rules_set:
      return "parent_rules_set";
    case AuditAction::config_reloaded:
      return "config_reloaded";
    case AuditAction::state_reset:
      return "state_reset";
  }
  return "unknown";
}

std::optional<AuditAction> parse_audit_action(std::string_view text) {
  for (const AuditAction a : kActions) {
    if (to_string(a) == text) return a;
  }
  return std::nullopt;
}

void validate_audit_event(const AuditEvent& e) {
  if (e.time < 0) throw ValidationError("time", std::to_string(e.time), "must be >= 0");
  check_principal(e.principal);
  check_action(e.action);
  check_name("entity", e.entity);
  check_name("resource", e.resource);
  check_state("before", e.before);
  check_state("after", e.after);
}

void validate_audit_query(const AuditQuery& q) {
  if (q.limit < 1 || q.limit > kAuditMaxReadLimit) {
    throw ValidationError("limit", std::to_string(q.limit),
                          "must be within 1.." + std::to_string(kAuditMaxReadLimit));
  }
  check_name("entity", q.entity);
  check_name("resource", q.resource);
}

void validate_audit_retention(std::size_t retention) {
  if (retention < 1) {
    throw ValidationError("audit_retention", std::to_string(retention), "must be >= 1");
  }
}

bool audit_matches(const AuditEvent& e, const AuditQuery& q) {
  return e.id > q.after_id && (q.before_id == 0 || e.id < q.before_id) &&
         (q.entity.empty() || e.entity == q.entity) &&
         (q.resource.empty() || e.resource == q.resource);
}

std::string to_json(const AuditEvent& e) {
  boost::json::object o;
  o["id"] = e.id;
  o["time_us"] = e.time;
  o["principal"] = e.principal;
  o["action"] = e.action;
  o["entity"] = e.entity;
  o["resource"] = e.resource;
  o["before"] = state_value(e.before);
  o["after"] = state_value(e.after);
  return boost::json::serialize(o);
}

}  // namespace admit
