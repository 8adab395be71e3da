// The store kernel: what Store::apply means, once, for every store. A store finds (or loads)
// the state of each item and keeps it; the kernel checks, reports and changes it. Internal
// header: not installed, not part of the API.
//
// State of one (namespace, entity, resource, limit):
//   - rate and adaptive limits: a Slot (TAT µs, TAT remainder), see admit/core/rate.hpp;
//   - window limits: a Slot (end of the window counted in, units used in it);
//   - concurrency limits: a list of Holds (lease, slots, expiry).
// A zero Slot and an empty hold list are the same as no state (a full bucket, no window).
//
// Every function is inline (and allocation-free for rate and window items), so MemoryStore's
// hot path compiles to about what it was before the kernel existed (docs/stores.md).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/core/rate.hpp"
#include "admit/store/store.hpp"

// Forced inline: GCC would otherwise keep run() and the larger per-item functions out of
// line, which costs MemoryStore::apply two calls and ~6% more instructions per acquire.
#define ADMIT_KERNEL_INLINE [[gnu::always_inline]] inline

namespace admit::detail {

/// Rate / adaptive: (TAT µs, TAT remainder). Window: (window end, used).
struct Slot {
  std::int64_t a = 0;
  std::int64_t b = 0;
};

/// Concurrency slots held by one lease until it ends or `expiry` passes.
struct Hold {
  std::uint64_t lease = 0;
  std::int64_t amount = 0;
  Micros expiry = 0;
};

/// One key's holders. The kernel only ever removes elements (keeping the order of the rest)
/// and appends; the order carries no meaning (the list is a multiset).
using Holds = std::vector<Hold>;

/// Idle state: a full bucket or a finished window is indistinguishable from no state.
inline bool idle(const Slot& s, Micros now) noexcept { return s.a < now; }
/// An expired hold no longer counts (its lease's TTL passed).
inline bool expired(const Hold& h, Micros now) noexcept { return h.expiry <= now; }

inline bool is_rate(LimitKind k) noexcept {
  return k == LimitKind::rate || k == LimitKind::adaptive;
}

/// Ops that change state (and so may create it): everything but decide, read and reset
/// (extend changes concurrency holds only).
inline bool consumes(OpKind k) noexcept {
  return k == OpKind::acquire || k == OpKind::record || k == OpKind::adjust ||
         k == OpKind::release || k == OpKind::clamp || k == OpKind::extend;
}

// ---- durable leases (Op::lease_record) ----

/// Does `op` read the record of op.lease_id before it applies (Op::lease_guard)?
inline bool guards_record(const Op& op) noexcept {
  return op.lease_guard &&
         (op.kind == OpKind::adjust || op.kind == OpKind::release || op.kind == OpKind::extend);
}

/// Checks the guard of `op` against the stored record (nullptr: none; `expiry` its expiry,
/// a record that expired at op.now counts as none). @throws LeaseNotFound.
inline void check_record(const Op& op, const std::string* data, Micros expiry) {
  if (data == nullptr || expiry <= op.now || *data != op.lease_record) {
    throw LeaseNotFound("lease " + std::to_string(op.lease_id) +
                        (data == nullptr || expiry <= op.now
                             ? std::string(" is not held (ended, expired or never acquired)")
                             : std::string(" was changed by another process")));
  }
}

/// What an applied op does to the record of op.lease_id.
struct RecordChange {
  enum Kind : std::uint8_t { none, put, erase } kind = none;
  std::string_view data;
  Micros expiry = 0;  ///< put: the new expiry; 0 keeps the stored one (adjust)
};
/// `ok`: what Store::apply returns for `op` (an acquire writes its record only if admitted).
inline RecordChange record_change(const Op& op, bool ok) noexcept {
  if (op.kind == OpKind::acquire) {
    if (ok && !op.lease_record.empty()) {
      return {RecordChange::put, op.lease_record, op.lease_expiry};
    }
    return {};
  }
  if (!guards_record(op)) return {};
  if (op.kind == OpKind::release) return {RecordChange::erase, {}, 0};
  return {RecordChange::put, op.lease_record_next, op.kind == OpKind::extend ? op.lease_expiry : 0};
}

/// Shadow mode (Limit::shadow): an item of a shadow limit is checked and reported like any
/// other, but its refusal (ok false) does not refuse the op; an acquire then leaves that item
/// out of pass 2 (not charged: its state stays what enforcing it alone would have left; a
/// concurrency item takes no slot) and applies the others. Does item `it`, answered `res`,
/// let the op through?
inline bool admits(const OpItem& it, const ItemResult& res) noexcept {
  return res.ok || it.limit->shadow();
}

/// Only a positive amount of acquire/decide is checked: an amount of 0 is reported, never
/// denied.
inline bool checks(const Op& op, const OpItem& it) noexcept {
  return (op.kind == OpKind::acquire || op.kind == OpKind::decide) && it.amount > 0;
}

/// The GCRA parameters of an item: an adaptive limit's current ones, or the limit's own.
inline const RateParams& params(const OpItem& it) noexcept {
  return it.rate != nullptr ? *it.rate : it.limit->rate();
}

/// Drops expired holds; @return the slots still held.
inline std::int64_t held_after_expiry(Holds& v, Micros now) {
  std::erase_if(v, [now](const Hold& h) { return expired(h, now); });
  std::int64_t held = 0;
  for (const auto& h : v) held += h.amount;
  return held;
}

/// Earliest wait after which enough holders have expired for `n` more slots.
inline Micros concurrency_retry(Holds v, std::int64_t held, std::int64_t n, std::int64_t slots,
                                Micros now) {
  std::sort(v.begin(), v.end(), [](const Hold& x, const Hold& y) { return x.expiry < y.expiry; });
  for (const auto& h : v) {
    held -= h.amount;
    if (held + n <= slots) return h.expiry - now;
  }
  return 0;
}

/**
 * Pass 1 for a concurrency item: drops expired holds from `holds` (nullptr: the key has
 * none), checks, reports. `res` must be freshly reset.
 */
ADMIT_KERNEL_INLINE void check_holds(const Op& op, const OpItem& it, Holds* holds,
                                     ItemResult& res) {
  const Limit& l = *it.limit;
  std::int64_t held = 0;
  if (holds != nullptr) held = held_after_expiry(*holds, op.now);
  res.held = held;
  if (checks(op, it)) {
    const std::int64_t n = it.amount;
    if (n > l.capacity()) {
      res.ok = false;
      res.never = true;
    } else if (held + n > l.capacity()) {  // implies held > 0, so holds != nullptr
      res.ok = false;
      res.retry_after = concurrency_retry(*holds, held, n, l.capacity(), op.now);
    }
  }
  res.available = std::max<std::int64_t>(0, l.capacity() - held);
}

/// Pass 1 for a rate, adaptive or window item: checks and reports `s` (a zero Slot when the
/// key has no state). `res` must be freshly reset.
ADMIT_KERNEL_INLINE void check_state(const Op& op, const OpItem& it, const Slot& s,
                                     ItemResult& res) {
  const Limit& l = *it.limit;
  const Micros now = op.now;
  if (is_rate(l.kind())) {
    const RateParams& p = params(it);
    const rate::Tat tat = rate::normalize(p, {s.a, s.b});
    if (checks(op, it)) {
      const rate::Check c = rate::check(p, tat, it.amount, now);
      res.ok = c.ok;
      res.never = c.never;
      res.retry_after = c.retry_after;
    }
    if (op.report || !res.ok) {
      res.available = rate::available(p, tat, now);
      res.reset_after = rate::reset_after(tat, now);
    }
    return;
  }
  // window
  Micros end = s.a;
  std::int64_t used = s.b;
  if (end <= now) {
    end = l.window_at(now).end;
    used = 0;
  }
  if (checks(op, it)) {
    if (it.amount > l.capacity()) {
      res.ok = false;
      res.never = true;
    } else if (used + it.amount > l.capacity()) {
      res.ok = false;
      res.retry_after = end - now;
    }
  }
  res.window_end = end;
  res.available = std::max<std::int64_t>(0, l.capacity() - used);
  res.reset_after = end - now;
}

/// Does pass 2 of a concurrency item need the key's hold list to exist (it appends)?
inline bool appends_hold(const Op& op, const OpItem& it) noexcept {
  return op.kind == OpKind::acquire && it.amount > 0;
}

/**
 * Pass 2 for a concurrency item: acquire appends the lease's hold, release removes the
 * lease's holds (and expired ones), extend moves their expiry to op.lease_expiry (an expired
 * hold stays expired). `holds` may be nullptr only when !appends_hold().
 */
ADMIT_KERNEL_INLINE void apply_holds(const Op& op, const OpItem& it, Holds* holds,
                                     ItemResult& res) {
  if (appends_hold(op, it)) {
    holds->push_back(Hold{op.lease_id, it.amount, op.lease_expiry});
    res.held += it.amount;
  } else if (op.kind == OpKind::extend) {
    if (holds != nullptr) {
      for (Hold& h : *holds) {
        if (h.lease == op.lease_id && !expired(h, op.now)) h.expiry = op.lease_expiry;
      }
      res.held = held_after_expiry(*holds, op.now);
    }
  } else if (op.kind == OpKind::release) {
    // No list: no holders (an earlier item of this op on the same key may have emptied it).
    res.held = 0;
    if (holds != nullptr) {
      std::erase_if(*holds, [&](const Hold& h) { return h.lease == op.lease_id; });
      res.held = held_after_expiry(*holds, op.now);
    }
  }
  res.available = std::max<std::int64_t>(0, it.limit->capacity() - res.held);
}

/// Pass 2 for a rate, adaptive or window item: consumes, refunds or clamps `s` in place.
/// `res` holds what pass 1 reported.
ADMIT_KERNEL_INLINE void apply_state(const Op& op, const OpItem& it, Slot& s, ItemResult& res) {
  const Limit& l = *it.limit;
  const Micros now = op.now;
  std::int64_t delta = it.amount;
  if (op.kind == OpKind::release) delta = -delta;
  if (is_rate(l.kind())) {
    const RateParams& p = params(it);
    rate::Tat tat = rate::normalize(p, {s.a, s.b});
    if (op.kind == OpKind::clamp) {
      tat = rate::clamp(p, tat, std::max<std::int64_t>(it.amount, 0), it.until, now);
    } else if (delta > 0) {
      tat = rate::consume(p, tat, delta, now);
    } else if (delta < 0) {
      tat = rate::refund(p, tat, -delta, now);
    }
    s = Slot{tat.us, tat.rem};
    if (op.report) {
      res.available = rate::available(p, tat, now);
      res.reset_after = rate::reset_after(tat, now);
    }
    return;
  }
  // window: a refund counts only in the window the lease counted in
  if (s.a <= now) s = Slot{res.window_end, 0};
  const bool same_window = it.window_end == 0 || it.window_end == s.a;
  if (op.kind == OpKind::clamp) {
    const std::int64_t floor_used =
        it.until > now ? l.capacity() : l.capacity() - std::max<std::int64_t>(it.amount, 0);
    s.b = std::max(s.b, floor_used);
  } else if (delta > 0) {
    s.b += delta;
  } else if (delta < 0 && same_window) {
    s.b = std::max<std::int64_t>(0, s.b + delta);
  }
  res.window_end = s.a;
  res.available = std::max<std::int64_t>(0, l.capacity() - s.b);
}

/**
 * Store::apply over a store's state, all items of `op` in two passes: pass 1 locates, checks
 * and reports every item; pass 2 (ops that change state, and an acquire only if every item
 * was ok or of a shadow limit: admits()) applies them, except the shadow items that refused
 * (they keep pass 1's report, which is their state). The caller makes the whole call atomic
 * (locks, a transaction).
 *
 * `Access` locates item i's state (items of one key and limit share it):
 *   - `void forget(std::size_t i)`: reset: drop the state (slot or holds);
 *   - `Slot* state(std::size_t i, bool create)`: pass 1, rate/adaptive/window items: the
 *     slot, created as a zero Slot if `create`; nullptr if absent and !create. The pointer
 *     must stay valid until run() returns;
 *   - `Slot& state_again(std::size_t i)`: pass 2: the slot state(i, true) returned;
 *   - `void state_changed(std::size_t i)`: pass 2 changed item i's slot;
 *   - `Holds* holds(std::size_t i, bool create)`: concurrency items: the key's hold list,
 *     created empty if `create`; nullptr if absent and !create;
 *   - `void holds_changed(std::size_t i, Holds* h)`: pass 2 may have changed item i's hold
 *     list `h` (what holds() returned; may be nullptr or empty: no holders left).
 * @return as Store::apply.
 */
template <class Access>
ADMIT_KERNEL_INLINE bool run(const Op& op, std::span<ItemResult> results, Access& acc) {
  const bool changes = consumes(op.kind);
  bool all_ok = true;
  for (std::size_t i = 0; i < op.items.size(); ++i) {
    const OpItem& it = op.items[i];
    ItemResult& res = results[i];
    res = ItemResult{};
    if (op.kind == OpKind::reset) {
      acc.forget(i);
      continue;
    }
    if (it.limit->kind() == LimitKind::concurrency) {
      check_holds(op, it, acc.holds(i, false), res);
    } else {
      static constexpr Slot kFresh{};  // stands in for absent state in read-only ops
      const Slot* s = acc.state(i, changes && op.kind != OpKind::extend);
      check_state(op, it, s != nullptr ? *s : kFresh, res);
    }
    all_ok = all_ok && admits(it, res);
  }
  if (!changes) return all_ok;
  if (op.kind == OpKind::acquire && !all_ok) return false;

  for (std::size_t i = 0; i < op.items.size(); ++i) {
    const OpItem& it = op.items[i];
    if (!results[i].ok) continue;  // an admitted acquire's refusing shadow item: not charged
    if (it.limit->kind() == LimitKind::concurrency) {
      const bool appends = appends_hold(op, it);
      const bool touches = appends || op.kind == OpKind::release || op.kind == OpKind::extend;
      Holds* h = touches ? acc.holds(i, appends) : nullptr;
      apply_holds(op, it, h, results[i]);
      if (touches) acc.holds_changed(i, h);
    } else if (op.kind != OpKind::extend) {  // extend changes holds only
      apply_state(op, it, acc.state_again(i), results[i]);
      acc.state_changed(i);
    }
  }
  return all_ok;
}

}  // namespace admit::detail
