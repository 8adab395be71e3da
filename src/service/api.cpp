#include "service/api.hpp"

#include <boost/asio/post.hpp>
#include <boost/url/decode_view.hpp>
#include <boost/url/parse_query.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <limits>
#include <stdexcept>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"
#include "admit/limiter.hpp"
#include "openapi_json.hpp"  // generated from src/service/openapi.json
#include "service/api_impl.hpp"
#include "service/metrics.hpp"
#include "service/rate_limit_headers.hpp"

namespace admit::service {

namespace {

constexpr std::size_t kMaxAmounts = 64;  // the Limiter checks at most 64 names per call

std::string str(std::string_view s) { return std::string(s); }

}  // namespace

// The limit as PUT /v1/limits/... takes it (limit_codec.hpp's form, "shadow":true included:
// it can be sent back as it is), with where it came from and a description.
json::object limit_object(const Limit& l, ConfigSource source) {
  json::value v = json::parse(encode_limits(std::span(&l, 1)));
  json::object o = std::move(v.as_array().at(0).as_object());
  o["source"] = str(to_string(source));
  o["unlimited"] = l.unlimited();
  o["description"] = l.describe();
  return o;
}

namespace {

// ---- the route table ----

using Handler = void (*)(Api::Impl&, const ApiRequest&, Answer&);

template <Response (Api::Impl::*F)()>
void plain(Api::Impl& im, const ApiRequest&, Answer& done) {
  done((im.*F)());
}
template <Response (Api::Impl::*F)(const ApiRequest&)>
void sync(Api::Impl& im, const ApiRequest& r, Answer& done) {
  done((im.*F)(r));
}
template <void (Api::Impl::*F)(const ApiRequest&, Answer&)>
void async(Api::Impl& im, const ApiRequest& r, Answer& done) {
  (im.*F)(r, done);
}
void openapi(Api::Impl&, const ApiRequest&, Answer& done) {
  done(Response{200, std::string(kOpenApiJson), -1, {}, {}, {}, {}});
}
void commit(Api::Impl& im, const ApiRequest& r, Answer& done) { im.lease_end(r, done, false); }
void rollback(Api::Impl& im, const ApiRequest& r, Answer& done) { im.lease_end(r, done, true); }

struct Route {
  RouteInfo info;
  Handler handler;
};

using I = Api::Impl;
const Route kRoutes[] = {
    {{"GET", "/healthz", "none", "Liveness: the process serves"}, plain<&I::health>},
    {{"GET", "/readyz", "none", "Readiness: the store answers"}, plain<&I::ready>},
    {{"GET", "/openapi.json", "none", "This API as an OpenAPI 3.1 document"}, openapi},
    {{"GET", "/metrics", "decide", "Prometheus metrics"}, plain<&I::render_metrics>},
    {{"POST", "/v1/decide", "decide", "The decision an acquire would get; consumes nothing"},
     sync<&I::decide>},
    {{"POST", "/v1/acquire", "decide",
      "Consume if allowed (optionally waiting), returning a lease"},
     async<&I::acquire>},
    {{"POST", "/v1/record", "decide", "Count usage after the fact, unconditionally"},
     sync<&I::record>},
    {{"POST", "/v1/observe", "decide",
      "Learn from a provider's response: discovered limits, clamps, AIMD marks"},
     sync<&I::observe>},
    {{"POST", "/v1/tokens", "decide", "Count the tokens of a text or of chat messages, offline"},
     sync<&I::tokens>},
    {{"GET", "/v1/leases/{lease_id}", "decide", "A lease's entity, resource, expiry and holdings"},
     async<&I::lease_get>},
    {{"POST", "/v1/leases/{lease_id}/adjust", "decide",
      "Reconcile a lease with the real usage (positive: more, negative: refund)"},
     async<&I::lease_adjust>},
    {{"POST", "/v1/leases/{lease_id}/extend", "decide",
      "Move a lease's expiry (heartbeat for long streams)"},
     async<&I::lease_extend>},
    {{"POST", "/v1/leases/{lease_id}/commit", "decide",
      "End a lease keeping its usage; frees its slots"},
     commit},
    {{"POST", "/v1/leases/{lease_id}/rollback", "decide",
      "End a lease giving its usage back; frees its slots"},
     rollback},
    {{"GET", "/v1/limits", "decide", "Every resource's limits"}, sync<&I::list_limits>},
    {{"GET", "/v1/limits/resolve", "decide",
      "The limits of (entity, resource) and where each comes from"},
     sync<&I::resolve>},
    {{"PUT", "/v1/limits/system", "admin", "Set the system defaults"}, sync<&I::put_limits>},
    {{"DELETE", "/v1/limits/system", "admin", "Remove the system defaults"},
     sync<&I::delete_limits>},
    {{"PUT", "/v1/limits/resources/{resource}", "admin", "Set a resource's limits"},
     sync<&I::put_limits>},
    {{"DELETE", "/v1/limits/resources/{resource}", "admin", "Remove a resource's limits"},
     sync<&I::delete_limits>},
    {{"PUT", "/v1/limits/entities/{entity}", "admin", "Set an entity's limits for every resource"},
     sync<&I::put_limits>},
    {{"DELETE", "/v1/limits/entities/{entity}", "admin",
      "Remove an entity's limits for every resource"},
     sync<&I::delete_limits>},
    {{"PUT", "/v1/limits/entities/{entity}/resources/{resource}", "admin",
      "Set an entity's limits for one resource"},
     sync<&I::put_limits>},
    {{"DELETE", "/v1/limits/entities/{entity}/resources/{resource}", "admin",
      "Remove an entity's limits for one resource"},
     sync<&I::delete_limits>},
    {{"PUT", "/v1/limits/parents/{entity}", "admin", "Set an entity's parent"},
     sync<&I::put_parent>},
    {{"DELETE", "/v1/limits/parents/{entity}", "admin", "Remove an entity's parent"},
     sync<&I::delete_parent>},
    {{"GET", "/v1/stats", "decide", "Usage state per entity and resource"}, sync<&I::stats>},
    {{"POST", "/v1/admin/reload", "admin",
      "Read the config file again; a bad file is refused and the old config keeps serving"},
     sync<&I::reload>},
    {{"GET", "/v1/audit", "admin",
      "The audit log: every change of limits, parents and config, who made it, before and after"},
     sync<&I::audit_log>},
};

// Matches `path` against a template: literal segments equal, {name} segments any non-empty
// segment (percent-decoded into `params`).
bool matches(std::string_view tmpl, std::string_view path, std::vector<std::string>& params) {
  params.clear();
  // A template without {parameters} (most): one comparison.
  if (tmpl.find('{') == std::string_view::npos) return tmpl == path;
  while (!tmpl.empty() || !path.empty()) {
    if (tmpl.empty() || path.empty() || tmpl[0] != '/' || path[0] != '/') return false;
    tmpl.remove_prefix(1);
    path.remove_prefix(1);
    const std::size_t te = std::min(tmpl.find('/'), tmpl.size());
    const std::size_t pe = std::min(path.find('/'), path.size());
    const std::string_view ts = tmpl.substr(0, te);
    const std::string_view ps = path.substr(0, pe);
    if (!ts.empty() && ts.front() == '{') {
      if (ps.empty()) return false;
      const std::string segment(ps);  // a copy: see query_param
      auto decoded = boost::urls::make_pct_string_view(segment);
      if (!decoded) return false;
      params.emplace_back(decoded->decode());
    } else if (ts != ps) {
      return false;
    }
    tmpl.remove_prefix(te);
    path.remove_prefix(pe);
  }
  return true;
}

}  // namespace

std::span<const RouteInfo> routes() {
  static const std::vector<RouteInfo> all = [] {
    std::vector<RouteInfo> v;
    for (const Route& r : kRoutes) v.push_back(r.info);
    return v;
  }();
  return all;
}

// ---- helpers shared by the route files ----

Response reply(unsigned status, const json::object& body) {
  return Response{status, json::serialize(body), -1, {}, {}, {}, {}};
}

Response error(unsigned status, std::string message, std::string field, std::string code) {
  json::object o;
  o["error"] = std::move(message);
  if (!code.empty()) o["code"] = std::move(code);
  if (!field.empty()) o["field"] = std::move(field);
  return reply(status, o);
}

namespace {

// Writes a decision's JSON through a pointer into room made beforehand (open_decision): one
// resize of the string instead of a capacity check per piece.
class DecisionWriter {
 public:
  explicit DecisionWriter(char* p) : p_(p) {}
  char* end() const { return p_; }

  template <std::size_t N>
  void lit(const char (&s)[N]) {
    std::memcpy(p_, s, N - 1);
    p_ += N - 1;
  }
  void str(std::string_view s) { p_ = write_json_string(p_, s); }
  void num(std::int64_t n) { p_ = write_json_int(p_, n); }

  static constexpr std::size_t kMaxInt = kMaxJsonInt;

  void violations(const std::vector<Violation>& list) {
    *p_++ = '[';
    for (std::size_t i = 0; i < list.size(); ++i) {
      const Violation& v = list[i];
      if (i != 0) *p_++ = ',';
      lit(R"({"entity":)");
      str(v.entity);
      lit(R"(,"limit":)");
      str(v.limit);
      lit(R"(,"kind":)");
      str(to_string(v.kind));
      lit(R"(,"requested":)");
      num(v.requested);
      lit(R"(,"available":)");
      num(v.available);
      lit(R"(,"retry_after_us":)");
      num(v.retry_after);
      *p_++ = '}';
    }
    *p_++ = ']';
  }
  static std::size_t bound(const std::vector<Violation>& list) {
    std::size_t n = 2;
    for (const Violation& v : list) {
      n += 96 + 3 * kMaxInt + json_string_bound(v.entity) + json_string_bound(v.limit) +
           json_string_bound(to_string(v.kind));
    }
    return n;
  }

 private:
  char* p_;
};

}  // namespace

void open_decision(std::string& out, const Decision& d) {
  std::size_t bound = 160 + 2 * DecisionWriter::kMaxInt + json_string_bound(to_string(d.code)) +
                      json_string_bound(d.reason) + DecisionWriter::bound(d.violations) + 32 +
                      DecisionWriter::bound(d.shadow_violations) + 16;
  for (const LimitStatus& s : d.stats) {
    bound += 128 + 3 * DecisionWriter::kMaxInt + json_string_bound(s.entity) +
             json_string_bound(s.limit) + json_string_bound(to_string(s.kind)) +
             json_string_bound(to_string(s.source));
  }
  const std::size_t at = out.size();
  out.resize(at + bound);
  DecisionWriter w(out.data() + at);
  if (d.allowed) {
    w.lit(R"({"allowed":true,"code":)");
  } else {
    w.lit(R"({"allowed":false,"code":)");
  }
  w.str(to_string(d.code));
  w.lit(R"(,"reason":)");
  w.str(d.reason);
  w.lit(R"(,"retry_after_us":)");
  w.num(d.retry_after);
  w.lit(R"(,"retry_after_s":)");
  w.num(d.retry_after_header());
  w.lit(R"(,"violations":)");
  w.violations(d.violations);
  // Shadow limits that would have refused (Limit::shadow): only when there are some.
  if (!d.shadow_violations.empty()) {
    w.lit(R"(,"shadow_violations":)");
    w.violations(d.shadow_violations);
  }
  w.lit(R"(,"stats":[)");
  for (std::size_t i = 0; i < d.stats.size(); ++i) {
    const LimitStatus& s = d.stats[i];
    if (i != 0) w.lit(",");
    w.lit(R"({"entity":)");
    w.str(s.entity);
    w.lit(R"(,"limit":)");
    w.str(s.limit);
    w.lit(R"(,"kind":)");
    w.str(to_string(s.kind));
    w.lit(R"(,"source":)");
    w.str(to_string(s.source));
    w.lit(R"(,"capacity":)");
    w.num(s.capacity);
    w.lit(R"(,"available":)");
    w.num(s.available);
    w.lit(R"(,"reset_after_us":)");
    w.num(s.reset_after);
    if (s.shadow) w.lit(R"(,"shadow":true)");
    w.lit("}");
  }
  w.lit("]");
  out.resize(static_cast<std::size_t>(w.end() - out.data()));
}

std::string decision_body(const Decision& d, const json::object* lease) {
  std::string out;
  open_decision(out, d);
  if (lease != nullptr) {
    out.append(R"(,"lease":)");
    out.append(json::serialize(*lease));
  }
  out.push_back('}');
  return out;
}

std::string decision_json(const Decision& d) { return decision_body(d); }

unsigned status_of(const Decision& d) {
  if (d.allowed) return 200;
  switch (d.code) {
    case Code::unknown_limit:
    case Code::invalid_argument:
      return 400;
    case Code::lease_not_found:
      return 404;
    case Code::exceeds_capacity:
      return 422;  // can never fit: retrying does not help
    case Code::store_unavailable:
      return 503;
    default:
      return 429;
  }
}

Response decision_response(const Decision& d, std::string body, bool openai_headers) {
  Response res{status_of(d), std::move(body), -1, {}, {}, {}, {}};
  if (res.status == 429 || res.status == 503) res.retry_after = d.retry_after_header();
  append_rate_limit_fields(d, openai_headers, res.fields);
  return res;
}

void log_call(Response& r, bool wanted, std::string_view entity, std::string_view resource,
              const Decision& d) {
  if (!wanted) return;
  r.log.reserve(r.log.size() + 3);
  r.log.emplace_back("entity", std::string(entity));
  r.log.emplace_back("resource", std::string(resource));
  r.log.emplace_back("code", std::string(to_string(d.code)));
}

json::object parse_body(std::string_view body, bool empty_ok, json::storage_ptr sp) {
  if (empty_ok && body.find_first_not_of(" \t\r\n") == std::string_view::npos) return {};
  auto parsed = parse_json_object(body, {}, std::move(sp));
  if (const JsonError* e = std::get_if<JsonError>(&parsed)) refuse(*e);
  return std::move(std::get<json::object>(parsed));
}

std::string name_field(const json::value& v, const std::string& field) {
  const json::string* s = v.if_string();
  if (s == nullptr) throw BadRequest{"must be a string", field, "invalid_type"};
  validate_name(field, *s);  // ValidationError -> 400 naming the field
  return std::string(*s);
}

std::int64_t int_field(const json::value& v, const std::string& field, std::int64_t min,
                       std::int64_t max) {
  auto n = to_int(v, field, min, max);
  if (const JsonError* e = std::get_if<JsonError>(&n)) refuse(*e);
  return std::get<std::int64_t>(n);
}

Amounts amounts_field(const json::value& v, const std::string& field, std::int64_t min) {
  const json::object* a = v.if_object();
  if (a == nullptr) {
    throw BadRequest{"must be an object of limit name -> integer", field, "invalid_type"};
  }
  if (a->size() > kMaxAmounts) throw BadRequest{"at most 64 amounts", field, "out_of_range"};
  Amounts out;
  for (const auto& [name, amount] : *a) {
    const std::string f = field + "." + std::string(name);
    validate_name(f, name);
    out.add(name, int_field(amount, f, min, kMaxExact));
  }
  return out;
}

void only_fields(const json::object& o, std::initializer_list<std::string_view> allowed) {
  for (const auto& kv : o) {
    bool known = false;
    for (const std::string_view a : allowed) known = known || kv.key() == a;
    if (!known) throw BadRequest{"unknown field", std::string(kv.key()), "unknown_field"};
  }
}

std::optional<std::string> query_param(std::string_view query, std::string_view key) {
  std::optional<std::string> value;
  if (!find_query_param(query, key, value)) {
    throw BadRequest{"malformed query string", "query", "invalid_request"};
  }
  return value;
}

bool find_query_param(std::string_view query, std::string_view key,
                      std::optional<std::string>& out) {
  // A copy: Boost.URL 1.81's parse_query reads the last value up to the end of the buffer,
  // past the end of a view into a longer one (the request target here).
  const std::string own(query);
  auto params = boost::urls::parse_query(own);
  if (!params) return false;
  for (const auto& p : *params) {
    if (p.key.decode() == key) {
      out = p.has_value ? p.value.decode() : std::string();
      return true;
    }
  }
  out.reset();
  return true;
}

// ---- Api ----

Api::Impl::Impl(std::vector<Limiter*> l, Metrics* m, ApiOptions o)
    : limiters(std::move(l)), metrics(m), options(o), work(boost::asio::make_work_guard(waits)) {
  if (limiters.empty()) throw std::invalid_argument("Api: no namespace to serve");
  waiter = std::thread([this] { waits.run(); });
}

Api::Impl::~Impl() {
  work.reset();
  waits.stop();  // pending waits are dropped: the server stopped before the Api is destroyed
  waiter.join();
}

Api::Api(Limiter& limiter, Metrics* metrics, ApiOptions options)
    : Api(std::vector<Limiter*>{&limiter}, metrics, std::move(options)) {}
Api::Api(std::vector<Limiter*> limiters, Metrics* metrics, ApiOptions options)
    : impl_(std::make_unique<Impl>(std::move(limiters), metrics, std::move(options))) {}
Api::~Api() = default;

void Api::handle(std::string_view method, std::string_view target, std::string_view body,
                 Reply done, std::string_view principal, bool log_fields) noexcept {
  const auto start = std::chrono::steady_clock::now();
  const std::size_t q = target.find('?');
  ApiRequest r{method,
               target.substr(0, q),
               q == std::string_view::npos ? std::string_view() : target.substr(q + 1),
               body,
               {},
               principal};
  r.log_fields = log_fields;
  impl_->route(r, std::move(done), start);
}

Response Api::handle(std::string_view method, std::string_view target,
                     std::string_view body) noexcept {
  std::promise<Response> p;
  std::future<Response> f = p.get_future();
  handle(method, target, body, [&p](Response res) { p.set_value(std::move(res)); });
  return f.get();
}

void Api::Impl::route(const ApiRequest& req, Reply reply,
                      std::chrono::steady_clock::time_point start) {
  // One pass over the table: the route of (method, path), else the methods the path has.
  ApiRequest r = req;
  const Route* found = nullptr;
  std::string_view label = "other";  // the metrics label: the template, so ids add no series
  std::string allow;
  for (const Route& route : kRoutes) {
    if (!matches(route.info.path, r.path, r.params)) continue;
    label = route.info.path;
    if (route.info.method == r.method) {
      found = &route;
      break;
    }
    if (!allow.empty()) allow += ", ";
    allow += route.info.method;
  }
  Answer done{std::move(reply), metrics, label, start, r.log_fields};
  // `done` is moved out by an asynchronous route; every failure before that answers here.
  try {
    if (found != nullptr) return found->handler(*this, r, done);
    if (!allow.empty()) {
      Response res =
          error(405, "method " + printable(r.method) + " not allowed on " + printable(r.path), {},
                "method_not_allowed");
      res.allow = std::move(allow);
      return done(std::move(res));
    }
    return done(error(404, "no route " + printable(r.path), {}, "no_route"));
  } catch (const BadRequest& e) {
    if (done) done(error(e.status, e.error, e.field, e.code));
  } catch (const ValidationError& e) {
    if (done) done(error(400, e.what(), e.field(), "invalid_argument"));
  } catch (const LeaseNotFound& e) {
    if (done) done(error(404, e.what(), "lease_id", "lease_not_found"));
  } catch (const StoreUnavailable& e) {
    if (done) {
      Response res = error(503, e.what(), {}, "store_unavailable");
      res.retry_after = 1;
      done(std::move(res));
    }
  } catch (const std::exception& e) {
    if (done) done(error(500, std::string("internal error: ") + e.what(), {}, "internal"));
  } catch (...) {
    if (done) done(error(500, "internal error", {}, "internal"));
  }
}

void Answer::operator()(Response r) const {
  if (metrics != nullptr) {
    try {
      metrics->request(label, r.status, std::chrono::steady_clock::now() - start);
    } catch (...) {  // out of memory: the answer matters more than its count
    }
  }
  reply(std::move(r));
}

Limiter* Api::Impl::find_namespace(std::string_view ns) const {
  for (Limiter* l : limiters) {
    if (l->options().ns == ns) return l;
  }
  return nullptr;
}

namespace {

[[noreturn]] void unknown_namespace(const std::vector<Limiter*>& limiters, std::string_view ns) {
  std::string served;
  for (const Limiter* l : limiters)
    served += (served.empty() ? "'" : ", '") + l->options().ns + "'";
  throw BadRequest{"no namespace '" + printable(ns) + "' here (this admitd serves " + served + ")",
                   "namespace", "unknown_namespace", 404};
}

}  // namespace

json::object Api::Impl::body_of(const ApiRequest& r, bool empty_ok, json::storage_ptr sp) const {
  json::object o = parse_body(r.body, empty_ok, std::move(sp));
  if (const json::value* ns = o.if_contains("namespace")) {
    const json::string* s = ns->if_string();
    if (s == nullptr) throw BadRequest{"must be a string", "namespace", "invalid_type"};
    Limiter* l = find_namespace(*s);
    if (l == nullptr) unknown_namespace(limiters, *s);
    if (!r.query.empty()) {
      const std::optional<std::string> q = query_param(r.query, "namespace");
      if (q && *q != *s) {
        throw BadRequest{"the body and the query name different namespaces", "namespace",
                         "invalid_request"};
      }
    }
    r.limiter = l;
    o.erase("namespace");
  }
  return o;
}

Limiter& Api::Impl::lim(const ApiRequest& r) const {
  if (r.limiter == nullptr) {
    // The first namespace without a query (the common case: no query string to parse).
    const std::optional<std::string> ns =
        r.query.empty() ? std::nullopt : query_param(r.query, "namespace");
    r.limiter = ns ? find_namespace(*ns) : limiters.front();
    if (r.limiter == nullptr) unknown_namespace(limiters, *ns);
  }
  return *r.limiter;
}

Response Api::Impl::reload(const ApiRequest& r) {
  only_fields(body_of(r, /*empty_ok=*/true), {});
  if (!options.reload) return error(404, "reload is not available here", {}, "no_route");
  const auto [applied, message] = options.reload(r.principal.empty() ? "anonymous" : r.principal);
  if (!applied) return error(422, message, "config", "config_refused");
  return reply(200, json::object{{"applied", true}, {"message", message}});
}

Response Api::Impl::health() { return reply(200, json::object{{"status", "ok"}}); }

Response Api::Impl::ready() {
  // One configuration read: the store answers (a Redis server is reachable, a SQLite file is
  // readable). The in-memory store always is.
  try {
    const ConfigKey key{ConfigKind::system, {}, {}};
    std::optional<std::string> value;
    Store& store = limiters.front()->store();
    store.get_config(store.open_namespace(limiters.front()->options().ns), std::span(&key, 1),
                     std::span(&value, 1));
  } catch (const std::exception& e) {
    Response res = reply(503, json::object{{"status", "unavailable"},
                                           {"store", limiters.front()->store().name()},
                                           {"reason", e.what()}});
    res.retry_after = 1;
    return res;
  }
  return reply(200, json::object{{"status", "ready"}, {"store", limiters.front()->store().name()}});
}

Response Api::Impl::list_limits(const ApiRequest& req) {
  Limiter& limiter = lim(req);
  json::array resources;
  for (const std::string& r : limiter.resources()) {
    json::array limits;
    for (const auto& [limit, source] : limiter.resolve("", r)) {
      limits.push_back(limit_object(limit, source));
    }
    resources.push_back(json::object{{"resource", r}, {"limits", std::move(limits)}});
  }
  json::object o;
  o["namespace"] = limiter.options().ns;
  o["resources"] = std::move(resources);
  return reply(200, o);
}

Response Api::Impl::render_metrics() {
  if (metrics == nullptr) return error(404, "no route /metrics (metrics are off)", {}, "no_route");
  return Response{200, metrics->render(), -1, {}, std::string(Metrics::kContentType), {}, {}};
}

}  // namespace admit::service
