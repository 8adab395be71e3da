#include "connection.hpp"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>
#include <utility>

namespace admit::redis::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::size_t kReadChunk = std::size_t{64} << 10;
constexpr std::size_t kKeepWriteBuffer = std::size_t{1} << 20;  // shrink after larger bursts
constexpr std::string_view kAsking = "*1\r\n$6\r\nASKING\r\n";
// While callbacks of one read's replies run, what they queued is written once they took this.
constexpr auto kFlushAfter = std::chrono::microseconds(50);

std::string millis(Clock::duration d) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
  return std::to_string(ms) + " ms";
}

bool closed_by_peer(const error_code& ec) {
  // A TLS peer that closes without close_notify: stream_truncated.
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
}

// An I/O error for messages; OpenSSL's are marked as TLS errors.
std::string describe(const error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) return "TLS error: " + ec.message();
  return ec.message();
}

// "/CN=redis.internal" of a certificate, for messages.
std::string subject_of(X509* cert) {
  if (cert == nullptr) return "(none)";
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  return buf;
}

}  // namespace

Connection::Connection(Core& core, Endpoint endpoint)
    : core_(core),
      endpoint_(std::move(endpoint)),
      name_(endpoint_.to_string()),
      socket_(core.io()),
      resolver_(core.io()),
      connect_timer_(core.io()),
      read_buf_(kReadChunk) {}

Connection::~Connection() = default;

void Connection::enqueue(RequestPtr req) {
  const bool failing =
      state_ == State::closed || (state_ == State::idle && Clock::now() < retry_at_);
  if (req->needs_sha && !failing) {
    // An EVALSHA encoded before its script's SHA1 was known: load the script first, unless
    // the SHA1 was learned meanwhile.
    const std::string* sha = req->script->known_sha1();
    if (sha == nullptr) {
      load_script(std::move(req));
      return;
    }
    if (!req->cmd.set_evalsha_sha1(*sha)) {
      core_.fail(std::move(req), Errc::protocol_error, "malformed EVALSHA request");
      return;
    }
    req->needs_sha = false;
  }
  switch (state_) {
    case State::closed:
      core_.fail(std::move(req), Errc::shutdown, "redis client is shutting down");
      return;
    case State::idle: {
      const auto now = Clock::now();
      if (now < retry_at_) {
        // Backoff after a failed attempt: fail fast instead of connecting again.
        core_.fail(std::move(req), last_errc_,
                   last_error_ + " (next attempt in " + millis(retry_at_ - now) + ")");
        return;
      }
      core_.watch_deadline(req->deadline);
      waiting_.push_back(std::move(req));
      start_connect();
      return;
    }
    case State::connecting:
    case State::handshaking:
      core_.watch_deadline(req->deadline);
      waiting_.push_back(std::move(req));
      return;
    case State::ready:
      core_.watch_deadline(req->deadline);
      waiting_.push_back(std::move(req));
      schedule_flush();
      return;
  }
}

void Connection::start_connect() {
  // Never (re)open the socket once the client stops: the I/O thread must run out of work.
  if (state_ == State::closed || core_.stopped()) return;
  state_ = State::connecting;
  const auto gen = ++gen_;
  auto self = shared_from_this();
  // TLS: a fresh stream per attempt (an SSL session cannot be reused after an error), its
  // socket opened by the connect below.
  if (core_.tls_context() != nullptr) {
    tls_ = std::make_shared<TlsStream>(core_.io(), *core_.tls_context());
  }
  connect_timer_.expires_after(core_.options().connect_timeout);
  connect_timer_.async_wait([self, gen](const error_code& ec) {
    if (ec || gen != self->gen_ ||
        (self->state_ != State::connecting && self->state_ != State::handshaking)) {
      return;
    }
    const std::string after = " timed out after " + millis(self->core_.options().connect_timeout);
    // A plain server waits for the end of a line that a TLS ClientHello never sends.
    const std::string why = self->tls_handshaking_ ? "TLS handshake with " + self->name_ + after +
                                                         " (is that port a TLS port?)"
                                                   : "connecting to " + self->name_ + after;
    self->connect_failed(Errc::connection_failed, why);
  });
  error_code ec;
  const auto address = asio::ip::make_address(endpoint_.host, ec);
  if (!ec) {
    tcp_socket().async_connect(
        tcp::endpoint(address, endpoint_.port),
        [self, gen, keep = tls_](const error_code& e) { self->on_connected(gen, e); });
    return;
  }
  resolver_.async_resolve(
      endpoint_.host, std::to_string(endpoint_.port),
      [self, gen, keep = tls_](const error_code& e, const tcp::resolver::results_type& results) {
        if (gen != self->gen_) return;
        if (e) {
          self->connect_failed(Errc::connection_failed,
                               "resolving " + self->name_ + " failed: " + e.message());
          return;
        }
        asio::async_connect(self->tcp_socket(), results,
                            [self, gen, keep](const error_code& e2, const tcp::endpoint&) {
                              self->on_connected(gen, e2);
                            });
      });
}

void Connection::on_connected(std::uint64_t gen, const error_code& ec) {
  if (gen != gen_ || state_ != State::connecting) return;
  if (ec) {
    connect_failed(Errc::connection_failed, "connecting to " + name_ + " failed: " + ec.message());
    return;
  }
  error_code ignored;
  tcp_socket().set_option(tcp::no_delay(true), ignored);
  if (!tls_) {
    start_session();
    return;
  }
  // TLS: the handshake, still bounded by connect_timeout (the timer and State::connecting).
  const TlsOptions& t = core_.options().tls;
  const std::string host = t.server_name.empty() ? endpoint_.host : t.server_name;
  error_code not_ip;
  (void)asio::ip::make_address(host, not_ip);
  // SNI: managed services route by it. Never an IP address (RFC 6066).
  // (SSL_set_tlsext_host_name is this call behind an old-style cast.)
  if (not_ip && SSL_ctrl(tls_->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                         TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str())) != 1) {
    connect_failed(Errc::connection_failed, "TLS: cannot send the server name " + host);
    return;
  }
  tls_verify_error_.clear();
  if (t.verify) {  // the context verifies the chain (verify_peer); this adds the name
    tls_->set_verify_callback([this, host](bool preverified, asio::ssl::verify_context& ctx) {
      return verify_certificate(host, preverified, ctx);
    });
  }
  tls_handshaking_ = true;
  tls_->async_handshake(asio::ssl::stream_base::client,
                        [self = shared_from_this(), gen, keep = tls_](const error_code& e) {
                          self->on_tls_handshake(gen, e);
                        });
}

bool Connection::verify_certificate(const std::string& host, bool preverified,
                                    asio::ssl::verify_context& ctx) {
  X509_STORE_CTX* store = ctx.native_handle();
  if (!preverified) {
    const int err = X509_STORE_CTX_get_error(store);
    tls_verify_error_ = std::string("certificate verify failed: ") +
                        X509_verify_cert_error_string(err) + " (certificate " +
                        subject_of(X509_STORE_CTX_get_current_cert(store)) + ")";
    return false;
  }
  if (!asio::ssl::host_name_verification(host)(preverified, ctx)) {
    tls_verify_error_ = "the server's certificate (" +
                        subject_of(X509_STORE_CTX_get_current_cert(store)) + ") is not valid for " +
                        host;
    return false;
  }
  return true;
}

void Connection::on_tls_handshake(std::uint64_t gen, const error_code& ec) {
  if (gen != gen_ || state_ != State::connecting) return;
  tls_handshaking_ = false;
  if (ec) {
    std::string why = tls_verify_error_;
    if (why.empty()) {
      why = closed_by_peer(ec) ? "the server closed the connection" : describe(ec);
    }
    connect_failed(Errc::connection_failed, "TLS handshake with " + name_ + " failed: " + why);
    return;
  }
  start_session();
}

void Connection::start_session() {
  reader_.reset();
  start_read();

  // AUTH and SELECT go first, alone: nothing queued is written until they succeeded.
  const auto& o = core_.options();
  write_buf_.clear();
  auto add = [this](std::span<const std::string_view> args, Errc on_error) {
    const Command c = Command::encode(args);
    write_buf_.append(c.data(), c.size());
    in_flight_.push_back({nullptr, Kind::handshake, on_error, args.front().data()});
    ++handshake_left_;
  };
  if (!o.password.empty()) {
    if (o.username.empty()) {
      const std::string_view args[] = {"AUTH", o.password};
      add(args, Errc::auth_failed);
    } else {
      const std::string_view args[] = {"AUTH", o.username, o.password};
      add(args, Errc::auth_failed);
    }
  }
  if (o.db != 0) {
    const std::string db = std::to_string(o.db);
    const std::string_view args[] = {"SELECT", db};
    add(args, Errc::connection_failed);
  }
  if (handshake_left_ == 0 && tls_) {
    // With TLS 1.3 a server refuses a client certificate only after the client's handshake
    // is done: a reply proves the session before anything queued is sent.
    const std::string_view args[] = {"PING"};
    add(args, Errc::connection_failed);
  }
  if (handshake_left_ == 0) {
    on_ready();
    return;
  }
  state_ = State::handshaking;
  start_write();
}

void Connection::start_write() {
  writing_ = true;
  auto done = [self = shared_from_this(), gen = gen_, keep = tls_](
                  const error_code& e, std::size_t) { self->on_written(gen, e); };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(write_buf_), std::move(done));
  } else {
    asio::async_write(socket_, asio::buffer(write_buf_), std::move(done));
  }
}

void Connection::on_ready() {
  connect_timer_.cancel();
  state_ = State::ready;
  failures_ = 0;
  retry_at_ = {};
  last_error_.clear();
  core_.on_connection_up(*this, was_connected_);
  was_connected_ = true;
  flush();
}

void Connection::start_read() {
  auto done = [self = shared_from_this(), gen = gen_, keep = tls_](
                  const error_code& ec, std::size_t n) { self->on_read(gen, ec, n); };
  if (tls_) {
    tls_->async_read_some(asio::buffer(read_buf_), std::move(done));
  } else {
    socket_.async_read_some(asio::buffer(read_buf_), std::move(done));
  }
}

void Connection::on_read(std::uint64_t gen, const error_code& ec, std::size_t n) {
  if (gen != gen_) return;
  auto broken = [this](Errc e, const std::string& why) {
    if (state_ == State::ready) {
      lost(e, why, Clock::now());
    } else {
      connect_failed(e == Errc::connection_lost ? Errc::connection_failed : e, why);
    }
  };
  if (ec) {
    broken(Errc::connection_lost, closed_by_peer(ec)
                                      ? "connection closed by " + name_
                                      : "reading from " + name_ + " failed: " + describe(ec));
    return;
  }
  if (!reader_.feed(read_buf_.data(), n)) {
    broken(Errc::protocol_error, "invalid reply from " + name_ + ": " + reader_.error());
    return;
  }
  auto held_since = Clock::now();
  while (auto reply = reader_.next()) {
    if (in_flight_.empty()) {
      broken(Errc::protocol_error, "unexpected reply from " + name_ + ": " + to_string(*reply));
      return;
    }
    InFlight entry = std::move(in_flight_.front());
    in_flight_.pop_front();
    dispatch(std::move(entry), std::move(*reply));
    if (gen != gen_) return;  // the connection failed or closed meanwhile
    // Requests the callbacks queued go out before the next replies' callbacks run once these
    // took kFlushAfter: the server works on them meanwhile. (Held to the end of the read, the
    // requests of replies that arrived together would go out together and come back
    // together, and the server would wait for the client's callbacks after every read:
    // ~30 % of its time under RedisStore's group commit, measured. Quick callbacks still
    // share one write.)
    if (!waiting_.empty()) {
      const auto now = Clock::now();
      if (now - held_since >= kFlushAfter) {
        flush();  // may fail expired requests, whose callbacks may close the connection
        if (gen != gen_) return;
        held_since = now;
      }
    }
  }
  if (!reader_.error().empty()) {
    broken(Errc::protocol_error, "invalid reply from " + name_ + ": " + reader_.error());
    return;
  }
  flush();
  start_read();
}

void Connection::dispatch(InFlight entry, Reply reply) {
  switch (entry.kind) {
    case Kind::discard:  // the +OK of an ASKING
      return;
    case Kind::handshake:
      if (reply.is_error()) {
        connect_failed(entry.handshake_error, std::string(entry.handshake_step) + " failed on " +
                                                  name_ + ": " + reply.str);
        return;
      }
      if (--handshake_left_ == 0) on_ready();
      return;
    case Kind::request:
      core_.on_reply(*this, std::move(entry.req), std::move(reply));
      return;
  }
}

void Connection::schedule_flush() {
  if (state_ != State::ready || writing_ || flush_posted_) return;
  // Deferred, so that everything queued by the current handler goes out in one write.
  flush_posted_ = true;
  asio::post(core_.io(), [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->flush();
  });
}

void Connection::flush() {
  if (state_ != State::ready || writing_) return;
  const std::size_t max = core_.options().max_in_flight;
  const auto now = Clock::now();
  std::vector<RequestPtr> expired;
  write_buf_.clear();
  while (!waiting_.empty() && in_flight_.size() < max) {
    RequestPtr req = std::move(waiting_.front());
    waiting_.pop_front();
    if (req->deadline <= now) {
      expired.push_back(std::move(req));
      continue;
    }
    if (req->asking) {  // stays set until the reply: a NOSCRIPT resend needs it again
      write_buf_.append(kAsking);
      in_flight_.push_back({nullptr, Kind::discard});
    }
    write_buf_.append(req->cmd.data(), req->cmd.size());
    in_flight_.push_back({std::move(req), Kind::request});
  }
  if (!write_buf_.empty()) {
    Stats::add(core_.stats().writes);
    start_write();
  }
  for (auto& r : expired) {
    core_.fail(
        std::move(r), Errc::timeout,
        "request to " + name_ + " timed out after " + millis(core_.options().command_timeout));
  }
}

void Connection::on_written(std::uint64_t gen, const error_code& ec) {
  if (gen != gen_) return;
  writing_ = false;
  if (ec) {
    const std::string why = "writing to " + name_ + " failed: " + describe(ec);
    if (state_ == State::ready) {
      lost(Errc::connection_lost, why, Clock::now());
    } else {
      connect_failed(Errc::connection_failed, why);
    }
    return;
  }
  if (write_buf_.capacity() > kKeepWriteBuffer) std::string().swap(write_buf_);
  flush();
}

void Connection::connect_failed(Errc e, const std::string& why) {
  if (state_ == State::closed) return;  // shutdown() failed everything already
  auto in_flight = std::exchange(in_flight_, {});
  close_socket();
  state_ = State::idle;
  ++failures_;
  auto backoff = core_.options().reconnect_backoff;
  for (int i = 1; i < failures_ && backoff < core_.options().reconnect_backoff_max; ++i) {
    backoff *= 2;
  }
  backoff = std::min(backoff, core_.options().reconnect_backoff_max);
  retry_at_ = Clock::now() + backoff;
  last_errc_ = e;
  last_error_ = why;
  Stats::add(core_.stats().connect_failures);
  core_.on_connection_down(*this);
  // Only handshake entries can be in flight here; everything that waits fails fast.
  auto waiting = std::exchange(waiting_, {});
  for (auto& entry : in_flight) {
    if (entry.req) core_.fail(std::move(entry.req), e, why);
  }
  for (auto& r : waiting) core_.fail(std::move(r), e, why);
}

void Connection::lost(Errc e, const std::string& why, Clock::time_point now) {
  if (state_ == State::closed) return;  // shutdown() failed everything already
  auto in_flight = std::exchange(in_flight_, {});
  close_socket();
  state_ = State::idle;
  retry_at_ = {};  // the server was reachable: the next request reconnects at once
  Stats::add(core_.stats().connection_losses);
  core_.on_connection_down(*this);
  const std::string timed_out =
      "request to " + name_ + " timed out after " + millis(core_.options().command_timeout);
  for (auto& entry : in_flight) {
    if (!entry.req) continue;
    const bool expired = entry.req->deadline <= now;
    core_.fail(std::move(entry.req), expired ? Errc::timeout : e, expired ? timed_out : why);
  }
  // Requests not written yet are safe to send on a new connection (not after stop_all:
  // Core::stop_all() fails them through shutdown()).
  if (state_ == State::idle && !waiting_.empty() && !core_.stopped()) start_connect();
}

void Connection::close_socket() {
  ++gen_;
  if (state_ == State::ready)
    core_.stats().ready_connections.fetch_sub(1, std::memory_order_relaxed);
  error_code ignored;
  socket_.close(ignored);
  if (tls_) {
    // Closing the socket completes the stream's operations (aborted); their handlers hold the
    // stream until they have run. No TLS close_notify: the connection is dropped either way.
    tls_->next_layer().close(ignored);
    tls_.reset();
  }
  tls_handshaking_ = false;
  resolver_.cancel();
  connect_timer_.cancel();
  writing_ = false;
  handshake_left_ = 0;
}

Clock::time_point Connection::sweep(Clock::time_point now) {
  std::vector<RequestPtr> expired;
  if (std::any_of(waiting_.begin(), waiting_.end(),
                  [now](const RequestPtr& r) { return r->deadline <= now; })) {
    std::deque<RequestPtr> keep;
    for (auto& r : waiting_) {
      if (r->deadline <= now) {
        expired.push_back(std::move(r));
      } else {
        keep.push_back(std::move(r));
      }
    }
    waiting_.swap(keep);
  }
  for (auto it = script_waiters_.begin(); it != script_waiters_.end(); ++it) {
    auto& v = it->second;
    auto mid = std::stable_partition(v.begin(), v.end(),
                                     [now](const RequestPtr& r) { return r->deadline > now; });
    for (auto i = mid; i != v.end(); ++i) expired.push_back(std::move(*i));
    v.erase(mid, v.end());  // an empty entry still marks the SCRIPT LOAD in flight
  }
  if (std::any_of(in_flight_.begin(), in_flight_.end(),
                  [now](const InFlight& e) { return e.req && e.req->deadline <= now; })) {
    // The late reply may still come: every reply after it would go to the wrong request.
    lost(Errc::connection_lost, "connection to " + name_ + " closed after a request timed out",
         now);
  }
  const std::string timed_out =
      "request to " + name_ + " timed out after " + millis(core_.options().command_timeout);
  for (auto& r : expired) core_.fail(std::move(r), Errc::timeout, timed_out);

  auto next = Clock::time_point::max();
  for (const auto& r : waiting_) next = std::min(next, r->deadline);
  for (const auto& e : in_flight_) {
    if (e.req) next = std::min(next, e.req->deadline);
  }
  for (const auto& [sha, v] : script_waiters_) {
    for (const auto& r : v) next = std::min(next, r->deadline);
  }
  return next;
}

void Connection::shutdown() {
  // Closing the socket and cancelling the resolver and the connect timer completes every
  // outstanding operation with operation_aborted; their handlers see a new gen_ (and
  // State::closed) and start nothing, so the I/O thread runs out of work.
  auto in_flight = std::exchange(in_flight_, {});
  close_socket();
  state_ = State::closed;
  auto waiting = std::exchange(waiting_, {});
  auto waiters = std::exchange(script_waiters_, {});
  const std::string why = "redis client is shutting down";
  for (auto& entry : in_flight) {
    if (entry.req) core_.fail(std::move(entry.req), Errc::shutdown, why);
  }
  for (auto& r : waiting) core_.fail(std::move(r), Errc::shutdown, why);
  for (auto& [sha, v] : waiters) {
    for (auto& r : v) core_.fail(std::move(r), Errc::shutdown, why);
  }
}

void Connection::load_script(RequestPtr req) {
  auto script = req->script;
  auto& waiters = script_waiters_[script.get()];
  const bool first = waiters.empty();
  waiters.push_back(std::move(req));
  if (!first) return;  // a SCRIPT LOAD is already on its way; it will (re)send this one too
  auto load = std::make_unique<Request>();
  const std::string_view args[] = {"SCRIPT", "LOAD", script->source};
  load->cmd = Command::encode(args);
  load->deadline = Clock::now() + core_.options().command_timeout;
  load->internal = true;
  load->cb = [weak = weak_from_this(), script](std::error_code ec, Reply reply) {
    if (auto self = weak.lock()) self->on_script_loaded(script, ec, reply);
  };
  Stats::add(core_.stats().script_loads);
  enqueue(std::move(load));
}

void Connection::on_script_loaded(const std::shared_ptr<const Script::Data>& script,
                                  std::error_code ec, const Reply& reply) {
  // SCRIPT LOAD answers the script's SHA1: 40 hex digits.
  const bool sha1 = !ec && reply.is_string() && reply.str.size() == 40;
  if (sha1) script->learn_sha1(reply.str);
  auto node = script_waiters_.extract(script.get());
  if (node.empty()) return;
  for (auto& r : node.mapped()) {
    if (ec) {
      core_.deliver(std::move(r), ec, Reply::error(reply.str));
    } else if (reply.is_error()) {
      core_.deliver(std::move(r), {}, reply);  // e.g. the script does not compile
    } else if (!sha1) {
      core_.fail(std::move(r), Errc::protocol_error,
                 "unexpected SCRIPT LOAD reply from " + name_ + ": " + to_string(reply));
    } else {
      enqueue(std::move(r));
    }
  }
}

}  // namespace admit::redis::detail
