// Limiter::acquire_async(): acquire() without a thread per waiter. A waiter is a small state
// machine on the caller's event loop (a Timer): it enters the key's FIFO queue like a
// blocking caller; as the head it tries a non-waiting acquire (try_acquire_async, so a
// RedisStore is never waited on), and when denied arms its timer for the decision's exact
// retry_after (bounded by the deadline); capacity coming back (a release, a refund, the head
// before it leaving) wakes it through the queue. Every step runs on the loop; cancellation
// (AsyncWait::cancel, the stop token) is a posted step too, and an admitted attempt that
// arrives after a cancellation is rolled back, so nothing reserved is kept.
#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>

#include "decisions.hpp"
#include "limiter_impl.hpp"
#include "pair_key.hpp"

namespace admit {

struct Limiter::AsyncWaiter : std::enable_shared_from_this<AsyncWaiter> {
  AsyncWaiter(Impl& i, std::string_view e, std::string_view r, const Amounts& a, Micros until,
              std::shared_ptr<Timer> t, AcquireCallback d, const AcquireOptions& o)
      : impl(i),
        entity(e),
        resource(r),
        qk(detail::pair_key(e, r)),
        amounts(a),
        options(o),
        deadline(until),
        timer(std::move(t)),
        done(std::move(d)) {}

  ~AsyncWaiter() {
    // Only when the loop dropped its work unfinished (a destroyed io_context): the queue must
    // not keep a pointer to this node.
    if (!finished) impl.waits.leave(qk, node);
  }

  void start();
  void step();
  void attempted(Lease lease);
  void cancel();

  // Under `lk`: ends the wait with a denial (timeout, cancelled), the last attempt's reason
  // appended.
  void end_denied(std::unique_lock<std::mutex>& lk, Code code, Micros now);
  // Under `lk` (released here): ends the wait, hands `lease` to done.
  void finish(std::unique_lock<std::mutex>& lk, Lease lease);
  // Under mu: wakes step() at `when`.
  void arm(Micros when) {
    timer->arm(when, [self = shared_from_this()] { self->step(); });
  }
  bool stopping() const { return cancelled || options.stop.stop_requested(); }

  Impl& impl;
  const std::string entity;
  const std::string resource;
  const std::string qk;
  const Amounts amounts;
  const AcquireOptions options;
  const Micros deadline;
  const std::shared_ptr<Timer> timer;
  AcquireCallback done;
  detail::WaitQueues::Waiter node;
  std::optional<std::stop_callback<std::function<void()>>> on_stop;

  std::mutex mu;
  bool attempting = false;  // a try_acquire_async is in flight
  bool again = false;       // woken during the attempt: try again at once if it is denied
  bool cancelled = false;
  bool finished = false;
  Decision last;  // the last denial, for the reason of a timeout
};

void Limiter::AsyncWaiter::start() {
  std::weak_ptr<AsyncWaiter> weak = weak_from_this();
  // Called under the queues' lock: only post (the step takes the queues' lock again).
  node.on_wake = [weak] {
    if (auto s = weak.lock()) {
      s->timer->post([weak] {
        if (auto s2 = weak.lock()) s2->step();
      });
    }
  };
  impl.waits.enter(qk, node);
  if (options.stop.stop_possible()) {
    on_stop.emplace(options.stop, [weak] {
      if (auto s = weak.lock()) s->cancel();
    });
  }
  timer->post([self = shared_from_this()] { self->step(); });
}

void Limiter::AsyncWaiter::step() {
  std::unique_lock lk(mu);
  if (finished) return;
  if (attempting) {
    again = true;
    return;
  }
  const Micros now = impl.clock.now();
  if (stopping()) return end_denied(lk, Code::cancelled, now);
  if (now >= deadline) return end_denied(lk, Code::timeout, now);
  if (!impl.waits.at_head(qk, node)) {
    arm(deadline);  // the head before it leaving wakes it through the queue
    return;
  }
  attempting = true;
  again = false;
  lk.unlock();
  impl.acquire_async(
      entity, resource, amounts,
      [self = shared_from_this()](Lease lease) {
        // Maybe on a store's I/O thread: continue on the loop.
        auto box = std::make_shared<Lease>(std::move(lease));
        self->timer->post([self, box] { self->attempted(std::move(*box)); });
      },
      options, /*respect_queue=*/false);
}

void Limiter::AsyncWaiter::attempted(Lease lease) {
  std::unique_lock lk(mu);
  attempting = false;
  const Micros now = impl.clock.now();
  if (lease.allowed()) {
    if (!stopping()) return finish(lk, std::move(lease));
    lease.rollback_async();  // cancelled meanwhile: give back what the attempt took
    return end_denied(lk, Code::cancelled, now);
  }
  if (detail::waiting_cannot_help(lease.decision().code)) return finish(lk, std::move(lease));
  last = lease.decision();
  if (stopping()) return end_denied(lk, Code::cancelled, now);
  if (now >= deadline) return end_denied(lk, Code::timeout, now);
  if (again) {
    again = false;
    timer->post([self = shared_from_this()] { self->step(); });
    return;
  }
  arm(last.retry_after > 0 ? std::min(deadline, last.now + last.retry_after) : deadline);
}

void Limiter::AsyncWaiter::cancel() {
  {
    std::lock_guard g(mu);
    if (finished) return;
    cancelled = true;
  }
  timer->post([self = shared_from_this()] { self->step(); });
}

void Limiter::AsyncWaiter::end_denied(std::unique_lock<std::mutex>& lk, Code code, Micros now) {
  Lease out;
  Decision& d = detail::LeaseAccess::decision(out);
  d = last;
  detail::end_of_wait(d, code, now);
  finish(lk, std::move(out));
}

void Limiter::AsyncWaiter::finish(std::unique_lock<std::mutex>& lk, Lease lease) {
  finished = true;
  AcquireCallback d = std::move(done);
  lk.unlock();
  impl.waits.leave(qk, node);  // wakes the next head
  timer->cancel();
  d(std::move(lease));
}

void Limiter::AsyncWait::cancel() {
  if (waiter_) waiter_->cancel();
}

Limiter::AsyncWait Limiter::acquire_async(std::string_view entity, std::string_view resource,
                                          const Amounts& amounts, std::chrono::microseconds timeout,
                                          std::shared_ptr<Timer> timer, AcquireCallback done,
                                          const AcquireOptions& options) {
  if (!timer) throw ValidationError("timer", "null", "an asynchronous wait needs a Timer");
  if (!done) throw ValidationError("done", "empty", "an asynchronous wait needs a callback");
  Impl& im = *impl_;
  const Micros deadline = im.clock.now() + std::clamp<Micros>(timeout.count(), 0, kMaxExact / 4);
  auto w = std::make_shared<AsyncWaiter>(im, entity, resource, amounts, deadline, std::move(timer),
                                         std::move(done), options);
  w->start();
  return AsyncWait(std::move(w));
}

}  // namespace admit
