// The provider simulator's referee: per-API-key request and token buckets that refill
// continuously like OpenAI's, and the rate-limit headers and 429 bodies a real provider sends.
// No I/O and no clock: every call takes `now`, so runs in simulated time are exact and
// repeatable. Deliberately independent of admit's own limiter math (it judges that math).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/core/time.hpp"

namespace admit::sim {

/// The hidden limits of one account (every API key gets its own pair of buckets).
struct SimLimits {
  /// Requests per minute: bucket capacity and refill per 60 s. 0 = unlimited.
  std::int64_t rpm = 0;
  /// Tokens (prompt + max_tokens) per minute: capacity and refill per 60 s. 0 = unlimited.
  std::int64_t tpm = 0;

  bool operator==(const SimLimits&) const = default;
};

/// Throws std::invalid_argument naming the field and value unless 0 <= rpm, tpm <= kMaxExact.
void validate(const SimLimits& limits);

/// Which provider's rate-limit headers and 429 body the simulator sends.
enum class Dialect {
  openai,     ///< x-ratelimit-*-{requests,tokens}, Go-duration resets, retry-after(-ms)
  anthropic,  ///< anthropic-ratelimit-{requests,tokens}-*, RFC 3339 resets, retry-after
};

/// "openai" or "anthropic".
std::string_view to_string(Dialect d) noexcept;
/// Inverse of to_string(); std::nullopt for anything else.
std::optional<Dialect> dialect_from_string(std::string_view name) noexcept;

/// One request as the rate limiter sees it.
struct SimRequest {
  /// API key: each key has its own buckets.
  std::string key = "default";
  /// Model name, only used in the 429 message.
  std::string model = "sim-model";
  /// Estimated prompt tokens, >= 0.
  std::int64_t prompt_tokens = 0;
  /// Requested completion tokens, >= 0. The charge is prompt_tokens + max_tokens.
  std::int64_t max_tokens = 0;
};

/// The rate-limit part of a response.
struct SimResponse {
  /// 200 (admitted) or 429.
  int status = 200;
  /// Lower-case header names and values, in a fixed order: rate-limit headers of every
  /// limited bucket, then (429 only) retry-after and, for OpenAI, retry-after-ms.
  std::vector<std::pair<std::string, std::string>> headers;
  /// The provider's error JSON for a 429; empty for 200.
  std::string body;
  /// Tokens taken from the token bucket: prompt_tokens + max_tokens if admitted, else 0.
  std::int64_t charged_tokens = 0;
  /// 429 only: the exact wait in µs until the same request would fit (before the headers
  /// round it up); std::nullopt on 200 and when it can never fit.
  std::optional<Micros> retry_after;

  /// Value of the header named `name` (lower case), if present.
  std::optional<std::string_view> header(std::string_view name) const noexcept;
};

/// Counts since construction or the last reset_stats(); token sums saturate at INT64_MAX.
struct SimStats {
  std::int64_t accepted = 0;         ///< requests answered 200
  std::int64_t rejected = 0;         ///< requests answered 429
  std::int64_t accepted_tokens = 0;  ///< tokens charged for accepted requests
  std::int64_t rejected_tokens = 0;  ///< tokens asked for by rejected requests

  bool operator==(const SimStats&) const = default;
};

/// What one key's buckets hold at an instant, in whole requests and tokens (rounded down, as
/// its x-ratelimit-remaining-* headers would say); std::nullopt for an unlimited bucket.
struct SimLevels {
  std::optional<std::int64_t> requests;
  std::optional<std::int64_t> tokens;

  bool operator==(const SimLevels&) const = default;
};

/**
 * An LLM provider's rate limiter, per API key: two continuous token buckets.
 *
 * The request bucket holds up to `rpm` and refills `rpm` per 60 s continuously; the token
 * bucket holds up to `tpm` and refills `tpm` per 60 s. A new key starts with both full. A
 * request costs 1 request and prompt_tokens + max_tokens tokens, charged at arrival with no
 * refund (as OpenAI does). It is admitted only if both buckets hold enough; otherwise it gets
 * a 429 and nothing is charged; the 429 blames the bucket that keeps it waiting longest
 * (requests on a tie). A request costing more than `tpm` never fits (429, no retry-after).
 *
 * Levels are kept exactly, in units of 1/60,000,000 token (one unit per µs per token/minute of
 * rate), so refill over any µs interval is an integer and results do not depend on how time
 * is sliced. Time going backwards is ignored (a bucket never un-refills). Keys whose buckets
 * are full again are forgotten, so memory follows the active keys.
 *
 * Thread-safe (one mutex).
 */
class ProviderModel {
 public:
  /// @throws std::invalid_argument if `limits` is invalid (see validate()).
  explicit ProviderModel(SimLimits limits, Dialect dialect = Dialect::openai);
  ~ProviderModel();
  ProviderModel(const ProviderModel&) = delete;
  ProviderModel& operator=(const ProviderModel&) = delete;

  /**
   * Decides one request arriving at `now` (µs since the Unix epoch) and charges it if it
   * fits. Headers report the buckets after the charge.
   * @throws std::invalid_argument if prompt_tokens or max_tokens is negative or > kMaxExact.
   */
  SimResponse handle(const SimRequest& r, Micros now);

  /**
   * Changes the limits at `now`. Every bucket first refills up to `now` at the old rate, then
   * keeps its level clamped to the new capacity (halving tpm leaves a full bucket at the new
   * capacity, a half-empty one as it was); a bucket that was unlimited starts full.
   * @throws std::invalid_argument if `limits` is invalid (nothing changes).
   */
  void set_limits(SimLimits limits, Micros now);

  /// The current limits.
  SimLimits limits() const;
  /// The dialect given at construction.
  Dialect dialect() const noexcept { return dialect_; }
  /// Counts since construction or the last reset_stats().
  SimStats stats() const;
  /// What `key`'s buckets hold at `now`, refilled up to it; nothing is charged or changed. A
  /// key not seen yet (or forgotten once full again) is full.
  SimLevels levels(std::string_view key, Micros now) const;
  /// Zeroes the counts (the buckets are unchanged).
  void reset_stats();

 private:
  struct State;  // accounts, limits and stats behind mu_ (exact 128-bit levels live in the .cpp)

  mutable std::mutex mu_;
  const Dialect dialect_;
  std::unique_ptr<State> state_;
};

/**
 * Formats a duration the way Go's time.Duration.String() does, as OpenAI's reset headers
 * are: "0s", "20ms", "1.5ms", "999µs", "1s", "4m12.172s", "6m0s", "1h0m0s".
 * @param d µs, >= 0 (negative values format as "0s").
 */
std::string format_go_duration(Micros d);

/// Formats an instant (µs since the Unix epoch) as RFC 3339 UTC: "2023-11-14T22:13:20Z", with
/// ".ffffff" only when there are sub-second µs.
std::string format_rfc3339(Micros t);

}  // namespace admit::sim
