// AsioTimer: admit's Timer (admit/core/timer.hpp) on an Asio executor, timed by a Clock: a
// clock that follows real time gets a steady timer for deadline - now(); a ManualClock
// schedules through its call_at(), so waits follow the simulated time and tests never sleep.
// Part of admit::async, the layer that may include Asio in its public headers.
#pragma once

#include <algorithm>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>

#include "admit/core/clock.hpp"
#include "admit/core/timer.hpp"

namespace admit {

/**
 * A Timer whose functions run on `executor` (posted, never inline). Thread-safe. Make it with
 * create(); it must not outlive the executor's execution context. While an arm() is pending on
 * a real-time clock, the steady timer is outstanding work of the context (io_context::run()
 * does not return); a ManualClock's pending calls are not.
 */
class AsioTimer final : public Timer, public std::enable_shared_from_this<AsioTimer> {
 public:
  static std::shared_ptr<AsioTimer> create(boost::asio::any_io_executor executor,
                                           const Clock& clock) {
    return std::shared_ptr<AsioTimer>(new AsioTimer(std::move(executor), clock));
  }

  ~AsioTimer() override {
    if (call_id_ != 0) clock_.cancel_call(call_id_);
  }

  void arm(Micros deadline, std::function<void()> fn) override {
    std::lock_guard g(mu_);
    const std::uint64_t gen = ++gen_;
    fn_ = std::move(fn);
    forget_pending();
    std::weak_ptr<AsioTimer> self = weak_from_this();
    // A ManualClock calls back when it reaches the deadline (perhaps right here: then the
    // firing is posted, so fn never runs inside arm()).
    call_id_ = clock_.call_at(deadline, [self, gen] {
      if (auto t = self.lock()) {
        boost::asio::post(t->executor_, [self, gen] {
          if (auto t2 = self.lock()) t2->fire(gen);
        });
      }
    });
    if (call_id_ != 0) return;
    timer_.expires_after(std::chrono::microseconds(std::max<Micros>(0, deadline - clock_.now())));
    timer_.async_wait([self, gen](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled or replaced
      if (auto t = self.lock()) t->fire(gen);
    });
  }

  void cancel() override {
    std::lock_guard g(mu_);
    ++gen_;
    fn_ = nullptr;
    forget_pending();
  }

  void post(std::function<void()> fn) override { boost::asio::post(executor_, std::move(fn)); }

  const boost::asio::any_io_executor& executor() const { return executor_; }
  const Clock& clock() const { return clock_; }

 private:
  AsioTimer(boost::asio::any_io_executor executor, const Clock& clock)
      : executor_(std::move(executor)), clock_(clock), timer_(executor_) {}

  // Under mu_: drops the pending ManualClock call or steady-timer wait.
  void forget_pending() {
    if (call_id_ != 0) {
      clock_.cancel_call(call_id_);
      call_id_ = 0;
    }
    timer_.cancel();
  }

  // Runs the function of arm number `gen` if no later arm() or cancel() came.
  void fire(std::uint64_t gen) {
    std::function<void()> fn;
    {
      std::lock_guard g(mu_);
      if (gen != gen_ || !fn_) return;
      fn = std::move(fn_);
      fn_ = nullptr;
      call_id_ = 0;
    }
    fn();
  }

  boost::asio::any_io_executor executor_;
  const Clock& clock_;
  std::mutex mu_;
  std::uint64_t gen_ = 0;            // arms and cancels so far; a firing of an older arm is dropped
  std::uint64_t call_id_ = 0;        // the ManualClock's pending call, if any
  std::function<void()> fn_;         // the pending arm's function
  boost::asio::steady_timer timer_;  // every access under mu_ (Asio objects are not thread-safe)
};

}  // namespace admit
