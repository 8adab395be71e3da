#include "service/proxy/gateway.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "admit/async/timer.hpp"
#include "admit/core/error.hpp"
#include "admit/sched/scheduler.hpp"
#include "admit/sched/sse_usage.hpp"
#include "common/http/client.hpp"
#include "service/auth.hpp"
#include "service/metrics.hpp"
#include "service/proxy/deployments.hpp"
#include "service/proxy/estimate.hpp"
#include "service/rate_limit_headers.hpp"

namespace admit::service {

namespace json = boost::json;
namespace asio = boost::asio;

namespace {

char lower_ascii(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

/// `name` equals `lower` (lowercase) in any case.
bool is_named(std::string_view name, std::string_view lower) {
  if (name.size() != lower.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (lower_ascii(name[i]) != lower[i]) return false;
  }
  return true;
}

/// `name` starts with `lower` (lowercase) in any case.
bool has_prefix(std::string_view name, std::string_view lower) {
  return name.size() >= lower.size() && is_named(name.substr(0, lower.size()), lower);
}

/// Response headers of the upstream that are not passed on: the framing (the server sets its
/// own), and the upstream's rate-limit headers, which describe the shared upstream account;
/// the caller gets its own limits' headers instead.
bool dropped_header(std::string_view n) {
  return is_named(n, "connection") || is_named(n, "keep-alive") ||
         is_named(n, "transfer-encoding") || is_named(n, "content-length") || is_named(n, "te") ||
         is_named(n, "trailer") || is_named(n, "upgrade") || is_named(n, "server") ||
         is_named(n, "date") || is_named(n, "retry-after") || is_named(n, "retry-after-ms") ||
         has_prefix(n, "proxy-") || has_prefix(n, "x-ratelimit-") ||
         has_prefix(n, "anthropic-ratelimit-") || is_named(n, "set-cookie");
}

/// An OpenAI-shaped error: {"error":{"message","type","param","code"}}.
http::Response error_response(unsigned status, std::string_view message, std::string_view type,
                              std::string_view param, std::string_view code) {
  json::object e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? json::value(nullptr) : json::value(param);
  e["code"] = code.empty() ? json::value(nullptr) : json::value(code);
  http::Response r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = json::serialize(json::object{{"error", std::move(e)}});
  return r;
}

/// The `usage` of a non-streamed answer: chat and completions (prompt_tokens,
/// completion_tokens), embeddings (prompt_tokens), responses (input_tokens, output_tokens);
/// total_tokens when present. nullopt when there is none or it is not sane.
std::optional<sched::Usage> body_usage(std::string_view body) {
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 64;
  const json::value v = json::parse(body, ec, {}, po);
  if (ec || !v.is_object()) return std::nullopt;
  const json::value* u = v.get_object().if_contains("usage");
  if (u == nullptr || !u->is_object()) return std::nullopt;
  const json::object& o = u->get_object();
  const auto field = [&o](std::string_view a, std::string_view b) -> std::int64_t {
    for (std::string_view n : {a, b}) {
      const json::value* x = o.if_contains(n);
      if (x != nullptr && x->is_int64() && x->get_int64() >= 0 &&
          x->get_int64() <= sched::kMaxUsageTokens) {
        return x->get_int64();
      }
    }
    return 0;
  };
  sched::Usage usage;
  usage.prompt_tokens = field("prompt_tokens", "input_tokens");
  usage.completion_tokens = field("completion_tokens", "output_tokens");
  usage.total_tokens = field("total_tokens", "total_tokens");
  if (usage.total() == 0) return std::nullopt;
  return usage;
}

std::string_view path_of(std::string_view target) {
  return target.substr(0, std::min(target.find('?'), target.size()));
}

/// How long a stream may wait for its client to take a piece before the upstream call is
/// cancelled: a backstop, for a client that stops reading without closing (one that closes
/// is reported by Exchange::on_close, see Flight::client_gone).
constexpr std::chrono::seconds kStreamStall{45};

}  // namespace

struct Upstream {
  GatewayUpstream config;
  http::Origin origin;
  std::unique_ptr<http::Client> client;
  std::unique_ptr<sched::Scheduler> scheduler;
  DeploymentLoad load;  // for choosing among the deployments of a model
};

struct Gateway::Impl {
  GatewayConfig config;
  Limiter& limiter;
  Metrics* metrics;
  asio::io_context& io;  // the HTTP clients' connections
  // The gateway's loop: the schedulers, the callers' waits, and what a request does between
  // its upstream calls (admitted, attempt, completed) run one at a time on it.
  asio::strand<asio::io_context::executor_type> loop;
  std::vector<std::unique_ptr<Upstream>> upstreams;
  SecretDigests keys;                 // the callers' keys ...
  std::vector<std::string> entities;  // ... and the entity of each, by index

  Impl(const GatewayConfig& c, Limiter& l, Metrics* m, asio::io_context& on)
      : config(c), limiter(l), metrics(m), io(on), loop(asio::make_strand(io)) {
    for (const GatewayCaller& k : config.callers) {
      if (keys.add(k.key)) entities.push_back(k.entity);  // the config refuses a key twice
    }
    for (const GatewayUpstream& u : config.upstreams) {
      auto up = std::make_unique<Upstream>();
      up->config = u;
      up->origin = http::parse_base_url(u.base_url);
      http::ClientOptions co;
      co.ca_file = u.ca_file;
      co.max_idle_per_origin = u.max_concurrent;
      // On the gateway's io_context, with the schedulers (admitd: the server's, on one
      // thread by default): a request's dispatch, its upstream call and its answer hand
      // nothing to another thread.
      up->client = std::make_unique<http::Client>(co, io);
      sched::SchedulerOptions so;
      so.mode = sched::Mode::intelligent;
      so.entity = u.name;
      so.max_concurrent_executions = u.max_concurrent;
      so.max_queue_size = 100'000;
      so.request_timeout =
          std::chrono::duration_cast<std::chrono::microseconds>(config.deadline).count();
      so.max_attempts = u.max_attempts;
      up->scheduler = std::make_unique<sched::Scheduler>(
          loop, limiter, so, std::make_shared<sched::HeaderProvider>(u.dialect));
      upstreams.push_back(std::move(up));
    }
  }

  ~Impl() {
    // Queued requests fail (SchedulerClosed), calls in flight are cancelled: posted to io,
    // which no longer runs (the server stopped); what is left there is dropped with it.
    for (auto& u : upstreams) u->scheduler.reset();
    for (auto& u : upstreams) u->client.reset();
  }

  /// The deployments of `model`, in the configuration's order: the upstreams that list it;
  /// if none does, those that list no model (they serve any other).
  std::vector<Upstream*> deployments(std::string_view model) {
    std::vector<Upstream*> listing;
    std::vector<Upstream*> any;
    for (auto& u : upstreams) {
      const auto& ms = u->config.models;
      if (ms.empty()) any.push_back(u.get());
      if (std::find(ms.begin(), ms.end(), model) != ms.end()) listing.push_back(u.get());
    }
    return listing.empty() ? any : listing;
  }

  /// Where a request of `est` goes among `candidates` not yet `tried` (null: all were): the
  /// deployment with the most room (pick_deployment).
  Upstream* choose(const std::vector<Upstream*>& candidates, const std::vector<bool>& tried,
                   const RequestEstimate& est, std::string_view resource_type) const {
    std::vector<DeploymentView> views;
    std::vector<Upstream*> open;
    const Micros now = limiter.clock().now();
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      if (tried[i]) continue;
      Upstream* u = candidates[i];
      open.push_back(u);
      if (candidates.size() == 1) break;  // nothing to compare
      const std::string bucket = u->scheduler->bucket_for(est.model, resource_type);
      DeploymentCapacity capacity;
      try {
        capacity = deployment_capacity(limiter.resolve(u->config.name, bucket));
      } catch (const Error&) {  // its limits unreadable now: judged by its load alone
      }
      views.push_back({deployment_fill(u->load, capacity, u->config.max_concurrent, est.total()),
                       u->load.held_until() > now || u->scheduler->held_until(bucket) > now,
                       u->scheduler->breaker_state(bucket) == sched::BreakerState::open});
    }
    if (open.empty()) return nullptr;
    return views.empty() ? open.front() : open[pick_deployment(views)];
  }

  /// The caller's entity, or the error response that refuses the request.
  std::variant<std::string, http::Response> caller(const http::Request& req) const {
    if (keys.size() != 0) {
      const std::string_view key = bearer_token(req.header("authorization"));
      if (const std::optional<std::size_t> i = key.empty() ? std::nullopt : keys.find(key)) {
        return entities[*i];
      }
      return error_response(401, "Incorrect API key provided.", "invalid_request_error", "",
                            "invalid_api_key");
    }
    if (!config.entity_header.empty()) {
      const std::string_view e = req.header(config.entity_header);
      if (!e.empty()) {
        try {
          validate_name("entity", e);
        } catch (const ValidationError& x) {
          return error_response(400, config.entity_header + ": " + x.reason(),
                                "invalid_request_error", config.entity_header, "invalid_entity");
        }
        return std::string(e);
      }
    }
    return std::string("anonymous");
  }

  /// 1 for each request limit and `tokens` for each token limit of (entity, model) and its
  /// ancestors. @throws StoreUnavailable (limits kept in an unreachable store).
  Amounts caller_amounts(const std::string& entity, const std::string& model,
                         std::int64_t tokens) const {
    Amounts a;
    std::vector<std::string> seen;
    std::string e = entity;
    for (int depth = 0; !e.empty() && depth < 32; ++depth) {
      for (const auto& [limit, source] : limiter.resolve(e, model)) {
        const std::string& n = limit.name();
        if (std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
        seen.push_back(n);
        if (request_limit(n)) a.add(n, 1);
        if (token_limit(n)) a.add(n, tokens);
      }
      e = limiter.parent(e);
    }
    return a;
  }

  void models(http::Exchange ex) const {
    json::array data;
    std::vector<std::string_view> listed;  // a model of several deployments is listed once
    for (const auto& u : upstreams) {
      for (const std::string& m : u->config.models) {
        if (std::find(listed.begin(), listed.end(), m) != listed.end()) continue;
        listed.push_back(m);
        data.push_back(json::object{
            {"id", m}, {"object", "model"}, {"created", 0}, {"owned_by", u->config.name}});
      }
    }
    http::Response r;
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
    ex.respond(std::move(r));
  }
};

namespace {

/// One request through the gateway: the caller's lease, then the upstream's scheduler and
/// its attempts, then the reconciliation.
class Flight : public std::enable_shared_from_this<Flight> {
 public:
  Flight(Gateway::Impl& gw, http::Exchange ex, std::vector<Upstream*> deployments,
         GatewayRoute route, std::string entity, RequestEstimate est, std::string body)
      : gw_(gw),
        ex_(std::move(ex)),
        deployments_(std::move(deployments)),
        tried_(deployments_.size(), false),
        route_(route),
        entity_(std::move(entity)),
        est_(std::move(est)),
        body_(std::move(body)),
        stall_(gw.io) {}

  void start() {
    deadline_ = gw_.limiter.clock().now() +
                std::chrono::duration_cast<std::chrono::microseconds>(gw_.config.deadline).count();
    Amounts amounts;
    try {
      amounts = gw_.caller_amounts(entity_, est_.model, est_.total());
    } catch (const Error& e) {
      answer(error_response(503, e.what(), "server_error", "", "store_unavailable"));
      return;
    }
    for (const auto& a : amounts) {
      if (token_limit(a.name)) token_names_.push_back(a.name);
    }
    auto self = shared_from_this();
    AcquireOptions ao;
    ao.with_stats = true;  // the caller's RateLimit and x-ratelimit-* headers
    Limiter::AsyncWait wait = gw_.limiter.acquire_async(
        entity_, est_.model, amounts,
        std::chrono::duration_cast<std::chrono::microseconds>(gw_.config.deadline),
        AsioTimer::create(gw_.loop, gw_.limiter.clock()),
        [self](Lease lease) { self->admitted(std::move(lease)); }, ao);
    {
      std::lock_guard g(call_mu_);
      wait_ = wait;
    }
    if (gone_.load()) wait.cancel();  // client_gone() may have missed it
  }

  /// The client closed its connection before its answer (Exchange::on_close; any thread).
  /// A wait for the caller's limits is cancelled, an upstream call in flight too (its end
  /// settles the caller: rolled back, or, for a stream begun, charged the prompt and the
  /// chunks streamed); a request still queued at the upstream's scheduler is let through
  /// and ends at once when it runs (attempt). Nothing is answered any more.
  void client_gone() {
    if (gone_.exchange(true)) return;
    Limiter::AsyncWait wait;
    {
      std::lock_guard g(call_mu_);
      wait = wait_;
    }
    wait.cancel();
    cancel_call();
    // Admitted but no attempt made yet (queued at the scheduler): nothing went upstream, the
    // reservation goes back now. On the gateway's loop, where admitted() and attempt() run.
    asio::post(gw_.loop, [self = shared_from_this()] {
      if (!self->attempted_) self->end_caller(false, 0);
    });
  }

 private:
  // ---- the caller's limits ----

  void admitted(Lease lease) {
    const Decision& d = lease.decision();
    if (gw_.metrics != nullptr) gw_.metrics->decision(gateway_path(route_), est_.model, d);
    add_rate_limit_headers(d, true, caller_headers_);
    if (!lease.active()) {
      refuse(d);
      return;
    }
    if (gone_.load()) {  // admitted as the client left: nothing to do
      caller_ended_.store(true);
      lease.rollback_async();
      return;
    }
    caller_ = std::move(lease);
    (void)submit();
  }

  // ---- the deployments ----

  std::string_view resource_type() const {
    return route_ == GatewayRoute::embeddings ? sched::resource_type::embedding
                                              : sched::resource_type::text;
  }

  /// Queues the request at the best deployment not tried yet. With others left to try it
  /// makes one attempt there (a 429 or 5xx goes elsewhere at once), at the last one as many
  /// as that upstream's max_attempts. @return false if every deployment was tried.
  bool submit() {
    Upstream* up = gw_.choose(deployments_, tried_, est_, resource_type());
    if (up == nullptr) return false;
    up_ = up;
    const auto at = std::find(deployments_.begin(), deployments_.end(), up);
    tried_[static_cast<std::size_t>(at - deployments_.begin())] = true;
    const bool last = std::find(tried_.begin(), tried_.end(), false) == tried_.end();
    sched::RequestMetadata meta;
    meta.tenant = entity_;
    meta.model = est_.model;
    meta.resource_type = std::string(resource_type());
    meta.estimated_tokens = est_.total();
    meta.deadline = deadline_;
    meta.max_attempts = last ? 0 : 1;
    up->load.add(est_.total());
    submitted_at_ = std::chrono::steady_clock::now();
    first_attempt_ = true;
    auto self = shared_from_this();
    up->scheduler->async_submit(
        std::move(meta),
        [self](const sched::Attempt&, sched::Reply reply) { self->attempt(std::move(reply)); },
        [self](std::exception_ptr e, sched::Result r) { self->completed(e, std::move(r)); });
    return true;
  }

  /// Whether a request that failed at one deployment with `e` may go to another: the
  /// deployment refused it (429s, 5xx, a transport failure, an open breaker, a full queue),
  /// the client still waits and the deadline has not passed.
  bool may_fall_back(const std::exception_ptr& e) const {
    if (gone_.load() || answered_.load() || gw_.limiter.clock().now() >= deadline_) return false;
    try {
      std::rethrow_exception(e);
    } catch (const sched::RequestTimeout&) {
      return false;
    } catch (const sched::RequestRejected& x) {
      // Its limits can never take the request: another's may. Not when the store is down:
      // the deployments share it.
      return x.decision().code != Code::store_unavailable;
    } catch (const ValidationError&) {
      return false;
    } catch (...) {
      return true;
    }
  }

  /// The caller's own limits refused: 429 (or what the code means) with its headers.
  void refuse(const Decision& d) {
    http::Response r;
    switch (d.code) {
      case Code::store_unavailable:
        r = error_response(503, d.reason, "server_error", "", "store_unavailable");
        break;
      case Code::exceeds_capacity:
        r = error_response(429, "Request too large for your limits: " + d.reason, "tokens", "",
                           "rate_limit_exceeded");
        break;
      case Code::invalid_argument:
      case Code::unknown_limit:
        r = error_response(400, d.reason, "invalid_request_error", "",
                           std::string(to_string(d.code)));
        break;
      default:
        r = error_response(
            429, "Rate limit reached for " + entity_ + " on " + est_.model + ": " + d.reason,
            "requests", "", "rate_limit_exceeded");
        if (const std::int64_t s = d.retry_after_header(); s > 0) {
          r.headers.emplace_back("Retry-After", std::to_string(s));
          r.headers.emplace_back("retry-after-ms", std::to_string((d.retry_after + 999) / 1000));
        }
    }
    answer(std::move(r));
  }

  // ---- one attempt upstream (the scheduler's request function) ----

  void attempt(sched::Reply reply) {
    if (gone_.load()) {
      // The client left while this was queued (or waiting to retry): no call. Not a
      // failure: the scheduler ends the request, its lease charged no tokens.
      end_caller(false, 0);
      sched::Outcome o;
      o.usage = sched::Usage{};
      reply(std::move(o));
      return;
    }
    attempted_ = true;
    sent_at_ = std::chrono::steady_clock::now();
    if (first_attempt_ && gw_.metrics != nullptr) {
      gw_.metrics->upstream_queued(up_->config.name, sent_at_ - submitted_at_);
    }
    first_attempt_ = false;
    status_ = 0;
    up_headers_.clear();
    buffered_.clear();
    forwarding_ = false;
    streaming_ = false;
    sse_ = sched::SseUsageParser();
    http::ClientRequest req;
    req.method = "POST";
    req.origin = up_->origin;
    req.target = http::join_target(up_->origin, upstream_path(route_));
    req.headers.emplace_back("Content-Type", "application/json");
    req.headers.emplace_back("Accept", est_.stream ? "text/event-stream" : "application/json");
    if (!up_->config.api_key.empty()) {
      req.headers.emplace_back("Authorization", "Bearer " + up_->config.api_key);
    }
    req.body = body_;
    {
      std::lock_guard g(end_mu_);
      running_ = true;
    }
    auto self = shared_from_this();
    http::CallHandlers h;
    h.on_head = [self](http::ClientResponseHead head) { self->upstream_head(std::move(head)); };
    h.on_data = [self](std::string data, std::function<void()> resume) {
      self->upstream_data(std::move(data), std::move(resume));
    };
    h.on_done = [self, reply](std::string error) { self->upstream_done(error, reply); };
    {
      std::lock_guard g(call_mu_);
      call_ = up_->client->start(std::move(req), std::move(h));
    }
    if (gone_.load()) cancel_call();  // client_gone() may have missed it
  }

  void upstream_head(http::ClientResponseHead head) {
    status_ = head.status;
    if (gw_.metrics != nullptr) {
      gw_.metrics->upstream_attempt(up_->config.name, status_,
                                    std::chrono::steady_clock::now() - sent_at_);
    }
    up_headers_ = std::move(head.headers);
    if (status_ == 429 || status_ >= 500) return;  // the scheduler may retry: not forwarded
    forwarding_ = true;
    std::string_view type;
    for (const auto& [k, v] : up_headers_) {
      if (is_named(k, "content-type")) type = v;
    }
    if (status_ == 200 && type.starts_with("text/event-stream")) {
      if (!claim()) {
        cancel_call();
        return;
      }
      streaming_ = true;
      ex_.begin_stream(head_response(), [] {});
    }
  }

  void upstream_data(std::string data, std::function<void()> resume) {
    if (!streaming_) {
      // The client's body_limit bounds it. Most answers come in one piece: kept as it came.
      if (buffered_.empty()) {
        buffered_ = std::move(data);
      } else {
        buffered_ += data;
      }
      resume();
      return;
    }
    sse_.feed(data);
    // Back-pressure: the next piece is read once the client took this one. A client that
    // is gone never does: the stall timer then cancels the call. (Only the call's handlers,
    // one at a time, touch stall_.)
    const std::uint64_t gen = ++pieces_;
    auto self = shared_from_this();
    stall_.expires_after(kStreamStall);
    stall_.async_wait([self, gen](const boost::system::error_code& ec) {
      if (!ec && self->taken_.load() < gen) self->cancel_call();
    });
    ex_.write(std::move(data), [self, gen, resume = std::move(resume)] {
      self->taken_.store(gen);
      resume();
    });
  }

  void upstream_done(const std::string& error, const sched::Reply& reply) {
    stall_.cancel();
    sched::Outcome o;
    o.status = static_cast<int>(status_);
    for (const auto& [k, v] : up_headers_) o.headers.add(k, v);
    bool orphan = false;  // the scheduler gave up on this request while the attempt ran
    {
      std::lock_guard g(end_mu_);
      running_ = false;
      orphan = timed_out_;
    }
    if (streaming_) {
      ex_.end();
      if (sse_.usage()) {
        o.usage = *sse_.usage();
      } else {  // broken off, or no usage chunk: the prompt and what was streamed
        o.usage = sched::Usage{est_.prompt_tokens, sse_.content_chunks(), 0};
      }
      end_caller(true, o.usage->total());
    } else if (!error.empty() && gone_.load()) {
      // Cancelled (or broken) after the client left: not retried, not the upstream's
      // failure; the caller gets nothing and is refunded, the upstream's estimate stands.
      o.status = 0;
      end_caller(false, 0);
    } else if (!error.empty()) {
      if (status_ == 0 && gw_.metrics != nullptr) {  // no head came: counted here
        gw_.metrics->upstream_attempt(up_->config.name, 0,
                                      std::chrono::steady_clock::now() - sent_at_);
      }
      o.status = 0;
      hold(o);
      o.error = std::make_exception_ptr(
          std::runtime_error("upstream " + up_->config.name + ": " + error));
      if (orphan) fail(o.error);
    } else if (forwarding_) {
      const bool ok = status_ >= 200 && status_ < 300;
      if (ok) o.usage = body_usage(buffered_);
      if (claim()) {
        http::Response r = head_response();
        r.body = std::move(buffered_);  // not read after a forwarded answer
        ex_.respond(std::move(r));
      }
      // A 4xx: the upstream did no work.
      end_caller(ok, ok ? (o.usage ? o.usage->total() : est_.total()) : 0);
    } else {
      o.body = buffered_.substr(0, 64 * 1024);  // a 429's or 5xx's hints
      hold(o);
      if (orphan) fail(std::make_exception_ptr(sched::RetriesExhausted("", o.status, 1)));
    }
    reply(std::move(o));
  }

  /// A deployment that answered 429, 5xx or nothing is held until the retry-after it sent,
  /// else for a second: the other deployments of the model go first meanwhile.
  void hold(const sched::Outcome& o) {
    const Micros now = gw_.limiter.clock().now();
    const Observation obs = parse_response(up_->config.dialect, o.headers, o.status, o.body, now);
    up_->load.hold_until(now + obs.retry_after.value_or(kMicrosPerSecond));
  }

  // ---- the end ----

  /// The scheduler's end of the request. A success was answered and reconciled as it arrived
  /// (upstream_done). A deadline that passes while an attempt runs lets the attempt finish:
  /// its end answers the client.
  void completed(std::exception_ptr e, const sched::Result&) {
    up_->load.remove(est_.total());
    if (!e) return;
    if (may_fall_back(e)) {
      const std::string& from = up_->config.name;
      if (submit()) {
        if (gw_.metrics != nullptr) gw_.metrics->upstream_fallback(from);
        return;
      }
    }
    try {
      std::rethrow_exception(e);
    } catch (const sched::RequestTimeout&) {
      std::lock_guard g(end_mu_);
      timed_out_ = true;
      if (running_) return;
    } catch (...) {
    }
    fail(e);
  }

  /// Answers a request that got no final answer from upstream and refunds the caller.
  void fail(std::exception_ptr e) {
    end_caller(false, 0);
    try {
      std::rethrow_exception(e);
    } catch (const sched::RetriesExhausted& x) {
      if (x.status() == 429) {
        http::Response res = error_response(
            429, "The upstream " + up_->config.name + " is rate limited; retry later.", "requests",
            "", "rate_limit_exceeded");
        for (const auto& [k, v] : up_headers_) {
          if (is_named(k, "retry-after") || is_named(k, "retry-after-ms")) {
            res.headers.emplace_back(k, v);
          }
        }
        if (res.headers.size() == 1) res.headers.emplace_back("Retry-After", "1");
        answer(std::move(res));
      } else {
        http::Response res = head_response();
        res.status = status_ == 0 ? 502 : status_;
        res.body = buffered_;
        answer(std::move(res));
      }
    } catch (const sched::RequestTimeout&) {
      http::Response res =
          error_response(429, "No capacity within the gateway's deadline for " + est_.model + ".",
                         "requests", "", "rate_limit_exceeded");
      res.headers.emplace_back("Retry-After", "1");
      answer(std::move(res));
    } catch (const sched::QueueOverflow& x) {
      answer(error_response(429, x.what(), "requests", "", "rate_limit_exceeded"));
    } catch (const sched::TooManyFailedRequests& x) {
      answer(error_response(503, x.what(), "server_error", "", "upstream_unavailable"));
    } catch (const sched::RequestRejected& x) {
      const bool down = x.decision().code == Code::store_unavailable;
      answer(error_response(down ? 503 : 429, x.what(), down ? "server_error" : "tokens", "",
                            down ? "store_unavailable" : "rate_limit_exceeded"));
    } catch (const std::exception& x) {
      answer(error_response(502, x.what(), "server_error", "", "upstream_error"));
    }
  }

  /// Commits the caller's lease with its token limits adjusted to `used`, or rolls it back.
  void end_caller(bool commit, std::int64_t used) {
    if (caller_ended_.exchange(true) || !caller_.active()) return;
    if (!commit) {
      caller_.rollback_async();
      return;
    }
    const std::int64_t delta = used - est_.total();
    if (delta == 0 || token_names_.empty()) {
      caller_.commit_async();
      return;
    }
    Amounts deltas;
    for (const std::string& n : token_names_) deltas.add(n, delta);
    auto lease = std::make_shared<Lease>(std::move(caller_));
    lease->adjust_async(deltas, [lease](const Decision&) { lease->commit_async(); });
  }

  // ---- the client ----

  /// The first of respond / begin_stream: later ones are not made.
  bool claim() { return !answered_.exchange(true); }
  void answer(http::Response r) {
    if (!claim()) return;
    for (auto& h : caller_headers_) r.headers.push_back(std::move(h));
    caller_headers_.clear();
    ex_.respond(std::move(r));
  }

  /// The upstream's status and headers (less the dropped ones) with the caller's own.
  http::Response head_response() {
    http::Response r;
    r.status = status_;
    for (const auto& [k, v] : up_headers_) {
      if (!dropped_header(k)) r.headers.emplace_back(k, v);
    }
    for (auto& h : caller_headers_) r.headers.push_back(std::move(h));
    caller_headers_.clear();
    return r;
  }

  void cancel_call() {
    std::shared_ptr<http::Call> c;
    {
      std::lock_guard g(call_mu_);
      c = call_;
    }
    if (c) c->cancel();
  }

  Gateway::Impl& gw_;
  http::Exchange ex_;
  const std::vector<Upstream*> deployments_;  // of the model, in the configuration's order
  std::vector<bool> tried_;                   // by index into deployments_
  Upstream* up_ = nullptr;                    // where the request is now
  std::chrono::steady_clock::time_point submitted_at_;  // to up_'s scheduler
  bool first_attempt_ = true;                           // no attempt at up_ yet
  std::chrono::steady_clock::time_point sent_at_;       // the attempt under way
  const GatewayRoute route_;
  const std::string entity_;
  const RequestEstimate est_;
  const std::string body_;
  Micros deadline_ = 0;
  Lease caller_;
  std::vector<std::string> token_names_;
  HeaderList caller_headers_;
  std::atomic<bool> answered_{false};
  std::atomic<bool> caller_ended_{false};
  std::atomic<bool> gone_{false};  // the client closed its connection (client_gone)
  bool attempted_ = false;         // an upstream call was started (on gw_.loop only)
  Limiter::AsyncWait wait_;        // for the caller's limits (call_mu_)
  std::mutex end_mu_;
  bool running_ = false;    // an attempt is under way (end_mu_)
  bool timed_out_ = false;  // the scheduler's deadline passed (end_mu_)

  // The attempt in progress (its handlers run one at a time, on its connection's strand).
  std::mutex call_mu_;
  std::shared_ptr<http::Call> call_;
  unsigned status_ = 0;
  std::vector<std::pair<std::string, std::string>> up_headers_;
  std::string buffered_;
  bool forwarding_ = false;
  bool streaming_ = false;
  sched::SseUsageParser sse_;
  asio::steady_timer stall_;  // by the call's handlers only
  std::atomic<std::uint64_t> pieces_{0};
  std::atomic<std::uint64_t> taken_{0};
};

}  // namespace

Gateway::Gateway(const GatewayConfig& config, Limiter& limiter, Metrics* metrics,
                 asio::io_context& io)
    : impl_(std::make_shared<Impl>(config, limiter, metrics, io)) {}

Gateway::~Gateway() = default;

bool Gateway::authenticates() const { return impl_->keys.size() != 0; }

bool Gateway::serves(std::string_view method, std::string_view path) {
  path = path_of(path);
  if (method == "GET") return path == "/v1/models";
  return method == "POST" && gateway_route(path).has_value();
}

void Gateway::handle(const http::Request& request, http::Exchange exchange) {
  Impl& im = *impl_;
  try {
    const std::string_view path = path_of(request.target);
    auto who = im.caller(request);
    if (auto* refusal = std::get_if<http::Response>(&who)) {
      exchange.respond(std::move(*refusal));
      return;
    }
    if (request.method == "GET") {
      im.models(exchange);
      return;
    }
    const GatewayRoute route = *gateway_route(path);
    boost::system::error_code ec;
    json::parse_options po;
    po.max_depth = 64;
    json::value body = json::parse(request.body, ec, {}, po);
    if (ec || !body.is_object()) {
      exchange.respond(error_response(400,
                                      "We could not parse the JSON body of your request: " +
                                          (ec ? ec.message() : std::string("not an object")),
                                      "invalid_request_error", "", "invalid_json"));
      return;
    }
    json::object& o = body.get_object();
    RequestEstimate est = estimate_request(route, o, im.config.default_max_tokens);
    std::vector<Upstream*> deployments = im.deployments(est.model);
    if (deployments.empty()) {
      exchange.respond(error_response(404, "The model `" + est.model + "` does not exist.",
                                      "invalid_request_error", "model", "model_not_found"));
      return;
    }
    // A stream reports its usage only when asked: ask for it (the client gets one more
    // chunk, with empty choices, before [DONE]).
    std::string forwarded;
    if (est.stream && route != GatewayRoute::responses && route != GatewayRoute::embeddings) {
      json::value& so = o["stream_options"];
      if (!so.is_object()) so = json::object{};
      so.get_object()["include_usage"] = true;
      forwarded = json::serialize(body);
    } else {
      forwarded = std::string(request.body);
    }
    auto flight = std::make_shared<Flight>(im, exchange, std::move(deployments), route,
                                           std::move(std::get<std::string>(who)), std::move(est),
                                           std::move(forwarded));
    flight->start();
    // Dropped if start() answered already; else the client leaving cancels the flight.
    exchange.on_close([weak = std::weak_ptr<Flight>(flight)] {
      if (auto f = weak.lock()) f->client_gone();
    });
  } catch (const GatewayRequestError& e) {
    exchange.respond(
        error_response(400, e.what(), "invalid_request_error", e.param(), "invalid_request"));
  } catch (const std::exception& e) {
    exchange.respond(error_response(500, e.what(), "server_error", "", "internal_error"));
  }
}

}  // namespace admit::service
