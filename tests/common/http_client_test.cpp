// admit_http's client (src/common/http/client.hpp) over plain HTTP: against the in-process
// server (round trips, streaming, keep-alive, back-pressure, cancel, the destructor) and
// against scripted upstreams on a raw Asio acceptor (the retry of a request on a connection
// the server closed, and hostile bytes: bad chunking, huge headers, garbage, early close,
// stalls, bodies over the limit), each of which must end the call with an error.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/http/client.hpp"
#include "common/http/server.hpp"

namespace {

using namespace std::chrono_literals;
namespace http = admit::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

/// How long a test waits for a callback before it fails: a guard against hangs, not a timing
/// assertion.
constexpr auto kWait = 30s;

// ---------------------------------------------------------------------------- recording calls

/// What one call reported, and a way to wait for it. Shared with the handlers it makes.
class Recorder : public std::enable_shared_from_this<Recorder> {
 public:
  /// auto_resume: resume() each piece at once; else the test resumes (resume_last()).
  http::CallHandlers handlers(bool auto_resume = true) {
    auto self = shared_from_this();
    http::CallHandlers h;
    h.on_head = [self](http::ClientResponseHead head) {
      std::lock_guard g(self->mu_);
      self->heads_ += 1;
      self->head_ = std::move(head);
      self->cv_.notify_all();
    };
    h.on_data = [self, auto_resume](std::string data, std::function<void()> resume) {
      {
        std::lock_guard g(self->mu_);
        if (!self->head_) self->data_before_head_ = true;
        self->pieces_.push_back(std::move(data));
        self->resume_ = resume;
        self->cv_.notify_all();
      }
      if (self->on_piece) self->on_piece();
      if (auto_resume) resume();
    };
    h.on_done = [self](std::string error) {
      std::lock_guard g(self->mu_);
      self->dones_ += 1;
      self->error_ = std::move(error);
      self->cv_.notify_all();
    };
    return h;
  }

  /// Waits for on_done; false (and a test failure) after kWait.
  bool wait_done() {
    std::unique_lock l(mu_);
    const bool ok = cv_.wait_for(l, kWait, [&] { return dones_ > 0; });
    EXPECT_TRUE(ok) << "no on_done within the guard time";
    return ok;
  }
  /// Waits until `n` pieces arrived.
  bool wait_pieces(std::size_t n) {
    std::unique_lock l(mu_);
    const bool ok = cv_.wait_for(l, kWait, [&] { return pieces_.size() >= n || dones_ > 0; });
    EXPECT_TRUE(ok && pieces_.size() >= n) << "fewer than " << n << " pieces; error " << error_;
    return ok && pieces_.size() >= n;
  }
  void resume_last() {
    std::function<void()> r;
    {
      std::lock_guard g(mu_);
      r = resume_;
    }
    ASSERT_TRUE(r);
    r();
  }

  std::string error() {
    std::lock_guard g(mu_);
    return error_;
  }
  int dones() {
    std::lock_guard g(mu_);
    return dones_;
  }
  int heads() {
    std::lock_guard g(mu_);
    return heads_;
  }
  unsigned status() {
    std::lock_guard g(mu_);
    return head_ ? head_->status : 0;
  }
  std::string header(std::string_view name) {
    std::lock_guard g(mu_);
    if (!head_) return "<no head>";
    for (const auto& [n, v] : head_->headers) {
      if (n.size() == name.size() &&
          std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        return v;
      }
    }
    return "<absent>";
  }
  std::size_t piece_count() {
    std::lock_guard g(mu_);
    return pieces_.size();
  }
  std::vector<std::string> pieces() {
    std::lock_guard g(mu_);
    return pieces_;
  }
  std::string body() {
    std::lock_guard g(mu_);
    std::string b;
    for (const auto& p : pieces_) b += p;
    return b;
  }
  bool data_before_head() {
    std::lock_guard g(mu_);
    return data_before_head_;
  }

  /// Runs on the io thread after each piece is recorded, before any auto resume.
  std::function<void()> on_piece;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<http::ClientResponseHead> head_;
  std::vector<std::string> pieces_;
  std::function<void()> resume_;
  std::string error_;
  int heads_ = 0;
  int dones_ = 0;
  bool data_before_head_ = false;
};

/// Runs one call to completion; the recorder tells what happened.
std::shared_ptr<Recorder> run(http::Client& client, http::ClientRequest req) {
  auto rec = std::make_shared<Recorder>();
  client.start(std::move(req), rec->handlers());
  rec->wait_done();
  return rec;
}

http::ClientRequest get(const http::Origin& origin, std::string target) {
  return {"GET", origin, std::move(target), {}, ""};
}

// ---------------------------------------------------------------------------- in-process server

/// A queue the server's handler hands held streams to the test through.
class ExchangeQueue {
 public:
  void push(http::Exchange ex) {
    std::lock_guard g(mu_);
    q_.push_back(std::move(ex));
    cv_.notify_all();
  }
  http::Exchange pop() {
    std::unique_lock l(mu_);
    if (!cv_.wait_for(l, kWait, [&] { return !q_.empty(); })) {
      throw std::runtime_error("no held exchange within the guard time");
    }
    auto ex = std::move(q_.front());
    q_.pop_front();
    return ex;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<http::Exchange> q_;
};

/// Routes: /echo (method, target, Host, Content-Length, x-echo and body back), /stream
/// (chunks "one;" "two;" "three", the later ones after timers), /hold (a stream that writes
/// "first;" and leaves the rest to the test through `held`).
class TestHandler final : public http::Handler {
 public:
  void handle(const http::Request& req, http::Exchange ex) override {
    const std::string target(req.target);
    http::Response r;
    r.headers = {{"content-type", "text/plain"}};
    if (target.rfind("/echo", 0) == 0) {
      r.headers.emplace_back("x-echo", std::string(req.header("x-echo")));
      r.body = std::string(req.method) + " " + target + " host=" + std::string(req.header("host")) +
               " length=" + std::string(req.header("content-length")) + " " + std::string(req.body);
      return ex.respond(std::move(r));
    }
    if (target == "/stream") {
      return ex.begin_stream(std::move(r), [ex] {
        ex.write("one;", [ex] {
          ex.after(1ms, [ex] {
            ex.write("two;",
                     [ex] { ex.after(1ms, [ex] { ex.write("three", [ex] { ex.end(); }); }); });
          });
        });
      });
    }
    if (target == "/hold") {
      return ex.begin_stream(std::move(r),
                             [this, ex] { ex.write("first;", [this, ex] { held.push(ex); }); });
    }
    r.status = 404;
    r.body = "no route";
    ex.respond(std::move(r));
  }
  http::Response reject(unsigned status, std::string_view message) override {
    http::Response r;
    r.status = status;
    r.body = std::string(message);
    return r;
  }

  ExchangeQueue held;
};

class HttpClient : public ::testing::Test {
 protected:
  void SetUp() override {
    http::ServerOptions o;
    o.threads = 2;
    o.handle_signals = false;
    o.shutdown_grace = std::chrono::seconds(0);
    server_ = std::make_unique<http::Server>(handler_, o);
    runner_ = std::thread([this] { server_->run(); });
    origin_ = http::parse_base_url(server_->url());
  }
  void TearDown() override {
    server_->stop();
    runner_.join();
  }

  TestHandler handler_;
  std::unique_ptr<http::Server> server_;
  std::thread runner_;
  http::Origin origin_;
};

TEST_F(HttpClient, PostsAndReadsTheWholeResponse) {
  http::Client client(http::ClientOptions{});
  http::ClientRequest req{"POST", origin_, "/echo?q=1", {{"x-echo", "hi"}}, "abc"};
  const auto rec = run(client, req);
  EXPECT_EQ(rec->error(), "");
  EXPECT_EQ(rec->status(), 200u);
  EXPECT_EQ(rec->header("x-echo"), "hi");
  EXPECT_EQ(rec->header("content-type"), "text/plain");
  EXPECT_EQ(rec->body(),
            "POST /echo?q=1 host=127.0.0.1:" + std::to_string(server_->port()) + " length=3 abc");
  EXPECT_EQ(rec->heads(), 1);
  EXPECT_FALSE(rec->data_before_head());

  // A POST without a body still says Content-Length: 0; a GET sends none.
  EXPECT_EQ(run(client, {"POST", origin_, "/echo", {}, ""})->body(),
            "POST /echo host=127.0.0.1:" + std::to_string(server_->port()) + " length=0 ");
  EXPECT_EQ(run(client, get(origin_, "/echo"))->body(),
            "GET /echo host=127.0.0.1:" + std::to_string(server_->port()) + " length= ");
}

TEST_F(HttpClient, DropsTheCallersFramingHeaders) {
  http::Client client(http::ClientOptions{});
  http::ClientRequest req{
      "POST",
      origin_,
      "/echo",
      {{"Host", "evil"}, {"Content-Length", "99"}, {"Transfer-Encoding", "chunked"}},
      "xy"};
  const auto rec = run(client, req);
  EXPECT_EQ(rec->error(), "");
  EXPECT_EQ(rec->body(),
            "POST /echo host=127.0.0.1:" + std::to_string(server_->port()) + " length=2 xy");
}

TEST_F(HttpClient, StreamsChunksAsTheyArrive) {
  http::Client client(http::ClientOptions{});
  // The server writes the first chunk, then waits: the rest is written only once the client
  // has delivered that chunk, so it arrived before the stream ended.
  auto rec = std::make_shared<Recorder>();
  client.start(get(origin_, "/hold"), rec->handlers(/*auto_resume=*/false));
  ASSERT_TRUE(rec->wait_pieces(1));
  EXPECT_EQ(rec->pieces()[0], "first;");
  EXPECT_EQ(rec->dones(), 0);
  EXPECT_EQ(rec->header("transfer-encoding"), "chunked");
  auto ex = handler_.held.pop();
  ex.write("second;", [ex] { ex.write("third", [ex] { ex.end(); }); });
  rec->resume_last();
  // The rest arrives in one or more pieces; resume each.
  for (std::size_t n = 2;; ++n) {
    if (rec->body() == "first;second;third") break;
    ASSERT_TRUE(rec->wait_pieces(n));
    rec->resume_last();
  }
  rec->resume_last();  // after the last piece: the end of the body
  ASSERT_TRUE(rec->wait_done());
  EXPECT_EQ(rec->error(), "");
  EXPECT_GE(rec->piece_count(), 2u);

  // A stream the server writes on its own timers arrives whole.
  const auto all = run(client, get(origin_, "/stream"));
  EXPECT_EQ(all->error(), "");
  EXPECT_EQ(all->body(), "one;two;three");
}

TEST_F(HttpClient, ReusesKeepAliveConnections) {
  http::Client client(http::ClientOptions{});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run(client, get(origin_, "/echo"))->error(), "");
  }
  EXPECT_EQ(run(client, get(origin_, "/stream"))->error(), "");  // chunked: reusable too
  EXPECT_EQ(run(client, get(origin_, "/echo"))->error(), "");
  const auto s = client.stats();
  EXPECT_EQ(s.opened, 1u);
  EXPECT_EQ(s.reused, 4u);
  EXPECT_EQ(s.retried, 0u);
  EXPECT_EQ(s.open_now, 1u);
  EXPECT_EQ(s.idle_now, 1u);
  EXPECT_EQ(server_->connections(), 1u);

  // `Connection: close` from the caller keeps the connection out of the pool.
  http::ClientRequest close_req = get(origin_, "/echo");
  close_req.headers = {{"Connection", "close"}};
  EXPECT_EQ(run(client, close_req)->error(), "");
  EXPECT_EQ(client.stats().idle_now, 0u);
  EXPECT_EQ(client.stats().open_now, 0u);
}

TEST_F(HttpClient, RunsManyCallsAtOnce) {
  http::ClientOptions o;
  o.threads = 2;
  o.max_idle_per_origin = 4;
  http::Client client(o);
  std::vector<std::shared_ptr<Recorder>> recs;
  for (int i = 0; i < 24; ++i) {
    auto rec = std::make_shared<Recorder>();
    client.start({"POST", origin_, "/echo", {}, std::to_string(i)}, rec->handlers());
    recs.push_back(rec);
  }
  for (int i = 0; i < 24; ++i) {
    ASSERT_TRUE(recs[static_cast<std::size_t>(i)]->wait_done());
    EXPECT_EQ(recs[static_cast<std::size_t>(i)]->error(), "");
    const std::string body = recs[static_cast<std::size_t>(i)]->body();
    EXPECT_EQ(body.substr(body.rfind(' ') + 1), std::to_string(i));
  }
  EXPECT_LE(client.stats().idle_now, 4u);
  EXPECT_EQ(client.stats().opened + client.stats().reused, 24u);
}

TEST_F(HttpClient, ReadsNothingUntilResumed) {
  http::Client client(http::ClientOptions{});
  auto rec = std::make_shared<Recorder>();
  client.start(get(origin_, "/hold"), rec->handlers(/*auto_resume=*/false));
  ASSERT_TRUE(rec->wait_pieces(1));
  // The server writes and ends the rest of the stream while the client holds the first piece.
  auto ex = handler_.held.pop();
  std::promise<void> ended;
  ex.write("second;", [ex, &ended] {
    ex.write("third", [ex, &ended] {
      ex.end();
      ended.set_value();
    });
  });
  ASSERT_EQ(ended.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(rec->piece_count(), 1u);
  EXPECT_EQ(rec->dones(), 0);
  // Resuming twice is harmless.
  rec->resume_last();
  rec->resume_last();
  for (std::size_t n = 2; rec->body() != "first;second;third"; ++n) {
    ASSERT_TRUE(rec->wait_pieces(n));
    rec->resume_last();
  }
  rec->resume_last();
  ASSERT_TRUE(rec->wait_done());
  EXPECT_EQ(rec->error(), "");
}

TEST_F(HttpClient, CancelEndsTheCallAndClosesItsConnection) {
  http::Client client(http::ClientOptions{});
  auto rec = std::make_shared<Recorder>();
  auto call = client.start(get(origin_, "/hold"), rec->handlers(/*auto_resume=*/false));
  ASSERT_TRUE(rec->wait_pieces(1));
  auto ex = handler_.held.pop();
  call->cancel();
  call->cancel();  // idempotent
  ASSERT_TRUE(rec->wait_done());
  EXPECT_EQ(rec->error(), "cancelled");
  rec->resume_last();  // after the end: nothing happens
  ex.end();
  EXPECT_EQ(rec->dones(), 1);
  EXPECT_EQ(client.stats().idle_now, 0u);

  // The server still serves, and the client opens a fresh connection.
  const auto next = run(client, get(origin_, "/echo"));
  EXPECT_EQ(next->error(), "");
  EXPECT_EQ(next->status(), 200u);
  EXPECT_EQ(client.stats().opened, 2u);
  EXPECT_EQ(client.stats().reused, 0u);
}

TEST_F(HttpClient, DestroyingTheClientCancelsWhatIsInFlight) {
  auto rec = std::make_shared<Recorder>();
  {
    http::Client client(http::ClientOptions{});
    client.start(get(origin_, "/hold"), rec->handlers(/*auto_resume=*/false));
    ASSERT_TRUE(rec->wait_pieces(1));
    (void)handler_.held.pop();
    EXPECT_EQ(run(client, get(origin_, "/echo"))->error(), "");  // and one idle connection
  }
  EXPECT_EQ(rec->dones(), 1);
  EXPECT_EQ(rec->error(), "cancelled");
  rec->resume_last();  // the client is gone: nothing happens
}

TEST_F(HttpClient, AHandlerThatThrowsEndsItsCall) {
  http::Client client(http::ClientOptions{});
  auto rec = std::make_shared<Recorder>();
  auto h = rec->handlers();
  h.on_head = [](http::ClientResponseHead) { throw std::runtime_error("boom"); };
  client.start(get(origin_, "/echo"), h);
  ASSERT_TRUE(rec->wait_done());
  EXPECT_EQ(rec->error(), "handler threw: boom");
  EXPECT_EQ(run(client, get(origin_, "/echo"))->error(), "");
}

TEST_F(HttpClient, RefusesRequestsThatWouldBreakTheWire) {
  http::Client client(http::ClientOptions{});
  const auto bad = [&](http::ClientRequest r) { return run(client, std::move(r))->error(); };
  http::ClientRequest r = get(origin_, "/echo");
  r.headers = {{"x-a", "1\r\nX-Injected: 1"}};
  EXPECT_EQ(bad(r).rfind("invalid request: ", 0), 0u) << bad(r);
  r.headers = {{"bad name", "1"}};
  EXPECT_EQ(bad(r).rfind("invalid request: ", 0), 0u);
  EXPECT_EQ(bad({"GET /x HTTP/1.1\r\n", origin_, "/", {}, ""}).rfind("invalid request: ", 0), 0u);
  EXPECT_EQ(bad(get(origin_, "/a b")).rfind("invalid request: ", 0), 0u);
  EXPECT_EQ(bad(get(origin_, "no-slash")).rfind("invalid request: ", 0), 0u);
  EXPECT_EQ(bad(get(http::Origin{}, "/")).rfind("invalid request: ", 0), 0u);
  EXPECT_EQ(client.stats().opened, 0u);
}

// ---------------------------------------------------------------------------- on a given
// io_context

/// Runs `io` on this thread until `done()` holds; false (and a test failure) after kWait.
bool run_until(asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ADD_FAILURE() << "the condition did not hold within the guard time";
      return false;
    }
    if (io.stopped()) io.restart();
    io.run_one_for(10ms);
  }
  return true;
}

/// Runs `io` on this thread until it has no work left; false (and a test failure) if it still
/// had some after kWait.
bool run_out(asio::io_context& io) {
  io.restart();
  io.run_for(kWait);
  EXPECT_TRUE(io.stopped()) << "the io_context still had work after the guard time";
  return io.stopped();
}

// Calls on a client made on the caller's io_context run on the thread running it, and a second
// call reuses the pooled connection; once the client is gone the io_context runs out of work.
TEST_F(HttpClient, GivenIoContextRunsCallsOnTheCallersThread) {
  asio::io_context io;
  const auto me = std::this_thread::get_id();
  std::vector<std::thread::id> ran_on;  // written by the handlers, on this thread
  const auto recorded = [&ran_on](const std::shared_ptr<Recorder>& rec) {
    http::CallHandlers h = rec->handlers();
    h.on_head = [&ran_on, inner = h.on_head](http::ClientResponseHead head) {
      ran_on.push_back(std::this_thread::get_id());
      inner(std::move(head));
    };
    h.on_done = [&ran_on, inner = h.on_done](std::string error) {
      ran_on.push_back(std::this_thread::get_id());
      inner(std::move(error));
    };
    return h;
  };
  const std::string expected =
      "GET /echo host=127.0.0.1:" + std::to_string(server_->port()) + " length= ";
  {
    http::Client client(http::ClientOptions{}, io);
    for (int i = 0; i < 2; ++i) {
      auto rec = std::make_shared<Recorder>();
      client.start(get(origin_, "/echo"), recorded(rec));
      ASSERT_TRUE(run_until(io, [&] { return rec->dones() > 0; }));
      EXPECT_EQ(rec->error(), "");
      EXPECT_EQ(rec->status(), 200u);
      EXPECT_EQ(rec->header("content-type"), "text/plain");
      EXPECT_EQ(rec->body(), expected);
      EXPECT_EQ(rec->heads(), 1);
      EXPECT_EQ(rec->dones(), 1);
    }
    const auto s = client.stats();
    EXPECT_EQ(s.opened, 1u);
    EXPECT_EQ(s.reused, 1u);
    EXPECT_EQ(s.idle_now, 1u);
  }
  ASSERT_EQ(ran_on.size(), 4u);
  for (const auto& id : ran_on) EXPECT_EQ(id, me);
  // The pooled connection (and its idle timer) go once the io_context runs what ~Client posted.
  EXPECT_TRUE(run_out(io));
}

// Destroying a client made on the caller's io_context with calls in flight (one mid-body, one
// not yet begun) ends each call once with "cancelled" when the io_context runs, which then runs
// out of work; a late resume does nothing.
TEST_F(HttpClient, GivenIoContextDestroyingTheClientEndsItsCallsOnce) {
  asio::io_context io;
  auto mid_body = std::make_shared<Recorder>();
  auto not_begun = std::make_shared<Recorder>();
  {
    http::Client client(http::ClientOptions{}, io);
    client.start(get(origin_, "/hold"), mid_body->handlers(/*auto_resume=*/false));
    ASSERT_TRUE(run_until(io, [&] { return mid_body->piece_count() >= 1; }));
    EXPECT_EQ(mid_body->pieces()[0], "first;");
    (void)handler_.held.pop();
    client.start(get(origin_, "/echo"), not_begun->handlers());  // io does not run it yet
  }
  EXPECT_EQ(mid_body->dones(), 0);  // on_done runs on the io_context, which has not run since
  EXPECT_EQ(not_begun->dones(), 0);
  EXPECT_TRUE(run_out(io));
  EXPECT_EQ(mid_body->dones(), 1);
  EXPECT_EQ(mid_body->error(), "cancelled");
  EXPECT_EQ(not_begun->dones(), 1);
  EXPECT_EQ(not_begun->error(), "cancelled");
  mid_body->resume_last();  // the client is gone: nothing happens
  EXPECT_TRUE(run_out(io));
  EXPECT_EQ(mid_body->dones(), 1);
  EXPECT_EQ(mid_body->piece_count(), 1u);
}

TEST(HttpClientConnect, ReportsAPortNobodyListensOn) {
  http::Client client(http::ClientOptions{});
  // A port that was just free: bound, then closed.
  std::uint16_t port = 0;
  {
    asio::io_context io;
    tcp::acceptor a(io, {asio::ip::address_v4::loopback(), 0});
    port = a.local_endpoint().port();
  }
  const auto rec = run(client, get({false, "127.0.0.1", port, ""}, "/"));
  EXPECT_EQ(rec->error().rfind("connecting to 127.0.0.1:" + std::to_string(port) + " failed: ", 0),
            0u)
      << rec->error();
  EXPECT_EQ(rec->heads(), 0);
}

TEST(HttpClientConnect, ReportsAHostThatDoesNotResolve) {
  http::Client client(http::ClientOptions{});
  const auto rec = run(client, get({false, "no-such-host.invalid", 80, ""}, "/"));
  EXPECT_EQ(rec->error().rfind("resolving no-such-host.invalid failed", 0), 0u) << rec->error();
}

TEST(HttpClientOptions, RejectsBadOptions) {
  http::ClientOptions o;
  o.threads = 0;
  EXPECT_THROW(http::Client{o}, std::invalid_argument);
  o = {};
  o.ca_file = "/nonexistent/ca.pem";
  EXPECT_THROW(http::Client{o}, std::invalid_argument);
  o = {};
  o.read_timeout = 0ms;
  EXPECT_THROW(http::Client{o}, std::invalid_argument);
}

TEST(HttpClientBaseUrl, ParsesOriginsAndRefusesTheRest) {
  const auto o = http::parse_base_url("https://api.openai.com/v1");
  EXPECT_TRUE(o.tls);
  EXPECT_EQ(o.host, "api.openai.com");
  EXPECT_EQ(o.port, 443);
  EXPECT_EQ(o.base_path, "/v1");
  EXPECT_EQ(http::join_target(o, "/chat/completions?x=1"), "/v1/chat/completions?x=1");

  const auto p = http::parse_base_url("http://127.0.0.1:8080/");
  EXPECT_FALSE(p.tls);
  EXPECT_EQ(p.host, "127.0.0.1");
  EXPECT_EQ(p.port, 8080);
  EXPECT_EQ(p.base_path, "");

  const auto v6 = http::parse_base_url("http://[::1]:9000/api/v2/");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 9000);
  EXPECT_EQ(v6.base_path, "/api/v2");
  EXPECT_EQ(http::parse_base_url("http://example.com").port, 80);

  for (const char* bad : {"", "api.openai.com/v1", "ftp://x/", "https://", "https://user:pw@x/",
                          "https://x/?q=1", "https://x/#f", "https://x:0/", "https://x:70000/",
                          "https://x:/", "https://a%20b/", "https:///v1"}) {
    try {
      (void)http::parse_base_url(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + bad + "\""), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW((void)http::join_target(o, "chat"), std::invalid_argument);
}

// ---------------------------------------------------------------------------- scripted upstreams

/// One connection's behaviour: gets the socket and the connection's index (0, 1, ...).
using Script = std::function<asio::awaitable<void>(tcp::socket, int)>;

/// A TCP server on 127.0.0.1 that runs `script` for each connection, on its own thread.
class RawUpstream {
 public:
  explicit RawUpstream(Script script) : script_(std::move(script)) {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RawUpstream() {
    io_.stop();
    thread_.join();
  }
  RawUpstream(const RawUpstream&) = delete;
  RawUpstream& operator=(const RawUpstream&) = delete;

  http::Origin origin() const { return {false, "127.0.0.1", port_, ""}; }

 private:
  asio::awaitable<void> accept_loop() {
    for (int i = 0;; ++i) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(io_, script_(std::move(socket), i), asio::detached);
    }
  }

  Script script_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_, {asio::ip::address_v4::loopback(), 0}};
  std::uint16_t port_ = acceptor_.local_endpoint().port();
  std::thread thread_;
};

/// Reads one request header (the client's GETs have no body).
asio::awaitable<void> read_request(tcp::socket& s) {
  std::string buf;
  co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n\r\n", asio::use_awaitable);
}

asio::awaitable<void> send(tcp::socket& s, std::string data) {
  co_await asio::async_write(s, asio::buffer(data), asio::use_awaitable);
}

/// Reads until the client closes: the connection stays open, silent.
asio::awaitable<void> drain(tcp::socket& s) {
  char buf[512];
  for (;;) {
    auto [ec, n] =
        co_await s.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
  }
}

/// An upstream that answers each request with `response` and then stays silent.
RawUpstream answering(std::string response) {
  return RawUpstream([response](tcp::socket s, int) -> asio::awaitable<void> {
    const std::string r = response;  // copied into the frame: the lambda may go first
    co_await read_request(s);
    co_await send(s, r);
    co_await drain(s);
  });
}

/// The error of one GET to an upstream answering `response`.
std::string error_for(std::string response, http::ClientOptions o = {}) {
  RawUpstream up = answering(std::move(response));
  http::Client client(o);
  return run(client, get(up.origin(), "/"))->error();
}

bool has(const std::string& s, std::string_view what) { return s.find(what) != std::string::npos; }

TEST(HttpClientHostile, BadChunkSize) {
  const std::string e =
      error_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
  EXPECT_TRUE(has(e, "bad chunked encoding")) << e;
}

TEST(HttpClientHostile, ChunkSizeOverflow) {
  const std::string e = error_for(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffffff\r\nx\r\n");
  EXPECT_TRUE(has(e, "bad response")) << e;
}

TEST(HttpClientHostile, ChunkWithoutItsCrlf) {
  const std::string e = error_for(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhelloworld\r\n0\r\n\r\n");
  EXPECT_TRUE(has(e, "bad chunked encoding")) << e;
}

TEST(HttpClientHostile, HugeHeader) {
  const std::string e =
      error_for("HTTP/1.1 200 OK\r\nX-Big: " + std::string(100 * 1024, 'a') + "\r\n\r\n");
  EXPECT_TRUE(has(e, "header")) << e;
  EXPECT_TRUE(has(e, "larger than 65536 bytes")) << e;
}

TEST(HttpClientHostile, EndlessChunkExtension) {
  const std::string e = error_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=" +
                                  std::string(300 * 1024, 'a'));
  EXPECT_TRUE(has(e, "bad response")) << e;
}

TEST(HttpClientHostile, EndlessTrailer) {
  const std::string e =
      error_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " +
                std::string(300 * 1024, 'a'));
  EXPECT_TRUE(has(e, "bad response")) << e;
}

TEST(HttpClientHostile, Garbage) {
  const std::string e = error_for("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n");
  EXPECT_TRUE(has(e, "bad response")) << e;
}

TEST(HttpClientHostile, EndlessInterimResponses) {
  std::string r;
  for (int i = 0; i < 40; ++i) r += "HTTP/1.1 100 Continue\r\n\r\n";
  const std::string e = error_for(r);
  EXPECT_TRUE(has(e, "1xx")) << e;
}

TEST(HttpClientHostile, SkipsAnInterimResponse) {
  RawUpstream up = answering(
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: "
      "2\r\n\r\nok");
  http::Client client(http::ClientOptions{});
  const auto rec = run(client, get(up.origin(), "/"));
  EXPECT_EQ(rec->error(), "");
  EXPECT_EQ(rec->status(), 200u);
  EXPECT_EQ(rec->body(), "ok");
}

TEST(HttpClientHostile, BodyOverTheLimit) {
  http::ClientOptions o;
  o.body_limit = 1000;
  std::string e = error_for("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", o);
  EXPECT_TRUE(has(e, "body larger than 1000 bytes")) << e;
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) chunked += "12c\r\n" + std::string(300, 'x') + "\r\n";
  e = error_for(chunked, o);
  EXPECT_TRUE(has(e, "body larger than 1000 bytes")) << e;
  // Read until close: counted as it comes.
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, "HTTP/1.1 200 OK\r\n\r\n");
    for (int i = 0; i < 10; ++i) co_await send(s, std::string(300, 'y'));
    co_await drain(s);
  });
  http::Client client(o);
  e = run(client, get(up.origin(), "/"))->error();
  EXPECT_TRUE(has(e, "body larger than 1000 bytes")) << e;
}

TEST(HttpClientHostile, CloseBeforeTheBodyEnds) {
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
  });
  http::Client client(http::ClientOptions{});
  const auto rec = run(client, get(up.origin(), "/"));
  EXPECT_TRUE(has(rec->error(), "upstream closed the connection early")) << rec->error();
  EXPECT_EQ(rec->body(), "short");
}

TEST(HttpClientHostile, CloseBeforeAnyResponse) {
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> { co_await read_request(s); });
  http::Client client(http::ClientOptions{});
  const auto rec = run(client, get(up.origin(), "/"));
  EXPECT_TRUE(has(rec->error(), "upstream closed the connection early")) << rec->error();
  EXPECT_EQ(client.stats().retried, 0u);  // a fresh connection is not retried
}

TEST(HttpClientHostile, StallAfterTheHeader) {
  http::ClientOptions o;
  o.read_timeout = 200ms;
  const std::string e = error_for("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", o);
  EXPECT_TRUE(has(e, "timeout reading the response body")) << e;
}

TEST(HttpClientHostile, StallBeforeTheHeader) {
  http::ClientOptions o;
  o.read_timeout = 200ms;
  const std::string e = error_for("HTTP/1.1 200", o);
  EXPECT_TRUE(has(e, "timeout reading the response header")) << e;
}

TEST(HttpClientHostile, ReadUntilCloseBodiesEndCleanly) {
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, "HTTP/1.1 200 OK\r\n\r\nhello, ");
    co_await send(s, "world");
  });
  http::Client client(http::ClientOptions{});
  const auto rec = run(client, get(up.origin(), "/"));
  EXPECT_EQ(rec->error(), "");
  EXPECT_EQ(rec->body(), "hello, world");
  EXPECT_EQ(client.stats().idle_now, 0u);
}

// ---------------------------------------------------------------------------- reuse and retry

constexpr const char* kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

TEST(HttpClientRetry, RetriesOnceWhenAReusedConnectionDiesBeforeTheResponse) {
  // Connection 0 answers the first request and closes on reading the second (a server that
  // timed the connection out just then); connection 1 answers.
  RawUpstream up([](tcp::socket s, int index) -> asio::awaitable<void> {
    co_await read_request(s);
    if (index == 0) {
      co_await send(s, kOk);
      co_await read_request(s);
      co_return;
    }
    co_await send(s, kOk);
    co_await drain(s);
  });
  http::Client client(http::ClientOptions{});
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  const auto second = run(client, get(up.origin(), "/"));
  EXPECT_EQ(second->error(), "");
  EXPECT_EQ(second->body(), "ok");
  const auto s = client.stats();
  EXPECT_EQ(s.opened, 2u);
  EXPECT_EQ(s.reused, 1u);
  EXPECT_EQ(s.retried, 1u);
}

TEST(HttpClientRetry, RetriesOnlyOnce) {
  // Connection 0 answers once then closes on the next request; every later one closes at once.
  RawUpstream up([](tcp::socket s, int index) -> asio::awaitable<void> {
    co_await read_request(s);
    if (index == 0) {
      co_await send(s, kOk);
      co_await read_request(s);
    }
  });
  http::Client client(http::ClientOptions{});
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  const auto second = run(client, get(up.origin(), "/"));
  EXPECT_TRUE(has(second->error(), "upstream closed the connection early")) << second->error();
  EXPECT_EQ(client.stats().retried, 1u);
}

TEST(HttpClientRetry, DoesNotRetryOnceTheResponseBegan) {
  RawUpstream up([](tcp::socket s, int index) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, kOk);
    if (index == 0) {
      co_await read_request(s);
      co_await send(s, "HTTP/1.1 200 OK\r\nContent-Le");
      co_return;
    }
    co_await drain(s);
  });
  http::Client client(http::ClientOptions{});
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  const auto second = run(client, get(up.origin(), "/"));
  EXPECT_TRUE(has(second->error(), "closed the connection early")) << second->error();
  EXPECT_EQ(client.stats().retried, 0u);
}

TEST(HttpClientRetry, ServerClosedIdleConnectionsAreNotUsed) {
  // The server answers and closes at once without saying so: the pooled connection is dead
  // either when it is taken (the client sees the close) or when the request is sent (the
  // retry); both end well on a second connection.
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, kOk);
  });
  http::Client client(http::ClientOptions{});
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  EXPECT_EQ(client.stats().opened, 2u);
}

TEST(HttpClientRetry, AConnectionCloseResponseIsNotPooled) {
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    co_await drain(s);
  });
  http::Client client(http::ClientOptions{});
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  EXPECT_EQ(client.stats().opened, 2u);
  EXPECT_EQ(client.stats().reused, 0u);
  EXPECT_EQ(client.stats().retried, 0u);
}

TEST(HttpClientRetry, AnUnaskedByteAfterTheResponseKeepsTheConnectionOutOfThePool) {
  RawUpstream up([](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, std::string(kOk) + "HTTP/1.1 200 OK\r\n");
    co_await drain(s);
  });
  http::Client client(http::ClientOptions{});
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  EXPECT_EQ(client.stats().reused, 0u);
}

TEST(HttpClientRetry, IdleConnectionsAreClosedAfterTheIdleTimeout) {
  std::promise<void> closed;
  auto closed_future = closed.get_future();
  RawUpstream up([&closed](tcp::socket s, int) -> asio::awaitable<void> {
    co_await read_request(s);
    co_await send(s, kOk);
    co_await drain(s);  // returns when the client closes
    closed.set_value();
  });
  http::ClientOptions o;
  o.idle_timeout = 50ms;
  http::Client client(o);
  EXPECT_EQ(run(client, get(up.origin(), "/"))->error(), "");
  ASSERT_EQ(closed_future.wait_for(kWait), std::future_status::ready);
}

// A call cancelled while more of its body is arriving (a read under way, bytes waiting on the
// socket) ends once with "cancelled" and its connection is not reused: the regression test for
// ClientConn::finish destroying the parser a cancelled read could still write into.
TEST(HttpClientGivenIoContext, CancelMidResponseEndsOnceAndDropsTheConnection) {
  std::promise<void> go_on;  // the test lets connection 0 send more of its body
  auto go_on_future = go_on.get_future().share();
  std::promise<void> sent_more;  // connection 0 sent it
  auto sent_more_future = sent_more.get_future();
  RawUpstream up([&](tcp::socket s, int index) -> asio::awaitable<void> {
    co_await read_request(s);
    if (index == 0) {
      co_await send(s, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
      // Blocks the upstream's thread: nothing else is under way on it until the test says so.
      if (go_on_future.wait_for(kWait) != std::future_status::ready) co_return;
      co_await send(s, std::string(20, 'x'));  // more, but not the whole body
      sent_more.set_value();
      co_await drain(s);
      co_return;
    }
    co_await send(s, kOk);
    co_await drain(s);
  });
  asio::io_context io;
  {
    http::Client client(http::ClientOptions{}, io);
    auto rec = std::make_shared<Recorder>();
    auto call = client.start(get(up.origin(), "/"), rec->handlers());  // resumes each piece
    ASSERT_TRUE(run_until(io, [&] { return rec->piece_count() >= 1; }));
    EXPECT_EQ(rec->pieces()[0], "abc");
    io.poll();  // the resume: the next read is under way
    go_on.set_value();
    ASSERT_EQ(sent_more_future.wait_for(kWait), std::future_status::ready);
    // The cancel, queued behind the reactor: the reactor takes the waiting bytes off the
    // socket, then the cancel ends the call on the strand before the read's completion runs.
    asio::post(io, [call] { call->cancel(); });
    io.run_one();
    ASSERT_TRUE(run_until(io, [&] { return rec->dones() > 0; }));
    EXPECT_EQ(rec->error(), "cancelled");
    const std::string body = rec->body();
    EXPECT_EQ(body.substr(0, 3), "abc");
    EXPECT_EQ(body.substr(3), std::string(body.size() - 3, 'x'));
    EXPECT_EQ(client.stats().idle_now, 0u);

    // The next call opens a fresh connection.
    auto next = std::make_shared<Recorder>();
    client.start(get(up.origin(), "/"), next->handlers());
    ASSERT_TRUE(run_until(io, [&] { return next->dones() > 0; }));
    EXPECT_EQ(next->error(), "");
    EXPECT_EQ(next->body(), "ok");
    EXPECT_EQ(client.stats().opened, 2u);
    EXPECT_EQ(client.stats().reused, 0u);
    EXPECT_EQ(client.stats().retried, 0u);
    EXPECT_EQ(rec->dones(), 1);
  }
  EXPECT_TRUE(run_out(io));
}

}  // namespace
