// FaultStore: the one test Store that injects faults. It wraps a MemoryStore (`inner`) and
//  - while `down` is set, throws StoreUnavailable(options.down_reason) from every op that
//    reaches the store (apply, answered async ops, reset_namespace, the config and audit
//    ops, learned state), the way an unreachable store does; `served` counts the ops that
//    reached `inner`;
//  - with options.defer_async, answers apply_async() later, on whichever thread the test
//    chooses, the way a networked store answers on its I/O thread: it copies the op when it
//    is called (as RedisStore encodes it) and queues it; run_one() / run_all() apply queued
//    ops to `inner` and call their callbacks, or start_io_thread() does so on a thread of its
//    own. Each run may instead report a failure (the exception the test passes), so store
//    outages can be placed between an op's start and its answer. Without defer_async,
//    apply_async() is Store's default (apply(), then the callback);
//  - while `throw_from_apply_async` is set, apply_async() throws it before taking the op.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/store.hpp"

namespace admit::test {

struct FaultStoreOptions {
  std::string name = "fault";  ///< what name() reports
  /// what capabilities() reports (the inner MemoryStore keeps durable lease records and an
  /// audit log)
  StoreCapabilities capabilities = {.leases = true, .audit = true};
  std::string down_reason = "fault: down";  ///< the StoreUnavailable's message while `down`
  bool defer_async = false;                 ///< queue apply_async() ops until the test answers them
};

/// Thread-safe. prepare(), open_namespace(), prune() and size() always go straight to `inner`.
class FaultStore final : public Store {
 public:
  MemoryStore inner;
  /// While set, ops that reach the store throw StoreUnavailable(options.down_reason).
  std::atomic<bool> down{false};
  /// Ops applied to `inner` (apply() calls and answered async ops that were not failed).
  std::atomic<std::uint64_t> served{0};
  /// apply_async() throws this (before queueing anything) while set; for callers' error paths.
  std::exception_ptr throw_from_apply_async;

  explicit FaultStore(FaultStoreOptions options = {}) : o_(std::move(options)) {}
  FaultStore(const FaultStore&) = delete;
  FaultStore& operator=(const FaultStore&) = delete;
  ~FaultStore() override {
    stop_io_thread();
    std::lock_guard g(mu_);
    // A callback never called is a bug of the test (its caller would wait forever).
    EXPECT_TRUE(queue_.empty()) << queue_.size() << " op(s) never answered";
  }

  bool apply(const Op& op, std::span<ItemResult> results) override {
    check_up();
    served.fetch_add(1);
    return inner.apply(op, results);
  }
  void apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done) override {
    if (throw_from_apply_async) std::rethrow_exception(throw_from_apply_async);
    if (!o_.defer_async) return Store::apply_async(op, results, std::move(done));
    auto p = std::make_unique<Pending>(op, results, std::move(done));
    {
      std::lock_guard g(mu_);
      queue_.push_back(std::move(p));
      ++queued_;
    }
    cv_.notify_all();
  }

  // ---- deferred answers (options.defer_async)

  /// Answers the oldest queued op: applied to `inner` (as apply() would), or failed with
  /// `failure` if given. @return false if nothing was queued.
  bool run_one(std::exception_ptr failure = nullptr) {
    std::unique_ptr<Pending> p;
    {
      std::lock_guard g(mu_);
      if (queue_.empty()) return false;
      p = std::move(queue_.front());
      queue_.pop_front();
    }
    answer(*p, std::move(failure));
    return true;
  }
  /// Answers every queued op (also those queued by the callbacks it runs). @return how many.
  std::size_t run_all(std::exception_ptr failure = nullptr) {
    std::size_t n = 0;
    while (run_one(failure)) ++n;
    return n;
  }
  /// Runs run_all() on a new thread and joins it: the callbacks run on another thread.
  std::size_t run_all_on_other_thread(std::exception_ptr failure = nullptr) {
    std::size_t n = 0;
    std::thread t([&] { n = run_all(failure); });
    t.join();
    return n;
  }

  /// Answers ops on a thread of the store's own, as they come, until stop_io_thread().
  void start_io_thread() {
    io_ = std::thread([this] {
      std::unique_lock lk(mu_);
      for (;;) {
        cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and every op answered
        std::unique_ptr<Pending> p = std::move(queue_.front());
        queue_.pop_front();
        lk.unlock();
        answer(*p, nullptr);
        lk.lock();
      }
    });
  }
  /// Answers what is queued, then stops and joins the I/O thread (if started).
  void stop_io_thread() {
    {
      std::lock_guard g(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (io_.joinable()) io_.join();
  }
  std::size_t pending() const {
    std::lock_guard g(mu_);
    return queue_.size();
  }
  /// apply_async() calls queued so far.
  std::size_t queued() const {
    std::lock_guard g(mu_);
    return queued_;
  }

  // ---- the rest of Store

  KeyHandle prepare(const Namespace& ns, const KeyParts& key) const override {
    return inner.prepare(ns, key);
  }
  Namespace open_namespace(std::string_view name) override { return inner.open_namespace(name); }
  void reset_namespace(const Namespace& ns) override {
    check_up();
    inner.reset_namespace(ns);
  }
  std::size_t prune(Micros now) override { return inner.prune(now); }
  std::size_t size() const override { return inner.size(); }
  StoreCapabilities capabilities() const override { return o_.capabilities; }
  std::string name() const override { return o_.name; }
  void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) override {
    check_up();
    inner.put_config(ns, key, value);
  }
  void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                  std::span<std::optional<std::string>> values) override {
    check_up();
    inner.get_config(ns, keys, values);
  }
  std::vector<ConfigEntry> list_config(const Namespace& ns) override {
    check_up();
    return inner.list_config(ns);
  }
  std::optional<LeaseRecord> get_lease(const Namespace& ns, std::string_view group,
                                       std::uint64_t lease_id, Micros now) override {
    check_up();
    return inner.get_lease(ns, group, lease_id, now);
  }
  std::uint64_t append_audit(const Namespace& ns, AuditEvent event) override {
    check_up();
    return inner.append_audit(ns, std::move(event));
  }
  std::vector<AuditEvent> read_audit(const Namespace& ns, const AuditQuery& query) override {
    check_up();
    return inner.read_audit(ns, query);
  }
  /// Learned state (reported only with capabilities().learned): `learned_writes` and
  /// `learned_reads` count the calls that reached the store.
  std::atomic<std::uint64_t> learned_writes{0};
  std::atomic<std::uint64_t> learned_reads{0};
  LearnedValue put_learned(const Namespace& ns, const LearnedKey& key, const LearnedValue& value,
                           Micros now) override {
    check_up();
    ++learned_writes;
    return inner.put_learned(ns, key, value, now);
  }
  std::vector<LearnedEntry> list_learned(const Namespace& ns, Micros now) override {
    check_up();
    ++learned_reads;
    return inner.list_learned(ns, now);
  }

 private:
  struct Pending {
    Pending(const Op& op, std::span<ItemResult> r, ApplyCallback d)
        : copy(op), results(r), done(std::move(d)) {}
    OwnedOp copy;
    std::span<ItemResult> results;
    ApplyCallback done;
  };

  void check_up() const {
    if (down.load()) throw StoreUnavailable(o_.down_reason);
  }

  void answer(Pending& p, std::exception_ptr failure) {
    bool ok = false;
    if (!failure) {
      try {
        ok = apply(p.copy.op(), p.results);
      } catch (...) {
        failure = std::current_exception();
      }
    }
    p.done(ok, std::move(failure));
  }

  const FaultStoreOptions o_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Pending>> queue_;
  std::size_t queued_ = 0;
  bool stopping_ = false;
  std::thread io_;
};

}  // namespace admit::test
