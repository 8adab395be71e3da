// GCRA in exact integer microseconds. A rate key's state is its theoretical arrival time
// (TAT) as a pair (µs, remainder / r): the instant the bucket will be full again. The
// bucket holds capacity - (TAT - now) / T units; an amount n fits when
// max(TAT, now) + n*T <= now + capacity*T. All functions are pure and noexcept.
#pragma once

#include <algorithm>
#include <cstdint>

#include "admit/core/limit.hpp"
#include "admit/core/time.hpp"

namespace admit::rate {

__extension__ typedef __int128 Int128;  // GCC/Clang builtin; only for derived stats

// Forced inline: called once or twice per decision, and out of line GCC returned a Tat in two
// registers that the caller stored and read back as one 16-byte value (a store-forwarding
// stall that cost the one-key acquire ~4 ns).
#define ADMIT_RATE_INLINE [[gnu::always_inline]] inline

/// A point in time with sub-µs fraction: us + rem / r, 0 <= rem < r.
struct Tat {
  Micros us = 0;
  std::int64_t rem = 0;
};

ADMIT_RATE_INLINE bool less(const Tat& x, const Tat& y) noexcept {
  return x.us < y.us || (x.us == y.us && x.rem < y.rem);
}

/// n * T as a (µs, rem) pair.
ADMIT_RATE_INLINE Tat span(const RateParams& p, std::int64_t n) noexcept {
  const std::int64_t nb = n * p.b;
  // No division when it would give 0 (one unit, an integer T): a 64-bit division costs
  // more than the rest of a decision's arithmetic.
  if (static_cast<std::uint64_t>(nb) < static_cast<std::uint64_t>(p.r)) return {n * p.a, nb};
  return {n * p.a + nb / p.r, nb % p.r};
}

ADMIT_RATE_INLINE Tat add(const RateParams& p, Tat x, const Tat& d) noexcept {
  x.us += d.us;
  x.rem += d.rem;
  if (x.rem >= p.r) {
    x.rem -= p.r;
    ++x.us;
  }
  return x;
}

ADMIT_RATE_INLINE Tat sub(const RateParams& p, Tat x, const Tat& d) noexcept {
  x.us -= d.us;
  x.rem -= d.rem;
  if (x.rem < 0) {
    x.rem += p.r;
    --x.us;
  }
  return x;
}

/// max(tat, now)
ADMIT_RATE_INLINE Tat base(const Tat& tat, Micros now) noexcept {
  return less(tat, Tat{now, 0}) ? Tat{now, 0} : tat;
}

/// Result of checking one amount against one rate key.
struct Check {
  bool ok = false;
  bool never = false;      ///< n > capacity: no wait helps
  Micros retry_after = 0;  ///< exact: the same n fits at now + retry_after, not 1 µs earlier
};

/// Does `n` fit now? Exact retry_after when it does not.
ADMIT_RATE_INLINE Check check(const RateParams& p, const Tat& tat, std::int64_t n,
                              Micros now) noexcept {
  if (n > p.capacity) return {false, true, 0};
  const Tat next = add(p, base(tat, now), span(p, n));
  const Tat limit = add(p, Tat{now, 0}, Tat{p.tol_us, p.tol_rem});
  if (!less(limit, next)) return {true, false, 0};
  // Denied with n <= capacity implies tat > now. Earliest t with tat + nT <= t + tol:
  const Tat x = sub(p, next, Tat{p.tol_us, p.tol_rem});
  return {false, false, x.us + (x.rem > 0 ? 1 : 0) - now};
}

/// Consumes n unconditionally (the bucket may go into debt).
ADMIT_RATE_INLINE Tat consume(const RateParams& p, const Tat& tat, std::int64_t n,
                              Micros now) noexcept {
  return add(p, base(tat, now), span(p, n));
}

/// Returns n to the bucket; never fills it beyond capacity.
ADMIT_RATE_INLINE Tat refund(const RateParams& p, const Tat& tat, std::int64_t n,
                             Micros now) noexcept {
  const Tat t = sub(p, tat, span(p, n));
  return less(t, Tat{now, 0}) ? Tat{now, 0} : t;
}

/**
 * Lowers the bucket so that at most `n` units are available at `now` and none before `until`
 * (the next unit then comes exactly at `until`); never raises it. 0 <= n.
 */
inline Tat clamp(const RateParams& p, const Tat& tat, std::int64_t n, Micros until,
                 Micros now) noexcept {
  Tat t = tat;
  const Tat tol{p.tol_us, p.tol_rem};
  if (n < p.capacity) {  // available <= n  <=>  TAT >= now + tol - n*T
    const Tat floor_n = sub(p, add(p, Tat{now, 0}, tol), span(p, n));
    if (less(t, floor_n)) t = floor_n;
  }
  if (until > now) {  // nothing before until  <=>  TAT >= until + tol - T
    const Tat floor_u = sub(p, add(p, Tat{until, 0}, tol), span(p, 1));
    if (less(t, floor_u)) t = floor_u;
  }
  return t;
}

/// A stored state written under other parameters (the limit was reconfigured, or an adaptive
/// limit changed its rate) may carry a remainder of another denominator: keep it in range.
/// The error is below 1 µs.
ADMIT_RATE_INLINE Tat normalize(const RateParams& p, Tat t) noexcept {
  if (t.rem >= p.r) t.rem = p.r - 1;
  return t;
}

/// Whole units available now (0 when in debt).
inline std::int64_t available(const RateParams& p, const Tat& tat, Micros now) noexcept {
  const Tat b = base(tat, now);
  const Tat limit = add(p, Tat{now, 0}, Tat{p.tol_us, p.tol_rem});
  if (less(limit, b)) return 0;
  const Tat d = sub(p, limit, b);
  if (p.r == 1) return std::min<std::int64_t>(d.us / p.a, p.capacity);  // integer T
  // floor(d / T) with d and T scaled by r; 128-bit because d.us * r may pass 2^63.
  const Int128 num = static_cast<Int128>(d.us) * p.r + d.rem;
  const Int128 den = static_cast<Int128>(p.a) * p.r + p.b;
  return std::min<std::int64_t>(static_cast<std::int64_t>(num / den), p.capacity);
}

/// µs until the bucket is full again (0 if full).
inline Micros reset_after(const Tat& tat, Micros now) noexcept {
  if (!less(Tat{now, 0}, tat)) return 0;
  return tat.us - now + (tat.rem > 0 ? 1 : 0);
}

}  // namespace admit::rate

#undef ADMIT_RATE_INLINE
