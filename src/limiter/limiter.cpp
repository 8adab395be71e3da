// Limiter: the public methods. Each job they share has its own file: the configuration
// snapshot (config_snapshot), the store's configuration cache (store_config_cache), resolution
// (resolution.hpp), plans and the plan cache (plan), decisions and stats (decisions), the wait
// queues (wait_queue), the AIMD laws (aimd_registry), what is learned and shared through the
// store (shared_adaptation), lease ids (lease_ids); Limiter::Impl (limiter_impl.hpp) holds
// them. Also here: the acquire path's steps (Impl::attempt, the asynchronous acquire and the
// batch of try_acquire_many, in one translation unit with try_acquire so the hot path
// inlines). A lease's store operations are in
// lease_ops.cpp, the asynchronous wait in async_wait.cpp.
#include "admit/limiter.hpp"

#include <algorithm>
#include <array>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>

#include "admit/core/aimd.hpp"
#include "admit/core/limit_codec.hpp"
#include "decisions.hpp"
#include "lease_ids.hpp"
#include "limiter_impl.hpp"
#include "pair_key.hpp"

namespace admit {

using detail::acquire_items;
using detail::adaptive_params;
using detail::av;
using detail::chain_root;
using detail::check_unique_names;
using detail::fill_decision;
using detail::LeaseAccess;
using detail::LeaseKey;
using detail::link_parent;
using detail::next_lease_id;
using detail::pair_key;
using detail::Plan;
using detail::resolve_chain;
using detail::resolve_in;
using detail::Resolved;
using detail::SmallVec;
using detail::Snapshot;
using detail::status_of;
using detail::unavailable;
using detail::waiting_cannot_help;
using detail::WaitQueues;

Limiter::Limiter(Store& store, const Clock& clock, LimiterOptions options)
    : impl_(std::make_unique<Impl>(*this, store, clock, std::move(options))) {
  const LimiterOptions& o = impl_->opt;
  if (o.lease_ttl <= 0) {
    throw ValidationError("lease_ttl", std::to_string(o.lease_ttl), "must be > 0");
  }
  if (o.max_parent_depth < 0 || o.max_parent_depth > 64) {
    throw ValidationError("max_parent_depth", std::to_string(o.max_parent_depth),
                          "must be within 0..64");
  }
  if (o.config_ttl < 0) {
    throw ValidationError("config_ttl", std::to_string(o.config_ttl), "must be >= 0");
  }
  if (o.adaptation_refresh <= 0 || o.adaptation_refresh > kMicrosPerDay) {
    throw ValidationError("adaptation_refresh", std::to_string(o.adaptation_refresh),
                          "must be > 0 and at most a day");
  }
  if (o.adaptation_ttl < 2 * o.adaptation_refresh || o.adaptation_ttl > 365 * kMicrosPerDay) {
    throw ValidationError("adaptation_ttl", std::to_string(o.adaptation_ttl),
                          "must be at least 2 * adaptation_refresh and at most a year");
  }
  impl_->ns = impl_->store.open_namespace(o.ns);
  const StoreCapabilities caps = impl_->store.capabilities();
  if (o.adaptation == AdaptationMode::store && !caps.learned) {
    throw ValidationError("adaptation", "store",
                          "store '" + impl_->store.name() + "' keeps no learned state");
  }
  if (o.adaptation == AdaptationMode::store ||
      (o.adaptation == AdaptationMode::automatic && caps.learned &&
       (caps.distributed || caps.durable))) {
    impl_->shared.enable();
  }
}

Limiter::~Limiter() = default;

const Clock& Limiter::clock() const { return impl_->clock; }
Store& Limiter::store() { return impl_->store; }
const LimiterOptions& Limiter::options() const { return impl_->opt; }

// ---------------------------------------------------------------- configuration

void Limiter::set_default_limits(std::vector<Limit> limits) {
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->store_config.write({ConfigKind::system, {}, {}}, encode_limits(limits));
  }
  impl_->config.update([&](Snapshot& s) { s.system = std::move(limits); });
}

void Limiter::set_limits(std::string resource, std::vector<Limit> limits) {
  validate_name("resource", resource);
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->store_config.write({ConfigKind::resource, {}, resource}, encode_limits(limits));
  }
  impl_->config.update([&](Snapshot& s) { s.resources[std::move(resource)] = std::move(limits); });
}

void Limiter::set_entity_limits(std::string entity, std::string resource,
                                std::vector<Limit> limits) {
  validate_name("entity", entity);
  validate_name("resource", resource);
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->store_config.write({ConfigKind::entity, entity, resource}, encode_limits(limits));
  }
  impl_->config.update([&](Snapshot& s) {
    s.entities[std::move(entity)].per_resource[std::move(resource)] = std::move(limits);
  });
}

void Limiter::set_entity_default_limits(std::string entity, std::vector<Limit> limits) {
  validate_name("entity", entity);
  check_unique_names(limits);
  if (impl_->opt.config == ConfigMode::store) {
    return impl_->store_config.write({ConfigKind::entity_default, entity, {}},
                                     encode_limits(limits));
  }
  impl_->config.update(
      [&](Snapshot& s) { s.entities[std::move(entity)].defaults = std::move(limits); });
}

void Limiter::set_parent(std::string entity, std::string parent) {
  validate_name("entity", entity);
  if (!parent.empty()) validate_name("parent", parent);
  if (impl_->opt.config == ConfigMode::store) {
    // Checked against every link stored now (another process may add one concurrently: a
    // cycle is then refused when a chain is resolved).
    Snapshot links;
    for (const ConfigEntry& e : impl_->store.list_config(impl_->ns)) {
      if (e.kind == ConfigKind::parent) links.entities[e.entity].parent = e.value;
    }
    links.parent_rules = impl_->config.current().parent_rules;
    link_parent(links, entity, parent, impl_->opt.max_parent_depth);
    impl_->store_config.write({ConfigKind::parent, entity, {}}, parent);
    return;
  }
  impl_->config.update(
      [&](Snapshot& s) { link_parent(s, entity, parent, impl_->opt.max_parent_depth); });
}

std::string Limiter::parent(std::string_view entity) const {
  validate_name("entity", entity);
  if (impl_->opt.config == ConfigMode::store) {
    const ConfigKey key{ConfigKind::parent, std::string(entity), {}};
    std::optional<std::string> link;
    impl_->store.get_config(impl_->ns, std::span(&key, 1), std::span(&link, 1));
    if (link && !link->empty()) return *link;
  }
  return std::string(detail::parent_of(impl_->config.current(), entity));
}

void Limiter::set_parent_rules(std::vector<ParentRule> rules) {
  auto compiled =
      std::make_shared<const detail::ParentRules>(detail::compile_parent_rules(std::move(rules)));
  const int depth = impl_->opt.max_parent_depth;
  if (impl_->opt.config == ConfigMode::store && !compiled->rules.empty()) {
    // The rules stay here; checked with the links stored now (as set_parent does).
    Snapshot links;
    for (const ConfigEntry& e : impl_->store.list_config(impl_->ns)) {
      if (e.kind == ConfigKind::parent) links.entities[e.entity].parent = e.value;
    }
    detail::set_rules(links, compiled, depth);
  }
  impl_->config.update([&](Snapshot& s) { detail::set_rules(s, compiled, depth); });
}

std::vector<ParentRule> Limiter::parent_rules() const {
  const auto& rules = impl_->config.current().parent_rules;
  return rules == nullptr ? std::vector<ParentRule>{} : rules->rules;
}

void Limiter::remove_limits(std::string_view resource) {
  if (impl_->opt.config == ConfigMode::store) {
    const ConfigKey key{ConfigKind::resource, {}, resource};
    validate_config_key(key);
    return impl_->store_config.write(key, {});
  }
  impl_->config.update([&](Snapshot& s) { s.resources.erase(std::string(resource)); });
}

void Limiter::remove_entity_limits(std::string_view entity, std::string_view resource) {
  if (impl_->opt.config == ConfigMode::store) {
    const ConfigKey key{ConfigKind::entity, entity, resource};
    validate_config_key(key);
    return impl_->store_config.write(key, {});
  }
  impl_->config.update([&](Snapshot& s) {
    auto e = s.entities.find(av(entity));
    if (e != s.entities.end()) e->second.per_resource.erase(std::string(resource));
  });
}

void Limiter::remove_entity_default_limits(std::string_view entity) {
  if (impl_->opt.config == ConfigMode::store) {
    const ConfigKey key{ConfigKind::entity_default, entity, {}};
    validate_config_key(key);
    return impl_->store_config.write(key, {});
  }
  impl_->config.update([&](Snapshot& s) {
    auto e = s.entities.find(av(entity));
    if (e != s.entities.end()) e->second.defaults.reset();
  });
}

void Limiter::set_discovered_limits(std::string entity, std::string resource,
                                    std::vector<Limit> limits) {
  validate_name("entity", entity);
  validate_name("resource", resource);
  check_unique_names(limits);
  if (impl_->shared.enabled()) {
    return impl_->shared.set_learned(std::move(entity), std::move(resource), std::move(limits),
                                     impl_->clock.now());
  }
  impl_->config.update([&](Snapshot& s) {
    if (limits.empty()) {
      s.discovered.erase(pair_key(entity, resource));
      return;
    }
    auto& d = s.discovered[pair_key(entity, resource)];
    d.entity = std::move(entity);
    d.resource = std::move(resource);
    d.learned = std::move(limits);
  });
}

Limiter::Adaptation Limiter::adaptation() const {
  impl_->shared.refresh_if_due(impl_->clock.now());
  Adaptation out;
  out.shared = impl_->shared.enabled();
  if (out.shared) out.refreshed_at = impl_->shared.refreshed_at();
  const std::shared_ptr<const Snapshot> snap = impl_->config.current_ptr();
  for (const auto& [key, d] : snap->discovered) {
    out.discovered.push_back(Adaptation::Learned{d.entity, d.resource, d.learned});
  }
  for (auto& r : impl_->aimd.rates()) {
    out.aimd.push_back(
        Adaptation::Rate{std::move(r.entity), std::move(r.resource), std::move(r.limit), r.rate});
  }
  return out;
}

std::vector<Limit> Limiter::discovered_limits(std::string_view entity,
                                              std::string_view resource) const {
  impl_->shared.refresh_if_due(impl_->clock.now());
  const Snapshot& s = impl_->config.current();
  auto d = s.discovered.find(pair_key(entity, resource));
  return d == s.discovered.end() ? std::vector<Limit>{} : d->second.learned;
}

bool Limiter::shares_adaptation() const { return impl_->shared.enabled(); }

std::uint64_t Limiter::config_version() const {
  impl_->shared.refresh_if_due(impl_->clock.now());
  return impl_->config.version();
}

std::vector<std::pair<Limit, ConfigSource>> Limiter::resolve(std::string_view entity,
                                                             std::string_view resource) const {
  const Micros now = impl_->clock.now();
  impl_->shared.refresh_if_due(now);
  const auto snap = impl_->view(entity, resource, now, nullptr);
  const Resolved r = resolve_in(*snap, entity, resource);
  std::vector<std::pair<Limit, ConfigSource>> out;
  if (r.limits != nullptr) {
    for (std::size_t i = 0; i < r.limits->size(); ++i) {
      out.emplace_back((*r.limits)[i], r.source_of(i));
    }
  }
  return out;
}

std::vector<std::string> Limiter::resources() const {
  std::vector<std::string> out;
  if (impl_->opt.config == ConfigMode::store) {
    for (ConfigEntry& e : impl_->store.list_config(impl_->ns)) {
      if (e.kind == ConfigKind::resource || e.kind == ConfigKind::entity) {
        out.push_back(std::move(e.resource));
      }
    }
  } else {
    const Snapshot& s = impl_->config.current();
    for (const auto& [name, limits] : s.resources) out.push_back(name);
    for (const auto& [entity, conf] : s.entities) {
      for (const auto& [name, limits] : conf.per_resource) out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

CacheStats Limiter::cache_stats() const {
  if (impl_->opt.config != ConfigMode::store) return {};
  return impl_->store_config.stats();
}

void Limiter::invalidate_config() {
  if (impl_->opt.config == ConfigMode::store) impl_->store_config.invalidate();
}

std::shared_ptr<const Snapshot> Limiter::Impl::view(std::string_view entity,
                                                    std::string_view resource, Micros now,
                                                    Micros* fresh_until) {
  if (opt.config == ConfigMode::local) {
    if (fresh_until != nullptr) *fresh_until = std::numeric_limits<Micros>::max();
    return config.current_ptr();
  }
  return store_config.chain(entity, resource, now, fresh_until);
}

// ---------------------------------------------------------------- admission

namespace {
// Per-thread scratch for one operation, reused so the hot path allocates nothing.
struct Scratch {
  std::vector<OpItem> ops;
  std::vector<std::size_t> entries;  // per op item: the plan entry it takes from
  std::vector<ItemResult> results;
  std::vector<RateParams> rates;      // adaptive items' parameters (reserved: pointers stay valid)
  std::vector<std::uint64_t> epochs;  // per entry: adaptive controllers' epoch at the op
  // The acquire's op, set field by field: built by a designated initializer, GCC cleared
  // its 152 bytes with `rep stos` first, ~3 ns of a one-key acquire. The fields attempt()
  // does not set keep their defaults.
  Op op;
};
thread_local Scratch t_scratch;

// An adjust by nothing: a durable lease's guarded op that only rewrites its record.
const Amounts kNoDeltas;

/// An op over `plan`'s keys that reports every item: reset, read (stats), clamp.
Op report_op(OpKind kind, const Namespace& ns, std::string_view group, Micros now, const Plan& plan,
             std::span<const OpItem> items) {
  return Op{.kind = kind,
            .ns = &ns,
            .group = group,
            .now = now,
            .keys = plan.keys,
            .items = items,
            .handles = {},
            .lease_id = 0,
            .lease_expiry = 0,
            .report = true,
            .lease_record = {},
            .lease_record_next = {},
            .lease_guard = false};
}

/// Whether an admitted acquire holds a concurrency slot: some concurrency item the store
/// charged (a shadow one that refused took none).
bool holds_any_slot(const LeaseKey& key, std::span<const OpItem> ops,
                    std::span<const std::size_t> entries, std::span<const ItemResult> results) {
  for (std::size_t j = 0; j < ops.size(); ++j) {
    if (key.items[entries[j]].limit.kind() == LimitKind::concurrency && results[j].ok) return true;
  }
  return false;
}

/// A durable acquire on a store that keeps no lease records.
void no_lease_records(Decision& d, const Store& store) {
  d.code = Code::invalid_argument;
  d.reason = "durable leases need a store that keeps lease records; " + store.name() + " does not";
}
}  // namespace

// Everything an asynchronous acquire needs once the store answers, owned in one allocation:
// nothing in it points into the per-thread plan cache (the next call on the thread may
// overwrite it) or into a configuration snapshot (a set_* may free it). The op's items point
// at the lease key's copies of the limits and at `rates`.
namespace detail {
// What an acquire's op points at, owned, outside the plan cache: the asynchronous acquire's
// context and a batch's items (try_acquire_many) are built on it.
struct AcquireParts {
  KeyRef key;
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> entries;
  SmallVec<ItemResult> results;
  SmallVec<RateParams> rates;
  SmallVec<std::uint64_t> epochs;
  std::uint64_t id = 0;
  bool adaptive = false;
  bool slots = false;
};
}  // namespace detail

struct Limiter::Impl::AsyncAcquire : detail::AcquireParts {
  Impl* impl = nullptr;
  AcquireCallback done;
  Lease lease;  // its decision's `now` is set
  Micros expires_at = 0;
  bool with_stats = false;
  bool durable = false;
  DurableRecord record;  // durable: what the acquire writes
};

// One spare AsyncAcquire per thread. An acquire that a store answers inside apply_async
// (MemoryStore, SqliteStore) gives its context back before the next acquire on the thread
// takes it: no allocation per call. One answered on another thread (RedisStore's I/O thread)
// leaves its context there as that thread's spare; beyond one they are freed.
thread_local std::unique_ptr<Limiter::Impl::AsyncAcquire> Limiter::Impl::spare_async;

// It keeps nothing of its acquire (a new Lease, no callback, no lease key).
void Limiter::Impl::recycle_async(std::unique_ptr<AsyncAcquire> c) noexcept {
  std::destroy_at(&c->lease);
  std::construct_at(&c->lease);
  c->done = nullptr;
  c->key.reset();
  c->durable = false;
  if (!spare_async) spare_async = std::move(c);
}

// Inlined into attempt(), the hot path, and into the asynchronous path.
[[gnu::always_inline]] Plan* Limiter::Impl::prepare_acquire(Lease& lease, std::string_view entity,
                                                            std::string_view resource,
                                                            const Amounts& amounts,
                                                            bool respect_queue, Micros now) {
  Decision& d = LeaseAccess::decision(lease);
  d.now = now;
  Plan& plan = plan_for(entity, resource, amounts, d.now);
  if (plan.error != Code::ok) {
    d.code = plan.error;
    d.reason = plan.error_reason;
    return nullptr;
  }
  if (respect_queue) {
    if (const std::size_t ahead = waits.ahead(entity, resource); ahead > 0) {
      d.code = Code::queue_ahead;
      d.reason = std::to_string(ahead) + " caller(s) wait on this key first";
      return nullptr;
    }
  }
  return &plan;
}

[[gnu::always_inline]] void Limiter::Impl::finish_acquire(Lease& lease, const detail::KeyRef& key,
                                                          std::span<const OpItem> ops,
                                                          std::span<const std::size_t> entries,
                                                          std::span<const ItemResult> results,
                                                          std::span<const std::uint64_t> epochs,
                                                          bool ok, bool with_stats, bool slots,
                                                          std::uint64_t id, Micros expires_at) {
  if (ok) {
    // The lease holds everything before it becomes active (activate()): if fill_decision()
    // throws, its destructor (during unwinding: a rollback) refunds all it consumed. Only
    // hold() can throw before that (out of memory); the usage then stays counted and
    // concurrency slots return at their TTL.
    // A shadow limit that refused was not charged (no slot taken either): the lease holds
    // nothing of it, so an end frees and refunds nothing there.
    if (key->shadow && slots) slots = holds_any_slot(*key, ops, entries, results);
    LeaseAccess::hold(lease, id, slots, expires_at, key);
    for (std::size_t j = 0; j < ops.size(); ++j) {
      const std::size_t i = entries[j];
      LeaseAccess::Held& h = LeaseAccess::held(lease, i);
      h = LeaseAccess::Held{results[j].ok ? ops[j].amount : 0, results[j].window_end};
      if (!epochs.empty() && key->items[i].aimd) h.window_end = static_cast<Micros>(epochs[i]);
    }
    LeaseAccess::activate(lease, &self);
  }
  fill_decision(LeaseAccess::decision(lease), *key, ops, entries, results, ok, with_stats);
}

Lease Limiter::Impl::attempt(std::string_view entity, std::string_view resource,
                             const Amounts& amounts, const AcquireOptions& options,
                             bool respect_queue) {
  Lease lease;
  const Plan* plan = prepare_acquire(lease, entity, resource, amounts, respect_queue, clock.now());
  if (plan == nullptr) return lease;
  Scratch& sc = t_scratch;
  const bool slots = acquire_items(*plan, sc.ops, sc.entries, sc.rates, sc.epochs,
                                   [plan](std::size_t i) { return plan->entries[i].limit; });
  const std::uint64_t id = options.durable ? detail::random_lease_id()
                           : slots         ? next_lease_id()
                                           : 0;
  const Micros now = LeaseAccess::decision(lease).now;
  const Micros expires_at = now + (options.lease_ttl > 0 ? options.lease_ttl : opt.lease_ttl);
  sc.results.resize(sc.ops.size());
  bool ok = true;
  std::optional<DurableRecord> record;  // durable only: no strings built otherwise
  if (options.durable) {
    if (!store.capabilities().leases) {
      no_lease_records(LeaseAccess::decision(lease), store);
      return lease;
    }
    record = acquire_record(*plan->lease_key, sc.ops, sc.entries,
                            plan->adaptive ? std::span<const std::uint64_t>(sc.epochs)
                                           : std::span<const std::uint64_t>(),
                            slots, now);
  }
  if (!sc.ops.empty() || options.durable) {
    Op& op = sc.op;
    op.kind = OpKind::acquire;
    op.ns = &ns;
    op.group = plan->keys.back().entity;
    op.now = now;
    op.keys = plan->keys;
    op.items = sc.ops;
    op.handles = plan->handles;
    op.lease_id = id;
    op.lease_expiry = expires_at;
    op.report = options.with_stats;
    op.lease_record = record ? std::string_view(record->data) : std::string_view();
    try {
      ok = store.apply(op, sc.results);
    } catch (const StoreUnavailable& e) {  // the store's policy was to fail closed
      unavailable(LeaseAccess::decision(lease), e);
      return lease;
    }
  }
  finish_acquire(
      lease, plan->lease_key, sc.ops, sc.entries, sc.results,
      plan->adaptive ? std::span<const std::uint64_t>(sc.epochs) : std::span<const std::uint64_t>(),
      ok, options.with_stats, slots, id, expires_at);
  if (options.durable && lease.active() && make_durable(lease, std::move(*record))) {
    (void)lease_op(lease, LeaseOpArgs{.deltas = &kNoDeltas});  // rewrites the record (durable.cpp)
  }
  return lease;
}

void Limiter::Impl::failed(Decision& d, const std::exception_ptr& error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const StoreUnavailable& e) {
    unavailable(d, e);
  } catch (const std::exception& e) {
    unavailable(d, e.what());
  } catch (...) {
    unavailable(d, "the store failed with an unknown exception");
  }
}

void Limiter::Impl::complete_async(AsyncAcquire* ctx, bool ok, std::exception_ptr error) noexcept {
  std::unique_ptr<AsyncAcquire> c(ctx);
  Lease& lease = c->lease;
  if (error) {
    failed(LeaseAccess::decision(lease), error);  // no exception escapes on the store's thread
  } else {
    c->impl->finish_acquire(
        lease, c->key, c->ops, c->entries, c->results,
        c->adaptive ? std::span<const std::uint64_t>(c->epochs) : std::span<const std::uint64_t>(),
        ok, c->with_stats, c->slots, c->id, c->expires_at);
    if (c->durable && lease.active() && make_durable(lease, std::move(c->record))) {
      // The record is rewritten (durable.cpp) before `done` gets the lease.
      auto fix = std::make_shared<RecordFix>(RecordFix{std::move(lease), std::move(c->done)});
      Impl* impl = c->impl;
      recycle_async(std::move(c));
      return rewrite_record_async(impl, std::move(fix));
    }
  }
  AcquireCallback done = std::move(c->done);
  Lease out = std::move(lease);
  recycle_async(std::move(c));  // before `done` runs, which may acquire again on this thread
  done(std::move(out));
}

void Limiter::Impl::rewrite_record_async(Impl* impl, std::shared_ptr<RecordFix> fix) noexcept {
  try {
    impl->lease_op_async(fix->lease, LeaseOpArgs{.deltas = &kNoDeltas},
                         [fix](Decision) { fix->done(std::move(fix->lease)); });
  } catch (...) {  // nothing was sent (out of memory): the lease keeps the record it has
    fix->done(std::move(fix->lease));
  }
}

void Limiter::Impl::acquire_async(std::string_view entity, std::string_view resource,
                                  const Amounts& amounts, AcquireCallback done,
                                  const AcquireOptions& options, bool respect_queue) {
  std::unique_ptr<AsyncAcquire> c =
      spare_async ? std::move(spare_async) : std::make_unique<AsyncAcquire>();
  Lease& lease = c->lease;  // a new Lease (see recycle_async)
  const Plan* plan = prepare_acquire(lease, entity, resource, amounts, respect_queue, clock.now());
  if (plan == nullptr) {
    Lease out = std::move(lease);
    recycle_async(std::move(c));
    done(std::move(out));
    return;
  }
  c->impl = this;
  c->key = plan->lease_key.share();
  const LeaseKey* key = c->key.get();
  c->slots = acquire_items(*plan, c->ops, c->entries, c->rates, c->epochs,
                           [key](std::size_t i) { return &key->items[i].limit; });
  c->adaptive = plan->adaptive;
  c->id = options.durable ? detail::random_lease_id() : c->slots ? next_lease_id() : 0;
  const Micros now = LeaseAccess::decision(lease).now;
  c->expires_at = now + (options.lease_ttl > 0 ? options.lease_ttl : opt.lease_ttl);
  c->with_stats = options.with_stats;
  c->results.resize(c->ops.size());
  c->durable = options.durable;
  if (options.durable) {
    if (!store.capabilities().leases) {
      no_lease_records(LeaseAccess::decision(lease), store);
      Lease out = std::move(lease);
      recycle_async(std::move(c));
      done(std::move(out));
      return;
    }
    c->record = acquire_record(
        *key, c->ops, c->entries,
        c->adaptive ? std::span<const std::uint64_t>(c->epochs) : std::span<const std::uint64_t>(),
        c->slots, now);
  }
  c->done = std::move(done);
  if (c->ops.empty() && !c->durable) return complete_async(c.release(), true, nullptr);
  // The op points into the plan (keys, handles) and the context; the store reads it only
  // before apply_async returns. From here the context belongs to the completion.
  const Op op{.kind = OpKind::acquire,
              .ns = &ns,
              .group = plan->keys.back().entity,
              .now = now,
              .keys = plan->keys,
              .items = c->ops,
              .handles = plan->handles,
              .lease_id = c->id,
              .lease_expiry = c->expires_at,
              .report = options.with_stats,
              .lease_record = c->record.data,
              .lease_record_next = {},
              .lease_guard = false};
  AsyncAcquire* ctx = c.release();
  try {
    store.apply_async(op, ctx->results, [ctx](bool ok, std::exception_ptr error) noexcept {
      complete_async(ctx, ok, std::move(error));
    });
  } catch (...) {  // apply_async should report failures through the callback; it threw before
    complete_async(ctx, false, std::current_exception());  // taking it, so it never calls it
  }
}

void Limiter::try_acquire_async(std::string_view entity, std::string_view resource,
                                const Amounts& amounts, AcquireCallback done,
                                const AcquireOptions& options) {
  impl_->acquire_async(entity, resource, amounts, std::move(done), options,
                       /*respect_queue=*/true);
}

Lease Limiter::try_acquire(std::string_view entity, std::string_view resource,
                           const Amounts& amounts, const AcquireOptions& options) {
  return impl_->attempt(entity, resource, amounts, options, /*respect_queue=*/true);
}

// One request of a batch between the store's batch and its lease: what the op points at.
// Nothing in it points into the plan cache (the next request's plan replaces it).
struct Limiter::Impl::BatchItem : detail::AcquireParts {
  SmallVec<KeyParts> keys;  // into key's strings
  SmallVec<KeyHandle> handles;
};

namespace {
constexpr std::size_t kBatchOps = 64;  // requests per Store::apply_batch
}  // namespace

void Limiter::Impl::acquire_many(std::span<const AcquireRequest> requests,
                                 const AcquireOptions& options, std::span<Lease> out) {
  // This thread's items, made once (a nested call, from a store's apply_batch, gets its own).
  thread_local std::vector<BatchItem> t_items(kBatchOps);
  thread_local bool t_busy = false;
  std::vector<BatchItem> own;
  if (t_busy) own.resize(kBatchOps);
  std::vector<BatchItem>& items = t_busy ? own : t_items;
  struct Release {  // lets go of the lease keys (also when an exception leaves)
    std::vector<BatchItem>& items;
    bool took;
    ~Release() {
      for (BatchItem& it : items) it.key.reset();
      if (took) t_busy = false;
    }
  } release{items, !t_busy};
  t_busy = true;

  const Micros now = clock.now();  // one instant for the batch
  const Micros expires_at = now + (options.lease_ttl > 0 ? options.lease_ttl : opt.lease_ttl);
  std::array<Op, kBatchOps> ops;
  std::array<std::span<ItemResult>, kBatchOps> results;
  std::array<bool, kBatchOps> ok;
  std::array<std::exception_ptr, kBatchOps> errors;
  std::array<BatchItem*, kBatchOps> sent;
  for (std::size_t first = 0; first < requests.size(); first += kBatchOps) {
    const std::size_t n = std::min(kBatchOps, requests.size() - first);
    std::size_t nops = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const AcquireRequest& rq = requests[first + i];
      Lease& lease = out[first + i];
      const Plan* plan = prepare_acquire(lease, rq.entity, rq.resource, rq.amounts,
                                         /*respect_queue=*/true, now);
      if (plan == nullptr) continue;
      BatchItem& it = items[i];
      it.key = plan->lease_key.share();
      const LeaseKey* key = it.key.get();
      it.keys.clear();
      for (const std::string& e : key->entities) it.keys.push_back(KeyParts{e, key->resource});
      it.handles.assign(plan->handles.begin(), plan->handles.end());
      it.slots = acquire_items(*plan, it.ops, it.entries, it.rates, it.epochs,
                               [key](std::size_t j) { return &key->items[j].limit; });
      it.adaptive = plan->adaptive;
      it.id = it.slots ? next_lease_id() : 0;
      it.results.resize(it.ops.size());
      if (it.ops.empty()) {  // nothing to count (every amount 0)
        finish_acquire(lease, it.key, {}, {}, {}, {}, true, options.with_stats, false, 0,
                       expires_at);
        continue;
      }
      sent[nops] = &it;
      results[nops] = it.results;
      Op& op = ops[nops++];
      op.kind = OpKind::acquire;
      op.ns = &ns;
      op.group = it.keys.back().entity;
      op.now = now;
      op.keys = it.keys;
      op.items = it.ops;
      op.handles = it.handles;
      op.lease_id = it.id;
      op.lease_expiry = expires_at;
      op.report = options.with_stats;
    }
    if (nops == 0) continue;
    store.apply_batch(std::span(ops.data(), nops), std::span(results.data(), nops),
                      std::span(ok.data(), nops), std::span(errors.data(), nops));
    for (std::size_t j = 0; j < nops; ++j) {
      BatchItem& it = *sent[j];
      Lease& lease = out[first + static_cast<std::size_t>(&it - items.data())];
      if (errors[j]) {
        failed(LeaseAccess::decision(lease), errors[j]);
        errors[j] = nullptr;
        continue;
      }
      finish_acquire(lease, it.key, it.ops, it.entries, it.results,
                     it.adaptive ? std::span<const std::uint64_t>(it.epochs)
                                 : std::span<const std::uint64_t>(),
                     ok[j], options.with_stats, it.slots, it.id, expires_at);
    }
    for (std::size_t i = 0; i < n; ++i) items[i].key.reset();
  }
}

std::vector<Lease> Limiter::try_acquire_many(std::span<const AcquireRequest> requests,
                                             const AcquireOptions& options) {
  std::vector<Lease> out(requests.size());
  if (options.durable) {  // each writes its record: one by one
    for (std::size_t i = 0; i < requests.size(); ++i) {
      out[i] = impl_->attempt(requests[i].entity, requests[i].resource, requests[i].amounts,
                              options, /*respect_queue=*/true);
    }
    return out;
  }
  impl_->acquire_many(requests, options, out);
  return out;
}

Decision Limiter::consume(std::string_view entity, std::string_view resource,
                          const Amounts& amounts, const AcquireOptions& options) {
  Lease lease = impl_->attempt(entity, resource, amounts, options, /*respect_queue=*/true);
  lease.commit();  // frees a concurrency slot at once: consume() checks those limits only
  return std::move(LeaseAccess::decision(lease));
}

Lease Limiter::acquire(std::string_view entity, std::string_view resource, const Amounts& amounts,
                       std::chrono::microseconds timeout, const AcquireOptions& options) {
  Impl& im = *impl_;
  // Saturated: microseconds::max() ("forever") overflowed now + timeout into the past, so the
  // call timed out at once. 2^51 µs (~71 years) is forever enough and keeps every clock's
  // deadline arithmetic (nanosecond conversions included) in range.
  const Micros deadline = im.clock.now() + std::clamp<Micros>(timeout.count(), 0, kMaxExact / 4);
  const std::string qk = pair_key(entity, resource);
  WaitQueues::Waiter self;
  im.waits.enter(qk, self);
  auto leave = [&] { im.waits.leave(qk, self); };
  std::stop_callback on_stop(options.stop, [&] { im.waits.wake(self); });

  Decision last;
  for (;;) {
    const bool head = im.waits.at_head(qk, self);
    Micros wake_at = deadline;
    if (head) {
      Lease lease;
      try {
        lease = im.attempt(entity, resource, amounts, options, /*respect_queue=*/false);
      } catch (...) {  // never leave this frame's waiter in the queue
        leave();
        throw;
      }
      if (lease.allowed()) {
        leave();
        return lease;
      }
      last = lease.decision();
      if (waiting_cannot_help(last.code)) {
        leave();
        if (last.code == Code::unknown_limit || last.code == Code::invalid_argument) {
          throw ValidationError("amounts", std::string(to_string(last.code)), last.reason);
        }
        throw RateLimitExceeded(std::move(last));
      }
      if (last.retry_after > 0) wake_at = std::min(deadline, last.now + last.retry_after);
    }
    const Micros now = im.clock.now();
    const bool stopped = options.stop.stop_requested();
    if (now >= deadline || stopped) {
      leave();
      detail::end_of_wait(last, stopped ? Code::cancelled : Code::timeout, now);
      throw RateLimitExceeded(std::move(last));
    }
    im.waits.wait(self, im.clock, wake_at);
  }
}

Decision Limiter::decide(std::string_view entity, std::string_view resource,
                         const Amounts& amounts) {
  return impl_->planned_op(OpKind::decide, entity, resource, amounts);
}

Decision Limiter::record_usage(std::string_view entity, std::string_view resource,
                               const Amounts& amounts) {
  return impl_->planned_op(OpKind::record, entity, resource, amounts);
}

// decide (check, change nothing) or record (consume unconditionally), reporting every limit.
Decision Limiter::Impl::planned_op(OpKind kind, std::string_view entity, std::string_view resource,
                                   const Amounts& amounts) {
  Decision d;
  d.now = clock.now();
  const Plan& plan = plan_for(entity, resource, amounts, d.now);
  if (plan.error != Code::ok) {
    d.code = plan.error;
    d.reason = plan.error_reason;
    return d;
  }
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> entries;  // per op item: its plan entry
  SmallVec<RateParams> rates;
  rates.reserve(plan.entries.size());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    // Usage counted after the fact holds no slot. Every other limit is reported; the store
    // checks only positive amounts, so a limit the request does not touch cannot deny it.
    if (kind == OpKind::record && en.limit->kind() == LimitKind::concurrency) continue;
    OpItem& it = ops.emplace_back(OpItem{en.key, en.limit, en.amount, 0});
    if (en.aimd != nullptr) it.rate = &rates.emplace_back(adaptive_params(*en.limit, en.aimd));
    entries.push_back(i);
  }
  SmallVec<ItemResult> results(ops.size());
  bool ok = true;
  if (!ops.empty()) {
    const Op op{.kind = kind,
                .ns = &ns,
                .group = plan.keys.back().entity,
                .now = d.now,
                .keys = plan.keys,
                .items = ops,
                .handles = plan.handles,
                .lease_id = 0,
                .lease_expiry = 0,
                .report = true,
                .lease_record = {},
                .lease_record_next = {},
                .lease_guard = false};
    try {
      ok = store.apply(op, results) || kind == OpKind::record;
    } catch (const StoreUnavailable& e) {
      unavailable(d, e);
      return d;
    }
  }
  fill_decision(d, *plan.lease_key, ops, entries, results, ok, /*with_stats=*/true);
  return d;
}

void Limiter::reset(std::string_view entity, std::string_view resource) {
  const Micros now = impl_->clock.now();
  const auto snap = impl_->view(entity, resource, now, nullptr);
  Plan plan;
  resolve_chain(*snap, entity, resource, 0, plan);
  if (plan.error != Code::ok)
    throw ValidationError("resource", std::string(resource), plan.error_reason);
  SmallVec<OpItem> ops;
  for (const auto& en : plan.entries) ops.push_back(OpItem{en.key, en.limit, 0, 0});
  if (!ops.empty()) {
    SmallVec<ItemResult> results(ops.size());
    impl_->store.apply(
        report_op(OpKind::reset, impl_->ns, chain_root(*snap, entity, impl_->opt.max_parent_depth),
                  now, plan, ops),
        results);
  }
  impl_->waits.notify_all_heads();
}

void Limiter::reset_all() {
  impl_->store.reset_namespace(impl_->ns);
  impl_->waits.notify_all_heads();
}

// ---------------------------------------------------------------- stats

ResourceStats Limiter::stats(std::string_view entity, std::string_view resource) {
  ResourceStats out{std::string(entity), std::string(resource), {}};
  const Micros now = impl_->clock.now();
  const auto snap = impl_->view(entity, resource, now, nullptr);
  Plan plan;
  resolve_chain(*snap, entity, resource, impl_->opt.max_parent_depth, plan);
  if (plan.error != Code::ok)
    throw ValidationError("resource", std::string(resource), plan.error_reason);
  SmallVec<OpItem> ops;
  SmallVec<RateParams> rates;
  SmallVec<double> adaptive_rates(plan.entries.size(), 0.0);
  rates.reserve(plan.entries.size());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    OpItem& it = ops.emplace_back(OpItem{en.key, en.limit, 0, 0});
    if (en.limit->kind() == LimitKind::adaptive) {
      const auto ctl =
          impl_->aimd.controller(*en.limit, plan.keys[en.key].entity, resource, /*create=*/false);
      it.rate = &rates.emplace_back(adaptive_params(*en.limit, ctl.get(), &adaptive_rates[i]));
    }
  }
  SmallVec<ItemResult> results(ops.size());
  if (!ops.empty()) {
    impl_->store.apply(report_op(OpKind::read, impl_->ns, plan.keys.back().entity, now, plan, ops),
                       results);
  }
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    out.limits.push_back(
        status_of(plan.keys[en.key], *en.limit, en.source, results[i], adaptive_rates[i]));
  }
  return out;
}

std::vector<LimitStatus> Limiter::clamp(std::string_view entity, std::string_view resource,
                                        std::span<const StateClamp> clamps) {
  const Micros now = impl_->clock.now();
  const auto snap = impl_->view(entity, resource, now, nullptr);
  Plan plan;
  resolve_chain(*snap, entity, resource, 0, plan);  // the entity's own key only
  if (plan.error != Code::ok)
    throw ValidationError("resource", std::string(resource), plan.error_reason);
  SmallVec<OpItem> ops;
  SmallVec<std::size_t> which;
  SmallVec<RateParams> rates;
  rates.reserve(plan.entries.size());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    if (en.limit->kind() == LimitKind::concurrency) continue;
    for (const StateClamp& c : clamps) {
      if (c.limit != en.limit->name()) continue;
      if (c.available < 0 && c.until == 0) continue;
      OpItem& it = ops.emplace_back(
          OpItem{en.key, en.limit, c.available < 0 ? en.limit->capacity() : c.available, 0});
      it.until = c.until;
      if (en.limit->kind() == LimitKind::adaptive) {
        const auto ctl = impl_->aimd.controller(*en.limit, entity, resource, false);
        it.rate = &rates.emplace_back(adaptive_params(*en.limit, ctl.get()));
      }
      which.push_back(i);
      break;
    }
  }
  std::vector<LimitStatus> out;
  if (ops.empty()) return out;
  SmallVec<ItemResult> results(ops.size());
  impl_->store.apply(
      report_op(OpKind::clamp, impl_->ns, chain_root(*snap, entity, impl_->opt.max_parent_depth),
                now, plan, ops),
      results);
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const auto& en = plan.entries[which[j]];
    out.push_back(status_of(plan.keys[en.key], *en.limit, en.source, results[j]));
  }
  return out;
}

std::vector<ResourceStats> Limiter::all_stats(std::string_view entity) {
  std::vector<ResourceStats> out;
  for (const auto& r : resources()) out.push_back(stats(entity, r));
  return out;
}

std::size_t Limiter::waiting(std::string_view entity, std::string_view resource) const {
  return impl_->waits.size(pair_key(entity, resource));
}

}  // namespace admit
