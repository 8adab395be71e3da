#include "admit/store/guarded_store.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "kernel.hpp"

namespace admit {

std::string_view to_string(UnavailablePolicy p) {
  switch (p) {
    case UnavailablePolicy::fail_closed:
      return "fail_closed";
    case UnavailablePolicy::fail_open:
      return "fail_open";
    case UnavailablePolicy::local_fallback:
      return "local_fallback";
  }
  return "unknown";
}

namespace {

__extension__ typedef __int128 Int128;

constexpr std::size_t kMaxCachedLimits = 4096;  // the cache is cleared when it grows past this

using detail::is_rate;

// A limit's capacity divided by the fleet: rounded down, at least 1 (0 = unlimited stays 0).
std::int64_t share(std::int64_t capacity, std::int64_t fleet) {
  if (capacity <= 0) return capacity;
  return std::max<std::int64_t>(1, capacity / fleet);
}

// GCRA parameters for 1/fleet of the rate: capacity divided (share()), the interval per unit
// T = a + b/r multiplied by `fleet` exactly (same denominator r). Kept within the exactness
// bounds of Limit::make_rate (rate.hpp): a slower interval or a smaller capacity, never more.
RateParams scale(const RateParams& p, std::int64_t fleet) {
  if (p.capacity <= 0 || fleet == 1) return p;
  RateParams s;
  s.r = p.r;
  const Int128 scaled_b = static_cast<Int128>(p.b) * fleet;
  Int128 a = static_cast<Int128>(p.a) * fleet + scaled_b / p.r;
  Int128 b = scaled_b % p.r;
  constexpr std::int64_t kMaxA = kMaxExact / 4;
  if (a > kMaxA) {  // slower than ~71 years per unit: saturate (admits less, never more)
    a = kMaxA;
    b = 0;
  }
  s.a = static_cast<std::int64_t>(a);
  s.b = static_cast<std::int64_t>(b);
  s.max_amount =
      std::min(kMaxExact / std::max<std::int64_t>(s.b, 1), kMaxA / std::max<std::int64_t>(s.a, 1));
  s.capacity = std::min(share(p.capacity, fleet), s.max_amount);
  const std::int64_t cb = s.capacity * s.b;
  s.tol_us = s.capacity * s.a + cb / s.r;
  s.tol_rem = cb % s.r;
  return s;
}

// Window and concurrency limits: the same limit (name, kind, calendar, shadow flag) with its
// capacity divided. Same name and kind, so the same state in the fallback store.
Limit scaled_limit(const Limit& l, std::int64_t fleet) {
  const std::int64_t cap = share(l.capacity(), fleet);
  if (l.kind() == LimitKind::window) {
    return Limit::window(l.name(), cap, l.window_spec()).with_shadow(l.shadow());
  }
  return Limit::concurrency(l.name(), cap).with_shadow(l.shadow());
}

GuardedStoreOptions validated(GuardedStoreOptions o) {
  if (o.fleet_size < 1) {
    throw ValidationError("fleet_size", std::to_string(o.fleet_size), "must be >= 1");
  }
  return o;
}

}  // namespace

struct GuardedStore::Impl {
  std::unique_ptr<Store> owned;
  Store& primary;
  GuardedStoreOptions o;
  MemoryStore fallback;
  std::atomic<bool> degraded{false};
  std::atomic<std::uint64_t> primary_failures{0}, fail_open_allowed{0}, fallback_ops{0},
      recoveries{0};

  // The fallback's namespaces, by name (its ids differ from the primary's).
  std::mutex ns_mu;
  std::unordered_map<std::string, Namespace> namespaces;

  // Scaled window / concurrency limits, keyed by the limit's value (not its address: a
  // reconfigured Limiter may put a different limit at the address of a freed one). Entries
  // are shared: a clear() while another thread uses one does not free it.
  struct Cached {
    Limit original;
    std::shared_ptr<const Limit> scaled;
  };
  std::mutex cache_mu;
  std::unordered_map<std::uint64_t, std::vector<Cached>> cache;  // by Limit::name_hash()
  std::size_t cached = 0;

  Impl(std::unique_ptr<Store> own, Store& p, GuardedStoreOptions opts)
      : owned(std::move(own)), primary(p), o(validated(opts)) {}

  // primary_failures doubles as the failure epoch: only an operation that started after the
  // last failure proves the primary healthy again (one that was already in flight when
  // another failed does not, even if it completes later).
  std::uint64_t epoch() const { return primary_failures.load(std::memory_order_acquire); }

  // The primary served an operation that started at failure epoch `epoch`.
  void served(std::uint64_t epoch) {
    if (degraded.load(std::memory_order_acquire)) recovered(epoch);
  }

  // The primary threw StoreUnavailable.
  void failed() {
    primary_failures.fetch_add(1, std::memory_order_acq_rel);
    degraded.store(true, std::memory_order_release);
  }

  // The policy's answer to `op` once the primary failed; fail_closed never gets here.
  bool degraded_answer(const Op& op, std::span<ItemResult> results) {
    return o.policy == UnavailablePolicy::fail_open ? apply_open(op, results)
                                                    : apply_fallback(op, results);
  }

  // An operation that started at failure epoch `epoch` succeeded on the primary.
  void recovered(std::uint64_t epoch) {
    if (primary_failures.load(std::memory_order_acquire) != epoch) return;  // failed since
    bool was = true;
    if (degraded.compare_exchange_strong(was, false, std::memory_order_acq_rel)) {
      recoveries.fetch_add(1, std::memory_order_relaxed);
    }
  }

  Namespace fallback_ns(const std::string& name) {
    std::lock_guard g(ns_mu);
    auto it = namespaces.find(name);
    if (it == namespaces.end()) it = namespaces.emplace(name, fallback.open_namespace(name)).first;
    return it->second;
  }

  std::shared_ptr<const Limit> scaled(const Limit& l) {
    std::lock_guard g(cache_mu);
    auto& bucket = cache[l.name_hash()];
    for (const Cached& c : bucket) {
      if (c.original == l) return c.scaled;
    }
    auto s = std::make_shared<const Limit>(scaled_limit(l, o.fleet_size));
    if (cached >= kMaxCachedLimits) {
      cache.clear();
      cached = 0;
      cache[l.name_hash()].push_back(Cached{l, s});
    } else {
      bucket.push_back(Cached{l, s});
    }
    ++cached;
    return s;
  }

  bool apply_fallback(const Op& op, std::span<ItemResult> results) {
    fallback_ops.fetch_add(1, std::memory_order_relaxed);
    const Namespace ns = fallback_ns(op.ns->name);
    const std::int64_t fleet = o.fleet_size;
    std::vector<OpItem> items(op.items.begin(), op.items.end());
    std::vector<RateParams> rates;
    rates.reserve(items.size());                     // pointers into it stay valid
    std::vector<std::shared_ptr<const Limit>> keep;  // scaled limits alive for this op
    for (OpItem& it : items) {
      const Limit& l = *it.limit;
      if (l.unlimited()) continue;
      if (is_rate(l.kind())) {
        if (fleet > 1) it.rate = &rates.emplace_back(scale(detail::params(it), fleet));
      } else if (fleet > 1) {
        it.limit = keep.emplace_back(scaled(l)).get();
      }
    }
    Op f = op;
    f.ns = &ns;
    f.items = items;
    f.handles = {};  // the primary's handles; the fallback derives its own
    return fallback.apply(f, results);
  }

  // Every item ok with its limit full: what a store with no state would report (without
  // changing anything).
  bool apply_open(const Op& op, std::span<ItemResult> results) {
    if (op.kind == OpKind::acquire || op.kind == OpKind::decide) {
      fail_open_allowed.fetch_add(1, std::memory_order_relaxed);
    }
    for (std::size_t i = 0; i < op.items.size(); ++i) {
      const OpItem& it = op.items[i];
      const Limit& l = *it.limit;
      ItemResult r;
      r.ok = true;
      if (is_rate(l.kind())) {
        r.available = detail::params(it).capacity;
      } else {
        r.available = l.capacity();
        if (l.kind() == LimitKind::window) {
          r.window_end = l.window_at(op.now).end;
          r.reset_after = r.window_end - op.now;
        }
      }
      results[i] = r;
    }
    return true;
  }
};

GuardedStore::GuardedStore(Store& primary, GuardedStoreOptions options)
    : impl_(std::make_unique<Impl>(nullptr, primary, options)) {}

namespace {
Store& require(const std::unique_ptr<Store>& p) {
  if (!p) throw ValidationError("primary", "null", "must be a store");
  return *p;
}
}  // namespace

GuardedStore::GuardedStore(std::unique_ptr<Store> primary, GuardedStoreOptions options)
    : impl_(std::make_unique<Impl>(nullptr, require(primary), options)) {
  impl_->owned = std::move(primary);
}

GuardedStore::~GuardedStore() = default;

bool GuardedStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  const std::uint64_t epoch = im.epoch();
  try {
    const bool ok = im.primary.apply(op, results);
    im.served(epoch);
    return ok;
  } catch (const StoreUnavailable&) {
    im.failed();
    if (im.o.policy == UnavailablePolicy::fail_closed) throw;
  }
  return im.degraded_answer(op, results);
}

namespace {

bool is_unavailable(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const StoreUnavailable&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

void GuardedStore::apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done) {
  Impl& im = *impl_;
  const std::uint64_t epoch = im.epoch();
  // fail_open and local_fallback may have to answer after `op` is gone: keep a copy.
  std::shared_ptr<const OwnedOp> copy;
  if (im.o.policy != UnavailablePolicy::fail_closed) copy = std::make_shared<const OwnedOp>(op);
  im.primary.apply_async(op, results,
                         [&im, epoch, results, copy = std::move(copy), done = std::move(done)](
                             bool ok, std::exception_ptr error) {
                           if (!error) {
                             im.served(epoch);
                             return done(ok, nullptr);
                           }
                           if (!is_unavailable(error)) return done(false, std::move(error));
                           im.failed();
                           if (im.o.policy == UnavailablePolicy::fail_closed)
                             return done(false, std::move(error));
                           bool answer = false;
                           std::exception_ptr failure;
                           try {
                             answer = im.degraded_answer(copy->op(), results);
                           } catch (...) {
                             failure = std::current_exception();
                           }
                           done(answer, std::move(failure));
                         });
}

KeyHandle GuardedStore::prepare(const Namespace& ns, const KeyParts& key) const {
  return impl_->primary.prepare(ns, key);
}

Namespace GuardedStore::open_namespace(std::string_view name) {
  return impl_->primary.open_namespace(name);
}

void GuardedStore::reset_namespace(const Namespace& ns) {
  impl_->fallback.reset_namespace(impl_->fallback_ns(ns.name));
  impl_->primary.reset_namespace(ns);
}

std::size_t GuardedStore::prune(Micros now) {
  const std::size_t local = impl_->fallback.prune(now);
  return local + impl_->primary.prune(now);
}

std::size_t GuardedStore::size() const { return impl_->primary.size(); }

std::optional<std::uint64_t> GuardedStore::expired_leases() const {
  const std::optional<std::uint64_t> primary = impl_->primary.expired_leases();
  if (!primary) return std::nullopt;
  return *primary + impl_->fallback.expired_leases().value_or(0);
}

void GuardedStore::put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) {
  impl_->primary.put_config(ns, key, value);
}

void GuardedStore::get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                              std::span<std::optional<std::string>> values) {
  impl_->primary.get_config(ns, keys, values);
}

std::vector<ConfigEntry> GuardedStore::list_config(const Namespace& ns) {
  return impl_->primary.list_config(ns);
}

std::optional<LeaseRecord> GuardedStore::get_lease(const Namespace& ns, std::string_view group,
                                                   std::uint64_t lease_id, Micros now) {
  return impl_->primary.get_lease(ns, group, lease_id, now);
}

// The audit log is the primary's under every policy: an event kept in the process-local
// fallback would be missing from the fleet's log, so a failed append reaches the caller.
std::uint64_t GuardedStore::append_audit(const Namespace& ns, AuditEvent event) {
  return impl_->primary.append_audit(ns, std::move(event));
}

std::vector<AuditEvent> GuardedStore::read_audit(const Namespace& ns, const AuditQuery& query) {
  return impl_->primary.read_audit(ns, query);
}

// Learned state is the primary's under every policy, as configuration is: a Limiter that
// cannot reach it keeps what it has and tries again at its next refresh.
LearnedValue GuardedStore::put_learned(const Namespace& ns, const LearnedKey& key,
                                       const LearnedValue& value, Micros now) {
  return impl_->primary.put_learned(ns, key, value, now);
}

std::vector<LearnedEntry> GuardedStore::list_learned(const Namespace& ns, Micros now) {
  return impl_->primary.list_learned(ns, now);
}

StoreCapabilities GuardedStore::capabilities() const { return impl_->primary.capabilities(); }

std::string GuardedStore::name() const { return "guarded(" + impl_->primary.name() + ")"; }

bool GuardedStore::degraded() const { return impl_->degraded.load(std::memory_order_acquire); }

GuardedStoreStats GuardedStore::stats() const {
  const Impl& im = *impl_;
  return GuardedStoreStats{im.primary_failures.load(std::memory_order_relaxed),
                           im.fail_open_allowed.load(std::memory_order_relaxed),
                           im.fallback_ops.load(std::memory_order_relaxed),
                           im.recoveries.load(std::memory_order_relaxed)};
}

const GuardedStoreOptions& GuardedStore::options() const { return impl_->o; }
Store& GuardedStore::primary() { return impl_->primary; }
MemoryStore& GuardedStore::fallback() { return impl_->fallback; }

}  // namespace admit
