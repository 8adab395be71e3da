// RedisStore's group commit: fast-path ops (acquires and decides of rate and adaptive limits)
// of one lane (cluster: a hash slot; standalone: the server) share script runs. A Pending is
// one op on its way; Lanes counts the runs in flight per lane and queues the ops that wait for
// the next one. The runs themselves (send, deliver) are RedisStore::Impl's, in group_commit.cpp.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <semaphore>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "admit/store/store.hpp"

namespace admit::redis_store {

// At most this many ops per script run, and this many runs in flight per lane before ops
// queue for the next run.
inline constexpr std::size_t kMaxBatchOps = 64;
inline constexpr int kBatchesInFlight = 2;

// One fast-path op (see fast_path) on its way to the server in a script run (op 9): what the
// script needs of it, what its reply is read into, and how its caller learns the outcome.
// It owns all of that: an asynchronous caller's Op is gone once apply_async returns.
class Pending {
 public:
  struct Item {
    std::uint16_t key = 0;  // into keys
    std::string field;      // "s" + limit name
    std::int64_t amount = 0;
    std::int64_t capacity = 0;
    RateParams params;
    bool shadow = false;  // Limit::shadow: its refusal does not refuse the op
  };
  std::vector<std::string> keys;  // the op's Redis keys
  std::vector<Item> items;
  bool acquire = true;  // else decide
  bool report = false;
  Micros now = 0;                 // the caller's clock
  std::span<ItemResult> results;  // filled when answered, unless error
  bool ok = false;
  std::exception_ptr error;   // the run failed (or its reply made no sense)
  Store::ApplyCallback done;  // set: asynchronous, heap-allocated, deleted by answer()

  // Blocks until answer() (synchronous callers). A semaphore, not a condition variable: at
  // 64 threads its short spin before sleeping gave ~15 % more acquires/s in
  // bench/redis_bench.cpp.
  void wait() { answered.acquire(); }
  // Wakes wait(), or hands the outcome to `done` and deletes this. Either way the Pending
  // may be gone once it returns.
  void answer() {
    if (!done) {
      answered.release();
      return;
    }
    const Store::ApplyCallback cb = std::move(done);
    const bool result = ok;
    const std::exception_ptr e = std::move(error);
    delete this;
    cb(result, e);
  }

 private:
  std::binary_semaphore answered{0};
};

inline bool same_limit(const Pending::Item& x, const Pending::Item& y) {
  return x.field == y.field && x.capacity == y.capacity && x.params == y.params &&
         x.shadow == y.shadow;
}

// Per lane, the script runs in flight and the fast-path ops waiting for the next one.
class Lanes {
 public:
  // An op for `lane`: true when the lane has a run to spare (counted now: the caller sends
  // `p` at once), else false and `p` waits for the lane's next run.
  bool enter(Pending* p, std::uint16_t lane) {
    std::lock_guard g(mu_);
    Lane& l = lanes_[lane];
    if (l.in_flight >= kBatchesInFlight) {
      l.queue.push_back(p);
      return false;
    }
    ++l.in_flight;
    return true;
  }

  // The next run of a lane: up to kMaxBatchOps queued ops; none (and one run fewer in
  // flight) when nothing waits.
  std::vector<Pending*> take(std::uint16_t lane) {
    std::lock_guard g(mu_);
    Lane& l = lanes_[lane];
    const std::size_t n = std::min(l.queue.size(), kMaxBatchOps);
    if (n == 0) --l.in_flight;
    std::vector<Pending*> batch(l.queue.begin(), l.queue.begin() + static_cast<std::ptrdiff_t>(n));
    l.queue.erase(l.queue.begin(), l.queue.begin() + static_cast<std::ptrdiff_t>(n));
    return batch;
  }

 private:
  struct Lane {
    int in_flight = 0;
    std::deque<Pending*> queue;
  };
  std::mutex mu_;
  absl::flat_hash_map<std::uint16_t, Lane> lanes_;  // at most 16384 (one per slot)
};

}  // namespace admit::redis_store
