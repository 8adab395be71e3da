#include "admit/lease.hpp"

#include "admit/core/aimd.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "lease_key.hpp"
#include "lease_record.hpp"
#include "limiter_impl.hpp"

namespace admit {

namespace detail {

namespace {
// The key this thread's plan cache holds and the references to it bought and not handed out
// yet: each is one count in key->refs. Trivially destructible, so it is still there for
// leases that end during this thread's exit.
struct KeyBias {
  const LeaseKey* key = nullptr;
  std::int64_t credits = 0;
};
constinit thread_local KeyBias t_bias;
constexpr std::int64_t kCreditBatch = 1024;

void drop(const LeaseKey* p, std::int64_t n) noexcept {
  if (p->refs.fetch_sub(n, std::memory_order_acq_rel) == n) delete p;
}
}  // namespace

void KeyRef::retain(const LeaseKey* p) noexcept {
  KeyBias& b = t_bias;
  if (b.key != p) {
    p->refs.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (b.credits == 0) {
    p->refs.fetch_add(kCreditBatch, std::memory_order_relaxed);
    b.credits = kCreditBatch;
  }
  --b.credits;
}

void KeyRef::release(const LeaseKey* p) noexcept {
  KeyBias& b = t_bias;
  if (b.key == p) {
    ++b.credits;  // the reference stays counted, as one of the cache's
    return;
  }
  drop(p, 1);
}

void KeyRef::bias(const LeaseKey* key) noexcept {
  KeyBias& b = t_bias;
  if (b.key == key) return;
  const LeaseKey* old = std::exchange(b.key, key);
  const std::int64_t n = std::exchange(b.credits, 0);
  if (old != nullptr && n > 0) drop(old, n);
}

}  // namespace detail

Lease::~Lease() { end_scope(); }

Lease::Lease(Lease&& o) noexcept
    : limiter_(std::exchange(o.limiter_, nullptr)),
      decision_(std::move(o.decision_)),
      id_(o.id_),
      holds_slots_(o.holds_slots_),
      marked_(o.marked_),
      uncaught_(std::uncaught_exceptions()),
      expires_at_(o.expires_at_),
      key_(std::move(o.key_)),
      held_(std::move(o.held_)),
      record_(std::move(o.record_)) {}

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    end_scope();  // uncaught_ stays: this object's scope has not changed
    limiter_ = std::exchange(o.limiter_, nullptr);
    decision_ = std::move(o.decision_);
    id_ = o.id_;
    holds_slots_ = o.holds_slots_;
    marked_ = o.marked_;
    expires_at_ = o.expires_at_;
    key_ = std::move(o.key_);
    held_ = std::move(o.held_);
    record_ = std::move(o.record_);
  }
  return *this;
}

void Lease::require_active(const char* what) const {
  if (limiter_ == nullptr) {
    throw LeaseError(std::string(what) + " on a lease that has ended or was denied");
  }
}

Decision Lease::adjust(const Amounts& deltas) {
  require_active("adjust");
  return limiter_->impl_->lease_op(*this, {.deltas = &deltas});
}

void Lease::adjust_async(const Amounts& deltas, DecisionCallback done) {
  require_active("adjust");
  limiter_->impl_->lease_op_async(*this, {.deltas = &deltas}, std::move(done));
}

Decision Lease::extend(Micros ttl) {
  require_active("extend");
  if (ttl <= 0) throw ValidationError("ttl", std::to_string(ttl), "must be > 0");
  return limiter_->impl_->lease_op(*this, {.extend_ttl = ttl});
}

void Lease::extend_async(Micros ttl, DecisionCallback done) {
  require_active("extend");
  if (ttl <= 0) throw ValidationError("ttl", std::to_string(ttl), "must be > 0");
  limiter_->impl_->lease_op_async(*this, {.extend_ttl = ttl}, std::move(done));
}

std::string Lease::token() const {
  return record_ ? detail::lease_token(id_, key_->entities.back()) : std::string();
}

std::string Lease::detach() {
  require_active("detach");
  if (!record_) throw LeaseError("detach on a lease that is not durable (AcquireOptions::durable)");
  limiter_ = nullptr;
  return token();
}

void Lease::commit_async(DecisionCallback done) { end_async(/*refund=*/false, std::move(done)); }

void Lease::rollback_async(DecisionCallback done) { end_async(/*refund=*/true, std::move(done)); }

void Lease::end_async(bool refund, DecisionCallback done) {
  if (limiter_ != nullptr && !refund && !holds_slots_ && !record_) {
    limiter_ = nullptr;  // commit of rate/window usage: nothing to tell the store (as end())
  }
  if (limiter_ == nullptr) {  // ended or denied: nothing to do, like commit() and rollback()
    Decision d;
    d.now = decision_.now;
    d.allowed = true;
    d.code = Code::ok;
    if (done) done(std::move(d));
    return;
  }
  limiter_->impl_->lease_op_async(*this, {.refund = refund}, std::move(done));
}

std::string_view Lease::entity() const {
  return key_ && !key_->entities.empty() ? std::string_view(key_->entities.front())
                                         : std::string_view{};
}

std::vector<Lease::Holding> Lease::holdings() const {
  std::vector<Holding> out;
  if (!active() || !key_) return out;
  out.reserve(key_->items.size());
  for (std::size_t i = 0; i < key_->items.size(); ++i) {
    const auto& item = key_->items[i];
    out.push_back({key_->entities[item.key], item.limit.name(), held_[i].consumed});
  }
  return out;
}

std::string_view Lease::resource() const {
  return key_ ? std::string_view(key_->resource) : std::string_view{};
}

bool Lease::mark_success() { return mark(true); }
bool Lease::mark_failure() { return mark(false); }

bool Lease::mark(bool success) {
  if (marked_ || !key_ || !decision_.allowed) return false;
  marked_ = true;
  for (std::size_t i = 0; i < key_->items.size(); ++i) {
    const auto& it = key_->items[i];
    if (!it.aimd || held_[i].consumed == 0) continue;
    if (success) {
      it.aimd->record_success();
    } else if (it.aimd->record_failure(static_cast<std::uint64_t>(held_[i].window_end)) &&
               limiter_ != nullptr) {
      limiter_->impl_->shared.expedite();  // shared: tell the fleet at the next call
    }
  }
  return true;
}

void Lease::commit() { end(/*refund=*/false); }

void Lease::rollback() { end(/*refund=*/true); }

void Lease::end(bool refund) {
  if (limiter_ == nullptr) return;
  if (!refund && !holds_slots_ && !record_) {  // commit of rate/window usage: nothing to tell
    limiter_ = nullptr;
    return;
  }
  Limiter* l = limiter_;
  // Destructors must not throw: a store failure while ending a lease leaves the slots to
  // their TTL, which reclaims them anyway.
  try {
    (void)l->impl_->lease_op(*this, {.refund = refund});
  } catch (const std::exception&) {
  }
  limiter_ = nullptr;
}

}  // namespace admit
