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
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Strand>;

/// A Response as the bytes of an HTTP/1.1 message that closes the connection.
std::string serialize_closing(const Response& r, const std::string& server_name) {
  bhttp::response<bhttp::string_body> m;
  m.version(11);
  m.result(r.status);
  if (!server_name.empty()) m.set(bhttp::field::server, server_name);
  if (!r.content_type.empty()) m.set(bhttp::field::content_type, r.content_type);
  for (const auto& [name, value] : r.headers) m.set(name, value);
  for_each_field(r.fields, [&m](std::string_view name, std::string_view value) {
    m.set(beast::string_view(name.data(), name.size()),
          beast::string_view(value.data(), value.size()));
  });
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

namespace {

constexpr char ascii_lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

/// Equal but for the case of ASCII letters (field names, tokens).
bool iequal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

/// The value of the first field named `name` (any case), or "". A linear scan in the order
/// received, comparing lengths first: a request has a handful of fields, and this is cheaper
/// than Beast's case-insensitive tree (find()), which returns the same (the first of equal names).
std::string_view find_field(const bhttp::fields& fields, std::string_view name) noexcept {
  for (const auto& f : fields) {
    if (iequal(sv(f.name_string()), name)) return sv(f.value());
  }
  return {};
}

std::string_view find_beast_field(const void* fields, std::string_view name) noexcept {
  return find_field(*static_cast<const bhttp::fields*>(fields), name);
}

// ---- requests the server parses itself
//
// Beast's request parser costs more than the rest of the transport together: a parser, a
// message and an allocation per header field and for the body, per request, and a tree for
// the fields. Most requests (a client library's) are a whole request in the read buffer, in a
// plain subset of HTTP/1.1 that Beast would read the same way; parse_simple() reads those
// into one reused buffer and a flat list of fields, and declines anything else, which then
// goes to Beast's parser from its first byte (nothing is consumed before): other versions,
// obs-fold, bytes outside printable ASCII, a header not yet whole, a body not yet whole or
// over the body limit, Transfer-Encoding, Expect, Upgrade, Proxy-Connection, a Connection
// other than one `close` or `keep-alive`, more than one Content-Length or Connection, other
// than one Host, a POST, PUT or PATCH without Content-Length, more than kSimpleFields fields.
// So every check and refusal of the server and of Beast stays Beast's, and what passes here
// is what Beast would pass, with the same method, target, version, fields, body and
// keep-alive.

constexpr std::size_t kSimpleFields = 32;

struct SimpleRequest {
  std::string bytes;  // the request's header and body; every view below points into it
  std::string_view method;
  std::string_view target;
  std::string_view body;
  unsigned version = 11;
  bool keep_alive = true;
  bool head = false;  // method HEAD
  std::size_t count = 0;
  std::array<std::pair<std::string_view, std::string_view>, kSimpleFields> fields;
};

std::string_view find_simple_field(const void* fields, std::string_view name) noexcept {
  const auto& r = *static_cast<const SimpleRequest*>(fields);
  for (std::size_t i = 0; i < r.count; ++i) {
    // The length first, here: most fields differ in length from the name sought.
    if (r.fields[i].first.size() == name.size() && iequal(r.fields[i].first, name)) {
      return r.fields[i].second;
    }
  }
  return {};
}

// Byte classes: kTchar (RFC 9110 tchar: field names, as Beast reads them), kVisible (printable
// ASCII without SP: request targets), kValue (kVisible, SP and HTAB: field values).
enum : unsigned char { kTchar = 1, kVisible = 2, kValue = 4 };
constexpr std::array<unsigned char, 256> kClass = [] {
  std::array<unsigned char, 256> t{};
  for (std::size_t c = 0x21; c < 0x7f; ++c) t[c] = kVisible | kValue;
  t[' '] = t['\t'] = kValue;
  for (std::size_t c = '0'; c <= '9'; ++c) t[c] |= kTchar;
  for (std::size_t c = 'a'; c <= 'z'; ++c) t[c] |= kTchar;
  for (std::size_t c = 'A'; c <= 'Z'; ++c) t[c] |= kTchar;
  for (const char c : std::string_view("!#$%&'*+-.^_`|~"))
    t[static_cast<unsigned char>(c)] |= kTchar;
  return t;
}();

bool is(unsigned char cls, char c) noexcept {
  return (kClass[static_cast<unsigned char>(c)] & cls) != 0;
}

/// Parses the request at the start of `in` into `out` (see above); the bytes it took (header
/// and body), or 0 to leave the request to Beast.
std::size_t parse_simple(std::string_view in, std::size_t header_limit, std::size_t body_limit,
                         SimpleRequest& out) {
  const std::size_t blank = in.substr(0, header_limit).find("\r\n\r\n");
  if (blank == std::string_view::npos) return 0;  // not whole yet, or over the limit
  const char* const begin = in.data();
  const char* const end = begin + blank + 2;  // the blank line that ends the header
  const char* p = begin;
  // request-line = method SP request-target SP HTTP-version CRLF
  while (*p >= 'A' && *p <= 'Z') ++p;
  const std::size_t method_size = static_cast<std::size_t>(p - begin);
  if (method_size == 0 || method_size > 16 || *p != ' ') return 0;
  const char* const target = ++p;
  while (is(kVisible, *p)) ++p;
  if (p == target || *p != ' ') return 0;
  const auto target_size = static_cast<std::size_t>(p - target);
  ++p;
  if (end - p < 10 || std::string_view(p, 7) != "HTTP/1." || (p[7] != '0' && p[7] != '1') ||
      p[8] != '\r' || p[9] != '\n') {
    return 0;
  }
  const unsigned version = p[7] == '1' ? 11 : 10;
  p += 10;
  // field-line = field-name ":" OWS field-value OWS CRLF
  struct Span {
    std::size_t name_at, name_size, value_at, value_size;
  };
  std::array<Span, kSimpleFields> spans;
  std::size_t count = 0;
  std::size_t hosts = 0;
  std::optional<std::uint64_t> length;
  std::string_view connection;
  bool has_connection = false;
  while (p != end) {
    const char* const name = p;
    while (is(kTchar, *p)) ++p;
    if (p == name || *p != ':' || count == kSimpleFields) return 0;
    const std::string_view n(name, static_cast<std::size_t>(p - name));
    ++p;
    while (*p == ' ' || *p == '\t') ++p;
    const char* const value = p;
    while (is(kValue, *p)) ++p;
    if (p[0] != '\r' || p[1] != '\n') return 0;
    const char* value_end = p;
    while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) --value_end;
    p += 2;
    if (p > end || *p == ' ' || *p == '\t') return 0;  // obs-fold (a line that continues)
    const std::string_view v(value, static_cast<std::size_t>(value_end - value));
    switch (n.size()) {  // the names that matter here, by length first
      case 4:
        if (iequal(n, "host")) ++hosts;
        break;
      case 14:
        if (iequal(n, "content-length")) {
          if (length || v.empty() || v.size() > 15) return 0;
          std::uint64_t l = 0;
          for (const char c : v) {
            if (c < '0' || c > '9') return 0;
            l = l * 10 + static_cast<std::uint64_t>(c - '0');
          }
          length = l;
        }
        break;
      case 10:
        if (iequal(n, "connection")) {
          if (has_connection || !(iequal(v, "close") || iequal(v, "keep-alive"))) return 0;
          has_connection = true;
          connection = v;
        }
        break;
      case 6:
      case 7:
      case 16:
      case 17:
        if (iequal(n, "expect") || iequal(n, "upgrade") || iequal(n, "proxy-connection") ||
            iequal(n, "transfer-encoding")) {
          return 0;
        }
        break;
      default:
        break;
    }
    spans[count++] = {static_cast<std::size_t>(name - begin), n.size(),
                      static_cast<std::size_t>(value - begin), v.size()};
  }
  const std::string_view method(begin, method_size);
  if (hosts != 1) return 0;
  if (!length && (method == "POST" || method == "PUT" || method == "PATCH")) return 0;
  const std::uint64_t body_size = length.value_or(0);
  const std::size_t header_size = blank + 4;
  if (body_size > body_limit || body_size > in.size() - header_size) return 0;
  // Taken: the views point into a copy (the read buffer moves as it is read into).
  const std::size_t total = header_size + static_cast<std::size_t>(body_size);
  out.bytes.assign(begin, total);
  const char* const b = out.bytes.data();
  out.method = std::string_view(b, method_size);
  out.target = std::string_view(b + (target - begin), target_size);
  out.body = std::string_view(b + header_size, static_cast<std::size_t>(body_size));
  out.version = version;
  out.head = method == "HEAD";
  // As Beast's message::keep_alive(): HTTP/1.1 unless "close", HTTP/1.0 only with "keep-alive".
  out.keep_alive = version == 11 ? !iequal(connection, "close") : iequal(connection, "keep-alive");
  out.count = count;
  for (std::size_t i = 0; i < count; ++i) {
    out.fields[i] = {std::string_view(b + spans[i].name_at, spans[i].name_size),
                     std::string_view(b + spans[i].value_at, spans[i].value_size)};
  }
  return total;
}

}  // namespace

std::string_view Request::header(std::string_view name) const noexcept {
  return fields_ == nullptr ? std::string_view{} : find_(fields_, name);
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
///
/// The socket is a plain one and the timeouts are one deadline per connection (expire_in):
/// reading a request (header and body) must end within idle_timeout of its start, each
/// asynchronous write within write_timeout, the drain within kDrainTimeout; while the Handler
/// has a request (and between the chunks of a stream) nothing is timed. One timer waits for
/// the deadline and is armed again only when the deadline moves earlier than what it waits
/// for, or when it fires before a deadline that moved on: setting a deadline is a clock read,
/// not a timer operation (Beast's basic_stream armed and cancelled a timer around every read
/// and write, and each cancellation ran a handler).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Socket&& socket, Handler& handler, const ServerOptions& options,
          std::shared_ptr<Registry> registry)
      : socket_(std::move(socket)),
        strand_(socket_.get_executor()),
        deadline_timer_(socket_.get_executor()),
        timer_(socket_.get_executor()),
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
    beast::error_code ignored;
    // For the direct send of a response (write_response); asynchronous operations do not
    // depend on it.
    socket_.non_blocking(true, ignored);
    asio::dispatch(socket_.get_executor(),
                   beast::bind_front_handler(&Session::read_header, shared_from_this()));
  }

  /// Closes the connection now if idle, else after the response in flight.
  void shutdown() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      if (!self->busy_) self->close();
    });
  }

  /// Closes the connection now, answered or not (the server's grace period is over).
  void abort() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  /// Whether the caller runs on this connection's strand.
  bool in_strand() const noexcept { return strand_.running_in_this_thread(); }

  /// Runs `f` on this connection's strand (at once if already there).
  template <class F>
  void on_strand(F&& f) {
    asio::dispatch(socket_.get_executor(), std::forward<F>(f));
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
    expire_in(options_.write_timeout);
    bhttp::async_write_header(
        socket_, *serializer_,
        [self = shared_from_this(), next = std::move(next)](beast::error_code ec, std::size_t) {
          if (ec || self->closed_) return self->close();
          self->no_deadline();  // the next chunk comes when the Handler has it
          next();
        });
  }

  void write(std::string data, Exchange::Continuation next) {
    chunk_ = std::move(data);
    expire_in(options_.write_timeout);
    asio::async_write(
        socket_, bhttp::make_chunk(asio::buffer(chunk_)),
        [self = shared_from_this(), next = std::move(next)](beast::error_code ec, std::size_t) {
          if (ec || self->closed_) return self->close();
          self->no_deadline();
          next();
        });
  }

  void end() {
    finish_request();
    expire_in(options_.write_timeout);
    asio::async_write(socket_, bhttp::make_chunk_last(),
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
  using Clock = std::chrono::steady_clock;

  // ---- timeouts (see the class comment)

  /// The current phase must end within `d` from now.
  void expire_in(Clock::duration d) {
    deadline_ = Clock::now() + d;
    if (deadline_ < armed_for_) arm();
  }

  /// Nothing is timed until the next expire_in (the Handler has the request).
  void no_deadline() { deadline_ = Clock::time_point::max(); }

  /// Makes the timer wait for deadline_ (a wait pending for a later time is cancelled: its
  /// handler sees that armed_for_ changed and does nothing).
  void arm() {
    if (closed_) return;
    armed_for_ = deadline_;
    deadline_timer_.expires_at(deadline_);
    // A weak reference: a pending wait does not keep a finished connection alive.
    deadline_timer_.async_wait([weak = weak_from_this(), at = deadline_](beast::error_code) {
      if (auto self = weak.lock()) self->on_deadline(at);
    });
  }

  void on_deadline(Clock::time_point at) {
    if (at != armed_for_ || closed_) return;  // a wait replaced by a later arm(), or closed
    armed_for_ = Clock::time_point::max();
    if (deadline_ == Clock::time_point::max()) return;  // nothing timed now
    if (Clock::now() < deadline_) return arm();         // the deadline moved on
    timed_out_ = true;
    close();  // the pending read or write fails (operation_aborted)
  }

  // ---- reading a request: parse_simple(), else Beast's parser fed by this loop (that of
  // http::async_read, without its composed operations)

  void read_header() {
    busy_ = false;
    if (stopping_) return close();
    parser_.reset();  // parse() starts Beast's parser for a request parse_simple() declines
    simple_used_ = false;
    header_done_ = false;
    expire_in(options_.idle_timeout);
    // From a handler of its own, queued behind the completions already waiting: bytes of a
    // next (pipelined) request are parsed there (so that a run of them is a loop, not a
    // recursion), and an empty buffer is read there. Reading at once, just after the
    // response was sent, would nearly always find nothing yet under load: Asio tries a read
    // before it waits for the socket, and that read would be one wasted system call per
    // request (the client has not even received the response).
    asio::post(socket_.get_executor(),
               beast::bind_front_handler(&Session::parse, shared_from_this()));
  }

  /// Feeds the parser what the buffer holds; reads more when it needs more. The first bytes
  /// of a request go to parse_simple(); if it declines, to Beast's parser.
  void parse() {
    if (closed_) return;
    if (!parser_) {
      if (buffer_.size() == 0) return read_more();
      const auto data = buffer_.data();
      const std::string_view in(static_cast<const char*>(data.data()), data.size());
      if (const std::size_t n =
              parse_simple(in, options_.header_limit, options_.body_limit, simple_)) {
        buffer_.consume(n);
        simple_used_ = true;
        busy_ = true;
        if (options_.access_log) started_ = Clock::now();
        return on_read();
      }
      parser_.emplace();
      parser_->body_limit(options_.body_limit);
      parser_->header_limit(static_cast<std::uint32_t>(options_.header_limit));
    }
    for (;;) {
      if (buffer_.size() == 0) return read_more();
      beast::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec && ec != bhttp::error::need_more) return on_error(ec);
      if (!header_done_ && parser_->is_header_done()) {
        header_done_ = true;
        if (!on_header()) return;  // refused, or a 100 Continue is being written
      }
      if (parser_->is_done()) return on_read();
      if (ec || used == 0) return read_more();  // need_more
    }
  }

  void read_more() {
    const std::size_t size = beast::read_size(buffer_, 65536);
    if (size == 0) return on_error(bhttp::error::buffer_overflow);  // a full buffer
    socket_.async_read_some(buffer_.prepare(size),
                            beast::bind_front_handler(&Session::on_bytes, shared_from_this()));
  }

  void on_bytes(beast::error_code ec, std::size_t n) {
    if (closed_) return;  // timed out, or the server closed it
    buffer_.commit(n);
    if (ec == asio::error::eof) {
      // As Beast's reader: the end of the stream ends a message only where a message may end
      // there (never inside a request); before any byte of one it is end_of_stream. (Without
      // a parser, no byte of the request came: parse() starts one for the first bytes.)
      if (!parser_ || !parser_->got_some()) return on_error(bhttp::error::end_of_stream);
      beast::error_code e;
      parser_->put_eof(e);
      if (e) return on_error(e);
      if (!parser_->is_done()) return on_error(bhttp::error::partial_message);
      return parse();
    }
    if (ec) return on_error(ec);
    parse();
  }

  /// The header is read: checks it (false: refused) and answers `Expect: 100-continue`
  /// (false: parse() resumes once the 100 is written). curl sends "Expect: 100-continue"
  /// before large bodies and waits a second for it.
  bool on_header() {
    busy_ = true;
    if (options_.access_log) started_ = Clock::now();
    const auto& req = parser_->get();
    version_ = req.version() == 10 ? 10 : 11;
    std::string_view expect;
    if (const auto [status, why] = check_framing(req, expect); status != 0) {
      refuse(status, why);
      return false;
    }
    if (parser_->chunked()) {  // see drop_trailer
      header_copy_.emplace(static_cast<const bhttp::fields&>(req));
    }
    parser_->eager(true);  // the body: as much as each read brings
    if (beast::iequals(beast::string_view(expect.data(), expect.size()), "100-continue")) {
      static constexpr std::string_view k10 = "HTTP/1.0 100 Continue\r\n\r\n";
      static constexpr std::string_view k11 = "HTTP/1.1 100 Continue\r\n\r\n";
      const std::string_view line = req.version() == 10 ? k10 : k11;
      asio::async_write(socket_, asio::buffer(line.data(), line.size()),
                        [self = shared_from_this()](beast::error_code e, std::size_t) {
                          if (e || self->closed_) return self->close();
                          self->parse();
                        });
      return false;
    }
    return true;
  }

  /// What RFC 9112 requires of a request's Host and framing before its body is read (a
  /// request whose body length is unclear must not be answered and kept alive: its body would
  /// be read as the next request). {0, ""} when it is fine. One pass over the fields, which
  /// also finds `expect` (the value of an Expect field).
  std::pair<unsigned, std::string_view> check_framing(const bhttp::request<bhttp::string_body>& req,
                                                      std::string_view& expect) const {
    unsigned hosts = 0;
    bool has_te = false;
    bool only_chunked = true;  // every coding of every Transfer-Encoding field is chunked
    for (const auto& f : req) {
      switch (f.name()) {
        case bhttp::field::host:
          ++hosts;
          break;
        case bhttp::field::transfer_encoding:
          has_te = true;
          for (const auto coding : bhttp::token_list(f.value())) {
            only_chunked = only_chunked && beast::iequals(coding, "chunked");
          }
          break;
        case bhttp::field::expect:
          if (expect.empty()) expect = sv(f.value());
          break;
        default:
          break;
      }
    }
    if (hosts > 1) return {400, "more than one Host header"};
    if (hosts == 0 && req.version() >= 11) return {400, "missing Host header"};
    if (has_te) {
      if (req.version() < 11) return {400, "Transfer-Encoding in an HTTP/1.0 request"};
      if (!parser_->chunked()) return {400, "Transfer-Encoding must end in chunked"};
      if (!only_chunked) return {501, "transfer coding not implemented (only chunked)"};
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

  /// The request is complete: the Handler has it (untimed) until it answers.
  void on_read() {
    no_deadline();
    Request r;
    if (simple_used_) {
      version_ = simple_.version;
      keep_alive_ = simple_.keep_alive;
      r.method = simple_.method;
      r.target = simple_.target;
      r.body = simple_.body;
      r.fields_ = &simple_;
      r.find_ = &find_simple_field;
    } else {
      auto& req = parser_->get();
      drop_trailer(req);
      version_ = req.version() == 10 ? 10 : 11;
      keep_alive_ = req.keep_alive();
      r.method = sv(req.method_string());
      r.target = sv(req.target());
      r.body = req.body();
      r.fields_ = static_cast<const bhttp::fields*>(&req);
      r.find_ = &find_beast_field;
    }
    r.version = version_;
    r.access_log = options_.access_log;
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
    if (next_after_handle_) {  // answered and written inside handle() (done())
      next_after_handle_ = false;
      return next_request(next_keep_alive_);
    }
    // Answered later, and someone wants to know if the client leaves meanwhile.
    if (open_ && !on_close_.empty()) watch();
  }

  // ---- the read-watch (Exchange::on_close)
  //
  // While a request with on_close callbacks waits for its answer, a read is kept pending on
  // the socket (untimed) into the read buffer, so that a FIN or RST from the client completes
  // it. Bytes it reads belong to a next request (pipelining): they stay in the buffer, where
  // read_header() parses them first. No other read runs meanwhile: done() waits for the watch
  // to end before reading the next request.

  void watch() {
    if (watching_ || closed_ || !open_ || on_close_.empty()) return;
    const std::size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) return;  // full of a next request's bytes: a failed write tells instead
    watching_ = true;
    socket_.async_read_some(buffer_.prepare(std::min(room, kWatchRead)),
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
    if (!busy_ && options_.access_log) started_ = Clock::now();
    if (parser_) version_ = parser_->get().version() == 10 ? 10 : 11;
    if (ec == bhttp::error::body_limit) return refuse(413, "request body too large");
    if (ec == bhttp::error::header_limit) return refuse(431, "request header too large");
    if (ec == bhttp::error::buffer_overflow) {  // a chunk-size line or trailer over the limit
      return refuse(431, "request chunk header or trailer too large");
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
      return refuse(400, "malformed HTTP request");
    }
    close();  // end of stream, reset, shutdown
  }

  template <class Message>
  void set_headers(Message& m, const Response& r) {
    if (!options_.name.empty()) m.set(bhttp::field::server, options_.name);
    if (!request_id_.empty()) m.set("X-Request-Id", request_id_);
    if (!r.content_type.empty()) m.set(bhttp::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) m.set(name, value);
    for_each_field(r.fields, [&m](std::string_view name, std::string_view value) {
      m.set(beast::string_view(name.data(), name.size()),
            beast::string_view(value.data(), value.size()));
    });
  }

  /// A field of the request being answered (as Request::header), or "".
  std::string_view request_header(std::string_view name) const {
    if (simple_used_) return find_simple_field(&simple_, name);
    return parser_ ? find_field(parser_->get(), name) : std::string_view{};
  }

  /// The request's id: its X-Request-Id when that is 1-128 printable bytes without spaces
  /// (echoed back), else, with the access log on, a new random one (16 hex digits).
  void take_request_id() {
    const std::string_view given = request_header("X-Request-Id");
    if (!given.empty() && given.size() <= 128 &&
        std::all_of(given.begin(), given.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
      request_id_.assign(given);
      return;
    }
    request_id_.clear();
    if (!options_.access_log) return;
    thread_local std::mt19937_64 rng{std::random_device{}()};
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
    request_id_.assign(buf, 16);
  }

  /// For the access log: what is being answered.
  void note_response(Response& r) {
    busy_ = true;
    answered_ = true;
    take_request_id();
    if (!options_.access_log) return;
    status_ = r.status;
    if (simple_used_) {
      method_.assign(simple_.method);
      target_.assign(simple_.target);
    } else if (parser_) {
      method_.assign(sv(parser_->get().method_string()));
      target_.assign(sv(parser_->get().target()));
    }
    log_fields_ = std::move(r.log_fields);
  }

  void send(Response r, bool keep_alive) {
    finish_request();
    note_response(r);
    const bool keep = keep_alive && !stopping_;
    // HEAD gets the header alone: its body would be read as the next response.
    const bool head =
        simple_used_ ? simple_.head : parser_ && parser_->get().method() == bhttp::verb::head;
    format_response(out_, r, ResponseFraming{version_, keep, head, options_.name, request_id_});
    write_response(keep);
  }

  /// Writes out_: first with one non-blocking send, which takes a whole response when the
  /// socket's buffer has room (the usual case: then no asynchronous operation, no completion
  /// to queue and run), then what is left asynchronously under the write timeout.
  void write_response(bool keep) {
    beast::error_code ec;
    const std::size_t n = socket_.write_some(asio::buffer(out_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
    if (ec || n == out_.size()) return written(ec, keep);
    expire_in(options_.write_timeout);
    asio::async_write(socket_, asio::buffer(out_.data() + n, out_.size() - n),
                      [self = shared_from_this(), keep](beast::error_code e, std::size_t) {
                        self->written(e, keep);
                      });
  }

  void written(beast::error_code ec, bool keep) {
    if (out_.capacity() > kMaxKeptOutput) out_ = std::string();
    done(ec, keep);
  }

  /// A response is written (or failed): read the next request, or close.
  void done(beast::error_code ec, bool keep_alive) {
    if (timed_out_) ec = beast::error::timeout;
    if (options_.access_log) log(ec);
    if (ec || closed_) return close();
    if (in_handle_) {  // written from inside handle(): on_read() goes on once it returns
      next_after_handle_ = true;
      next_keep_alive_ = keep_alive;
      return;
    }
    if (watching_) {  // the read-watch must end first (on_watch resumes here)
      resume_ = true;
      resume_keep_alive_ = keep_alive;
      beast::error_code ignored;
      socket_.cancel(ignored);  // no write is pending now: only the watch
      return;
    }
    next_request(keep_alive);
  }

  void next_request(bool keep_alive) {
    if (closed_) return;
    if (peer_closed_) return close();  // the read-watch met the client's end (on_watch)
    if (keep_alive) return read_header();
    drain();  // the client may still be sending (e.g. a body we refused): read before closing
  }

  void log(beast::error_code ec) {
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_).count();
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
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    expire_in(kDrainTimeout);  // for the whole drain
    drain_more();
  }
  void drain_more() {
    socket_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec || self->closed_) return self->close();
                              self->drain_more();
                            });
  }

  void close() {
    if (!closed_) {
      closed_ = true;
      timer_.cancel();
      deadline_timer_.cancel();
      armed_for_ = Clock::time_point::max();
      beast::error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_both, ignored);
      socket_.close(ignored);
    }
    if (open_) {  // closed before the request was answered
      open_ = false;
      lost_ = true;
      fire_close();
    }
  }

  Socket socket_;
  const Strand strand_;                                     // socket_'s executor (in_strand)
  Timer deadline_timer_;                                    // the timeouts (expire_in)
  Timer timer_;                                             // Exchange::after
  Clock::time_point deadline_ = Clock::time_point::max();   // of the current phase
  Clock::time_point armed_for_ = Clock::time_point::max();  // deadline_timer_'s wait; max: none
  Handler& handler_;
  const ServerOptions& options_;
  std::shared_ptr<Registry> registry_;
  std::uint64_t id_ = 0;
  beast::flat_buffer buffer_{options_.header_limit + kReadSlack};    // its max size
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;  // none: not started
  SimpleRequest simple_;      // the request parse_simple() read (the buffers are reused)
  bool simple_used_ = false;  // the request being handled is simple_, not parser_'s
  std::string out_;           // the bytes of the response being written (kept for the next one)
  std::optional<bhttp::response<bhttp::empty_body>> head_;  // of a stream
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::string chunk_;  // the stream chunk being written
  std::array<char, 4096> scratch_{};
  unsigned version_ = 11;  // of the request being answered
  bool keep_alive_ = false;
  bool header_done_ = false;  // parse(): the request's header was checked (on_header)
  bool busy_ = false;         // between a request's first byte and the end of its response
  bool answered_ = false;     // the Handler began answering the request being handled
  bool open_ = false;         // a request is with the Handler and not answered (respond / end)
  bool in_handle_ = false;    // inside Handler::handle
  bool next_after_handle_ = false;  // done() inside handle(): on_read() reads the next request
  bool next_keep_alive_ = false;
  bool closed_ = false;     // close() ran
  bool timed_out_ = false;  // closed by the deadline
  bool lost_ = false;       // closed while a request was open (late on_close: run at once)
  bool watching_ = false;   // the read-watch is pending
  bool resume_ = false;     // done() waits for the read-watch to end
  bool resume_keep_alive_ = false;
  bool peer_closed_ = false;  // the read-watch read the end of the client's stream
  std::vector<Exchange::Continuation> on_close_;  // of the open request
  std::optional<bhttp::fields> header_copy_;      // chunked requests: the header (drop_trailer)
  bool stopping_ = false;                         // the server is shutting down
  Clock::time_point started_{};                   // access log
  unsigned status_ = 0;                           // access log
  std::string method_;
  std::string target_;
  std::string request_id_;  // X-Request-Id of the request being answered
  std::vector<std::pair<std::string, std::string>> log_fields_;
};

}  // namespace detail

// ---- Exchange: each call goes to the connection's strand.

void Exchange::respond(Response response) const {
  // Already on the strand (from Handler::handle, or a continuation): at once, without moving
  // the response into a handler and out again.
  if (session_->in_strand()) return session_->respond(std::move(response));
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
    // Nothing left: run() returns (stopped rather than run out of work, which other work on
    // the io_context, io_context(), would put off).
    if (registry->size() == 0) return ioc.stop();
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

boost::asio::io_context& Server::io_context() { return impl_->ioc; }

void Server::stop() {
  Impl* im = impl_.get();
  asio::dispatch(im->acceptor.get_executor(), [im] { im->begin_stop(); });
}

}  // namespace admit::http
