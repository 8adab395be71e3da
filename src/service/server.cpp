#include "service/server.hpp"

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
#include <utility>
#include <vector>

#include "service/api.hpp"

namespace admit::service {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::chrono::seconds kDrainTimeout{2};       // reading leftovers after an error reply
constexpr std::chrono::seconds kShutdownGrace{5};      // in-flight requests at shutdown
constexpr std::chrono::milliseconds kShutdownPoll{20};

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

class Session;

/// Live connections, so that stop() can close them. Shared by the server and every session,
/// so a session may outlive the server's other members during teardown.
struct Registry {
  std::mutex mu;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, std::weak_ptr<Session>> sessions;

  std::size_t size() {
    std::lock_guard g(mu);
    return sessions.size();
  }
};

struct Context {
  Api& api;
  const ServerOptions& options;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, Context ctx, std::shared_ptr<Registry> registry)
      : stream_(std::move(socket)), ctx_(ctx), registry_(std::move(registry)) {}

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

 private:
  void read_header() {
    busy_ = false;
    if (stopping_) return close();
    parser_.emplace();
    parser_->body_limit(ctx_.options.body_limit);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(ctx_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_error(ec);
    busy_ = true;
    started_ = std::chrono::steady_clock::now();
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      continue_.emplace(http::status::continue_, req.version());
      http::async_write(stream_, *continue_,
                        [self = shared_from_this()](beast::error_code e, std::size_t) {
                          if (e) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_error(ec);
    const auto& req = parser_->get();
    const Response r = ctx_.api.handle(sv(req.method_string()), sv(req.target()), req.body());
    respond(r, req.keep_alive());
  }

  /// A read failed: close quietly, or answer a malformed / oversized request and close.
  void on_error(beast::error_code ec) {
    if (!busy_) started_ = std::chrono::steady_clock::now();
    if (ec == http::error::body_limit) {
      return respond(Response{413, R"({"error":"request body too large"})", -1, {}}, false);
    }
    if (ec == http::error::header_limit) {
      return respond(Response{431, R"({"error":"request header too large"})", -1, {}}, false);
    }
    if (ec.category() == beast::http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return respond(Response{400, R"({"error":"malformed HTTP request"})", -1, {}}, false);
    }
    close();  // end of stream, timeout, reset, shutdown
  }

  void respond(const Response& r, bool keep_alive) {
    busy_ = true;
    const auto& req = parser_->get();
    res_.emplace();
    res_->version(req.version() == 10 ? 10 : 11);
    res_->result(r.status);
    res_->set(http::field::server, "admitd");
    res_->set(http::field::content_type, "application/json");
    if (r.retry_after >= 0) res_->set(http::field::retry_after, std::to_string(r.retry_after));
    if (!r.allow.empty()) res_->set(http::field::allow, r.allow);
    res_->body() = r.body;
    res_->body() += '\n';
    res_->keep_alive(keep_alive && !stopping_);
    res_->prepare_payload();
    if (ctx_.options.verbose) {
      method_ = std::string(sv(req.method_string()));
      target_ = std::string(sv(req.target()));
    }
    stream_.expires_after(ctx_.options.idle_timeout);
    http::async_write(stream_, *res_,
                      beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ctx_.options.verbose) log(ec);
    const bool keep = res_->keep_alive();
    res_.reset();
    if (ec) return close();
    if (keep) return read_header();
    drain();  // the client may still be sending (e.g. a body we refused): read before closing
  }

  void log(beast::error_code ec) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - started_)
                        .count();
    boost::json::object o{{"msg", "request"},
                          {"method", method_},
                          {"path", target_.substr(0, target_.find('?'))},
                          {"status", res_->result_int()},
                          {"us", us}};
    if (ec) o["error"] = ec.message();
    const std::string line = boost::json::serialize(o) + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
  }

  // Half-closes, then reads until the client closes (bounded), so that our error response is
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
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  Context ctx_;
  std::shared_ptr<Registry> registry_;
  std::uint64_t id_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> continue_;
  std::optional<http::response<http::string_body>> res_;
  std::array<char, 4096> scratch_{};
  bool busy_ = false;      // between a request's first byte and the end of its response
  bool stopping_ = false;  // the server is shutting down
  std::chrono::steady_clock::time_point started_{};
  std::string method_;
  std::string target_;
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

// Handlers capture `this`: they run only inside run(), and ~io_context destroys the ones left
// without running them, so no handler outlives the Impl it points to.
struct Server::Impl {
  Impl(Api& a, ServerOptions o)
      : api(a),
        options(std::move(o)),
        ioc(options.threads),
        acceptor(asio::make_strand(ioc)),
        signals(acceptor.get_executor()),
        grace(acceptor.get_executor()) {}

  Api& api;
  ServerOptions options;
  asio::io_context ioc;
  tcp::acceptor acceptor;  // on a strand, with signals and grace: stop() runs there
  asio::signal_set signals;
  asio::steady_timer grace;
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
    acceptor.async_accept(
        asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
          if (stopping || !acceptor.is_open()) return;
          if (ec) {
            // e.g. out of file descriptors: back off briefly instead of spinning.
            grace.expires_after(std::chrono::milliseconds(50));
            grace.async_wait([this](beast::error_code e) {
              if (!e && !stopping) accept();
            });
            return;
          }
          auto session = std::make_shared<Session>(std::move(s), Context{api, options}, registry);
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
    grace.cancel();
    std::vector<std::shared_ptr<Session>> live;
    {
      std::lock_guard g(registry->mu);
      for (auto& [id, w] : registry->sessions) {
        if (auto s = w.lock()) live.push_back(std::move(s));
      }
    }
    for (auto& s : live) s->shutdown();
    stop_deadline = std::chrono::steady_clock::now() + kShutdownGrace;
    wait_for_sessions();
  }

  // Polls until every connection is closed; past the grace period, stops the io_context.
  void wait_for_sessions() {
    if (registry->size() == 0) return;  // nothing left: run() returns on its own
    if (std::chrono::steady_clock::now() >= stop_deadline) return ioc.stop();
    grace.expires_after(kShutdownPoll);
    grace.async_wait([this](beast::error_code) { wait_for_sessions(); });
  }
};

Server::Server(Api& api, ServerOptions options) {
  if (options.threads < 1) throw std::invalid_argument("threads must be >= 1");
  impl_ = std::make_unique<Impl>(api, std::move(options));
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

}  // namespace admit::service
