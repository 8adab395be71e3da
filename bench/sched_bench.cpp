// Scheduler benchmark (scripts/bench-sched), two figures measured in the same run:
//   overhead_ns       per request: submit -> Limiter acquire -> the request function (a no-op
//                     that replies at once) -> commit -> the completion handler, minus calling
//                     the same function directly. Intelligent mode, one bucket, a MemoryStore
//                     Limiter with rpm and tpm limits that never run out, request_timeout 0.
//   dispatch_rps_10k  10,000 requests submitted at once across 100 tenants (weighted fair
//                     queueing), at most 64 in flight, each reply posted back to the loop as
//                     an asynchronous client's would be: requests completed per second.
// One thread (the io_context's), SystemClock. Usage: admit_sched_bench [--json] [--quick]
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "admit/limiter.hpp"
#include "admit/sched/scheduler.hpp"
#include "admit/store/memory_store.hpp"

namespace {

namespace asio = boost::asio;
using admit::sched::Attempt;
using admit::sched::Outcome;
using admit::sched::Reply;
using admit::sched::RequestMetadata;
using admit::sched::Result;
using admit::sched::Scheduler;
using admit::sched::SchedulerOptions;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

volatile std::uint64_t g_sink = 0;  // the "work" of the request function

void configure(admit::Limiter& limiter) {
  limiter.set_limits("gpt", {admit::Limit::per_second("rpm", 1'000'000'000),
                             admit::Limit::per_second("tpm", 1'000'000'000'000)});
}

// Per request: the whole scheduled path, minus the direct call, best of `reps`.
double overhead_ns(int n, int reps) {
  auto work = [](const Attempt&, Reply reply) {
    g_sink = g_sink + 1;
    Outcome o;
    o.status = 200;
    reply(std::move(o));
  };
  double best_direct = 1e30;
  double best_sched = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    // Direct: the same function, its reply going nowhere.
    {
      struct Sink final : Reply::Target {
        void deliver(void*, Outcome) override {}
      };
      auto sink = std::make_shared<Sink>();
      RequestMetadata m;
      const Attempt a{&m, "gpt", 1};
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) work(a, Reply(sink, nullptr));
      best_direct = std::min(best_direct, seconds_since(t0) * 1e9 / n);
    }
    {
      asio::io_context io{1};
      admit::SystemClock clock;
      admit::MemoryStore store;
      admit::Limiter limiter(store, clock);
      configure(limiter);
      SchedulerOptions o;
      o.max_queue_size = 1'000'000;
      o.request_timeout = 0;
      Scheduler s(io.get_executor(), limiter, o);
      RequestMetadata m;
      m.tenant = "t";
      m.model = "gpt";
      m.estimated_tokens = 100;
      int done = 0;
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        s.async_submit(m, work, [&done](std::exception_ptr e, Result) { done += e ? 0 : 1; });
        if (i % 64 == 63) {  // a caller's loop runs while it submits
          io.restart();
          io.poll();
        }
      }
      io.restart();
      io.run();
      best_sched = std::min(best_sched, seconds_since(t0) * 1e9 / n);
      if (done != n) std::fprintf(stderr, "overhead: only %d of %d completed\n", done, n);
    }
  }
  std::printf("direct call: %.1f ns/request; scheduled: %.1f ns/request\n", best_direct,
              best_sched);
  return best_sched - best_direct;
}

double dispatch_rps(int n, int tenants, int reps) {
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    asio::io_context io{1};
    admit::SystemClock clock;
    admit::MemoryStore store;
    admit::Limiter limiter(store, clock);
    configure(limiter);
    SchedulerOptions o;
    o.max_queue_size = static_cast<std::size_t>(n);
    o.max_concurrent_executions = 64;
    o.request_timeout = 0;
    Scheduler s(io.get_executor(), limiter, o);
    std::vector<RequestMetadata> metas(static_cast<std::size_t>(tenants));
    for (int t = 0; t < tenants; ++t) {
      metas[static_cast<std::size_t>(t)].tenant = "tenant-" + std::to_string(t);
      metas[static_cast<std::size_t>(t)].model = "gpt";
      metas[static_cast<std::size_t>(t)].estimated_tokens = 50 + 10 * (t % 7);
    }
    auto call = [&io](const Attempt&, Reply reply) {
      asio::post(io, [reply] {
        Outcome out;
        out.status = 200;
        reply(std::move(out));
      });
    };
    int done = 0;
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      s.async_submit(metas[static_cast<std::size_t>(i % tenants)], call,
                     [&done](std::exception_ptr e, Result) { done += e ? 0 : 1; });
    }
    io.run();
    const double rps = n / seconds_since(t0);
    if (done != n) std::fprintf(stderr, "dispatch: only %d of %d completed\n", done, n);
    best = std::max(best, rps);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) json = true;
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  const int reps = quick ? 1 : 5;
  const double overhead = overhead_ns(quick ? 20'000 : 200'000, reps);
  const double rps = dispatch_rps(10'000, 100, quick ? 1 : 10);
  std::printf("scheduling overhead: %.1f ns/request (goal <= 2000)\n", overhead);
  std::printf("dispatch, 10,000 queued across 100 tenants: %.0f requests/s (goal >= 500000)\n",
              rps);
  if (json) std::printf("{\"overhead_ns\": %.1f, \"dispatch_rps_10k\": %.0f}\n", overhead, rps);
  return 0;
}
