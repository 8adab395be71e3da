// Durable leases (AcquireOptions::durable): the record an acquire writes with its usage, and
// Limiter::resume, which takes a lease up again from its record in any process on the store.
// The record's format and the token are lease_record.cpp's; the guarded ops that keep the
// record in step with the lease are lease_ops.cpp's.
#include <string>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "lease_key.hpp"
#include "lease_record.hpp"
#include "limiter_impl.hpp"

namespace admit {

using detail::LeaseAccess;
using detail::LeaseKey;

Limiter::Impl::DurableRecord Limiter::Impl::acquire_record(const LeaseKey& key,
                                                           std::span<const OpItem> ops,
                                                           std::span<const std::size_t> entries,
                                                           std::span<const std::uint64_t> epochs,
                                                           bool slots, Micros now) {
  DurableRecord r;
  r.held.resize(key.items.size());
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const std::size_t i = entries[j];
    const Limit& l = key.items[i].limit;
    r.held[i].consumed = ops[j].amount;
    if (l.kind() == LimitKind::window) r.held[i].window_end = l.window_at(now).end;
  }
  for (std::size_t i = 0; i < epochs.size() && i < key.items.size(); ++i) {
    if (key.items[i].aimd) r.held[i].window_end = static_cast<Micros>(epochs[i]);
  }
  r.data = detail::encode_lease_record(key, r.held, slots);
  return r;
}

bool Limiter::Impl::make_durable(Lease& lease, DurableRecord record) {
  // The lease holds exactly what its record says (windows as the caller's clock put them),
  // except on the shadow limits that refused: the store did not charge them, the acquire left
  // their holdings at 0 (finish_acquire), and the record the store keeps says otherwise until
  // it is rewritten. Nobody else can take the lease up before that: its token is not out yet
  // (if the process dies first, the lease only expires, which commits and refunds nothing).
  bool stale = false;
  for (std::size_t i = 0; i < record.held.size(); ++i) {
    LeaseAccess::Held& h = LeaseAccess::held(lease, i);
    if (h.consumed == 0 && record.held[i].consumed != 0) {
      stale = true;
    } else {
      h = {record.held[i].consumed, record.held[i].window_end};
    }
  }
  LeaseAccess::set_record(lease, std::move(record.data));
  return stale;
}

Lease Limiter::resume(std::string_view token) {
  const std::optional<detail::ParsedToken> t = detail::parse_lease_token(token);
  if (!t) throw ValidationError("lease_id", std::string(token), "is not a lease token");
  Impl& im = *impl_;
  const Micros now = im.clock.now();
  std::optional<LeaseRecord> rec = im.store.get_lease(im.ns, t->group, t->id, now);
  if (!rec) {
    throw LeaseNotFound("lease " + std::string(token) +
                        " is not held (ended, expired or never acquired here)");
  }
  std::optional<detail::DecodedRecord> d = detail::decode_lease_record(rec->data);
  if (!d || d->key->entities.back() != t->group) {
    throw LeaseNotFound("lease " + std::string(token) +
                        ": its record was written by an incompatible version");
  }
  LeaseKey& key = *d->key;
  for (auto& it : key.items) {
    if (it.limit.kind() == LimitKind::adaptive) {
      it.aimd = im.aimd.controller(it.limit, key.entities[it.key], key.resource, true);
    }
  }
  Lease lease;
  Decision& dec = LeaseAccess::decision(lease);
  dec.now = now;
  dec.allowed = true;
  dec.code = Code::ok;
  LeaseAccess::hold(lease, t->id, d->slots, rec->expiry, detail::KeyRef::adopt(d->key.release()));
  for (std::size_t i = 0; i < d->held.size(); ++i) {
    LeaseAccess::held(lease, i) = {d->held[i].consumed, d->held[i].window_end};
  }
  LeaseAccess::set_record(lease, std::move(rec->data));
  LeaseAccess::activate(lease, this);
  return lease;
}

}  // namespace admit
