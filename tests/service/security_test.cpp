// Tests of admitd's access checks without a socket: bearer tokens and their scopes and
// namespaces (src/service/auth.cpp), the scope of each route, the loopback test of the bind
// rule, token files, and the Host / Origin / Content-Type rules of the RequestGuard
// (src/service/request_guard.cpp). tests/service/security_test.sh checks them over HTTP.
#include <gtest/gtest.h>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "admit/core/error.hpp"
#include "service/auth.hpp"
#include "service/request_guard.hpp"
#include "support/temp_dir.hpp"

namespace admit::service {
namespace {

const std::string kDecide = "decide-token-0123456789";
const std::string kAdmin = "admin-token-0123456789ab";
const std::string kTeamA = "team-a-token-0123456789";

Auth make_auth() {
  return Auth({TokenConfig{kDecide, Scope::decide, {}, "app", "t.yaml:3:7"},
               TokenConfig{kAdmin, Scope::admin, {}, "", "t.yaml:4:7"},
               TokenConfig{kTeamA, Scope::decide, {"team-a"}, "a", "t.yaml:5:7"}});
}

TEST(AuthTest, AuthenticatesBearerTokens) {
  const Auth auth = make_auth();
  ASSERT_TRUE(auth.enabled());
  EXPECT_EQ(auth.size(), 3u);
  const Principal* app = auth.authenticate("Bearer " + kDecide);
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->name, "app");
  EXPECT_EQ(app->scope, Scope::decide);
  const Principal* admin = auth.authenticate("bearer   " + kAdmin + " ");
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(admin->name, "token-2");  // no name given: its position
  EXPECT_EQ(admin->scope, Scope::admin);

  for (const std::string& bad :
       {std::string(), std::string("Bearer"), std::string("Bearer "), "Basic " + kDecide,
        "Bearer" + kDecide, kDecide, "Bearer " + kDecide + "x", "Bearer " + kDecide.substr(1),
        "Bearer " + kDecide + " x", std::string("Bearer decide-token-012345678\x01")}) {
    EXPECT_EQ(auth.authenticate(bad), nullptr) << bad;
  }
}

TEST(AuthTest, ScopesAndNamespaces) {
  const Auth auth = make_auth();
  EXPECT_EQ(auth.check("Bearer " + kDecide, Scope::decide, "default").status, 0u);
  EXPECT_EQ(auth.check("Bearer " + kDecide, Scope::decide, "default").who->name, "app");
  const Auth::Verdict scope = auth.check("Bearer " + kDecide, Scope::admin, "default");
  EXPECT_EQ(scope.status, 403u);
  EXPECT_EQ(scope.message, "token 'app' has scope decide; this route needs admin");
  EXPECT_EQ(auth.check("Bearer " + kAdmin, Scope::admin, "any").status, 0u);
  EXPECT_EQ(auth.check("Bearer " + kAdmin, Scope::decide, "any").status, 0u);

  EXPECT_EQ(auth.check("Bearer " + kTeamA, Scope::decide, "team-a").status, 0u);
  const Auth::Verdict ns = auth.check("Bearer " + kTeamA, Scope::decide, "team-b");
  EXPECT_EQ(ns.status, 403u);
  EXPECT_EQ(ns.message, "token 'a' is not allowed in namespace 'team-b'");
  EXPECT_EQ(auth.check("Bearer " + kTeamA, Scope::admin, "team-a").status, 403u);

  EXPECT_EQ(auth.check("", Scope::decide, "default").status, 401u);
  EXPECT_EQ(auth.check("Bearer nope-nope-nope-nope", Scope::decide, "default").status, 401u);

  // Without tokens everything is allowed.
  const Auth none;
  EXPECT_FALSE(none.enabled());
  EXPECT_EQ(none.check("", Scope::admin, "x").status, 0u);
  EXPECT_EQ(none.check(nullptr, Scope::admin, "x").status, 0u);
}

TEST(AuthTest, RefusesWeakOrRepeatedTokens) {
  EXPECT_THROW(Auth({TokenConfig{"short", Scope::decide, {}, "", "f:1"}}), std::invalid_argument);
  EXPECT_THROW(Auth({TokenConfig{"has a space in it, long", Scope::decide, {}, "", "f:1"}}),
               std::invalid_argument);
  try {
    Auth({TokenConfig{kDecide, Scope::decide, {}, "", "f:1"},
          TokenConfig{kDecide, Scope::admin, {}, "", "f:2"}});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "token at f:2 is configured twice");
  }
}

TEST(AuthTest, RouteScopes) {
  EXPECT_FALSE(required_scope("GET", "/healthz"));
  EXPECT_FALSE(required_scope("GET", "/readyz"));
  EXPECT_FALSE(required_scope("GET", "/openapi.json"));
  EXPECT_FALSE(required_scope("OPTIONS", "/v1/acquire"));
  EXPECT_EQ(required_scope("POST", "/healthz"), Scope::decide);
  for (const char* p : {"/v1/decide", "/v1/acquire", "/v1/leases/123/commit", "/v1/record",
                        "/v1/observe", "/v1/stats", "/metrics", "/nope"}) {
    EXPECT_EQ(required_scope("POST", p), Scope::decide) << p;
  }
  EXPECT_EQ(required_scope("GET", "/v1/limits"), Scope::decide);
  EXPECT_EQ(required_scope("GET", "/v1/limits/gpt-4o"), Scope::decide);
  EXPECT_EQ(required_scope("PUT", "/v1/limits/gpt-4o"), Scope::admin);
  EXPECT_EQ(required_scope("DELETE", "/v1/limits"), Scope::admin);
  EXPECT_EQ(required_scope("POST", "/v1/admin/reload"), Scope::admin);
  EXPECT_EQ(required_scope("GET", "/v1/audit"), Scope::admin);
  EXPECT_EQ(required_scope("GET", "/v1/limitsx"), Scope::decide);  // not under /v1/limits
}

TEST(AuthTest, TokenFile) {
  test::TempDir dir("tokens");
  const std::string path = dir.file("tokens");
  std::ofstream(path) << "# comment\n\n"
                      << kDecide << "\n"
                      << "  " << kAdmin << "  admin\r\n"
                      << kTeamA << " decide team-a,team-b\n";
  const std::vector<TokenConfig> t = load_token_file(path);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].token, kDecide);
  EXPECT_EQ(t[0].scope, Scope::decide);
  EXPECT_TRUE(t[0].namespaces.empty());
  EXPECT_EQ(t[0].where, path + ":3");
  EXPECT_EQ(t[1].token, kAdmin);
  EXPECT_EQ(t[1].scope, Scope::admin);
  EXPECT_EQ(t[2].namespaces, (std::vector<std::string>{"team-a", "team-b"}));
  const Auth auth(t);
  EXPECT_EQ(auth.check("Bearer " + kTeamA, Scope::decide, "team-b").status, 0u);

  auto refused = [&](const std::string& text, const std::string& why) {
    std::ofstream(path) << text;
    try {
      (void)load_token_file(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), "token-file");
      EXPECT_EQ(e.value(), path + ":2") << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find(kDecide), std::string::npos) << "token quoted";
    }
  };
  refused("# x\n" + kDecide + " root\n", "expected decide or admin");
  refused("# x\n" + kDecide + " admin a,,b\n", "namespace");
  refused("# x\n" + kDecide + " admin a b\n", "4 words");
  EXPECT_THROW((void)load_token_file(dir.file("missing")), ValidationError);
}

TEST(BindRuleTest, LoopbackAddresses) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "[::1]",
                        "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "0:0:0:0:0:0:0:1"}) {
    EXPECT_TRUE(is_loopback(h)) << h;
    EXPECT_FALSE(bind_refusal(h, false, false)) << h;
  }
  for (const char* h :
       {"0.0.0.0", "::", "[::]", "10.0.0.1", "128.0.0.1", "::ffff:10.0.0.1", "::ffff:0.0.0.0",
        "127.0.0.1.example.com", "127.evil", "localhost.", "[::1", "", "fe80::1"}) {
    EXPECT_FALSE(is_loopback(h)) << h;
  }
  const auto refusal = bind_refusal("0.0.0.0", false, false);
  ASSERT_TRUE(refusal);
  EXPECT_NE(refusal->find("--insecure"), std::string::npos);
  EXPECT_FALSE(bind_refusal("0.0.0.0", true, false));  // tokens
  EXPECT_FALSE(bind_refusal("0.0.0.0", false, true));  // --insecure
}

TEST(RequestGuardTest, Hosts) {
  const RequestGuard guard(GuardOptions{{}, {"admit.internal", "api.example:8443"}});
  for (const char* h : {"127.0.0.1:8787", "127.0.0.1", "localhost:8787", "LOCALHOST", "[::1]:80",
                        "[::1]", "10.1.2.3:8787", "0.0.0.0:1", "255.255.255.255:65535", "1.2.3.4",
                        "admit.internal", "Admit.Internal:9999", "api.example:8443", ""}) {
    EXPECT_TRUE(guard.host_allowed(h)) << h;
  }
  for (const char* h : {"evil.example",
                        "evil.example:8787",
                        "127.0.0.1.nip.io:8787",
                        "api.example",
                        "api.example:8444",
                        "localhost.evil:1",
                        "[::1",
                        "[x]:1",
                        "::1",
                        "127.0.0.1:80:80",
                        "127.0.0.1:port",
                        "localhost:",
                        "127.0.0.1:",
                        "127.0.0.1:123456",
                        "256.0.0.1:80",
                        "1.2.3:80",
                        "1.2.3.4.5:80",
                        "1..2.3:80",
                        "1.2.3.4x:80",
                        ".1.2.3:80",
                        "1.2.3.:80"}) {
    EXPECT_FALSE(guard.host_allowed(h)) << h;
  }
  EXPECT_TRUE(RequestGuard(GuardOptions{{}, {"*"}}).host_allowed("anything.example:1"));
}

TEST(RequestGuardTest, OriginsAndContentTypes) {
  const RequestGuard none;
  EXPECT_FALSE(none.origin_allowed("http://evil.example"));
  EXPECT_FALSE(none.origin_allowed("null"));
  const RequestGuard guard(GuardOptions{{"https://App.Example"}, {}});
  EXPECT_TRUE(guard.origin_allowed("https://app.example"));
  EXPECT_FALSE(guard.origin_allowed("http://app.example"));
  EXPECT_FALSE(guard.origin_allowed("https://app.example.evil"));

  for (const char* t : {"application/json", "Application/JSON", "application/json; charset=utf-8",
                        " application/json ;charset=UTF-8"}) {
    EXPECT_TRUE(RequestGuard::is_json(t)) << t;
  }
  for (const char* t :
       {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
        "application/jsonp", "application/json-seq", "text/plain; application/json"}) {
    EXPECT_FALSE(RequestGuard::is_json(t)) << t;
  }
  EXPECT_TRUE(RequestGuard::needs_json("POST", ""));
  EXPECT_TRUE(RequestGuard::needs_json("PUT", "{}"));
  EXPECT_TRUE(RequestGuard::needs_json("PATCH", ""));
  EXPECT_TRUE(RequestGuard::needs_json("DELETE", "{}"));
  EXPECT_FALSE(RequestGuard::needs_json("DELETE", ""));
  EXPECT_FALSE(RequestGuard::needs_json("GET", ""));
}

}  // namespace
}  // namespace admit::service
