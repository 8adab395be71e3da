// The HTTP/1.1 client of client.hpp. A ClientConn is one connection: its strand runs every
// step of the call it carries (resolve, connect, TLS, write, read) and that call's handlers.
// A Call::State is one call; it moves to a fresh ClientConn at most once (the retry). The
// Client::Impl owns the TLS context, the pool and the set of live calls, and the io_context
// unless it was given one; connections and calls share it (they may outlive the Client on a
// given io_context).
#include "common/http/client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cerrno>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace admit::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace detail {
class ClientConn;
}

namespace {

constexpr std::size_t kBodyPiece = 64 * 1024;  // the most one on_data carries
constexpr std::size_t kReadSlack = 64 * 1024;  // read buffer room beyond header_limit
constexpr int kMaxInterim = 16;                // 1xx responses skipped before giving up

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) { return beast::iequals(a, b); }

// The peer went away: the connection is dead, nothing wrong was received.
bool closed_by_peer(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::ssl::error::stream_truncated ||
         ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message;
}

// "/CN=api.example.com" of a certificate, for messages.
std::string subject_of(X509* cert) {
  if (cert == nullptr) return "(none)";
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  return buf;
}

std::string host_port(const Origin& o) {
  const bool v6 = o.host.find(':') != std::string::npos;
  return (v6 ? "[" + o.host + "]" : o.host) + ":" + std::to_string(o.port);
}

std::string pool_key(const Origin& o) { return (o.tls ? "https://" : "http://") + host_port(o); }

}  // namespace

// ---------------------------------------------------------------------------- base URLs

Origin parse_base_url(std::string_view url) {
  const auto bad = [&](std::string_view why) {
    return std::invalid_argument("bad upstream base URL \"" + std::string(url) +
                                 "\": " + std::string(why));
  };
  const auto r = boost::urls::parse_absolute_uri(url);
  if (!r) throw bad("not an absolute URL (" + r.error().message() + ")");
  const boost::urls::url_view& u = *r;
  Origin o;
  if (u.scheme_id() == boost::urls::scheme::https) {
    o.tls = true;
  } else if (u.scheme_id() != boost::urls::scheme::http) {
    throw bad("the scheme must be http or https");
  }
  if (!u.has_authority() || u.encoded_host().empty()) throw bad("no host");
  if (u.has_userinfo()) throw bad("user info is not allowed");
  if (u.has_query()) throw bad("a query is not allowed");
  switch (u.host_type()) {
    case boost::urls::host_type::name:
      for (char c : u.encoded_host()) {
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_')) {
          throw bad("the host name has a character other than letters, digits, '-', '.', '_'");
        }
      }
      o.host = std::string(u.encoded_host());
      break;
    case boost::urls::host_type::ipv4:
      o.host = u.host_ipv4_address().to_string();
      break;
    case boost::urls::host_type::ipv6:
      o.host = u.host_ipv6_address().to_string();
      break;
    default:
      throw bad("unsupported host");
  }
  if (u.has_port()) {
    if (u.port().empty() || u.port_number() == 0) throw bad("the port must be 1 to 65535");
    o.port = u.port_number();
  } else {
    o.port = o.tls ? 443 : 80;
  }
  o.base_path = std::string(u.encoded_path());
  while (!o.base_path.empty() && o.base_path.back() == '/') o.base_path.pop_back();
  return o;
}

std::string join_target(const Origin& origin, std::string_view path_and_query) {
  if (path_and_query.empty() || path_and_query.front() != '/') {
    throw std::invalid_argument("a request path must start with '/': \"" +
                                std::string(path_and_query) + "\"");
  }
  return origin.base_path + std::string(path_and_query);
}

// ---------------------------------------------------------------------------- declarations

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
  Impl(ClientOptions options, asio::io_context* external);

  // The pool (any thread). checkout: a pooled connection to `key` that looks alive, or null.
  std::shared_ptr<detail::ClientConn> checkout(const std::string& key);
  // On the connection's strand: pools it (true) or refuses (closing, full).
  bool checkin(const std::shared_ptr<detail::ClientConn>& conn);
  void idle_expired(const std::shared_ptr<detail::ClientConn>& conn, std::uint64_t epoch);
  // Hands `state` to `conn` (any thread) unless it was cancelled meanwhile.
  void dispatch(const std::shared_ptr<Call::State>& state,
                const std::shared_ptr<detail::ClientConn>& conn);
  void forget(Call::State* state);

  const ClientOptions o;
  std::optional<asio::io_context> own_io;  // without an io_context given
  asio::io_context& io;
  asio::ssl::context tls{asio::ssl::context::tls_client};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<bool> closing{false};

  std::mutex pool_mu;
  std::unordered_map<std::string, std::vector<std::shared_ptr<detail::ClientConn>>> pool;
  std::size_t idle_now = 0;  // guarded by pool_mu

  std::mutex calls_mu;
  std::unordered_map<Call::State*, std::weak_ptr<Call::State>> calls;

  std::atomic<std::uint64_t> opened{0}, reused{0}, retried{0};
  std::atomic<std::size_t> open_now{0};
};

struct Call::State : std::enable_shared_from_this<Call::State> {
  std::shared_ptr<Client::Impl> client;
  CallHandlers handlers;
  bhttp::request<bhttp::string_body> message;
  bool head = false;  // a HEAD request: the response has no body

  // Any thread, under mu.
  void cancel();
  void resume(std::uint64_t seq);
  // Ends the call (once): on_done(error), on whatever io thread calls it.
  void complete(std::string error);

  std::mutex mu;
  bool done = false;
  bool cancel_requested = false;
  std::shared_ptr<detail::ClientConn> conn;  // while not done

  // On the current connection's strand only.
  bool retried = false;
  bool waiting = false;  // for resume(resume_seq)
  std::uint64_t resume_seq = 0;
};

namespace detail {

class ClientConn : public std::enable_shared_from_this<ClientConn> {
 public:
  ClientConn(Client::Impl& client, Origin origin, std::string key)
      : client_(client),
        keep_(client.shared_from_this()),
        origin_(std::move(origin)),
        key_(std::move(key)),
        strand_(asio::make_strand(client.io)),
        resolver_(strand_),
        connect_timer_(strand_),
        idle_timer_(strand_),
        buf_(client.o.header_limit + kReadSlack) {
    if (origin_.tls) {
      tls_.emplace(strand_, client.tls);
    } else {
      tcp_.emplace(strand_);
    }
  }
  ~ClientConn() {
    if (counted_) --client_.open_now;
  }
  ClientConn(const ClientConn&) = delete;
  ClientConn& operator=(const ClientConn&) = delete;

  const std::string& key() const { return key_; }
  const asio::strand<asio::io_context::executor_type>& strand() const { return strand_; }

  /// Any thread, while the connection sits in no one's hands (just taken from the pool): false
  /// if the peer closed it or sent something unasked.
  bool looks_idle() {
    char c;
    const auto n = ::recv(lowest().socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  // The rest runs on the strand.

  void start(std::shared_ptr<Call::State> st) {
    active_ = std::move(st);  // a pending idle timer stays: it finds the connection busy
    if (established_) {
      ++client_.reused;
      send();
    } else {
      connect();
    }
  }

  void cancel(const std::shared_ptr<Call::State>& st) {
    if (st == active_) finish(false, "cancelled");
  }

  void resume(const std::shared_ptr<Call::State>& st, std::uint64_t seq) {
    if (st != active_ || !st->waiting || st->resume_seq != seq) return;
    st->waiting = false;
    if (parser_->is_done()) return complete_ok();
    read_body();
  }

  /// Closes the connection (idempotent); pending operations end with operation_aborted.
  void close() {
    if (closed_) return;
    closed_ = true;
    resolver_.cancel();
    connect_timer_.cancel();
    idle_timer_.cancel();
    lowest().close();
    if (counted_) {
      counted_ = false;
      --client_.open_now;
    }
  }

  /// Pooled as `epoch` (on the strand). The idle timer is armed once, not at every checkin:
  /// when it fires it closes the connection if it has been idle idle_timeout since its last
  /// checkin, else waits for the rest of that time (or, the connection busy, for the next
  /// checkin to arm it again). Taking a pooled connection and putting it back costs no timer
  /// operation.
  void pooled_at(std::uint64_t epoch) {
    idle_since_ = std::chrono::steady_clock::now();
    idle_epoch_ = epoch;
    if (!idle_armed_) arm_idle_timer(idle_since_ + client_.o.idle_timeout);
  }

  void arm_idle_timer(std::chrono::steady_clock::time_point at) {
    idle_armed_ = true;
    idle_timer_.expires_at(at);
    idle_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      self->idle_armed_ = false;
      if (ec || self->closed_ || self->active_) return;
      const auto due = self->idle_since_ + self->client_.o.idle_timeout;
      if (std::chrono::steady_clock::now() < due) return self->arm_idle_timer(due);
      // Taken from the pool meanwhile (and not yet started): idle_expired sees the epoch
      // moved on and leaves it, and its next checkin arms the timer again.
      self->client_.idle_expired(self, self->idle_epoch_);
    });
  }

  // Guarded by the client's pool_mu.
  bool pooled = false;
  std::uint64_t pool_epoch = 0;

 private:
  beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *tcp_; }

  template <class F>
  void with_stream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(*tcp_);
    }
  }

  // ---- connecting: resolve, connect, TLS handshake, all within connect_timeout

  void connect() {
    auto self = shared_from_this();
    connect_timer_.expires_after(client_.o.connect_timeout);
    connect_timer_.async_wait([self](const error_code& ec) {
      if (ec || self->established_ || self->closed_) return;
      self->connect_timed_out_ = true;
      self->resolver_.cancel();
      self->lowest().close();
    });
    resolver_.async_resolve(
        origin_.host, std::to_string(origin_.port),
        [self, st = active_](const error_code& ec, const tcp::resolver::results_type& results) {
          if (st != self->active_) return;
          if (ec) return self->connect_failed("resolving " + self->origin_.host, ec);
          self->lowest().async_connect(
              results, [self, st](const error_code& ec2, const tcp::endpoint&) {
                if (st != self->active_) return;
                if (ec2)
                  return self->connect_failed("connecting to " + host_port(self->origin_), ec2);
                self->on_connected();
              });
        });
  }

  void on_connected() {
    ++client_.opened;
    ++client_.open_now;
    counted_ = true;
    error_code ignored;
    lowest().socket().set_option(tcp::no_delay(true), ignored);
    if (!tls_) return on_established();

    SSL* ssl = tls_->native_handle();
    error_code not_ip;
    (void)asio::ip::make_address(origin_.host, not_ip);
    // SNI, never for an IP address (RFC 6066). (SSL_set_tlsext_host_name is this call behind
    // an old-style cast.)
    if (not_ip && SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                           const_cast<char*>(origin_.host.c_str())) != 1) {
      return finish(false, "TLS: cannot send the server name " + origin_.host);
    }
    static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    (void)SSL_set_alpn_protos(ssl, kAlpn, sizeof kAlpn);
    if (client_.o.verify_peer) {  // the context checks the chain; this adds the name
      tls_->set_verify_callback([this](bool preverified, asio::ssl::verify_context& ctx) {
        return verify_certificate(preverified, ctx);
      });
    }
    tls_->async_handshake(asio::ssl::stream_base::client, [self = shared_from_this(),
                                                           st = active_](const error_code& ec) {
      if (st != self->active_) return;
      if (ec && !self->verify_error_.empty()) {
        return self->finish(false, "TLS handshake with " + host_port(self->origin_) +
                                       " failed: " + self->verify_error_);
      }
      if (ec) {
        return self->connect_failed("TLS handshake with " + host_port(self->origin_), ec);
      }
      self->on_established();
    });
  }

  bool verify_certificate(bool preverified, asio::ssl::verify_context& ctx) {
    X509_STORE_CTX* store = ctx.native_handle();
    if (!preverified) {
      const int err = X509_STORE_CTX_get_error(store);
      verify_error_ = std::string("certificate verification failed: ") +
                      X509_verify_cert_error_string(err) + " (certificate " +
                      subject_of(X509_STORE_CTX_get_current_cert(store)) + ")";
      return false;
    }
    if (!asio::ssl::host_name_verification(origin_.host)(preverified, ctx)) {
      verify_error_ = "certificate verification failed: the certificate (" +
                      subject_of(X509_STORE_CTX_get_current_cert(store)) + ") is not valid for " +
                      origin_.host;
      return false;
    }
    return true;
  }

  void connect_failed(const std::string& doing, const error_code& ec) {
    if (connect_timed_out_) {
      return finish(false, doing + " timed out after " +
                               std::to_string(client_.o.connect_timeout.count()) + " ms");
    }
    std::string why = ec.message();
    if (ec.category() == asio::error::get_ssl_category()) why = "TLS error: " + why;
    if (closed_by_peer(ec)) why = "the server closed the connection";
    finish(false, doing + " failed: " + why);
  }

  void on_established() {
    established_ = true;
    connect_timer_.cancel();
    send();
  }

  // ---- one exchange: write the request, read the head, then the body piece by piece

  void send() {
    lowest().expires_after(client_.o.read_timeout);
    with_stream([&](auto& s) {
      bhttp::async_write(
          s, active_->message,
          [self = shared_from_this(), st = active_](const error_code& ec, std::size_t) {
            if (st != self->active_) return;
            if (ec) return self->failed(ec, "writing the request");
            self->interim_ = 0;
            self->read_header();
          });
    });
  }

  void read_header() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(client_.o.header_limit));  // checked
    parser_->body_limit(client_.o.body_limit);
    if (active_->head) parser_->skip(true);
    lowest().expires_after(client_.o.read_timeout);
    with_stream([&](auto& s) {
      bhttp::async_read_header(
          s, buf_, *parser_,
          [self = shared_from_this(), st = active_](const error_code& ec, std::size_t) {
            if (st != self->active_) return;
            if (ec) return self->failed(ec, "reading the response header");
            self->on_header();
          });
    });
  }

  void on_header() {
    auto& res = parser_->get();
    const unsigned status = res.result_int();
    if (status == 101) return finish(false, "bad response: unexpected 101 Switching Protocols");
    if (status >= 100 && status < 200) {  // interim (100 Continue, 103 Early Hints): skip
      if (++interim_ > kMaxInterim) return finish(false, "bad response: too many 1xx responses");
      return read_header();
    }
    ClientResponseHead head;
    head.status = status;
    for (const auto& f : res) head.headers.emplace_back(f.name_string(), f.value());
    if (!call_handler([&] {
          if (active_->handlers.on_head) active_->handlers.on_head(std::move(head));
        })) {
      return;
    }
    if (parser_->is_done()) return complete_ok();
    read_body();
  }

  void read_body() {
    if (!piece_) piece_ = std::make_unique<char[]>(kBodyPiece);
    auto& body = parser_->get().body();
    body.data = piece_.get();
    body.size = kBodyPiece;
    lowest().expires_after(client_.o.read_timeout);
    with_stream([&](auto& s) {
      bhttp::async_read_some(s, buf_, *parser_,
                             [self = shared_from_this(), st = active_](error_code ec, std::size_t) {
                               if (st != self->active_) return;
                               if (ec == bhttp::error::need_buffer) ec = {};
                               if (ec) return self->failed(ec, "reading the response body");
                               self->on_body();
                             });
    });
  }

  void on_body() {
    const std::size_t got = kBodyPiece - parser_->get().body().size;
    if (got == 0) {
      if (parser_->is_done()) return complete_ok();
      return read_body();
    }
    const auto& st = active_;
    if (!st->handlers.on_data) {  // nobody listens: go on
      if (parser_->is_done()) return complete_ok();
      return read_body();
    }
    const std::uint64_t seq = ++st->resume_seq;
    st->waiting = true;
    std::function<void()> resume = [s = st, seq] { s->resume(seq); };
    (void)call_handler([&] { st->handlers.on_data(std::string(piece_.get(), got), resume); });
  }

  void complete_ok() {
    const bool reusable =
        parser_->keep_alive() && active_->message.keep_alive() && buf_.size() == 0;
    finish(reusable, "");
  }

  /// An I/O error of the exchange. A reused connection that failed before any byte of the
  /// response came back was most likely closed by the server while idle: the request goes
  /// once more on a fresh connection.
  void failed(const error_code& ec, const char* doing) {
    const bool nothing_back = buf_.size() == 0 && !(parser_ && parser_->got_some());
    auto st = active_;
    if (reused_ && nothing_back && closed_by_peer(ec) && !st->retried) {
      st->retried = true;
      ++client_.retried;
      active_.reset();
      parser_.reset();
      close();
      auto fresh = std::make_shared<ClientConn>(client_, origin_, key_);
      client_.dispatch(st, fresh);
      return;
    }
    finish(false, describe(ec, doing));
  }

  std::string describe(const error_code& ec, const char* doing) const {
    const auto& o = client_.o;
    if (ec == beast::error::timeout) {
      return std::string("timeout ") + doing + ": no progress for " +
             std::to_string(o.read_timeout.count()) + " ms";
    }
    if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
      return std::string("bad response: header (or a chunk header, trailer) larger than ") +
             std::to_string(o.header_limit) + " bytes";
    }
    if (ec == bhttp::error::body_limit) {
      return "bad response: body larger than " + std::to_string(o.body_limit) + " bytes";
    }
    if (ec == bhttp::error::bad_chunk || ec == bhttp::error::bad_chunk_extension) {
      return "bad response: bad chunked encoding (" + ec.message() + ")";
    }
    if (closed_by_peer(ec)) {
      return std::string("upstream closed the connection early (") + doing + ")";
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {
      return "bad response: " + ec.message();
    }
    if (ec.category() == asio::error::get_ssl_category()) {
      return std::string("TLS error ") + doing + ": " + ec.message();
    }
    return std::string(doing) + " failed: " + ec.message();
  }

  /// Runs a user handler; if it throws, the call ends and false is returned.
  template <class F>
  bool call_handler(F&& f) {
    auto st = active_;
    try {
      f();
      return true;
    } catch (const std::exception& e) {
      if (st == active_) finish(false, std::string("handler threw: ") + e.what());
    } catch (...) {
      if (st == active_) finish(false, "handler threw");
    }
    return false;
  }

  /// Ends the active call: pools the connection (if `reusable` and the pool takes it) or
  /// closes it, then on_done(error).
  void finish(bool reusable, std::string error) {
    auto st = std::move(active_);
    active_.reset();
    if (reusable) {
      // The response was read to its end: no read is under way.
      parser_.reset();
      reused_ = true;
      reusable = client_.checkin(shared_from_this());
    }
    // Else the parser stays (until the connection goes): a read under way (a cancel) may have
    // got its bytes already, and Beast's read operation puts them into the parser before its
    // handler sees the call is over.
    if (!reusable) close();
    st->complete(std::move(error));
  }

  Client::Impl& client_;
  const std::shared_ptr<Client::Impl> keep_;  // client_, alive while the connection is
  const Origin origin_;
  const std::string key_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  asio::steady_timer connect_timer_;
  asio::steady_timer idle_timer_;
  bool idle_armed_ = false;                                  // idle_timer_ is pending
  std::chrono::steady_clock::time_point idle_since_;         // the last checkin
  std::uint64_t idle_epoch_ = 0;                             // pool_epoch at the last checkin
  std::optional<beast::tcp_stream> tcp_;                     // http
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;  // https
  beast::flat_buffer buf_;                                   // bounded: header_limit plus one read
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser_;
  std::unique_ptr<char[]> piece_;  // kBodyPiece bytes, the body's landing place
  std::shared_ptr<Call::State> active_;
  bool established_ = false;  // connected (and TLS done)
  bool reused_ = false;       // has carried a whole exchange
  bool counted_ = false;      // counted in open_now
  bool closed_ = false;
  bool connect_timed_out_ = false;
  int interim_ = 0;
  std::string verify_error_;
};

}  // namespace detail

using detail::ClientConn;

// ---------------------------------------------------------------------------- calls

void Call::cancel() { state_->cancel(); }

void Call::State::cancel() {
  std::lock_guard g(mu);
  if (done || cancel_requested) return;
  cancel_requested = true;
  // Posted under mu: the call cannot end (and the client go away) before it is queued.
  if (conn) asio::post(conn->strand(), [c = conn, st = shared_from_this()] { c->cancel(st); });
}

void Call::State::resume(std::uint64_t seq) {
  std::lock_guard g(mu);
  if (done || !conn) return;
  asio::post(conn->strand(), [c = conn, st = shared_from_this(), seq] { c->resume(st, seq); });
}

void Call::State::complete(std::string error) {
  {
    std::lock_guard g(mu);
    if (done) return;
    done = true;
    conn.reset();
  }
  client->forget(this);
  // Released after on_done: what the handlers captured (often the Call) goes with them.
  CallHandlers h = std::move(handlers);
  handlers = {};
  if (h.on_done) {
    try {
      h.on_done(std::move(error));
    } catch (...) {  // documented: dropped
    }
  }
}

// ---------------------------------------------------------------------------- the client

Client::Impl::Impl(ClientOptions options, asio::io_context* external)
    : o(std::move(options)), io(external != nullptr ? *external : own_io.emplace()) {
  if (external == nullptr && o.threads < 1) {
    throw std::invalid_argument("http client: threads must be >= 1");
  }
  if (o.connect_timeout.count() <= 0 || o.idle_timeout.count() <= 0 ||
      o.read_timeout.count() <= 0) {
    throw std::invalid_argument("http client: timeouts must be > 0");
  }
  if (o.header_limit == 0 || o.header_limit > std::uint32_t(-1) / 2) {
    throw std::invalid_argument("http client: header_limit must be 1 to 2^31 - 1 bytes");
  }
  tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  error_code ec;
  if (!o.ca_file.empty()) {
    tls.load_verify_file(o.ca_file, ec);
    if (ec) {
      throw std::invalid_argument("http client: cannot read the CA file " + o.ca_file + ": " +
                                  ec.message());
    }
  } else if (o.verify_peer) {
    tls.set_default_verify_paths(ec);
    if (ec) {
      throw std::invalid_argument("http client: cannot load the system CA store: " + ec.message());
    }
  }
  tls.set_verify_mode(o.verify_peer ? asio::ssl::verify_peer : asio::ssl::verify_none);
}

std::shared_ptr<ClientConn> Client::Impl::checkout(const std::string& key) {
  for (;;) {
    std::shared_ptr<ClientConn> c;
    {
      std::lock_guard g(pool_mu);
      auto it = pool.find(key);
      if (it == pool.end()) return nullptr;
      c = std::move(it->second.back());  // the most recently used
      it->second.pop_back();
      if (it->second.empty()) pool.erase(it);
      c->pooled = false;
      ++c->pool_epoch;
      --idle_now;
    }
    if (c->looks_idle()) return c;
    asio::post(c->strand(), [c] { c->close(); });
  }
}

bool Client::Impl::checkin(const std::shared_ptr<ClientConn>& conn) {
  if (o.max_idle_per_origin == 0) return false;
  std::uint64_t epoch = 0;
  {
    std::lock_guard g(pool_mu);
    // Under the lock: ~Client empties the pool after setting it, and a connection pooled
    // after that would keep the Impl (which owns the pool) alive.
    if (closing) return false;
    auto& v = pool[conn->key()];
    if (v.size() >= o.max_idle_per_origin) return false;
    conn->pooled = true;
    epoch = ++conn->pool_epoch;
    v.push_back(conn);
    ++idle_now;
  }
  conn->pooled_at(epoch);
  return true;
}

void Client::Impl::idle_expired(const std::shared_ptr<ClientConn>& conn, std::uint64_t epoch) {
  {
    std::lock_guard g(pool_mu);
    if (!conn->pooled || conn->pool_epoch != epoch) return;  // taken meanwhile
    auto it = pool.find(conn->key());
    if (it != pool.end()) {
      std::erase(it->second, conn);
      if (it->second.empty()) pool.erase(it);
    }
    conn->pooled = false;
    --idle_now;
  }
  conn->close();
}

void Client::Impl::dispatch(const std::shared_ptr<Call::State>& state,
                            const std::shared_ptr<ClientConn>& conn) {
  {
    std::lock_guard g(state->mu);
    if (!state->cancel_requested) {
      state->conn = conn;
      asio::post(conn->strand(), [conn, state] { conn->start(state); });
      return;
    }
  }
  asio::post(conn->strand(), [conn] { conn->close(); });
  state->complete("cancelled");
}

void Client::Impl::forget(Call::State* state) {
  std::lock_guard g(calls_mu);
  calls.erase(state);
}

Client::Client(ClientOptions options) : impl_(std::make_shared<Impl>(std::move(options), nullptr)) {
  impl_->work.emplace(impl_->io.get_executor());
  for (int i = 0; i < impl_->o.threads; ++i) {
    impl_->threads.emplace_back([impl = impl_.get()] { impl->io.run(); });
  }
}

Client::Client(ClientOptions options, asio::io_context& io)
    : impl_(std::make_shared<Impl>(std::move(options), &io)) {}

Client::~Client() {
  Impl& im = *impl_;
  im.closing = true;
  std::vector<std::shared_ptr<Call::State>> live;
  {
    std::lock_guard g(im.calls_mu);
    for (auto& [p, w] : im.calls) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->cancel();
  live.clear();
  std::vector<std::shared_ptr<ClientConn>> idle;
  {
    std::lock_guard g(im.pool_mu);
    for (auto& [key, conns] : im.pool) {
      for (auto& c : conns) {
        c->pooled = false;
        ++c->pool_epoch;
        idle.push_back(std::move(c));
      }
    }
    im.pool.clear();
    im.idle_now = 0;
  }
  for (auto& c : idle) asio::post(c->strand(), [c] { c->close(); });
  idle.clear();
  // The threads return once every call has ended and every connection is closed. On a given
  // io_context that happens when it runs what was posted (the connections and calls keep
  // the Impl alive until then).
  if (!im.own_io) return;
  im.work.reset();
  for (auto& t : im.threads) t.join();
}

std::shared_ptr<Call> Client::start(ClientRequest request, CallHandlers handlers) {
  Impl& im = *impl_;
  auto st = std::make_shared<Call::State>();
  st->client = impl_;
  st->handlers = std::move(handlers);
  auto call = std::make_shared<Call>(st);
  {
    std::lock_guard g(im.calls_mu);
    im.calls.emplace(st.get(), st);
  }
  const auto invalid = [&](std::string why) {
    asio::post(im.io,
               [st, why = std::move(why)]() mutable { st->complete("invalid request: " + why); });
    return call;
  };

  // The request's bytes: every field the caller gave is checked (no CR, LF or NUL sneaks a
  // header or a second request in).
  const Origin& origin = request.origin;
  if (origin.host.empty() || origin.port == 0) return invalid("no upstream host or port");
  if (!is_token(request.method)) return invalid("bad method \"" + request.method + "\"");
  if (request.target.empty() || request.target.front() != '/') {
    return invalid("the target must start with '/'");
  }
  for (const char c : request.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return invalid("the target has a space or control character");
    }
  }
  auto& m = st->message;
  m.version(11);
  m.method_string(request.method);
  m.target(request.target);
  const bool default_port = origin.port == (origin.tls ? 443 : 80);
  const bool v6 = origin.host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + origin.host + "]" : origin.host;
  if (!default_port) host += ":" + std::to_string(origin.port);
  m.set(bhttp::field::host, host);
  for (const auto& [name, value] : request.headers) {
    if (!is_token(name)) return invalid("bad header name \"" + name + "\"");
    for (const char c : value) {
      if (c == '\r' || c == '\n' || c == '\0') {
        return invalid("the value of header " + name + " has CR, LF or NUL");
      }
    }
    if (iequals(name, "host") || iequals(name, "content-length") ||
        iequals(name, "transfer-encoding")) {
      continue;
    }
    m.insert(name, value);
  }
  const std::string_view method = request.method;
  if (!request.body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    m.content_length(request.body.size());
  }
  m.body() = std::move(request.body);
  st->head = method == "HEAD";

  const std::string key = pool_key(origin);
  try {
    auto conn = im.checkout(key);
    if (!conn) conn = std::make_shared<ClientConn>(im, origin, key);
    im.dispatch(st, conn);
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
  return call;
}

ClientStats Client::stats() const {
  ClientStats s;
  s.opened = impl_->opened;
  s.reused = impl_->reused;
  s.retried = impl_->retried;
  s.open_now = impl_->open_now;
  std::lock_guard g(impl_->pool_mu);
  s.idle_now = impl_->idle_now;
  return s;
}

}  // namespace admit::http
