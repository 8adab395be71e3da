// The decision routes: decide, record, acquire (at once, or waiting up to timeout_ms in FIFO
// order on the Api's wait thread) and the lifecycle of the lease it returns: get, adjust,
// extend, commit, rollback. Leases are durable (AcquireOptions::durable): their id is a token
// any admitd on the same store resumes, so the commit may reach another process than the
// acquire.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "admit/async/timer.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "service/api_impl.hpp"
#include "service/metrics.hpp"

namespace admit::service {

namespace {

struct Call {
  std::string entity;
  std::string resource;
  Amounts amounts;
};

// {"entity", "resource", "amounts", <extra>...}: the fields every call names.
Call read_call(const json::object& o, std::initializer_list<std::string_view> extra = {}) {
  Call c;
  bool has_entity = false;
  bool has_resource = false;
  bool has_amounts = false;
  for (const auto& kv : o) {
    const std::string_view key = kv.key();
    if (key == "entity") {
      c.entity = name_field(kv.value(), "entity");
      has_entity = true;
    } else if (key == "resource") {
      c.resource = name_field(kv.value(), "resource");
      has_resource = true;
    } else if (key == "amounts") {
      c.amounts = amounts_field(kv.value(), "amounts", 0);
      has_amounts = true;
    } else {
      bool known = false;
      for (const std::string_view e : extra) known = known || key == e;
      if (!known) throw BadRequest{"unknown field", std::string(key), "unknown_field"};
    }
  }
  if (!has_entity) throw BadRequest{"missing field", "entity", "missing_field"};
  if (!has_resource) throw BadRequest{"missing field", "resource", "missing_field"};
  if (!has_amounts) throw BadRequest{"missing field", "amounts", "missing_field"};
  return c;
}

std::optional<std::int64_t> optional_int(const json::object& o, std::string_view key,
                                         std::int64_t min, std::int64_t max) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  return int_field(*v, std::string(key), min, max);
}

// A resumed lease that must never end by leaving its scope: a route ends it explicitly
// (commit, rollback) or lets go of it (detach), and this holder lets go of whatever is left.
struct Resumed {
  Lease lease;
  explicit Resumed(Lease l) : lease(std::move(l)) {}
  Resumed(const Resumed&) = delete;
  Resumed& operator=(const Resumed&) = delete;
  ~Resumed() {
    if (lease.active() && lease.durable()) (void)lease.detach();
  }
};

json::object lease_object(const Lease& l, std::string_view token, Micros now,
                          json::storage_ptr sp = {}) {
  return json::object({{"id", json::string_view(token.data(), token.size())},
                       {"entity", json::string_view(l.entity().data(), l.entity().size())},
                       {"resource", json::string_view(l.resource().data(), l.resource().size())},
                       {"expires_at_us", l.expires_at()},
                       {"expires_in_ms", std::max<Micros>(0, l.expires_at() - now) / 1000}},
                      0, std::move(sp));
}

}  // namespace

Response Api::Impl::decide(const ApiRequest& r) {
  JsonScratch scratch;
  const Call c = read_call(body_of(r, false, scratch.sp));
  const Metrics::InFlight in_flight(metrics);
  const Decision d = lim(r).decide(c.entity, c.resource, c.amounts);
  if (metrics != nullptr) metrics->decision("/v1/decide", c.resource, d);
  Response res = decision_response(d, decision_body(d), options.openai_headers);
  // A dry run: a denial is the answer, not a refusal (200); an unreachable store is not.
  if (res.status != 503) {
    res.status = 200;
    res.retry_after = -1;
  }
  log_call(res, r.log_fields, c.entity, c.resource, d);
  return res;
}

Response Api::Impl::record(const ApiRequest& r) {
  JsonScratch scratch;
  const Call c = read_call(body_of(r, false, scratch.sp));
  const Decision d = lim(r).record_usage(c.entity, c.resource, c.amounts);
  if (metrics != nullptr) metrics->decision("/v1/record", c.resource, d);
  Response res = decision_response(d, decision_body(d), options.openai_headers);
  log_call(res, r.log_fields, c.entity, c.resource, d);
  return res;
}

void Api::Impl::acquire(const ApiRequest& r, Answer& done) {
  JsonScratch scratch;
  const json::object o = body_of(r, false, scratch.sp);
  const Call c = read_call(o, {"timeout_ms", "ttl_ms", "lease"});
  const Micros timeout =
      optional_int(o, "timeout_ms", 0, options.max_wait / 1000).value_or(0) * 1000;
  const std::optional<std::int64_t> ttl_ms = optional_int(o, "ttl_ms", 1, 7 * 24 * 3600 * 1000LL);
  bool lease = true;
  if (const json::value* v = o.if_contains("lease")) {
    if (!v->is_bool()) throw BadRequest{"must be true or false", "lease", "invalid_type"};
    lease = v->get_bool();
  }
  AcquireOptions ao;
  ao.with_stats = true;
  ao.durable = lease;
  if (ttl_ms) ao.lease_ttl = *ttl_ms * 1000;
  // From here the answer comes from the Limiter's callback (perhaps on another thread).
  auto in_flight = std::make_shared<Metrics::InFlight>(metrics);
  Limiter::AcquireCallback answer = [this, lease, entity = c.entity, resource = c.resource,
                                     in_flight, done = std::move(done)](Lease l) {
    const Decision& d = l.decision();  // read before the lease ends (commit_async below)
    if (metrics != nullptr) metrics->decision("/v1/acquire", resource, d);
    std::string body;
    const bool keep = l.active() && lease;
    if (keep) {
      JsonScratch memory;
      const std::string token = l.detach();  // the lease lives on in the store; d is unchanged
      const json::object lo = lease_object(l, token, d.now, memory.sp);
      body = decision_body(d, &lo);
    } else {
      body = decision_body(d);
    }
    Response res = decision_response(d, std::move(body), options.openai_headers);
    log_call(res, done.log_fields, entity, resource, d);
    if (!keep && l.active())
      l.commit_async();  // never blocks (the store's I/O thread may run this)
    done(std::move(res));
  };
  if (timeout == 0) {
    return lim(r).try_acquire_async(c.entity, c.resource, c.amounts, std::move(answer), ao);
  }
  (void)lim(r).acquire_async(c.entity, c.resource, c.amounts, std::chrono::microseconds(timeout),
                             AsioTimer::create(waits.get_executor(), lim(r).clock()),
                             std::move(answer), ao);
}

void Api::Impl::lease_get(const ApiRequest& r, Answer& done) {
  const Resumed held(lim(r).resume(r.params.at(0)));
  json::object o = lease_object(held.lease, r.params.at(0), lim(r).clock().now());
  json::array& holdings = o["holdings"].emplace_array();
  for (const Lease::Holding& h : held.lease.holdings()) {
    holdings.push_back(json::object{{"entity", json::string_view(h.entity.data(), h.entity.size())},
                                    {"limit", json::string_view(h.limit.data(), h.limit.size())},
                                    {"amount", h.amount}});
  }
  done(reply(200, o));
}

void Api::Impl::lease_adjust(const ApiRequest& r, Answer& done) {
  const json::object o = body_of(r);
  only_fields(o, {"amounts"});
  const json::value* v = o.if_contains("amounts");
  if (v == nullptr) throw BadRequest{"missing field", "amounts", "missing_field"};
  const Amounts deltas = amounts_field(*v, "amounts", -kMaxExact);
  auto held = std::make_shared<Resumed>(lim(r).resume(r.params.at(0)));
  auto once = std::make_shared<Answer>(std::move(done));
  try {
    // Throws (ValidationError: a limit the lease does not have) before anything is sent.
    held->lease.adjust_async(
        deltas, [this, held, token = r.params.at(0), once](Decision d) mutable {
          std::optional<json::object> lo;
          if (held->lease.active()) lo = lease_object(held->lease, token, d.now);
          Response res =
              decision_response(d, decision_body(d, lo ? &*lo : nullptr), options.openai_headers);
          log_call(res, once->log_fields, held->lease.entity(), held->lease.resource(), d);
          held.reset();  // lets go of the lease (detach) before the answer goes out
          (*once)(std::move(res));
        });
  } catch (...) {
    done = std::move(*once);  // the callback never runs: route() answers
    throw;
  }
}

void Api::Impl::lease_extend(const ApiRequest& r, Answer& done) {
  const json::object o = body_of(r);
  only_fields(o, {"ttl_ms"});
  const json::value* v = o.if_contains("ttl_ms");
  if (v == nullptr) throw BadRequest{"missing field", "ttl_ms", "missing_field"};
  const Micros ttl = int_field(*v, "ttl_ms", 1, 7 * 24 * 3600 * 1000LL) * 1000;
  auto held = std::make_shared<Resumed>(lim(r).resume(r.params.at(0)));
  held->lease.extend_async(
      ttl, [this, held, token = r.params.at(0), done = std::move(done)](Decision d) mutable {
        std::optional<json::object> lo;
        if (held->lease.active()) lo = lease_object(held->lease, token, d.now);
        Response res =
            decision_response(d, decision_body(d, lo ? &*lo : nullptr), options.openai_headers);
        log_call(res, done.log_fields, held->lease.entity(), held->lease.resource(), d);
        held.reset();
        done(std::move(res));
      });
}

void Api::Impl::lease_end(const ApiRequest& r, Answer& done, bool refund) {
  const json::object o = body_of(r, /*empty_ok=*/true);
  only_fields(o, {});
  Lease lease = lim(r).resume(r.params.at(0));
  auto answer = [this, token = r.params.at(0), refund, entity = std::string(lease.entity()),
                 resource = std::string(lease.resource()), done = std::move(done)](Decision d) {
    std::optional<json::object> lo;
    if (d.allowed)
      lo = json::object{{"id", token}, {"ended", refund ? "rolled_back" : "committed"}};
    Response res =
        decision_response(d, decision_body(d, lo ? &*lo : nullptr), options.openai_headers);
    log_call(res, done.log_fields, entity, resource, d);
    done(std::move(res));
  };
  // The lease ends at once (this object is inactive); the store is told in the background.
  if (refund) {
    lease.rollback_async(std::move(answer));
  } else {
    lease.commit_async(std::move(answer));
  }
}

}  // namespace admit::service
