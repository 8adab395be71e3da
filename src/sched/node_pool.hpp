// NodePool: recycles the storage of RequestNodes. A node is large (metadata, lease, outcome,
// handler), and a stream of them allocated and freed in bursts makes glibc coalesce the freed
// chunks into the heap top, trim it, and page-fault it back in on the next burst; keeping the
// storage of finished nodes avoids both the allocator and the faults. Thread-safe: submit()
// takes storage on the caller's thread, the strand gives it back.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <new>
#include <utility>

#include "node.hpp"

namespace admit::sched::detail {

class NodePool {
 public:
  /// Keeps the storage of at most `keep` finished nodes; more goes back to the allocator.
  explicit NodePool(std::size_t keep) : keep_(keep) {}
  ~NodePool() {
    while (free_ != nullptr) ::operator delete(std::exchange(free_, free_->next));
  }
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;

  template <class... Args>
  RequestNode* make(Args&&... args) {
    void* p = take();
    try {
      RequestNode* r = new (p) RequestNode(std::forward<Args>(args)...);
      live_.fetch_add(1, std::memory_order_relaxed);
      return r;
    } catch (...) {
      give(p);
      throw;
    }
  }

  void destroy(RequestNode* r) noexcept {
    r->~RequestNode();
    live_.fetch_sub(1, std::memory_order_relaxed);
    give(r);
  }

  /// Nodes made and not yet destroyed.
  std::size_t live() const { return live_.load(std::memory_order_relaxed); }

 private:
  struct Free {
    Free* next;
  };
  static_assert(sizeof(RequestNode) >= sizeof(Free));

  void* take() {
    {
      std::lock_guard g(mu_);
      if (free_ != nullptr) {
        --n_free_;
        return std::exchange(free_, free_->next);
      }
    }
    return ::operator new(sizeof(RequestNode));
  }

  void give(void* p) noexcept {
    {
      std::lock_guard g(mu_);
      if (n_free_ < keep_) {
        free_ = new (p) Free{free_};
        ++n_free_;
        return;
      }
    }
    ::operator delete(p);
  }

  std::mutex mu_;
  Free* free_ = nullptr;
  std::size_t n_free_ = 0;
  const std::size_t keep_;
  std::atomic<std::size_t> live_{0};
};

}  // namespace admit::sched::detail
