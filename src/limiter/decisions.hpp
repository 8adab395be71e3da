// Decisions and stats from the store's answers: fill_decision() (the allowed path inline, the
// stats and a denial's violations, code and reason out of line), LimitStatus records, the
// rate of an adaptive limit, and the decision of an unreachable store.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "admit/core/aimd.hpp"
#include "admit/core/decision.hpp"
#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/store/store.hpp"
#include "lease_key.hpp"

namespace admit::detail {

// fill_decision's slow part: the stats (with_stats, or denied), the shadow limits that
// refused (shadow_violations) and, if denied, the violations, code and reason.
void fill_details(Decision& d, const LeaseKey& key, std::span<const OpItem> ops,
                  std::span<const std::size_t> entries, std::span<const ItemResult> results,
                  bool allowed, bool with_stats);

// Fills `d` from the store's answer to an op over `key`'s limits: `results[j]` answers
// `ops[j]`, which is entry `entries[j]` of `key` (a plan's entries are its lease key's items).
// Reads only `key` and the spans, never the plan, so an asynchronous completion can use it.
// A key with shadow limits always takes the slow part (their refusals are reported even when
// allowed).
inline void fill_decision(Decision& d, const LeaseKey& key, std::span<const OpItem> ops,
                          std::span<const std::size_t> entries, std::span<const ItemResult> results,
                          bool allowed, bool with_stats) {
  d.allowed = allowed;
  d.code = Code::ok;
  d.retry_after = 0;
  if (with_stats || !allowed || key.shadow) {
    fill_details(d, key, ops, entries, results, allowed, with_stats);
  }
}

// A decision the store could not make: code store_unavailable, the store's reason.
inline void unavailable(Decision& d, std::string_view reason) {
  d.allowed = false;
  d.code = Code::store_unavailable;
  d.reason = reason;
  d.stats.clear();
}
inline void unavailable(Decision& d, const StoreUnavailable& e) { unavailable(d, e.what()); }

// Whether a denial with `code` can never turn into an admission by waiting (acquire() and
// acquire_async() end the wait with it).
inline bool waiting_cannot_help(Code code) {
  return code == Code::exceeds_capacity || code == Code::store_unavailable ||
         code == Code::unknown_limit || code == Code::invalid_argument;
}

// Turns the last denial of a wait into its end: code timeout or cancelled at `now`, the last
// denial's reason kept after the cause.
inline void end_of_wait(Decision& d, Code code, Micros now) {
  d.allowed = false;
  d.code = code;
  d.now = now;
  d.reason =
      (code == Code::cancelled ? "cancelled while waiting" : "deadline passed while waiting") +
      (d.reason.empty() ? std::string() : "; last: " + d.reason);
}

LimitStatus status_of(const KeyParts& k, const Limit& l, ConfigSource src, const ItemResult& r,
                      double rate = 0);

// An adaptive limit's parameters at its controller's rate now (the initial rate without one).
RateParams adaptive_params(const Limit& l, const AimdLaw* ctl, double* rate_out = nullptr);

}  // namespace admit::detail
