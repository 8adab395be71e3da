#include "plan.hpp"

#include "limiter_impl.hpp"

namespace admit {

namespace detail {

namespace {

constexpr std::size_t kMaxIdBytes = 256;

// Empties a plan (no keys, no entries, no error).
void clear_plan(Plan& plan) {
  plan.keys.clear();
  plan.handles.clear();
  plan.entries.clear();
  plan.unlimited.clear();
  plan.adaptive = false;
  plan.lease_key.reset();
  plan.error = Code::ok;
  plan.error_reason.clear();
}

}  // namespace

void resolve_chain(const Snapshot& snap, std::string_view entity, std::string_view resource,
                   int max_depth, Plan& plan) {
  clear_plan(plan);
  if (resource.empty() || resource.size() > kMaxIdBytes || entity.size() > kMaxIdBytes) {
    plan.error = Code::invalid_argument;
    plan.error_reason = "entity and resource must be at most 256 bytes; resource non-empty";
    return;
  }
  std::string_view e = entity;
  for (int depth = 0; depth <= max_depth; ++depth) {
    const Resolved r = resolve_in(snap, e, resource);
    const auto key = static_cast<std::uint16_t>(plan.keys.size());
    plan.keys.push_back(KeyParts{e, resource});
    if (r.limits != nullptr) {
      for (std::size_t i = 0; i < r.limits->size(); ++i) {
        const Limit& l = (*r.limits)[i];
        if (l.unlimited()) {
          plan.unlimited.push_back(&l);
        } else {
          plan.entries.push_back({key, &l, 0, r.source_of(i), nullptr});
        }
      }
    }
    e = parent_of(snap, e);
    if (e.empty()) break;
  }
}

std::string_view chain_root(const Snapshot& snap, std::string_view entity, int max_depth) {
  std::string_view e = entity;
  for (int depth = 0; depth < max_depth; ++depth) {
    const std::string_view p = parent_of(snap, e);
    if (p.empty()) break;
    e = p;
  }
  return e;
}

namespace {

// Sets each entry's amount from `amounts` (concurrency and adaptive limits default to 1) and
// checks them: negative, unknown name, or beyond the exact range is an error in plan.error.
void apply_amounts(const Amounts& amounts, std::string_view entity, std::string_view resource,
                   Plan& plan) {
  SmallVec<char> matched(amounts.size(), 0);  // amounts[i] named some limit
  for (auto& en : plan.entries) {
    const Limit& l = *en.limit;
    en.amount = l.kind() == LimitKind::concurrency || l.kind() == LimitKind::adaptive ? 1 : 0;
    std::size_t i = 0;
    for (const auto& a : amounts) {
      if (a.name == l.name()) {
        en.amount = a.value;
        matched[i] = 1;
      }
      ++i;
    }
  }
  for (const Limit* l : plan.unlimited) {
    std::size_t i = 0;
    for (const auto& a : amounts) {
      if (a.name == l->name()) matched[i] = 1;
      ++i;
    }
  }
  std::size_t i = 0;
  for (const auto& a : amounts) {
    if (a.value < 0) {
      plan.error = Code::invalid_argument;
      plan.error_reason = "amount of '" + a.name + "' is negative";
      return;
    }
    if (matched[i] == 0 && a.value != 0) {
      plan.error = Code::unknown_limit;
      plan.error_reason = "no limit named '" + a.name + "' applies to " + std::string(entity) +
                          " on " + std::string(resource);
      return;
    }
    ++i;
  }
  for (const auto& en : plan.entries) {
    if (en.amount > en.limit->max_amount()) {
      plan.error = Code::invalid_argument;
      plan.error_reason = "amount " + std::to_string(en.amount) + " of '" + en.limit->name() +
                          "' is beyond the exact range (" + std::to_string(en.limit->max_amount()) +
                          ")";
      return;
    }
  }
}

}  // namespace

}  // namespace detail

using detail::apply_amounts;
using detail::clear_plan;
using detail::LeaseKey;
using detail::Plan;
using detail::resolve_chain;
using detail::Snapshot;

// The plan of (entity, resource) with `amounts` applied. Plans are cached per thread and
// keyed by the config version, so a caller that uses the same key again resolves nothing
// and hashes nothing. The reference is valid until this thread's next call.
Plan& Limiter::Impl::plan_for(std::string_view entity, std::string_view resource,
                              const Amounts& amounts, Micros now) {
  struct Cache {
    std::uint64_t uid = 0;
    std::uint64_t version = 0;
    std::string entity;
    std::string resource;
    // The snapshot the plan points into (Limit*, parent names). Owned here: the TLS snapshot
    // slot can be evicted by other limiters' stats()/resolve() while this plan stays cached,
    // and a concurrent set_* would then free it under a cache hit (use-after-free).
    std::shared_ptr<const Snapshot> snap;
    Micros fresh_until = 0;  // ConfigMode::store: when the configuration must be read again
    Plan plan;
  };
  static thread_local Cache t_cache;
  Cache& c = t_cache;
  shared.refresh_if_due(now);  // AdaptationMode::store: one atomic load unless due
  const std::uint64_t version = config.version();
  if (c.uid != config.uid() || c.version != version || c.entity != entity ||
      c.resource != resource || c.plan.error != Code::ok || !(now < c.fresh_until)) {
    c.uid = config.uid();
    c.version = version;
    c.entity.assign(entity);
    c.resource.assign(resource);
    try {
      c.snap = view(c.entity, c.resource, now, &c.fresh_until);
    } catch (const Error& e) {  // ConfigMode::store: no configuration to resolve with
      clear_plan(c.plan);
      c.snap.reset();
      c.plan.error = dynamic_cast<const StoreUnavailable*>(&e) != nullptr ? Code::store_unavailable
                                                                          : Code::invalid_argument;
      c.plan.error_reason = e.what();
      return c.plan;
    }
    resolve_chain(*c.snap, c.entity, c.resource, opt.max_parent_depth, c.plan);
    for (const auto& k : c.plan.keys) c.plan.handles.push_back(store.prepare(ns, k));
    auto key = std::make_shared<LeaseKey>();
    key->resource = c.resource;
    for (const auto& k : c.plan.keys) key->entities.emplace_back(k.entity);
    for (auto& en : c.plan.entries) {
      std::shared_ptr<AimdLaw> ctl;
      if (en.limit->kind() == LimitKind::adaptive) {
        ctl = aimd.controller(*en.limit, c.plan.keys[en.key].entity, c.resource, true);
        en.aimd = ctl.get();
        c.plan.adaptive = true;
      }
      key->items.push_back({*en.limit, en.source, en.key, std::move(ctl)});
      key->shadow = key->shadow || en.limit->shadow();
    }
    c.plan.lease_key = std::move(key);
  }
  if (c.plan.error == Code::ok) apply_amounts(amounts, entity, resource, c.plan);
  return c.plan;
}

}  // namespace admit
