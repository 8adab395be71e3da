// The audit log: who changed what, with the state before and after, kept by the store per
// namespace (Store::append_audit, Store::read_audit; Limiter::audit and Limiter::audit_log
// over them). The store keeps what it is given; the service that makes a change knows its
// principal and writes the event. See docs/design.md, "Audit log".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "admit/core/time.hpp"

namespace admit {

/// One change, as the audit log keeps it.
struct AuditEvent {
  /// Assigned by the store on append (append_audit ignores what is here): 1, 2, 3, ... per
  /// namespace, increasing in append order (on Redis across the fleet). Rely on the order, not
  /// on the ids being consecutive.
  std::uint64_t id = 0;
  /// When, µs since the Unix epoch, by the caller's clock (>= 0; Limiter::audit fills 0 in).
  Micros time = 0;
  /// Who: a token's name, "config:/etc/admit/admit.yaml", "library". 1 to 256 bytes of UTF-8
  /// without control characters.
  std::string principal{};
  /// What: one of AuditAction's names (to_string) or another of the same form: 1 to 64 bytes
  /// of [a-z0-9_.-], starting with a letter.
  std::string action{};
  /// The entity changed; empty for a change at system or resource level. Otherwise 1 to 256
  /// printable ASCII bytes without spaces (an entity name, or a parent rule's pattern).
  std::string entity{};
  /// The resource changed; empty when none. Otherwise as `entity`.
  std::string resource{};
  /// The state before (empty: none, e.g. limits set where there were none) and after (empty:
  /// none, e.g. deleted), each a JSON document of at most kAuditMaxStateBytes bytes.
  std::string before{};
  std::string after{};

  bool operator==(const AuditEvent&) const = default;
};

/// The actions admit's own callers write. AuditEvent::action is text, so a caller may log
/// others of the same form (e.g. "token_created").
enum class AuditAction : std::uint8_t {
  limits_set,        ///< a limit set written (system defaults, a resource's, an entity's)
  limits_deleted,    ///< a limit set removed
  parent_set,        ///< an entity's parent set (after: the parent)
  parent_deleted,    ///< an entity's parent removed
  parent_rules_set,  ///< the parent rules replaced
  config_reloaded,   ///< the service's configuration file read again (SIGHUP, reload API)
  state_reset,       ///< usage state forgotten (of a key, or of the namespace)
};
/// "limits_set", "limits_deleted", "parent_set", "parent_deleted", "parent_rules_set",
/// "config_reloaded", "state_reset".
std::string_view to_string(AuditAction a);
/// The action whose to_string() is `text`; nullopt for any other text.
std::optional<AuditAction> parse_audit_action(std::string_view text);

/// Which events read_audit returns: those with after_id < id < before_id that match the
/// filters, oldest first (or newest first), at most `limit` of them. To page, pass the last
/// id of a page as after_id (oldest first) or before_id (newest_first). A page shorter than
/// `limit` means there are no more such events (now).
struct AuditQuery {
  std::uint64_t after_id = 0;   ///< exclusive lower bound; 0: from the oldest kept
  std::uint64_t before_id = 0;  ///< exclusive upper bound; 0: none
  std::size_t limit = 100;      ///< 1 to kAuditMaxReadLimit
  std::string entity{};         ///< only events of this entity (exact); empty: any
  std::string resource{};       ///< only events of this resource (exact); empty: any
  bool newest_first = false;    ///< false: ascending ids; true: descending
};

inline constexpr std::size_t kAuditMaxPrincipalBytes = 256;
inline constexpr std::size_t kAuditMaxActionBytes = 64;
inline constexpr std::size_t kAuditMaxNameBytes = 256;         ///< entity, resource
inline constexpr std::size_t kAuditMaxStateBytes = 64 * 1024;  ///< before, after (each)
inline constexpr std::size_t kAuditMaxReadLimit = 1000;        ///< AuditQuery::limit
inline constexpr std::size_t kDefaultAuditRetention = 10'000;  ///< events kept per namespace

/// Checks every field of `event` but `id` against the bounds above.
/// @throws ValidationError naming the field.
void validate_audit_event(const AuditEvent& event);
/// Checks a query: limit within 1..kAuditMaxReadLimit, entity and resource as an event's.
/// @throws ValidationError naming the field.
void validate_audit_query(const AuditQuery& query);
/// Checks a store's retention option (the newest `retention` events of each namespace are
/// kept): >= 1. @throws ValidationError (field "audit_retention").
void validate_audit_retention(std::size_t retention);

/// Whether `event` matches `query`'s bounds and filters (not its limit).
bool audit_matches(const AuditEvent& event, const AuditQuery& query);

/**
 * One JSON object on one line (no newline): {"id", "time_us", "principal", "action", "entity",
 * "resource", "before", "after"}, before and after as the JSON values they hold (null when
 * empty; as a string if the text is not JSON, which a validated event never is).
 */
std::string to_json(const AuditEvent& event);

}  // namespace admit
