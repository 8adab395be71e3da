// FairQueue: start-time fair queueing across tenants; see fair_queue.hpp.
#include "fair_queue.hpp"

#include <algorithm>

namespace admit::sched::detail {

FairQueue::~FairQueue() {
  // Unlink before the flows (and their hooks) go away; the nodes belong to the Core.
  active_.clear();
  for (auto& [name, f] : flows_) f->items.clear();
}

Flow& FairQueue::flow(std::string_view tenant, double weight) {
  auto it = flows_.find(absl::string_view(tenant.data(), tenant.size()));
  if (it == flows_.end()) {
    auto f = std::make_unique<Flow>();
    f->tenant = std::string(tenant);
    f->id = next_flow_id_++;
    it = flows_.emplace(f->tenant, std::move(f)).first;
  }
  it->second->weight = weight;
  return *it->second;
}

void FairQueue::retag(Flow& f, double start) {
  if (f.active_hook.is_linked()) active_.erase(active_.iterator_to(f));
  if (f.items.empty()) return;
  f.head_start = start;
  f.head_finish = start + f.items.begin()->cost / f.weight;
  active_.insert(f);
}

void FairQueue::push(RequestNode& r, Flow& f) {
  r.flow = &f;
  const bool was_idle = f.items.empty();
  const RequestNode* old_head = was_idle ? nullptr : &*f.items.begin();
  f.items.insert(r);
  ++size_;
  if (was_idle) {
    retag(f, std::max(vtime_, f.last_finish));
  } else if (&*f.items.begin() != old_head) {
    retag(f, f.head_start);  // a higher priority overtook the head: same start, new size
  }
}

RequestNode* FairQueue::head() {
  if (active_.empty()) return nullptr;
  return &*active_.begin()->items.begin();
}

void FairQueue::serve(RequestNode& r) {
  Flow& f = *r.flow;
  vtime_ = std::max(vtime_, f.head_start);
  f.last_finish = f.head_start + r.cost / f.weight;
  f.items.erase(f.items.iterator_to(r));
  --size_;
  retag(f, std::max(vtime_, f.last_finish));
}

void FairQueue::remove(RequestNode& r) {
  Flow& f = *r.flow;
  const bool was_head = &*f.items.begin() == &r;
  f.items.erase(f.items.iterator_to(r));
  --size_;
  if (was_head) retag(f, f.head_start);
}

}  // namespace admit::sched::detail
