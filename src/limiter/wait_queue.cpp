#include "wait_queue.hpp"

#include <algorithm>

namespace admit::detail {

std::size_t WaitQueues::size(const std::string& key) const {
  std::lock_guard g(mu_);
  auto q = queues_.find(key);
  return q == queues_.end() ? 0 : q->second.size();
}

void WaitQueues::enter(const std::string& key, Waiter& w) {
  std::lock_guard g(mu_);
  queues_[key].push_back(&w);
  waiters_.fetch_add(1, std::memory_order_acq_rel);
}

void WaitQueues::leave(const std::string& key, Waiter& w) {
  std::lock_guard g(mu_);
  auto q = queues_.find(key);
  if (q == queues_.end()) return;
  auto& dq = q->second;
  const bool was_head = !dq.empty() && dq.front() == &w;
  dq.erase(std::find(dq.begin(), dq.end(), &w));
  waiters_.fetch_sub(1, std::memory_order_acq_rel);
  if (dq.empty()) {
    queues_.erase(q);
  } else if (was_head) {
    signal(*dq.front());
  }
}

bool WaitQueues::at_head(const std::string& key, Waiter& w) {
  std::lock_guard g(mu_);
  w.notified = false;
  return queues_[key].front() == &w;
}

void WaitQueues::wake(Waiter& w) {
  std::lock_guard g(mu_);
  signal(w);
}

void WaitQueues::signal(Waiter& w) {
  w.notified = true;
  if (w.on_wake) {
    w.on_wake();
  } else {
    w.cv.notify_all();
  }
}

void WaitQueues::wait(Waiter& w, const Clock& clock, Micros until) {
  std::unique_lock lk(mu_);
  if (!w.notified) clock.wait_until(lk, w.cv, until);
}

void WaitQueues::notify_all_heads() {
  if (waiters_.load(std::memory_order_acquire) == 0) return;
  std::lock_guard g(mu_);
  for (auto& [k, q] : queues_) {
    if (!q.empty()) signal(*q.front());
  }
}

}  // namespace admit::detail
