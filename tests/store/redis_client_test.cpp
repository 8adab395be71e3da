// admit::redis::Client against real servers started by scripts/lib/redis.sh (standalone,
// password-protected, 3-master cluster), found through ADMIT_TEST_REDIS_URL,
// ADMIT_TEST_REDIS_AUTH_URL and ADMIT_TEST_REDIS_CLUSTER. A missing variable skips the test,
// or fails it when ADMIT_REQUIRE_REDIS=1. Tests share the servers with tests running in
// parallel: keys are unique per process, nothing kills or pauses other clients.
#include "admit/store/redis_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/error.hpp"
#include "support/redis_env.hpp"
#include "support/test_support.hpp"

namespace admit::redis {
namespace {

using namespace std::chrono_literals;
using test::cat;
using test::spin_until;

// ---- helpers ----

using test::env;
using test::redis_required;

/// Unique per test and process: parallel ctest processes share the servers.
std::string prefix() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return cat("admit-test:", info->test_suite_name(), ".", info->name(), ":", ::getpid(), ":");
}

/// Unique even across --gtest_repeat runs in one process (for script texts).
std::string unique() {
  static std::atomic<int> n{0};
  return cat(prefix(), std::chrono::steady_clock::now().time_since_epoch().count(), ":", ++n);
}

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

Reply ok_reply(Client& c, const std::vector<std::string>& args) {
  Reply r = c.command(args);
  EXPECT_FALSE(r.is_error()) << args.front() << ": " << to_string(r);
  return r;
}

/// A loopback port nothing listens on (bound, then released).
class ServerTest : public ::testing::Test {
 protected:
  /// Reads `var`; skips (or, with ADMIT_REQUIRE_REDIS=1, fails) the test when it is unset.
  void need(const char* var, std::string& out) {
    auto v = env(var);
    if (v) {
      out = *v;
      return;
    }
    if (redis_required()) {
      FAIL() << var << " is not set and ADMIT_REQUIRE_REDIS=1";
    }
    GTEST_SKIP() << var << " is not set: start servers with scripts/lib/redis.sh";
  }
};

// ---- no server needed ----

// Verifies key_slot against CLUSTER KEYSLOT values of Redis 7.0 (and the spec's examples).
TEST(RedisKeySlot, MatchesRedis) {
  EXPECT_EQ(key_slot("foo"), 12182);
  EXPECT_EQ(key_slot("bar"), 5061);
  EXPECT_EQ(key_slot("hello"), 866);
  EXPECT_EQ(key_slot(""), 0);
  EXPECT_EQ(key_slot("{user1000}.following"), 3443);
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
  EXPECT_EQ(key_slot("{user1}.a"), key_slot("{user1}.b"));
  EXPECT_EQ(key_slot("foo{}{bar}"), 8363);     // empty tag: the whole key
  EXPECT_EQ(key_slot("foo{{bar}}zap"), 4015);  // tag "{bar"
  EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
  EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));  // the first tag only
  EXPECT_EQ(key_slot("{}"), 15257);
  EXPECT_EQ(key_slot("a{b"), 13340);  // no closing brace: the whole key
}

// Verifies URL and seed-list parsing, and that bad ones name what is wrong.
TEST(RedisOptions, ParsesUrlsAndSeedLists) {
  auto o = parse_url("redis://127.0.0.1:6380");
  ASSERT_EQ(o.seeds.size(), 1u);
  EXPECT_EQ(o.seeds[0], (Endpoint{"127.0.0.1", 6380}));
  EXPECT_TRUE(o.username.empty());
  EXPECT_TRUE(o.password.empty());
  EXPECT_EQ(o.db, 0);

  o = parse_url("redis://alice:p%40ss@redis.example:7000/3");
  EXPECT_EQ(o.seeds[0], (Endpoint{"redis.example", 7000}));
  EXPECT_EQ(o.username, "alice");
  EXPECT_EQ(o.password, "p@ss");
  EXPECT_EQ(o.db, 3);

  o = parse_url("redis://:secret@localhost");
  EXPECT_EQ(o.seeds[0], (Endpoint{"localhost", 6379}));
  EXPECT_EQ(o.username, "");
  EXPECT_EQ(o.password, "secret");

  o = parse_url("redis://[::1]:6390/");
  EXPECT_EQ(o.seeds[0], (Endpoint{"::1", 6390}));
  EXPECT_EQ(o.seeds[0].to_string(), "[::1]:6390");

  EXPECT_FALSE(o.tls.enabled);
  EXPECT_FALSE(o.cluster);

  for (const char* bad :
       {"http://h:1", "redis://h:0", "redis://h:99999", "redis://h:1/x", "redis://h:1?timeout=3",
        "redis://h:1?ca=/ca.crt", "redis://h:1#x", "redis://", "nonsense"}) {
    EXPECT_THROW(parse_url(bad), ValidationError) << bad;
  }
}

// Verifies rediss:// and the cluster URLs: TLS on, its parameters percent-decoded, and that
// bad parameters name what is wrong.
TEST(RedisOptions, ParsesTlsAndClusterUrls) {
  auto o = parse_url("rediss://u:p@redis.example:6380/2");
  EXPECT_TRUE(o.tls.enabled);
  EXPECT_TRUE(o.tls.verify);
  EXPECT_EQ(o.tls.ca_file, "");  // the system's CA store
  EXPECT_EQ(o.seeds.at(0), (Endpoint{"redis.example", 6380}));
  EXPECT_EQ(o.username, "u");
  EXPECT_EQ(o.password, "p");
  EXPECT_EQ(o.db, 2);
  EXPECT_EQ(display_url(o), "rediss://redis.example:6380/2");

  o = parse_url(
      "rediss://10.0.0.1?ca=/etc/ssl/a%20b/ca.crt&cert=/c/client+1.crt&key=/c/client.key"
      "&verify=none&server_name=redis.internal");
  EXPECT_EQ(o.seeds.at(0), (Endpoint{"10.0.0.1", 6379}));
  EXPECT_EQ(o.tls.ca_file, "/etc/ssl/a b/ca.crt");
  EXPECT_EQ(o.tls.cert_file, "/c/client+1.crt");  // '+' is not a space
  EXPECT_EQ(o.tls.key_file, "/c/client.key");
  EXPECT_FALSE(o.tls.verify);
  EXPECT_EQ(o.tls.server_name, "redis.internal");
  EXPECT_TRUE(parse_url("rediss://h?verify=full").tls.verify);

  o = parse_url("redis+cluster://a:7000, b:7001");
  EXPECT_TRUE(o.cluster);
  EXPECT_FALSE(o.tls.enabled);
  ASSERT_EQ(o.seeds.size(), 2u);
  EXPECT_EQ(o.seeds[1], (Endpoint{"b", 7001}));
  EXPECT_EQ(display_url(o), "redis+cluster://a:7000,b:7001");
  o = parse_url("rediss+cluster://:s%40cret@[::1]:7000,10.0.0.2:7001?ca=/ca.crt");
  EXPECT_TRUE(o.cluster);
  EXPECT_TRUE(o.tls.enabled);
  EXPECT_EQ(o.password, "s@cret");
  EXPECT_EQ(o.seeds.at(0), (Endpoint{"::1", 7000}));
  EXPECT_EQ(o.tls.ca_file, "/ca.crt");
  EXPECT_EQ(display_url(o), "rediss+cluster://[::1]:7000,10.0.0.2:7001");

  auto reason = [](const char* url) -> std::string {
    try {
      (void)parse_url(url);
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), "url");
      return e.reason();
    }
    return "(accepted)";
  };
  EXPECT_NE(reason("rediss://h?cafile=/x").find("unknown parameter 'cafile'"), std::string::npos);
  EXPECT_NE(reason("rediss://h?ca=/x&ca=/y").find("given twice"), std::string::npos);
  EXPECT_NE(reason("rediss://h?verify=maybe").find("full or none"), std::string::npos);
  EXPECT_NE(reason("rediss://h?ca=").find("needs a value"), std::string::npos);
  EXPECT_NE(reason("redis://h?verify=none").find("rediss://"), std::string::npos);
  EXPECT_NE(reason("redis+cluster://a:1?ca=/x").find("rediss+cluster://"), std::string::npos);
  EXPECT_NE(reason("rediss+cluster://a").find("host:port"), std::string::npos);
  EXPECT_NE(reason("redisss://h").find("scheme"), std::string::npos);

  auto seeds = parse_endpoints("127.0.0.1:7000, 127.0.0.1:7001,[::1]:7002");
  ASSERT_EQ(seeds.size(), 3u);
  EXPECT_EQ(seeds[1], (Endpoint{"127.0.0.1", 7001}));
  EXPECT_EQ(seeds[2], (Endpoint{"::1", 7002}));
  for (const char* bad : {"", "h", "h:", "h:x", ":1", "h:1,", "[::1", "[::1]7000"}) {
    EXPECT_THROW(parse_endpoints(bad), ValidationError) << bad;
  }
}

// Verifies that invalid options are refused at construction, naming the field.
TEST(RedisOptions, ClientRejectsInvalidOptions) {
  auto field_of = [](ClientOptions o) -> std::string {
    try {
      Client c(std::move(o));
    } catch (const ValidationError& e) {
      return e.field();
    }
    return "";
  };
  ClientOptions good;
  good.seeds = {{"127.0.0.1", 6379}};
  ClientOptions o = good;
  o.seeds.clear();
  EXPECT_EQ(field_of(o), "seeds");
  o = good;
  o.cluster = true;
  o.db = 2;
  EXPECT_EQ(field_of(o), "db");
  o = good;
  o.command_timeout = 0ms;
  EXPECT_EQ(field_of(o), "command_timeout");
  o = good;
  o.max_in_flight = 0;
  EXPECT_EQ(field_of(o), "max_in_flight");
  o = good;
  o.username = "bob";
  EXPECT_EQ(field_of(o), "username");
  EXPECT_EQ(field_of(good), "");  // valid: constructing connects nothing

  Client c(good);
  EXPECT_THROW(c.async_command({}, [](std::error_code, Reply) {}), ValidationError);
  EXPECT_EQ(c.stats().commands, 0u);
}

// Verifies that a script's SHA1 is not computed here: unknown until a server loaded the script
// (RedisAuth.Sha1IsLearnedFromScriptLoad checks the digests SCRIPT LOAD returns).
TEST(RedisScript, Sha1IsUnknownBeforeTheFirstLoad) {
  const Script s("return 1");
  EXPECT_EQ(s.sha1(), "");
  EXPECT_EQ(Script(s).sha1(), "");
  EXPECT_EQ(s.source(), "return 1");
}

// Verifies that a refused connection fails the request with a clear error, and that during
// the backoff that follows requests fail at once without another attempt.
TEST(RedisNoServer, ConnectionRefusedFailsFastDuringBackoff) {
  ClientOptions o;
  o.seeds = {{"127.0.0.1", test::free_port()}};
  o.reconnect_backoff = 60s;  // the second request certainly falls inside it
  o.reconnect_backoff_max = 60s;
  Client client(o);
  try {
    (void)client.command({"PING"});
    FAIL() << "expected StoreUnavailable";
  } catch (const StoreUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("connecting to 127.0.0.1:"), std::string::npos)
        << e.what();
  }
  auto r = send(client, {"PING"}).get();
  EXPECT_EQ(r.ec, Errc::connection_failed);
  EXPECT_NE(r.reply.str.find("next attempt in"), std::string::npos) << r.reply.str;
  const auto s = client.stats();
  EXPECT_EQ(s.connect_failures, 1u);
  EXPECT_EQ(s.connects, 0u);
  EXPECT_EQ(s.pending, 0u);
  EXPECT_FALSE(client.connected());
}

/// A one-connection TCP server on loopback that answers the first bytes it receives with
/// `response`, then waits for the client to close. For replies no real server sends.
/// Its thread only blocks in poll() with a short timeout and checks a stop flag, so the
/// destructor returns even while a client still holds the connection open (the test then
/// fails on peer_closed() instead of hanging).
class FakeServer {
 public:
  explicit FakeServer(std::string response, std::uint16_t port = 0) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, response = std::move(response)] { serve(response); });
  }
  ~FakeServer() {
    stop_.store(true);
    thread_.join();  // serve() sees stop_ within one poll interval
    ::close(listen_fd_);
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  std::uint16_t port() const { return port_; }
  /// The server accepted a connection and received the first request on it.
  bool got_request() const { return got_request_.load(); }
  /// The accepted connection was closed by the client (recv() returned 0 or an error).
  bool peer_closed() const { return peer_closed_.load(); }

 private:
  /// Waits until `fd` is readable; false once the destructor asked to stop.
  bool readable(int fd) const {
    while (!stop_.load()) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  void serve(const std::string& response) {
    if (!readable(listen_fd_)) return;
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    char buf[4096];
    bool answered = false;
    while (readable(fd)) {
      if (::recv(fd, buf, sizeof buf, 0) <= 0) {
        peer_closed_.store(true);
        break;
      }
      if (!answered) {
        answered = true;
        got_request_.store(true);
        (void)::send(fd, response.data(), response.size(), MSG_NOSIGNAL);
      }
    }
    ::close(fd);
  }

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> got_request_{false};
  std::atomic<bool> peer_closed_{false};
  std::thread thread_;
};

// Verifies that bytes that are not RESP fail the request with Errc::protocol_error and drop
// the connection, without crashing.
TEST(RedisNoServer, GarbageFromServerIsAProtocolError) {
  FakeServer server("!this is not RESP\r\n");
  {
    ClientOptions o;
    o.seeds = {{"127.0.0.1", server.port()}};
    Client c(o);
    auto r = send(c, {"PING"}).get();
    EXPECT_EQ(r.ec, Errc::protocol_error);
    EXPECT_NE(r.reply.str.find("invalid reply from 127.0.0.1:"), std::string::npos) << r.reply.str;
    EXPECT_EQ(c.stats().connection_losses, 1u);
    EXPECT_FALSE(c.connected());
  }  // closes the connection (if not closed already): the server thread ends
}

// Verifies that a reply nobody asked for is a protocol error, not a reply to the next request.
TEST(RedisNoServer, UnsolicitedReplyDropsTheConnection) {
  FakeServer server("+PONG\r\n+EXTRA\r\n");
  ClientOptions o;
  o.seeds = {{"127.0.0.1", server.port()}};
  Client c(o);
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  ASSERT_TRUE(spin_until([&] { return c.stats().connection_losses == 1; }, "connection dropped"));
  EXPECT_FALSE(c.connected());
}

// Verifies automatic recovery: once the server is back, the first request after the
// backoff connects again; destroying the client closes that connection.
TEST(RedisNoServer, RecoversWhenTheServerComesBack) {
  const std::uint16_t port = test::free_port();
  std::optional<FakeServer> server;  // outlives the client: it checks that the client closes
  {
    ClientOptions o;
    o.seeds = {{"127.0.0.1", port}};
    o.reconnect_backoff = 1ms;
    o.reconnect_backoff_max = 1ms;
    Client c(o);
    EXPECT_EQ(send(c, {"PING"}).get().ec, Errc::connection_failed);
    server.emplace("+PONG\r\n", port);
    ASSERT_TRUE(spin_until([&] { return !send(c, {"PING"}).get().ec; }, "reconnected"));
    EXPECT_EQ(c.stats().connects, 1u);
    EXPECT_FALSE(server->peer_closed());  // an idle connection stays open
  }  // joins the I/O thread: returns only once every socket is closed
  EXPECT_TRUE(spin_until([&] { return server->peer_closed(); }, "the client closed its socket"));
}

// Verifies that destroying the client while a request waits for its reply fails that request
// with Errc::shutdown, closes the connection and returns (the I/O thread runs out of work).
TEST(RedisNoServer, ShutdownFailsPendingRequestsAndClosesSockets) {
  FakeServer server("");  // reads the request, never answers
  std::future<Result> pending;
  {
    ClientOptions o;
    o.seeds = {{"127.0.0.1", server.port()}};
    o.command_timeout = 60s;  // only the shutdown can complete the request
    Client c(o);
    pending = send(c, {"PING"});
    ASSERT_TRUE(spin_until([&] { return server.got_request(); }, "request received"));
    // Also leave a timer and a posted flush behind: more requests, a sweep deadline.
    for (int i = 0; i < 10; ++i) (void)send(c, {"PING"});
  }
  ASSERT_EQ(pending.wait_for(0s), std::future_status::ready);
  const auto r = pending.get();
  EXPECT_EQ(r.ec, Errc::shutdown);
  EXPECT_TRUE(spin_until([&] { return server.peer_closed(); }, "the client closed its socket"));
}

// ---- standalone server ----

class RedisStandalone : public ServerTest {
 protected:
  void SetUp() override { need("ADMIT_TEST_REDIS_URL", url_); }
  ClientOptions options() const {
    auto o = parse_url(url_);
    o.command_timeout = 20s;  // generous: sanitizers on 2 busy cores; no test relies on it
    return o;
  }
  std::string url_;
};

// Verifies every reply type, binary-safe arguments, and that error replies are values.
TEST_F(RedisStandalone, CommandsAndReplyTypes) {
  Client c(options());
  const std::string k = prefix();
  EXPECT_EQ(to_string(ok_reply(c, {"PING"})), "PONG");
  Reply r = c.command({"SET", k + "s", "v"});
  EXPECT_TRUE(r.is_status());
  EXPECT_EQ(r.str, "OK");
  r = c.command({"GET", k + "s"});
  EXPECT_TRUE(r.is_string());
  EXPECT_EQ(r.str, "v");
  EXPECT_TRUE(c.command({"GET", k + "missing"}).is_nil());
  r = c.command({"INCRBY", k + "n", "41"});
  ASSERT_TRUE(r.is_integer());
  EXPECT_EQ(r.integer, 41);

  const std::string binary("a\0b\r\n$3\r\n", 10);
  ok_reply(c, {"SET", k + "bin", binary});
  EXPECT_EQ(c.command({"GET", k + "bin"}).str, binary);
  ok_reply(c, {"SET", k + "empty", ""});
  r = c.command({"GET", k + "empty"});
  EXPECT_TRUE(r.is_string());
  EXPECT_EQ(r.str, "");

  const std::string big(std::size_t{5} << 20, 'x');  // several reads and writes
  ok_reply(c, {"SET", k + "big", big});
  EXPECT_EQ(c.command({"GET", k + "big"}).str, big);

  ok_reply(c, {"RPUSH", k + "list", "a", "b", "c"});
  r = c.command({"LRANGE", k + "list", "0", "-1"});
  ASSERT_TRUE(r.is_array());
  ASSERT_EQ(r.elements.size(), 3u);
  EXPECT_EQ(r.elements[2].str, "c");
  EXPECT_TRUE(c.command({"LRANGE", k + "missing", "0", "-1"}).is_array());

  r = c.command({"EVAL", "return {1, 'x', {2, {3}}, false}", "0"});
  EXPECT_EQ(to_string(r), "[(integer) 1, \"x\", [(integer) 2, [(integer) 3]], nil]");

  r = c.command({"NOSUCHCOMMAND", "x"});
  EXPECT_TRUE(r.is_error());
  EXPECT_EQ(r.error_code(), "ERR");
  r = c.command({"INCR", k + "list"});
  EXPECT_TRUE(r.is_error());
  EXPECT_EQ(r.error_code(), "WRONGTYPE");
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");  // the connection is still fine

  EXPECT_TRUE(c.connected());
  const auto s = c.stats();
  EXPECT_EQ(s.connects, 1u);
  EXPECT_EQ(s.reconnects, 0u);
  EXPECT_EQ(s.pending, 0u);
  c.command({"DEL", k + "s", k + "n", k + "bin", k + "empty", k + "list", k + "big"});
}

// Verifies pipelining: 10,000 async INCRs and ECHOs from 4 threads on one connection, each
// answered with its own reply (per-thread counters come back as 1, 2, 3, ... in order) and
// the final values exact.
TEST_F(RedisStandalone, PipelinesTenThousandRequestsFromManyThreads) {
  Client c(options());
  constexpr std::size_t kThreads = 4;
  constexpr int kPerThread = 2500;
  const std::string k = prefix();
  for (std::size_t t = 0; t < kThreads; ++t) c.command({"DEL", cat(k, t)});

  std::atomic<int> done{0};
  std::atomic<int> wrong{0};
  std::vector<std::unique_ptr<std::atomic<std::int64_t>>> last(kThreads);
  for (auto& l : last) l = std::make_unique<std::atomic<std::int64_t>>(0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (i % 2 == 0) {
          c.async_command({"INCR", cat(k, t)}, [&, t](std::error_code ec, Reply r) {
            // Callbacks run on the one I/O thread in reply order: INCRs of one thread
            // must come back as 1, 2, 3, ...
            if (ec || !r.is_integer() || r.integer != last[t]->load() + 1) ++wrong;
            last[t]->store(r.integer);
            ++done;
          });
        } else {
          const std::string payload = cat(t, ":", i);
          c.async_command({"ECHO", payload}, [&, payload](std::error_code ec, Reply r) {
            if (ec || r.str != payload) ++wrong;
            ++done;
          });
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(spin_until([&] { return done.load() == static_cast<int>(kThreads) * kPerThread; },
                         "all replies"));
  EXPECT_EQ(wrong.load(), 0);
  for (std::size_t t = 0; t < kThreads; ++t) {
    EXPECT_EQ(c.command({"GET", cat(k, t)}).str, std::to_string(kPerThread / 2));
  }
  const auto s = c.stats();
  EXPECT_EQ(s.connects, 1u);  // one connection carried everything
  EXPECT_EQ(s.pending, 0u);
  for (std::size_t t = 0; t < kThreads; ++t) c.command({"DEL", cat(k, t)});
}

// Verifies write coalescing: requests queued while the I/O thread is busy go out in one write.
TEST_F(RedisStandalone, CoalescesQueuedRequestsIntoOneWrite) {
  Client c(options());
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  std::promise<void> release;
  std::promise<void> entered;
  // Deliberately holds the I/O thread inside a callback while 100 requests are queued.
  c.async_command({"PING"}, [&](std::error_code, Reply) {
    entered.set_value();
    release.get_future().wait();
  });
  entered.get_future().wait();
  const auto writes_before = c.stats().writes;
  std::vector<std::future<Result>> results;
  for (int i = 0; i < 100; ++i) results.push_back(send(c, {"ECHO", std::to_string(i)}));
  release.set_value();
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(results[static_cast<std::size_t>(i)].get().reply.str, std::to_string(i));
  EXPECT_EQ(c.stats().writes, writes_before + 1);
}

// Verifies EVALSHA with transparent loading: the first use loads the script (its SHA1 is not
// known before), and NOSCRIPT after SCRIPT FLUSH is answered by one SCRIPT LOAD, shared by the
// requests that were in flight.
TEST_F(RedisStandalone, EvalshaLoadsScriptOnNoscript) {
  Client c(options());
  const std::string k = prefix();
  // A fresh script (unique text), so no other process has loaded it.
  const Script incr(cat("-- ", unique(), "\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"));
  c.command({"DEL", k + "n"});
  Reply r = c.evalsha(incr, {k + "n"}, {"5"});
  ASSERT_TRUE(r.is_integer()) << to_string(r);
  EXPECT_EQ(r.integer, 5);
  EXPECT_EQ(c.stats().script_loads, 1u);
  EXPECT_EQ(c.evalsha(incr, {k + "n"}, {"1"}).integer, 6);
  EXPECT_EQ(c.stats().script_loads, 1u);  // loaded: no NOSCRIPT any more

  ok_reply(c, {"SCRIPT", "FLUSH"});
  // 200 EVALSHAs in flight together all get NOSCRIPT; one SCRIPT LOAD serves them all.
  std::vector<std::future<Result>> results;
  for (int i = 0; i < 200; ++i) {
    auto p = std::make_shared<std::promise<Result>>();
    results.push_back(p->get_future());
    c.async_evalsha(incr, {k + "n"}, {"1"}, [p](std::error_code ec, Reply rr) {
      p->set_value({ec, std::move(rr)});
    });
  }
  std::set<std::int64_t> seen;
  for (auto& f : results) {
    auto res = f.get();
    ASSERT_FALSE(res.ec) << res.reply.str;
    ASSERT_TRUE(res.reply.is_integer()) << to_string(res.reply);
    seen.insert(res.reply.integer);
  }
  EXPECT_EQ(seen.size(), 200u);  // each ran exactly once
  EXPECT_EQ(*seen.rbegin(), 206);
  EXPECT_EQ(c.stats().script_loads, 2u);
  c.command({"DEL", k + "n"});
}

// Verifies that a script that does not compile yields the SCRIPT LOAD error as a reply.
TEST_F(RedisStandalone, EvalshaOfBrokenScriptReturnsTheLoadError) {
  Client c(options());
  const Script broken(cat("this is not lua ", unique()));
  Reply r = c.evalsha(broken, {}, {});
  ASSERT_TRUE(r.is_error());
  EXPECT_EQ(r.error_code(), "ERR") << r.str;
  EXPECT_NE(r.str.find("compiling"), std::string::npos) << r.str;
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
}

// Verifies a command timeout: the request fails with Errc::timeout, the connection is
// dropped (its replies would be out of step), and the next command reconnects and works.
// BLPOP blocks only this client's connection, so parallel tests are not disturbed.
TEST_F(RedisStandalone, TimeoutBreaksConnectionThenNextCommandRecovers) {
  auto o = options();
  o.command_timeout = 300ms;
  Client c(o);
  const std::string k = prefix();
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  auto blocked = send(c, {"BLPOP", k + "never", "10"});
  auto behind = send(c, {"GET", k + "x"});  // pipelined behind it
  auto r = blocked.get();
  EXPECT_EQ(r.ec, Errc::timeout) << r.reply.str;
  EXPECT_NE(r.reply.str.find("timed out after 300 ms"), std::string::npos) << r.reply.str;
  auto r2 = behind.get();
  EXPECT_TRUE(r2.ec == Errc::timeout || r2.ec == Errc::connection_lost) << r2.ec.message();
  EXPECT_THROW(c.command({"BLPOP", k + "never", "10"}), StoreUnavailable);

  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  const auto s = c.stats();
  EXPECT_GE(s.timeouts, 2u);
  EXPECT_EQ(s.connection_losses, 2u);
  EXPECT_EQ(s.reconnects, 2u);
  EXPECT_EQ(s.pending, 0u);
}

// Verifies that a connection killed by the server is noticed and replaced by the next
// command (CLIENT KILL ID: only this test's connection, not those of parallel tests).
TEST_F(RedisStandalone, ReconnectsAfterClientKill) {
  Client c(options());
  Client admin(options());
  Reply id = c.command({"CLIENT", "ID"});
  ASSERT_TRUE(id.is_integer());
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(admin.command({"CLIENT", "KILL", "ID", std::to_string(id.integer)}).integer, 1);
  ASSERT_TRUE(spin_until([&] { return !c.connected(); }, "the client notices the kill"));
  Reply id2 = c.command({"CLIENT", "ID"});
  ASSERT_TRUE(id2.is_integer());
  EXPECT_NE(id2.integer, id.integer);
  const auto s = c.stats();
  EXPECT_EQ(s.connection_losses, 1u);
  EXPECT_EQ(s.reconnects, 1u);
  EXPECT_TRUE(c.connected());
}

// Verifies SELECT on connect: a key written through db 5 is not visible in db 0.
TEST_F(RedisStandalone, SelectsTheDatabaseOfTheUrl) {
  auto o5 = options();
  o5.db = 5;
  Client c5(o5);
  Client c0(options());
  const std::string k = prefix();
  ok_reply(c5, {"SET", k, "in5"});
  EXPECT_TRUE(c0.command({"GET", k}).is_nil());
  EXPECT_EQ(c5.command({"GET", k}).str, "in5");
  c5.command({"DEL", k});

  auto bad = options();
  bad.db = 100000;  // beyond `databases`: SELECT fails, so does the connection
  Client cb(bad);
  try {
    (void)cb.command({"PING"});
    FAIL() << "expected StoreUnavailable";
  } catch (const StoreUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("SELECT failed"), std::string::npos) << e.what();
  }
}

// Verifies the destructor: pending requests fail with Errc::shutdown before it returns.
TEST_F(RedisStandalone, DestructorFailsPendingRequests) {
  const std::string k = prefix();
  std::atomic<int> shutdown{0};
  std::atomic<int> other{0};
  {
    Client c(options());
    EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
    auto count = [&](std::error_code ec, Reply) { ++(ec == Errc::shutdown ? shutdown : other); };
    c.async_command({"BLPOP", k, "30"}, count);
    for (int i = 0; i < 10; ++i) c.async_command({"GET", k}, count);
    // The BLPOP blocks the connection: nothing can complete before the destructor.
  }
  EXPECT_EQ(shutdown.load(), 11);
  EXPECT_EQ(other.load(), 0);
}

// Verifies max_pending: beyond it, requests fail at once with Errc::overloaded.
TEST_F(RedisStandalone, RejectsBeyondMaxPending) {
  auto o = options();
  o.max_pending = 1;
  Client c(o);
  Client admin(options());
  const std::string k = prefix();
  auto blocked = send(c, {"BLPOP", k, "60"});  // pending until the RPUSH below
  auto r = send(c, {"PING"}).get();
  EXPECT_EQ(r.ec, Errc::overloaded);
  EXPECT_EQ(c.stats().pending, 1u);
  ok_reply(admin, {"RPUSH", k, "x"});
  auto b = blocked.get();
  EXPECT_FALSE(b.ec);
  EXPECT_EQ(to_string(b.reply), cat("[\"", k, "\", \"x\"]"));
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
}

// Verifies that the synchronous API refuses to run on the I/O thread instead of deadlocking.
TEST_F(RedisStandalone, SyncCallFromCallbackThrows) {
  Client c(options());
  std::promise<std::string> what;
  c.async_command({"PING"}, [&](std::error_code, Reply) {
    try {
      (void)c.command({"PING"});
      what.set_value("no exception");
    } catch (const std::logic_error& e) {
      what.set_value(e.what());
    }
  });
  EXPECT_NE(what.get_future().get().find("callback"), std::string::npos);
}

// Verifies that a Redis Cluster client pointed at a standalone server says so.
TEST_F(RedisStandalone, ClusterModeOnStandaloneServerFails) {
  auto o = options();
  o.cluster = true;
  Client c(o);
  auto r = send(c, {"PING"}).get();
  EXPECT_EQ(r.ec, Errc::cluster_unavailable);
  EXPECT_NE(r.reply.str.find("cluster support disabled"), std::string::npos) << r.reply.str;
}

// ---- password-protected server ----

class RedisAuth : public ServerTest {
 protected:
  void SetUp() override { need("ADMIT_TEST_REDIS_AUTH_URL", url_); }
  std::string url_;
};

// Verifies AUTH with a password, and with the "default" user name.
TEST_F(RedisAuth, AuthenticatesWithPasswordAndUser) {
  {
    Client c(parse_url(url_));
    EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  }
  auto o = parse_url(url_);
  o.username = "default";
  Client c(o);
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");
  EXPECT_EQ(c.command({"ACL", "WHOAMI"}).str, "default");
}

// Verifies that a wrong password is a clear error, not a hang or a crash; without a password
// the server's NOAUTH is an error reply.
TEST_F(RedisAuth, WrongPasswordIsAClearError) {
  auto o = parse_url(url_);
  o.password = "wrong";
  o.reconnect_backoff = 60s;
  o.reconnect_backoff_max = 60s;
  Client c(o);
  auto r = send(c, {"PING"}).get();
  EXPECT_EQ(r.ec, Errc::auth_failed);
  EXPECT_NE(r.reply.str.find("AUTH failed on 127.0.0.1:"), std::string::npos) << r.reply.str;
  EXPECT_NE(r.reply.str.find("WRONGPASS"), std::string::npos) << r.reply.str;
  try {
    (void)c.command({"PING"});
    FAIL() << "expected StoreUnavailable";
  } catch (const StoreUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("WRONGPASS"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.stats().connect_failures, 1u);  // the second request failed fast (backoff)

  auto none = parse_url(url_);
  none.password.clear();
  Client n(none);
  Reply nr = n.command({"GET", "x"});
  EXPECT_TRUE(nr.is_error());
  EXPECT_EQ(nr.error_code(), "NOAUTH");
}

// Verifies the SHA1 of a script: the digest Redis' SCRIPT LOAD returns, learned at the first
// EVALSHA (SCRIPT LOAD, then EVALSHA: no NOSCRIPT), kept by copies and used by other clients
// without loading again; concurrent first EVALSHAs share one SCRIPT LOAD. On this server,
// where no test flushes scripts.
TEST_F(RedisAuth, Sha1IsLearnedFromScriptLoad) {
  Client c(parse_url(url_));
  const Script one("return 1");
  const Script copy = one;
  Reply r = c.evalsha(one, {}, {});
  ASSERT_TRUE(r.is_integer()) << to_string(r);
  EXPECT_EQ(r.integer, 1);
  EXPECT_EQ(c.stats().script_loads, 1u);
  EXPECT_EQ(c.stats().commands, 1u);
  EXPECT_EQ(one.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
  EXPECT_EQ(copy.sha1(), one.sha1());
  const Script empty("");
  EXPECT_TRUE(c.evalsha(empty, {}, {}).is_nil());
  EXPECT_EQ(empty.sha1(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(c.stats().script_loads, 2u);

  Client other(parse_url(url_));  // the SHA1 is known and the server has the script
  EXPECT_EQ(other.evalsha(copy, {}, {}).integer, 1);
  EXPECT_EQ(other.stats().script_loads, 0u);

  const std::string k = prefix();
  const Script incr(cat("-- ", unique(), "\nreturn redis.call('INCR', KEYS[1])"));
  c.command({"DEL", k + "n"});
  std::vector<std::future<Result>> results;
  for (int i = 0; i < 100; ++i) {
    auto p = std::make_shared<std::promise<Result>>();
    results.push_back(p->get_future());
    c.async_evalsha(incr, {k + "n"}, {}, [p](std::error_code ec, Reply rr) {
      p->set_value({ec, std::move(rr)});
    });
  }
  std::set<std::int64_t> seen;
  for (auto& f : results) {
    auto res = f.get();
    ASSERT_FALSE(res.ec) << res.reply.str;
    ASSERT_TRUE(res.reply.is_integer()) << to_string(res.reply);
    seen.insert(res.reply.integer);
  }
  EXPECT_EQ(seen.size(), 100u);  // each ran exactly once
  EXPECT_EQ(*seen.rbegin(), 100);
  EXPECT_EQ(c.stats().script_loads, 3u);
  EXPECT_EQ(incr.sha1().size(), 40u);
  c.command({"DEL", k + "n"});
}

// ---- cluster ----

class RedisCluster : public ServerTest {
 protected:
  void SetUp() override {
    std::string seeds;
    need("ADMIT_TEST_REDIS_CLUSTER", seeds);
    if (IsSkipped() || HasFatalFailure()) return;
    nodes_ = parse_endpoints(seeds);
    ASSERT_EQ(nodes_.size(), 3u);
    for (const auto& n : nodes_) {
      ClientOptions o;
      o.seeds = {n};
      o.command_timeout = 20s;
      direct_.push_back(std::make_unique<Client>(o));
    }
  }
  ClientOptions cluster_options() const {
    ClientOptions o;
    o.seeds = nodes_;
    o.cluster = true;
    o.command_timeout = 20s;
    return o;
  }
  /// The node index (into nodes_) serving `slot`, asked from node 0.
  std::size_t owner(std::uint16_t slot) {
    Reply r = direct_[0]->command({"CLUSTER", "SLOTS"});
    for (const auto& range : r.elements) {
      if (range.elements[0].integer <= slot && slot <= range.elements[1].integer) {
        const auto port = static_cast<std::uint16_t>(range.elements[2].elements[1].integer);
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
          if (nodes_[i].port == port) return i;
        }
      }
    }
    ADD_FAILURE() << "no owner for slot " << slot;
    return 0;
  }
  std::string id(std::size_t node) { return direct_[node]->command({"CLUSTER", "MYID"}).str; }

  std::vector<Endpoint> nodes_;
  std::vector<std::unique_ptr<Client>> direct_;  // plain connections to each node
};

// The slots the migration tests move; other tests keep their keys out of them.
const std::string kMovedTag = "{admit-moved-test}";
const std::string kAskTag = "{admit-ask-test}";

bool migrating_slot(std::string_view key) {
  return key_slot(key) == key_slot(kMovedTag) || key_slot(key) == key_slot(kAskTag);
}

// Verifies key_slot against the server's own CLUSTER KEYSLOT.
TEST_F(RedisCluster, KeySlotMatchesServer) {
  for (const std::string key :
       {"foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{}", "a{b", "x}{y", ""}) {
    EXPECT_EQ(direct_[0]->command({"CLUSTER", "KEYSLOT", key}).integer, key_slot(key)) << key;
  }
}

// Verifies routing: keys spread over all three masters, each stored on the node that owns
// its slot, read back through the cluster client without redirects.
TEST_F(RedisCluster, RoutesKeysToTheirMasters) {
  Client c(cluster_options());
  const std::string k = prefix();
  std::map<std::size_t, int> per_node;
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < 300; ++i) {
    std::string key = cat(k, i);
    if (!migrating_slot(key)) keys.push_back(std::move(key));
  }
  for (const auto& key : keys) {
    EXPECT_EQ(c.command_for_key(key, {"SET", key, key + "=v"}).str, "OK");
  }
  for (const auto& key : keys) {
    EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, key + "=v");
  }
  for (std::size_t i = 0; i < keys.size(); i += 10) {  // a sample, straight from the owner
    const std::size_t n = owner(key_slot(keys[i]));
    ++per_node[n];
    EXPECT_EQ(direct_[n]->command({"GET", keys[i]}).str, keys[i] + "=v");
  }
  EXPECT_EQ(per_node.size(), 3u);
  const auto s = c.stats();
  EXPECT_EQ(s.moved, 0u);
  EXPECT_EQ(s.slot_map_loads, 1u);
  EXPECT_EQ(s.connects, 3u);
  EXPECT_EQ(to_string(c.command({"PING"})), "PONG");  // keyless: any master
  for (const auto& key : keys) c.command_for_key(key, {"DEL", key});
}

// Verifies hash tags: {user1}.a and {user1}.b share a slot, so multi-key commands work.
TEST_F(RedisCluster, HashTagsKeepKeysTogether) {
  Client c(cluster_options());
  const std::string a = cat("{", prefix(), "user1}.a");
  const std::string b = cat("{", prefix(), "user1}.b");
  ASSERT_EQ(key_slot(a), key_slot(b));
  EXPECT_EQ(c.command_for_key(a, {"MSET", a, "1", b, "2"}).str, "OK");
  Reply r = c.command_for_key(a, {"MGET", a, b});
  EXPECT_EQ(to_string(r), "[\"1\", \"2\"]");
  c.command_for_key(a, {"DEL", a, b});
  // Without a common tag, Redis refuses (the caller's concern, returned as a reply).
  const std::string x = prefix() + "x";
  std::string y;
  for (int i = 0; y.empty() || key_slot(x) == key_slot(y); ++i) y = cat(prefix(), "y", i);
  EXPECT_EQ(c.command_for_key(x, {"MGET", x, y}).error_code(), "CROSSSLOT");
}

// Verifies many requests from several threads spread over the nodes, all answered in order.
TEST_F(RedisCluster, PipelinesAcrossNodes) {
  Client c(cluster_options());
  const std::string k = prefix();
  constexpr std::size_t kThreads = 3;
  constexpr int kPerThread = 1000;
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < kThreads; ++i) {
    std::string key = cat(k, i);
    if (!migrating_slot(key)) keys.push_back(std::move(key));
  }
  std::atomic<int> done{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto expected = std::make_shared<std::int64_t>(0);  // touched on the I/O thread only
      for (int i = 0; i < kPerThread; ++i) {
        c.async_command_for_key(keys[t], {"INCR", keys[t]},
                                [&, expected](std::error_code ec, Reply r) {
                                  if (ec || r.integer != ++*expected) ++wrong;
                                  ++done;
                                });
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(spin_until([&] { return done.load() == static_cast<int>(kThreads) * kPerThread; },
                         "all replies"));
  EXPECT_EQ(wrong.load(), 0);
  for (const auto& key : keys) {
    EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, std::to_string(kPerThread));
    c.command_for_key(key, {"DEL", key});
  }
}

// Verifies EVALSHA routed by its first key, with NOSCRIPT reloads on each node.
TEST_F(RedisCluster, EvalshaOnEveryNode) {
  Client c(cluster_options());
  const std::string k = prefix();
  const Script script(cat("-- ", unique(), "\nreturn redis.call('INCR', KEYS[1])"));
  std::set<std::size_t> nodes;
  std::vector<std::string> keys;
  for (int i = 0; nodes.size() < 3; ++i) {
    std::string key = cat(k, i);
    if (migrating_slot(key)) continue;
    if (nodes.insert(owner(key_slot(key))).second) keys.push_back(key);
  }
  for (const auto& key : keys) EXPECT_EQ(c.evalsha(script, {key}, {}).integer, 1);
  EXPECT_EQ(c.stats().script_loads, 3u);  // once per node
  for (const auto& key : keys) EXPECT_EQ(c.evalsha(script, {key}, {}).integer, 2);
  EXPECT_EQ(c.stats().script_loads, 3u);
  for (const auto& key : keys) c.command_for_key(key, {"DEL", key});
}

// Moves `slot` (holding `key`) from node `from` to node `to` step by step.
class SlotMigration {
 public:
  SlotMigration(std::vector<std::unique_ptr<Client>>& direct, const std::vector<Endpoint>& nodes,
                std::uint16_t slot, std::size_t from, std::size_t to, std::vector<std::string> ids)
      : direct_(direct),
        nodes_(nodes),
        slot_(std::to_string(slot)),
        from_(from),
        to_(to),
        ids_(std::move(ids)) {}
  ~SlotMigration() {
    if (!finished_) {  // leave the cluster usable if the test failed half-way
      for (std::size_t n : {from_, to_})
        direct_[n]->command({"CLUSTER", "SETSLOT", slot_, "STABLE"});
    }
  }
  void begin() {
    expect_ok(direct_[to_]->command({"CLUSTER", "SETSLOT", slot_, "IMPORTING", ids_[from_]}));
    expect_ok(direct_[from_]->command({"CLUSTER", "SETSLOT", slot_, "MIGRATING", ids_[to_]}));
  }
  void move_key(const std::string& key) {
    expect_ok(direct_[from_]->command(
        {"MIGRATE", nodes_[to_].host, std::to_string(nodes_[to_].port), key, "0", "5000"}));
  }
  void finish() {
    // The new owner first, then every other node: all agree at once, no gossip wait.
    expect_ok(direct_[to_]->command({"CLUSTER", "SETSLOT", slot_, "NODE", ids_[to_]}));
    for (std::size_t n = 0; n < direct_.size(); ++n) {
      if (n != to_)
        expect_ok(direct_[n]->command({"CLUSTER", "SETSLOT", slot_, "NODE", ids_[to_]}));
    }
    finished_ = true;
  }

 private:
  static void expect_ok(const Reply& r) { EXPECT_FALSE(r.is_error()) << r.str; }
  std::vector<std::unique_ptr<Client>>& direct_;
  const std::vector<Endpoint>& nodes_;
  std::string slot_;
  std::size_t from_, to_;
  std::vector<std::string> ids_;
  bool finished_ = false;
};

// Verifies MOVED: after a slot moved to another master, the stale map sends the request to
// the old owner, which answers MOVED; the client follows it and updates its map.
TEST_F(RedisCluster, FollowsMovedAfterSlotMigration) {
  Client c(cluster_options());
  const std::string key = kMovedTag + prefix();
  const std::uint16_t slot = key_slot(key);
  ASSERT_NE(slot, key_slot(kAskTag));
  EXPECT_EQ(c.command_for_key(key, {"SET", key, "v"}).str, "OK");  // loads the map
  const std::size_t from = owner(slot);
  const std::size_t to = (from + 1) % 3;
  SlotMigration m(direct_, nodes_, slot, from, to, {id(0), id(1), id(2)});
  m.begin();
  m.move_key(key);
  m.finish();
  EXPECT_EQ(c.stats().moved, 0u);
  EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, "v");
  EXPECT_EQ(c.stats().moved, 1u);
  EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, "v");  // the map knows now
  EXPECT_EQ(c.stats().moved, 1u);
  EXPECT_EQ(direct_[to]->command({"GET", key}).str, "v");
  c.command_for_key(key, {"DEL", key});
}

// Verifies ASK: while a slot migrates, a key already moved is served by the importing node
// after ASKING, and the slot map is not changed (the next request is asked again).
TEST_F(RedisCluster, FollowsAskDuringSlotMigration) {
  Client c(cluster_options());
  const std::string key = kAskTag + prefix();
  const std::uint16_t slot = key_slot(key);
  EXPECT_EQ(c.command_for_key(key, {"SET", key, "v"}).str, "OK");
  const std::size_t from = owner(slot);
  const std::size_t to = (from + 2) % 3;
  SlotMigration m(direct_, nodes_, slot, from, to, {id(0), id(1), id(2)});
  m.begin();
  m.move_key(key);
  EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, "v");
  EXPECT_EQ(c.stats().asked, 1u);
  EXPECT_EQ(c.command_for_key(key, {"INCR", key}).error_code(), "ERR");  // "v": not an integer
  EXPECT_EQ(c.stats().asked, 2u);
  // EVALSHA: its first use loads the script on the slot's owner (SCRIPT LOAD: the SHA1 is not
  // known yet), then ASK, then NOSCRIPT from the importing node; the resend after its SCRIPT
  // LOAD needs ASKING again.
  const Script get(cat("-- ", unique(), "\nreturn redis.call('GET', KEYS[1])"));
  EXPECT_EQ(c.evalsha(get, {key}, {}).str, "v");
  EXPECT_EQ(c.stats().asked, 3u);
  EXPECT_EQ(c.stats().script_loads, 2u);
  EXPECT_EQ(c.stats().moved, 0u);
  m.finish();
  EXPECT_EQ(c.command_for_key(key, {"GET", key}).str, "v");
  EXPECT_EQ(c.stats().moved, 1u);
  c.command_for_key(key, {"DEL", key});
}

// Verifies that seeds that do not answer are skipped when loading the slot map.
TEST_F(RedisCluster, SkipsDeadSeeds) {
  auto o = cluster_options();
  o.seeds.insert(o.seeds.begin(), Endpoint{"127.0.0.1", test::free_port()});
  Client c(o);
  const std::string key = prefix();
  EXPECT_EQ(c.command_for_key(key, {"SET", key, "1"}).str, "OK");
  EXPECT_EQ(c.stats().connect_failures, 1u);
  c.command_for_key(key, {"DEL", key});
}

}  // namespace
}  // namespace admit::redis
