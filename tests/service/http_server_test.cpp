// admit_http (src/common/http/server.hpp), the server admitd and the provider simulator share:
// whole, late (another thread, a timer) and streamed responses, rejects, keep-alive and a
// graceful stop with a response in flight; hostile input (oversized trailers, smuggling
// framings, missing or doubled Host, handlers that throw, too many connections, no file
// descriptors left), each followed by a check that the server still answers; the timeouts
// (an idle connection, a header or body sent too slowly, a client that stops reading) and
// what they must not cut (a Handler slower than them). A raw POSIX socket is the client.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/http/server.hpp"

namespace {

using namespace std::chrono_literals;
namespace http = admit::http;

/// A TCP socket with a 10 s receive timeout, not connected yet; -1 on failure.
int new_socket() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool connect_to(int fd, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
}

/// Sends all of `data`; false if the connection failed (e.g. the server closed it).
bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

/// Reads until the server closes (or 10 s pass without a byte).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

/// Reads one response whose body is `Content-Length` long (at most 10 s).
std::string read_response(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const auto end = out.find("\r\n\r\n");
    if (end != std::string::npos) {
      const auto cl = out.find("Content-Length: ");
      const std::size_t len = cl == std::string::npos ? 0 : std::stoul(out.substr(cl + 16));
      if (out.size() >= end + 4 + len) return out;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

/// Sends `request` to 127.0.0.1:port and returns everything read until the server closes
/// (at most 10 s). The request may be cut short by the server closing.
std::string roundtrip(std::uint16_t port, const std::string& request) {
  const int fd = new_socket();
  if (fd < 0) return "<socket failed>";
  std::string out;
  if (connect_to(fd, port)) {
    send_all(fd, request);
    out = read_all(fd);
  }
  ::close(fd);
  return out;
}

/// A GET that closes the connection: "HTTP/1.1 200 OK..." when the server answers.
std::string get(std::uint16_t port, const std::string& path = "/now") {
  return roundtrip(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

/// Routes: /now (at once), /thread (from another thread), /later (after 100 ms), /stream
/// (three chunks, the second 50 ms late), /throw (handle() throws), /throw-later (a timer's
/// continuation throws), /slow (after 1.5 s), /slow-stream (two chunks 1.5 s apart), /big (a
/// 32 MiB body). With on_close counting in `closed`: /watch-never (never answered),
/// /watch-now (answered at once), /watch-later (after 100 ms), /watch-stream (one chunk,
/// then nothing).
class TestHandler final : public http::Handler {
 public:
  ~TestHandler() override {
    for (auto& t : threads_) t.join();
  }

  void handle(const http::Request& req, http::Exchange ex) override {
    ++handled;
    const std::string target(req.target);
    const std::string path = target.substr(0, target.find('?'));
    http::Response r;
    r.headers = {{"content-type", "text/plain"}, {"x-echo", std::string(req.header("X-ECHO"))}};
    r.body = std::string(req.method) + " " + target + " " + std::string(req.body);
    if (path == "/now") return ex.respond(std::move(r));
    if (path.starts_with("/watch-")) ex.on_close([this] { ++closed; });
    if (path == "/watch-never") return;
    if (path == "/watch-now") return ex.respond(std::move(r));
    if (path == "/watch-later") {
      return ex.after(100ms, [ex, r]() mutable { ex.respond(std::move(r)); });
    }
    if (path == "/watch-stream") {
      return ex.begin_stream(std::move(r), [ex] { ex.write("one;", [] {}); });
    }
    if (path == "/throw") throw std::runtime_error("handler failed");
    if (path == "/throw-later") {
      return ex.after(1ms, [] { throw std::runtime_error("continuation failed"); });
    }
    if (path == "/thread") {
      std::lock_guard g(mu_);
      threads_.emplace_back([ex, r]() mutable { ex.respond(std::move(r)); });
      return;
    }
    if (path == "/later") {
      return ex.after(100ms, [ex, r]() mutable { ex.respond(std::move(r)); });
    }
    if (path == "/slow") {
      return ex.after(1500ms, [ex, r]() mutable { ex.respond(std::move(r)); });
    }
    if (path == "/slow-stream") {
      return ex.begin_stream(std::move(r), [ex] {
        ex.write("one;", [ex] { ex.after(1500ms, [ex] { ex.write("two", [ex] { ex.end(); }); }); });
      });
    }
    if (path == "/big") {
      r.body.assign(32 << 20, 'b');
      return ex.respond(std::move(r));
    }
    ex.begin_stream(std::move(r), [ex] {
      ex.write("one;", [ex] {
        ex.after(50ms, [ex] { ex.write("two;", [ex] { ex.write("three", [ex] { ex.end(); }); }); });
      });
    });
  }

  http::Response reject(unsigned status, std::string_view message) override {
    http::Response r;
    r.status = status;
    r.body = "rejected: " + std::string(message);
    return r;
  }

  std::atomic<int> handled{0};
  std::atomic<int> closed{0};  // on_close callbacks run

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

class HttpServer : public ::testing::Test {
 protected:
  void SetUp() override {
    http::ServerOptions o;
    o.name = "test-server";
    o.threads = 2;
    o.body_limit = 1024;
    o.handle_signals = false;
    server_ = std::make_unique<http::Server>(handler_, o);
    port_ = server_->port();
    runner_ = std::thread([this] { server_->run(); });
  }
  void TearDown() override {
    if (runner_.joinable()) {
      server_->stop();
      runner_.join();
    }
  }

  TestHandler handler_;
  std::unique_ptr<http::Server> server_;
  std::uint16_t port_ = 0;
  std::thread runner_;
};

TEST_F(HttpServer, AnswersWholeResponsesWithTheirHeadersInOrder) {
  ASSERT_NE(port_, 0);
  EXPECT_EQ(server_->url(), "http://127.0.0.1:" + std::to_string(port_));
  const std::string r =
      roundtrip(port_,
                "POST /now?q=1 HTTP/1.1\r\nHost: x\r\nx-echo: hi\r\nContent-Length: 3\r\n"
                "Connection: close\r\n\r\nabc");
  EXPECT_EQ(r,
            "HTTP/1.1 200 OK\r\nServer: test-server\r\ncontent-type: text/plain\r\n"
            "x-echo: hi\r\nConnection: close\r\nContent-Length: 17\r\n\r\nPOST /now?q=1 abc");
}

TEST_F(HttpServer, KeepsTheConnectionAliveAcrossLateAnswers) {
  // Three requests on one connection, answered from another thread and after a timer.
  const std::string r = roundtrip(port_,
                                  "GET /thread HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /later HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(count(r, "HTTP/1.1 200 OK"), 3u) << r;
  const auto a = r.find("GET /thread"), b = r.find("GET /later"), c = r.find("GET /now");
  EXPECT_TRUE(a < b && b < c && c != std::string::npos) << r;
}

TEST_F(HttpServer, StreamsChunks) {
  const std::string r =
      roundtrip(port_, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(r.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\n4\r\none;\r\n4\r\ntwo;\r\n5\r\nthree\r\n0\r\n\r\n"), std::string::npos)
      << r;
}

TEST_F(HttpServer, RejectsWhatItCannotRead) {
  const std::string big =
      roundtrip(port_, "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" +
                           std::string(5000, 'x'));
  EXPECT_EQ(big.rfind("HTTP/1.1 413 Payload Too Large\r\nServer: test-server\r\n", 0), 0u) << big;
  EXPECT_NE(big.find("Connection: close\r\n"), std::string::npos) << big;
  EXPECT_NE(big.find("rejected: request body too large"), std::string::npos) << big;
  const std::string bad = roundtrip(port_, "NOT HTTP\r\n\r\n");
  EXPECT_EQ(bad.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << bad;
  EXPECT_NE(bad.find("rejected: malformed HTTP request"), std::string::npos) << bad;
}

TEST_F(HttpServer, StopLetsAResponseInFlightFinish) {
  std::string r;
  std::thread client([&] {
    r = roundtrip(port_, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");  // keep-alive asked
  });
  // Once the request is read, its answer waits 100 ms: stop meanwhile.
  for (int i = 0; i < 1000 && handler_.handled == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(handler_.handled, 1);
  const auto t0 = std::chrono::steady_clock::now();
  server_->stop();
  runner_.join();
  client.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  // Answered, with the connection closed since the server is stopping.
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("GET /later"), std::string::npos) << r;
}

// The server parses a whole request in a plain subset of HTTP/1.1 itself and leaves the rest
// to Beast's parser, which also takes every request whose first bytes come without the whole
// header. Each request here is sent whole, then again with its first byte alone (so Beast reads
// it): the answers must be the same, byte for byte.
TEST_F(HttpServer, RequestsReadWholeOrByteByByteGetTheSameAnswers) {
  const std::vector<std::string> requests = {
      "GET /now?a=1 HTTP/1.1\r\nHost: x\r\nX-Echo:   padded value \t \r\nConnection: close\r\n\r\n",
      "POST /now HTTP/1.1\r\nhost: x\r\nx-echo: one\r\nX-ECHO: two\r\nContent-Length: 3\r\n"
      "Connection: close\r\n\r\nabc",
      "GET /now HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /now?2 HTTP/1.0\r\nHost: "
      "x\r\n\r\n",
      "GET /now HTTP/1.0\r\n\r\n",
      "HEAD /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nConnection: CLOSE\r\n\r\n",
      "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\nabcdefg"
      "GET /now?next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-1\r\nConnection: close\r\n\r\n",
      "get /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nX-Echo: caf\xc3\xa9\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close, keep-alive\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
      "GET /now?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  // the first counts
      "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + std::string(2000, 'b'),
      "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n"
      "Connection: close\r\n\r\nabc",
      "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
      "GET /now HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
      "GET /now HTTP/1.1\r\nX-Echo: no host\r\n\r\n",
      "POST /now HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nX-Echo: a\r\n b\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nX-Echo : a\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nX-Echo: a\rb\r\nConnection: close\r\n\r\n",
      "GET  /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n",
      "\r\nGET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
  };
  for (const std::string& request : requests) {
    const std::string whole = roundtrip(port_, request);
    const int fd = new_socket();
    ASSERT_TRUE(connect_to(fd, port_));
    ASSERT_TRUE(send_all(fd, request.substr(0, 1)));
    std::this_thread::sleep_for(20ms);  // read alone: Beast's parser takes the request
    send_all(fd, request.substr(1));
    const std::string split = read_all(fd);
    ::close(fd);
    EXPECT_FALSE(whole.empty()) << request;
    EXPECT_EQ(whole, split) << request;
  }
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

// ---- Exchange::on_close

/// Waits (at most 10 s) for `done` to hold.
template <class F>
bool eventually(F done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

TEST_F(HttpServer, OnCloseRunsWhenTheClientLeavesARequestWaitingForItsAnswer) {
  // The handler works (it never answers here); the server notices the client's FIN.
  const int fd = new_socket();
  ASSERT_TRUE(connect_to(fd, port_));
  ASSERT_TRUE(send_all(fd, "GET /watch-never HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(eventually([&] { return handler_.handled == 1; }));
  EXPECT_EQ(handler_.closed, 0);
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return handler_.closed == 1; }));
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
  // A stream waiting for its next chunk: the same.
  const int s = new_socket();
  ASSERT_TRUE(connect_to(s, port_));
  ASSERT_TRUE(send_all(s, "GET /watch-stream HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string got;
  char buf[4096];
  while (got.find("one;") == std::string::npos) {
    const ssize_t n = ::recv(s, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << got;
    got.append(buf, static_cast<std::size_t>(n));
  }
  ::close(s);
  EXPECT_TRUE(eventually([&] { return handler_.closed == 2; }));
  EXPECT_EQ(handler_.closed, 2);  // once each
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

TEST_F(HttpServer, OnCloseDoesNotRunForAnsweredRequests) {
  const std::string r = roundtrip(port_,
                                  "GET /watch-now HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /watch-later HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(count(r, "HTTP/1.1 200 OK"), 3u) << r;
  // Answered, then the client closes a keep-alive connection: not a lost request.
  const int fd = new_socket();
  ASSERT_TRUE(connect_to(fd, port_));
  ASSERT_TRUE(send_all(fd, "GET /watch-later HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(starts_with(read_response(fd), "HTTP/1.1 200 OK\r\n"));
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
  EXPECT_EQ(handler_.handled, 4);
  EXPECT_EQ(handler_.closed, 0);
}

TEST_F(HttpServer, PipelinedRequestsSurviveTheCloseWatch) {
  // Two requests in one write, the first answered later: the second waits in the buffer.
  const std::string r = roundtrip(port_,
                                  "GET /watch-later?1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /now?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(count(r, "HTTP/1.1 200 OK"), 2u) << r;
  const auto a = r.find("GET /watch-later?1"), b = r.find("GET /now?2");
  EXPECT_TRUE(a < b && b != std::string::npos) << r;
  // The second arrives while the first is with the handler: the watch reads it and keeps it
  // for the next request (in two pieces, the body after the header).
  const int fd = new_socket();
  ASSERT_TRUE(connect_to(fd, port_));
  ASSERT_TRUE(send_all(fd, "GET /watch-later?3 HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(eventually([&] { return handler_.handled == 3; }));
  ASSERT_TRUE(send_all(fd, "POST /now?4 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"));
  ASSERT_TRUE(send_all(fd, "body"));
  std::string got;  // both responses, however the bytes come
  char buf[4096];
  while (got.find("POST /now?4 body") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(count(got, "HTTP/1.1 200 OK\r\n"), 2u) << got;
  const auto c = got.find("GET /watch-later?3 "), d = got.find("POST /now?4 body");
  EXPECT_TRUE(c < d && d != std::string::npos) << got;
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
  EXPECT_EQ(handler_.closed, 0);
}

TEST(HttpServerStop, OnCloseRunsForRequestsLeftPastTheGracePeriod) {
  TestHandler handler;
  http::ServerOptions o;
  o.handle_signals = false;
  o.shutdown_grace = 0s;
  http::Server server(handler, o);
  std::thread runner([&] { server.run(); });
  const int fd = new_socket();
  ASSERT_TRUE(connect_to(fd, server.port()));
  ASSERT_TRUE(send_all(fd, "GET /watch-never HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(eventually([&] { return handler.handled == 1; }));
  server.stop();
  runner.join();
  EXPECT_EQ(handler.closed, 1);
  EXPECT_EQ(read_all(fd), "");  // closed without an answer
  ::close(fd);
}

// ---- hostile input: each is sent over a real socket, then the server must still answer.

TEST_F(HttpServer, ATrailerFieldOf64KiBIsRefusedNotFatal) {
  // Boost.Beast throws std::length_error for a field value of >= 65534 bytes; a trailer is
  // parsed outside the header limit. This request used to end the process.
  const std::string r = roundtrip(port_,
                                  "GET /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                  "\r\n0\r\nX: " +
                                      std::string(65534, 'v') + "\r\n\r\n");
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 431 Request Header Fields Too Large\r\n")) << r;
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos) << r;
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

TEST_F(HttpServer, TrailersAreBoundedByTheHeaderLimitAndDiscarded) {
  // Many small trailer fields adding up past the header limit (16 KiB) are refused too.
  std::string many;
  for (int i = 0; i < 2000; ++i) {
    many += 'T';
    many += std::to_string(i);
    many += ": vvvvvvvvvvvvvvvv\r\n";
  }
  const std::string big = roundtrip(
      port_,
      "POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" +
          many + "\r\n");
  EXPECT_TRUE(starts_with(big, "HTTP/1.1 431 ")) << big;
  // A small trailer is read and dropped: it cannot pose as a header field (x-echo, Host).
  const std::string small =
      roundtrip(port_,
                "POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n3\r\nabc\r\n0\r\nx-echo: injected\r\n"
                "Host: evil\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_TRUE(starts_with(small, "HTTP/1.1 200 OK\r\n")) << small;
  EXPECT_NE(small.find("x-echo: \r\n"), std::string::npos) << small;
  EXPECT_NE(small.find("Connection: close\r\n"), std::string::npos) << small;
  EXPECT_NE(small.find("POST /now abc"), std::string::npos) << small;
  // A chunk-size line with endless extensions is bounded the same way.
  const std::string ext =
      roundtrip(port_, "POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;" +
                           std::string(40000, 'e') + "\r\nabc\r\n0\r\n\r\n");
  EXPECT_TRUE(starts_with(ext, "HTTP/1.1 431 ")) << ext.substr(0, 200);
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

TEST_F(HttpServer, AFramingThatDoesNotEndInChunkedIsRefusedAndClosed) {
  // RFC 9112 section 6.3: 400 and close. Otherwise the body would be read as a next request.
  const std::string smuggled = "GET /now?smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string gzip = roundtrip(
      port_, "POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + smuggled);
  EXPECT_TRUE(starts_with(gzip, "HTTP/1.1 400 Bad Request\r\n")) << gzip;
  EXPECT_NE(gzip.find("Transfer-Encoding must end in chunked"), std::string::npos) << gzip;
  EXPECT_EQ(count(gzip, "HTTP/1.1 "), 1u) << gzip;
  // A coding before chunked would have to be decoded: 501, closed.
  const std::string coded = roundtrip(port_,
                                      "POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, "
                                      "chunked\r\n\r\n0\r\n\r\n" +
                                          smuggled);
  EXPECT_TRUE(starts_with(coded, "HTTP/1.1 501 Not Implemented\r\n")) << coded;
  EXPECT_EQ(count(coded, "HTTP/1.1 "), 1u) << coded;
  // Transfer-Encoding and Content-Length together, in either order; chunked in HTTP/1.0.
  for (const std::string headers : {"Transfer-Encoding: gzip\r\nContent-Length: 3\r\n",
                                    "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                                    "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"}) {
    const std::string r =
        roundtrip(port_, "POST /now HTTP/1.1\r\nHost: x\r\n" + headers + "\r\nabc" + smuggled);
    EXPECT_TRUE(starts_with(r, "HTTP/1.1 400 Bad Request\r\n")) << headers << r;
    EXPECT_EQ(count(r, "HTTP/1.1 "), 1u) << r;
  }
  const std::string old = roundtrip(
      port_, "POST /now HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled);
  EXPECT_TRUE(starts_with(old, "HTTP/1.0 400 Bad Request\r\n")) << old;
  EXPECT_EQ(handler_.handled, 0);
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

TEST_F(HttpServer, ABodyWithoutLengthIsRefusedNotReadAsTheNextRequest) {
  const std::string r = roundtrip(port_,
                                  "POST /now HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /now?smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 411 Length Required\r\n")) << r;
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.find("smuggled"), std::string::npos) << r;
  EXPECT_EQ(handler_.handled, 0);
  // An empty body says so; a GET needs no length.
  EXPECT_TRUE(starts_with(
      roundtrip(port_,
                "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
      "HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

TEST_F(HttpServer, AMissingOrDoubledHostIsRefused) {
  const std::string none = roundtrip(port_, "GET /now HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(starts_with(none, "HTTP/1.1 400 Bad Request\r\n")) << none;
  EXPECT_NE(none.find("missing Host header"), std::string::npos) << none;
  const std::string two = roundtrip(port_, "GET /now HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_TRUE(starts_with(two, "HTTP/1.1 400 Bad Request\r\n")) << two;
  EXPECT_NE(two.find("more than one Host header"), std::string::npos) << two;
  EXPECT_EQ(handler_.handled, 0);
  // HTTP/1.0 may omit it.
  EXPECT_TRUE(starts_with(roundtrip(port_, "GET /now HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK\r\n"));
}

TEST_F(HttpServer, AnExceptionClosesOnlyItsOwnConnection) {
  // handle() throws: 500, and the connection closes.
  const std::string r = get(port_, "/throw");
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 500 Internal Server Error\r\n")) << r;
  EXPECT_NE(r.find("rejected: internal error"), std::string::npos) << r;
  // A continuation throws on an io thread: that connection closes without an answer while
  // another one, open meanwhile, goes on.
  const int other = new_socket();
  ASSERT_TRUE(connect_to(other, port_));
  ASSERT_TRUE(send_all(other, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(starts_with(read_response(other), "HTTP/1.1 200 OK\r\n"));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(get(port_, "/throw-later"), "") << i;  // both threads
  ASSERT_TRUE(send_all(other, "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_TRUE(starts_with(read_all(other), "HTTP/1.1 200 OK\r\n"));
  ::close(other);
  EXPECT_TRUE(starts_with(get(port_), "HTTP/1.1 200 OK\r\n"));
}

/// A server of its own, with options the fixture's does not have.
class OwnServer {
 public:
  OwnServer(http::Handler& handler, http::ServerOptions o) {
    o.handle_signals = false;
    server_ = std::make_unique<http::Server>(handler, o);
    runner_ = std::thread([this] { server_->run(); });
  }
  ~OwnServer() {
    server_->stop();
    runner_.join();
  }
  http::Server& operator*() { return *server_; }
  std::uint16_t port() const { return server_->port(); }

 private:
  std::unique_ptr<http::Server> server_;
  std::thread runner_;
};

TEST(HttpServerLimits, ConnectionsOverTheCapGet503AtOnce) {
  TestHandler handler;
  http::ServerOptions o;
  o.max_connections = 2;
  OwnServer server(handler, o);
  ASSERT_EQ((*server).max_connections(), 2u);
  // Two clients hold their connections open (each answered once, so each is accepted).
  int held[2];
  for (int& fd : held) {
    fd = new_socket();
    ASSERT_TRUE(connect_to(fd, server.port()));
    ASSERT_TRUE(send_all(fd, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(starts_with(read_response(fd), "HTTP/1.1 200 OK\r\n"));
  }
  const std::string over = get(server.port());
  EXPECT_TRUE(starts_with(over, "HTTP/1.1 503 Service Unavailable\r\n")) << over;
  EXPECT_NE(over.find("rejected: too many connections"), std::string::npos) << over;
  // Once a client leaves, a new one is served (its session ends when the server reads EOF).
  ::close(held[0]);
  std::string r;
  for (int i = 0; i < 200 && !starts_with(r, "HTTP/1.1 200 OK\r\n"); ++i) {
    if (i > 0) std::this_thread::sleep_for(10ms);
    r = get(server.port());
  }
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 200 OK\r\n")) << r;
  ::close(held[1]);
}

TEST(HttpServerLimits, OutOfFileDescriptorsClientsGet503NotAHang) {
  // The sanitizer runtimes need descriptors of their own (UBSan's vptr check opens a pipe to
  // probe memory): with none left they report false errors. admitd_test.sh covers the cap
  // under sanitizers; this in-process EMFILE runs in the plain build.
  if (const char* s = std::getenv("ADMIT_SANITIZER_BUILD");
      s != nullptr && s == std::string_view("1")) {
    GTEST_SKIP() << "needs free file descriptors under sanitizers";
  }
  TestHandler handler;
  OwnServer server(handler, http::ServerOptions{});
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  // The clients' sockets exist before the descriptors run out (connect needs none).
  std::vector<int> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(new_socket());
  // Lower the limit to what is open now plus a few, then use up the rest.
  int highest = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(highest, 0);
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(highest) + 16;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> filler{highest};
  for (int fd; (fd = ::dup(highest)) >= 0;) filler.push_back(fd);
  ASSERT_EQ(errno, EMFILE);
  for (const int fd : clients) {
    ASSERT_TRUE(connect_to(fd, server.port()));
    send_all(fd, "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  }
  std::vector<std::string> answers;
  for (const int fd : clients) answers.push_back(read_all(fd));
  for (const int fd : filler) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (const auto& a : answers) {
    EXPECT_TRUE(starts_with(a, "HTTP/1.1 503 Service Unavailable\r\n")) << a;
  }
  for (const int fd : clients) ::close(fd);
  // Descriptors are back: served again (after the accept loop's short back-off).
  std::string r;
  for (int i = 0; i < 200 && !starts_with(r, "HTTP/1.1 200 OK\r\n"); ++i) {
    if (i > 0) std::this_thread::sleep_for(10ms);
    r = get(server.port());
  }
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 200 OK\r\n")) << r;
}

// ---- timeouts: the idle timeout bounds reading a whole request (from the end of the previous
// response), the write timeout each write; neither runs while the Handler has the request.

http::ServerOptions short_timeouts() {
  http::ServerOptions o;
  o.idle_timeout = 1s;
  o.write_timeout = 1s;
  return o;
}

/// Seconds from `t0` to now.
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(HttpServerTimeouts, AnIdleKeepAliveConnectionIsClosed) {
  TestHandler handler;
  OwnServer server(handler, short_timeouts());
  const int fd = new_socket();
  ASSERT_TRUE(connect_to(fd, server.port()));
  for (int i = 0; i < 3; ++i) {  // answered requests restart the idle time
    ASSERT_TRUE(send_all(fd, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(starts_with(read_response(fd), "HTTP/1.1 200 OK\r\n"));
    std::this_thread::sleep_for(600ms);
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(read_all(fd), "");  // closed, without a response
  EXPECT_LT(since(t0), 3.0);
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return (*server).connections() == 0; }));
  // A connection that never sends a byte: the same.
  const int quiet = new_socket();
  ASSERT_TRUE(connect_to(quiet, server.port()));
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(read_all(quiet), "");
  EXPECT_GT(since(t1), 0.5);
  EXPECT_LT(since(t1), 3.0);
  ::close(quiet);
  EXPECT_TRUE(starts_with(get(server.port()), "HTTP/1.1 200 OK\r\n"));
}

TEST(HttpServerTimeouts, AHeaderOrBodySentTooSlowlyIsCutOff) {
  // A byte every 100 ms keeps the connection busy but never ends the request: the idle
  // timeout bounds the whole request, not the time between two reads.
  TestHandler handler;
  OwnServer server(handler, short_timeouts());
  for (const std::string start :
       {"GET /now HTTP/1.1\r\nHost: x\r\n",
        "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"}) {
    const int fd = new_socket();
    ASSERT_TRUE(connect_to(fd, server.port()));
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(send_all(fd, start));
    bool cut = false;
    for (int i = 0; i < 60 && !cut; ++i) {  // 6 s at most
      std::this_thread::sleep_for(100ms);
      cut = !send_all(fd, "x");
      char c;
      if (!cut && ::recv(fd, &c, 1, MSG_DONTWAIT) == 0) cut = true;  // the server's FIN
    }
    EXPECT_TRUE(cut) << start;
    EXPECT_LT(since(t0), 3.0) << start;
    ::close(fd);
  }
  EXPECT_TRUE(eventually([&] { return (*server).connections() == 0; }));
  EXPECT_TRUE(starts_with(get(server.port()), "HTTP/1.1 200 OK\r\n"));
}

TEST(HttpServerTimeouts, AHandlerSlowerThanTheTimeoutsStillAnswers) {
  TestHandler handler;
  OwnServer server(handler, short_timeouts());
  const std::string r = roundtrip(server.port(),
                                  "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /slow-stream HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(count(r, "HTTP/1.1 200 OK\r\n"), 3u) << r;
  EXPECT_NE(r.find("\r\n4\r\none;\r\n3\r\ntwo\r\n0\r\n\r\n"), std::string::npos) << r;
}

TEST(HttpServerTimeouts, AClientThatStopsReadingIsCutOffAtTheWriteTimeout) {
  TestHandler handler;
  OwnServer server(handler, short_timeouts());
  const int fd = new_socket();
  const int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_TRUE(connect_to(fd, server.port()));
  ASSERT_TRUE(send_all(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));  // 32 MiB, never read
  ASSERT_TRUE(eventually([&] { return handler.handled == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return (*server).connections() == 0; }));
  EXPECT_LT(since(t0), 3.0);
  ::close(fd);
  EXPECT_TRUE(starts_with(get(server.port()), "HTTP/1.1 200 OK\r\n"));
}

TEST(HttpServerLimits, OptionsAreChecked) {
  TestHandler handler;
  http::ServerOptions o;
  o.handle_signals = false;
  o.header_limit = http::kMaxHeaderLimit + 1;  // Beast would throw on such a field
  EXPECT_THROW(http::Server(handler, o), std::invalid_argument);
  o.header_limit = 16 * 1024;
  o.max_connections = 0;
  EXPECT_THROW(http::Server(handler, o), std::invalid_argument);
}

TEST(HttpStartup, UrlAndHostChecks) {
  EXPECT_EQ(http::url("127.0.0.1", 80), "http://127.0.0.1:80");
  EXPECT_EQ(http::url("::1", 8787), "http://[::1]:8787");
  EXPECT_EQ(http::url("[::1]", 8787), "http://[::1]:8787");
  EXPECT_NO_THROW(http::check_host("localhost"));
  EXPECT_NO_THROW(http::check_host("[::1]"));
  EXPECT_THROW(http::check_host("example.com"), std::invalid_argument);
}

}  // namespace
