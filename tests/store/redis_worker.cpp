// A separate process for the RedisStore tests (tests/store/redis_store_test.cpp), which start
// it to have state held by, or limits shared with, another process:
//
//   redis_worker hold  <server> <prefix> <now_us|0> <ttl_us> <leases>
//       acquires <leases> leases of one slot each on concurrency limit "slots" (capacity 8) of
//       entity "holder", resource "m"; prints "held <n>" and waits to be killed.
//       now_us 0: Redis server time; otherwise the caller's time (fixed).
//   redis_worker fleet <server> <prefix> <threads> <start_us> <end_us> <rate> <burst>
//       waits until the Redis server's clock reaches start_us, then <threads> threads call
//       try_acquire on rate limit "shared" (<rate> per second, burst <burst>) of entity "fleet",
//       resource "m", until the server's clock passes end_us; prints "admitted <n> attempts
//       <m> first <server time before the first attempt> last <server time after the last
//       attempt>" (µs; first: the earliest of the threads, last: the latest).
//   redis_worker config <server> <prefix> <rpm>
//       through a Limiter keeping its limits in the store (ConfigMode::store), sets resource
//       "m"'s limits to rate limit "rpm" (<rpm> per minute); prints "set" and exits.
//
// <server>: a redis:// URL (standalone) or a comma-separated seed list (cluster).
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/redis_store.hpp"

namespace {

using admit::Micros;

Micros number(const char* s) {
  Micros v = 0;
  const std::string_view sv(s);
  if (std::from_chars(sv.data(), sv.data() + sv.size(), v).ec != std::errc{}) {
    std::fprintf(stderr, "redis_worker: not a number: %s\n", s);
    std::exit(2);
  }
  return v;
}

admit::RedisStoreOptions store_options(std::string_view server, const char* prefix) {
  admit::RedisStoreOptions o;
  if (server.starts_with("redis://")) {
    o.client = admit::redis::parse_url(server);
  } else {
    o.client.seeds = admit::redis::parse_endpoints(server);
    o.client.cluster = true;
  }
  o.prefix = prefix;
  return o;
}

Micros server_now(admit::redis::Client& c) {
  const auto r = c.command({"TIME"});
  return number(r.elements.at(0).str.c_str()) * 1'000'000 + number(r.elements.at(1).str.c_str());
}

int hold(std::string_view server, const char* prefix, Micros now, Micros ttl, Micros leases) {
  admit::RedisStoreOptions o = store_options(server, prefix);
  o.server_time = now == 0;
  admit::RedisStore store(o);
  admit::ManualClock manual(now == 0 ? 1 : now);
  admit::SystemClock system;
  const admit::Clock& clock = now == 0 ? static_cast<const admit::Clock&>(system) : manual;
  admit::Limiter limiter(store, clock, admit::LimiterOptions{.ns = "workers", .lease_ttl = ttl});
  limiter.set_limits("m", {admit::Limit::concurrency("slots", 8)});
  std::vector<admit::Lease> held;
  for (Micros i = 0; i < leases; ++i) {
    admit::Lease l = limiter.try_acquire("holder", "m", {});
    if (!l.allowed()) break;
    held.push_back(std::move(l));
  }
  std::printf("held %zu\n", held.size());
  std::fflush(stdout);
  for (;;) pause();  // killed by the test, leases unreleased
}

int fleet(std::string_view server, const char* prefix, int threads, Micros start, Micros end,
          Micros rate, Micros burst) {
  admit::RedisStore store(store_options(server, prefix));
  admit::SystemClock clock;
  admit::Limiter limiter(store, clock, admit::LimiterOptions{.ns = "workers"});
  limiter.set_limits("m", {admit::Limit::per_second("shared", rate, burst)});
  auto& client = store.client();
  while (server_now(client) < start) {
  }
  std::atomic<std::int64_t> admitted{0}, attempts{0};
  std::atomic<Micros> first{std::numeric_limits<Micros>::max()};
  std::atomic<Micros> last{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      const Micros t_first = server_now(client);  // demand starts after this instant
      Micros seen_first = first.load();
      while (t_first < seen_first && !first.compare_exchange_weak(seen_first, t_first)) {
      }
      for (;;) {
        admit::Lease l = limiter.try_acquire("fleet", "m", {{"shared", 1}});
        attempts.fetch_add(1);
        if (l.allowed()) admitted.fetch_add(1);
        l.commit();
        const Micros t_now = server_now(client);  // after the attempt, by the server's clock
        if (t_now >= end) {
          Micros seen = last.load();
          while (t_now > seen && !last.compare_exchange_weak(seen, t_now)) {
          }
          return;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  std::printf("admitted %lld attempts %lld first %lld last %lld\n",
              static_cast<long long>(admitted.load()), static_cast<long long>(attempts.load()),
              static_cast<long long>(first.load()), static_cast<long long>(last.load()));
  return 0;
}

int config(std::string_view server, const char* prefix, Micros rpm) {
  admit::RedisStore store(store_options(server, prefix));
  admit::SystemClock clock;
  admit::Limiter limiter(
      store, clock, admit::LimiterOptions{.ns = "workers", .config = admit::ConfigMode::store});
  limiter.set_limits("m", {admit::Limit::per_minute("rpm", rpm)});
  std::printf("set\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string_view mode = argc > 1 ? argv[1] : "";
    if (mode == "hold" && argc == 7) {
      return hold(argv[2], argv[3], number(argv[4]), number(argv[5]), number(argv[6]));
    }
    if (mode == "fleet" && argc == 9) {
      return fleet(argv[2], argv[3], static_cast<int>(number(argv[4])), number(argv[5]),
                   number(argv[6]), number(argv[7]), number(argv[8]));
    }
    if (mode == "config" && argc == 5) return config(argv[2], argv[3], number(argv[4]));
    std::fprintf(stderr, "usage: see tests/store/redis_worker.cpp\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "redis_worker: %s\n", e.what());
    return 1;
  }
}
