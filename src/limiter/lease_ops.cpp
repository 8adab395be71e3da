// A lease's store operations: adjust (reconcile with the real usage) and end (commit, or
// rollback with a refund), each synchronous (Lease::adjust, commit, rollback) or not
// (Lease::adjust_async, commit_async, rollback_async: Store::apply_async, so a RedisStore
// answers on its I/O thread and nothing blocks). Both share the three steps of a LeaseOp:
// prepare (the op's items from what the lease holds), the store, finish (what the lease holds
// now, the decision's stats, waking waiters when capacity came back).
#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "admit/core/error.hpp"
#include "decisions.hpp"
#include "lease_key.hpp"
#include "limiter_impl.hpp"

namespace admit {

using detail::adaptive_params;
using detail::LeaseAccess;
using detail::LeaseKey;
using detail::unavailable;

// Everything one adjust or end sends and reads back. Built in place and never moved while
// the op is in flight: ops point at `rates` and `keys` at the lease key's strings.
struct Limiter::Impl::LeaseOp {
  Decision d;
  bool adjust = false;
  bool returns_capacity = false;
  detail::SmallVec<KeyParts> keys;
  detail::SmallVec<OpItem> ops;
  detail::SmallVec<std::size_t> which;  // per op item: the lease key's item
  detail::SmallVec<RateParams> rates;
  detail::SmallVec<ItemResult> results;
};

// Fills `lo` for an adjust (deltas != nullptr) or an end (refunding if `refund`).
// @throws ValidationError for a delta the lease cannot take (nothing sent then).
void Limiter::Impl::prepare_lease_op(LeaseOp& lo, Lease& lease, const Amounts* deltas,
                                     bool refund) {
  Decision& d = lo.d;
  d.now = clock.now();
  d.allowed = true;
  d.code = Code::ok;
  lo.adjust = deltas != nullptr;
  const bool expired = d.now >= LeaseAccess::expires_at(lease);
  const LeaseKey& lk = *LeaseAccess::key(lease);
  for (const auto& e : lk.entities) lo.keys.push_back(KeyParts{e, lk.resource});
  lo.rates.reserve(lk.items.size());  // ops point into it: no reallocation after this
  if (deltas != nullptr) {
    for (const auto& a : *deltas) {
      bool found = false;
      for (const auto& it : lk.items) {
        if (it.limit.name() != a.name) continue;
        found = true;
        if (it.limit.kind() == LimitKind::concurrency) {
          throw ValidationError("limit", a.name, "a concurrency limit cannot be adjusted");
        }
      }
      if (!found) throw ValidationError("limit", a.name, "not a limit of this lease");
    }
    for (std::size_t i = 0; i < lk.items.size(); ++i) {
      const auto& it = lk.items[i];
      const LeaseAccess::Held& h = LeaseAccess::held(lease, i);
      if (it.limit.kind() == LimitKind::concurrency) continue;
      std::int64_t delta = deltas->get(it.limit.name());
      if (delta < 0) delta = std::max(delta, -h.consumed);  // never refund more than consumed
      if (delta == 0) continue;
      if (delta > it.limit.max_amount()) {
        throw ValidationError("amount", std::to_string(delta), "beyond the exact range");
      }
      lo.returns_capacity = lo.returns_capacity || delta < 0;
      lo.ops.push_back(OpItem{it.key, &it.limit, delta, h.window_end});
      lo.which.push_back(i);
      if (it.aimd) {
        lo.ops.back().rate = &lo.rates.emplace_back(adaptive_params(it.limit, it.aimd.get()));
      }
    }
  } else {
    for (std::size_t i = 0; i < lk.items.size(); ++i) {
      const auto& it = lk.items[i];
      const LeaseAccess::Held& h = LeaseAccess::held(lease, i);
      const bool slots = it.limit.kind() == LimitKind::concurrency && h.consumed > 0;
      const bool give_back =
          refund && !expired && h.consumed > 0 && it.limit.kind() != LimitKind::concurrency;
      if (!slots && !give_back) continue;
      lo.ops.push_back(OpItem{it.key, &it.limit, give_back ? h.consumed : 0, h.window_end});
      lo.which.push_back(i);
      if (it.aimd) {
        lo.ops.back().rate = &lo.rates.emplace_back(adaptive_params(it.limit, it.aimd.get()));
      }
      lo.returns_capacity = true;
    }
  }
  lo.results.resize(lo.ops.size());
}

Op Limiter::Impl::lease_store_op(const LeaseOp& lo, const Lease& lease) const {
  return Op{.kind = lo.adjust ? OpKind::adjust : OpKind::release,
            .ns = &ns,
            .group = LeaseAccess::key(lease)->entities.back(),
            .now = lo.d.now,
            .keys = lo.keys,
            .items = lo.ops,
            .handles = {},
            .lease_id = LeaseAccess::id(lease),
            .lease_expiry = 0,
            .report = true};
}

// After the store applied `lo`: what the lease holds now and the decision's stats.
void Limiter::Impl::finish_lease_op(LeaseOp& lo, Lease& lease) {
  const LeaseKey& lk = *LeaseAccess::key(lease);
  for (std::size_t j = 0; j < lo.ops.size(); ++j) {
    const auto& it = lk.items[lo.which[j]];
    LeaseAccess::Held& h = LeaseAccess::held(lease, lo.which[j]);
    const OpItem& op = lo.ops[j];
    if (lo.adjust) {
      if (op.amount > 0 && it.limit.kind() == LimitKind::window &&
          lo.results[j].window_end != h.window_end) {
        // Counted in a new window: the old window's usage can never be refunded, so only this
        // delta is refundable now (a later refund must not take other callers' usage).
        h.consumed = op.amount;
      } else {
        h.consumed += op.amount;
      }
      if (op.amount > 0 && it.limit.kind() == LimitKind::window) {
        h.window_end = lo.results[j].window_end;
      }
    }
    lo.d.stats.push_back(LimitStatus{lk.entities[it.key], it.limit.name(), it.limit.kind(),
                                     it.source, it.limit.capacity(), lo.results[j].available,
                                     lo.results[j].reset_after});
  }
  if (lo.returns_capacity) waits.notify_all_heads();
}

Decision Limiter::Impl::lease_op(Lease& lease, const Amounts* deltas, bool refund) {
  LeaseOp lo;
  prepare_lease_op(lo, lease, deltas, refund);
  if (lo.ops.empty()) return std::move(lo.d);
  try {
    store.apply(lease_store_op(lo, lease), lo.results);
  } catch (const StoreUnavailable& e) {  // the lease's usage stays; slots go at their TTL
    unavailable(lo.d, e);
    return std::move(lo.d);
  }
  finish_lease_op(lo, lease);
  return std::move(lo.d);
}

// An asynchronous adjust or end in flight: for an end, the lease itself (moved here, so the
// caller's object is already inactive); for an adjust, the caller's lease.
struct Limiter::Impl::AsyncLeaseOp {
  Impl* impl = nullptr;
  Lease owned;             // an end's lease
  Lease* lease = nullptr;  // &owned, or the adjusted lease
  LeaseOp lo;
  Lease::DecisionCallback done;
};

void Limiter::Impl::lease_op_async(Lease& lease, const Amounts* deltas, bool refund,
                                   Lease::DecisionCallback done) {
  auto c = std::make_unique<AsyncLeaseOp>();
  c->impl = this;
  c->done = std::move(done);
  if (deltas != nullptr) {
    c->lease = &lease;
  } else {
    c->owned = std::move(lease);  // the caller's lease has ended from here on
    c->lease = &c->owned;
  }
  prepare_lease_op(c->lo, *c->lease, deltas, refund);  // throws before anything is sent
  if (c->lo.ops.empty()) return complete_lease_op(c.release(), nullptr);
  AsyncLeaseOp* ctx = c.release();
  try {
    store.apply_async(lease_store_op(ctx->lo, *ctx->lease), ctx->lo.results,
                      [ctx](bool, std::exception_ptr error) noexcept {
                        complete_lease_op(ctx, std::move(error));
                      });
  } catch (...) {  // thrown before apply_async took the callback: it never calls it
    complete_lease_op(ctx, std::current_exception());
  }
}

void Limiter::Impl::complete_lease_op(AsyncLeaseOp* ctx, std::exception_ptr error) noexcept {
  std::unique_ptr<AsyncLeaseOp> c(ctx);
  Decision& d = c->lo.d;
  if (error) {  // the lease's usage stays; an end's slots go at their TTL
    try {
      std::rethrow_exception(error);
    } catch (const StoreUnavailable& e) {
      unavailable(d, e);
    } catch (const std::exception& e) {
      unavailable(d, e.what());
    } catch (...) {
      unavailable(d, "the store failed with an unknown exception");
    }
  } else {
    c->impl->finish_lease_op(c->lo, *c->lease);
  }
  LeaseAccess::deactivate(c->owned);  // an end is over either way (no second end on destruction)
  Lease::DecisionCallback done = std::move(c->done);
  Decision out = std::move(d);
  c.reset();
  if (done) done(std::move(out));
}

}  // namespace admit
