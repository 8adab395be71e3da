#include "common/http/server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <array>
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace admit::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::chrono::seconds kDrainTimeout{2};  // reading leftovers after an error reply
constexpr std::chrono::milliseconds kShutdownPoll{20};

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

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
  Session(tcp::socket&& socket, Handler& handler, const ServerOptions& options,
          std::shared_ptr<Registry> registry)
      : stream_(std::move(socket)),
        timer_(stream_.get_executor()),
        handler_(handler),
        options_(options),
        registry_(std::move(registry)) {}

  ~Session() {
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

  /// Runs `f` on this connection's strand (at once if already there).
  template <class F>
  void on_strand(F&& f) {
    asio::dispatch(stream_.get_executor(), std::forward<F>(f));
  }

  // ---- Exchange operations, on the strand

  void respond(Response r) { send(std::move(r), keep_alive_); }

  void begin_stream(Response r, Exchange::Continuation next) {
    note_response(r.status);
    head_.emplace(static_cast<bhttp::status>(r.status), version_);
    set_headers(*head_, r);
    head_->chunked(true);
    head_->keep_alive(keep_alive_ && !stopping_);
    serializer_.emplace(*head_);
    stream_.expires_after(options_.write_timeout);
    bhttp::async_write_header(stream_, *serializer_,
                              [self = shared_from_this(), next = std::move(next)](
                                  beast::error_code ec, std::size_t) {
                                if (ec) return self->close();
                                next();
                              });
  }

  void write(std::string data, Exchange::Continuation next) {
    chunk_ = std::move(data);
    stream_.expires_after(options_.write_timeout);
    asio::async_write(stream_, bhttp::make_chunk(asio::buffer(chunk_)),
                      [self = shared_from_this(), next = std::move(next)](beast::error_code ec,
                                                                          std::size_t) {
                        if (ec) return self->close();
                        next();
                      });
  }

  void end() {
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
    timer_.async_wait(
        [self = shared_from_this(), next = std::move(next)](beast::error_code ec) {
          if (ec) return self->close();
          next();
        });
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

  void read_body() {
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_error(ec);
    const auto& req = parser_->get();
    version_ = req.version() == 10 ? 10 : 11;
    keep_alive_ = req.keep_alive();
    Request r;
    r.method = sv(req.method_string());
    r.target = sv(req.target());
    r.body = req.body();
    r.version = version_;
    r.fields_ = static_cast<const bhttp::fields*>(&req);
    handler_.handle(r, Exchange(shared_from_this()));
  }

  /// A read failed: close quietly, or answer a malformed / oversized request and close.
  void on_error(beast::error_code ec) {
    if (!busy_) started_ = std::chrono::steady_clock::now();
    version_ = parser_->get().version() == 10 ? 10 : 11;
    if (ec == bhttp::error::body_limit) {
      return send(handler_.reject(413, "request body too large"), false);
    }
    if (ec == bhttp::error::header_limit) {
      return send(handler_.reject(431, "request header too large"), false);
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
      return send(handler_.reject(400, "malformed HTTP request"), false);
    }
    close();  // end of stream, timeout, reset, shutdown
  }

  template <class Message>
  void set_headers(Message& m, const Response& r) {
    if (!options_.name.empty()) m.set(bhttp::field::server, options_.name);
    for (const auto& [name, value] : r.headers) m.set(name, value);
  }

  /// For the access log: what is being answered.
  void note_response(unsigned status) {
    busy_ = true;
    if (!options_.access_log) return;
    const auto& req = parser_->get();
    status_ = status;
    method_ = std::string(sv(req.method_string()));
    target_ = std::string(sv(req.target()));
  }

  void send(Response r, bool keep_alive) {
    note_response(r.status);
    res_.emplace();
    res_->version(version_);
    res_->result(r.status);
    set_headers(*res_, r);
    res_->body() = std::move(r.body);
    res_->keep_alive(keep_alive && !stopping_);
    res_->prepare_payload();
    stream_.expires_after(options_.write_timeout);
    bhttp::async_write(stream_, *res_,
                       [self = shared_from_this()](beast::error_code ec, std::size_t) {
                         const bool keep = self->res_->keep_alive();
                         self->res_.reset();
                         self->done(ec, keep);
                       });
  }

  /// A response is written (or failed): read the next request, or close.
  void done(beast::error_code ec, bool keep_alive) {
    if (options_.access_log) log(ec);
    if (ec) return close();
    if (keep_alive) return read_header();
    drain();  // the client may still be sending (e.g. a body we refused): read before closing
  }

  void log(beast::error_code ec) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - started_)
                        .count();
    boost::json::object o{{"msg", "request"},
                          {"method", method_},
                          {"path", target_.substr(0, target_.find('?'))},
                          {"status", status_},
                          {"us", us}};
    if (ec) o["error"] = ec.message();
    const std::string line = boost::json::serialize(o) + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
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
    beast::error_code ignored;
    timer_.cancel();
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  asio::steady_timer timer_;  // Exchange::after
  Handler& handler_;
  const ServerOptions& options_;
  std::shared_ptr<Registry> registry_;
  std::uint64_t id_ = 0;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<bhttp::response<bhttp::empty_body>> continue_;
  std::optional<bhttp::response<bhttp::string_body>> res_;
  std::optional<bhttp::response<bhttp::empty_body>> head_;  // of a stream
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::string chunk_;  // the stream chunk being written
  std::array<char, 4096> scratch_{};
  unsigned version_ = 11;  // of the request being answered
  bool keep_alive_ = false;
  bool busy_ = false;      // between a request's first byte and the end of its response
  bool stopping_ = false;  // the server is shutting down
  std::chrono::steady_clock::time_point started_{};
  unsigned status_ = 0;  // access log
  std::string method_;
  std::string target_;
};

}  // namespace detail

// ---- Exchange: each call goes to the connection's strand.

void Exchange::respond(Response response) const {
  session_->on_strand([s = session_, r = std::move(response)]() mutable {
    s->respond(std::move(r));
  });
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
        timer(acceptor.get_executor()) {}

  Handler& handler;
  ServerOptions options;
  asio::io_context ioc;
  tcp::acceptor acceptor;  // on a strand, with signals and timer: stop() runs there
  asio::signal_set signals;
  asio::steady_timer timer;  // accept backoff, then the shutdown poll
  std::shared_ptr<Registry> registry = std::make_shared<Registry>();
  bool stopping = false;  // on the acceptor's strand
  std::chrono::steady_clock::time_point stop_deadline{};

  void listen() {
    const tcp::endpoint ep(parse_host(options.host), options.port);
    const std::string where = (ep.address().is_v6() ? "[" + ep.address().to_string() + "]"
                                                    : ep.address().to_string()) +
                              ":" + std::to_string(options.port);
    beast::error_code ec;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw ListenError("cannot listen on " + where + ": " + ec.message());
  }

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
      if (stopping || !acceptor.is_open()) return;
      if (ec) {  // e.g. out of file descriptors: back off briefly instead of spinning
        timer.expires_after(std::chrono::milliseconds(50));
        timer.async_wait([this](beast::error_code e) {
          if (!e && !stopping) accept();
        });
        return;
      }
      auto session = std::make_shared<detail::Session>(std::move(s), handler, options, registry);
      std::uint64_t id = 0;
      {
        std::lock_guard g(registry->mu);
        id = registry->next_id++;
        registry->sessions.emplace(id, session);
      }
      session->start(id);
      accept();
    });
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

  // Polls until every connection is closed; past the grace period, stops the io_context.
  void wait_for_sessions() {
    if (registry->size() == 0) return;  // nothing left: run() returns on its own
    if (std::chrono::steady_clock::now() >= stop_deadline) return ioc.stop();
    timer.expires_after(kShutdownPoll);
    timer.async_wait([this](beast::error_code) { wait_for_sessions(); });
  }
};

Server::Server(Handler& handler, ServerOptions options) {
  if (options.threads < 1) throw std::invalid_argument("threads must be >= 1");
  impl_ = std::make_unique<Impl>(handler, std::move(options));
  Impl& im = *impl_;
  // Registered here rather than in run(): a signal that arrives in between is queued by Asio
  // and delivered once run() starts.
  if (im.options.handle_signals) {
    im.signals.add(SIGINT);
    im.signals.add(SIGTERM);
    im.signals.async_wait([&im](beast::error_code ec, int) {
      if (!ec) im.begin_stop();
    });
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

void Server::run() {
  Impl& im = *impl_;
  im.accept();
  std::vector<std::thread> threads;
  for (int i = 1; i < im.options.threads; ++i) threads.emplace_back([&im] { im.ioc.run(); });
  im.ioc.run();
  for (auto& t : threads) t.join();
}

void Server::stop() {
  Impl* im = impl_.get();
  asio::dispatch(im->acceptor.get_executor(), [im] { im->begin_stop(); });
}

}  // namespace admit::http
