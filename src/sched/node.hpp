// The scheduler's internal records: a request (RequestNode) and an entry of the timeline
// (Timed). Nodes live in intrusive containers (a tenant's flow, the global FIFO, the
// timeline), so queueing a request allocates nothing beyond the node itself.
#pragma once

#include <atomic>
#include <boost/intrusive/set.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "admit/lease.hpp"
#include "admit/sched/request.hpp"
#include "admit/sched/scheduler.hpp"

namespace admit::sched::detail {

namespace bi = boost::intrusive;
// safe_link: is_linked() tells whether a node is in a container (unlinking is idempotent).
using SetHook = bi::set_member_hook<bi::link_mode<bi::safe_link>>;

struct BucketQueue;
struct Flow;

/// One entry of the timeline: something to do at `when`.
struct Timed {
  enum class Kind : std::uint8_t { deadline, retry, unblock };
  SetHook hook;
  Micros when = 0;
  Kind kind = Kind::deadline;
  void* owner = nullptr;  // the RequestNode (deadline, retry) or BucketQueue (unblock)
};

struct RequestNode {
  // replied: its attempt's outcome is in, on_reply decides what comes next (finish frees it).
  enum class State : std::uint8_t { queued, acquiring, running, replied, delayed, done };

  // `done` is move-constructed, never move-assigned (see SubmitHandler).
  RequestNode(RequestMetadata&& m, RequestFn&& f, SubmitHandler&& d)
      : meta(std::move(m)), fn(std::move(f)), done(std::move(d)) {}

  SetHook flow_hook;  // in its Flow's items while queued or acquiring
  SetHook fifo_hook;  // in Core's FIFO (by seq) while queued or acquiring
  Timed deadline_ev;
  Timed retry_ev;

  RequestMetadata meta;
  RequestFn fn;
  SubmitHandler done;

  std::uint64_t seq = 0;  // submission order: FIFO within a priority, drop_oldest
  double cost = 1;        // fairness cost: the estimated tokens (at least 1)
  Micros submitted_at = 0;
  Micros deadline = 0;  // 0: none
  Micros first_dispatch = -1;
  BucketQueue* queue = nullptr;
  Flow* flow = nullptr;
  State state = State::queued;
  bool abandoned = false;  // completed (timeout) while running: drop the reply after accounting
  int attempts = 0;

  Lease lease;
  std::shared_ptr<const std::vector<std::string>> token_names;  // charged the estimate

  // The reply's hand-off from any thread to the strand (see Core::start).
  std::atomic<int> reply_handoff{0};
  // result.outcome is the reply of the current attempt; a success hands the whole Result to
  // the handler as it stands here (no copy of the outcome).
  Result result;
  std::exception_ptr error;  // what the handler receives (then with an empty Result)

  // In Core's inbox (guarded by its mutex): submitted, or (inbox_reply) replied from another
  // thread, waiting for the strand's next drain. Once done (direct handlers): in Core's list
  // of completions, waiting for the completion op.
  RequestNode* inbox_next = nullptr;
  bool inbox_reply = false;
};

}  // namespace admit::sched::detail
