// The OpenAI-compatible gateway (docs/proxy.md): POST /v1/chat/completions, /v1/completions,
// /v1/embeddings, /v1/responses and GET /v1/models, forwarded to the configured upstreams.
// Each request is charged to its caller's limits (an entity, with its parents: per-user and
// per-team quotas) and paced to its upstream's capacity (the upstream's own and learned
// limits, through a Scheduler per upstream), waits for room up to the configured deadline,
// streams SSE through as it arrives, and is reconciled with the usage the upstream reports.
#pragma once

#include <memory>
#include <string_view>

namespace boost::asio {
class io_context;
}

#include "admit/limiter.hpp"
#include "common/http/server.hpp"
#include "service/proxy/gateway_config.hpp"

namespace admit::service {

class Metrics;

class Gateway {
 public:
  /// An HTTP client and a Scheduler per upstream, on `io`, with no thread of its own: the
  /// schedulers, the clients' connections and every step of a request run on the threads
  /// that run `io`. admitd gives it its HTTP server's (http::Server::io_context()): on one io
  /// thread a request is then taken, paced, forwarded and answered with no hand-off between
  /// threads. `limiter` (the namespace config.ns names), `metrics` (may be null) and `io`
  /// must outlive the Gateway; `io` must not be running while the Gateway is destroyed.
  /// @throws std::invalid_argument for an upstream that cannot be set up (a CA file).
  Gateway(const GatewayConfig& config, Limiter& limiter, Metrics* metrics,
          boost::asio::io_context& io);
  /// Fails what is queued and cancels upstream calls in flight: posted to `io`, and dropped
  /// with it if it does not run again.
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  /// True for the routes the gateway answers (method and path, query excluded).
  static bool serves(std::string_view method, std::string_view path);

  /// True if requests are authenticated by the callers' keys (GatewayConfig::callers).
  bool authenticates() const;

  /// Answers one request of serves(), now or later. Never throws.
  void handle(const http::Request& request, http::Exchange exchange);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace admit::service
