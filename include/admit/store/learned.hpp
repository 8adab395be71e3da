// Learned state: what Limiters learned about a provider, kept by the store per namespace so
// that every process on it paces to the same numbers (Store::put_learned, list_learned;
// LimiterOptions::adaptation): the limits discovered for an (entity, resource) and the AIMD
// rate of an adaptive limit. A store merges every write by the entry's precedence (the greater
// wins, so writes commute and a late, older one changes nothing) and forgets an entry at its
// expiry. See docs/design.md, "Shared adaptation".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "admit/core/time.hpp"

namespace admit {

/// What a learned entry holds.
enum class LearnedKind : std::uint8_t {
  /// The limits learned for (entity, resource): encode_limits() text; empty: forgotten.
  limits,
  /// The AIMD rate of the adaptive limit `limit` of (entity, resource).
  rate,
};
/// "limits", "rate".
std::string_view to_string(LearnedKind k);

/// Names one learned entry of a namespace.
struct LearnedKey {
  LearnedKind kind = LearnedKind::limits;
  std::string_view entity;    ///< at most 256 bytes (may be empty, as in an acquire)
  std::string_view resource;  ///< 1 to 256 bytes
  std::string_view limit;     ///< rate: the limit's name (validate_name); limits: empty
};

/// The longest value a learned entry holds.
inline constexpr std::size_t kLearnedMaxValueBytes = 64 * 1024;
/// Precedences and instants of learned entries stay below 2^53 (a Redis script compares them
/// as Lua numbers).
inline constexpr std::int64_t kLearnedMaxNumber = (std::int64_t{1} << 53) - 1;

/// One learned value and its precedence.
struct LearnedValue {
  std::int64_t version = 0;  ///< precedence, compared first (0 to kLearnedMaxNumber)
  std::int64_t rank = 0;     ///< precedence, compared second (0 to kLearnedMaxNumber)
  /// The entry is gone from this instant on (µs since the epoch, by the writers' clocks; 1 to
  /// kLearnedMaxNumber).
  Micros expires_at = 0;
  std::string value{};  ///< opaque to the store; at most kLearnedMaxValueBytes

  bool operator==(const LearnedValue&) const = default;
};

/// One stored learned entry (see Store::list_learned).
struct LearnedEntry {
  LearnedKind kind = LearnedKind::limits;
  std::string entity;
  std::string resource;
  std::string limit;
  LearnedValue value;

  bool operator==(const LearnedEntry&) const = default;
};

/// @throws ValidationError naming the field unless `key` is as LearnedKey says.
void validate_learned_key(const LearnedKey& key);
/// @throws ValidationError naming the field unless `value` is as LearnedValue says and
///         expires after `now`.
void validate_learned_value(const LearnedValue& value, Micros now);

/// Whether (a.version, a.rank) is greater than (b.version, b.rank).
inline bool learned_precedes(const LearnedValue& a, const LearnedValue& b) {
  return a.version != b.version ? a.version > b.version : a.rank > b.rank;
}

/**
 * The merge every store applies to one entry, at `now`: the incoming value when nothing live
 * is stored (absent, or expired at `now`) or when its precedence is greater; the stored value
 * when its precedence is greater; on equal precedences the stored value, its expiry moved to
 * the later of the two (a writer renewing what it wrote).
 */
LearnedValue merge_learned(const std::optional<LearnedValue>& stored, const LearnedValue& incoming,
                           Micros now);

}  // namespace admit
