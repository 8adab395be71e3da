#include "admit/core/clock.hpp"

#include <time.h>

#include <algorithm>
#include <chrono>

namespace admit {

namespace {
Micros wall_now() { return to_micros(std::chrono::system_clock::now().time_since_epoch()); }
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
Micros coarse_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<Micros>(ts.tv_sec) * kMicrosPerSecond + ts.tv_nsec / 1000;
}
}  // namespace

std::uint64_t Clock::call_at(Micros, std::function<void()>) const { return 0; }

bool Clock::cancel_call(std::uint64_t) const { return false; }

SystemClock::SystemClock() : wall_anchor_(wall_now()), steady_anchor_ns_(steady_ns()) {}

Micros SystemClock::now() const { return wall_anchor_ + (steady_ns() - steady_anchor_ns_) / 1000; }

void SystemClock::wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                             Micros deadline) const {
  const auto steady_deadline =
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(steady_anchor_ns_)) +
      std::chrono::microseconds(deadline - wall_anchor_);
  cv.wait_until(lock, steady_deadline);
}

CoarseClock::CoarseClock() : wall_anchor_(wall_now()), coarse_anchor_(coarse_us()) {
  timespec res{};
  clock_getres(CLOCK_MONOTONIC_COARSE, &res);
  resolution_ =
      std::max<Micros>(1, static_cast<Micros>(res.tv_sec) * kMicrosPerSecond + res.tv_nsec / 1000);
}

Micros CoarseClock::now() const { return wall_anchor_ + (coarse_us() - coarse_anchor_); }

void CoarseClock::wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                             Micros deadline) const {
  // Wait on the fine steady clock, then callers re-read now(); add one tick so the coarse
  // reading has reached the deadline when the waiter wakes.
  const Micros remaining = deadline - now() + resolution_;
  cv.wait_for(lock, std::chrono::microseconds(std::max<Micros>(remaining, 0)));
}

ManualClock::ManualClock(Micros start) : now_(start) {}

Micros ManualClock::now() const {
  std::lock_guard g(mu_);
  return now_;
}

void ManualClock::wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                             Micros deadline) const {
  auto s = std::make_shared<Sleeper>(Sleeper{lock.mutex(), &cv, deadline});
  {
    std::lock_guard g(mu_);
    if (now_ >= deadline) return;
    sleepers_.push_back(s);
  }
  cv.wait(lock);
  s->active = false;  // under *lock: advance() will not touch cv after this
  std::lock_guard g(mu_);
  std::erase(sleepers_, s);
}

std::size_t ManualClock::advance(Micros d) {
  {
    std::lock_guard g(mu_);
    if (d > 0) now_ += d;
  }
  return wake_due();
}

std::size_t ManualClock::set(Micros t) {
  {
    std::lock_guard g(mu_);
    now_ = std::max(now_, t);
  }
  return wake_due();
}

std::uint64_t ManualClock::call_at(Micros deadline, std::function<void()> fn) const {
  std::uint64_t id = 0;
  {
    std::lock_guard g(mu_);
    id = next_call_id_++;
    if (deadline > now_) {
      calls_.push_back(Call{deadline, id, std::move(fn)});
      return id;
    }
  }
  fn();
  return id;
}

bool ManualClock::cancel_call(std::uint64_t id) const {
  std::lock_guard g(mu_);
  return std::erase_if(calls_, [id](const Call& c) { return c.id == id; }) > 0;
}

std::size_t ManualClock::pending_calls() const {
  std::lock_guard g(mu_);
  return calls_.size();
}

std::size_t ManualClock::wake_due() {
  std::vector<std::shared_ptr<Sleeper>> due;
  std::vector<Call> calls;
  {
    std::lock_guard g(mu_);
    for (const auto& s : sleepers_) {
      if (s->deadline <= now_) due.push_back(s);
    }
    auto split = std::stable_partition(calls_.begin(), calls_.end(),
                                       [this](const Call& c) { return c.deadline > now_; });
    calls.assign(std::make_move_iterator(split), std::make_move_iterator(calls_.end()));
    calls_.erase(split, calls_.end());
  }
  std::stable_sort(calls.begin(), calls.end(),
                   [](const Call& a, const Call& b) { return a.deadline < b.deadline; });
  for (auto& c : calls) c.fn();  // outside the lock: a callback may call call_at() again
  // The waiter holds its mutex from registration until cv.wait releases it, so taking that
  // mutex here guarantees the notification is not lost.
  std::size_t woken = 0;
  for (const auto& s : due) {
    std::lock_guard g(*s->mu);
    if (s->active) {
      s->cv->notify_all();
      ++woken;
    }
  }
  return woken;
}

std::size_t ManualClock::sleepers() const {
  std::lock_guard g(mu_);
  return sleepers_.size();
}

Micros ManualClock::next_wakeup() const {
  std::lock_guard g(mu_);
  Micros best = -1;
  for (const auto& s : sleepers_) {
    if (best < 0 || s->deadline < best) best = s->deadline;
  }
  for (const auto& c : calls_) {
    if (best < 0 || c.deadline < best) best = c.deadline;
  }
  return best;
}

}  // namespace admit
