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

// Everything one adjust, extend or end sends and reads back. Built in place and never moved
// while the op is in flight: ops point at `rates` and `keys` at the lease key's strings.
struct Limiter::Impl::LeaseOp {
  Decision d;
  bool adjust = false;
  Micros extend_to = 0;  // extend: the new expiry
  bool returns_capacity = false;
  bool durable = false;
  detail::SmallVec<KeyParts> keys;
  detail::SmallVec<OpItem> ops;
  detail::SmallVec<std::size_t> which;  // per op item: the lease key's item
  detail::SmallVec<RateParams> rates;
  detail::SmallVec<ItemResult> results;
  // Durable: what the lease holds after the op (adjust) and its record then.
  std::vector<detail::RecordHeld> next_held;
  std::string next_record;

  /// A durable lease's every op goes to the store (its record changes or goes).
  bool needs_store() const { return durable || !ops.empty(); }
};

namespace {

// A durable lease's holdings as its record has them.
std::vector<detail::RecordHeld> holdings(Lease& lease) {
  const LeaseKey& lk = *LeaseAccess::key(lease);
  std::vector<detail::RecordHeld> v(lk.items.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const LeaseAccess::Held& h = LeaseAccess::held(lease, i);
    v[i] = {h.consumed, h.window_end};
  }
  return v;
}

// A window item's holding after a delta (the window of `now` for positive deltas): see
// finish_lease_op.
void add_to(detail::RecordHeld& h, const Limit& l, std::int64_t delta, Micros window_end) {
  if (delta > 0 && l.kind() == LimitKind::window && window_end != h.window_end) {
    h.consumed = delta;
  } else {
    h.consumed += delta;
  }
  if (delta > 0 && l.kind() == LimitKind::window) h.window_end = window_end;
}

}  // namespace

// Fills `lo` for `args`. @throws ValidationError for a delta the lease cannot take (nothing
// sent then).
void Limiter::Impl::prepare_lease_op(LeaseOp& lo, Lease& lease, LeaseOpArgs args) {
  const Amounts* deltas = args.deltas;
  Decision& d = lo.d;
  d.now = clock.now();
  d.allowed = true;
  d.code = Code::ok;
  lo.adjust = deltas != nullptr;
  lo.durable = lease.durable();
  if (args.extend_ttl > 0) lo.extend_to = d.now + args.extend_ttl;
  const bool expired = d.now >= LeaseAccess::expires_at(lease);
  const LeaseKey& lk = *LeaseAccess::key(lease);
  for (const auto& e : lk.entities) lo.keys.push_back(KeyParts{e, lk.resource});
  lo.rates.reserve(lk.items.size());  // ops point into it: no reallocation after this
  auto add = [&](std::size_t i, std::int64_t amount) {
    const auto& it = lk.items[i];
    lo.ops.push_back(OpItem{it.key, &it.limit, amount, LeaseAccess::held(lease, i).window_end});
    lo.which.push_back(i);
    if (it.aimd) {
      lo.ops.back().rate = &lo.rates.emplace_back(adaptive_params(it.limit, it.aimd.get()));
    }
  };
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
      add(i, delta);
    }
  } else if (lo.extend_to != 0) {
    for (std::size_t i = 0; i < lk.items.size(); ++i) {
      if (lk.items[i].limit.kind() == LimitKind::concurrency &&
          LeaseAccess::held(lease, i).consumed > 0) {
        add(i, 0);
      }
    }
  } else {
    for (std::size_t i = 0; i < lk.items.size(); ++i) {
      const auto& it = lk.items[i];
      const LeaseAccess::Held& h = LeaseAccess::held(lease, i);
      const bool slots = it.limit.kind() == LimitKind::concurrency && h.consumed > 0;
      const bool give_back =
          args.refund && !expired && h.consumed > 0 && it.limit.kind() != LimitKind::concurrency;
      if (!slots && !give_back) continue;
      add(i, give_back ? h.consumed : 0);
      lo.returns_capacity = true;
    }
  }
  lo.results.resize(lo.ops.size());
  if (lo.durable) {
    if (lo.adjust) {
      lo.next_held = holdings(lease);
      for (std::size_t j = 0; j < lo.ops.size(); ++j) {
        const Limit& l = lk.items[lo.which[j]].limit;
        add_to(lo.next_held[lo.which[j]], l, lo.ops[j].amount,
               l.kind() == LimitKind::window ? l.window_at(d.now).end : 0);
      }
      lo.next_record = detail::encode_lease_record(lk, lo.next_held, LeaseAccess::slots(lease));
    } else if (lo.extend_to != 0) {
      lo.next_record = *LeaseAccess::record(lease);  // the same record, a new expiry
    }
  }
}

Op Limiter::Impl::lease_store_op(const LeaseOp& lo, const Lease& lease) const {
  const bool durable = lo.durable;
  return Op{
      .kind = lo.adjust           ? OpKind::adjust
              : lo.extend_to != 0 ? OpKind::extend
                                  : OpKind::release,
      .ns = &ns,
      .group = LeaseAccess::key(lease)->entities.back(),
      .now = lo.d.now,
      .keys = lo.keys,
      .items = lo.ops,
      .handles = {},
      .lease_id = LeaseAccess::id(lease),
      .lease_expiry = lo.extend_to,
      .report = true,
      .lease_record = durable ? std::string_view(*LeaseAccess::record(lease)) : std::string_view(),
      .lease_record_next = lo.next_record,
      .lease_guard = durable};
}

// After the store applied `lo`: what the lease holds now and the decision's stats.
void Limiter::Impl::finish_lease_op(LeaseOp& lo, Lease& lease) {
  const LeaseKey& lk = *LeaseAccess::key(lease);
  for (std::size_t j = 0; j < lo.ops.size(); ++j) {
    const auto& it = lk.items[lo.which[j]];
    LeaseAccess::Held& h = LeaseAccess::held(lease, lo.which[j]);
    const OpItem& op = lo.ops[j];
    if (lo.adjust) {
      // Counted in a new window: the old window's usage can never be refunded, so only this
      // delta is refundable now (a later refund must not take other callers' usage).
      detail::RecordHeld next{h.consumed, h.window_end};
      add_to(next, it.limit, op.amount, lo.results[j].window_end);
      h = LeaseAccess::Held{next.consumed, next.window_end};
    }
    lo.d.stats.push_back(LimitStatus{lk.entities[it.key], it.limit.name(), it.limit.kind(),
                                     it.source, it.limit.capacity(), lo.results[j].available,
                                     lo.results[j].reset_after, 0, it.limit.period(),
                                     it.limit.shadow()});
  }
  if (lo.durable && lo.adjust) {
    // The lease holds exactly what its record says (the record's windows are the caller's).
    for (std::size_t i = 0; i < lo.next_held.size(); ++i) {
      LeaseAccess::held(lease, i) = {lo.next_held[i].consumed, lo.next_held[i].window_end};
    }
  }
  if (lo.durable && (lo.adjust || lo.extend_to != 0)) {
    *LeaseAccess::record(lease) = std::move(lo.next_record);
  }
  if (lo.extend_to != 0) LeaseAccess::set_expires_at(lease, lo.extend_to);
  if (lo.returns_capacity) waits.notify_all_heads();
}

namespace {

// A durable lease's op found no record (LeaseNotFound): the lease is gone.
void not_found(Decision& d, const LeaseNotFound& e) {
  d.allowed = false;
  d.code = Code::lease_not_found;
  d.reason = e.what();
}

}  // namespace

Decision Limiter::Impl::lease_op(Lease& lease, LeaseOpArgs args) {
  LeaseOp lo;
  prepare_lease_op(lo, lease, args);
  if (lo.extend_to != 0 && lo.d.now >= LeaseAccess::expires_at(lease)) {
    LeaseAccess::deactivate(lease);
    not_found(lo.d, LeaseNotFound("the lease expired before it was extended"));
    return std::move(lo.d);
  }
  if (!lo.needs_store()) {
    if (lo.extend_to != 0) LeaseAccess::set_expires_at(lease, lo.extend_to);
    return std::move(lo.d);
  }
  try {
    store.apply(lease_store_op(lo, lease), lo.results);
  } catch (const StoreUnavailable& e) {  // the lease's usage stays; slots go at their TTL
    unavailable(lo.d, e);
    return std::move(lo.d);
  } catch (const LeaseNotFound& e) {  // ended, expired or changed elsewhere: nothing changed
    LeaseAccess::deactivate(lease);
    not_found(lo.d, e);
    return std::move(lo.d);
  }
  finish_lease_op(lo, lease);
  return std::move(lo.d);
}

// An asynchronous adjust, extend or end in flight: for an end, the lease itself (moved here, so
// the caller's object is already inactive); for an adjust or extend, the caller's lease.
struct Limiter::Impl::AsyncLeaseOp {
  Impl* impl = nullptr;
  Lease owned;             // an end's lease
  Lease* lease = nullptr;  // &owned, or the adjusted lease
  LeaseOp lo;
  Lease::DecisionCallback done;
};

void Limiter::Impl::lease_op_async(Lease& lease, LeaseOpArgs args, Lease::DecisionCallback done) {
  auto c = std::make_unique<AsyncLeaseOp>();
  c->impl = this;
  c->done = std::move(done);
  if (args.deltas != nullptr || args.extend_ttl > 0) {
    c->lease = &lease;
  } else {
    c->owned = std::move(lease);  // the caller's lease has ended from here on
    c->lease = &c->owned;
  }
  prepare_lease_op(c->lo, *c->lease, args);  // throws before anything is sent
  if (c->lo.extend_to != 0 && c->lo.d.now >= LeaseAccess::expires_at(*c->lease)) {
    return complete_lease_op(
        c.release(),
        std::make_exception_ptr(LeaseNotFound("the lease expired before it was extended")));
  }
  if (!c->lo.needs_store()) return complete_lease_op(c.release(), nullptr);
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
    } catch (const LeaseNotFound& e) {  // ended, expired or changed elsewhere
      not_found(d, e);
      LeaseAccess::deactivate(*c->lease);
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
