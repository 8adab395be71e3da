#include "admit/adapt/aimd.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace admit {

namespace {

constexpr Micros kNoDeadline = std::numeric_limits<Micros>::max();

// The spacing a permit issued at `rate` imposes, capped so that now + interval, and a Clock
// converting it to ns, cannot overflow.
Micros interval_for(double rate) {
  const double us = 1e6 / rate;
  if (!(us < static_cast<double>(AimdController::kMaxInterval))) {
    return AimdController::kMaxInterval;
  }
  return std::max<Micros>(1, static_cast<Micros>(std::llround(us)));
}

}  // namespace

// ---- Permit ----

AimdController::Permit::Permit(AimdController* owner, std::uint64_t epoch, double rate,
                               Micros issued_at) noexcept
    : owner_(owner), epoch_(epoch), rate_at_issue_(rate), issued_at_(issued_at), marked_(false) {}

AimdController::Permit::Permit(Permit&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      epoch_(other.epoch_),
      rate_at_issue_(other.rate_at_issue_),
      issued_at_(other.issued_at_),
      marked_(other.marked_.exchange(true)) {}

AimdController::Permit& AimdController::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    owner_ = std::exchange(other.owner_, nullptr);
    epoch_ = other.epoch_;
    rate_at_issue_ = other.rate_at_issue_;
    issued_at_ = other.issued_at_;
    marked_.store(other.marked_.exchange(true));
  }
  return *this;
}

bool AimdController::Permit::mark_success() {
  if (owner_ == nullptr || marked_.exchange(true)) return false;
  owner_->record_success();
  return true;
}

bool AimdController::Permit::mark_failure() {
  if (owner_ == nullptr || marked_.exchange(true)) return false;
  owner_->record_failure(epoch_);
  return true;
}

bool AimdController::Permit::marked() const noexcept { return marked_.load(); }

// ---- AimdController ----

AimdController::AimdController(const Clock& clock, AimdOptions options)
    : clock_(clock), law_(options), next_ready_(std::numeric_limits<Micros>::min()) {}

AimdController::Permit AimdController::acquire() { return *acquire_impl(kNoDeadline, nullptr); }

std::optional<AimdController::Permit> AimdController::acquire(std::stop_token stop) {
  return acquire_impl(kNoDeadline, &stop);
}

std::optional<AimdController::Permit> AimdController::acquire_until(Micros deadline,
                                                                    std::stop_token stop) {
  return acquire_impl(deadline, &stop);
}

std::optional<AimdController::Permit> AimdController::try_acquire() {
  std::lock_guard g(mu_);
  if (serving_ != next_ticket_) return std::nullopt;  // never overtake a blocked waiter
  const Micros now = clock_.now();
  if (now < next_ready_) return std::nullopt;
  return issue_locked(now);
}

std::optional<AimdController::Permit> AimdController::acquire_impl(Micros deadline,
                                                                   const std::stop_token* stop) {
  // Declared before the lock so it is destroyed after the lock is released: its destructor
  // waits for a running callback, which itself takes mu_.
  auto wake = [this] {
    std::lock_guard g(mu_);
    cv_.notify_all();
  };
  std::optional<std::stop_callback<decltype(wake)>> on_stop;
  if (stop != nullptr && stop->stop_possible()) on_stop.emplace(*stop, wake);

  std::unique_lock lk(mu_);
  const std::uint64_t ticket = next_ticket_++;
  ++waiters_;
  for (;;) {
    if (stop != nullptr && stop->stop_requested()) {
      abandon_locked(ticket);
      return std::nullopt;
    }
    const Micros now = clock_.now();
    if (ticket == serving_) {
      if (now >= next_ready_) {
        --waiters_;
        std::optional<Permit> permit = issue_locked(now);
        advance_queue_locked();
        cv_.notify_all();  // the next waiter is now the head
        return permit;
      }
      // The head's slot is fixed (rate changes affect only later slots), so a slot after
      // the deadline means no permit in time: say so now rather than at the deadline.
      if (next_ready_ > deadline) {
        abandon_locked(ticket);
        return std::nullopt;
      }
      clock_.wait_until(lk, cv_, next_ready_);
    } else {
      if (now >= deadline) {
        abandon_locked(ticket);
        return std::nullopt;
      }
      if (deadline == kNoDeadline || deadline - now > kMaxInterval) {
        cv_.wait(lk);  // woken when the queue moves or on stop
      } else {
        clock_.wait_until(lk, cv_, deadline);
      }
    }
  }
}

AimdController::Permit AimdController::issue_locked(Micros now) {
  const AimdState st = law_.state();  // the rate and the epoch of one instant
  Permit permit(this, st.epoch, st.rate, now);
  next_ready_ = std::max(next_ready_, now) + interval_for(st.rate);
  return permit;
}

void AimdController::abandon_locked(std::uint64_t ticket) {
  --waiters_;
  if (ticket == serving_) {
    advance_queue_locked();
    cv_.notify_all();
  } else {
    abandoned_.insert(ticket);
  }
}

void AimdController::advance_queue_locked() {
  ++serving_;
  while (!abandoned_.empty() && *abandoned_.begin() == serving_) {
    abandoned_.erase(abandoned_.begin());
    ++serving_;
  }
}

Micros AimdController::interval() const { return interval_for(law_.current_rate()); }

std::size_t AimdController::waiters() const {
  std::lock_guard g(mu_);
  return waiters_;
}

}  // namespace admit
