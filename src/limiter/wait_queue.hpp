// The FIFO wait queues of Limiter::acquire() and acquire_async(), one per (entity, resource):
// only the head of a queue tries; try_acquire() says queue_ahead while someone waits on its
// key; capacity coming back (a release, a refund, a reset) wakes every head. A blocked caller
// is woken through its condition variable, an asynchronous one through its on_wake.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "admit/core/clock.hpp"
#include "pair_key.hpp"

namespace admit::detail {

class WaitQueues {
 public:
  struct Waiter {
    std::condition_variable cv;
    bool notified = false;  // guarded by the queues' mutex
    // Set for an asynchronous waiter: called instead of notifying cv, under the queues'
    // mutex, so it must only schedule work (post), never call back into the queues.
    std::function<void()> on_wake;
  };

  // Callers waiting on (entity, resource); quick when nobody waits on any key.
  std::size_t ahead(std::string_view entity, std::string_view resource) const {
    if (waiters_.load(std::memory_order_acquire) == 0) return 0;
    return size(pair_key(entity, resource));
  }
  // Callers waiting on `key` (a pair_key).
  std::size_t size(const std::string& key) const;

  // Queues `w` at the end of `key`'s queue.
  void enter(const std::string& key, Waiter& w);
  // Takes `w` out of `key`'s queue; the next waiter is woken if `w` was the head.
  void leave(const std::string& key, Waiter& w);
  // Whether `w` heads `key`'s queue; clears w.notified (a wake-up before this is consumed).
  bool at_head(const std::string& key, Waiter& w);
  // Wakes `w` (e.g. cancelled).
  void wake(Waiter& w);
  // Blocks until `w` is woken or `clock` reaches `until`, unless it was woken since at_head().
  void wait(Waiter& w, const Clock& clock, Micros until);
  // Wakes the head of every queue: capacity came back somewhere.
  void notify_all_heads();

 private:
  mutable std::mutex mu_;
  static void signal(Waiter& w);  // under mu_

  absl::flat_hash_map<std::string, std::deque<Waiter*>> queues_;  // FIFO per pair_key
  std::atomic<std::size_t> waiters_{0};
};

}  // namespace admit::detail
