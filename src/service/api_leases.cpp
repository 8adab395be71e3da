// The decision routes: decide, record, acquire (at once, or waiting up to timeout_ms in FIFO
// order on the Api's wait thread) and the lifecycle of the lease it returns: get, adjust,
// extend, commit, rollback. Leases are durable (AcquireOptions::durable): their id is a token
// any admitd on the same store resumes, so the commit may reach another process than the
// acquire.
#include <array>
#include <chrono>
#include <cstring>
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

// read_call_body's reader: a cursor over the body that fails (false) on anything outside the
// form it reads, leaving the body to the strict parser.
class CallReader {
 public:
  explicit CallReader(std::string_view body) : p_(body.data()), end_(body.data() + body.size()) {}

  void ws() {
    const char* p = p_;
    while (p != end_ && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
    p_ = p;
  }
  /// `c` after optional whitespace.
  bool next(char c) {
    ws();
    if (p_ == end_ || *p_ != c) return false;
    ++p_;
    return true;
  }
  /// A string of printable ASCII without `"` or `\` (no escapes): its bytes are its value.
  bool plain_string(std::string_view& out) {
    if (!next('"')) return false;
    const char* const s = p_;
    const char* p = s;
    while (p != end_ && kPlain[static_cast<unsigned char>(*p)]) ++p;
    if (p == end_ || *p != '"') return false;
    out = std::string_view(s, static_cast<std::size_t>(p - s));
    p_ = p + 1;
    return true;
  }
  /// A name validate_name accepts: 1 to 128 bytes of printable ASCII without spaces.
  bool name(std::string_view& out) {
    if (!plain_string(out) || out.empty() || out.size() > 128) return false;
    for (const char c : out) {
      if (c == ' ') return false;
    }
    return true;
  }
  /// A non-negative integer literal of at most 15 digits (below kMaxExact), no fraction or
  /// exponent.
  bool integer(std::int64_t& out) {
    ws();
    const char* const s = p_;
    const char* p = s;
    while (p != end_ && *p >= '0' && *p <= '9') ++p;
    const auto n = static_cast<std::size_t>(p - s);
    if (n == 0 || n > 15 || (n > 1 && *s == '0')) return false;  // JSON: no leading zero
    if (p != end_ && (*p == '.' || *p == 'e' || *p == 'E')) return false;
    std::int64_t v = 0;
    for (const char* c = s; c != p; ++c) v = v * 10 + (*c - '0');
    p_ = p;
    out = v;
    return true;
  }
  bool boolean(bool& out) {
    ws();
    const auto left = static_cast<std::size_t>(end_ - p_);
    if (left >= 4 && std::memcmp(p_, "true", 4) == 0) {
      p_ += 4;
      out = true;
      return true;
    }
    if (left >= 5 && std::memcmp(p_, "false", 5) == 0) {
      p_ += 5;
      out = false;
      return true;
    }
    return false;
  }
  /// After a member: ',' (true, `more` set) or '}' (true, `more` cleared).
  bool member_end(bool& more) {
    ws();
    if (p_ == end_ || (*p_ != ',' && *p_ != '}')) return false;
    more = *p_++ == ',';
    return true;
  }
  bool at_end() {
    ws();
    return p_ == end_;
  }

 private:
  // The bytes of a plain string: 0x20-0x7e but `"` and `\`.
  static constexpr std::array<bool, 256> kPlain = [] {
    std::array<bool, 256> t{};
    for (std::size_t c = 0x20; c < 0x7f; ++c) t[c] = c != '"' && c != '\\';
    return t;
  }();

  const char* p_;
  const char* end_;
};

/// `key` is the literal `k` (a comparison of known length, inlined).
template <std::size_t N>
bool is_key(std::string_view key, const char (&k)[N]) {
  return key.size() == N - 1 && std::memcmp(key.data(), k, N - 1) == 0;
}

}  // namespace

bool read_call_body(std::string_view body, bool acquire, CallBody& out) {
  CallReader in(body);
  if (!in.next('{')) return false;
  bool has_entity = false;
  bool has_resource = false;
  bool has_amounts = false;
  for (bool more = true; more;) {
    std::string_view key;
    if (!in.plain_string(key) || !in.next(':')) return false;
    if (is_key(key, "entity")) {
      if (has_entity || !in.name(out.entity)) return false;
      has_entity = true;
    } else if (is_key(key, "resource")) {
      if (has_resource || !in.name(out.resource)) return false;
      has_resource = true;
    } else if (is_key(key, "amounts")) {
      if (has_amounts || !in.next('{')) return false;
      has_amounts = true;
      std::size_t count = 0;
      in.ws();
      if (!in.next('}')) {
        for (bool more_amounts = true; more_amounts;) {
          std::string_view n;
          std::int64_t v = 0;
          // The strict parser refuses a key twice; amounts_field takes at most 64.
          if (!in.name(n) || !in.next(':') || !in.integer(v) || out.amounts.contains(n) ||
              ++count > 64 || !in.member_end(more_amounts)) {
            return false;
          }
          out.amounts.add(n, v);
        }
      }
    } else if (acquire && is_key(key, "timeout_ms")) {
      std::int64_t v = 0;
      if (out.timeout_ms || !in.integer(v)) return false;
      out.timeout_ms = v;
    } else if (acquire && is_key(key, "ttl_ms")) {
      std::int64_t v = 0;
      if (out.ttl_ms || !in.integer(v)) return false;
      out.ttl_ms = v;
    } else if (acquire && is_key(key, "lease")) {
      bool v = false;
      if (out.lease || !in.boolean(v)) return false;
      out.lease = v;
    } else {
      return false;  // another field ("namespace", an unknown one): the strict path
    }
    if (!in.member_end(more)) return false;
  }
  return has_entity && has_resource && has_amounts && in.at_end();
}

namespace {

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

namespace {

// The call a decide or record body names: read_call_body's, else the strict path's.
Call read_call_of(const Api::Impl& im, const ApiRequest& r) {
  CallBody b;
  if (read_call_body(r.body, false, b)) {
    return Call{std::string(b.entity), std::string(b.resource), std::move(b.amounts)};
  }
  JsonScratch scratch;
  return read_call(im.body_of(r, false, scratch.sp));
}

}  // namespace

Response Api::Impl::decide(const ApiRequest& r) {
  const Call c = read_call_of(*this, r);
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
  const Call c = read_call_of(*this, r);
  const Decision d = lim(r).record_usage(c.entity, c.resource, c.amounts);
  if (metrics != nullptr) metrics->decision("/v1/record", c.resource, d);
  Response res = decision_response(d, decision_body(d), options.openai_headers);
  log_call(res, r.log_fields, c.entity, c.resource, d);
  return res;
}

void Api::Impl::acquire(const ApiRequest& r, Answer& done) {
  constexpr std::int64_t kMaxTtlMs = 7 * 24 * 3600 * 1000LL;
  Call c;
  Micros timeout = 0;
  std::optional<std::int64_t> ttl_ms;
  bool lease = true;
  CallBody b;
  if (read_call_body(r.body, true, b) && b.timeout_ms.value_or(0) <= options.max_wait / 1000 &&
      b.ttl_ms.value_or(1) >= 1 && b.ttl_ms.value_or(1) <= kMaxTtlMs) {
    c = Call{std::string(b.entity), std::string(b.resource), std::move(b.amounts)};
    timeout = b.timeout_ms.value_or(0) * 1000;
    ttl_ms = b.ttl_ms;
    lease = b.lease.value_or(true);
  } else {  // the strict path: accepts what the above does not read, or says what is wrong
    JsonScratch scratch;
    const json::object o = body_of(r, false, scratch.sp);
    c = read_call(o, {"timeout_ms", "ttl_ms", "lease"});
    timeout = optional_int(o, "timeout_ms", 0, options.max_wait / 1000).value_or(0) * 1000;
    ttl_ms = optional_int(o, "ttl_ms", 1, kMaxTtlMs);
    if (const json::value* v = o.if_contains("lease")) {
      if (!v->is_bool()) throw BadRequest{"must be true or false", "lease", "invalid_type"};
      lease = v->get_bool();
    }
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
