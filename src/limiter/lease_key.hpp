// What a Lease refers to (LeaseKey: the key chain and copies of its limits, shared by the
// leases of one plan) and the Limiter's access to a Lease's private state (LeaseAccess).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "admit/core/aimd.hpp"
#include "admit/core/decision.hpp"
#include "admit/core/limit.hpp"
#include "admit/lease.hpp"

namespace admit::detail {

/// What a lease needs to reach its state again: the key chain and a copy of every limit.
/// Immutable and shared by all leases of one (entity, resource) taken by one thread, so an
/// acquire copies one pointer instead of strings and limits.
struct LeaseKey {
  struct Item {
    Limit limit;
    ConfigSource source = ConfigSource::resource;
    std::uint16_t key = 0;          // index into entities
    std::shared_ptr<AimdLaw> aimd;  // adaptive limits: the key's control law
  };
  std::string resource;
  std::vector<std::string> entities;  // requester, then ancestors
  std::vector<Item> items;
  bool shadow = false;  ///< some item's limit is shadow (Limit::shadow)
  /// References (KeyRef): made with new and a count of 1 (KeyRef::adopt), deleted at 0.
  mutable std::atomic<std::int64_t> refs{1};
  /// Durable leases: this key as their records write it (lease_record.cpp), made on first use.
  mutable std::atomic<std::shared_ptr<const std::string>> record_json;
};

/// The Limiter's side of a Lease: the only code besides Lease that reads or sets its private
/// members (Lease befriends this struct).
struct LeaseAccess {
  using Held = Lease::Held;
  static Decision& decision(Lease& l) { return l.decision_; }
  static const KeyRef& key(const Lease& l) { return l.key_; }
  static Held& held(Lease& l, std::size_t i) { return l.held_[i]; }
  static std::uint64_t id(const Lease& l) { return l.id_; }
  static Micros expires_at(const Lease& l) { return l.expires_at_; }
  static void set_expires_at(Lease& l, Micros at) { l.expires_at_ = at; }
  static bool slots(const Lease& l) { return l.holds_slots_; }
  /// A durable lease's record (nullptr otherwise); set_record makes a lease durable.
  static std::string* record(const Lease& l) { return l.record_.get(); }
  static void set_record(Lease& l, std::string record) {
    l.record_ = std::make_unique<std::string>(std::move(record));
  }

  /// Makes `l` hold what an allowed acquire consumed: `held_count` entries (value-initialised,
  /// set through held()), then active once `limiter` is set by activate().
  static void hold(Lease& l, std::uint64_t id, bool slots, Micros expires_at, const KeyRef& key) {
    l.id_ = id;
    l.holds_slots_ = slots;
    l.expires_at_ = expires_at;
    l.key_ = key.share();
    l.held_.reset(key->items.size());
  }
  static void activate(Lease& l, Limiter* limiter) { l.limiter_ = limiter; }
  /// Ends `l` without telling the store (an asynchronous end told it already).
  static void deactivate(Lease& l) { l.limiter_ = nullptr; }
};

}  // namespace admit::detail
