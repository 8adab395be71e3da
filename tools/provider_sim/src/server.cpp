#include "server.hpp"

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <csignal>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "app.hpp"

namespace admit::sim {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::chrono::seconds kWriteTimeout{30};  // a client that stops reading is dropped
constexpr std::chrono::seconds kDrainTimeout{2};   // reading leftovers after an error reply
constexpr std::size_t kBatchBytes = 16 * 1024;     // unpaced events are written in batches

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

struct Context {
  App& app;
  const Clock& clock;
  const ServerOptions& options;
};

/// One connection: read a request, let the App answer, wait its delay, write the reply (a
/// string body, or chunked events paced by the stream's delays), repeat while keep-alive.
/// Every handler runs on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, Context ctx)
      : stream_(std::move(socket)), timer_(stream_.get_executor()), ctx_(ctx) {}

  void start() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Session::read, shared_from_this()));
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(ctx_.options.body_limit);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(ctx_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  // curl sends "Expect: 100-continue" before large bodies and waits a second for it.
  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_read(ec, 0);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      continue_.emplace(http::status::continue_, parser_->get().version());
      http::async_write(stream_, *continue_,
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
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == http::error::body_limit) return reject(413, "request body too large");
    if (ec == http::error::header_limit) return reject(431, "request header too large");
    if (ec && ec.category() == make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return reject(400, "malformed HTTP request");
    }
    if (ec) return close();  // end of stream, timeout, reset, shutdown

    const auto& req = parser_->get();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    const HttpRequest hr{sv(req.method_string()), sv(req.target()), req.body(),
                         sv(req[http::field::authorization]), sv(req["x-api-key"])};
    reply_ = ctx_.app.handle(hr, ctx_.clock.now());
    after(reply_.delay, [](Session& s) { s.send(); });
  }

  /// Runs `next` on this session after `delay` µs, on an Asio timer (never a sleep).
  template <class F>
  void after(Micros delay, F next) {
    if (delay <= 0) return next(*this);
    timer_.expires_after(std::chrono::microseconds(delay));
    timer_.async_wait([self = shared_from_this(), next](beast::error_code ec) {
      if (ec) return self->close();
      next(*self);
    });
  }

  void send() {
    if (reply_.stream && version_ >= 11) return send_stream();
    res_.emplace(static_cast<http::status>(reply_.status), version_ == 10 ? 10 : 11);
    set_headers(*res_);
    if (reply_.stream) {  // HTTP/1.0 cannot chunk: the whole stream at once, unpaced
      for (std::size_t i = 0; i < reply_.stream->size(); ++i) {
        res_->body() += reply_.stream->event(i);
      }
    } else {
      res_->body() = std::move(reply_.body);
    }
    res_->keep_alive(keep_alive_);
    res_->prepare_payload();
    stream_.expires_after(kWriteTimeout);
    http::async_write(stream_, *res_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->res_.reset();
                        self->done(ec);
                      });
  }

  template <class Message>
  void set_headers(Message& m) {
    m.set(http::field::server, "admit-provider-sim");
    for (const auto& [name, value] : reply_.headers) m.set(name, value);
  }

  void send_stream() {
    head_.emplace(static_cast<http::status>(reply_.status), 11);
    set_headers(*head_);
    head_->chunked(true);
    head_->keep_alive(keep_alive_);
    serializer_.emplace(*head_);
    next_ = 0;
    stream_.expires_after(kWriteTimeout);
    http::async_write_header(stream_, *serializer_,
                             [self = shared_from_this()](beast::error_code ec, std::size_t) {
                               if (ec) return self->close();
                               self->pump();
                             });
  }

  /// Writes the next batch of events: waits the first one's delay, then sends it together
  /// with the following events that have no delay of their own.
  void pump() {
    const Stream& s = *reply_.stream;
    if (next_ == s.size()) {
      stream_.expires_after(kWriteTimeout);
      asio::async_write(stream_, http::make_chunk_last(),
                        [self = shared_from_this()](beast::error_code ec, std::size_t) {
                          self->serializer_.reset();
                          self->head_.reset();
                          self->done(ec);
                        });
      return;
    }
    const Micros wait = s.delay(next_);
    out_.clear();
    do {
      out_ += s.event(next_++);
    } while (next_ < s.size() && s.delay(next_) == 0 && out_.size() < kBatchBytes);
    after(wait, [](Session& self) {
      self.stream_.expires_after(kWriteTimeout);
      asio::async_write(self.stream_, http::make_chunk(asio::buffer(self.out_)),
                        [me = self.shared_from_this()](beast::error_code ec, std::size_t) {
                          if (ec) return me->close();
                          me->pump();
                        });
    });
  }

  void done(beast::error_code ec) {
    reply_ = Reply{};
    if (ec) return close();
    if (keep_alive_) return read();
    graceful_close();
  }

  /// Answers a request that could not be read, then closes.
  void reject(unsigned status, std::string_view message) {
    reply_ = Reply{};
    reply_.status = status;
    reply_.headers.emplace_back("content-type", "application/json");
    reply_.body = R"({"error":{"message":")" + std::string(message) +
                  R"(","type":"invalid_request_error","param":null,"code":null}})" + "\n";
    keep_alive_ = false;
    version_ = 11;
    send();
  }

  // Half-closes, then reads until the client closes (bounded), so that an error reply is not
  // lost to a TCP reset caused by request bytes we did not read.
  void graceful_close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kDrainTimeout);
    drain();
  }
  void drain() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ignored;
    timer_.cancel();
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  asio::steady_timer timer_;
  Context ctx_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  Reply reply_;
  std::optional<http::response<http::empty_body>> continue_;
  std::optional<http::response<http::string_body>> res_;
  std::optional<http::response<http::empty_body>> head_;
  std::optional<http::response_serializer<http::empty_body>> serializer_;
  std::size_t next_ = 0;  // next stream event
  std::string out_;       // the batch being written
  std::array<char, 4096> scratch_{};
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
// (and with them the sessions) without running them.
struct Server::Impl {
  Impl(App& a, const Clock& c, ServerOptions o)
      : app(a),
        clock(c),
        options(std::move(o)),
        ioc(options.threads),
        acceptor(asio::make_strand(ioc)),
        signals(acceptor.get_executor()),
        backoff(acceptor.get_executor()) {}

  App& app;
  const Clock& clock;
  ServerOptions options;
  asio::io_context ioc;
  tcp::acceptor acceptor;  // on a strand, with signals and backoff: stop() runs there
  asio::signal_set signals;
  asio::steady_timer backoff;

  void listen() {
    const tcp::endpoint ep(parse_host(options.host), options.port);
    beast::error_code ec;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw ListenError("cannot listen on " + options.host + ":" + std::to_string(options.port) +
                        ": " + ec.message());
    }
  }

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
      if (!acceptor.is_open()) return;
      if (ec) {  // e.g. out of file descriptors: back off instead of spinning
        backoff.expires_after(std::chrono::milliseconds(50));
        backoff.async_wait([this](beast::error_code e) {
          if (!e) accept();
        });
        return;
      }
      std::make_shared<Session>(std::move(s), Context{app, clock, options})->start();
      accept();
    });
  }

  // On the acceptor's strand.
  void shutdown() {
    beast::error_code ignored;
    acceptor.close(ignored);
    signals.cancel(ignored);
    backoff.cancel();
    ioc.stop();
  }
};

Server::Server(App& app, const Clock& clock, ServerOptions options) {
  if (options.threads < 1) throw std::invalid_argument("threads must be >= 1");
  impl_ = std::make_unique<Impl>(app, clock, std::move(options));
  Impl& im = *impl_;
  if (im.options.handle_signals) {
    im.signals.add(SIGINT);
    im.signals.add(SIGTERM);
    im.signals.async_wait([&im](beast::error_code ec, int) {
      if (!ec) im.shutdown();
    });
  }
  im.listen();
}

Server::~Server() = default;

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
  asio::dispatch(im->acceptor.get_executor(), [im] { im->shutdown(); });
}

}  // namespace admit::sim
