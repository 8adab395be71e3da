// Shared helpers for limiter and store tests: bounded spins (a broken waiter fails the test
// after ~60 s of real time instead of hanging it), a background acquire() that is always
// cancelled and joined on destruction, and seed / environment helpers.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <optional>
#include <sstream>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "support/seed.hpp"  // test_seed(): ADMIT_TEST_SEED or a fixed fallback

namespace admit::test {

/// Streams every part into one string. (Prefer it to "literal" + std::to_string(x), which
/// trips GCC 12's -Wrestrict false positive under -Werror.)
template <class... Ts>
std::string cat(const Ts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

/// 2023-11-14T22:13:20Z: ManualClock's default start. 80,000 s into its UTC day, so the UTC
/// day ends 6,400 s later.
inline constexpr Micros kStart = 1'700'000'000'000'000;

/// Real-time bound for every spin: a test that waits longer than this has a bug.
inline constexpr std::chrono::seconds kSpinLimit{60};  // generous: sanitizers on 2 busy cores

/// Spins (std::this_thread::yield) until `pred()` holds; fails after kSpinLimit of real time.
/// Use as ASSERT_TRUE(spin_until([&] { ... }, "what")).
template <class Pred>
::testing::AssertionResult spin_until(Pred&& pred, std::string_view what) {
  const auto give_up = std::chrono::steady_clock::now() + kSpinLimit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) {
      return ::testing::AssertionFailure()
             << "gave up after " << kSpinLimit.count() << " s waiting for: " << what;
    }
    std::this_thread::yield();
  }
  return ::testing::AssertionSuccess();
}

/// Waits until exactly `n` threads sleep in clock.wait_until().
inline ::testing::AssertionResult wait_for_sleepers(const ManualClock& clock, std::size_t n) {
  return spin_until([&] { return clock.sleepers() == n; },
                    "ManualClock::sleepers() == " + std::to_string(n));
}

/// Waits until exactly `n` threads sleep and the earliest deadline among them is `deadline`
/// (distinguishes a waiter that went back to sleep with a new deadline from one that has not
/// woken up yet).
inline ::testing::AssertionResult wait_for_wakeup_at(const ManualClock& clock, std::size_t n,
                                                     Micros deadline) {
  return spin_until([&] { return clock.sleepers() == n && clock.next_wakeup() == deadline; },
                    "ManualClock: " + std::to_string(n) + " sleeper(s), next wakeup at " +
                        std::to_string(deadline));
}

/// Waits until `n` callers wait in acquire() on (entity, resource) and `sleepers` threads
/// sleep on the clock (i.e. the waiters are blocked, not merely queued).
inline ::testing::AssertionResult wait_for_blocked(const Limiter& limiter, const ManualClock& clock,
                                                   std::string_view entity,
                                                   std::string_view resource, std::size_t n,
                                                   std::size_t sleepers) {
  return spin_until(
      [&] { return limiter.waiting(entity, resource) == n && clock.sleepers() == sleepers; },
      "waiting(" + std::string(entity) + ", " + std::string(resource) +
          ") == " + std::to_string(n) + " and sleepers == " + std::to_string(sleepers));
}

/**
 * Runs limiter.acquire(...) on its own std::thread. The destructor cancels the wait through
 * the acquire's stop token and joins, so a test that fails early never hangs. Read the
 * outcome only after join().
 */
class BackgroundAcquire {
 public:
  BackgroundAcquire(Limiter& limiter, std::string entity, std::string resource, Amounts amounts,
                    std::chrono::microseconds timeout, AcquireOptions options = {})
      : entity_(std::move(entity)), resource_(std::move(resource)) {
    options.stop = stop_.get_token();
    thread_ = std::thread(
        [this, &limiter, amounts = std::move(amounts), timeout, options = std::move(options)] {
          try {
            lease_.emplace(limiter.acquire(entity_, resource_, amounts, timeout, options));
          } catch (const RateLimitExceeded& e) {
            denial_ = e.decision();
          } catch (const std::exception& e) {
            other_error_ = e.what();
          }
          done_.store(true, std::memory_order_release);
        });
  }
  BackgroundAcquire(const BackgroundAcquire&) = delete;
  BackgroundAcquire& operator=(const BackgroundAcquire&) = delete;
  ~BackgroundAcquire() {
    stop_.request_stop();
    if (thread_.joinable()) thread_.join();
  }

  /// Fires the acquire's stop token (it should return promptly with code cancelled).
  void request_stop() { stop_.request_stop(); }
  /// True once acquire() returned or threw (no join needed to read this flag).
  bool done() const { return done_.load(std::memory_order_acquire); }
  /// Waits (bounded) for the thread to finish, then joins it.
  ::testing::AssertionResult join() {
    auto r = spin_until([&] { return done(); },
                        "background acquire() on " + entity_ + "/" + resource_ + " to return");
    if (!r) return r;
    thread_.join();
    return ::testing::AssertionSuccess();
  }

  // ---- outcome, valid after join() ----
  bool admitted() const { return lease_.has_value() && lease_->allowed(); }
  Lease& lease() { return *lease_; }
  /// The decision carried by RateLimitExceeded, if acquire threw it.
  const std::optional<Decision>& denial() const { return denial_; }
  /// what() of any other exception.
  const std::string& other_error() const { return other_error_; }

 private:
  std::string entity_;
  std::string resource_;
  std::stop_source stop_;
  std::atomic<bool> done_{false};
  std::optional<Lease> lease_;
  std::optional<Decision> denial_;
  std::string other_error_;
  std::thread thread_;  // last: starts after every other member is constructed
};

/// True when ADMIT_SANITIZER_BUILD=1 (slow, memory-hungry tests skip themselves).
inline bool sanitizer_build() {
  const char* s = std::getenv("ADMIT_SANITIZER_BUILD");
  return s != nullptr && std::string_view(s) == "1";
}

/// Finds the status of limit `limit` of `entity` in a stats list; nullptr if absent.
template <class Statuses>
const LimitStatus* find_status(const Statuses& list, std::string_view entity,
                               std::string_view limit) {
  for (const auto& s : list) {
    if (s.entity == entity && s.limit == limit) return &s;
  }
  return nullptr;
}

/// available of `limit` of `owner` (default: the requester) in limiter.stats(entity, resource);
/// -1 if the limit is not there.
inline std::int64_t available(Limiter& limiter, std::string_view entity, std::string_view resource,
                              std::string_view limit, std::string_view owner = {}) {
  const ResourceStats st = limiter.stats(entity, resource);
  const LimitStatus* s = find_status(st.limits, owner.empty() ? entity : owner, limit);
  return s == nullptr ? -1 : s->available;
}

/// try_acquire + commit: the decision, with the capacity kept if it was allowed.
inline Decision take(Limiter& limiter, std::string_view entity, std::string_view resource,
                     const Amounts& amounts) {
  Lease l = limiter.try_acquire(entity, resource, amounts);
  Decision d = l.decision();
  l.commit();
  return d;
}

}  // namespace admit::test
