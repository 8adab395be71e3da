// admitd's pruner: a thread that calls Store::prune() every interval, so idle keys and the
// records of leases nobody committed or rolled back (orphaned leases, counted by
// Store::expired_leases()) leave a memory or SQLite store even when no new key arrives to
// trigger the store's own pruning. Redis needs none: it expires its keys by itself.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "admit/core/clock.hpp"
#include "admit/store/store.hpp"

namespace admit::service {

class Pruner {
 public:
  /// Starts the thread; the first prune runs one `interval` from now (on `clock`). The store
  /// and the clock must outlive the Pruner. interval <= 0: no thread, nothing is pruned.
  Pruner(Store& store, const Clock& clock, std::chrono::milliseconds interval);
  /// Stops the thread (a prune in progress finishes first).
  ~Pruner();
  Pruner(const Pruner&) = delete;
  Pruner& operator=(const Pruner&) = delete;

  /// Prunes that have run (each logs a JSON line if it threw). Thread-safe.
  std::uint64_t runs() const;

 private:
  void loop(Micros first);

  Store& store_;
  const Clock& clock_;
  const Micros interval_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::uint64_t runs_ = 0;
  std::thread thread_;
};

}  // namespace admit::service
