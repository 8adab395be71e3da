// admit_http (src/common/http/server.hpp), the server admitd and the provider simulator share:
// whole, late (another thread, a timer) and streamed responses, rejects, keep-alive and a
// graceful stop with a response in flight. A raw POSIX socket is the client.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/http/server.hpp"

namespace {

using namespace std::chrono_literals;
namespace http = admit::http;

/// Sends `request` to 127.0.0.1:port and returns everything read until the server closes
/// (at most 10 s).
std::string roundtrip(std::uint16_t port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "<socket failed>";
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

/// Routes: /now (at once), /thread (from another thread), /later (after 100 ms), /stream
/// (three chunks, the second 50 ms late).
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
    if (path == "/thread") {
      std::lock_guard g(mu_);
      threads_.emplace_back([ex, r]() mutable { ex.respond(std::move(r)); });
      return;
    }
    if (path == "/later") {
      return ex.after(100ms, [ex, r]() mutable { ex.respond(std::move(r)); });
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
  const std::string r = roundtrip(
      port_, "POST /now?q=1 HTTP/1.1\r\nHost: x\r\nx-echo: hi\r\nContent-Length: 3\r\n"
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
  const std::string big = roundtrip(
      port_, "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'x'));
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

TEST(HttpStartup, UrlAndHostChecks) {
  EXPECT_EQ(http::url("127.0.0.1", 80), "http://127.0.0.1:80");
  EXPECT_EQ(http::url("::1", 8787), "http://[::1]:8787");
  EXPECT_EQ(http::url("[::1]", 8787), "http://[::1]:8787");
  EXPECT_NO_THROW(http::check_host("localhost"));
  EXPECT_NO_THROW(http::check_host("[::1]"));
  EXPECT_THROW(http::check_host("example.com"), std::invalid_argument);
}

}  // namespace
