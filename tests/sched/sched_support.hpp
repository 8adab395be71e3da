// Scheduler test fixture: an io_context polled by the test, a ManualClock that the test
// advances (the scheduler's timers follow it), a Limiter on a MemoryStore, and request
// functions that call admit's provider simulator in-process (real 429s and headers), with a
// simulated latency on the ManualClock. Never sleeps.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/sched/scheduler.hpp"
#include "admit/sim/provider.hpp"
#include "admit/store/memory_store.hpp"

namespace admit::sched::test {

inline constexpr Micros kSec = kMicrosPerSecond;
inline constexpr Micros kMs = 1000;

/// One attempt as a request function saw it.
struct Call {
  std::string id;
  std::string tenant;
  std::string model;
  int attempt = 0;
  Micros at = 0;
  int status = 0;
};

/// What a submitted request ended with.
struct Done {
  bool finished = false;
  std::exception_ptr error;
  Result result;
  Micros at = 0;
  template <class E>
  bool failed_with() const {
    if (!error) return false;
    try {
      std::rethrow_exception(error);
    } catch (const E&) {
      return true;
    } catch (...) {
      return false;
    }
  }
};

/// prefix + i, e.g. id("r", 3) == "r3" (a stream: GCC 12's -Wrestrict misfires on string +).
template <class T>
std::string id(std::string_view prefix, T i) {
  std::ostringstream os;
  os << prefix << i;
  return os.str();
}

class SchedFixture : public ::testing::Test {
 protected:
  ManualClock clock;
  MemoryStore store;
  Limiter limiter{store, clock};
  // Destroyed before the clock: handlers still queued hold the scheduler's core, whose timer
  // cancels its pending ManualClock call when it goes.
  boost::asio::io_context io{1};
  std::vector<Call> calls;

  /// Runs every handler that is ready, without moving time.
  void settle() {
    io.restart();
    io.poll();
  }
  /// Moves time forward by `d`, stopping at every pending timer and running what is due.
  void run_for(Micros d) {
    const Micros end = clock.now() + d;
    for (;;) {
      settle();
      const Micros next = clock.next_wakeup();
      if (next < 0 || next > end) break;
      clock.set(std::max(next, clock.now()));
    }
    clock.set(end);
    settle();
  }

  static RequestMetadata meta(std::string id, std::string tenant, std::string model,
                              std::int64_t tokens = 100, int priority = 0) {
    RequestMetadata m;
    m.request_id = std::move(id);
    m.tenant = std::move(tenant);
    m.model = std::move(model);
    m.estimated_tokens = tokens;
    m.priority = priority;
    return m;
  }

  /// Submits with a callback that records the outcome in `out` (which must stay put).
  void submit(Scheduler& s, RequestMetadata m, RequestFn fn, Done& out) {
    s.async_submit(std::move(m), std::move(fn), [this, &out](std::exception_ptr e, Result r) {
      out.finished = true;
      out.error = e;
      out.result = std::move(r);
      out.at = clock.now();
    });
  }

  /// A request function answering `status` after `latency` (0: at once), with `usage`.
  RequestFn fixed(int status, Micros latency = 0, std::optional<Usage> usage = std::nullopt) {
    return [this, status, latency, usage](const Attempt& a, Reply reply) {
      calls.push_back({a.metadata->request_id, a.metadata->tenant, a.metadata->model, a.number,
                       clock.now(), status});
      Outcome o;
      o.status = status;
      o.usage = usage;
      answer(std::move(reply), std::move(o), latency);
    };
  }

  /// A request function that asks the simulator (its key: the request's account, else
  /// "default"), answering after `latency`. Usage: the estimate as prompt tokens.
  RequestFn simulated(sim::ProviderModel& provider, Micros latency = 0) {
    return [this, &provider, latency](const Attempt& a, Reply reply) {
      sim::SimRequest req;
      req.key = a.metadata->account.empty() ? "default" : a.metadata->account;
      req.model = a.metadata->model;
      req.prompt_tokens = a.metadata->estimated_tokens;
      const sim::SimResponse s = provider.handle(req, clock.now());
      calls.push_back({a.metadata->request_id, a.metadata->tenant, a.metadata->model, a.number,
                       clock.now(), s.status});
      Outcome o;
      o.status = s.status;
      for (const auto& [k, v] : s.headers) o.headers.add(k, v);
      o.body = s.body;
      if (s.status == 200) o.usage = Usage{a.metadata->estimated_tokens, 0, 0};
      answer(std::move(reply), std::move(o), latency);
    };
  }

  void answer(Reply reply, Outcome o, Micros latency) {
    if (latency == 0) {
      reply(std::move(o));
      return;
    }
    // The reply comes on the thread that advances the clock, as from another thread.
    (void)clock.call_at(clock.now() + latency,
                        [reply = std::move(reply), o = std::move(o)]() mutable { reply(o); });
  }

  std::vector<const Call*> calls_of(std::string_view id) const {
    std::vector<const Call*> out;
    for (const auto& c : calls) {
      if (c.id == id) out.push_back(&c);
    }
    return out;
  }
};

}  // namespace admit::sched::test
