// Streaming accounting: a streamed completion reserves its estimate (prompt + max_tokens) up
// front; as the stream reports usage (a running count, then the final `usage` chunk) the
// tracker charges what goes past the reservation at once and refunds or charges the exact
// difference at the end. While the stream lives its reservation is listed; one whose consumer
// vanished (its handle destroyed without a final report) or that saw no activity for its TTL
// is settled by a sweep or the tracker's timer, keeping what was reported and refunding the
// rest, and counted as orphaned. See docs/scheduler.md, "Streaming".
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "admit/amounts.hpp"
#include "admit/core/decision.hpp"
#include "admit/core/time.hpp"
#include "admit/lease.hpp"
#include "admit/limiter.hpp"
#include "admit/sched/sse_usage.hpp"

namespace admit::sched {

/// What an orphaned reservation (consumer gone, or idle for its TTL) keeps.
enum class OrphanPolicy : std::uint8_t {
  /// What was reported (base + running count) is kept, the unused rest refunded: refund-based,
  /// like the final report. Tokens generated but never reported are not counted.
  refund_unreported,
  /// The whole reservation (with any extra charged) is kept: nothing is refunded.
  keep_reservation,
};

struct StreamOptions {
  /// The limits that count tokens: each is reserved `estimate` and adjusted by the same
  /// deltas (e.g. {"tpm", "tpd"}). Every lease the tracker holds must have all of them (an
  /// unlimited limit, 0, is not part of a lease: adjusting it fails, see store_errors).
  std::vector<std::string> token_limits = {"tpm"};
  /// A reservation with no report for this long is settled as orphaned (> 0). Per stream:
  /// StreamRequest::ttl.
  Micros ttl = 60 * kMicrosPerSecond;
  /// When the running count passes what is reserved, charge at least this much more at once
  /// (>= 1: exactly the excess). Larger steps mean fewer store calls for a runaway stream;
  /// what is charged ahead is refunded at the end like any unused reservation.
  std::int64_t charge_step = 1;
  OrphanPolicy orphan_policy = OrphanPolicy::refund_unreported;
};

/// One stream's reservation.
struct StreamRequest {
  /// Tokens reserved on each token limit (prompt + max_tokens). >= 0.
  std::int64_t estimate = 0;
  /// Tokens known to be used at the start (the prompt): the running count adds to it. >= 0.
  std::int64_t base = 0;
  /// StreamTracker::try_open(): the other amounts of the acquire, e.g. {{"rpm", 1}}.
  Amounts extra;
  /// 0: StreamOptions::ttl.
  Micros ttl = 0;
  /// StreamTracker::try_open(): per-call options of the acquire (lease TTL, stats).
  AcquireOptions acquire;
};

/// How a reservation ended.
enum class StreamEnd : std::uint8_t {
  none,         ///< not ended yet
  finished,     ///< final usage reported (finish)
  aborted,      ///< abort(): what was reported kept, the rest refunded
  rolled_back,  ///< rollback(): everything refunded
  orphaned,     ///< settled by the tracker: consumer gone or idle for its TTL
};
std::string_view to_string(StreamEnd e);

/// The end of a reservation, as the call that asked for it sees it.
struct StreamSettlement {
  /// This call ended the reservation. False when it had ended before (e.g. settled as orphaned
  /// at its TTL): then `end` says how, and for a late finish() `charged_extra` holds usage
  /// past what was kept, counted with Limiter::record_usage.
  bool settled = false;
  StreamEnd end = StreamEnd::none;
  std::int64_t estimate = 0;       ///< reserved at the start
  std::int64_t used = 0;           ///< kept on each token limit in the end
  std::int64_t refunded = 0;       ///< given back at the end (each token limit)
  std::int64_t charged_extra = 0;  ///< charged past the estimate over the stream's life
  /// allowed, or code store_unavailable if a store call failed (then the reservation is kept
  /// as it stood: usage is never under-counted because of a failure).
  Decision decision;
};

/// A live reservation, as StreamTracker::streams() lists it.
struct StreamInfo {
  std::uint64_t id = 0;        ///< the tracker's id (from 1)
  std::uint64_t lease_id = 0;  ///< Lease::id() (0 for a lease without concurrency slots)
  std::string entity;
  std::string resource;
  std::int64_t estimate = 0;
  std::int64_t reserved = 0;   ///< held now on each token limit: estimate + extra charged
  std::int64_t reported = 0;   ///< base + running count
  Micros last_activity = 0;    ///< open or last report (clock µs)
  Micros deadline = 0;         ///< settled as orphaned if nothing happens before
  bool consumer_gone = false;  ///< the handle was destroyed without a final report
  bool ending = false;         ///< an end was asked for and is being applied
};

struct StreamStats {
  std::size_t active = 0;  ///< reservations live now
  std::uint64_t opened = 0;
  std::uint64_t completed = 0;            ///< ended by finish()
  std::uint64_t aborted = 0;              ///< ended by abort() or rollback()
  std::uint64_t orphaned = 0;             ///< settled by the tracker
  std::int64_t tokens_refunded = 0;       ///< given back, per token limit
  std::int64_t tokens_charged_extra = 0;  ///< charged past estimates, per token limit
  std::uint64_t store_errors = 0;         ///< lease operations that failed
  std::uint64_t late_reports = 0;         ///< reports after the reservation had ended
};

class StreamTracker;

/**
 * The consumer's side of one reservation. Move-only. Its calls may come from any thread and
 * never wait for another stream; a running report never waits at all (when another thread is
 * already applying a store call for this stream, that thread applies the new count too).
 * finish(), abort() and rollback() return once the reservation has ended. Destroying a handle
 * that has not ended its reservation means the consumer vanished: it returns at once and
 * leaves the reservation to the tracker, which settles it at its deadline.
 */
class StreamHandle {
 public:
  StreamHandle() = default;
  ~StreamHandle();
  StreamHandle(StreamHandle&& o) noexcept = default;
  /// Lets go of this handle's reservation first (as the destructor does), then takes `o`'s.
  StreamHandle& operator=(StreamHandle&& o) noexcept;
  StreamHandle(const StreamHandle&) = delete;
  StreamHandle& operator=(const StreamHandle&) = delete;

  /// True if the reservation was made (the acquire was allowed).
  explicit operator bool() const { return decision_.allowed && entry_ != nullptr; }
  /// The acquire's decision (why a try_open was denied).
  const Decision& decision() const { return decision_; }
  /// The tracker's id of the reservation; 0 if none.
  std::uint64_t id() const;

  /// `n` more tokens streamed (n <= 0: nothing). Charges what passes the reservation.
  void add_tokens(std::int64_t n);
  /// The running count: tokens streamed so far, after `base` (smaller than an earlier count:
  /// nothing). Charges what passes the reservation.
  void report_running(std::int64_t streamed);

  /// Final usage: total tokens used (prompt + completion). Refunds the unused reservation or
  /// charges the rest, then commits. After the reservation ended (orphaned), usage past what
  /// was kept is still charged (Limiter::record_usage) and nothing is refunded.
  StreamSettlement finish(std::int64_t total_tokens);
  StreamSettlement finish(const Usage& usage) { return finish(usage.total_tokens); }
  /// The stream broke off (error, client gone): keeps what was reported, refunds the rest.
  StreamSettlement abort();
  /// Nothing was spent (the request failed before any token): refunds everything, extra
  /// charges included.
  StreamSettlement rollback();

  /// The reservation now (an ended one: as it ended, with deadline 0).
  StreamInfo info() const;

 private:
  friend class StreamTracker;
  struct Entry;
  struct Core;
  StreamHandle(std::shared_ptr<Core> core, std::shared_ptr<Entry> entry, Decision d);
  void release() noexcept;

  std::shared_ptr<Core> core_;
  std::shared_ptr<Entry> entry_;
  Decision decision_;
};

/**
 * Tracks the reservations of streamed responses over a Limiter. Thread-safe. Lease operations
 * (store calls) are never made under the tracker's lock. Orphans are settled by sweep() and
 * by a timer on `executor` (admit::AsioTimer, timed by the Limiter's clock: with a ManualClock
 * it fires when the clock is advanced and the executor's context runs). The timer's sweep runs
 * the store calls on that executor, so it must not be a RedisStore's own I/O thread.
 * The Limiter and the executor's execution context must outlive the tracker (handles may
 * outlive it). Destroying the tracker settles every live reservation as orphaned (handles
 * left are then inert: their calls return settled = false).
 */
class StreamTracker {
 public:
  /// @throws ValidationError for options out of range (no token limit, ttl <= 0, step < 1).
  StreamTracker(Limiter& limiter, boost::asio::any_io_executor executor,
                StreamOptions options = {});
  ~StreamTracker();
  StreamTracker(const StreamTracker&) = delete;
  StreamTracker& operator=(const StreamTracker&) = delete;

  /// Tracks `lease`, which reserved `request.estimate` on every token limit. A lease that is
  /// not active gives an empty handle carrying its decision.
  /// @throws ValidationError for a negative estimate or base.
  StreamHandle open(Lease lease, const StreamRequest& request);
  /// Acquires (Limiter::try_acquire) `request.extra` plus `estimate` on every token limit,
  /// then tracks the lease; if denied, the handle is empty and decision() says why.
  StreamHandle try_open(std::string_view entity, std::string_view resource,
                        const StreamRequest& request);

  /// Settles every reservation whose deadline has passed (consumer gone or idle for its
  /// TTL). @return how many it started to settle.
  std::size_t sweep();

  /// Live reservations, by id.
  std::vector<StreamInfo> streams() const;
  StreamStats stats() const;
  const StreamOptions& options() const;

 private:
  std::shared_ptr<StreamHandle::Core> core_;
};

}  // namespace admit::sched
