// The gateway benchmark's load generator (scripts/bench-proxy starts the processes; its header
// defines the figures). Real time, real sockets: closed-loop clients send non-streamed chat
// completions through admitd's gateway to admit-provider-sim instances, with admit_http's
// pooled client (the one admitd forwards with), in three phases:
//
//   latency  one unlimited simulator (`--free-sim`, model gpt-4o-free): every client
//            alternates a request straight to it and the same request through admitd; the
//            latency admitd adds is p50 / p99 of one minus p50 / p99 of the other.
//   alone    admitd alone on an account with hidden rpm/tpm (`--alone-sim`, model
//            gpt-4o-alone), halved half-way (POST /sim/limits): goodput, 429s the clients
//            get, 429s the simulator answers admitd, settle time after the halving.
//   shared   the same on a second simulator (`--shared-sim`, model gpt-4o-shared), while
//            another client without admit sends `--background` (0.3) of the hidden TPM in
//            force straight to it with the same key (Poisson arrivals, same sizes, its 429s
//            dropped): admitd's goodput is taken against what that client leaves.
//
// Request cost (prompt + max_tokens, what the simulator charges): bounded Pareto(1.5) on
// [100, 4000] tokens, `--max-tokens-share` (0.5) of it max_tokens, the rest a prompt of
// "the the ..." (k words: k tokens for o200k, k + 4 for the simulator). A client that gets a
// 429 waits its retry-after (ms if given, else s, else 1 s) and sends the same request again.
// Each second the load phases read /sim/stats and /sim/buckets (the account's tokens left);
// with `--admitd-pid` admitd's CPU time per request comes from /proc/PID/stat.
//
// Output: the configuration (seed included), one table per phase, the goals and, with --json,
// one JSON object as the last line of stdout. Progress on stderr. Usage: see usage() below.
#include <unistd.h>  // sysconf

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bounded_pareto.hpp"
#include "common/http/client.hpp"

namespace {

namespace asio = boost::asio;
namespace http = admit::http;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

// ---- configuration ----

struct Config {
  std::string admitd;  // http://127.0.0.1:PORT (routes /v1/...)
  std::string caller_key = "bench-caller-key-0123456789";
  std::string sim_key = "sim-key";  // the upstream account's key (admitd's and the other client's)
  std::string free_sim, alone_sim, shared_sim;
  std::string free_model = "gpt-4o-free", alone_model = "gpt-4o-alone",
              shared_model = "gpt-4o-shared";
  int clients = 64;
  double duration = 90;          // s, each of alone and shared; halving at duration / 2
  double warmup = 15;            // s excluded from goodput: the provider's buckets start full
  double latency_duration = 10;  // s of the latency phase (after latency_warmup)
  double latency_warmup = 1;     // s
  std::int64_t rpm = 6000;       // hidden, before the halving (the simulators' flags)
  std::int64_t tpm = 1'000'000;
  double sim_latency_ms = 100;    // the simulators' --latency-ms (accept time = answer - this)
  double background = 0.3;        // the other client's share of the hidden TPM (shared phase)
  double band = 0.10;             // settled: served within what is left +- band x hidden
  std::size_t window = 8;         // s: longer than the 10 % margin lasts (6 s of refill)
  double max_tokens_share = 0.5;  // of a request's cost: max_tokens (the rest is prompt)
  long admitd_pid = 0;            // > 0: admitd's CPU time per request from /proc/PID/stat
  std::uint64_t seed = 42;
  bool json = false;
  std::vector<std::string> phases = {"latency", "alone", "shared"};
  std::vector<std::pair<std::string, std::string>> meta;  // --meta KEY=VALUE, echoed in JSON
};

// Request cost: bounded Pareto, alpha 1.5 on [100, 4000] (mean ~254).
constexpr admit::bench::BoundedPareto kCost{1.5, 100, 4000};

/// A chat completion the simulator charges exactly `cost`: max_tokens about `max_share` of it
/// (at least 1), and a prompt of k words ("the the ...": k + 4 tokens for the simulator, k for
/// o200k, k + 7 in admitd's estimate with the message overhead) for the rest.
struct ChatRequest {
  std::int64_t cost = 0;
  std::int64_t prompt = 0;  // the simulator's count
  std::int64_t max_tokens = 0;
  std::string body;
};

ChatRequest make_request(const std::string& model, std::int64_t cost, double max_share) {
  ChatRequest r;
  r.max_tokens = std::max<std::int64_t>(1, std::llround(static_cast<double>(cost) * max_share));
  const std::int64_t k = std::max<std::int64_t>(1, cost - r.max_tokens - 4);
  r.prompt = k + 4;
  r.cost = r.prompt + r.max_tokens;
  std::string text = "the";
  text.reserve(static_cast<std::size_t>(4 * k));
  for (std::int64_t i = 1; i < k; ++i) text += " the";
  r.body = R"({"model":")" + model + R"(","messages":[{"role":"user","content":")" + text +
           R"("}],"max_tokens":)" + std::to_string(r.max_tokens) + "}";
  return r;
}

/// The integer after `"name":` in a JSON text, if any (the usage of a completion).
std::optional<std::int64_t> json_int(std::string_view body, std::string_view name) {
  std::string key = "\"";
  key.append(name);
  key.append("\":");
  const std::size_t at = body.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t i = at + key.size();
  while (i < body.size() && body[i] == ' ') ++i;
  std::int64_t v = 0;
  bool any = false;
  while (i < body.size() && body[i] >= '0' && body[i] <= '9') {
    v = v * 10 + (body[i] - '0');
    ++i;
    any = true;
  }
  return any ? std::optional<std::int64_t>(v) : std::nullopt;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (const double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

// ---- one HTTP call, reported on the phase's loop ----

struct Answer {
  unsigned status = 0;  // 0: a transport error
  std::string error;
  std::string body;
  double retry_after_ms = -1;  // from retry-after-ms, else retry-after (s); -1: none
  Clock::time_point sent, done;
  double latency_us() const {
    return std::chrono::duration<double, std::micro>(done - sent).count();
  }
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

class Caller {
 public:
  explicit Caller(int clients) : client_(options(clients)) {}

  /// Starts a call; `done` runs on `io` (which must outlive the call).
  std::shared_ptr<http::Call> call(asio::io_context& io, const std::string& base,
                                   std::string method, std::string path, std::string key,
                                   std::string body, std::function<void(Answer)> done) {
    http::ClientRequest req;
    req.method = std::move(method);
    req.origin = origin(base);
    req.target = http::join_target(req.origin, path);
    if (!key.empty()) req.headers.emplace_back("Authorization", "Bearer " + key);
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    req.body = std::move(body);
    auto a = std::make_shared<Answer>();
    a->sent = Clock::now();
    http::CallHandlers h;
    h.on_head = [a](http::ClientResponseHead head) {
      a->status = head.status;
      for (const auto& [k, v] : head.headers) {
        const std::string n = lower(k);
        if (n == "retry-after-ms") {
          a->retry_after_ms = std::atof(v.c_str());
        } else if (n == "retry-after" && a->retry_after_ms < 0) {
          a->retry_after_ms = 1000 * std::atof(v.c_str());
        }
      }
    };
    h.on_data = [a](std::string data, std::function<void()> resume) {
      a->body += data;
      resume();
    };
    h.on_done = [a, &io, done = std::move(done)](std::string error) {
      a->done = Clock::now();
      if (!error.empty()) {
        a->error = std::move(error);
        a->status = 0;
      }
      asio::post(io, [a, done] { done(std::move(*a)); });
    };
    return client_.start(std::move(req), std::move(h));
  }

  /// A call from outside any loop, waited for.
  Answer call_sync(const std::string& base, std::string method, std::string path,
                   std::string body = {}) {
    asio::io_context io;
    Answer out;
    call(io, base, std::move(method), std::move(path), "", std::move(body),
         [&out](Answer a) { out = std::move(a); });
    auto guard = asio::make_work_guard(io);
    io.run_one();  // the posted completion
    return out;
  }

 private:
  static http::ClientOptions options(int clients) {
    http::ClientOptions o;
    o.threads = 1;
    o.max_idle_per_origin = static_cast<std::size_t>(clients) + 16;
    o.read_timeout = std::chrono::milliseconds(120'000);
    return o;
  }
  const http::Origin& origin(const std::string& base) {
    auto it = origins_.find(base);
    if (it == origins_.end()) it = origins_.emplace(base, http::parse_base_url(base)).first;
    return it->second;
  }

  http::Client client_;
  std::map<std::string, http::Origin> origins_;  // used from one loop at a time
};

/// The counters of GET /sim/stats.
struct SimStats {
  std::int64_t accepted = 0, rejected = 0, accepted_tokens = 0, rejected_tokens = 0;
};

std::optional<SimStats> parse_stats(const Answer& a) {
  if (a.status != 200) return std::nullopt;
  boost::system::error_code ec;
  const json::value v = json::parse(a.body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.get_object();
  auto field = [&o](const char* n) -> std::int64_t {
    const json::value* x = o.if_contains(n);
    return x != nullptr && x->is_int64() ? x->get_int64() : 0;
  };
  return SimStats{field("accepted"), field("rejected"), field("accepted_tokens"),
                  field("rejected_tokens")};
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "proxy_bench: %s\n", what.c_str());
  std::exit(1);
}

/// utime + stime of process `pid` in µs (/proc/PID/stat), or -1.
double cpu_us(long pid) {
  if (pid <= 0) return -1;
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return -1;
  char buf[2048];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // after the command name, which may hold spaces
  if (p == nullptr) return -1;
  // Fields from 3 (state) on; utime and stime are fields 14 and 15.
  unsigned long long utime = 0, stime = 0;
  if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
      2) {
    return -1;
  }
  return static_cast<double>(utime + stime) * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

SimStats sim_stats(Caller& c, const std::string& sim) {
  const Answer a = c.call_sync(sim, "GET", "/sim/stats");
  const auto s = parse_stats(a);
  if (!s) die("GET " + sim + "/sim/stats: " + std::to_string(a.status) + " " + a.error + a.body);
  return *s;
}

void sim_post(Caller& c, const std::string& sim, const std::string& path, const std::string& body) {
  const Answer a = c.call_sync(sim, "POST", path, body);
  if (a.status != 200) die("POST " + sim + path + ": " + std::to_string(a.status) + " " + a.error);
}

std::string limits_body(std::int64_t rpm, std::int64_t tpm) {
  return R"({"rpm":)" + std::to_string(rpm) + R"(,"tpm":)" + std::to_string(tpm) + "}";
}

// ---- a phase's loop: calls in flight, timers, the end ----

class Loop {
 public:
  explicit Loop(Caller& caller) : caller_(caller) {}

  asio::io_context& io() { return io_; }
  double now_s() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  double at_s(Clock::time_point t) const { return std::chrono::duration<double>(t - t0_).count(); }
  bool stopping() const { return stopping_; }

  void call(const std::string& base, std::string method, std::string path, std::string key,
            std::string body, std::function<void(Answer)> done) {
    const std::uint64_t id = next_id_++;
    auto c = caller_.call(io_, base, std::move(method), std::move(path), std::move(key),
                          std::move(body), [this, id, done = std::move(done)](Answer a) {
                            calls_.erase(id);
                            done(std::move(a));
                            maybe_finish();
                          });
    calls_.emplace(id, std::move(c));
  }

  /// Runs `fn` after `seconds` unless the phase is stopping by then.
  void after(double seconds, std::function<void()> fn) {
    auto t = std::make_shared<asio::steady_timer>(io_);
    t->expires_after(std::chrono::microseconds(static_cast<std::int64_t>(seconds * 1e6)));
    timers_.insert(t);
    t->async_wait([this, t, fn = std::move(fn)](const boost::system::error_code& ec) {
      timers_.erase(t);
      if (!ec && !stopping_) fn();
      maybe_finish();
    });
  }

  /// Runs `fn` at `seconds` after the start, even while stopping (the phase's own schedule).
  void at(double seconds, std::function<void()> fn) {
    auto t = std::make_shared<asio::steady_timer>(io_);
    t->expires_at(t0_ + std::chrono::microseconds(static_cast<std::int64_t>(seconds * 1e6)));
    t->async_wait([t, fn = std::move(fn)](const boost::system::error_code& ec) {
      if (!ec) fn();
    });
  }

  /// From now on nothing new starts; waiting timers are cancelled; the loop ends once the
  /// calls in flight have answered (after `grace` seconds they are cancelled).
  void stop(double grace) {
    if (stopping_) return;
    stopping_ = true;
    for (const auto& t : timers_) t->cancel();
    auto g = std::make_shared<asio::steady_timer>(io_);
    g->expires_after(std::chrono::microseconds(static_cast<std::int64_t>(grace * 1e6)));
    grace_ = g;
    g->async_wait([this, g](const boost::system::error_code& ec) {
      if (ec) return;
      if (!calls_.empty()) {
        std::fprintf(stderr, "proxy_bench: %zu calls still open %.0f s after the end: cancelled\n",
                     calls_.size(), now_s());
      }
      auto open = calls_;
      for (auto& [id, c] : open) c->cancel();
    });
    maybe_finish();
  }

  /// Starts the clock and runs until stop() and the last call's answer.
  void run(const std::function<void()>& start) {
    t0_ = Clock::now();
    auto guard = asio::make_work_guard(io_);
    asio::post(io_, start);
    io_.run();
  }

 private:
  void maybe_finish() {
    if (stopping_ && calls_.empty() && timers_.empty()) {
      if (grace_) grace_->cancel();
      io_.stop();  // the phase's schedule (at()) may have timers left: they are dropped
    }
  }

  Caller& caller_;
  asio::io_context io_;
  Clock::time_point t0_ = Clock::now();
  std::uint64_t next_id_ = 0;
  std::map<std::uint64_t, std::shared_ptr<http::Call>> calls_;
  std::set<std::shared_ptr<asio::steady_timer>> timers_;
  std::shared_ptr<asio::steady_timer> grace_;
  bool stopping_ = false;
};

// ---- latency phase ----

struct Dist {
  std::size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

Dist dist(const std::vector<double>& v) {
  return {v.size(), pct(v, 50), pct(v, 90), pct(v, 99), mean(v)};
}

struct LatencyResult {
  Dist direct, proxy;
  long long errors = 0;  // any answer but 200 (should be none)
  std::string first_error;
  long long proxied = 0;      // answers through admitd, warm-up included
  double admitd_cpu_us = -1;  // admitd's CPU time over the phase (--admitd-pid)
};

LatencyResult run_latency(Caller& caller, const Config& cfg) {
  const ChatRequest req = make_request(cfg.free_model, 154, 50.0 / 154);  // 100 words, 50 out
  // A first request each way: both paths answer 200 before anything is measured.
  for (const bool proxy : {true, false}) {
    asio::io_context io;
    Answer out;
    caller.call(io, proxy ? cfg.admitd : cfg.free_sim, "POST", "/v1/chat/completions",
                proxy ? cfg.caller_key : cfg.sim_key, req.body, [&](Answer a) { out = a; });
    auto guard = asio::make_work_guard(io);
    io.run_one();
    if (out.status != 200) {
      die(std::string(proxy ? "through admitd" : "straight to the simulator") +
          ": the first request answered " + std::to_string(out.status) + " " + out.error +
          out.body.substr(0, 400));
    }
  }
  Loop loop(caller);
  LatencyResult r;
  std::vector<double> direct, proxy;
  const double cpu0 = cpu_us(cfg.admitd_pid);
  const double end = cfg.latency_warmup + cfg.latency_duration;
  std::function<void(int, bool)> send = [&](int w, bool via_proxy) {
    if (loop.stopping()) return;
    loop.call(via_proxy ? cfg.admitd : cfg.free_sim, "POST", "/v1/chat/completions",
              via_proxy ? cfg.caller_key : cfg.sim_key, req.body, [&, w, via_proxy](Answer a) {
                if (via_proxy) ++r.proxied;
                if (a.status != 200) {
                  if (r.errors++ == 0) {
                    r.first_error =
                        std::to_string(a.status) + " " + a.error + a.body.substr(0, 300);
                  }
                } else if (loop.at_s(a.sent) >= cfg.latency_warmup && loop.at_s(a.done) < end) {
                  (via_proxy ? proxy : direct).push_back(a.latency_us());
                }
                send(w, !via_proxy);
              });
  };
  loop.run([&] {
    for (int w = 0; w < cfg.clients; ++w) send(w, w % 2 == 0);
    loop.at(end, [&] { loop.stop(30); });
  });
  if (cpu0 >= 0) r.admitd_cpu_us = cpu_us(cfg.admitd_pid) - cpu0;
  r.direct = dist(direct);
  r.proxy = dist(proxy);
  return r;
}

// ---- alone / shared phases ----

struct LoadResult {
  // admitd's clients
  long long responses = 0, ok = 0, client_429 = 0, errors = 0;
  std::string first_error;
  std::vector<double> ok_latency_us;  // sent after the warm-up; queueing for capacity included
  std::vector<std::int64_t> served;   // tokens the simulator accepted, per 1 s of accept time
  long long usage_mismatch = 0;       // prompt_tokens not what the request was built for
  // the other client (shared)
  long long bg_sent = 0, bg_ok = 0, bg_429 = 0, bg_errors = 0;
  std::int64_t bg_tokens_total = 0;
  std::vector<std::int64_t> bg_served;
  // the simulator (all keys), and admitd's part of it
  SimStats sim_before, sim_end;
  long long upstream_429 = 0, upstream_calls = 0;
  double last_upstream_429_s = -1;  // the end of the poll interval with the last one (halved)
  double halved_at = 0;
  // What the account's token bucket held (GET /sim/buckets), sampled each second; -1: none.
  std::vector<std::int64_t> sim_tokens;
  std::int64_t sim_tokens_at_halving = -1;
  double admitd_cpu_us = -1;  // over the phase (--admitd-pid)
};

LoadResult run_load(Caller& caller, const Config& cfg, const std::string& sim,
                    const std::string& model, double background) {
  sim_post(caller, sim, "/sim/limits", limits_body(cfg.rpm, cfg.tpm));
  sim_post(caller, sim, "/sim/stats/reset", "{}");
  const double half = cfg.duration / 2;
  const double lat_s = cfg.sim_latency_ms / 1000;
  const auto bins = static_cast<std::size_t>(std::ceil(cfg.duration)) + 1;
  LoadResult r;
  r.served.assign(bins, 0);
  r.bg_served.assign(bins, 0);
  r.sim_tokens.assign(bins, -1);
  Loop loop(caller);
  std::mt19937_64 rng(cfg.seed);
  std::mt19937_64 bg_rng(cfg.seed ^ 0x9E3779B97F4A7C15ULL);
  bool halved = false;
  auto bin_of = [&](const Answer& a) -> std::optional<std::size_t> {
    const double t = loop.at_s(a.done) - lat_s;  // when the simulator accepted it
    if (t < 0 || t >= cfg.duration) return std::nullopt;
    return static_cast<std::size_t>(t);
  };

  std::vector<ChatRequest> pending(static_cast<std::size_t>(cfg.clients));
  std::function<void(int)> send = [&](int w) {
    if (loop.stopping()) return;
    const ChatRequest& req = pending[static_cast<std::size_t>(w)];
    loop.call(
        cfg.admitd, "POST", "/v1/chat/completions", cfg.caller_key, req.body, [&, w](Answer a) {
          ChatRequest& cur = pending[static_cast<std::size_t>(w)];
          ++r.responses;
          double wait = 0;
          if (a.status == 200) {
            ++r.ok;
            if (loop.at_s(a.sent) >= cfg.warmup) r.ok_latency_us.push_back(a.latency_us());
            const auto p = json_int(a.body, "prompt_tokens");
            if (!p || *p != cur.prompt) ++r.usage_mismatch;
            if (const auto b = bin_of(a)) r.served[*b] += cur.cost;
            cur = make_request(model, kCost.draw(rng), cfg.max_tokens_share);
          } else if (a.status == 429) {
            ++r.client_429;
            wait = a.retry_after_ms >= 0 ? a.retry_after_ms / 1000 : 1.0;
          } else {
            if (r.errors++ == 0) {
              r.first_error = std::to_string(a.status) + " " + a.error + a.body.substr(0, 300);
              std::fprintf(stderr, "proxy_bench: %s: first error: %s\n", model.c_str(),
                           r.first_error.c_str());
            }
            wait = 1.0;
            cur = make_request(model, kCost.draw(rng), cfg.max_tokens_share);
          }
          if (wait > 0) {
            loop.after(wait, [&send, w] { send(w); });
          } else {
            send(w);
          }
        });
  };

  // The other client: Poisson arrivals of `background` of the hidden TPM in force.
  std::function<void()> bg_arrival = [&] {
    if (loop.stopping()) return;
    const double tpm_now = static_cast<double>(halved ? cfg.tpm / 2 : cfg.tpm);
    const double rate = background * tpm_now / 60.0 / kCost.mean();  // requests per s
    const ChatRequest req = make_request(model, kCost.draw(bg_rng), cfg.max_tokens_share);
    ++r.bg_sent;
    loop.call(sim, "POST", "/v1/chat/completions", cfg.sim_key, req.body,
              [&, cost = req.cost](Answer a) {
                if (a.status == 200) {
                  ++r.bg_ok;
                  r.bg_tokens_total += cost;
                  if (const auto b = bin_of(a)) r.bg_served[*b] += cost;
                } else if (a.status == 429) {
                  ++r.bg_429;
                } else {
                  ++r.bg_errors;
                }
              });
    loop.after(std::exponential_distribution<double>(rate)(bg_rng), bg_arrival);
  };

  // Every second: did the simulator refuse admitd since the last poll? (Its count less the
  // other client's 429s, which it answers at once.)
  long long upstream_rejected = 0;
  std::function<void()> poll = [&] {
    loop.call(sim, "GET", "/sim/stats", "", "", [&](Answer a) {
      if (const auto s = parse_stats(a)) {
        const long long n = s->rejected - r.sim_before.rejected - r.bg_429;
        if (halved && n > upstream_rejected) r.last_upstream_429_s = loop.now_s();
        upstream_rejected = n;
      }
    });
    loop.call(sim, "GET", "/sim/buckets?key=" + cfg.sim_key, "", "", [&](Answer a) {
      const auto t = json_int(a.body, "tokens");
      const double at = loop.at_s(a.sent);
      if (a.status == 200 && t && at < cfg.duration) {
        r.sim_tokens[static_cast<std::size_t>(at)] = *t;
      }
    });
    loop.after(1.0, poll);
  };

  std::function<void()> report = [&] {
    const double t = loop.now_s();
    const auto b = static_cast<std::size_t>(std::max(0.0, t - lat_s - 1));
    std::int64_t s5 = 0;
    for (std::size_t i = b >= 4 ? b - 4 : 0; i <= b && i < r.served.size(); ++i) s5 += r.served[i];
    std::fprintf(stderr,
                 "proxy_bench: %s %3.0f s: served %6.0f tok/s (hidden %lld tpm = %.0f/s), "
                 "client 429s %lld, upstream 429s %lld\n",
                 model.c_str(), t, static_cast<double>(s5) / 5,
                 static_cast<long long>(halved ? cfg.tpm / 2 : cfg.tpm),
                 static_cast<double>(halved ? cfg.tpm / 2 : cfg.tpm) / 60, r.client_429,
                 upstream_rejected);
    loop.after(5.0, report);
  };

  r.sim_before = sim_stats(caller, sim);
  const double cpu0 = cpu_us(cfg.admitd_pid);
  loop.run([&] {
    for (int w = 0; w < cfg.clients; ++w) {
      pending[static_cast<std::size_t>(w)] =
          make_request(model, kCost.draw(rng), cfg.max_tokens_share);
      send(w);
    }
    if (background > 0) bg_arrival();
    poll();
    loop.after(5.0, report);
    loop.at(half, [&] {
      r.halved_at = loop.now_s();
      halved = true;
      // The level just before the halving (the simulator's answer to this comes first).
      loop.call(sim, "GET", "/sim/buckets?key=" + cfg.sim_key, "", "", [&](Answer a) {
        if (const auto t = json_int(a.body, "tokens"); a.status == 200 && t) {
          r.sim_tokens_at_halving = *t;
        }
      });
      loop.call(sim, "POST", "/sim/limits", "", limits_body(cfg.rpm / 2, cfg.tpm / 2),
                [&](Answer a) {
                  if (a.status != 200) die("halving the limits: " + std::to_string(a.status));
                  std::fprintf(stderr, "proxy_bench: %s %.1f s: hidden limits halved to %s\n",
                               model.c_str(), r.halved_at, a.body.c_str());
                });
    });
    loop.at(cfg.duration, [&] { loop.stop(60); });
  });
  if (cpu0 >= 0) r.admitd_cpu_us = cpu_us(cfg.admitd_pid) - cpu0;
  r.sim_end = sim_stats(caller, sim);
  const long long sim_rejected = r.sim_end.rejected - r.sim_before.rejected;
  const long long sim_calls = sim_rejected + r.sim_end.accepted - r.sim_before.accepted;
  r.upstream_429 = sim_rejected - r.bg_429;
  r.upstream_calls = sim_calls - (r.bg_ok + r.bg_429 + r.bg_errors);
  return r;
}

/// From `from` (a second): windows of `w` seconds start at every second up to `to` - w. In a
/// window, what is left is its hidden capacity less what the other client was accepted in it;
/// the window is outside when admitd's served tokens differ from what is left by more than
/// `band` of the hidden capacity (alone: +-band of what is left; shared, where the account's
/// bucket buffers the other client's bursts, the same tolerance in tokens). `seconds`: the
/// start of the window after the last one outside, minus `from` (0 if none); `settled` is false
/// when such a window starts in the last 10 s (the band did not hold to the end), and `seconds`
/// is then to - from.
struct Settle {
  double seconds = 0;
  bool settled = true;
  int windows_out = 0;
};

Settle settle(const std::vector<std::int64_t>& served, const std::vector<std::int64_t>& other,
              std::size_t from, std::size_t to, double hidden_per_s, std::size_t w, double band) {
  Settle s;
  std::optional<std::size_t> last_bad;
  for (std::size_t i = from; i + w <= to; ++i) {
    std::int64_t mine = 0, theirs = 0;
    for (std::size_t j = i; j < i + w; ++j) {
      mine += served[j];
      theirs += other[j];
    }
    const double hidden = hidden_per_s * static_cast<double>(w);
    if (std::abs(static_cast<double>(mine) - (hidden - static_cast<double>(theirs))) >
        band * hidden) {
      last_bad = i;
      ++s.windows_out;
    }
  }
  if (last_bad) {
    s.seconds = static_cast<double>(*last_bad + 1 - from);
    s.settled = *last_bad + 10 < to;
    if (!s.settled) s.seconds = static_cast<double>(to - from);
  }
  return s;
}

struct LoadFigures {
  // admitd's served tokens / what is left: the hidden capacity in force less what the other
  // client was accepted (all of it when alone), from the warm-up on
  double goodput = 0, goodput_before = 0, goodput_after = 0;
  double goodput_nominal = 0;  // ... / ((1 - background) x the hidden capacity)
  double share_429 = 0, upstream_429_share = 0;
  double utilisation = 0;  // both clients' accepted tokens / hidden capacity
  double bg_share = 0;     // the other client's accepted tokens / hidden capacity
  double bg_share_429 = 0;
  Settle settle_halving, settle_start;
  double settle_429_s = 0;  // from the halving to the end of the last poll interval with a 429
  Dist ok_latency;
  double cpu_per_request_us = -1;
};

LoadFigures figures(const LoadResult& r, const Config& cfg, double background) {
  LoadFigures f;
  const auto w = static_cast<std::size_t>(cfg.warmup);
  const auto h = static_cast<std::size_t>(cfg.duration / 2);
  const auto end = static_cast<std::size_t>(cfg.duration);
  const double before_s = static_cast<double>(cfg.tpm) / 60, after_s = before_s / 2;
  std::int64_t before = 0, after = 0, bg_before = 0, bg_after = 0;
  for (std::size_t i = w; i < end; ++i) {
    (i < h ? before : after) += r.served[i];
    (i < h ? bg_before : bg_after) += r.bg_served[i];
  }
  const double cap_before = before_s * static_cast<double>(h - w);
  const double cap_after = after_s * static_cast<double>(end - h);
  const auto d = [](std::int64_t x) { return static_cast<double>(x); };
  f.goodput = d(before + after) / (cap_before + cap_after - d(bg_before + bg_after));
  f.goodput_before = d(before) / (cap_before - d(bg_before));
  f.goodput_after = d(after) / (cap_after - d(bg_after));
  f.goodput_nominal = d(before + after) / ((1 - background) * (cap_before + cap_after));
  f.utilisation = d(before + after + bg_before + bg_after) / (cap_before + cap_after);
  f.bg_share = d(bg_before + bg_after) / (cap_before + cap_after);
  f.share_429 = r.responses > 0 ? d(r.client_429) / d(r.responses) : 0;
  f.upstream_429_share = r.upstream_calls > 0 ? d(r.upstream_429) / d(r.upstream_calls) : 0;
  const long long bg_answers = r.bg_ok + r.bg_429;
  f.bg_share_429 = bg_answers > 0 ? d(r.bg_429) / d(bg_answers) : 0;
  f.settle_halving = settle(r.served, r.bg_served, h, end, after_s, cfg.window, cfg.band);
  f.settle_start = settle(r.served, r.bg_served, 0, h, before_s, cfg.window, cfg.band);
  if (r.last_upstream_429_s >= 0) f.settle_429_s = std::ceil(r.last_upstream_429_s) - r.halved_at;
  f.ok_latency = dist(r.ok_latency_us);
  if (r.admitd_cpu_us >= 0 && r.responses > 0)
    f.cpu_per_request_us = r.admitd_cpu_us / d(r.responses);
  return f;
}

// ---- output ----

void print_config(const Config& cfg) {
  std::printf(
      "proxy benchmark: seed %llu; %d clients; hidden %lld rpm / %lld tpm, halved at %.0f s of "
      "%.0f s (warm-up %.0f s excluded from goodput); simulator latency %.0f ms; request cost "
      "bounded Pareto(1.5) on [100, 4000] tokens (mean %.0f), %.0f%% of it max_tokens; "
      "shared: another client sends %.0f%% of the hidden TPM in force on the same key; settled: "
      "%zu s windows within what is left +-%.0f%% of the hidden TPM; latency phase %.0f s (+%.0f "
      "s warm-up), "
      "unlimited simulator, %d clients alternating direct / through admitd\n",
      static_cast<unsigned long long>(cfg.seed), cfg.clients, static_cast<long long>(cfg.rpm),
      static_cast<long long>(cfg.tpm), cfg.duration / 2, cfg.duration, cfg.warmup,
      cfg.sim_latency_ms, kCost.mean(), cfg.max_tokens_share * 100, cfg.background * 100,
      cfg.window, cfg.band * 100, cfg.latency_duration, cfg.latency_warmup, cfg.clients);
}

std::string settle_text(const Settle& s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f%s", s.seconds, s.settled ? "" : "+ (never)");
  return buf;
}

void print_load(const char* title, const LoadResult& r, const LoadFigures& f, const Config& cfg,
                bool shared) {
  std::printf("\n%s\n", title);
  std::printf("  %-38s %.3f (before the halving %.3f, after %.3f)\n",
              shared ? "goodput of what is left" : "goodput", f.goodput, f.goodput_before,
              f.goodput_after);
  std::printf("  %-38s %.4f (%lld of %lld answers; other errors %lld)\n", "429s to clients",
              f.share_429, r.client_429, r.responses, r.errors);
  std::printf("  %-38s %lld (%.4f of %lld calls)\n", "upstream 429s (simulator to admitd)",
              r.upstream_429, f.upstream_429_share, r.upstream_calls);
  std::printf(
      "  %-38s %s s (%zu s windows outside the band: %d; last upstream 429: %.0f s "
      "after)\n",
      "settled after the halving", settle_text(f.settle_halving).c_str(), cfg.window,
      f.settle_halving.windows_out, f.settle_429_s);
  std::printf("  %-38s %s s (the provider's buckets start full)\n", "settled from the start",
              settle_text(f.settle_start).c_str());
  std::printf("  %-38s p50 %.0f ms, p99 %.0f ms\n", "latency of 200s after the warm-up",
              f.ok_latency.p50 / 1000, f.ok_latency.p99 / 1000);
  const auto h = static_cast<std::size_t>(cfg.duration / 2);
  std::string levels;
  for (const std::size_t d : {std::size_t{5}, std::size_t{10}, std::size_t{20}, std::size_t{30}}) {
    if (h + d >= static_cast<std::size_t>(cfg.duration) || r.sim_tokens[h + d] < 0) break;
    levels += ", " + std::to_string(r.sim_tokens[h + d]) + " at +" + std::to_string(d) + " s";
  }
  std::printf("  %-38s %lld at the halving%s\n", "the account's tokens left (/sim/buckets)",
              static_cast<long long>(r.sim_tokens_at_halving), levels.c_str());
  if (f.cpu_per_request_us >= 0) {
    std::printf("  %-38s %.0f us per answer\n", "admitd CPU time", f.cpu_per_request_us);
  }
  if (shared) {
    std::printf(
        "  %-38s %.3f; the other client got %.3f of the hidden TPM (%.4f of its "
        "requests 429)\n",
        "account utilisation (both clients)", f.utilisation, f.bg_share, f.bg_share_429);
  }
  if (r.usage_mismatch > 0) {
    std::printf("  WARNING: %lld answers reported another prompt_tokens than expected\n",
                r.usage_mismatch);
  }
}

void json_dist(json::object& o, const std::string& prefix, const Dist& d) {
  o[prefix + "_p50_us"] = std::round(d.p50);
  o[prefix + "_p90_us"] = std::round(d.p90);
  o[prefix + "_p99_us"] = std::round(d.p99);
  o[prefix + "_mean_us"] = std::round(d.mean);
  o[prefix + "_n"] = d.n;
}

double r4(double x) { return std::round(x * 1e4) / 1e4; }

void json_load(json::object& o, const std::string& p, const LoadResult& r, const LoadFigures& f) {
  o[p + "goodput_before"] = r4(f.goodput_before);
  o[p + "goodput_after"] = r4(f.goodput_after);
  o[p + "upstream_429_share"] = r4(f.upstream_429_share);
  o[p + "settle_s"] = f.settle_halving.seconds;
  o[p + "settled"] = f.settle_halving.settled;
  o[p + "settle_from_start_s"] = f.settle_start.seconds;
  o[p + "settle_429_s"] = f.settle_429_s;
  o[p + "responses"] = r.responses;
  o[p + "client_429"] = r.client_429;
  o[p + "errors"] = r.errors;
  o[p + "upstream_calls"] = r.upstream_calls;
  o[p + "ok_p50_ms"] = std::round(f.ok_latency.p50 / 100) / 10;
  o[p + "ok_p99_ms"] = std::round(f.ok_latency.p99 / 100) / 10;
  o[p + "sim_tokens_at_halving"] = r.sim_tokens_at_halving;
  if (f.cpu_per_request_us >= 0)
    o[p + "admitd_cpu_us_per_request"] = std::round(f.cpu_per_request_us);
  const auto series = [](const std::vector<std::int64_t>& v) {
    json::array a;
    for (const auto t : v) a.push_back(t);
    return a;
  };
  o[p + "served_per_s"] = series(r.served);
  if (r.bg_sent > 0) o[p + "other_served_per_s"] = series(r.bg_served);
  o[p + "sim_tokens_left_per_s"] = series(r.sim_tokens);
}

/// JSON text with numbers as people write them ("0.9512", "1913"; Boost.JSON writes "9.512E-1").
std::string to_json(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: {
      const double d = v.get_double();
      if (!std::isfinite(d)) return "null";
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.10g", d);
      return buf;
    }
    case json::kind::array: {
      std::string s = "[";
      for (const json::value& x : v.get_array()) {
        if (s.size() > 1) s += ',';
        s += to_json(x);
      }
      return s + "]";
    }
    case json::kind::object: {
      std::string s = "{";
      for (const auto& kv : v.get_object()) {
        if (s.size() > 1) s += ", ";
        s += json::serialize(json::value(kv.key()));
        s += ": ";
        s += to_json(kv.value());
      }
      return s + "}";
    }
    default:
      return json::serialize(v);
  }
}

void usage() {
  std::fprintf(stderr,
               "usage: admit_proxy_bench --admitd URL --free-sim URL --alone-sim URL "
               "--shared-sim URL\n"
               "  [--clients N] [--duration S] [--warmup S] [--latency-duration S] [--rpm N] "
               "[--tpm N]\n"
               "  [--sim-latency-ms MS] [--background F] [--seed N] [--phases latency,alone,"
               "shared]\n"
               "  [--caller-key K] [--sim-key K] [--max-tokens-share F] [--window S]\n"
               "  [--admitd-pid PID] [--meta KEY=VALUE]... [--json]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    auto number = [&]() -> double {
      const std::string v = value();
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(d >= 0)) {
        std::fprintf(stderr, "%s: '%s' is not a number >= 0\n", argv[i - 1], v.c_str());
        std::exit(2);
      }
      return d;
    };
    if (a == "--json") {
      cfg.json = true;
    } else if (a == "--admitd") {
      cfg.admitd = value();
    } else if (a == "--free-sim") {
      cfg.free_sim = value();
    } else if (a == "--alone-sim") {
      cfg.alone_sim = value();
    } else if (a == "--shared-sim") {
      cfg.shared_sim = value();
    } else if (a == "--caller-key") {
      cfg.caller_key = value();
    } else if (a == "--sim-key") {
      cfg.sim_key = value();
    } else if (a == "--clients") {
      cfg.clients = std::max(1, static_cast<int>(number()));
    } else if (a == "--duration") {
      cfg.duration = std::floor(number());
    } else if (a == "--warmup") {
      cfg.warmup = std::floor(number());
    } else if (a == "--latency-duration") {
      cfg.latency_duration = number();
    } else if (a == "--latency-warmup") {
      cfg.latency_warmup = number();
    } else if (a == "--rpm") {
      cfg.rpm = static_cast<std::int64_t>(number());
    } else if (a == "--tpm") {
      cfg.tpm = static_cast<std::int64_t>(number());
    } else if (a == "--sim-latency-ms") {
      cfg.sim_latency_ms = number();
    } else if (a == "--max-tokens-share") {
      cfg.max_tokens_share = std::min(1.0, number());
    } else if (a == "--window") {
      cfg.window = std::max<std::size_t>(1, static_cast<std::size_t>(number()));
    } else if (a == "--admitd-pid") {
      cfg.admitd_pid = static_cast<long>(number());
    } else if (a == "--background") {
      cfg.background = number();
    } else if (a == "--seed") {
      cfg.seed = static_cast<std::uint64_t>(number());
    } else if (a == "--phases") {
      cfg.phases.clear();
      std::string v = value();
      for (std::size_t p = 0; p <= v.size();) {
        const std::size_t c = std::min(v.find(',', p), v.size());
        cfg.phases.push_back(v.substr(p, c - p));
        p = c + 1;
      }
    } else if (a == "--meta") {
      const std::string v = value();
      const std::size_t eq = v.find('=');
      if (eq == std::string::npos) usage();
      cfg.meta.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      usage();
    }
  }
  auto wants = [&](std::string_view p) {
    return std::find(cfg.phases.begin(), cfg.phases.end(), p) != cfg.phases.end();
  };
  if (cfg.admitd.empty() || (wants("latency") && cfg.free_sim.empty()) ||
      (wants("alone") && cfg.alone_sim.empty()) || (wants("shared") && cfg.shared_sim.empty())) {
    usage();
  }
  if (cfg.duration < 4 || cfg.warmup >= cfg.duration / 2 || cfg.background >= 1 || cfg.tpm < 2 ||
      cfg.rpm < 2) {
    std::fprintf(stderr,
                 "proxy_bench: need --duration >= 4, --warmup < duration / 2, --background < 1, "
                 "--rpm and --tpm >= 2\n");
    return 2;
  }
  print_config(cfg);
  std::fflush(stdout);

  Caller caller(cfg.clients);
  json::object out;
  if (wants("latency")) {
    std::fprintf(stderr, "proxy_bench: latency: %.0f s, %d clients alternating direct / admitd\n",
                 cfg.latency_warmup + cfg.latency_duration, cfg.clients);
    const LatencyResult l = run_latency(caller, cfg);
    const double add50 = l.proxy.p50 - l.direct.p50, add99 = l.proxy.p99 - l.direct.p99;
    std::printf("\nlatency admitd adds (%d clients, half of them on each path at any time)\n",
                cfg.clients);
    std::printf("  %-26s %9s %9s %9s %9s %8s\n", "path", "p50 us", "p90 us", "p99 us", "mean us",
                "requests");
    std::printf("  %-26s %9.0f %9.0f %9.0f %9.0f %8zu\n", "straight to the simulator", l.direct.p50,
                l.direct.p90, l.direct.p99, l.direct.mean, l.direct.n);
    std::printf("  %-26s %9.0f %9.0f %9.0f %9.0f %8zu\n", "through admitd", l.proxy.p50,
                l.proxy.p90, l.proxy.p99, l.proxy.mean, l.proxy.n);
    std::printf("  %-26s %9.0f %9s %9.0f\n", "added", add50, "", add99);
    if (l.errors > 0) {
      std::printf("  WARNING: %lld answers were not 200 (first: %s)\n", l.errors,
                  l.first_error.c_str());
    }
    out["added_p50_us"] = std::round(add50);
    out["added_p99_us"] = std::round(add99);
    json_dist(out, "direct", l.direct);
    json_dist(out, "proxy", l.proxy);
    out["latency_errors"] = l.errors;
    if (l.admitd_cpu_us >= 0 && l.proxied > 0) {
      const double per = l.admitd_cpu_us / static_cast<double>(l.proxied);
      std::printf("  admitd CPU time: %.0f us per request through it\n", per);
      out["latency_admitd_cpu_us_per_request"] = std::round(per);
    }
  }
  if (wants("alone")) {
    std::fprintf(stderr, "proxy_bench: alone: %.0f s\n", cfg.duration);
    const LoadResult r = run_load(caller, cfg, cfg.alone_sim, cfg.alone_model, 0);
    const LoadFigures f = figures(r, cfg, 0);
    print_load("alone on the account (goodput = accepted tokens / hidden TPM in force)", r, f, cfg,
               false);
    out["goodput"] = r4(f.goodput);
    out["share_429"] = r4(f.share_429);
    out["upstream_429"] = r.upstream_429;
    json_load(out, "", r, f);
  }
  if (wants("shared")) {
    std::fprintf(stderr, "proxy_bench: shared: %.0f s\n", cfg.duration);
    const LoadResult r = run_load(caller, cfg, cfg.shared_sim, cfg.shared_model, cfg.background);
    const LoadFigures f = figures(r, cfg, cfg.background);
    print_load(
        "shared account (goodput = admitd's accepted tokens / (the hidden TPM in force "
        "less the other client's accepted tokens))",
        r, f, cfg, true);
    out["shared_goodput_of_left"] = r4(f.goodput);
    out["shared_share_429"] = r4(f.share_429);
    out["shared_settle_s"] = f.settle_halving.seconds;
    out["shared_upstream_429"] = r.upstream_429;
    out["shared_utilisation"] = r4(f.utilisation);
    out["shared_other_share"] = r4(f.bg_share);
    out["shared_other_share_429"] = r4(f.bg_share_429);
    out["shared_goodput_of_nominal_left"] = r4(f.goodput_nominal);
    json_load(out, "shared_", r, f);
  }

  // Goals (issue 16 item 6).
  std::printf("\ngoals\n");
  auto goal = [&](const char* key, const char* what, double limit, bool at_least) {
    const json::value* v = out.if_contains(key);
    if (v == nullptr) return;
    const double x = v->to_number<double>();
    bool met = at_least ? x >= limit : x <= limit;
    if (std::string_view(key) == "shared_settle_s" && !out.at("shared_settled").as_bool()) {
      met = false;  // never settled: settle_s is the whole half
    }
    std::printf(std::abs(x) >= 100 ? "  %-40s %10.0f  goal %s %g  %s\n"
                                   : "  %-40s %10.4g  goal %s %g  %s\n",
                what, x, at_least ? ">=" : "<=", limit, met ? "met" : "NOT met");
    out[std::string("goal_") + key + "_met"] = met;
  };
  goal("goodput", "goodput (alone)", 0.95, true);
  goal("share_429", "429s to clients (alone)", 0.01, false);
  goal("added_p99_us", "added p99 latency, us", 1000, false);
  goal("shared_goodput_of_left", "shared: goodput of what is left", 0.9, true);
  goal("shared_share_429", "shared: 429s to clients", 0.02, false);
  goal("shared_settle_s", "shared: settle after the halving, s", 5, false);

  if (cfg.duration / 2 < static_cast<double>(cfg.window) + 10) {
    std::printf(
        "  (halves of %.0f s are too short for settle figures: %zu s windows, 10 s to hold)\n",
        cfg.duration / 2, cfg.window);
  }
  if (const json::value* s = out.if_contains("shared_settled"); s != nullptr && !s->as_bool()) {
    std::printf("  (shared: the served rate never settled within +-10%%)\n");
  }

  out["seed"] = cfg.seed;
  out["clients"] = cfg.clients;
  out["duration_s"] = cfg.duration;
  out["warmup_s"] = cfg.warmup;
  out["latency_duration_s"] = cfg.latency_duration;
  out["rpm"] = cfg.rpm;
  out["tpm"] = cfg.tpm;
  out["sim_latency_ms"] = cfg.sim_latency_ms;
  out["background"] = cfg.background;
  for (const auto& [k, v] : cfg.meta) out[k] = v;
  if (cfg.json) std::printf("%s\n", to_json(out).c_str());
  return 0;
}
