// admit's distributed and durable stores under load: Limiter::try_acquire of two rate limits
// (rpm 1 + tpm 100, limits so large nothing is denied) over a RedisStore or a SqliteStore,
// from N threads at once for a fixed time. Prints one JSON line:
//   {"ops": <acquires per second>, "p50_us": ..., "p99_us": ..., ...}
// scripts/bench-redis runs it beside redis-benchmark and rate-limiter-flexible on one server.
//
//   admit_redis_bench --url redis://127.0.0.1:PORT [--inflight N] [--duration S]
//   admit_redis_bench --sqlite PATH [--inflight N] [--duration S]
//   admit_redis_bench --print-argv [--with-stats]
//
// --print-argv prints the ARGV that RedisStore::apply sends to its script for one such
// acquire (space-separated, after the key), so a raw EVALSHA can run the very same work.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
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
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "admit_redis_bench: " << why << "\n"
            << "usage: admit_redis_bench (--url redis://HOST:PORT | --sqlite PATH | --print-argv)\n"
            << "         [--inflight N] [--duration S] [--warmup S] [--with-stats]\n";
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
    } else if (arg == "-h" || arg == "--help") {
      usage("help");
    } else {
      usage("unknown argument " + std::string(arg));
    }
  }
  const int modes = !a.url.empty() + !a.sqlite.empty() + a.print_argv;
  if (modes != 1) usage("give exactly one of --url, --sqlite, --print-argv");
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
// Limiter::try_acquire makes here, on the script's fast path (rate items only): op 9
// (acquire), now 0 (server time), report (with_stats), then 9 values per item.
void print_argv(bool with_stats) {
  std::vector<std::string> v = {"9", "0", with_stats ? "1" : "0"};
  for (const admit::Limit& l : limits()) {
    const admit::RateParams& p = l.rate();
    v.push_back("1");  // key index (1-based): every item on the one key
    v.push_back("s" + l.name());
    for (const std::int64_t x : {amounts().get(l.name()), l.capacity(), p.a, p.b, p.r, p.tol_us,
                                 p.tol_rem}) {
      v.push_back(std::to_string(x));
    }
  }
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

  Result r;
  std::vector<std::int64_t> all;
  std::string first_error;
  for (auto& p : per) {
    all.insert(all.end(), p.lat_ns.begin(), p.lat_ns.end());
    r.denied += p.denied;
    r.errors += p.errors;
    if (first_error.empty()) first_error = p.first_error;
  }
  if (!first_error.empty()) {
    std::cerr << "admit_redis_bench: " << r.errors << " failed acquires, first: " << first_error
              << "\n";
  }
  std::sort(all.begin(), all.end());
  const double secs = std::chrono::duration<double>(end - start).count();
  r.count = all.size();
  r.ops = static_cast<double>(all.size()) / secs;
  r.p50_us = percentile(all, 0.50);
  r.p99_us = percentile(all, 0.99);
  double sum = 0;
  for (const auto x : all) sum += static_cast<double>(x);
  r.mean_us = all.empty() ? 0 : sum / static_cast<double>(all.size()) / 1000.0;
  return r;
}

void print(const Result& r, const Args& a, std::string_view store, std::string_view extra) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"store\": \"%s\", \"inflight\": %d, \"duration_s\": %.3f, \"ops\": %.1f, "
                "\"p50_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, \"count\": %llu, "
                "\"denied\": %llu, \"errors\": %llu",
                std::string(store).c_str(), a.inflight, a.duration, r.ops, r.p50_us, r.p99_us,
                r.mean_us, static_cast<unsigned long long>(r.count),
                static_cast<unsigned long long>(r.denied),
                static_cast<unsigned long long>(r.errors));
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
      const Result r = run(limiter, a);
      const admit::RedisStoreStats st = store.stats();
      const admit::redis::ClientStats cs = store.client().stats();
      // Requests per socket write: how much the client's pipelining batched.
      const double per_write = cs.writes > 0 ? static_cast<double>(cs.commands) /
                                                   static_cast<double>(cs.writes)
                                             : 0;
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
