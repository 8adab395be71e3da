// Core: the scheduler's state and its dispatch loop. Everything below the public methods
// runs on one strand of the caller's executor, so the state needs no lock; what other threads
// read (stats, breakers) is atomic or behind its own small mutex.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>
#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "admit/adapt/discovery.hpp"
#include "admit/async/timer.hpp"
#include "admit/limiter.hpp"
#include "admit/sched/backoff.hpp"
#include "admit/sched/breaker.hpp"
#include "admit/sched/options.hpp"
#include "admit/sched/provider.hpp"
#include "admit/sched/stats.hpp"
#include "fair_queue.hpp"
#include "node.hpp"
#include "node_pool.hpp"

namespace admit::sched::detail {

/// One queue: a bucket (Mode::account: an account's bucket) with its tenants' flows, its
/// breaker, and whether the Limiter holds it until some instant.
struct BucketQueue {
  bi::list_member_hook<bi::link_mode<bi::safe_link>> ready_hook;  // in Core::ready_
  std::string key;
  std::string bucket;
  std::string entity;  // the Limiter entity
  FairQueue fq;
  CircuitBreaker breaker;
  Timed unblock_ev;
  Micros blocked_until = 0;       // the Limiter said retry_after; 0: not held
  bool blocked_on_slots = false;  // held by a concurrency limit: a finished lease frees it

  // The one acquire in flight for this queue (its head), handed from any thread to the strand.
  bool acquiring = false;
  RequestNode* acquiring_for = nullptr;  // nulled if the request leaves meanwhile
  std::atomic<int> acq_handoff{0};
  Lease acq_lease;
  std::shared_ptr<void> keepalive;  // the Core, while an acquire is answered on another thread

  // Which of the request/token limit names resolve for (entity, bucket), as of the
  // Limiter's config_version() `names_version` (a learned limit another process put into
  // the store changes it: the names are read again before the next acquire).
  bool names_known = false;
  std::uint64_t names_version = 0;
  bool names_retried = false;  // an unknown_limit denial already refreshed them once
  std::vector<std::string> request_names;
  std::shared_ptr<const std::vector<std::string>> token_names;
  // The amounts of the last acquire, reused by the next: only the token amounts change
  // between requests (Amounts::add by the difference), so an acquire allocates nothing here.
  Amounts amounts;
  std::int64_t amounts_tokens = 0;  // the estimate `amounts` holds per token limit
  bool amounts_valid = false;       // false: rebuild from the names

  // What this queue's running attempts hold: requests and estimated tokens (what the
  // provider charged them, or will).
  std::int64_t running = 0;
  std::int64_t running_tokens = 0;

  explicit BucketQueue(const BreakerOptions& b) : breaker(b) {}
};

class Core final : public std::enable_shared_from_this<Core>, public Reply::Target {
 public:
  Core(boost::asio::any_io_executor executor, Limiter& limiter, SchedulerOptions options,
       std::shared_ptr<ProviderPlugin> provider);
  ~Core();

  // ---- any thread ----
  void start_timer();  // after construction (needs shared_from_this)
  void submit(RequestMetadata&& meta, RequestFn&& fn, SubmitHandler&& done);
  void close();
  void deliver(void* request, Outcome outcome) override;
  std::size_t discover_limits();
  void set_weight(std::string tenant, double weight);
  std::string bucket_for(std::string_view model, std::string_view resource_type) const {
    return provider_->bucket_for(model, resource_type);
  }
  SchedulerStats stats() const;
  std::vector<BucketBreaker> breakers() const;
  BreakerState breaker_state(std::string_view queue) const;
  Micros held_until(std::string_view queue) const;
  const SchedulerOptions& options() const { return options_; }
  const boost::asio::any_io_executor& executor() const { return executor_; }

 private:
  struct BySeq {
    bool operator()(const RequestNode& a, const RequestNode& b) const { return a.seq < b.seq; }
  };
  struct ByWhen {
    bool operator()(const Timed& a, const Timed& b) const { return a.when < b.when; }
  };

  // ---- any thread ----
  /// Hands `r` (submitted, or replied to off the strand) to the strand: one post per batch.
  void push_inbox(RequestNode* r, bool reply);
  /// Completes `r`, which nothing else refers to any more, with r.error (else r.result) and
  /// frees it: a direct handler joins the list of completions (one post per batch), any
  /// other is posted through asio at once.
  void complete(RequestNode* r);
  void run_completions();  // on the executor (not the strand): calls the direct handlers

  // ---- strand only ----
  void drain();  // runs what the inbox holds, in arrival order
  void enqueue(RequestNode* r);
  BucketQueue& queue_for(const RequestMetadata& meta);
  void pump();
  void dispatch(BucketQueue& q, RequestNode& r);
  void on_acquired(BucketQueue& q);
  void start(RequestNode& r, Lease&& lease);
  void on_reply(RequestNode& r);
  void feed(BucketQueue& q, RequestNode& r, const Observation& obs, bool server_error);
  /// Adjusts r's lease to the usage and the provider's level `seen`; true if it refunded
  /// to follow the provider up.
  bool reconcile(BucketQueue& q, RequestNode& r, const ObserveResult& seen);
  void on_timer();
  void timeout(RequestNode& r);
  void retry_due(RequestNode& r);

  const Amounts& amounts_for(BucketQueue& q, const RequestNode& r);
  void refresh_names(BucketQueue& q);
  void make_ready(BucketQueue& q);
  void block(BucketQueue& q, Micros until, bool on_slots);
  void unblock(BucketQueue& q);
  void unqueue(RequestNode& r);                 // out of its flow and the FIFO, not served
  void fail_queue(BucketQueue& q, Micros now);  // the breaker opened: queued requests fail
  void schedule(Timed& t, Micros when);
  void unschedule(Timed& t);
  void rearm();
  void mirror_breaker(const BucketQueue& q, Micros now);
  void mirror_hold(const BucketQueue& q);

  /// Completes `r` with `error`, or (null) with r.result as it stands; frees it unless it is
  /// running (then on_reply does).
  void finish(RequestNode& r, std::exception_ptr error);
  template <class E, class... Args>
  void fail(RequestNode& r, std::atomic<std::uint64_t>& counter, Args&&... args);

  boost::asio::any_io_executor executor_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;
  Limiter& limiter_;
  const Clock& clock_;
  const SchedulerOptions options_;
  std::shared_ptr<ProviderPlugin> provider_;
  // The provider is exactly HeaderProvider, whose parse_response of a status < 400 without
  // headers is an empty Observation: on_reply skips the call then.
  bool plain_headers_;
  std::unique_ptr<Discovery> discovery_;  // null in Mode::basic
  Backoff backoff_;
  std::shared_ptr<AsioTimer> timer_;

  // strand only
  absl::flat_hash_map<std::string, std::unique_ptr<BucketQueue>> queues_;
  bi::list<BucketQueue,
           bi::member_hook<BucketQueue, bi::list_member_hook<bi::link_mode<bi::safe_link>>,
                           &BucketQueue::ready_hook>>
      ready_;  // queues that may dispatch now, served round robin
  bi::set<RequestNode, bi::member_hook<RequestNode, SetHook, &RequestNode::fifo_hook>,
          bi::compare<BySeq>>
      fifo_;  // queued requests, oldest first (drop_oldest)
  bi::multiset<Timed, bi::member_hook<Timed, SetHook, &Timed::hook>, bi::compare<ByWhen>> timeline_;
  bool armed_ = false;
  Micros armed_at_ = 0;
  bool pumping_ = false;
  bool closed_ = false;
  std::size_t in_flight_ = 0;
  std::map<std::string, double, std::less<>> weights_;
  std::map<std::string, DiscoveredBucket, std::less<>> announced_;  // Mode::account

  std::atomic<std::uint64_t> next_seq_{0};
  NodePool pool_;

  // any thread: the inbox, a FIFO through RequestNode::inbox_next. A drain is posted when the
  // first node arrives; later ones ride along with it.
  std::mutex inbox_mu_;
  RequestNode* inbox_head_ = nullptr;
  RequestNode* inbox_tail_ = nullptr;
  bool drain_posted_ = false;
  // any thread: finished requests with a direct handler, through RequestNode::inbox_next;
  // run_completions is posted to the executor when the first arrives.
  std::mutex done_mu_;
  RequestNode* done_head_ = nullptr;
  RequestNode* done_tail_ = nullptr;
  bool completions_posted_ = false;
  mutable std::mutex announced_mu_;  // announced_ between discover_limits and the strand

  // any thread
  struct Counters {
    std::atomic<std::uint64_t> queued{0}, in_flight{0}, delayed{0}, submitted{0}, dispatched{0},
        completed{0}, failed{0}, retried{0}, overflowed{0}, timed_out{0}, broken{0}, rejected{0},
        throttled{0}, breaker_trips{0};
  };
  Counters n_;
  mutable std::mutex held_mu_;
  std::map<std::string, Micros, std::less<>> held_;  // queue -> BucketQueue::blocked_until
  mutable std::mutex breaker_mu_;
  std::map<std::string, BucketBreaker, std::less<>> breakers_;  // queues whose breaker tripped
};

}  // namespace admit::sched::detail
