// Limiter::Impl: the state behind a Limiter (its store, clock and options; the configuration
// snapshots, the store's configuration cache, the AIMD laws, what is learned and shared through
// the store, the wait queues) and the steps of an operation that the public methods
// (limiter.cpp) share: plan_for (plan.cpp), the acquire before and after the store, lease_op
// (a lease's adjust and end).
#pragma once

#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "admit/limiter.hpp"
#include "aimd_registry.hpp"
#include "config_snapshot.hpp"
#include "lease_key.hpp"
#include "lease_record.hpp"
#include "plan.hpp"
#include "shared_adaptation.hpp"
#include "store_config_cache.hpp"
#include "wait_queue.hpp"

namespace admit {

struct Limiter::Impl {
  Impl(Limiter& owner, Store& s, const Clock& c, LimiterOptions o)
      : self(owner), store(s), clock(c), opt(std::move(o)) {}

  Limiter& self;  // what leases point to
  Store& store;
  const Clock& clock;
  const LimiterOptions opt;
  Namespace ns;
  detail::ConfigSnapshots config;
  detail::StoreConfigCache store_config{store, ns, opt, config};  // ConfigMode::store only
  detail::AimdRegistry aimd;
  detail::SharedAdaptation shared{store, ns, opt, config, aimd};  // AdaptationMode::store only
  detail::WaitQueues waits;

  // The configuration that resolves (entity, resource) and its chain of parents, as a
  // Snapshot: the whole configuration in local mode; in store mode the chain built from the
  // store's entries (StoreConfigCache::chain), valid until *fresh_until.
  std::shared_ptr<const detail::Snapshot> view(std::string_view entity, std::string_view resource,
                                               Micros now, Micros* fresh_until);

  // The plan of (entity, resource) with `amounts` applied, from this thread's plan cache
  // (plan.cpp). The reference is valid until this thread's next call.
  detail::Plan& plan_for(std::string_view entity, std::string_view resource, const Amounts& amounts,
                         Micros now);

  Lease attempt(std::string_view entity, std::string_view resource, const Amounts& amounts,
                const AcquireOptions& options, bool respect_queue);
  // The part of an acquire before the store, decided at `now`: the plan, or nullptr with
  // `lease`'s decision set (an invalid request, someone waiting ahead).
  inline detail::Plan* prepare_acquire(Lease& lease, std::string_view entity,
                                       std::string_view resource, const Amounts& amounts,
                                       bool respect_queue, Micros now);
  // The part after the store: `lease`'s decision from the store's answer (`results[j]` for
  // `ops[j]`, which took from entry `entries[j]` of `key`) and, if allowed, its holdings.
  // `epochs`: per entry, adaptive plans only (else empty).
  inline void finish_acquire(Lease& lease, const detail::KeyRef& key, std::span<const OpItem> ops,
                             std::span<const std::size_t> entries,
                             std::span<const ItemResult> results,
                             std::span<const std::uint64_t> epochs, bool ok, bool with_stats,
                             bool slots, std::uint64_t id, Micros expires_at);

  // try_acquire_many(): the requests in batches of up to 64, each batch one
  // Store::apply_batch; out[i] receives requests[i]'s lease.
  struct BatchItem;
  void acquire_many(std::span<const AcquireRequest> requests, const AcquireOptions& options,
                    std::span<Lease> out);
  // A decision from a failure the store reported: code store_unavailable, the reason its what().
  static void failed(Decision& d, const std::exception_ptr& error) noexcept;

  // try_acquire_async(): what the store's answer needs, and its completion.
  struct AsyncAcquire;
  void acquire_async(std::string_view entity, std::string_view resource, const Amounts& amounts,
                     AcquireCallback done, const AcquireOptions& options, bool respect_queue);
  // Completes an acquire_async() from the store's answer and hands the lease to `done`; lets
  // go of `ctx` (recycle_async) before `done` runs.
  static void complete_async(AsyncAcquire* ctx, bool ok, std::exception_ptr error) noexcept;
  // This thread's spare context (see limiter.cpp), and giving one back once its lease and
  // callback were moved out.
  static thread_local std::unique_ptr<AsyncAcquire> spare_async;
  static void recycle_async(std::unique_ptr<AsyncAcquire> c) noexcept;
  // A durable lease whose record must be rewritten (make_durable) before `done` gets it.
  struct RecordFix {
    Lease lease;
    AcquireCallback done;
  };
  static void rewrite_record_async(Impl* impl, std::shared_ptr<RecordFix> fix) noexcept;

  // decide (check, change nothing) or record (consume unconditionally), reporting every limit.
  Decision planned_op(OpKind kind, std::string_view entity, std::string_view resource,
                      const Amounts& amounts);
  // What a lease operation does: adjust (deltas), extend (extend_ttl > 0) or end (refunding
  // what the lease consumed if `refund`).
  struct LeaseOpArgs {
    const Amounts* deltas = nullptr;
    bool refund = false;
    Micros extend_ttl = 0;
  };
  // A lease's adjust, extend or end, synchronous or not (lease_ops.cpp).
  struct LeaseOp;
  struct AsyncLeaseOp;
  Decision lease_op(Lease& lease, LeaseOpArgs args);
  // An end moves `lease` into the operation (the caller's object is inactive at once); an
  // adjust or extend updates `lease`, which must stay put until `done` runs.
  void lease_op_async(Lease& lease, LeaseOpArgs args, Lease::DecisionCallback done);
  void prepare_lease_op(LeaseOp& lo, Lease& lease, LeaseOpArgs args);
  Op lease_store_op(const LeaseOp& lo, const Lease& lease) const;
  void finish_lease_op(LeaseOp& lo, Lease& lease);
  static void complete_lease_op(AsyncLeaseOp* ctx, std::exception_ptr error) noexcept;

  // Durable leases (durable.cpp): the record of an acquire about to be sent, from what its op
  // will consume (ops[j] takes from entry entries[j] of `key`; epochs: per entry, adaptive
  // plans only), and making an allowed lease durable with it. make_durable returns true when
  // the lease holds less than the record says (a shadow limit refused, so the store did not
  // charge it): the caller then rewrites the stored record from the lease's holdings with a
  // guarded adjust by nothing, before anyone else can know the lease's token.
  struct DurableRecord {
    std::string data;
    std::vector<detail::RecordHeld> held;  // per item of the key
  };
  static DurableRecord acquire_record(const detail::LeaseKey& key, std::span<const OpItem> ops,
                                      std::span<const std::size_t> entries,
                                      std::span<const std::uint64_t> epochs, bool slots,
                                      Micros now);
  [[nodiscard]] static bool make_durable(Lease& lease, DurableRecord record);
};

}  // namespace admit
