#include "service/pruner.hpp"

#include <boost/json.hpp>
#include <exception>

#include "common/log.hpp"

namespace admit::service {

Pruner::Pruner(Store& store, const Clock& clock, std::chrono::milliseconds interval)
    : store_(store),
      clock_(clock),
      interval_(std::chrono::duration_cast<std::chrono::microseconds>(interval).count()) {
  if (interval_ > 0)
    thread_ = std::thread([this, first = clock_.now() + interval_] { loop(first); });
}

Pruner::~Pruner() {
  {
    std::lock_guard g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t Pruner::runs() const {
  std::lock_guard g(mu_);
  return runs_;
}

void Pruner::loop(Micros next) {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (clock_.now() < next) {
      clock_.wait_until(lock, cv_, next);
      continue;
    }
    lock.unlock();
    try {
      (void)store_.prune(clock_.now());
    } catch (const std::exception& e) {  // StoreUnavailable (SQLite busy, disk full): next time
      log::json_line(log::Level::warn, {{"msg", "prune failed"}, {"error", e.what()}});
    }
    lock.lock();
    ++runs_;
    next = clock_.now() + interval_;
  }
}

}  // namespace admit::service
