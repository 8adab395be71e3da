// Store::apply from tests, below the Limiter: build an Op and collect its results.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "admit/store/store.hpp"

namespace admit::test {

/// An Op by member assignment (robust to fields added later; no -Wmissing-field-initializers).
inline Op make_op(OpKind kind, const Namespace& ns, Micros now, std::span<const KeyParts> keys,
                  std::span<const OpItem> items, std::uint64_t lease = 0, Micros expiry = 0) {
  Op op;
  op.kind = kind;
  op.ns = &ns;
  op.now = now;
  op.keys = keys;
  op.items = items;
  op.lease_id = lease;
  op.lease_expiry = expiry;
  return op;
}

/// What one Store::apply returned, with its per-item results.
struct Applied {
  bool ok = false;
  std::vector<ItemResult> items;
};

/// Applies one op to `store` (keys and items as given) and returns its results.
inline Applied apply_op(Store& store, const Namespace& ns, OpKind kind, Micros now,
                        const std::vector<KeyParts>& keys, const std::vector<OpItem>& items,
                        std::uint64_t lease = 0, Micros expiry = 0) {
  Applied a;
  a.items.resize(items.size());
  a.ok = store.apply(make_op(kind, ns, now, keys, items, lease, expiry), a.items);
  return a;
}

}  // namespace admit::test
