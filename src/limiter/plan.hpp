// Plans: one resolved call, the keys of the entity's chain and one entry per limit that
// applies, built from a configuration Snapshot (resolve_chain), with a call's amounts matched
// to its limits (apply_amounts), and the items of an acquire over it (acquire_items). The
// per-thread plan cache is Limiter::Impl::plan_for (plan.cpp).
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "admit/amounts.hpp"
#include "admit/core/aimd.hpp"
#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/store/store.hpp"
#include "config_snapshot.hpp"
#include "lease_key.hpp"

namespace admit::detail {

template <class T>
using SmallVec = boost::container::small_vector<T, 4>;

// One resolved call: the keys of the chain and one entry per limit.
struct Plan {
  struct Entry {
    std::uint16_t key = 0;
    const Limit* limit = nullptr;
    std::int64_t amount = 0;
    ConfigSource source = ConfigSource::system;
    AimdLaw* aimd = nullptr;      // adaptive limits (plan cache: owned by lease_key)
    std::int64_t max_amount = 0;  // limit->max_amount(), read once per resolution
  };
  SmallVec<KeyParts> keys;
  SmallVec<KeyHandle> handles;  // the store's prepared keys (plan cache only)
  SmallVec<Entry> entries;
  SmallVec<const Limit*> unlimited;  // named limits that are 0 = unlimited (never stored)
  bool adaptive = false;             // some entry has an AIMD law (plan cache only)
  KeyRef lease_key;  // plan cache only: shared by its leases (the thread's KeyRef::bias)
  Code error = Code::ok;
  std::string error_reason;
  // The last call's amounts matched to the entries (apply_amounts), kept while the next
  // call's amounts carry the same names in the same order: then amounts go to entries by
  // index, with no name compared beyond one equality per amount.
  SmallVec<std::string> match_names;    // the amounts' names, in order
  SmallVec<std::int32_t> match_amount;  // per entry: the amount naming it, -1 if none
  SmallVec<char> match_named;           // per amount: it names some limit of the chain
  bool match_valid = false;
};

// Resolves the chain of keys and every limit that applies (amounts 0).
void resolve_chain(const Snapshot& snap, std::string_view entity, std::string_view resource,
                   int max_depth, Plan& plan);

// The placement group of the chain of `entity` (Op::group): its root, as far as a chain of
// `max_depth` parents reaches (the last key resolve_chain would make).
std::string_view chain_root(const Snapshot& snap, std::string_view entity, int max_depth);

// The items of an acquire over `plan`: one per entry with an amount (the others are not sent),
// the item for entry i pointing at limit_of(i) (that entry's limit or a copy of it); adaptive
// entries at their controller's rate now, its epoch in epochs[i]. Fills `entries` with each
// item's entry. @return whether some item takes a concurrency slot.
template <class Ops, class Entries, class Rates, class Epochs, class LimitOf>
bool acquire_items(const Plan& plan, Ops& ops, Entries& entries, Rates& rates, Epochs& epochs,
                   LimitOf&& limit_of) {
  ops.clear();
  entries.clear();
  rates.clear();
  if (plan.adaptive) {
    rates.reserve(plan.entries.size());
    epochs.resize(plan.entries.size());
  }
  bool slots = false;
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const auto& en = plan.entries[i];
    if (en.amount == 0) continue;
    OpItem& it = ops.emplace_back(OpItem{en.key, limit_of(i), en.amount, 0});
    if (en.aimd != nullptr) {
      const AimdState st = en.aimd->state();  // rate and epoch of one instant
      epochs[i] = st.epoch;
      it.rate = &rates.emplace_back(en.limit->rate_at(st.rate));
    }
    entries.push_back(i);
    slots = slots || en.limit->kind() == LimitKind::concurrency;
  }
  return slots;
}

}  // namespace admit::detail
