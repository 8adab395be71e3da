// admit's distributed and durable stores under load: Limiter::try_acquire of two rate limits
// (rpm 1 + tpm 100, limits so large nothing is denied) over a RedisStore or a SqliteStore,
// from N threads at once for a fixed time. Prints one JSON line:
//   {"ops": <acquires per second>, "p50_us": ..., "p99_us": ..., ...}
// scripts/bench-redis runs it beside redis-benchmark and rate-limiter-flexible on one server.
//
//   admit_redis_bench --url redis://127.0.0.1:PORT [--inflight N] [--duration S] [--async]
//   admit_redis_bench --sqlite PATH [--inflight N] [--duration S]
//   admit_redis_bench --print-argv [--with-stats]
//
// Without --async, N threads each loop on the synchronous try_acquire. With --async one
// thread starts N chains of Limiter::try_acquire_async: each completion (on the Redis
// client's I/O thread) commits its lease and starts its chain's next acquire, so N are
// always in flight and no thread waits per request (as a Node.js client keeps N promises).
// --print-argv prints the ARGV that RedisStore::apply sends to its script for one such
// acquire (space-separated, after the key), so a raw EVALSHA can run the very same work.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "admit/limiter.hpp"
#include "admit/store/redis_store.hpp"
#include "admit/store/sqlite_store.hpp"

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::int64_t kHuge = 1'000'000'000'000;  // per minute: nothing is ever denied
constexpr std::string_view kResource = "gpt-4o";
constexpr int kEntities = 1000;

struct Args {
  std::string url;
  std::string sqlite;
  int inflight = 1;
  double duration = 5.0;
  double warmup = -1;  // < 0: min(1 s, duration / 5)
  bool print_argv = false;
  bool with_stats = false;
  bool async = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "admit_redis_bench: " << why << "\n"
            << "usage: admit_redis_bench (--url redis://HOST:PORT | --sqlite PATH | --print-argv)\n"
            << "         [--inflight N] [--duration S] [--warmup S] [--with-stats] [--async]\n";
  std::exit(2);
}

double parse_double(std::string_view name, const std::string& v) {
  try {
    std::size_t used = 0;
    const double d = std::stod(v, &used);
    if (used != v.size() || !(d >= 0)) usage("bad " + std::string(name) + ": " + v);
    return d;
  } catch (const std::exception&) {
    usage("bad " + std::string(name) + ": " + v);
  }
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--url") {
      a.url = value();
    } else if (arg == "--sqlite") {
      a.sqlite = value();
    } else if (arg == "--inflight") {
      const double n = parse_double(arg, value());
      if (n < 1 || n > 4096 || n != static_cast<double>(static_cast<int>(n))) {
        usage("--inflight must be an integer in 1..4096");
      }
      a.inflight = static_cast<int>(n);
    } else if (arg == "--duration") {
      a.duration = parse_double(arg, value());
      if (a.duration <= 0) usage("--duration must be > 0");
    } else if (arg == "--warmup") {
      a.warmup = parse_double(arg, value());
    } else if (arg == "--print-argv") {
      a.print_argv = true;
    } else if (arg == "--with-stats") {
      a.with_stats = true;
    } else if (arg == "--async") {
      a.async = true;
    } else if (arg == "-h" || arg == "--help") {
      usage("help");
    } else {
      usage("unknown argument " + std::string(arg));
    }
  }
  const int modes = !a.url.empty() + !a.sqlite.empty() + a.print_argv;
  if (modes != 1) usage("give exactly one of --url, --sqlite, --print-argv");
  if (a.async && !a.sqlite.empty()) usage("--async needs --url (SqliteStore is synchronous)");
  if (a.warmup < 0) a.warmup = std::min(1.0, a.duration / 5);
  return a;
}

std::vector<admit::Limit> limits() {
  return {admit::Limit::per_minute("rpm", kHuge), admit::Limit::per_minute("tpm", kHuge)};
}

const admit::Amounts& amounts() {
  static const admit::Amounts a{{"rpm", 1}, {"tpm", 100}};
  return a;
}

// The ARGV of RedisStore::apply (src/store/redis/redis_store.cpp) for the acquire that
// Limiter::try_acquire makes here, alone in its script run, on the script's fast path (rate
// items only): op 9, then one JSON array (no spaces) of the limit table (2 limits, 6 values
// each) and the op: flags (0 acquire, +2 report with_stats), now 0 (server time), 2 items of
// (key 1, limit, amount); then the limits' fields.
void print_argv(bool with_stats) {
  const std::vector<admit::Limit> ls = limits();
  std::vector<std::int64_t> nums = {static_cast<std::int64_t>(ls.size())};
  for (const admit::Limit& l : ls) {
    const admit::RateParams& p = l.rate();
    nums.insert(nums.end(), {l.capacity(), p.a, p.b, p.r, p.tol_us, p.tol_rem});
  }
  nums.insert(nums.end(), {with_stats ? 2 : 0, 0, static_cast<std::int64_t>(ls.size())});
  for (std::size_t j = 0; j < ls.size(); ++j) {  // key index 1: every item on the one key
    nums.insert(nums.end(), {1, static_cast<std::int64_t>(j + 1), amounts().get(ls[j].name())});
  }
  std::string json;
  for (const std::int64_t x : nums) {
    json += json.empty() ? '[' : ',';
    json += std::to_string(x);
  }
  std::vector<std::string> v = {"9", json + ']'};
  for (const admit::Limit& l : ls) v.push_back("s" + l.name());
  for (std::size_t i = 0; i < v.size(); ++i) std::cout << (i ? " " : "") << v[i];
  std::cout << "\n";
}

struct Result {
  double ops = 0;
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
  std::uint64_t count = 0;
  std::uint64_t denied = 0;
  std::uint64_t errors = 0;
};

double percentile(const std::vector<std::int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return 0;
  const auto idx = static_cast<std::size_t>(q * static_cast<double>(sorted_ns.size() - 1) + 0.5);
  return static_cast<double>(sorted_ns[std::min(idx, sorted_ns.size() - 1)]) / 1000.0;
}

// Fills r's rates and percentiles from the latencies counted over `secs` seconds.
void summarize(Result& r, std::vector<std::int64_t>& all, const std::string& first_error,
               double secs) {
  if (!first_error.empty()) {
    std::cerr << "admit_redis_bench: " << r.errors << " failed acquires, first: " << first_error
              << "\n";
  }
  std::sort(all.begin(), all.end());
  r.count = all.size();
  r.ops = static_cast<double>(all.size()) / secs;
  r.p50_us = percentile(all, 0.50);
  r.p99_us = percentile(all, 0.99);
  double sum = 0;
  for (const auto x : all) sum += static_cast<double>(x);
  r.mean_us = all.empty() ? 0 : sum / static_cast<double>(all.size()) / 1000.0;
}

// `inflight` threads loop try_acquire + commit on entities "user-<k>": thread t takes
// k = t, t + inflight, t + 2 * inflight, ... (mod kEntities), so threads rarely meet on one
// entity. Only operations that start after the warm-up and end before the stop count.
Result run(admit::Limiter& limiter, const Args& a) {
  std::vector<std::string> entities;
  entities.reserve(kEntities);
  for (int i = 0; i < kEntities; ++i) entities.push_back("user-" + std::to_string(i));

  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<int> ready{0};
  struct PerThread {
    std::vector<std::int64_t> lat_ns;
    std::uint64_t denied = 0, errors = 0;
    std::string first_error;
  };
  std::vector<PerThread> per(static_cast<std::size_t>(a.inflight));
  const double expect = 200'000 * (a.duration + 1) / a.inflight;  // a generous guess
  for (auto& p : per) p.lat_ns.reserve(static_cast<std::size_t>(std::min(expect, 4e6)));

  std::vector<std::thread> threads;
  threads.reserve(per.size());
  for (int t = 0; t < a.inflight; ++t) {
    threads.emplace_back([&, t] {
      PerThread& me = per[static_cast<std::size_t>(t)];
      std::size_t k = static_cast<std::size_t>(t);
      ready.fetch_add(1);
      while (!stop.load(std::memory_order_relaxed)) {
        const std::string& entity = entities[k % entities.size()];
        k += static_cast<std::size_t>(a.inflight);
        const bool counted = measuring.load(std::memory_order_relaxed);
        const auto t0 = Clock::now();
        try {
          admit::Lease lease = limiter.try_acquire(entity, kResource, amounts());
          if (!lease.allowed()) ++me.denied;
          lease.commit();
        } catch (const std::exception& e) {
          if (me.errors++ == 0) me.first_error = e.what();
          continue;
        }
        const auto t1 = Clock::now();
        if (counted && !stop.load(std::memory_order_relaxed)) {
          me.lat_ns.push_back(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
        }
      }
    });
  }
  while (ready.load() < a.inflight) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::duration<double>(a.warmup));
  const auto start = Clock::now();
  measuring.store(true);
  std::this_thread::sleep_for(std::chrono::duration<double>(a.duration));
  stop.store(true);
  const auto end = Clock::now();
  for (auto& th : threads) th.join();

  std::vector<std::int64_t> all;
  Result r;
  std::string first_error;
  for (auto& p : per) {
    all.insert(all.end(), p.lat_ns.begin(), p.lat_ns.end());
    r.denied += p.denied;
    r.errors += p.errors;
    if (first_error.empty()) first_error = p.first_error;
  }
  summarize(r, all, first_error, std::chrono::duration<double>(end - start).count());
  return r;
}

// `inflight` chains of try_acquire_async + commit, started here: each completion starts its
// chain's next acquire (entities as in run(): chain t takes k = t, t + inflight, ...), until
// the stop; then this thread waits for the last ones. Completions run on the client's I/O
// thread (or inline, when the store answers at once), so the latencies are kept under a
// mutex that is rarely contended.
Result run_async(admit::Limiter& limiter, const Args& a) {
  struct State {
    State(admit::Limiter& l, std::size_t n) : limiter(l), chains(n) {}
    admit::Limiter& limiter;
    std::vector<std::string> entities;
    std::size_t chains;
    std::atomic<bool> measuring{false}, stop{false};
    std::mutex mu;
    std::condition_variable idle;
    std::size_t running = 0;  // chains not yet stopped
    std::vector<std::int64_t> lat_ns;
    std::uint64_t denied = 0, errors = 0;
    std::string first_error;

    void start(std::size_t k) {
      const auto t0 = Clock::now();
      const bool counted = measuring.load(std::memory_order_relaxed);
      limiter.try_acquire_async(
          entities[k % entities.size()], kResource, amounts(),
          [this, k, t0, counted](admit::Lease lease) { done(k, t0, counted, std::move(lease)); });
    }
    void done(std::size_t k, Clock::time_point t0, bool counted, admit::Lease lease) {
      const bool allowed = lease.allowed();
      const admit::Decision& d = lease.decision();
      const bool failed = !allowed && d.code == admit::Code::store_unavailable;
      lease.commit();
      const auto t1 = Clock::now();
      const bool stopping = stop.load(std::memory_order_relaxed);
      {
        std::lock_guard g(mu);
        if (failed) {
          if (errors++ == 0) first_error = d.reason;
        } else if (counted && !stopping) {
          lat_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
          if (!allowed) ++denied;
        }
        if (stopping) {
          if (--running == 0) idle.notify_all();
          return;
        }
      }
      start(k + chains);
    }
  };
  State st(limiter, static_cast<std::size_t>(a.inflight));
  st.entities.reserve(kEntities);
  for (int i = 0; i < kEntities; ++i) st.entities.push_back("user-" + std::to_string(i));
  st.lat_ns.reserve(static_cast<std::size_t>(std::min(300'000 * (a.duration + 1), 4e7)));
  st.running = st.chains;
  for (std::size_t t = 0; t < st.chains; ++t) st.start(t);
  std::this_thread::sleep_for(std::chrono::duration<double>(a.warmup));
  const auto start = Clock::now();
  st.measuring.store(true);
  std::this_thread::sleep_for(std::chrono::duration<double>(a.duration));
  st.stop.store(true);
  const auto end = Clock::now();
  {
    std::unique_lock g(st.mu);
    st.idle.wait(g, [&] { return st.running == 0; });
  }
  Result r;
  r.denied = st.denied;
  r.errors = st.errors;
  summarize(r, st.lat_ns, st.first_error, std::chrono::duration<double>(end - start).count());
  return r;
}

void print(const Result& r, const Args& a, std::string_view store, std::string_view extra) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"store\": \"%s\", \"inflight\": %d, \"duration_s\": %.3f, \"ops\": %.1f, "
                "\"p50_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, \"count\": %llu, "
                "\"denied\": %llu, \"errors\": %llu, \"async\": %s",
                std::string(store).c_str(), a.inflight, a.duration, r.ops, r.p50_us, r.p99_us,
                r.mean_us, static_cast<unsigned long long>(r.count),
                static_cast<unsigned long long>(r.denied),
                static_cast<unsigned long long>(r.errors), a.async ? "true" : "false");
  std::cout << buf << extra << "}\n";
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.print_argv) {
    print_argv(a.with_stats);
    return 0;
  }
  try {
    static const admit::SystemClock clock;
    if (!a.url.empty()) {
      admit::RedisStoreOptions o;
      o.client = admit::redis::parse_url(a.url);
      o.server_time = true;
      admit::RedisStore store(o);
      admit::Limiter limiter(store, clock);
      limiter.set_limits(std::string(kResource), limits());
      const Result r = a.async ? run_async(limiter, a) : run(limiter, a);
      const admit::RedisStoreStats st = store.stats();
      const admit::redis::ClientStats cs = store.client().stats();
      // Requests per socket write: how much the client's pipelining batched.
      const double per_write =
          cs.writes > 0 ? static_cast<double>(cs.commands) / static_cast<double>(cs.writes) : 0;
      char extra[256];
      std::snprintf(extra, sizeof extra,
                    ", \"scripts\": %llu, \"local_denials\": %llu, \"commands_per_write\": %.2f",
                    static_cast<unsigned long long>(st.scripts),
                    static_cast<unsigned long long>(st.local_denials), per_write);
      print(r, a, "redis", extra);
    } else {
      admit::SqliteStoreOptions o;
      o.path = a.sqlite;
      o.durability = admit::Durability::per_op;
      admit::SqliteStore store(o);
      admit::Limiter limiter(store, clock);
      limiter.set_limits(std::string(kResource), limits());
      const Result r = run(limiter, a);
      print(r, a, "sqlite", ", \"durability\": \"per_op\"");
    }
  } catch (const std::exception& e) {
    std::cerr << "admit_redis_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
