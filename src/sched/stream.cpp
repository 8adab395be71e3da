// Streaming accounting: see admit/sched/stream.hpp and docs/scheduler.md, "Streaming".
//
// Concurrency: every field of an Entry but its Lease is guarded by Core::mu. The Lease is
// touched only by the thread that set Entry::busy (the "driver"), outside the lock: a thread
// that finds the entry busy leaves its update (a higher running count, an end) in the entry,
// and the driver applies it before it lets go, so a report never waits for another thread's
// store call and two store calls on one lease never overlap.
#include "admit/sched/stream.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "admit/async/timer.hpp"
#include "admit/core/error.hpp"

namespace admit::sched {

std::string_view to_string(StreamEnd e) {
  switch (e) {
    case StreamEnd::none:
      return "none";
    case StreamEnd::finished:
      return "finished";
    case StreamEnd::aborted:
      return "aborted";
    case StreamEnd::rolled_back:
      return "rolled_back";
    case StreamEnd::orphaned:
      return "orphaned";
  }
  return "none";
}

struct StreamHandle::Entry {
  // Set before the entry is published, then read-only.
  std::uint64_t id = 0;
  std::uint64_t lease_id = 0;
  std::string entity;
  std::string resource;
  std::int64_t estimate = 0;
  std::int64_t base = 0;
  Micros ttl = 0;
  // Only the driver (busy) touches it, without the lock.
  Lease lease;
  // Guarded by Core::mu.
  std::int64_t reserved = 0;  // held on each token limit: estimate + extra - nothing refunded yet
  std::int64_t reported = 0;  // base + running count
  std::int64_t charged_extra = 0;
  std::int64_t charge_failed_at = -1;   // a charge for this reported count failed: wait for more
  std::int64_t final_total = 0;         // request == finished
  StreamEnd request = StreamEnd::none;  // the end asked for
  std::uint64_t request_ticket = 0;     // which call asked for it
  bool ending = false;                  // the driver is applying `request`
  StreamEnd ended = StreamEnd::none;
  std::uint64_t ended_ticket = 0;
  bool busy = false;
  bool consumer_gone = false;
  Micros last_activity = 0;
  StreamSettlement result;  // once ended
};

namespace {

Decision ok_decision(Micros now) {
  Decision d;
  d.allowed = true;
  d.code = Code::ok;
  d.now = now;
  return d;
}

Decision failed_decision(Code code, std::string reason, Micros now) {
  Decision d;
  d.allowed = false;
  d.code = code;
  d.reason = std::move(reason);
  d.now = now;
  return d;
}

std::int64_t sat_add(std::int64_t a, std::int64_t b) {
  return a > std::numeric_limits<std::int64_t>::max() - b ? std::numeric_limits<std::int64_t>::max()
                                                          : a + b;
}

}  // namespace

struct StreamHandle::Core {
  Core(Limiter& l, boost::asio::any_io_executor executor, StreamOptions o)
      : limiter(l),
        clock(l.clock()),
        options(std::move(o)),
        timer(AsioTimer::create(std::move(executor), l.clock())) {}

  Limiter& limiter;
  const Clock& clock;
  const StreamOptions options;
  std::weak_ptr<Core> self;

  mutable std::mutex mu;
  std::condition_variable cv;        // an entry ended, a driver let go, a late call returned
  std::shared_ptr<AsioTimer> timer;  // reset when the tracker closes
  std::map<std::uint64_t, std::shared_ptr<Entry>> live;
  std::uint64_t next_id = 1;
  std::uint64_t next_ticket = 1;
  StreamStats stats;
  Micros armed_at = -1;  // the deadline the timer is armed for; -1: not armed
  bool closed = false;
  int outside_calls = 0;  // late record_usage calls in progress (the tracker waits for them)

  Amounts token_amounts(std::int64_t n) const {
    Amounts a;
    for (const std::string& name : options.token_limits) a.add(name, n);
    return a;
  }

  static Micros deadline(const Entry& e) { return sat_add(e.last_activity, e.ttl); }

  // Under mu: arms the timer for `d` unless it fires by then anyway.
  void arm_locked(Micros d) {
    if (closed || !timer) return;
    if (armed_at >= 0 && armed_at <= d) return;
    armed_at = d;
    timer->arm(d, [w = self] {
      if (auto c = w.lock()) c->on_timer();
    });
  }

  void on_timer() {
    {
      std::lock_guard g(mu);
      armed_at = -1;
      if (closed) return;
    }
    (void)sweep();
  }

  // A lease operation that reports failure as a Decision instead of throwing.
  Decision adjust(Lease& lease, std::int64_t delta) {
    try {
      return lease.adjust(token_amounts(delta));
    } catch (const StoreUnavailable& ex) {
      return failed_decision(Code::store_unavailable, ex.what(), clock.now());
    } catch (const std::exception& ex) {  // ValidationError (a token limit the lease lacks)
      return failed_decision(Code::invalid_argument, ex.what(), clock.now());
    }
  }

  // Under lk (held at entry and at return; released around store calls). Applies what the
  // entry asks for until nothing is left, unless another thread is already doing so.
  void drive(std::unique_lock<std::mutex>& lk, const std::shared_ptr<Entry>& e) {
    if (e->busy || e->ended != StreamEnd::none) return;
    e->busy = true;
    for (;;) {
      if (e->request != StreamEnd::none) {
        apply_end(lk, *e);
        break;
      }
      if (e->reported > e->reserved && e->reported != e->charge_failed_at) {
        const std::int64_t delta = std::max(e->reported - e->reserved, options.charge_step);
        const std::int64_t at = e->reported;
        lk.unlock();
        const Decision d = adjust(e->lease, delta);
        lk.lock();
        if (d.allowed) {
          e->reserved += delta;
          e->charged_extra += delta;
          stats.tokens_charged_extra += delta;
        } else {
          ++stats.store_errors;
          e->charge_failed_at = at;
        }
        continue;
      }
      break;
    }
    e->busy = false;
    cv.notify_all();
  }

  // Under lk, by the driver: ends the lease as e.request says.
  void apply_end(std::unique_lock<std::mutex>& lk, Entry& e) {
    const StreamEnd how = e.request;
    const std::uint64_t ticket = e.request_ticket;
    e.ending = true;
    std::int64_t keep = 0;
    switch (how) {
      case StreamEnd::finished:
        keep = e.final_total;
        break;
      case StreamEnd::aborted:
        keep = e.reported;
        break;
      case StreamEnd::orphaned:
        keep = options.orphan_policy == OrphanPolicy::keep_reservation
                   ? std::max(e.reserved, e.reported)
                   : e.reported;
        break;
      case StreamEnd::rolled_back:
      case StreamEnd::none:
        keep = 0;
        break;
    }
    const std::int64_t reserved = e.reserved;
    const std::int64_t delta = keep - reserved;
    lk.unlock();
    Decision d = ok_decision(0);
    bool adjusted = true;
    if (how == StreamEnd::rolled_back) {
      e.lease.rollback();  // refunds everything held, extra charges included
      d.now = clock.now();
    } else {
      if (delta != 0) {
        d = adjust(e.lease, delta);
        adjusted = d.allowed;
      } else {
        d.now = clock.now();
      }
      e.lease.commit();
    }
    lk.lock();
    StreamSettlement& r = e.result;
    r.settled = true;
    r.end = how;
    r.estimate = e.estimate;
    r.decision = std::move(d);
    if (how == StreamEnd::rolled_back) {
      r.used = 0;
      r.refunded = reserved;
    } else if (!adjusted) {  // the reservation stays as it stood
      ++stats.store_errors;
      r.used = reserved;
    } else {
      r.used = keep;
      r.refunded = delta < 0 ? -delta : 0;
      if (delta > 0) {
        e.charged_extra += delta;
        stats.tokens_charged_extra += delta;
      }
    }
    r.charged_extra = e.charged_extra;
    stats.tokens_refunded += r.refunded;
    switch (how) {
      case StreamEnd::finished:
        ++stats.completed;
        break;
      case StreamEnd::aborted:
      case StreamEnd::rolled_back:
        ++stats.aborted;
        break;
      case StreamEnd::orphaned:
      case StreamEnd::none:
        ++stats.orphaned;
        break;
    }
    e.ended = how;
    e.ended_ticket = ticket;
    e.ending = false;
    live.erase(e.id);
    if (live.empty() && armed_at >= 0 && timer) {
      timer->cancel();  // nothing left to settle: a real-time timer stops holding the loop
      armed_at = -1;
    }
    cv.notify_all();
  }

  // Settles every entry past its deadline; re-arms the timer for the next deadline.
  std::size_t sweep() {
    std::unique_lock lk(mu);
    if (closed) return 0;
    const Micros now = clock.now();
    std::vector<std::shared_ptr<Entry>> due;
    for (const auto& [id, e] : live) {
      if (e->request == StreamEnd::none && deadline(*e) <= now) {
        e->request = StreamEnd::orphaned;
        e->request_ticket = next_ticket++;
        due.push_back(e);
      }
    }
    for (const auto& e : due) drive(lk, e);  // an entry another thread drives: it ends it
    rearm_locked();
    return due.size();
  }

  void rearm_locked() {
    Micros next = -1;
    for (const auto& [id, e] : live) {
      if (e->request != StreamEnd::none) continue;
      const Micros d = deadline(*e);
      if (next < 0 || d < next) next = d;
    }
    if (next >= 0) arm_locked(next);
  }

  StreamInfo info_locked(const Entry& e) const {
    StreamInfo i;
    i.id = e.id;
    i.lease_id = e.lease_id;
    i.entity = e.entity;
    i.resource = e.resource;
    i.estimate = e.estimate;
    i.reserved = e.ended == StreamEnd::none ? e.reserved : e.result.used;
    i.reported = e.reported;
    i.last_activity = e.last_activity;
    i.deadline = e.ended == StreamEnd::none ? deadline(e) : 0;
    i.consumer_gone = e.consumer_gone;
    i.ending = e.request != StreamEnd::none && e.ended == StreamEnd::none;
    return i;
  }

  void report(const std::shared_ptr<Entry>& e, std::int64_t reported_total, bool add) {
    std::unique_lock lk(mu);
    if (e->request != StreamEnd::none || e->ended != StreamEnd::none) {
      ++stats.late_reports;
      return;
    }
    const std::int64_t v = add ? sat_add(e->reported, reported_total) : reported_total;
    e->last_activity = clock.now();
    if (v <= e->reported) return;
    e->reported = v;
    drive(lk, e);
  }

  StreamSettlement end(const std::shared_ptr<Entry>& e, StreamEnd how, std::int64_t total) {
    std::unique_lock lk(mu);
    if (e->ended == StreamEnd::none && !e->ending) {
      // Not applied yet: this end replaces one asked for before (an orphan settlement that
      // has not started yields to the consumer's own report).
      e->request = how;
      e->request_ticket = next_ticket++;
      if (how == StreamEnd::finished) {
        e->final_total = std::max<std::int64_t>(0, total);
        e->reported = std::max(e->reported, e->final_total);
      }
      if (!closed) e->last_activity = clock.now();
      const std::uint64_t ticket = e->request_ticket;
      drive(lk, e);
      cv.wait(lk, [&] { return e->ended != StreamEnd::none; });
      StreamSettlement r = e->result;
      r.settled = e->ended_ticket == ticket;
      return r;
    }
    cv.wait(lk, [&] { return e->ended != StreamEnd::none; });  // an end being applied
    ++stats.late_reports;
    StreamSettlement r = e->result;
    r.settled = false;
    r.charged_extra = 0;
    r.refunded = 0;
    r.decision = ok_decision(r.decision.now);
    // Usage past what was kept still counts: the lease has ended, so record it.
    if (how != StreamEnd::finished || total <= r.used || closed) return r;
    const std::int64_t extra = total - r.used;
    ++outside_calls;
    lk.unlock();
    Decision d = ok_decision(0);
    try {
      d = limiter.record_usage(e->entity, e->resource, token_amounts(extra));
    } catch (const std::exception& ex) {
      d = failed_decision(Code::store_unavailable, ex.what(), clock.now());
    }
    lk.lock();
    --outside_calls;
    if (d.code == Code::ok) {
      r.charged_extra = extra;
      stats.tokens_charged_extra += extra;
    } else {
      ++stats.store_errors;
    }
    r.decision = std::move(d);
    cv.notify_all();
    return r;
  }

  void close() {
    std::unique_lock lk(mu);
    closed = true;
    if (timer) timer->cancel();
    std::vector<std::shared_ptr<Entry>> left;
    for (const auto& [id, e] : live) {
      if (e->request == StreamEnd::none) {
        e->request = StreamEnd::orphaned;
        e->request_ticket = next_ticket++;
      }
      left.push_back(e);
    }
    for (const auto& e : left) drive(lk, e);
    cv.wait(lk, [&] { return live.empty() && outside_calls == 0; });
    // The timer must not outlive the executor's context nor reach the clock once the tracker
    // is gone (handles may keep this Core alive).
    std::shared_ptr<AsioTimer> t = std::move(timer);
    lk.unlock();
    t.reset();
  }
};

// ---- StreamHandle ----

StreamHandle::StreamHandle(std::shared_ptr<Core> core, std::shared_ptr<Entry> entry, Decision d)
    : core_(std::move(core)), entry_(std::move(entry)), decision_(std::move(d)) {}

StreamHandle::~StreamHandle() { release(); }

StreamHandle& StreamHandle::operator=(StreamHandle&& o) noexcept {
  if (this != &o) {
    release();
    core_ = std::move(o.core_);
    entry_ = std::move(o.entry_);
    decision_ = std::move(o.decision_);
  }
  return *this;
}

void StreamHandle::release() noexcept {
  if (core_ && entry_) {
    std::lock_guard g(core_->mu);
    // The consumer vanished: its reservation is left to the tracker's deadline.
    if (entry_->ended == StreamEnd::none && entry_->request == StreamEnd::none) {
      entry_->consumer_gone = true;
    }
  }
  entry_.reset();
  core_.reset();
}

std::uint64_t StreamHandle::id() const { return entry_ ? entry_->id : 0; }

void StreamHandle::add_tokens(std::int64_t n) {
  if (!entry_ || n <= 0) return;
  core_->report(entry_, n, /*add=*/true);
}

void StreamHandle::report_running(std::int64_t streamed) {
  if (!entry_ || streamed < 0) return;
  core_->report(entry_, sat_add(entry_->base, streamed), /*add=*/false);
}

StreamSettlement StreamHandle::finish(std::int64_t total_tokens) {
  if (!entry_) return {};
  return core_->end(entry_, StreamEnd::finished, total_tokens);
}

StreamSettlement StreamHandle::abort() {
  if (!entry_) return {};
  return core_->end(entry_, StreamEnd::aborted, 0);
}

StreamSettlement StreamHandle::rollback() {
  if (!entry_) return {};
  return core_->end(entry_, StreamEnd::rolled_back, 0);
}

StreamInfo StreamHandle::info() const {
  if (!entry_) return {};
  std::lock_guard g(core_->mu);
  return core_->info_locked(*entry_);
}

// ---- StreamTracker ----

StreamTracker::StreamTracker(Limiter& limiter, boost::asio::any_io_executor executor,
                             StreamOptions options) {
  if (options.token_limits.empty()) {
    throw ValidationError("token_limits", "", "at least one token limit is needed");
  }
  for (const std::string& name : options.token_limits) {
    if (name.empty()) throw ValidationError("token_limits", name, "a limit name is not empty");
  }
  if (options.ttl <= 0) {
    throw ValidationError("ttl", std::to_string(options.ttl), "must be > 0 (µs)");
  }
  if (options.charge_step < 1) {
    throw ValidationError("charge_step", std::to_string(options.charge_step), "must be >= 1");
  }
  core_ = std::make_shared<StreamHandle::Core>(limiter, std::move(executor), std::move(options));
  core_->self = core_;
}

StreamTracker::~StreamTracker() { core_->close(); }

StreamHandle StreamTracker::open(Lease lease, const StreamRequest& request) {
  if (request.estimate < 0) {
    throw ValidationError("estimate", std::to_string(request.estimate), "must be >= 0");
  }
  if (request.base < 0) {
    throw ValidationError("base", std::to_string(request.base), "must be >= 0");
  }
  if (request.ttl < 0) {
    throw ValidationError("ttl", std::to_string(request.ttl), "must be >= 0 (0: the default)");
  }
  Decision d = lease.decision();
  if (!lease.active()) return StreamHandle(nullptr, nullptr, std::move(d));
  auto e = std::make_shared<StreamHandle::Entry>();
  e->lease_id = lease.id();
  e->entity = std::string(lease.entity());
  e->resource = std::string(lease.resource());
  e->estimate = request.estimate;
  e->base = request.base;
  e->ttl = request.ttl > 0 ? request.ttl : core_->options.ttl;
  e->reserved = request.estimate;
  e->reported = request.base;
  e->lease = std::move(lease);
  auto& c = *core_;
  std::unique_lock lk(c.mu);
  if (c.closed) throw LeaseError("the stream tracker is closing");
  e->id = c.next_id++;
  e->last_activity = c.clock.now();
  c.live.emplace(e->id, e);
  ++c.stats.opened;
  c.arm_locked(StreamHandle::Core::deadline(*e));
  c.drive(lk, e);  // a base above the estimate is charged at once
  lk.unlock();
  return StreamHandle(core_, std::move(e), std::move(d));
}

StreamHandle StreamTracker::try_open(std::string_view entity, std::string_view resource,
                                     const StreamRequest& request) {
  if (request.estimate < 0) {
    throw ValidationError("estimate", std::to_string(request.estimate), "must be >= 0");
  }
  Amounts amounts = request.extra;
  for (const std::string& name : core_->options.token_limits) amounts.add(name, request.estimate);
  return open(core_->limiter.try_acquire(entity, resource, amounts, request.acquire), request);
}

std::size_t StreamTracker::sweep() { return core_->sweep(); }

std::vector<StreamInfo> StreamTracker::streams() const {
  std::lock_guard g(core_->mu);
  std::vector<StreamInfo> out;
  out.reserve(core_->live.size());
  for (const auto& [id, e] : core_->live) out.push_back(core_->info_locked(*e));
  return out;
}

StreamStats StreamTracker::stats() const {
  std::lock_guard g(core_->mu);
  StreamStats s = core_->stats;
  s.active = core_->live.size();
  return s;
}

const StreamOptions& StreamTracker::options() const { return core_->options; }

}  // namespace admit::sched
