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

namespace boost::asio {
class io_context;
}

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
  unsigned version = 11;  ///< 11 for HTTP/1.1, 10 for HTTP/1.0
  /// The server writes an access-log line for this request (ServerOptions::access_log):
  /// Response::log_fields are read only then, so a Handler may skip building them without.
  bool access_log = false;

  /// The value of the header `name` (any case), or "" if absent. With several fields of that
  /// name: the first.
  std::string_view header(std::string_view name) const noexcept;

 private:
  friend class detail::Session;
  // The parsed header, and how to find a field in it: Beast's fields, or the list of a
  // request the server parsed itself (server.cpp, SimpleRequest).
  const void* fields_ = nullptr;
  std::string_view (*find_)(const void* fields, std::string_view name) noexcept = nullptr;
};

/// A response: a status, headers and a body (or, for Exchange::begin_stream, only the first two).
struct Response {
  unsigned status = 200;
  /// Sent in this order, after `Server: <ServerOptions::name>` (and content_type);
  /// Content-Length, chunking and Connection are the server's.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Not sent: more fields of the request's access log line (ServerOptions::access_log), e.g.
  /// the entity and the decision's code.
  std::vector<std::pair<std::string, std::string>> log_fields;
  /// When not empty, sent as `Content-Type` before `headers` (which then should not have
  /// one): a type that costs no string of its own per response. It must outlive the response
  /// (a string literal).
  std::string_view content_type;
  /// More header fields, sent after `headers`, already in their wire form: `Name: value\r\n`
  /// each, written by append_field() (or a writer that checks as it does). One string for
  /// several fields: no string per name and value.
  std::string fields;
};

/// Whether `s` may be a header field's name or value as written: no CR, LF or NUL (which
/// could end the header early: response splitting). A field that fails is not sent.
bool safe_field(std::string_view s) noexcept;

/// Appends `name: value\r\n` to `fields` (Response::fields), or nothing when the name is
/// empty or either is not safe_field().
void append_field(std::string& fields, std::string_view name, std::string_view value);

/// Calls `f(name, value)` for each field of a Response::fields string, in order.
template <class F>
void for_each_field(std::string_view fields, F&& f) {
  while (!fields.empty()) {
    const std::size_t eol = fields.find("\r\n");
    const std::string_view line = fields.substr(0, eol);
    const std::size_t colon = line.find(": ");
    if (colon != std::string_view::npos) f(line.substr(0, colon), line.substr(colon + 2));
    if (eol == std::string_view::npos) break;
    fields.remove_prefix(eol + 2);
  }
}

/// How a Handler answers one request, once: respond(), or begin_stream(), write()... end().
/// Cheap to copy (it shares the connection). Every call runs on the connection's strand: at
/// once when made there (from Handler::handle or a continuation), else queued to it, so it may
/// be made from any thread. If the connection fails or closes meanwhile, continuations are
/// dropped and later calls do nothing (on_close() says when that happens). A second respond()
/// or begin_stream() is dropped.
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

  /// Runs `c` once, on the connection's strand, if the connection closes before the request
  /// is answered (respond(), or end() of a stream): the client closed or reset it, a read or
  /// write failed or timed out, the server stopped (past ServerOptions::shutdown_grace), or
  /// a continuation threw. Registered after such a close: `c` runs at once; after the answer:
  /// dropped. Never runs once the request is answered (the callbacks are then destroyed),
  /// nor for a request answered inside Handler::handle.
  ///
  /// While a request registered here waits for its answer (the Handler works, or a stream
  /// waits for its next chunk), the server reads the connection to notice the client leaving:
  /// end of stream or a reset closes the connection, and `c` runs. A client that half-closes
  /// its side after sending (shutdown(SHUT_WR)) therefore counts as gone, as with most
  /// proxies. Bytes of a next (pipelined) request read meanwhile are kept for it; once they
  /// fill the read buffer (ServerOptions::header_limit + 4 KiB) the server stops reading and
  /// notices a close only when a write fails. A request nobody registered for costs nothing
  /// more (no read until it is answered); one registered costs a read operation.
  ///
  /// `c` must not throw (an exception is logged and dropped). It may hold this Exchange: it
  /// is destroyed when it runs or when the request is answered.
  void on_close(Continuation c) const;

 private:
  friend class detail::Session;
  explicit Exchange(std::shared_ptr<detail::Session> session) : session_(std::move(session)) {}
  std::shared_ptr<detail::Session> session_;
};

/// The routes of a server. Called on the connection's strand; may be called concurrently for
/// different connections (options.threads > 1). Should not throw: if handle() does, the
/// request gets reject(500, ...) (or, if it had begun answering, its connection is closed);
/// an exception from a continuation closes that connection only and is logged.
class Handler {
 public:
  virtual ~Handler() = default;
  /// Answers a complete request through `exchange`, now or later.
  virtual void handle(const Request& request, Exchange exchange) = 0;
  /// The response to a request the server refuses before the Handler sees it, after which the
  /// connection is closed: 400 (malformed, a missing or doubled Host, a Transfer-Encoding that
  /// does not end in chunked), 411 (a POST, PUT or PATCH with neither Content-Length nor
  /// chunking), 413 (body too large), 431 (header or trailer too large), 501 (a transfer
  /// coding other than chunked), 503 (too many connections; written without waiting), or 500
  /// when handle() threw. `message` says which, in plain ASCII. Must not throw.
  virtual Response reject(unsigned status, std::string_view message) = 0;
};

struct ServerOptions {
  std::string host = "127.0.0.1";  ///< an IPv4 or IPv6 address (brackets allowed), or "localhost"
  std::uint16_t port = 0;          ///< 0: any free port (see Server::port())
  int threads = 1;                 ///< io_context threads, >= 1
  std::string name;                ///< the Server header; empty: none
  std::size_t body_limit = 64 * 1024;  ///< larger request bodies get 413
  /// Larger request headers get 431, and so do chunk-size lines and trailers (which the
  /// Handler never sees) larger than this. At most kMaxHeaderLimit.
  std::size_t header_limit = 16 * 1024;
  /// Connections beyond this many get a 503 and are closed at once. It is lowered to what
  /// the process's file-descriptor limit leaves room for (see raise_fd_limit()); >= 1.
  std::size_t max_connections = 10000;
  std::chrono::seconds idle_timeout{30};   ///< to read a request, from the end of the previous one
  std::chrono::seconds write_timeout{30};  ///< for each write (a client that stops reading)
  /// At a stop, responses in flight may finish for this long before every connection is
  /// closed; 0: close them at once.
  std::chrono::seconds shutdown_grace{5};
  bool access_log = false;  ///< one JSON line per response on stderr
  /// Stop on SIGINT / SIGTERM; on SIGHUP call on_hangup (if none: log and go on serving).
  bool handle_signals = true;
  /// Runs on SIGHUP (handle_signals), on an io thread; must not throw or block for long.
  std::function<void()> on_hangup;
};

/// The largest ServerOptions::header_limit: Boost.Beast keeps one header field's value in at
/// most 65535 bytes and throws beyond it.
inline constexpr std::size_t kMaxHeaderLimit = 60 * 1024;

/// File descriptors the server leaves to the rest of the process (stores, logs, files) when
/// it derives the connection cap from RLIMIT_NOFILE.
inline constexpr std::size_t kReservedFds = 32;

/// The address could not be listened on (in use, not local, ...).
class ListenError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Server {
 public:
  /// Binds and listens at once. `handler` must outlive the Server.
  /// @throws ListenError; std::invalid_argument for a bad host, thread count, header limit or
  ///         connection cap.
  Server(Handler& handler, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The connection cap in force: options.max_connections, lowered to fit RLIMIT_NOFILE.
  std::size_t max_connections() const;
  /// Connections open now. Thread-safe.
  std::size_t connections() const;

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

  /// The io_context run() runs, for other work that should run on the server's threads (a
  /// Handler's own I/O: admitd's gateway makes its upstream calls there). Its objects must be
  /// destroyed before the Server, after run() returned.
  boost::asio::io_context& io_context();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Checks a ServerOptions::host. @throws std::invalid_argument if it is not an IP address
/// (IPv6 in brackets or not) or "localhost".
void check_host(const std::string& host);

/// "http://HOST:PORT", with an IPv6 HOST in brackets.
std::string url(std::string_view host, std::uint16_t port);

/// Raises the soft RLIMIT_NOFILE to the hard limit (a server needs a descriptor per client);
/// returns the soft limit in force afterwards.
std::size_t raise_fd_limit() noexcept;

}  // namespace admit::http
