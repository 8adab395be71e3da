// The route table (service::routes()), the OpenAPI document admitd serves
// (src/service/openapi.json, GET /openapi.json) and the client reference (docs/api.md) describe
// one API: the same (method, path) pairs, the same scopes, which also agree with the scope
// auth.cpp requires; and every route of the table is reachable through Api::handle.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "service/api.hpp"
#include "service/auth.hpp"
#include "service/config.hpp"
#include "service/metrics.hpp"

namespace admit::service {
namespace {

namespace json = boost::json;

using MethodPath = std::pair<std::string, std::string>;  // ("POST", "/v1/leases/{lease_id}/commit")

std::string source_file(const std::string& relative) {
  const std::string path = std::string(ADMIT_SOURCE_DIR) + "/" + relative;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

json::object openapi_document() {
  boost::system::error_code ec;
  json::value v = json::parse(source_file("src/service/openapi.json"), ec);
  EXPECT_FALSE(ec) << "src/service/openapi.json is not JSON: " << ec.message();
  return v.is_object() ? std::move(v.as_object()) : json::object{};
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string str(const json::value* v) {
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string("<none>");
}

// The {name} segments of a path template, in order.
std::vector<std::string> path_parameters(std::string_view tmpl) {
  std::vector<std::string> out;
  for (std::size_t open = tmpl.find('{'); open != std::string_view::npos;
       open = tmpl.find('{', open + 1)) {
    const std::size_t close = tmpl.find('}', open);
    if (close == std::string_view::npos) break;
    out.emplace_back(tmpl.substr(open + 1, close - open - 1));
  }
  return out;
}

// The template with each {name} replaced by params.at(name).
std::string expand(std::string_view tmpl, const std::map<std::string, std::string>& params) {
  std::string out;
  while (!tmpl.empty()) {
    const std::size_t open = tmpl.find('{');
    if (open == std::string_view::npos) break;
    const std::size_t close = tmpl.find('}', open);
    out += tmpl.substr(0, open);
    out += params.at(std::string(tmpl.substr(open + 1, close - open - 1)));
    tmpl.remove_prefix(close + 1);
  }
  out += tmpl;
  return out;
}

// Follows a {"$ref": "#/components/..."} inside `doc`.
const json::object* resolve(const json::object& doc, const json::value& v) {
  const json::object* o = v.if_object();
  while (o != nullptr && o->contains("$ref")) {
    std::string_view ref = o->at("$ref").as_string();
    if (!ref.starts_with("#/")) return nullptr;
    ref.remove_prefix(2);
    const json::value* at = nullptr;
    const json::object* scope = &doc;
    while (!ref.empty()) {
      const std::size_t slash = std::min(ref.find('/'), ref.size());
      at = scope->if_contains(ref.substr(0, slash));
      if (at == nullptr) return nullptr;
      scope = at->if_object();
      ref.remove_prefix(std::min(slash + 1, ref.size()));
      if (scope == nullptr && !ref.empty()) return nullptr;
    }
    o = scope;
  }
  return o;
}

const std::map<std::string, std::string> kSampleParams = {
    {"lease_id", "0000000000000001.757365722d31"}, {"entity", "user-1"}, {"resource", "gpt-4o"}};

std::set<MethodPath> route_set() {
  std::set<MethodPath> out;
  for (const RouteInfo& r : routes()) {
    EXPECT_TRUE(out.emplace(std::string(r.method), std::string(r.path)).second)
        << "routes() lists " << r.method << " " << r.path << " twice";
  }
  return out;
}

std::string describe(const std::set<MethodPath>& s) {
  std::string out;
  for (const auto& [m, p] : s) out += "\n  " + m + " " + p;
  return out.empty() ? " (none)" : out;
}

std::set<MethodPath> minus(const std::set<MethodPath>& a, const std::set<MethodPath>& b) {
  std::set<MethodPath> out;
  for (const MethodPath& x : a) {
    if (!b.contains(x)) out.insert(x);
  }
  return out;
}

TEST(OpenApi, DocumentHasEveryRouteAndNoOther) {
  const json::object doc = openapi_document();
  EXPECT_EQ(str(doc.if_contains("openapi")), "3.1.0");
  const json::object* paths = doc.contains("paths") ? doc.at("paths").if_object() : nullptr;
  ASSERT_NE(paths, nullptr) << "no paths";
  std::set<MethodPath> documented;
  for (const auto& [path, item] : *paths) {
    ASSERT_TRUE(item.is_object()) << path;
    for (const auto& [method, operation] : item.as_object()) {
      if (method == "parameters" || method == "summary" || method == "description" ||
          method == "servers") {
        continue;
      }
      documented.emplace(upper(method), std::string(path));
    }
  }
  const std::set<MethodPath> served = route_set();
  EXPECT_EQ(served, documented) << "routes() but not in openapi.json:"
                                << describe(minus(served, documented))
                                << "\nin openapi.json but not routes():"
                                << describe(minus(documented, served));
}

TEST(OpenApi, ScopesAgreeWithTheTableAndWithAuth) {
  const json::object doc = openapi_document();
  const json::object* paths = doc.contains("paths") ? doc.at("paths").if_object() : nullptr;
  ASSERT_NE(paths, nullptr);
  for (const RouteInfo& r : routes()) {
    SCOPED_TRACE(std::string(r.method) + " " + std::string(r.path));
    // The table against auth.cpp: the scope a request to this route needs.
    const std::optional<Scope> needed = required_scope(r.method, expand(r.path, kSampleParams));
    EXPECT_EQ(needed ? std::string(to_string(*needed)) : std::string("none"), r.scope);

    const json::value* item = paths->if_contains(r.path);
    if (item == nullptr || !item->is_object()) continue;  // reported by the test above
    const json::value* op = item->as_object().if_contains(lower(r.method));
    if (op == nullptr || !op->is_object()) continue;
    const json::object& o = op->as_object();
    EXPECT_EQ(str(o.if_contains("x-admit-scope")), r.scope);
    EXPECT_EQ(str(o.if_contains("summary")), r.summary);
    // The security requirement says the same: none, or the bearer scheme with that scope.
    const json::value* security = o.if_contains("security");
    ASSERT_NE(security, nullptr) << "no security requirement";
    if (r.scope == "none") {
      EXPECT_EQ(*security, json::value(json::array{}));
    } else {
      EXPECT_EQ(*security,
                json::value(json::array{json::object{{"bearer", json::array{r.scope}}}}));
    }
    // Every {name} of the template is a declared path parameter, and no other.
    std::set<std::string> declared;
    if (const json::value* ps = o.if_contains("parameters")) {
      for (const json::value& p : ps->as_array()) {
        const json::object* param = resolve(doc, p);
        ASSERT_NE(param, nullptr) << json::serialize(p);
        if (str(param->if_contains("in")) == "path")
          declared.insert(str(param->if_contains("name")));
      }
    }
    const std::vector<std::string> in_path = path_parameters(r.path);
    EXPECT_EQ(declared, std::set<std::string>(in_path.begin(), in_path.end()));
    // Every response is described, and the 200 one exists.
    const json::value* responses = o.if_contains("responses");
    ASSERT_NE(responses, nullptr);
    EXPECT_TRUE(responses->as_object().contains("200"));
    for (const auto& [status, response] : responses->as_object()) {
      EXPECT_NE(resolve(doc, response), nullptr) << status;
    }
  }
  // The bearer scheme the operations name exists.
  const json::object* schemes =
      resolve(doc, json::object{{"$ref", "#/components/securitySchemes"}});
  ASSERT_NE(schemes, nullptr);
  EXPECT_TRUE(schemes->contains("bearer"));
}

TEST(OpenApi, ApiReferenceHasOneSectionPerRouteInTableOrder) {
  // Headings "### `METHOD /path`", nothing else on the line.
  std::istringstream doc(source_file("docs/api.md"));
  std::vector<MethodPath> headings;
  for (std::string line; std::getline(doc, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.starts_with("### `") || !line.ends_with("`") || line.size() < 7) continue;
    const std::string inner = line.substr(5, line.size() - 6);
    const std::size_t space = inner.find(' ');
    ASSERT_NE(space, std::string::npos) << line;
    headings.emplace_back(inner.substr(0, space), inner.substr(space + 1));
  }
  const std::set<MethodPath> documented(headings.begin(), headings.end());
  EXPECT_EQ(documented.size(), headings.size()) << "a route has two sections in docs/api.md";
  const std::set<MethodPath> served = route_set();
  EXPECT_EQ(served, documented) << "routes() but not in docs/api.md:"
                                << describe(minus(served, documented))
                                << "\nin docs/api.md but not routes():"
                                << describe(minus(documented, served));
  std::vector<MethodPath> order;
  for (const RouteInfo& r : routes()) order.emplace_back(r.method, r.path);
  EXPECT_EQ(headings, order) << "docs/api.md's sections are not in the order of routes()";
}

class ApiRoutes : public ::testing::Test {
 protected:
  ApiRoutes() {
    apply_config(load_config(std::string(ADMIT_SOURCE_DIR) + "/config/sample.yaml"), limiter);
  }

  // A fresh lease of user-1 on gpt-4o.
  std::string new_lease() {
    const Response r = api.handle("POST", "/v1/acquire",
                                  R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1}})");
    EXPECT_EQ(r.status, 200u) << r.body;
    boost::system::error_code ec;
    const json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object() || !v.as_object().contains("lease")) {
      ADD_FAILURE() << "no lease in " << r.body;
      return "0000000000000001.757365722d31";
    }
    return std::string(v.at("lease").at("id").as_string());
  }

  MemoryStore store;
  ManualClock clock;
  Limiter limiter{store, clock};
  Metrics metrics{limiter, {"gpt-4o", "claude-sonnet-4"}};
  Api api{limiter, &metrics, options()};

  // With a reload hook, so that POST /v1/admin/reload is served.
  static ApiOptions options() {
    ApiOptions o;
    o.reload = [](std::string_view) { return std::pair(true, std::string("reloaded")); };
    return o;
  }
};

TEST_F(ApiRoutes, OpenApiJsonIsTheDocument) {
  const Response r = api.handle("GET", "/openapi.json", "");
  EXPECT_EQ(r.status, 200u);
  EXPECT_TRUE(r.content_type.empty() || r.content_type == "application/json") << r.content_type;
  boost::system::error_code ec;
  const json::value served = json::parse(r.body, ec);
  ASSERT_FALSE(ec) << "GET /openapi.json is not JSON: " << ec.message();
  // The compiled-in copy is the file's (a stale build would differ).
  EXPECT_EQ(served, json::value(openapi_document()));
}

TEST_F(ApiRoutes, EveryRouteIsReachable) {
  // A body that the route accepts, and the query it needs; routes without one get {} (POST,
  // PUT) or nothing, and must still answer something but 404 / 405.
  struct Sample {
    std::string query;
    std::string body;
  };
  const std::map<MethodPath, Sample> samples = {
      {{"POST", "/v1/decide"},
       {"", R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":10}})"}},
      {{"POST", "/v1/acquire"},
       {"", R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1},"ttl_ms":1000})"}},
      {{"POST", "/v1/record"},
       {"", R"({"entity":"user-1","resource":"gpt-4o","amounts":{"tpm":5}})"}},
      {{"POST", "/v1/observe"}, {"", R"({"entity":"user-1","resource":"gpt-4o","status":200})"}},
      {{"POST", "/v1/leases/{lease_id}/adjust"}, {"", R"({"amounts":{"rpm":1}})"}},
      {{"POST", "/v1/leases/{lease_id}/extend"}, {"", R"({"ttl_ms":60000})"}},
      {{"POST", "/v1/leases/{lease_id}/commit"}, {"", "{}"}},
      {{"POST", "/v1/leases/{lease_id}/rollback"}, {"", ""}},
      {{"GET", "/v1/limits/resolve"}, {"entity=user-1&resource=gpt-4o", ""}},
      {{"GET", "/v1/stats"}, {"entity=user-1&resource=gpt-4o", ""}},
      {{"PUT", "/v1/limits/system"},
       {"",
        R"({"limits":[{"name":"rpm","kind":"rate","capacity":60,"refill_amount":60,"refill_period_us":60000000}]})"}},
      {{"PUT", "/v1/limits/resources/{resource}"},
       {"", R"({"limits":[{"name":"slots","kind":"concurrency","capacity":2}]})"}},
      {{"PUT", "/v1/limits/entities/{entity}"},
       {"", R"({"limits":[{"name":"slots","kind":"concurrency","capacity":2}]})"}},
      {{"PUT", "/v1/limits/entities/{entity}/resources/{resource}"},
       {"", R"({"limits":[{"name":"slots","kind":"concurrency","capacity":2}]})"}},
      {{"PUT", "/v1/limits/parents/{entity}"}, {"", R"({"parent":"team-a"})"}},
  };
  for (const RouteInfo& r : routes()) {
    const MethodPath key{std::string(r.method), std::string(r.path)};
    std::map<std::string, std::string> params = kSampleParams;
    if (std::string(r.path).find("{lease_id}") != std::string::npos) {
      params["lease_id"] = new_lease();  // each lease route gets a live lease of its own
    }
    const auto sample = samples.find(key);
    std::string target = expand(r.path, params);
    std::string body = (r.method == "POST" || r.method == "PUT") ? "{}" : "";
    if (sample != samples.end()) {
      if (!sample->second.query.empty()) target += "?" + sample->second.query;
      body = sample->second.body;
    }
    const Response res = api.handle(r.method, target, body);
    SCOPED_TRACE(std::string(r.method) + " " + target + " " + body + " -> " +
                 std::to_string(res.status) + " " + res.body.substr(0, 300));
    EXPECT_NE(res.status, 404u);
    EXPECT_NE(res.status, 405u);
    // Routes with a known good request, and the bodiless GETs and DELETEs, succeed.
    if (sample != samples.end() || r.method == "GET" || r.method == "DELETE") {
      EXPECT_EQ(res.status, 200u);
    }
  }
}

}  // namespace
}  // namespace admit::service
