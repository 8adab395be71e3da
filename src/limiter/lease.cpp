#include "admit/lease.hpp"

#include "admit/core/error.hpp"
#include "admit/limiter.hpp"

namespace admit {

Lease::~Lease() { end(/*refund=*/true); }

Lease::Lease(Lease&& o) noexcept
    : limiter_(std::exchange(o.limiter_, nullptr)),
      decision_(std::move(o.decision_)),
      id_(o.id_),
      holds_slots_(o.holds_slots_),
      expires_at_(o.expires_at_),
      key_(std::move(o.key_)),
      held_(std::move(o.held_)) {}

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    end(/*refund=*/true);
    limiter_ = std::exchange(o.limiter_, nullptr);
    decision_ = std::move(o.decision_);
    id_ = o.id_;
    holds_slots_ = o.holds_slots_;
    expires_at_ = o.expires_at_;
    key_ = std::move(o.key_);
    held_ = std::move(o.held_);
  }
  return *this;
}

Decision Lease::adjust(const Amounts& deltas) {
  if (limiter_ == nullptr) throw LeaseError("adjust on a lease that has ended or was denied");
  return limiter_->lease_op(*this, &deltas, false);
}

void Lease::commit() { end(/*refund=*/false); }

void Lease::rollback() { end(/*refund=*/true); }

void Lease::end(bool refund) {
  if (limiter_ == nullptr) return;
  if (!refund && !holds_slots_) {  // commit of rate/window usage: nothing to tell the store
    limiter_ = nullptr;
    return;
  }
  Limiter* l = limiter_;
  // Destructors must not throw: a store failure while ending a lease leaves the slots to
  // their TTL, which reclaims them anyway.
  try {
    (void)l->lease_op(*this, nullptr, refund);
  } catch (const std::exception&) {
  }
  limiter_ = nullptr;
}

}  // namespace admit
