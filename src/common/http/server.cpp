#include "common/http/server.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <exception>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "admit/core/error.hpp"
#include "common/http/response_bytes.hpp"
#include "common/log.hpp"

namespace admit::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::chrono::seconds kDrainTimeout{2};  // reading leftovers after an error reply
constexpr std::chrono::milliseconds kShutdownPoll{20};
// After the grace period: how long the connections closed then have to finish closing.
constexpr std::chrono::milliseconds kAbortWait{100};
constexpr std::chrono::milliseconds kAcceptBackoff{50};
// Room in a connection's read buffer beyond header_limit: a chunk-size line or a trailer must
// fit in header_limit + this, or the request gets 431 (Beast keeps either whole in the buffer
// until it ends, with no limit of its own).
constexpr std::size_t kReadSlack = 4096;
// A connection keeps its response buffer for the next response up to this capacity.
constexpr std::size_t kMaxKeptOutput = 64 * 1024;
// The most the read-watch (Exchange::on_close) reads at a time, into the read buffer.
constexpr std::size_t kWatchRead = 1024;

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

// A connection's executor, its concrete type (not any_io_executor): every operation of a
// connection dispatches through it, and the type-erased wrapper would be copied, moved and
// destroyed on each of them.
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = asio::basic_stream_socket<tcp, Strand>;
using Stream = beast::basic_stream<tcp, Strand>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Strand>;

/// A Response as the bytes of an HTTP/1.1 message that closes the connection.
std::string serialize_closing(const Response& r, const std::string& server_name) {
  bhttp::response<bhttp::string_body> m;
  m.version(11);
  m.result(r.status);
  if (!server_name.empty()) m.set(bhttp::field::server, server_name);
  for (const auto& [name, value] : r.headers) m.set(name, value);
  m.body() = r.body;
  m.keep_alive(false);
  m.prepare_payload();
  std::ostringstream out;
  out << m;
  return out.str();
}

/// handler.reject(status, message), or a plain response if it throws (it must not).
Response safe_reject(Handler& handler, unsigned status, std::string_view message) {
  try {
    return handler.reject(status, message);
  } catch (...) {
    Response r;
    r.status = status;
    r.headers.emplace_back("Content-Type", "text/plain");
    r.body = std::string(message) + "\n";
    return r;
  }
}

/// Live connections, so that stop() can close them. Shared by the server and every session,
/// so a session may outlive the server's other members during teardown.
struct Registry {
  std::mutex mu;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, std::weak_ptr<detail::Session>> sessions;

  std::size_t size() {
    std::lock_guard g(mu);
    return sessions.size();
  }
};

asio::ip::address parse_host(const std::string& host) {
  if (host == "localhost") return asio::ip::address_v4::loopback();
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  beast::error_code ec;
  const auto a = asio::ip::make_address(h, ec);
  if (ec) throw std::invalid_argument("invalid host '" + host + "': expected an IP address");
  return a;
}

}  // namespace

std::string_view Request::header(std::string_view name) const noexcept {
  if (fields_ == nullptr) return {};
  const auto& fields = *static_cast<const bhttp::fields*>(fields_);
  const auto it = fields.find(beast::string_view(name.data(), name.size()));
  return it == fields.end() ? std::string_view{} : sv(it->value());
}

void check_host(const std::string& host) { parse_host(host); }

std::size_t raise_fd_limit() noexcept {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return 0;
  if (r.rlim_cur < r.rlim_max) {
    rlimit raised = r;
    raised.rlim_cur = r.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  return r.rlim_cur == RLIM_INFINITY ? static_cast<std::size_t>(-1)
                                     : static_cast<std::size_t>(r.rlim_cur);
}

std::string url(std::string_view host, std::uint16_t port) {
  std::string h(host);
  if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";
  return "http://" + h + ":" + std::to_string(port);
}

namespace detail {

/// One connection: read a request, let the Handler answer it (whole, or chunked, maybe after
/// timers), repeat while keep-alive. Every handler runs on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Socket&& socket, Handler& handler, const ServerOptions& options,
          std::shared_ptr<Registry> registry)
      : stream_(std::move(socket)),
        timer_(stream_.get_executor()),
        handler_(handler),
        options_(options),
        registry_(std::move(registry)) {}

  ~Session() {
    // Destroyed unclosed with a request open (the io_context went away at a stop): the
    // request is lost all the same.
    if (open_) {
      open_ = false;
      fire_close();
    }
    std::lock_guard g(registry_->mu);
    registry_->sessions.erase(id_);
  }

  void start(std::uint64_t id) {
    id_ = id;
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Session::read_header, shared_from_this()));
  }

  /// Closes the connection now if idle, else after the response in flight.
  void shutdown() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      if (!self->busy_) self->close();
    });
  }

  /// Closes the connection now, answered or not (the server's grace period is over).
  void abort() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  /// Runs `f` on this connection's strand (at once if already there).
  template <class F>
  void on_strand(F&& f) {
    asio::dispatch(stream_.get_executor(), std::forward<F>(f));
  }

  // ---- Exchange operations, on the strand

  // A request is answered once: a second respond() or begin_stream() (say, one queued from
  // another thread by a handler that then threw and got its 500) is dropped.
  void respond(Response r) {
    if (!answered_) send(std::move(r), keep_alive_);
  }

  void begin_stream(Response r, Exchange::Continuation next) {
    if (answered_) return;
    note_response(r);
    head_.emplace(static_cast<bhttp::status>(r.status), version_);
    set_headers(*head_, r);
    head_->chunked(true);
    head_->keep_alive(keep_alive_ && !stopping_);
    serializer_.emplace(*head_);
    stream_.expires_after(options_.write_timeout);
    bhttp::async_write_header(
        stream_, *serializer_,
        [self = shared_from_this(), next = std::move(next)](beast::error_code ec, std::size_t) {
          if (ec) return self->close();
          next();
        });
  }

  void write(std::string data, Exchange::Continuation next) {
    chunk_ = std::move(data);
    stream_.expires_after(options_.write_timeout);
    asio::async_write(
        stream_, bhttp::make_chunk(asio::buffer(chunk_)),
        [self = shared_from_this(), next = std::move(next)](beast::error_code ec, std::size_t) {
          if (ec) return self->close();
          next();
        });
  }

  void end() {
    finish_request();
    stream_.expires_after(options_.write_timeout);
    asio::async_write(stream_, bhttp::make_chunk_last(),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        const bool keep = self->head_->keep_alive();
                        self->serializer_.reset();
                        self->head_.reset();
                        self->chunk_.clear();
                        self->done(ec, keep);
                      });
  }

  void after(std::chrono::microseconds delay, Exchange::Continuation next) {
    if (delay.count() <= 0) return next();
    timer_.expires_after(delay);
    timer_.async_wait([self = shared_from_this(), next = std::move(next)](beast::error_code ec) {
      if (ec) return self->close();
      next();
    });
  }

  void on_close(Exchange::Continuation c) {
    if (!c) return;
    if (lost_) return run_close_callback(c);  // closed before the request was answered
    if (!open_) return;                       // answered (or none): it cannot close before
    on_close_.push_back(std::move(c));
    if (!in_handle_) watch();  // else once handle() returns, if it has not answered
  }

 private:
  void read_header() {
    busy_ = false;
    if (stopping_) return close();
    parser_.emplace();
    parser_->body_limit(options_.body_limit);
    parser_->header_limit(static_cast<std::uint32_t>(options_.header_limit));
    stream_.expires_after(options_.idle_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  // curl sends "Expect: 100-continue" before large bodies and waits a second for it.
  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_error(ec);
    busy_ = true;
    started_ = std::chrono::steady_clock::now();
    const auto& req = parser_->get();
    version_ = req.version() == 10 ? 10 : 11;
    if (const auto [status, why] = check_framing(req); status != 0) return refuse(status, why);
    if (parser_->chunked()) {  // see drop_trailer
      header_copy_.emplace(static_cast<const bhttp::fields&>(req));
    }
    if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
      continue_.emplace(bhttp::status::continue_, req.version());
      bhttp::async_write(stream_, *continue_,
                         [self = shared_from_this()](beast::error_code e, std::size_t) {
                           self->continue_.reset();
                           if (e) return self->close();
                           self->read_body();
                         });
      return;
    }
    read_body();
  }

  /// What RFC 9112 requires of a request's Host and framing before its body is read (a
  /// request whose body length is unclear must not be answered and kept alive: its body would
  /// be read as the next request). {0, ""} when it is fine.
  std::pair<unsigned, std::string_view> check_framing(
      const bhttp::request<bhttp::string_body>& req) const {
    const auto hosts = req.count(bhttp::field::host);
    if (hosts > 1) return {400, "more than one Host header"};
    if (hosts == 0 && req.version() >= 11) return {400, "missing Host header"};
    const bool has_te = req.count(bhttp::field::transfer_encoding) > 0;
    if (has_te) {
      if (req.version() < 11) return {400, "Transfer-Encoding in an HTTP/1.0 request"};
      if (!parser_->chunked()) return {400, "Transfer-Encoding must end in chunked"};
      for (const auto& f : req) {
        if (f.name() != bhttp::field::transfer_encoding) continue;
        for (const auto coding : bhttp::token_list(f.value())) {
          if (!beast::iequals(coding, "chunked")) {
            return {501, "transfer coding not implemented (only chunked)"};
          }
        }
      }
      return {0, {}};
    }
    if (!parser_->content_length()) {
      const auto m = req.method();
      if (m == bhttp::verb::post || m == bhttp::verb::put || m == bhttp::verb::patch) {
        return {411, "Content-Length or chunked Transfer-Encoding required"};
      }
    }
    return {0, {}};
  }

  /// Answers `status` through the Handler's reject() and closes the connection.
  void refuse(unsigned status, std::string_view message) {
    send(safe_reject(handler_, status, message), false);
  }

  void read_body() {
    // The body usually came with the header: parse what the buffer holds first, and read
    // only if the request is not complete (an asynchronous read would go through the strand
    // and the timer even with nothing to read).
    if (!parser_->is_done() && buffer_.size() > 0) {
      parser_->eager(true);
      beast::error_code ec;
      while (buffer_.size() > 0 && !parser_->is_done()) {
        const std::size_t used = parser_->put(buffer_.data(), ec);
        buffer_.consume(used);
        if (ec == bhttp::error::need_more) break;
        if (ec) return on_error(ec);
        if (used == 0) break;
      }
    }
    if (parser_->is_done()) return on_read({}, 0);
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_error(ec);
    auto& req = parser_->get();
    drop_trailer(req);
    version_ = req.version() == 10 ? 10 : 11;
    keep_alive_ = req.keep_alive();
    Request r;
    r.method = sv(req.method_string());
    r.target = sv(req.target());
    r.body = req.body();
    r.version = version_;
    r.fields_ = static_cast<const bhttp::fields*>(&req);
    answered_ = false;
    open_ = true;
    in_handle_ = true;
    try {
      handler_.handle(r, Exchange(shared_from_this()));
    } catch (const std::exception& e) {
      handler_failed(e.what());
    } catch (...) {
      handler_failed("unknown exception");
    }
    in_handle_ = false;
    // Answered later, and someone wants to know if the client leaves meanwhile.
    if (open_ && !on_close_.empty()) watch();
  }

  // ---- the read-watch (Exchange::on_close)
  //
  // While a request with on_close callbacks waits for its answer, a read is kept pending on
  // the socket (not through the Beast stream: no timeout applies) into the read buffer, so
  // that a FIN or RST from the client completes it. Bytes it reads belong to a next request
  // (pipelining): they stay in the buffer, where read_header() parses them first. No other
  // read runs meanwhile: done() waits for the watch to end before reading the next request.

  void watch() {
    if (watching_ || closed_ || !open_ || on_close_.empty()) return;
    const std::size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) return;  // full of a next request's bytes: a failed write tells instead
    watching_ = true;
    stream_.socket().async_read_some(
        buffer_.prepare(std::min(room, kWatchRead)),
        beast::bind_front_handler(&Session::on_watch, shared_from_this()));
  }

  void on_watch(beast::error_code ec, std::size_t n) {
    watching_ = false;
    if (n > 0) buffer_.commit(n);
    if (closed_) return;
    // End of stream or a reset, read once: Asio's edge-triggered reactor would not report
    // it again to a next read (it would wait for the idle timeout), so none is made.
    if (ec && ec != asio::error::operation_aborted) peer_closed_ = true;
    if (resume_) {  // done() is waiting for the watch to end (it cancelled it)
      resume_ = false;
      return next_request(resume_keep_alive_);
    }
    if (!open_) return;      // answered: its write is under way and done() goes on
    if (ec) return close();  // end of stream, reset: the client is gone
    watch();                 // a next request's bytes: kept; watch on
  }

  /// The request is answered (respond(), end(), a refusal): its close callbacks go.
  void finish_request() {
    open_ = false;
    if (!on_close_.empty()) on_close_.clear();
  }

  void fire_close() {
    auto callbacks = std::move(on_close_);
    on_close_.clear();
    for (auto& c : callbacks) run_close_callback(c);
  }

  static void run_close_callback(const Exchange::Continuation& c) {
    try {
      c();
    } catch (const std::exception& e) {
      log::json_line(log::Level::error,
                     {{"msg", "an on_close callback threw"}, {"error", printable(e.what())}});
    } catch (...) {
      log::json_line(log::Level::error, {{"msg", "an on_close callback threw"}});
    }
  }

  /// handle() threw: answer 500 if it had not begun answering, else close.
  void handler_failed(std::string_view what) {
    log::json_line(log::Level::error, {{"msg", "request handler threw; closing its connection"},
                                       {"error", printable(what)}});
    if (answered_) return close();
    refuse(500, "internal error");
  }

  /// Trailer fields (after a chunked body) are discarded, as RFC 9110 section 6.5.1 allows:
  /// Beast merges them into the header (each beside the header field of its name), where
  /// they could pose as header fields (a second Host, Connection: keep-alive). The header as
  /// read comes back from the copy taken before the body.
  void drop_trailer(bhttp::request<bhttp::string_body>& req) {
    if (!header_copy_) return;
    if (std::distance(req.begin(), req.end()) !=
        std::distance(header_copy_->begin(), header_copy_->end())) {
      static_cast<bhttp::fields&>(req) = *header_copy_;
    }
    header_copy_.reset();
  }

  /// A read failed: close quietly, or answer a malformed / oversized request and close.
  void on_error(beast::error_code ec) {
    if (!busy_) started_ = std::chrono::steady_clock::now();
    version_ = parser_->get().version() == 10 ? 10 : 11;
    if (ec == bhttp::error::body_limit) return refuse(413, "request body too large");
    if (ec == bhttp::error::header_limit) return refuse(431, "request header too large");
    if (ec == bhttp::error::buffer_overflow) {  // a chunk-size line or trailer over the limit
      return refuse(431, "request chunk header or trailer too large");
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
      return refuse(400, "malformed HTTP request");
    }
    close();  // end of stream, timeout, reset, shutdown
  }

  template <class Message>
  void set_headers(Message& m, const Response& r) {
    if (!options_.name.empty()) m.set(bhttp::field::server, options_.name);
    if (!request_id_.empty()) m.set("X-Request-Id", request_id_);
    for (const auto& [name, value] : r.headers) m.set(name, value);
  }

  /// The request's id: its X-Request-Id when that is 1-128 printable bytes without spaces
  /// (echoed back), else, with the access log on, a new random one (16 hex digits).
  std::string request_id() const {
    const std::string_view given = sv(parser_->get()["X-Request-Id"]);
    if (!given.empty() && given.size() <= 128 &&
        std::all_of(given.begin(), given.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
      return std::string(given);
    }
    if (!options_.access_log) return {};
    thread_local std::mt19937_64 rng{std::random_device{}()};
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
    return buf;
  }

  /// For the access log: what is being answered.
  void note_response(Response& r) {
    busy_ = true;
    answered_ = true;
    request_id_ = request_id();
    if (!options_.access_log) return;
    const auto& req = parser_->get();
    status_ = r.status;
    method_ = std::string(sv(req.method_string()));
    target_ = std::string(sv(req.target()));
    log_fields_ = std::move(r.log_fields);
  }

  void send(Response r, bool keep_alive) {
    finish_request();
    note_response(r);
    const bool keep = keep_alive && !stopping_;
    // HEAD gets the header alone: its body would be read as the next response.
    const bool head = parser_ && parser_->get().method() == bhttp::verb::head;
    format_response(out_, r, ResponseFraming{version_, keep, head, options_.name, request_id_});
    stream_.expires_after(options_.write_timeout);
    asio::async_write(stream_, asio::buffer(out_),
                      [self = shared_from_this(), keep](beast::error_code ec, std::size_t) {
                        if (self->out_.capacity() > kMaxKeptOutput) self->out_ = std::string();
                        self->done(ec, keep);
                      });
  }

  /// A response is written (or failed): read the next request, or close.
  void done(beast::error_code ec, bool keep_alive) {
    if (options_.access_log) log(ec);
    if (ec) return close();
    if (watching_) {  // the read-watch must end first (on_watch resumes here)
      resume_ = true;
      resume_keep_alive_ = keep_alive;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);  // no write is pending now: only the watch
      return;
    }
    next_request(keep_alive);
  }

  void next_request(bool keep_alive) {
    if (peer_closed_) return close();  // the read-watch met the client's end (on_watch)
    if (keep_alive) return read_header();
    drain();  // the client may still be sending (e.g. a body we refused): read before closing
  }

  void log(beast::error_code ec) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - started_)
                        .count();
    boost::json::object o{{"msg", "request"},
                          {"method", printable(method_)},
                          {"path", printable(target_.substr(0, target_.find('?')))},
                          {"status", status_},
                          {"us", us}};
    if (!request_id_.empty()) o["request_id"] = printable(request_id_);
    for (const auto& [k, v] : log_fields_) o[k] = printable(v);
    if (ec) o["error"] = ec.message();
    log::json_line(log::Level::info, o);
  }

  // Half-closes, then reads until the client closes (bounded), so that an error response is
  // not lost to a TCP reset caused by unread request bytes.
  void drain() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kDrainTimeout);  // for the whole drain
    drain_more();
  }
  void drain_more() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->drain_more();
                            });
  }

  void close() {
    closed_ = true;
    beast::error_code ignored;
    timer_.cancel();
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    if (open_) {  // closed before the request was answered
      open_ = false;
      lost_ = true;
      fire_close();
    }
  }

  Stream stream_;
  Timer timer_;  // Exchange::after
  Handler& handler_;
  const ServerOptions& options_;
  std::shared_ptr<Registry> registry_;
  std::uint64_t id_ = 0;
  beast::flat_buffer buffer_{options_.header_limit + kReadSlack};  // its max size
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<bhttp::response<bhttp::empty_body>> continue_;
  std::string out_;  // the bytes of the response being written (kept for the next one)
  std::optional<bhttp::response<bhttp::empty_body>> head_;  // of a stream
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::string chunk_;  // the stream chunk being written
  std::array<char, 4096> scratch_{};
  unsigned version_ = 11;  // of the request being answered
  bool keep_alive_ = false;
  bool busy_ = false;       // between a request's first byte and the end of its response
  bool answered_ = false;   // the Handler began answering the request being handled
  bool open_ = false;       // a request is with the Handler and not answered (respond / end)
  bool in_handle_ = false;  // inside Handler::handle
  bool closed_ = false;     // close() ran
  bool lost_ = false;       // closed while a request was open (late on_close: run at once)
  bool watching_ = false;   // the read-watch is pending
  bool resume_ = false;     // done() waits for the read-watch to end
  bool resume_keep_alive_ = false;
  bool peer_closed_ = false;  // the read-watch read the end of the client's stream
  std::vector<Exchange::Continuation> on_close_;  // of the open request
  std::optional<bhttp::fields> header_copy_;      // chunked requests: the header (drop_trailer)
  bool stopping_ = false;                         // the server is shutting down
  std::chrono::steady_clock::time_point started_{};
  unsigned status_ = 0;  // access log
  std::string method_;
  std::string target_;
  std::string request_id_;  // X-Request-Id of the request being answered
  std::vector<std::pair<std::string, std::string>> log_fields_;
};

}  // namespace detail

// ---- Exchange: each call goes to the connection's strand.

void Exchange::respond(Response response) const {
  session_->on_strand(
      [s = session_, r = std::move(response)]() mutable { s->respond(std::move(r)); });
}

void Exchange::begin_stream(Response head, Continuation next) const {
  session_->on_strand([s = session_, h = std::move(head), n = std::move(next)]() mutable {
    s->begin_stream(std::move(h), std::move(n));
  });
}

void Exchange::write(std::string data, Continuation next) const {
  session_->on_strand([s = session_, d = std::move(data), n = std::move(next)]() mutable {
    s->write(std::move(d), std::move(n));
  });
}

void Exchange::end() const {
  session_->on_strand([s = session_] { s->end(); });
}

void Exchange::after(std::chrono::microseconds delay, Continuation next) const {
  session_->on_strand(
      [s = session_, delay, n = std::move(next)]() mutable { s->after(delay, std::move(n)); });
}

void Exchange::on_close(Continuation c) const {
  session_->on_strand([s = session_, c = std::move(c)]() mutable { s->on_close(std::move(c)); });
}

// ---- Server

// Handlers capture `this`: they run only inside run(), and ~io_context destroys the ones left
// (and with them the sessions) without running them, so no handler outlives the Impl.
struct Server::Impl {
  Impl(Handler& h, ServerOptions o)
      : handler(h),
        options(std::move(o)),
        ioc(options.threads),
        acceptor(asio::make_strand(ioc)),
        signals(acceptor.get_executor()),
        timer(acceptor.get_executor()),
        busy_reply(serialize_closing(safe_reject(h, 503, "too many connections"), options.name)),
        reserve_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
    rlimit nofile{};
    max_connections = options.max_connections;
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
      const auto fds = static_cast<std::size_t>(nofile.rlim_cur);
      // Few descriptors in all (a test's ulimit): half of them.
      const std::size_t room = fds >= 2 * kReservedFds ? fds - kReservedFds : fds / 2;
      max_connections = std::clamp<std::size_t>(room, 1, max_connections);
    }
  }
  ~Impl() {
    if (reserve_fd >= 0) ::close(reserve_fd);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  Handler& handler;
  ServerOptions options;
  asio::io_context ioc;
  tcp::acceptor acceptor;  // on a strand, with signals and timer: stop() runs there
  asio::signal_set signals;
  asio::steady_timer timer;  // accept backoff, then the shutdown poll
  std::shared_ptr<Registry> registry = std::make_shared<Registry>();
  const std::string busy_reply;  // the 503 for a connection over the cap
  int reserve_fd = -1;  // given up to accept (and turn away) a client when descriptors run out
  std::size_t max_connections = 0;
  bool stopping = false;  // on the acceptor's strand
  bool aborted = false;   // past the grace period, the connections left were closed
  std::chrono::steady_clock::time_point stop_deadline{};

  void listen() {
    const tcp::endpoint ep(parse_host(options.host), options.port);
    const std::string where =
        (ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string()) +
        ":" + std::to_string(options.port);
    beast::error_code ec;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw ListenError("cannot listen on " + where + ": " + ec.message());
  }

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, Socket s) {
      if (stopping || !acceptor.is_open()) return;
      if (ec) {
        if (ec == asio::error::no_descriptors || ec.value() == ENFILE) turn_away_pending();
        // Back off briefly instead of spinning while descriptors are short.
        timer.expires_after(kAcceptBackoff);
        timer.async_wait([this](beast::error_code e) {
          if (!e && !stopping) accept();
        });
        return;
      }
      std::uint64_t id = 0;
      std::shared_ptr<detail::Session> session;
      {
        std::lock_guard g(registry->mu);
        if (registry->sessions.size() < max_connections) {
          session = std::make_shared<detail::Session>(std::move(s), handler, options, registry);
          id = registry->next_id++;
          registry->sessions.emplace(id, session);
        }
      }
      if (session) {
        session->start(id);
      } else {
        turn_away(s.native_handle());
      }
      accept();
    });
  }

  /// Writes the 503 to a client without waiting (what its socket buffer takes), reads what
  /// it already sent (so that closing does not reset the connection before the 503 is read)
  /// and lets the caller close it.
  void turn_away(int fd) const {
    (void)::send(fd, busy_reply.data(), busy_reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    std::array<char, 4096> scratch{};
    for (int i = 0; i < 16 && ::recv(fd, scratch.data(), scratch.size(), MSG_DONTWAIT) > 0;) ++i;
  }

  /// Out of file descriptors: frees the reserve one to accept each waiting client in turn and
  /// turn it away with a 503, instead of leaving them all hanging in the backlog.
  void turn_away_pending() {
    if (reserve_fd < 0) return;
    ::close(reserve_fd);
    reserve_fd = -1;
    beast::error_code ignored;
    acceptor.native_non_blocking(true, ignored);  // accept4 below must not wait
    for (int i = 0; i < 256; ++i) {
      const int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) break;
      turn_away(fd);
      ::close(fd);
    }
    reserve_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    log::json_line(log::Level::warn,
                   {{"msg", "out of file descriptors: waiting clients were turned away with 503"},
                    {"connections", registry->size()}});
  }

  // On the acceptor's strand.
  void begin_stop() {
    if (stopping) return;
    stopping = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    signals.cancel(ignored);
    timer.cancel();
    std::vector<std::shared_ptr<detail::Session>> live;
    {
      std::lock_guard g(registry->mu);
      for (auto& [id, w] : registry->sessions) {
        if (auto s = w.lock()) live.push_back(std::move(s));
      }
    }
    for (auto& s : live) s->shutdown();
    stop_deadline = std::chrono::steady_clock::now() + options.shutdown_grace;
    wait_for_sessions();
  }

  // SIGINT / SIGTERM stop; SIGHUP runs on_hangup (or is logged) and the wait goes on.
  void wait_for_signal() {
    signals.async_wait([this](beast::error_code ec, int signo) {
      if (ec) return;
      if (signo != SIGHUP) return begin_stop();
      if (options.on_hangup) {
        try {
          options.on_hangup();
        } catch (const std::exception& e) {
          log::json_line(log::Level::error, {{"msg", "SIGHUP handler threw"}, {"error", e.what()}});
        }
      } else {
        log::json_line(log::Level::info,
                       {{"msg", "SIGHUP received: nothing to reload, still serving"}});
      }
      wait_for_signal();
    });
  }

  /// Runs the io_context on this thread until it stops. An exception from a completion
  /// handler (which must not throw) ends that handler's connection only: the connection's
  /// state went with the handler's captures; it is logged and the loop goes on.
  void run_io() {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        log::json_line(log::Level::error,
                       {{"msg", "exception in a connection handler; that connection was closed"},
                        {"error", printable(e.what())}});
      } catch (...) {
        log::json_line(
            log::Level::error,
            {{"msg", "unknown exception in a connection handler; that connection was closed"}});
      }
    }
  }

  // Polls until every connection is closed; past the grace period, closes those left (their
  // on_close callbacks run on their strands) and stops the io_context a little later.
  void wait_for_sessions() {
    if (registry->size() == 0) return;  // nothing left: run() returns on its own
    if (std::chrono::steady_clock::now() >= stop_deadline) {
      if (aborted) return ioc.stop();
      aborted = true;
      std::vector<std::shared_ptr<detail::Session>> live;
      {
        std::lock_guard g(registry->mu);
        for (auto& [id, w] : registry->sessions) {
          if (auto s = w.lock()) live.push_back(std::move(s));
        }
      }
      for (auto& s : live) s->abort();
      stop_deadline = std::chrono::steady_clock::now() + kAbortWait;
    }
    timer.expires_after(kShutdownPoll);
    timer.async_wait([this](beast::error_code) { wait_for_sessions(); });
  }
};

Server::Server(Handler& handler, ServerOptions options) {
  if (options.threads < 1) throw std::invalid_argument("threads must be >= 1");
  if (options.header_limit < 1024 || options.header_limit > kMaxHeaderLimit) {
    throw std::invalid_argument("header_limit must be 1 KiB to " +
                                std::to_string(kMaxHeaderLimit / 1024) + " KiB");
  }
  if (options.max_connections < 1) throw std::invalid_argument("max_connections must be >= 1");
  impl_ = std::make_unique<Impl>(handler, std::move(options));
  Impl& im = *impl_;
  // Registered here rather than in run(): a signal that arrives in between is queued by Asio
  // and delivered once run() starts.
  if (im.options.handle_signals) {
    im.signals.add(SIGINT);
    im.signals.add(SIGTERM);
    im.signals.add(SIGHUP);
    im.wait_for_signal();
  }
  im.listen();
}

Server::~Server() {
  if (impl_) {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  }
}

std::uint16_t Server::port() const {
  beast::error_code ec;
  const auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? std::uint16_t{0} : ep.port();
}

std::string Server::url() const { return http::url(impl_->options.host, port()); }

std::size_t Server::max_connections() const { return impl_->max_connections; }

std::size_t Server::connections() const { return impl_->registry->size(); }

void Server::run() {
  Impl& im = *impl_;
  im.accept();
  std::vector<std::thread> threads;
  for (int i = 1; i < im.options.threads; ++i) threads.emplace_back([&im] { im.run_io(); });
  im.run_io();
  for (auto& t : threads) t.join();
}

void Server::stop() {
  Impl* im = impl_.get();
  asio::dispatch(im->acceptor.get_executor(), [im] { im->begin_stop(); });
}

}  // namespace admit::http
