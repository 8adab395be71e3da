// Adaptation benchmark, in simulated time: a closed-loop client fleet sends requests of
// heavy-tailed sizes to the simulated provider (admit::sim::ProviderModel, hidden RPM/TPM)
// through four strategies, and the hidden limits halve half-way through:
//   none            no limiter; a 429 is retried after its retry-after
//   static          a Limiter with rpm/tpm 20% above the initial hidden limits
//   aimd            a Limiter with one adaptive (AIMD) limit on requests, no headers read
//   discovery_aimd  the adaptive limit plus Discovery reading every response's headers
// Reported per strategy: goodput (accepted tokens per minute / hidden TPM, after warm-up),
// share_429 (429s / all provider responses) and settle_s (time from the halving to the end
// of the last second with a 429 in it; the rest of the run if 429s never stop).
// Deterministic: one seed (printed), a ManualClock, no threads. Usage:
//   admit_adapt_bench [--json] [--seed N] [--duration S] [--check]
// --check exits 1 unless discovery_aimd meets the goals (goodput >= 0.95, 429s <= 1%,
// settled within 2 s).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "admit/adapt/discovery.hpp"
#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/sim/provider.hpp"
#include "admit/store/memory_store.hpp"
#include "bounded_pareto.hpp"

namespace {

using admit::Micros;
constexpr Micros kSec = admit::kMicrosPerSecond;
constexpr Micros kStart = 1'700'000'000'000'000;

struct Config {
  std::uint64_t seed = 42;
  Micros duration = 240 * kSec;  // halving at duration / 2
  // Excluded from goodput: the provider's buckets start full (a minute's worth), and a
  // saturating client needs a while to drain them.
  Micros warmup = 30 * kSec;
  int workers = 64;
  admit::sim::SimLimits hidden{600, 100'000};
  // Share of the hidden TPM another client of the same account (without admit) asks for:
  // Poisson arrivals, same sizes, its 429s dropped. 0 = admit's client is alone.
  double background = 0;
};

enum class Strategy { none, fixed, aimd, discovery_aimd };
const char* name_of(Strategy s) {
  switch (s) {
    case Strategy::none:
      return "none";
    case Strategy::fixed:
      return "static";
    case Strategy::aimd:
      return "aimd";
    case Strategy::discovery_aimd:
      return "discovery_aimd";
  }
  return "?";
}

struct Result {
  double goodput = 0;
  double account_utilisation = 0;  // with the other client's accepted tokens
  double goodput_before = 0;
  double goodput_after = 0;
  double share_429 = 0;
  double settle_s = 0;
  bool settled = false;
  long long responses = 0;
  long long rejected = 0;
};

// Request cost (prompt + max_tokens): bounded Pareto, alpha 1.5 on [100, 8000] (mean ~267).
constexpr admit::bench::BoundedPareto kCost{1.5, 100, 8000};

// Time to the full response: lognormal around 1.5 s, within [0.2 s, 10 s]; 429s come fast.
Micros draw_latency(std::mt19937_64& rng, bool rejected) {
  if (rejected) return 50'000;
  const double s = std::lognormal_distribution<double>(std::log(1.5), 0.5)(rng);
  return static_cast<Micros>(std::clamp(s, 0.2, 10.0) * 1e6);
}

constexpr int kBackground = -1;  // Event::worker of the other client's requests

struct Event {
  Micros at;
  std::uint64_t seq;  // FIFO among equal times: deterministic order
  int worker;         // kBackground: the other client
  bool response;
  bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

Result run(Strategy strategy, const Config& cfg) {
  std::mt19937_64 rng(cfg.seed);
  admit::ManualClock clock(kStart);
  admit::MemoryStore store(admit::MemoryStoreOptions{.seed = cfg.seed});
  admit::Limiter limiter(store, clock);
  admit::sim::ProviderModel provider(cfg.hidden);
  std::optional<admit::Discovery> discovery;

  const admit::AimdOptions aimd{.max_rate = 50,
                                .initial_rate = 1,
                                .slow_start_threshold = 20,
                                .additive_increase = 0.02,
                                .multiplicative_decrease = 0.5,
                                .min_rate = 0.1};
  switch (strategy) {
    case Strategy::none:
      break;
    case Strategy::fixed:
      limiter.set_limits("model", {admit::Limit::per_minute("rpm", cfg.hidden.rpm * 12 / 10),
                                   admit::Limit::per_minute("tpm", cfg.hidden.tpm * 12 / 10)});
      break;
    case Strategy::aimd:  // rpm/tpm unlimited: named so one request shape fits every strategy
      limiter.set_limits("model",
                         {admit::Limit::per_minute("rpm", 0), admit::Limit::per_minute("tpm", 0),
                          admit::Limit::adaptive("aimd", aimd, 2)});
      break;
    case Strategy::discovery_aimd:
      // rpm/tpm are unknown until the first response: unlimited placeholders.
      limiter.set_limits("model",
                         {admit::Limit::per_minute("rpm", 0), admit::Limit::per_minute("tpm", 0),
                          admit::Limit::adaptive("aimd", aimd, 2)});
      discovery.emplace(limiter, admit::Provider::openai);
      break;
  }

  struct Worker {
    std::int64_t cost = 0;
    admit::Lease lease;
    int status = 0;
    admit::sim::SimResponse response;
  };
  std::vector<Worker> workers(static_cast<std::size_t>(cfg.workers));
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events;
  std::uint64_t seq = 0;
  for (int w = 0; w < cfg.workers; ++w) {
    workers[static_cast<std::size_t>(w)].cost = kCost.draw(rng);
    events.push({kStart + w * 1000, seq++, w, false});  // staggered start, 1 ms apart
  }

  std::mt19937_64 bg_rng(cfg.seed ^ 0x9E3779B97F4A7C15ULL);  // its own stream: same draws
  // Mean gap between the other client's requests for `background` of the hidden TPM.
  const double bg_gap_us =
      cfg.background > 0
          ? kCost.mean() / (cfg.background * static_cast<double>(cfg.hidden.tpm)) * 60e6
          : 0;
  auto bg_next = [&](Micros t) {
    return t + static_cast<Micros>(std::exponential_distribution<double>(1.0 / bg_gap_us)(bg_rng)) +
           1;
  };
  if (cfg.background > 0) events.push({bg_next(kStart), seq++, kBackground, false});
  std::int64_t bg_tokens = 0;  // the other client's accepted tokens, after warm-up

  const Micros end = kStart + cfg.duration;
  const Micros halve_at = kStart + cfg.duration / 2;
  bool halved = false;
  std::int64_t tokens_before = 0, tokens_after = 0;
  long long responses = 0, rejected = 0;
  Micros last_429_after = 0;  // last 429 at or after the halving

  while (!events.empty() && events.top().at < end) {
    const Event ev = events.top();
    events.pop();
    clock.set(ev.at);
    if (!halved && ev.at >= halve_at) {
      provider.set_limits({cfg.hidden.rpm / 2, cfg.hidden.tpm / 2}, halve_at);
      halved = true;
    }
    if (ev.worker == kBackground) {
      admit::sim::SimRequest req;
      req.key = "acct";
      const std::int64_t cost = kCost.draw(bg_rng);
      req.prompt_tokens = cost / 2;
      req.max_tokens = cost - cost / 2;
      const auto resp = provider.handle(req, ev.at);
      if (resp.status == 200 && ev.at >= kStart + cfg.warmup) bg_tokens += resp.charged_tokens;
      events.push({bg_next(ev.at), seq++, kBackground, false});
      continue;
    }
    Worker& w = workers[static_cast<std::size_t>(ev.worker)];
    if (!ev.response) {
      // Ready to send: ask the limiter (if any), then the provider.
      if (strategy != Strategy::none) {
        w.lease = limiter.try_acquire("acct", "model", {{"rpm", 1}, {"tpm", w.cost}});
        if (!w.lease.allowed()) {
          const auto& d = w.lease.decision();
          if (d.code != admit::Code::rate_exceeded || d.retry_after <= 0) {
            std::fprintf(stderr, "%s: unexpected denial: %s\n", name_of(strategy),
                         d.reason.c_str());
            std::exit(2);
          }
          events.push({ev.at + d.retry_after, seq++, ev.worker, false});
          continue;
        }
      }
      admit::sim::SimRequest req;
      req.key = "acct";
      req.prompt_tokens = w.cost / 2;
      req.max_tokens = w.cost - w.cost / 2;
      w.response = provider.handle(req, ev.at);
      events.push({ev.at + draw_latency(rng, w.response.status == 429), seq++, ev.worker, true});
      continue;
    }
    // The response arrives.
    ++responses;
    const bool limited = w.response.status == 429;
    if (!limited) {
      (ev.at - kStart < cfg.duration / 2 ? tokens_before : tokens_after) +=
          ev.at >= kStart + cfg.warmup ? w.response.charged_tokens : 0;
    } else {
      ++rejected;
      if (ev.at >= halve_at) last_429_after = ev.at;
    }
    Micros next = ev.at;
    if (discovery) {
      admit::Headers h;
      for (const auto& [k, v] : w.response.headers) h.add(k, v);
      discovery->observe(w.lease, h, w.response.status, w.response.body);
    } else if (strategy == Strategy::aimd) {
      limited ? w.lease.mark_failure() : w.lease.mark_success();
    }
    if (limited && !discovery) {
      // Honour retry-after (whole seconds as the header says; 1 s if absent).
      const auto ra = w.response.header("retry-after");
      next += ra ? std::atoll(std::string(*ra).c_str()) * kSec : kSec;
    }
    if (w.lease.active()) w.lease.commit();  // the provider charged the estimate: keep it
    w.lease = admit::Lease();
    if (!limited) w.cost = kCost.draw(rng);  // a 429 retries the same request
    events.push({next, seq++, ev.worker, false});
  }

  Result r;
  const double before_min = static_cast<double>(cfg.duration / 2 - cfg.warmup) / 60e6;
  const double after_min = static_cast<double>(cfg.duration / 2) / 60e6;
  const double hidden_tokens = static_cast<double>(cfg.hidden.tpm) * before_min +
                               static_cast<double>(cfg.hidden.tpm / 2) * after_min;
  r.goodput = static_cast<double>(tokens_before + tokens_after) / hidden_tokens;
  r.account_utilisation =
      static_cast<double>(tokens_before + tokens_after + bg_tokens) / hidden_tokens;
  r.goodput_before =
      static_cast<double>(tokens_before) / (static_cast<double>(cfg.hidden.tpm) * before_min);
  r.goodput_after =
      static_cast<double>(tokens_after) / (static_cast<double>(cfg.hidden.tpm / 2) * after_min);
  r.responses = responses;
  r.rejected = rejected;
  r.share_429 = responses > 0 ? static_cast<double>(rejected) / static_cast<double>(responses) : 0;
  if (last_429_after == 0) {
    r.settle_s = 0;
    r.settled = true;
  } else {
    // The end of the 1-second bin (counted from the halving) of the last 429.
    const Micros bin_end = ((last_429_after - halve_at) / kSec + 1) * kSec;
    r.settled = last_429_after < end - 10 * kSec;  // 429s into the last 10 s: never settled
    r.settle_s = static_cast<double>(r.settled ? bin_end : end - halve_at) / 1e6;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  bool json = false, check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](const char* flag) -> long long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag);
        std::exit(2);
      }
      char* endp = nullptr;
      const long long v = std::strtoll(argv[++i], &endp, 10);
      if (endp == nullptr || *endp != '\0' || v <= 0) {
        std::fprintf(stderr, "%s: '%s' is not a positive integer\n", flag, argv[i]);
        std::exit(2);
      }
      return v;
    };
    if (a == "--json") {
      json = true;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--seed") {
      cfg.seed = static_cast<std::uint64_t>(value("--seed"));
    } else if (a == "--duration") {
      cfg.duration = value("--duration") * kSec;
      if (cfg.duration < 4 * cfg.warmup) {
        std::fprintf(stderr, "--duration must be at least %lld s\n",
                     static_cast<long long>(4 * cfg.warmup / kSec));
        return 2;
      }
    } else {
      std::fprintf(stderr,
                   "usage: admit_adapt_bench [--json] [--check] [--seed N] [--duration S]\n");
      return 2;
    }
  }
  std::printf(
      "adaptation benchmark: seed %llu, %lld s simulated, %d workers, hidden %lld rpm / "
      "%lld tpm halving at %lld s; request sizes bounded Pareto(1.5) on [100, 8000] "
      "tokens (mean %.0f), latency lognormal(1.5 s, 0.5)\n",
      static_cast<unsigned long long>(cfg.seed), static_cast<long long>(cfg.duration / kSec),
      cfg.workers, static_cast<long long>(cfg.hidden.rpm), static_cast<long long>(cfg.hidden.tpm),
      static_cast<long long>(cfg.duration / 2 / kSec), kCost.mean());
  const Strategy all[] = {Strategy::none, Strategy::fixed, Strategy::aimd,
                          Strategy::discovery_aimd};
  Result alone[4], shared[4];
  Config shared_cfg = cfg;
  shared_cfg.background = 0.3;
  for (int pass = 0; pass < 2; ++pass) {
    Result* results = pass == 0 ? alone : shared;
    std::printf(pass == 0 ? "\nalone on the account:\n"
                          : "\nshared account: another client without admit asks for 30%% of "
                            "the hidden TPM (goodput = admit's client only; util = both)\n");
    std::printf("%-16s %8s %8s %8s %8s %9s %9s %10s\n", "strategy", "goodput", "before", "after",
                "util", "share_429", "settle_s", "responses");
    for (int i = 0; i < 4; ++i) {
      results[i] = run(all[i], pass == 0 ? cfg : shared_cfg);
      const Result& r = results[i];
      std::printf("%-16s %8.3f %8.3f %8.3f %8.3f %9.4f %8.1f%s %10lld\n", name_of(all[i]),
                  r.goodput, r.goodput_before, r.goodput_after, r.account_utilisation, r.share_429,
                  r.settle_s, r.settled ? " " : "+", r.responses);
    }
  }
  std::printf("(settle_s with '+': 429s never stopped; the value is the rest of the run)\n");
  if (json) {
    std::string out = "{";
    for (int i = 0; i < 4; ++i) {
      const Result& r = alone[i];
      const Result& x = shared[i];
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    "%s\"%s\": {\"goodput\": %.4f, \"share_429\": %.5f, \"settle_s\": %.1f, "
                    "\"settled\": %s, \"goodput_before\": %.4f, \"goodput_after\": %.4f, "
                    "\"shared\": {\"goodput\": %.4f, \"utilisation\": %.4f, "
                    "\"share_429\": %.5f, \"settle_s\": %.1f, \"settled\": %s}}",
                    i ? ", " : "", name_of(all[i]), r.goodput, r.share_429, r.settle_s,
                    r.settled ? "true" : "false", r.goodput_before, r.goodput_after, x.goodput,
                    x.account_utilisation, x.share_429, x.settle_s, x.settled ? "true" : "false");
      out += buf;
    }
    out += "}";
    std::printf("%s\n", out.c_str());
  }
  if (check) {
    const Result& d = alone[3];
    const bool ok = d.goodput >= 0.95 && d.share_429 <= 0.01 && d.settled && d.settle_s <= 2.0;
    std::printf(
        "check: discovery_aimd %s the goals (goodput >= 0.95, share_429 <= 0.01, "
        "settle_s <= 2)\n",
        ok ? "meets" : "MISSES");
    return ok ? 0 : 1;
  }
  return 0;
}
