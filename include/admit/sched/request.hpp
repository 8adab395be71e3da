// What the scheduler runs: a request's metadata (who asks, for which model and bucket, how
// big, how urgent, until when), the outcome its function reports, and the Result the caller
// receives.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "admit/adapt/headers.hpp"
#include "admit/core/time.hpp"
#include "admit/sched/sse_usage.hpp"  // Usage

namespace admit::sched {

/// Resource types of seed 002 (any other string is a custom type; it only matters to the
/// provider plug-in's model -> bucket mapping).
namespace resource_type {
inline constexpr std::string_view text = "text";
inline constexpr std::string_view image = "image";
inline constexpr std::string_view audio = "audio";
inline constexpr std::string_view embedding = "embedding";
inline constexpr std::string_view generic = "generic";
}  // namespace resource_type

/// Describes one request to submit(). Only `model` is required.
struct RequestMetadata {
  std::string request_id;  ///< the caller's id; quoted in errors
  /// Fairness unit: tenants share a bucket in proportion to their weights, by tokens.
  std::string tenant;
  /// Mode::account: the queue and the Limiter entity. Empty: the tenant (then "default").
  std::string account;
  std::string model;  ///< mapped to a bucket by the provider
  std::string resource_type = std::string(resource_type::text);  ///< see resource_type
  std::int64_t estimated_tokens = 0;  ///< reserved before the call, reconciled after; >= 0
  int priority = 0;                   ///< higher goes first within its tenant
  Micros deadline = 0;  ///< absolute (the Limiter clock's µs); 0 = none. See RequestTimeout.
  /// At most this many attempts (>= 1), never more than SchedulerOptions::max_attempts;
  /// 0 = the scheduler's. A caller with somewhere else to go (another deployment of the
  /// model) asks for 1 and takes a 429 or 5xx elsewhere at once.
  int max_attempts = 0;
};

/// What one attempt of a request function reports.
struct Outcome {
  int status = 0;              ///< HTTP status; 0 with `error` set for a transport failure
  Headers headers;             ///< response headers (rate-limit headers are read from them)
  std::string body;            ///< error bodies carry retry hints for some providers
  std::optional<Usage> usage;  ///< absent: the estimate stands
  /// A transport failure (no response): retried like a 5xx; the last one is rethrown.
  std::exception_ptr error;
};

/// Which attempt of which request a request function is asked to make.
struct Attempt {
  const RequestMetadata* metadata = nullptr;  ///< valid during the call only
  std::string_view bucket;                    ///< valid during the call only
  int number = 1;                             ///< 1 for the first attempt
};

/// Reports the outcome of one attempt. Call it exactly once per attempt, from any thread,
/// at once or later; later calls are ignored. Copyable; cheap.
class Reply {
 public:
  struct Target {
    virtual void deliver(void* request, Outcome outcome) = 0;

   protected:
    ~Target() = default;
  };
  Reply(std::shared_ptr<Target> target, void* request)
      : target_(std::move(target)), request_(request) {}
  void operator()(Outcome outcome) const { target_->deliver(request_, std::move(outcome)); }

 private:
  std::shared_ptr<Target> target_;
  void* request_;
};

/**
 * The request itself: starts the call and returns without waiting for it (it runs on the
 * scheduler's strand, so it must not block), then reports through `reply`. An exception it
 * throws counts as a transport failure of that attempt.
 */
using RequestFn = std::function<void(const Attempt& attempt, Reply reply)>;

/// What a successful submit() yields: the last attempt's outcome (any status that is not
/// retried: 2xx, or a 4xx other than 429) and how it went.
struct Result {
  Outcome outcome;
  int attempts = 0;         ///< attempts made (1 + retries)
  Micros queued_for = 0;    ///< from submit to the first dispatch
  Micros completed_at = 0;  ///< when the last attempt's outcome arrived
  std::string bucket;       ///< the provider bucket it ran in
};

}  // namespace admit::sched
