// FairQueue: the requests of one bucket, shared among tenants by start-time fair queueing
// (SFQ). Each tenant is a flow; its head request gets a start tag max(V, the flow's last
// finish) and a finish tag start + tokens / weight; the flow with the smallest finish tag goes
// next and V moves to the served start tag. Backlogged tenants thus receive tokens in
// proportion to their weights whatever their request sizes, a tenant that was idle starts at
// V (no credit saved up, no penalty), and within a tenant higher priority goes first (FIFO
// among equals). Tags are given to heads only, so priorities can reorder a flow freely.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <absl/strings/string_view.h>

#include <boost/intrusive/set.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "node.hpp"

namespace admit::sched::detail {

struct ByPriority {
  bool operator()(const RequestNode& a, const RequestNode& b) const {
    if (a.meta.priority != b.meta.priority) return a.meta.priority > b.meta.priority;
    return a.seq < b.seq;
  }
};

struct Flow {
  SetHook active_hook;  // in FairQueue::active_ while it has requests
  std::string tenant;
  double weight = 1;
  std::uint64_t id = 0;  // ties between equal finish tags: the older flow first
  double last_finish = 0;
  double head_start = 0;
  double head_finish = 0;
  bi::multiset<RequestNode, bi::member_hook<RequestNode, SetHook, &RequestNode::flow_hook>,
               bi::compare<ByPriority>>
      items;
};

class FairQueue {
 public:
  FairQueue() = default;
  ~FairQueue();
  FairQueue(const FairQueue&) = delete;
  FairQueue& operator=(const FairQueue&) = delete;

  /// The flow of `tenant`, made with `weight` if new (an existing flow takes the new weight
  /// for the tags it computes from now on).
  Flow& flow(std::string_view tenant, double weight);

  void push(RequestNode& r, Flow& f);
  /// The request to serve next, or nullptr.
  RequestNode* head();
  /// `r` (queued here, usually head()) is served: V and its flow's tags move on.
  void serve(RequestNode& r);
  /// `r` leaves without being served (timeout, overflow, breaker): no tag moves.
  void remove(RequestNode& r);

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  double virtual_time() const { return vtime_; }

 private:
  struct ByFinish {
    bool operator()(const Flow& a, const Flow& b) const {
      if (a.head_finish != b.head_finish) return a.head_finish < b.head_finish;
      return a.id < b.id;
    }
  };
  void retag(Flow& f, double start);  // (re)computes f's head tags and its place in active_

  double vtime_ = 0;
  std::size_t size_ = 0;
  std::uint64_t next_flow_id_ = 0;
  absl::flat_hash_map<std::string, std::unique_ptr<Flow>> flows_;
  bi::multiset<Flow, bi::member_hook<Flow, SetHook, &Flow::active_hook>, bi::compare<ByFinish>>
      active_;
};

}  // namespace admit::sched::detail
