#include "http_handler.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "admit/core/clock.hpp"
#include "app.hpp"

namespace admit::sim {

namespace {

constexpr std::size_t kBatchBytes = 16 * 1024;  // unpaced events are written in batches

/// Writes a stream's events: each batch after the delay of its first event, together with the
/// following events that have no delay of their own.
class Pump : public std::enable_shared_from_this<Pump> {
 public:
  Pump(http::Exchange exchange, std::shared_ptr<const Stream> stream)
      : exchange_(std::move(exchange)), stream_(std::move(stream)) {}

  void step() {
    const Stream& s = *stream_;
    if (next_ == s.size()) return exchange_.end();
    const Micros wait = s.delay(next_);
    std::string out;
    do {
      out += s.event(next_++);
    } while (next_ < s.size() && s.delay(next_) == 0 && out.size() < kBatchBytes);
    exchange_.after(std::chrono::microseconds(wait),
                    [self = shared_from_this(), out = std::move(out)]() mutable {
                      self->exchange_.write(std::move(out), [self] { self->step(); });
                    });
  }

 private:
  http::Exchange exchange_;
  std::shared_ptr<const Stream> stream_;
  std::size_t next_ = 0;  // the next event
};

}  // namespace

http::ServerOptions server_options() {
  http::ServerOptions o;
  o.name = "admit-provider-sim";
  o.body_limit = 8 * 1024 * 1024;
  o.idle_timeout = std::chrono::seconds(60);
  o.shutdown_grace = std::chrono::seconds(0);
  return o;
}

void HttpHandler::handle(const http::Request& request, http::Exchange exchange) {
  const HttpRequest hr{request.method, request.target, request.body,
                       request.header("authorization"), request.header("x-api-key")};
  auto reply = std::make_shared<Reply>(app_.handle(hr, clock_.now()));
  const bool chunked = reply->stream && request.version >= 11;
  exchange.after(std::chrono::microseconds(reply->delay), [exchange, reply, chunked] {
    http::Response r;
    r.status = reply->status;
    r.headers = std::move(reply->headers);
    if (chunked) {
      auto pump = std::make_shared<Pump>(exchange, std::move(reply->stream));
      return exchange.begin_stream(std::move(r), [pump] { pump->step(); });
    }
    if (reply->stream) {  // HTTP/1.0 cannot chunk: the whole stream at once, unpaced
      for (std::size_t i = 0; i < reply->stream->size(); ++i) r.body += reply->stream->event(i);
    } else {
      r.body = std::move(reply->body);
    }
    exchange.respond(std::move(r));
  });
}

http::Response HttpHandler::reject(unsigned status, std::string_view message) {
  http::Response r;
  r.status = status;
  r.headers.emplace_back("content-type", "application/json");
  r.body = R"({"error":{"message":")" + std::string(message) +
           R"(","type":"invalid_request_error","param":null,"code":null}})" + "\n";
  return r;
}

}  // namespace admit::sim
