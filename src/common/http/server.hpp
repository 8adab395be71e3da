// admit_http: the HTTP/1.1 server that admitd and admit-provider-sim share (Boost.Beast over
// Asio, none of which shows here). It owns the transport: listening, accepting, keep-alive,
// the body and header limits, `Expect: 100-continue`, idle and write timeouts, N io threads,
// and a graceful stop on SIGINT / SIGTERM or stop(). A Handler owns the routes: it answers
// each request through an Exchange, at once or later (timers), whole or as chunks (SSE).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace admit::http {

namespace detail {
class Session;
}

/// A request as read. The views stay valid until the request is answered.
class Request {
 public:
  std::string_view method;
  std::string_view target;  ///< as sent: the path and any query string
  std::string_view body;
  unsigned version = 11;    ///< 11 for HTTP/1.1, 10 for HTTP/1.0

  /// The value of the header `name` (any case), or "" if absent.
  std::string_view header(std::string_view name) const noexcept;

 private:
  friend class detail::Session;
  const void* fields_ = nullptr;  // the parsed header (boost::beast::http::fields)
};

/// A response: a status, headers and a body (or, for Exchange::begin_stream, only the first two).
struct Response {
  unsigned status = 200;
  /// Sent in this order, after `Server: <ServerOptions::name>`; Content-Length, chunking and
  /// Connection are the server's.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

/// How a Handler answers one request, once: respond(), or begin_stream(), write()... end().
/// Cheap to copy (it shares the connection). Every call runs on the connection's strand: at
/// once when made there (from Handler::handle or a continuation), else queued to it, so it may
/// be made from any thread. If the connection fails or closes meanwhile, continuations are
/// dropped and later calls do nothing.
class Exchange {
 public:
  using Continuation = std::function<void()>;

  /// Sends `response` whole (with Content-Length).
  void respond(Response response) const;

  /// Starts a chunked response: `head`'s status and headers, its body ignored. Then `next`
  /// runs; write() chunks and end() the stream. HTTP/1.1 requests only (Request::version).
  void begin_stream(Response head, Continuation next) const;
  /// Writes one chunk of a stream; `next` runs once it is written.
  void write(std::string data, Continuation next) const;
  /// Ends the stream: the request is answered.
  void end() const;

  /// Runs `next` after `delay` on an Asio timer (no thread waits). 0 or less: at once.
  void after(std::chrono::microseconds delay, Continuation next) const;

 private:
  friend class detail::Session;
  explicit Exchange(std::shared_ptr<detail::Session> session) : session_(std::move(session)) {}
  std::shared_ptr<detail::Session> session_;
};

/// The routes of a server. Called on the connection's strand; may be called concurrently for
/// different connections (options.threads > 1). Must not throw.
class Handler {
 public:
  virtual ~Handler() = default;
  /// Answers a complete request through `exchange`, now or later.
  virtual void handle(const Request& request, Exchange exchange) = 0;
  /// The response to a request that could not be read, after which the connection is closed:
  /// 400 "malformed HTTP request", 413 "request body too large" or 431 "request header too
  /// large".
  virtual Response reject(unsigned status, std::string_view message) = 0;
};

struct ServerOptions {
  std::string host = "127.0.0.1";  ///< an IPv4 or IPv6 address (brackets allowed), or "localhost"
  std::uint16_t port = 0;          ///< 0: any free port (see Server::port())
  int threads = 1;                 ///< io_context threads, >= 1
  std::string name;                ///< the Server header; empty: none
  std::size_t body_limit = 64 * 1024;     ///< larger request bodies get 413
  std::size_t header_limit = 16 * 1024;   ///< larger request headers get 431
  std::chrono::seconds idle_timeout{30};  ///< to read a request, from the end of the previous one
  std::chrono::seconds write_timeout{30};  ///< for each write (a client that stops reading)
  /// At a stop, responses in flight may finish for this long before every connection is
  /// closed; 0: close them at once.
  std::chrono::seconds shutdown_grace{5};
  bool access_log = false;     ///< one JSON line per response on stderr
  bool handle_signals = true;  ///< stop on SIGINT / SIGTERM
};

/// The address could not be listened on (in use, not local, ...).
class ListenError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Server {
 public:
  /// Binds and listens at once. `handler` must outlive the Server.
  /// @throws ListenError; std::invalid_argument for a bad host or thread count.
  Server(Handler& handler, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound port (useful with port 0).
  std::uint16_t port() const;
  /// "http://HOST:PORT" with the bound port (an IPv6 host in brackets).
  std::string url() const;

  /// Serves on options.threads threads (the caller's included) until stop() or a signal; then
  /// stops accepting, closes idle connections, lets responses in flight finish for at most
  /// options.shutdown_grace and closes the rest.
  void run();
  /// Thread-safe; may be called before or during run() (not after the Server is destroyed).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Checks a ServerOptions::host. @throws std::invalid_argument if it is not an IP address
/// (IPv6 in brackets or not) or "localhost".
void check_host(const std::string& host);

/// "http://HOST:PORT", with an IPv6 HOST in brackets.
std::string url(std::string_view host, std::uint16_t port);

}  // namespace admit::http
