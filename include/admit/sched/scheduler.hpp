// Scheduler: runs LLM requests under admit's limits. Queues per bucket (or account), weighted
// fair queueing across tenants by tokens, dispatch up to a concurrency cap, each dispatch a
// non-waiting Limiter acquire paced by its exact retry_after, the outcome fed back to the
// lease (usage), AIMD and Discovery, retries with backoff and a breaker per bucket.
// Completion tokens: callbacks, asio::use_future, asio::use_awaitable.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <exception>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/limiter.hpp"
#include "admit/sched/errors.hpp"
#include "admit/sched/options.hpp"
#include "admit/sched/provider.hpp"
#include "admit/sched/request.hpp"
#include "admit/sched/stats.hpp"
#include "admit/sched/submit_handler.hpp"

namespace admit::sched {

namespace detail {
class Core;
}

/**
 * Thread-safe: submit from any thread. The library owns no threads: everything runs on a
 * strand of the executor given at construction, timed by the Limiter's Clock (a ManualClock
 * in tests: advance it, then poll the io_context). The Limiter (and its Store and Clock) must
 * outlive the scheduler and every request function's reply.
 *
 *   admit::sched::Scheduler sched(io.get_executor(), limiter, {.mode = Mode::intelligent});
 *   Result r = co_await sched.async_submit(meta, call_model, asio::use_awaitable);
 *
 * Destroying the scheduler fails what is queued or waiting to retry with SchedulerClosed;
 * requests already running finish (their outcome is accounted, then dropped).
 */
class Scheduler {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// @param provider the plug-in (default: HeaderProvider for OpenAI's headers).
  /// @throws ValidationError naming the first invalid option.
  Scheduler(executor_type executor, Limiter& limiter, SchedulerOptions options = {},
            std::shared_ptr<ProviderPlugin> provider = nullptr);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /**
   * Queues `fn` under `metadata` and completes with its Result or an exception:
   * QueueOverflow, TooManyFailedRequests, RequestTimeout, RequestRejected, RetriesExhausted,
   * SchedulerClosed, ValidationError (bad metadata), or the last transport failure. The
   * completion runs on the token's associated executor (default: this scheduler's), never
   * inside this call.
   */
  template <class Token = boost::asio::default_completion_token_t<executor_type>>
  auto async_submit(RequestMetadata metadata, RequestFn fn, Token&& token = {}) {
    return boost::asio::async_initiate<Token, SubmitSignature>(
        [this](auto handler, auto&& m, auto&& f) {
          submit_erased(std::move(m), std::move(f),
                        detail::SubmitHandler(std::move(handler), own_executor()));
        },
        token, std::move(metadata), std::move(fn));
  }

  /// async_submit completing a std::future (what asio::use_future gives, without its
  /// header: GCC 12 -O1 reports a maybe-uninitialized inside it).
  std::future<Result> submit(RequestMetadata metadata, RequestFn fn);

  /**
   * Asks the plug-in for announced limits and makes them the Limiter's learned limits of
   * (entity, bucket) (rpm/tpm per minute, scaled by rate_limit_buffer_ratio like Discovery
   * does). Runs on the calling thread. @return the buckets applied.
   */
  std::size_t discover_limits();

  /// Sets a tenant's fairness weight (> 0); applies to its requests queued from now on.
  void set_tenant_weight(std::string tenant, double weight);

  /// The bucket the plug-in maps a model to.
  std::string bucket_for(std::string_view model, std::string_view resource_type) const;

  SchedulerStats stats() const;
  /// Every queue's breaker, sorted by queue key.
  std::vector<BucketBreaker> breakers() const;
  /// The breaker of one queue key (closed if the queue does not exist yet).
  BreakerState breaker_state(std::string_view queue) const;
  /// Until when the Limiter holds a queue key: its last denial's retry_after (a concurrency
  /// limit: until a lease ends). 0 when it is not held (or does not exist): its next request
  /// may go now. What a router among several schedulers asks to find one with room.
  Micros held_until(std::string_view queue) const;

  const SchedulerOptions& options() const;
  executor_type get_executor() const;

 private:
  const executor_type& own_executor() const noexcept;
  void submit_erased(RequestMetadata&& metadata, RequestFn&& fn, detail::SubmitHandler&& done);

  std::shared_ptr<detail::Core> core_;
};

}  // namespace admit::sched
