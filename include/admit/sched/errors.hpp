// Why a submitted request failed. Each is an admit::Error, delivered as the std::exception_ptr
// of the completion (rethrown by use_future and use_awaitable).
#pragma once

#include <string>
#include <utility>

#include "admit/core/decision.hpp"
#include "admit/core/error.hpp"
#include "admit/core/time.hpp"

namespace admit::sched {

/// Base of the scheduler's own errors.
class SchedulerError : public Error {
 public:
  SchedulerError(std::string request_id, const std::string& what)
      : Error(what), request_id_(std::move(request_id)) {}
  const std::string& request_id() const { return request_id_; }

 private:
  std::string request_id_;
};

/// The queue was full: with OverflowPolicy::reject the new request, with drop_oldest the
/// oldest queued one.
class QueueOverflow : public SchedulerError {
 public:
  using SchedulerError::SchedulerError;
};

/// The bucket's circuit breaker is open: too many failures in its window. retry_at() is when
/// it lets a probe through (half-open).
class TooManyFailedRequests : public SchedulerError {
 public:
  TooManyFailedRequests(std::string request_id, std::string bucket, Micros retry_at)
      : SchedulerError(std::move(request_id), "circuit breaker of bucket '" + printable(bucket) +
                                                  "' is open: too many failed requests"),
        bucket_(std::move(bucket)),
        retry_at_(retry_at) {}
  const std::string& bucket() const { return bucket_; }
  Micros retry_at() const { return retry_at_; }

 private:
  std::string bucket_;
  Micros retry_at_ = 0;
};

/// The request's deadline or request_timeout passed before its outcome arrived (queued,
/// waiting to retry, or running: a late reply is still accounted, then dropped).
class RequestTimeout : public SchedulerError {
 public:
  using SchedulerError::SchedulerError;
};

/// The Limiter refused the request in a way waiting cannot fix (exceeds_capacity,
/// invalid_argument, unknown_limit, store_unavailable); decision() says which.
class RequestRejected : public SchedulerError {
 public:
  RequestRejected(std::string request_id, Decision d)
      : SchedulerError(std::move(request_id),
                       "request rejected (" + std::string(to_string(d.code)) + "): " + d.reason),
        decision_(std::move(d)) {}
  const Decision& decision() const { return decision_; }

 private:
  Decision decision_;
};

/// Every attempt got a 429 or a 5xx; status() is the last one's.
class RetriesExhausted : public SchedulerError {
 public:
  RetriesExhausted(std::string request_id, int status, int attempts)
      : SchedulerError(std::move(request_id), "request failed with status " +
                                                  std::to_string(status) + " after " +
                                                  std::to_string(attempts) + " attempts"),
        status_(status),
        attempts_(attempts) {}
  int status() const { return status_; }
  int attempts() const { return attempts_; }

 private:
  int status_ = 0;
  int attempts_ = 0;
};

/// The scheduler was destroyed while the request was queued or waiting to retry.
class SchedulerClosed : public SchedulerError {
 public:
  using SchedulerError::SchedulerError;
};

}  // namespace admit::sched
