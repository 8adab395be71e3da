#include "plan.hpp"

#include <cstring>

#include "limiter_impl.hpp"

namespace admit {

namespace detail {

namespace {

constexpr std::size_t kMaxIdBytes = 256;

std::uint64_t load8(const char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
std::uint32_t load4(const char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// a == b without a call to memcmp for up to 16 bytes (names, ids): two overlapping loads of
// fixed size, each within the strings. The plan cache compares three names per call.
bool same_bytes(std::string_view a, std::string_view b) {
  const std::size_t n = a.size();
  if (n != b.size()) return false;
  const char* x = a.data();
  const char* y = b.data();
  if (n >= 8) {
    if (n > 16) return std::memcmp(x, y, n) == 0;
    return ((load8(x) ^ load8(y)) | (load8(x + n - 8) ^ load8(y + n - 8))) == 0;
  }
  if (n >= 4) return ((load4(x) ^ load4(y)) | (load4(x + n - 4) ^ load4(y + n - 4))) == 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (x[i] != y[i]) return false;
  }
  return true;
}

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
  plan.match_valid = false;
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
          plan.entries.push_back({key, &l, 0, r.source_of(i), nullptr, l.max_amount()});
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

// Matches `amounts` to the plan's entries by name (an amount may name limits of several keys
// of the chain) and keeps the match in the plan for the next call with the same names.
void match_amounts(const Amounts& amounts, Plan& plan) {
  plan.match_names.clear();
  plan.match_named.assign(amounts.size(), 0);
  plan.match_amount.assign(plan.entries.size(), -1);
  std::size_t i = 0;
  for (const auto& a : amounts) {
    plan.match_names.emplace_back(a.name);
    for (std::size_t e = 0; e < plan.entries.size(); ++e) {
      if (a.name == plan.entries[e].limit->name()) {
        plan.match_amount[e] = static_cast<std::int32_t>(i);
        plan.match_named[i] = 1;
      }
    }
    for (const Limit* l : plan.unlimited) {
      if (a.name == l->name()) plan.match_named[i] = 1;
    }
    ++i;
  }
  plan.match_valid = true;
}

// Whether `amounts` names what the plan's kept match was made for, in the same order.
bool same_names(const Amounts& amounts, const Plan& plan) {
  if (!plan.match_valid || plan.match_names.size() != amounts.size()) return false;
  const std::string* n = plan.match_names.data();
  for (const auto& a : amounts) {
    if (!same_bytes(a.name, *n++)) return false;
  }
  return true;
}

// The error of amounts that apply_amounts refused, in plan.error (out of the hot path).
[[gnu::cold, gnu::noinline]] void amounts_error(const Amounts& amounts, std::string_view entity,
                                                std::string_view resource, Plan& plan) {
  std::size_t i = 0;
  for (const auto& a : amounts) {
    if (a.value < 0) {
      plan.error = Code::invalid_argument;
      plan.error_reason = "amount of '" + a.name + "' is negative";
      return;
    }
    if (plan.match_named[i] == 0 && a.value != 0) {
      plan.error = Code::unknown_limit;
      plan.error_reason = "no limit named '" + a.name + "' applies to " + std::string(entity) +
                          " on " + std::string(resource);
      return;
    }
    ++i;
  }
  for (const auto& en : plan.entries) {
    if (en.amount > en.max_amount) {
      plan.error = Code::invalid_argument;
      plan.error_reason = "amount " + std::to_string(en.amount) + " of '" + en.limit->name() +
                          "' is beyond the exact range (" + std::to_string(en.max_amount) + ")";
      return;
    }
  }
}

// Sets each entry's amount from `amounts` (concurrency and adaptive limits default to 1) and
// checks them: negative, unknown name, or beyond the exact range is an error in plan.error
// (amounts_error: the first negative or unknown amount in the amounts' order, else the first
// entry beyond its range).
void apply_amounts(const Amounts& amounts, std::string_view entity, std::string_view resource,
                   Plan& plan) {
  if (!same_names(amounts, plan)) match_amounts(amounts, plan);
  bool bad = false;
  std::size_t i = 0;
  for (const auto& a : amounts) {
    bad = bad || a.value < 0 || (plan.match_named[i] == 0 && a.value != 0);
    ++i;
  }
  const auto first = amounts.begin();
  for (std::size_t e = 0; e < plan.entries.size(); ++e) {
    auto& en = plan.entries[e];
    const std::int32_t k = plan.match_amount[e];
    if (k >= 0) {
      en.amount = (first + k)->value;
    } else {
      const LimitKind kind = en.limit->kind();
      en.amount = kind == LimitKind::concurrency || kind == LimitKind::adaptive ? 1 : 0;
    }
    bad = bad || en.amount > en.max_amount;
  }
  if (bad) amounts_error(amounts, entity, resource, plan);
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

    // References to the plan's key that the thread bought in advance go back first.
    ~Cache() { detail::KeyRef::bias(nullptr); }
  };
  static thread_local Cache t_cache;
  Cache& c = t_cache;
  shared.refresh_if_due(now);  // AdaptationMode::store: one atomic load unless due
  const std::uint64_t version = config.version();
  if (c.uid != config.uid() || c.version != version || !detail::same_bytes(c.entity, entity) ||
      !detail::same_bytes(c.resource, resource) || c.plan.error != Code::ok ||
      !(now < c.fresh_until)) {
    detail::KeyRef::bias(nullptr);  // the plan's key is let go below (clear_plan)
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
    // A new key's state is likely out of the cache: fetch it while the rest is built.
    for (const auto& en : c.plan.entries) store.prefetch(c.plan.handles[en.key], *en.limit);
    auto key = std::make_unique<LeaseKey>();
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
    c.plan.lease_key = detail::KeyRef::adopt(key.release());
    detail::KeyRef::bias(c.plan.lease_key.get());
  }
  if (c.plan.error == Code::ok) apply_amounts(amounts, entity, resource, c.plan);
  return c.plan;
}

}  // namespace admit
