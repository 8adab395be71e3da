// Adaptive limits: one AIMD control law per (entity, resource, limit), made on first use and
// replaced when the limit's settings change. Leases of the key share it (LeaseKey::Item::aimd).
// With shared adaptation (AdaptationMode::store, shared_adaptation.hpp) each law also keeps
// where it stands with the store: the fleet's generation of decreases it has reached and what
// it last wrote or took over; the rates every process wrote are taken over by the laws here
// (AimdLaw::adopt), by laws made later too.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/aimd.hpp"
#include "admit/core/limit.hpp"
#include "admit/store/learned.hpp"

namespace admit::detail {

class AimdRegistry {
 public:
  // The control law of limit `l` of (entity, resource); nullptr if none yet and !create. A law
  // made here starts at the rate the fleet wrote for its key, if one was read (shared()).
  std::shared_ptr<AimdLaw> controller(const Limit& l, std::string_view entity,
                                      std::string_view resource, bool create);

  // Every control law's key and current rate (units per second), then the rates the fleet
  // wrote for keys without a law here (shared()).
  struct Rate {
    std::string entity;
    std::string resource;
    std::string limit;
    double rate = 0;
  };
  std::vector<Rate> rates() const;

  // ---- shared adaptation ----
  //
  // A law's entry in the store (LearnedKind::rate): version = the generation, the number of
  // decreases the fleet made (a decrease here writes one more than the generation the law is
  // at), rank = the rate in millionths, value = the rate as text. The store keeps the
  // greatest (generation, rate): a decrease, of a newer generation, is never undone by an
  // increase made before it was seen; within a generation rates only grow, so the highest
  // is the furthest along. Concurrent decreases of one generation by several processes (one
  // overload seen by all) count as one, as a law counts the failures of one epoch once.

  // One law's state to write.
  struct Write {
    std::string entity;
    std::string resource;
    std::string limit;
    LearnedValue value;
    std::shared_ptr<AimdLaw> law;  // the law it was read from (it may be replaced meanwhile)
    std::uint64_t epoch = 0;       // the law's epoch then
    double rate = 0;               // its rate then
  };
  // The laws to write at `now`: decreased or changed since they last wrote or took over, or
  // not written for `renew_after` (so their entry does not expire while they are used); each
  // value expiring at `expires_at`.
  std::vector<Write> changes(Micros now, Micros renew_after, Micros expires_at) const;
  // The store answered `stored` (the winner) to `w`: the law is at w's generation now and
  // takes over the winner if it is another's.
  void written(const Write& w, const LearnedValue& stored, Micros now);
  // The rate entries of the store, all of them (list_learned's): each law takes over its
  // key's when it is newer than what the law has; the others are kept for laws made later
  // and for rates().
  void shared(const std::vector<LearnedEntry>& rates, Micros now);

  static LearnedValue rate_value(std::uint64_t generation, double rate, Micros expires_at);
  static double rate_of(const LearnedValue& v);

 private:
  struct Adaptive {
    Limit limit;
    std::shared_ptr<AimdLaw> ctl;
    std::string entity;
    std::string resource;
    // Shared adaptation:
    std::uint64_t generation = 0;    // the fleet's decreases this law has reached
    std::uint64_t synced_epoch = 0;  // the law's epoch when it last wrote or took over
    double synced_rate = -1;         // the rate that needs no write (-1: never synced)
    Micros synced_at = 0;            // when it last wrote or took over
  };
  static std::string key_of(std::string_view entity, std::string_view resource,
                            std::string_view limit);
  // `a` takes over `v` if it is newer than what `a` has (mu_ held).
  static void take_over(Adaptive& a, const LearnedValue& v, Micros now);

  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Adaptive> controllers_;
  absl::flat_hash_map<std::string, LearnedEntry> shared_;  // the store's rate entries, by key
};

}  // namespace admit::detail
