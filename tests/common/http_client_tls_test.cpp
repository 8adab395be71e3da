// admit_http's client (src/common/http/client.hpp) over TLS against a real TLS server: nginx
// with a throwaway test CA, which scripts/test starts (scripts/lib/nginx.sh) and names in
// ADMIT_TEST_TLS_URL (a certificate for 127.0.0.1 and localhost), ADMIT_TEST_TLS_LOCALHOST_URL
// (a certificate for localhost only), ADMIT_TEST_TLS_CA and ADMIT_TEST_TLS_OTHER_CA. Without
// them the tests are skipped, or fail when ADMIT_REQUIRE_TLS=1.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/http/client.hpp"

namespace {

using namespace std::chrono_literals;
namespace http = admit::http;

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

/// What one call reported.
struct Outcome {
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error;
  bool done = false;

  std::string header(const std::string& name) const {
    for (const auto& [n, v] : headers) {
      if (n == name) return v;
    }
    return "<absent>";
  }
};

/// Runs one call to its end (at most 30 s: a guard against hangs, not a timing assertion).
Outcome run(http::Client& client, http::ClientRequest req) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    Outcome out;
  };
  auto s = std::make_shared<Shared>();
  http::CallHandlers h;
  h.on_head = [s](http::ClientResponseHead head) {
    std::lock_guard g(s->mu);
    s->out.status = head.status;
    s->out.headers = std::move(head.headers);
  };
  h.on_data = [s](std::string data, std::function<void()> resume) {
    {
      std::lock_guard g(s->mu);
      s->out.body += data;
    }
    resume();
  };
  h.on_done = [s](std::string error) {
    std::lock_guard g(s->mu);
    s->out.error = std::move(error);
    s->out.done = true;
    s->cv.notify_all();
  };
  client.start(std::move(req), h);
  std::unique_lock l(s->mu);
  EXPECT_TRUE(s->cv.wait_for(l, 30s, [&] { return s->out.done; })) << "no on_done";
  return s->out;
}

class HttpClientTls : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto url = env("ADMIT_TEST_TLS_URL");
    const auto localhost_url = env("ADMIT_TEST_TLS_LOCALHOST_URL");
    const auto ca = env("ADMIT_TEST_TLS_CA");
    const auto other_ca = env("ADMIT_TEST_TLS_OTHER_CA");
    if (!url || !localhost_url || !ca || !other_ca) {
      const char* why =
          "ADMIT_TEST_TLS_URL, ADMIT_TEST_TLS_LOCALHOST_URL, ADMIT_TEST_TLS_CA or "
          "ADMIT_TEST_TLS_OTHER_CA is not set (scripts/test starts nginx: scripts/lib/nginx.sh)";
      if (env("ADMIT_REQUIRE_TLS").value_or("") == "1") FAIL() << why;
      GTEST_SKIP() << why;
    }
    origin_ = http::parse_base_url(*url + "/v1");
    localhost_only_ = http::parse_base_url(*localhost_url + "/v1");
    ca_ = *ca;
    other_ca_ = *other_ca;
  }

  http::ClientOptions with_ca(const std::string& ca) const {
    http::ClientOptions o;
    o.ca_file = ca;
    return o;
  }

  http::Origin origin_, localhost_only_;
  std::string ca_, other_ca_;
};

TEST_F(HttpClientTls, RoundTripWithTheTestCa) {
  http::Client client(with_ca(ca_));
  ASSERT_TRUE(origin_.tls);
  const auto r = run(client, {"POST",
                              origin_,
                              http::join_target(origin_, "/chat/completions"),
                              {{"content-type", "application/json"}},
                              R"({"model":"test-model"})"});
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.body, R"({"object":"list","data":[{"id":"test-model"}]})");
}

TEST_F(HttpClientTls, ReusesTheTlsConnection) {
  http::Client client(with_ca(ca_));
  for (int i = 0; i < 3; ++i) {
    const auto r = run(client, {"GET", origin_, http::join_target(origin_, "/models"), {}, ""});
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.status, 200u);
  }
  const auto s = client.stats();
  EXPECT_EQ(s.opened, 1u);
  EXPECT_EQ(s.reused, 2u);
  EXPECT_EQ(s.idle_now, 1u);
}

TEST_F(HttpClientTls, ReadsAChunkedBody) {
  http::Client client(with_ca(ca_));
  const auto r = run(client, {"GET", origin_, "/stream.html", {}, ""});
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r.body, "begin;middle;end\n");
  // And the connection goes on after a chunked body.
  EXPECT_EQ(run(client, {"GET", origin_, "/v1/models", {}, ""}).error, "");
  EXPECT_EQ(client.stats().opened, 1u);
}

TEST_F(HttpClientTls, RefusesACertificateOfAnotherCa) {
  http::Client client(with_ca(other_ca_));
  const auto r = run(client, {"GET", origin_, "/v1/models", {}, ""});
  EXPECT_NE(r.error.find("certificate verification failed"), std::string::npos) << r.error;
  EXPECT_EQ(r.status, 0u);
}

TEST_F(HttpClientTls, TheSystemStoreDoesNotKnowTheTestCa) {
  http::Client client(http::ClientOptions{});
  const auto r = run(client, {"GET", origin_, "/v1/models", {}, ""});
  EXPECT_NE(r.error.find("certificate verification failed"), std::string::npos) << r.error;
}

TEST_F(HttpClientTls, RefusesACertificateForAnotherName) {
  // By 127.0.0.1 to a certificate for localhost only: the chain is good, the name is not.
  http::Client client(with_ca(ca_));
  const auto r = run(client, {"GET", localhost_only_, "/v1/models", {}, ""});
  EXPECT_NE(r.error.find("certificate verification failed"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("is not valid for 127.0.0.1"), std::string::npos) << r.error;
  // By localhost (SNI and name check with a DNS name) the same server is fine.
  http::Origin by_name = localhost_only_;
  by_name.host = "localhost";
  const auto ok = run(client, {"GET", by_name, "/v1/models", {}, ""});
  EXPECT_EQ(ok.error, "");
  EXPECT_EQ(ok.status, 200u);
}

TEST_F(HttpClientTls, VerificationCanBeTurnedOff) {
  http::ClientOptions o = with_ca(other_ca_);
  o.verify_peer = false;
  http::Client client(o);
  EXPECT_EQ(run(client, {"GET", localhost_only_, "/v1/models", {}, ""}).error, "");
}

}  // namespace
