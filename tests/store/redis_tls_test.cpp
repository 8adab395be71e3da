// admit::redis::Client and RedisStore over TLS (rediss://) against the TLS-only redis-server
// that scripts/lib/redis.sh's redis_start_tls starts (client certificates required), named by
// ADMIT_TEST_REDIS_TLS_URL (and the ADMIT_TEST_REDIS_TLS_CA/_CERT/_KEY/_OTHER_CA files), and
// its TLS cluster (redis_start_tls_cluster, ADMIT_TEST_REDIS_TLS_CLUSTER_URL). A missing
// variable skips the test, or fails it when ADMIT_REQUIRE_REDIS=1. Tests that need no server
// (bad files, a server that never answers the handshake) always run.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/store/redis_client.hpp"
#include "admit/store/redis_store.hpp"
#include "support/redis_env.hpp"
#include "support/test_support.hpp"

namespace admit::redis {
namespace {

using namespace std::chrono_literals;
using test::cat;
using test::spin_until;

struct Result {
  std::error_code ec;
  Reply reply;
};

std::future<Result> send(Client& c, const std::vector<std::string>& args) {
  auto p = std::make_shared<std::promise<Result>>();
  auto f = p->get_future();
  c.async_command(args, [p](std::error_code ec, Reply r) { p->set_value({ec, std::move(r)}); });
  return f;
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

/// Unique per test and process: parallel ctest processes share the server.
std::string prefix() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return cat("admit-test:", info->test_suite_name(), ".", info->name(), ":", ::getpid(), ":");
}

/// A loopback socket that listens and never accepts: the kernel completes TCP connections to
/// it, nobody ever speaks TLS on them.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

ClientOptions tls_to(std::uint16_t port) {
  ClientOptions o;
  o.seeds = {{"127.0.0.1", port}};
  o.tls.enabled = true;
  o.tls.verify = false;
  return o;
}

// ---- no server needed ----

// Verifies that TLS files are read by the constructor: a missing CA file or client
// certificate, or a certificate without its key, is a ValidationError naming the field.
TEST(RedisTlsOptions, BadFilesFailTheConstructor) {
  auto field_of = [](ClientOptions o) -> std::string {
    try {
      Client c(std::move(o));
    } catch (const ValidationError& e) {
      EXPECT_FALSE(e.reason().empty());
      return e.field();
    }
    return "";
  };
  ClientOptions o = tls_to(6379);
  o.tls.verify = true;
  EXPECT_EQ(field_of(o), "");  // the system's CA store; nothing connects yet
  o.tls.ca_file = "/nonexistent/ca.crt";
  EXPECT_EQ(field_of(o), "tls.ca_file");
  o = tls_to(6379);
  o.tls.cert_file = "/nonexistent/client.crt";
  o.tls.key_file = "/nonexistent/client.key";
  EXPECT_EQ(field_of(o), "tls.cert_file");
  o.tls.key_file.clear();
  EXPECT_EQ(field_of(o), "tls.key_file");  // a certificate needs its key
  o = tls_to(6379);
  o.tls.enabled = false;  // TLS settings without TLS: a mistake, not ignored
  EXPECT_EQ(field_of(o), "tls.enabled");

  const auto cert = test::env("ADMIT_TEST_REDIS_TLS_CERT");
  const auto ca = test::env("ADMIT_TEST_REDIS_TLS_CA");
  if (cert && ca) {
    o = tls_to(6379);
    o.tls.cert_file = *cert;
    o.tls.key_file = *cert;  // a certificate, not a key
    EXPECT_EQ(field_of(o), "tls.key_file");
    o = tls_to(6379);
    o.tls.ca_file = *ca;
    o.tls.cert_file = *cert;
    o.tls.key_file = *test::env("ADMIT_TEST_REDIS_TLS_KEY");
    EXPECT_EQ(field_of(o), "");
    // A key under a passphrase: refused, never a prompt on the terminal.
    o.tls.key_file = o.tls.key_file.substr(0, o.tls.key_file.rfind('/')) + "/client-encrypted.key";
    EXPECT_EQ(field_of(o), "tls.key_file");
  }
}

// Verifies that a server that accepts the TCP connection but never answers the TLS handshake
// fails the request after connect_timeout (no hang), then fails fast during the backoff.
TEST(RedisTlsNoServer, SilentServerTimesOutTheHandshake) {
  SilentListener server;
  ClientOptions o = tls_to(server.port());
  o.connect_timeout = 200ms;
  o.command_timeout = 30s;  // the connect timeout, not this, must end the request
  o.reconnect_backoff = 60s;
  o.reconnect_backoff_max = 60s;
  Client c(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = send(c, {"PING"});
  ASSERT_EQ(r.wait_for(20s), std::future_status::ready) << "the handshake hangs";
  const Result res = r.get();
  EXPECT_EQ(res.ec, Errc::connection_failed);
  EXPECT_TRUE(contains(res.reply.str, "TLS handshake with 127.0.0.1:")) << res.reply.str;
  EXPECT_TRUE(contains(res.reply.str, "timed out after 200 ms")) << res.reply.str;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  const Result again = send(c, {"PING"}).get();
  EXPECT_EQ(again.ec, Errc::connection_failed);
  EXPECT_TRUE(contains(again.reply.str, "next attempt in")) << again.reply.str;
  EXPECT_EQ(c.stats().connect_failures, 1u);
}

// Verifies that destroying the client in the middle of a TLS handshake fails the request with
// Errc::shutdown and returns (the handshake's handlers keep its stream until they ran).
TEST(RedisTlsNoServer, ShutdownDuringTheHandshake) {
  SilentListener server;
  std::future<Result> pending;
  {
    ClientOptions o = tls_to(server.port());
    o.connect_timeout = 60s;
    o.command_timeout = 60s;
    Client c(o);
    pending = send(c, {"PING"});
    for (int i = 0; i < 10; ++i) (void)send(c, {"PING"});
  }
  ASSERT_EQ(pending.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(pending.get().ec, Errc::shutdown);
}

// Verifies that rediss:// to a plain server (the standalone test server: it waits for the end
// of a line the TLS ClientHello never sends) fails after connect_timeout, saying so.
TEST(RedisTlsNoServer, PlainServerTimesOutTheHandshake) {
  const auto plain = test::env("ADMIT_TEST_REDIS_URL");
  if (!plain) GTEST_SKIP() << "ADMIT_TEST_REDIS_URL is not set";
  ClientOptions o = tls_to(parse_url(*plain).seeds.at(0).port);
  o.connect_timeout = 300ms;
  o.command_timeout = 30s;
  Client c(o);
  auto f = send(c, {"PING"});
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready) << "the handshake hangs";
  const Result r = f.get();
  EXPECT_EQ(r.ec, Errc::connection_failed);
  EXPECT_TRUE(contains(r.reply.str, "TLS handshake with 127.0.0.1:")) << r.reply.str;
  EXPECT_TRUE(contains(r.reply.str, "timed out after 300 ms (is that port a TLS port?)"))
      << r.reply.str;
}

// ---- the TLS server ----

class RedisTls : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto url = test::env("ADMIT_TEST_REDIS_TLS_URL");
    if (!url) {
      if (test::redis_required()) {
        FAIL() << "ADMIT_TEST_REDIS_TLS_URL is not set and ADMIT_REQUIRE_REDIS=1";
      }
      GTEST_SKIP() << "ADMIT_TEST_REDIS_TLS_URL is not set: start a server with "
                      "scripts/lib/redis.sh's redis_start_tls";
    }
    url_ = *url;
    ca_ = *test::env("ADMIT_TEST_REDIS_TLS_CA");
    cert_ = *test::env("ADMIT_TEST_REDIS_TLS_CERT");
    key_ = *test::env("ADMIT_TEST_REDIS_TLS_KEY");
    other_ca_ = *test::env("ADMIT_TEST_REDIS_TLS_OTHER_CA");
  }
  /// The server's URL, its options; command_timeout generous (sanitizers on busy cores).
  ClientOptions options() const {
    ClientOptions o = parse_url(url_);
    o.command_timeout = 20s;
    o.connect_timeout = 20s;
    return o;
  }
  std::uint16_t port() const { return options().seeds.at(0).port; }
  /// Expects the request to fail at connection time with `what` in the message, quickly
  /// (no timeout involved) and again at once during the backoff.
  void expect_refused(const ClientOptions& o, std::string_view what) {
    Client c(o);
    const auto t0 = std::chrono::steady_clock::now();
    auto f = send(c, {"PING"});
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready) << "no answer: hangs";
    const Result r = f.get();
    EXPECT_EQ(r.ec, Errc::connection_failed) << r.reply.str;
    EXPECT_TRUE(contains(r.reply.str, what)) << r.reply.str;
    EXPECT_FALSE(contains(r.reply.str, "timed out")) << r.reply.str;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    EXPECT_THROW(c.command({"PING"}), StoreUnavailable);  // during the backoff
    EXPECT_EQ(c.stats().connect_failures, 1u);
    EXPECT_EQ(c.stats().connects, 0u);
    EXPECT_FALSE(c.connected());
  }

  std::string url_, ca_, cert_, key_, other_ca_;
};

// Verifies the URL the script exports: TLS on, the three files.
TEST_F(RedisTls, UrlCarriesTheFiles) {
  const ClientOptions o = options();
  EXPECT_TRUE(o.tls.enabled);
  EXPECT_TRUE(o.tls.verify);
  EXPECT_EQ(o.tls.ca_file, ca_);
  EXPECT_EQ(o.tls.cert_file, cert_);
  EXPECT_EQ(o.tls.key_file, key_);
}

// Verifies commands over TLS: replies of every size (a 5 MiB value spans many TLS records),
// a pipeline of 2000 requests, EVALSHA; one connection.
TEST_F(RedisTls, CommandsOverTls) {
  Client c(options());
  const std::string k = prefix();
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  EXPECT_EQ(c.command({"SET", k + "s", "v"}).str, "OK");
  EXPECT_EQ(c.command({"GET", k + "s"}).str, "v");
  const std::string big(std::size_t{5} << 20, 'x');
  EXPECT_EQ(c.command({"SET", k + "big", big}).str, "OK");
  EXPECT_EQ(c.command({"GET", k + "big"}).str, big);

  std::vector<std::future<Result>> incrs;
  for (int i = 0; i < 2000; ++i) incrs.push_back(send(c, {"INCR", k + "n"}));
  for (int i = 0; i < 2000; ++i) {
    const Result r = incrs[static_cast<std::size_t>(i)].get();
    ASSERT_FALSE(r.ec) << r.reply.str;
    ASSERT_EQ(r.reply.integer, i + 1);  // in order
  }
  const Script script("return redis.call('INCRBY', KEYS[1], ARGV[1]) -- " + k);
  EXPECT_EQ(c.evalsha(script, {k + "n"}, {"10"}).integer, 2010);

  const auto s = c.stats();
  EXPECT_EQ(s.connects, 1u);
  EXPECT_EQ(s.connect_failures, 0u);
  EXPECT_TRUE(c.connected());
  c.command({"DEL", k + "s", k + "big", k + "n"});
}

// Verifies that a host name works too: resolved, sent as SNI, and matched against the
// certificate's DNS name (localhost).
TEST_F(RedisTls, ConnectsByHostName) {
  ClientOptions o = options();
  o.seeds = {{"localhost", port()}};
  Client c(o);
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
}

// Verifies that a server whose certificate the configured CA did not sign is refused at the
// handshake, with the reason: with another CA file, and with the system's CA store.
TEST_F(RedisTls, RefusesACertificateOfAnotherCa) {
  ClientOptions o = options();
  o.tls.ca_file = other_ca_;
  // The server sends its CA with its certificate: a root the client does not trust.
  expect_refused(o, "certificate verify failed: self-signed certificate in certificate chain");
  o.tls.ca_file.clear();  // the system's store does not know the test CA either
  expect_refused(o, "certificate verify failed");
}

// Verifies that a certificate for another name is refused (server_name: the name checked).
TEST_F(RedisTls, RefusesAWrongHostName) {
  ClientOptions o = options();
  o.tls.server_name = "redis.example.com";
  expect_refused(o, "is not valid for redis.example.com");
  o.tls.server_name = "127.0.0.2";  // an address the certificate does not name
  expect_refused(o, "is not valid for 127.0.0.2");
}

// Verifies the server's refusal of a client without a certificate (tls-auth-clients yes): a
// connection error (the PING after the handshake gets the server's alert), not a hang.
TEST_F(RedisTls, ServerRefusesAClientWithoutCertificate) {
  ClientOptions o = options();
  o.tls.cert_file.clear();
  o.tls.key_file.clear();
  expect_refused(o, "127.0.0.1:");
}

// Verifies verify=none: no CA, a name the certificate does not carry; still TLS.
TEST_F(RedisTls, VerifyNoneAcceptsAnyCertificate) {
  ClientOptions o = parse_url(cat("rediss://127.0.0.1:", port(), "?verify=none&cert=", cert_,
                                  "&key=", key_, "&server_name=wrong.example"));
  EXPECT_FALSE(o.tls.verify);
  Client c(o);
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
}

// Verifies reconnection over TLS: a connection the server kills, and one the client drops
// after a request timed out, are replaced by new sessions.
TEST_F(RedisTls, ReconnectsAfterTheConnectionBroke) {
  ClientOptions o = options();
  o.command_timeout = 1s;
  Client c(o);
  const std::string k = prefix();
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  // A request that times out after it was written closes the connection (BLPOP blocks only
  // this connection).
  const Result blocked = send(c, {"BLPOP", k + "never", "5"}).get();
  EXPECT_EQ(blocked.ec, Errc::timeout);
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  // The server kills this connection: the next request reconnects.
  const Reply id = c.command({"CLIENT", "ID"});
  ASSERT_TRUE(id.is_integer());
  {
    Client admin(options());
    EXPECT_EQ(admin.command({"CLIENT", "KILL", "ID", std::to_string(id.integer)}).integer, 1);
  }
  ASSERT_TRUE(spin_until([&] { return !send(c, {"PING"}).get().ec; }, "reconnected"));
  EXPECT_GE(c.stats().reconnects, 2u);
  EXPECT_EQ(c.stats().connect_failures, 0u);
}

// Verifies RedisStore (the admit store) over TLS, through a Limiter: acquires counted on the
// server, denials once the limit is reached.
TEST_F(RedisTls, RedisStoreThroughALimiter) {
  RedisStoreOptions so;
  so.client = options();
  so.prefix = cat("admit-tls-test-", ::getpid());
  RedisStore store(so);
  SystemClock clock;
  {
    Limiter lim(store, clock, LimiterOptions{.ns = "t"});
    lim.set_limits("gpt-4o", {Limit::per_minute("rpm", 3)});
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(test::take(lim, "u", "gpt-4o", {{"rpm", 1}}).allowed) << i;
    }
    const Decision d = test::take(lim, "u", "gpt-4o", {{"rpm", 1}});
    EXPECT_FALSE(d.allowed);
    EXPECT_GT(d.retry_after, 0);
    EXPECT_EQ(test::available(lim, "u", "gpt-4o", "rpm"), 0);
    EXPECT_GE(store.stats().scripts, 1u);
  }
  // Another client over TLS sees the state on the server.
  const std::string key = store.key_of("t", "u", KeyParts{"u", "gpt-4o"});
  EXPECT_EQ(store.client().command({"EXISTS", key}).integer, 1);
  store.reset_namespace(store.open_namespace("t"));
}

// ---- the TLS cluster ----

class RedisTlsCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto url = test::env("ADMIT_TEST_REDIS_TLS_CLUSTER_URL");
    if (!url) {
      if (test::redis_required()) {
        FAIL() << "ADMIT_TEST_REDIS_TLS_CLUSTER_URL is not set and ADMIT_REQUIRE_REDIS=1";
      }
      GTEST_SKIP() << "ADMIT_TEST_REDIS_TLS_CLUSTER_URL is not set: start a cluster with "
                      "scripts/lib/redis.sh's redis_start_tls_cluster";
    }
    options_ = parse_url(*url);
    options_.command_timeout = 20s;
    options_.connect_timeout = 20s;
  }
  ClientOptions options_;
};

// Verifies Redis Cluster over TLS: the slot map loaded from a seed, every master (named by
// CLUSTER SLOTS, not by the URL) reached over TLS, keys routed by slot.
TEST_F(RedisTlsCluster, RoutesKeysToEveryMasterOverTls) {
  ASSERT_TRUE(options_.cluster);
  ASSERT_TRUE(options_.tls.enabled);
  ClientOptions o = options_;
  o.seeds.resize(1);  // the other masters come from the slot map
  Client c(o);
  const std::string k = prefix();
  for (int i = 0; i < 64; ++i) {
    const std::string key = cat(k, i);
    ASSERT_EQ(c.command_for_key(key, {"SET", key, std::to_string(i)}).str, "OK") << key;
  }
  for (int i = 0; i < 64; ++i) {
    const std::string key = cat(k, i);
    EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, std::to_string(i));
    c.command_for_key(key, {"DEL", key});
  }
  const auto s = c.stats();
  EXPECT_GE(s.slot_map_loads, 1u);
  EXPECT_EQ(s.connects, 3u);  // the seed and the two other masters
  EXPECT_EQ(s.moved, 0u);
  EXPECT_EQ(s.connect_failures, 0u);
}

// Verifies RedisStore on the TLS cluster through a Limiter.
TEST_F(RedisTlsCluster, RedisStoreThroughALimiter) {
  RedisStoreOptions so;
  so.client = options_;
  so.prefix = cat("admit-tls-cluster-test-", ::getpid());
  RedisStore store(so);
  SystemClock clock;
  Limiter lim(store, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("m", {Limit::per_minute("rpm", 2)});
  for (int user = 0; user < 8; ++user) {  // groups spread over the masters
    const std::string u = cat("user-", user);
    EXPECT_TRUE(test::take(lim, u, "m", {{"rpm", 1}}).allowed);
    EXPECT_TRUE(test::take(lim, u, "m", {{"rpm", 1}}).allowed);
    EXPECT_FALSE(test::take(lim, u, "m", {{"rpm", 1}}).allowed);
  }
  store.reset_namespace(store.open_namespace("t"));
}

}  // namespace
}  // namespace admit::redis
