// admit's in-process benchmarks, with their yardsticks in the same binary.
// Reproduce: scripts/bench (Release build, then this binary with repetitions).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"

// ---- Allocation counting: every operator new of this process, per thread. ----
// The cases report `allocs_per_iter` (operator new calls per iteration, timed loop only):
// the allowed path of a decision should allocate nothing (std::string, vectors, nodes).
namespace {
thread_local std::uint64_t t_allocs = 0;
void* counted_alloc(std::size_t n) {
  ++t_allocs;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

// Counts this thread's allocations from construction to report().
class AllocCounter {
 public:
  AllocCounter() : start_(t_allocs) {}
  // `per`: decisions per iteration; the counter is then per decision.
  void report(benchmark::State& state, std::size_t per = 1) const {
    state.counters["allocs_per_iter"] =
        benchmark::Counter(static_cast<double>(t_allocs - start_) / static_cast<double>(per),
                           benchmark::Counter::kAvgIterations);
  }

 private:
  std::uint64_t start_;
};

using admit::AcquireRequest;
using admit::Amounts;
using admit::ConfigMode;
using admit::kMicrosPerDay;
using admit::Limit;
using admit::Limiter;
using admit::LimiterOptions;
using admit::MemoryStore;
using admit::MemoryStoreOptions;
using admit::Micros;
using admit::SystemClock;

// The clock every case reads once per call: the limiter's default clock, through the same
// virtual interface.
const admit::Clock& bench_clock() {
  static const SystemClock clock;
  return clock;
}

// ---- Yardsticks: a bare GCRA on one key, T = 1 µs, burst 1e12 (always admits). ----

struct MutexGcra {
  std::mutex mu;
  Micros tat = 0;
  bool try_acquire(Micros now, std::int64_t n) {
    std::lock_guard g(mu);
    const Micros base = tat > now ? tat : now;
    const Micros next = base + n;  // T = 1 µs
    if (next - now > 1'000'000'000'000) return false;
    tat = next;
    return true;
  }
};

void BM_Baseline_MutexGcra(benchmark::State& state) {
  static MutexGcra g;
  const admit::Clock& clock = bench_clock();
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += g.try_acquire(clock.now(), 1);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}
BENCHMARK(BM_Baseline_MutexGcra);

struct AtomicGcra {
  std::atomic<Micros> tat{0};
  bool try_acquire(Micros now, std::int64_t n) {
    Micros cur = tat.load(std::memory_order_relaxed);
    for (;;) {
      const Micros base = cur > now ? cur : now;
      const Micros next = base + n;
      if (next - now > 1'000'000'000'000) return false;
      if (tat.compare_exchange_weak(cur, next, std::memory_order_acq_rel)) return true;
    }
  }
};

void BM_Baseline_AtomicGcra(benchmark::State& state) {
  static AtomicGcra g;
  const admit::Clock& clock = bench_clock();
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += g.try_acquire(clock.now(), 1);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}
BENCHMARK(BM_Baseline_AtomicGcra);

// ---- admit ----

// Large limits so the cases measure the admit path, not denials.
void configure(Limiter& l) {
  l.set_limits("gpt-4o", {Limit::per_minute("rpm", 1'000'000'000'000)});
  l.set_limits(
      "gpt-4o-4",
      {Limit::per_minute("rpm", 1'000'000'000'000), Limit::per_minute("tpm", 1'000'000'000'000),
       Limit::per_hour("rph", 1'000'000'000'000),
       Limit::daily("rpd", 1'000'000'000'000, "00:00", "America/Los_Angeles")});
  // RandomKey: 1000 a day per key; one request keeps a key active (its bucket not full) for
  // 86.4 s, longer than the run, so every key stays in the store.
  l.set_limits("gpt-4o-day", {Limit::per_day("rpd", 1000)});
}

// try_acquire + commit of one rate limit on one key, reading `clock`.
void one_key(benchmark::State& state, const admit::Clock& clock) {
  MemoryStore store;
  Limiter limiter(store, clock);
  configure(limiter);
  const Amounts amounts{{"rpm", 1}};
  std::int64_t admitted = 0;
  (void)limiter.consume("user-42", "gpt-4o", amounts);  // the plan is cached before counting
  const AllocCounter allocs;
  for (auto _ : state) {
    admit::Lease lease = limiter.try_acquire("user-42", "gpt-4o", amounts);
    admitted += lease.allowed();
    lease.commit();
  }
  allocs.report(state);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}

void BM_TryAcquire_OneKey(benchmark::State& state) { one_key(state, bench_clock()); }
BENCHMARK(BM_TryAcquire_OneKey);

// The same with admit::CoarseClock (CLOCK_MONOTONIC_COARSE: a cached reading, stale by at most
// resolution(), reported as the counter staleness_bound_us).
void BM_TryAcquire_OneKey_CoarseClock(benchmark::State& state) {
  static const admit::CoarseClock clock;
  one_key(state, clock);
  state.counters["staleness_bound_us"] = static_cast<double>(clock.resolution());
}
BENCHMARK(BM_TryAcquire_OneKey_CoarseClock);

// The asynchronous acquire (Limiter::try_acquire_async) + commit on one key. A MemoryStore
// answers inside the call, so the callback runs before try_acquire_async returns.
void BM_AsyncAcquire_OneKey(benchmark::State& state) {
  MemoryStore store;
  Limiter limiter(store, bench_clock());
  configure(limiter);
  const Amounts amounts{{"rpm", 1}};
  std::int64_t admitted = 0;
  auto done = [&admitted](admit::Lease lease) {
    admitted += lease.allowed();
    lease.commit();
  };
  limiter.try_acquire_async("user-42", "gpt-4o", amounts, done);  // warm: plan, spare context
  admitted = 0;
  const AllocCounter allocs;
  for (auto _ : state) limiter.try_acquire_async("user-42", "gpt-4o", amounts, done);
  allocs.report(state);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}
BENCHMARK(BM_AsyncAcquire_OneKey);

void BM_TryAcquire_FourLimits(benchmark::State& state) {
  MemoryStore store;
  Limiter limiter(store, bench_clock());
  configure(limiter);
  const Amounts amounts{{"rpm", 1}, {"tpm", 1200}, {"rph", 1}, {"rpd", 1}};
  std::int64_t admitted = 0;
  (void)limiter.consume("user-42", "gpt-4o-4", amounts);  // the plan is cached before counting
  const AllocCounter allocs;
  for (auto _ : state) {
    admit::Lease lease = limiter.try_acquire("user-42", "gpt-4o-4", amounts);
    admitted += lease.allowed();
    lease.commit();
  }
  allocs.report(state);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}
BENCHMARK(BM_TryAcquire_FourLimits);

// 1000 entities in turn, so every call misses the per-thread plan cache and resolves its
// limits: arg 0 from the Limiter's own configuration (ConfigMode::local, the baseline), arg 1
// from limits kept in the store through the config cache (ConfigMode::store; every entry is
// cached after the first round).
void BM_TryAcquire_RotatingEntities(benchmark::State& state) {
  MemoryStore store;
  LimiterOptions o;
  o.config = state.range(0) == 0 ? ConfigMode::local : ConfigMode::store;
  o.config_ttl = kMicrosPerDay;
  Limiter limiter(store, bench_clock(), o);
  configure(limiter);
  std::vector<std::string> entities;
  for (int i = 0; i < 1000; ++i) entities.push_back("user-" + std::to_string(i));
  const Amounts amounts{{"rpm", 1}};
  std::int64_t admitted = 0;
  std::size_t i = 0;
  const AllocCounter allocs;
  for (auto _ : state) {
    admit::Lease lease = limiter.try_acquire(entities[i], "gpt-4o", amounts);
    i = i + 1 == entities.size() ? 0 : i + 1;
    admitted += lease.allowed();
    lease.commit();
  }
  allocs.report(state);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
  state.SetLabel(state.range(0) == 0 ? "config local" : "config in the store");
}
BENCHMARK(BM_TryAcquire_RotatingEntities)->Arg(0)->Arg(1);

std::size_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// Formats "user-<n>" into buf; returns its view.
std::string_view user_key(char* buf, std::uint64_t n) {
  std::memcpy(buf, "user-", 5);
  auto r = std::to_chars(buf + 5, buf + 32, n);
  return {buf, static_cast<std::size_t>(r.ptr - buf)};
}

// `keys` keys of one daily limit, each used once, in a store made with `options`; reports
// memory per key. The same setup for the single and the batched random-key cases.
struct RandomKeys {
  std::unique_ptr<MemoryStore> store;
  std::unique_ptr<Limiter> limiter;
  std::uint64_t keys = 0;
  double rss_per_key = 0;

  RandomKeys(std::uint64_t n, const MemoryStoreOptions& options) : keys(n) {
    const std::size_t rss0 = rss_bytes();
    store = std::make_unique<MemoryStore>(options);
    limiter = std::make_unique<Limiter>(*store, bench_clock());
    configure(*limiter);
    const Amounts amounts{{"rpd", 1}};
    char buf[32];
    for (std::uint64_t i = 0; i < keys; ++i) {
      limiter->try_acquire(user_key(buf, i), "gpt-4o-day", amounts).commit();
    }
    rss_per_key = static_cast<double>(rss_bytes() - rss0) / static_cast<double>(keys);
  }
  void report(benchmark::State& state) const {
    state.counters["bytes_per_key"] = rss_per_key;
    state.counters["table_bytes_per_key"] =
        static_cast<double>(store->memory_bytes()) / static_cast<double>(keys);
    state.counters["active_keys"] = static_cast<double>(store->size());
  }
};

void random_key(benchmark::State& state, const MemoryStoreOptions& options) {
  const RandomKeys rk(static_cast<std::uint64_t>(state.range(0)), options);
  const Amounts amounts{{"rpd", 1}};
  char buf[32];
  std::mt19937_64 rng(42);
  std::int64_t admitted = 0;
  const AllocCounter allocs;
  for (auto _ : state) {
    admit::Lease lease =
        rk.limiter->try_acquire(user_key(buf, rng() % rk.keys), "gpt-4o-day", amounts);
    admitted += lease.allowed();
    lease.commit();
  }
  allocs.report(state);
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
  rk.report(state);
}

void BM_TryAcquire_RandomKey(benchmark::State& state) { random_key(state, {}); }
BENCHMARK(BM_TryAcquire_RandomKey)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kNanosecond);

// The same without huge pages for the store's tables (MemoryStoreOptions::huge_pages).
void BM_TryAcquire_RandomKey_NoHugePages(benchmark::State& state) {
  random_key(state, MemoryStoreOptions{.huge_pages = false});
}
BENCHMARK(BM_TryAcquire_RandomKey_NoHugePages)->Arg(10'000'000)->Unit(benchmark::kNanosecond);

// try_acquire_many of 64 random keys per call, then a commit of each; time per decision.
void BM_TryAcquireMany_RandomKey(benchmark::State& state) {
  const RandomKeys rk(static_cast<std::uint64_t>(state.range(0)), {});
  constexpr std::size_t kBatch = 64;
  constexpr std::int64_t kDecisions = kBatch;
  const Amounts amounts{{"rpd", 1}};
  std::vector<std::array<char, 32>> bufs(kBatch);
  std::vector<AcquireRequest> batch;
  std::mt19937_64 rng(42);
  std::int64_t admitted = 0;
  const AllocCounter allocs;
  for (auto _ : state) {
    batch.clear();
    for (auto& b : bufs)
      batch.push_back({user_key(b.data(), rng() % rk.keys), "gpt-4o-day", amounts});
    std::vector<admit::Lease> leases = rk.limiter->try_acquire_many(batch);
    for (admit::Lease& lease : leases) {
      admitted += lease.allowed();
      lease.commit();
    }
  }
  allocs.report(state, kBatch);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kDecisions));
  if (admitted != static_cast<std::int64_t>(state.iterations() * kDecisions)) {
    state.SkipWithError("denied");
  }
  rk.report(state);
  state.counters["ns_per_decision"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kDecisions),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_TryAcquireMany_RandomKey)->Arg(10'000'000)->Unit(benchmark::kNanosecond);

// Shared between the threads of one run.
struct Shared {
  std::unique_ptr<MemoryStore> store;
  std::unique_ptr<Limiter> limiter;
};
Shared g_shared;

void setup_shared(const benchmark::State&) {
  g_shared.store = std::make_unique<MemoryStore>();
  g_shared.limiter = std::make_unique<Limiter>(*g_shared.store, bench_clock());
  configure(*g_shared.limiter);
}
void teardown_shared(const benchmark::State&) {
  g_shared.limiter.reset();
  g_shared.store.reset();
}

void BM_TryAcquire_TwoThreads_DistinctKeys(benchmark::State& state) {
  const std::string entity = "user-" + std::to_string(state.thread_index());
  const Amounts amounts{{"rpm", 1}};
  std::int64_t admitted = 0;
  for (auto _ : state) {
    admit::Lease lease = g_shared.limiter->try_acquire(entity, "gpt-4o", amounts);
    admitted += lease.allowed();
    lease.commit();
  }
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}
BENCHMARK(BM_TryAcquire_TwoThreads_DistinctKeys)
    ->Threads(2)
    ->Setup(setup_shared)
    ->Teardown(teardown_shared)
    ->UseRealTime();

void BM_TryAcquire_TwoThreads_SameKey(benchmark::State& state) {
  const Amounts amounts{{"rpm", 1}};
  std::int64_t admitted = 0;
  for (auto _ : state) {
    admit::Lease lease = g_shared.limiter->try_acquire("user-42", "gpt-4o", amounts);
    admitted += lease.allowed();
    lease.commit();
  }
  if (admitted != static_cast<std::int64_t>(state.iterations())) state.SkipWithError("denied");
}
BENCHMARK(BM_TryAcquire_TwoThreads_SameKey)
    ->Threads(2)
    ->Setup(setup_shared)
    ->Teardown(teardown_shared)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
