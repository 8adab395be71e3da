// Counters of a Scheduler, readable from any thread (the service exports them).
#pragma once

#include <cstdint>
#include <string>

#include "admit/core/time.hpp"
#include "admit/sched/breaker.hpp"

namespace admit::sched {

struct SchedulerStats {
  // gauges, now
  std::uint64_t queued = 0;         ///< waiting for dispatch
  std::uint64_t in_flight = 0;      ///< acquiring or running
  std::uint64_t delayed = 0;        ///< waiting to retry
  std::uint64_t breakers_open = 0;  ///< buckets whose breaker is open or half-open
  /// Requests the scheduler still holds a record of: queued, running, waiting to retry, or
  /// ended by a timeout while their reply is still due. 0 once everything has been answered.
  std::uint64_t live = 0;
  // counters, since construction
  std::uint64_t submitted = 0;
  std::uint64_t dispatched = 0;  ///< attempts started (retries included)
  std::uint64_t completed = 0;   ///< requests that got a Result
  std::uint64_t failed = 0;      ///< requests that got an exception (any of the below too)
  std::uint64_t retried = 0;     ///< attempts scheduled again after a 429/5xx/failure
  std::uint64_t overflowed = 0;  ///< QueueOverflow
  std::uint64_t timed_out = 0;   ///< RequestTimeout
  std::uint64_t broken = 0;      ///< TooManyFailedRequests
  std::uint64_t rejected = 0;    ///< RequestRejected
  std::uint64_t throttled = 0;   ///< Limiter denials that held a bucket until retry_after
  std::uint64_t breaker_trips = 0;
};

/// One bucket's breaker.
struct BucketBreaker {
  std::string queue;  ///< the queue key: the bucket (Mode::account: account + '/' + bucket)
  BreakerState state = BreakerState::closed;
  Micros open_until = 0;
};

}  // namespace admit::sched
