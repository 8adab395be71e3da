// admit-provider-sim's routes on the shared HTTP server (src/common/http): each request goes
// to the App, whose Reply is sent after its delay, whole or as chunked server-sent events
// paced by the stream's delays (Asio timers: a slow stream never holds up other connections).
#pragma once

#include <string_view>

#include "common/http/server.hpp"

namespace admit {
class Clock;
}

namespace admit::sim {

class App;

/// The simulator's transport settings: 8 MiB bodies, 60 s idle, and at a stop the connections
/// still open (e.g. streams) are closed at once.
http::ServerOptions server_options();

class HttpHandler final : public http::Handler {
 public:
  /// `app` and `clock` must outlive the handler.
  HttpHandler(App& app, const Clock& clock) : app_(app), clock_(clock) {}

  void handle(const http::Request& request, http::Exchange exchange) override;
  /// An OpenAI-style error body (invalid_request_error).
  http::Response reject(unsigned status, std::string_view message) override;

 private:
  App& app_;
  const Clock& clock_;
};

}  // namespace admit::sim
