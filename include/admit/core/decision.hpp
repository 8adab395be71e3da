// Decision: the value every admission call returns. A denial is a normal value, not an error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/limit.hpp"
#include "admit/core/time.hpp"

namespace admit {

/// Stable decision codes; each equals its wire string.
enum class Code : std::uint8_t {
  ok,                    ///< allowed
  rate_exceeded,         ///< a rate limit has too little now; retry_after says when
  window_exceeded,       ///< a calendar window is used up; retry_after = until it resets
  concurrency_exceeded,  ///< all slots held; retry_after = until enough leases expire
  exceeds_capacity,      ///< the amount is larger than a limit's capacity: it can never fit
  queue_ahead,           ///< other callers wait on this key first (FIFO); try again or wait
  unknown_limit,         ///< an amount names a limit that no entity in the chain has
  invalid_argument,      ///< bad input (negative amount, amount beyond the exact range, ...)
  store_unavailable,     ///< the store failed and the policy is fail-closed
  timeout,               ///< acquire's deadline passed while waiting
  cancelled,             ///< acquire's stop token fired while waiting
  /// a durable lease's operation found no such lease in the store (ended, expired, or changed
  /// by another process meanwhile): nothing was changed
  lease_not_found,
};
std::string_view to_string(Code c);

/// One limit that refused the request (or, in Decision::shadow_violations, a shadow limit that
/// would have).
struct Violation {
  std::string entity;  ///< which entity of the chain (the requester or an ancestor)
  std::string limit;   ///< limit name
  LimitKind kind = LimitKind::rate;
  std::int64_t requested = 0;
  std::int64_t available = 0;
  Micros retry_after = 0;  ///< for this limit alone
};

/// Where a resolved limit came from (most specific first). `discovered`: learned from the
/// provider's responses (Discovery), replacing the configured limit of the same name.
enum class ConfigSource : std::uint8_t { discovered, entity, entity_default, resource, system };
std::string_view to_string(ConfigSource s);

/// The state of one limit of one entity after the operation.
struct LimitStatus {
  std::string entity;
  std::string limit;
  LimitKind kind = LimitKind::rate;
  ConfigSource source = ConfigSource::resource;
  std::int64_t capacity = 0;
  std::int64_t available = 0;  ///< whole units that would fit now
  Micros reset_after = 0;      ///< until full again (rate), until the window ends (window)
  double rate = 0;             ///< adaptive limits: the AIMD controller's rate (per second)
  Micros period = 0;           ///< Limit::period(): what the capacity is stated over
  bool shadow = false;         ///< Limit::shadow(): reported, never enforced
};

/**
 * The outcome of try_acquire / acquire / consume / decide / record_usage / Lease::adjust.
 * retry_after is exact: with nothing else happening, the same request at now + retry_after
 * is allowed and 1 µs earlier it is not (0 when allowed or when it can never fit).
 * Shadow limits (Limit::shadow) never deny: one that would have refused is reported in
 * shadow_violations (allowed or denied alike) and counts neither in `code`, `reason`,
 * `retry_after` nor `violations`.
 * [[nodiscard]]: a call whose Decision is dropped was not checked; write (void) where that is
 * meant.
 */
struct [[nodiscard]] Decision {
  bool allowed = false;
  Code code = Code::invalid_argument;
  std::string reason;
  Micros retry_after = 0;
  std::vector<Violation> violations;  ///< empty when allowed
  /// The shadow limits that would have refused (each with its own retry_after); filled on
  /// allowed and denied decisions of acquires, decides and consumes.
  std::vector<Violation> shadow_violations;
  std::vector<LimitStatus> stats;  ///< every limit the request touched
  Micros now = 0;                  ///< the instant the decision was taken at

  explicit operator bool() const { return allowed; }
  std::chrono::microseconds retry_after_duration() const {
    return std::chrono::microseconds(retry_after);
  }
  /// Seconds to put in a Retry-After header: ceil(retry_after), at least 1 when a retry can
  /// succeed; 0 when allowed or when retrying cannot help (exceeds_capacity, unknown_limit,
  /// invalid_argument).
  std::int64_t retry_after_header() const;
};

}  // namespace admit
