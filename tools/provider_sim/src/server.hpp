// admit-provider-sim's HTTP/1.1 transport (Boost.Beast over Asio): keep-alive, latency and
// streaming paced by Asio timers (a slow stream never blocks other connections), chunked
// server-sent events, a stop on SIGINT / SIGTERM or stop().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace admit {
class Clock;
}

namespace admit::sim {

class App;

struct ServerOptions {
  std::string host = "127.0.0.1";            ///< an IPv4 or IPv6 address, or "localhost"
  std::uint16_t port = 0;                    ///< 0: any free port (see Server::port())
  int threads = 1;                           ///< io_context threads, >= 1
  std::size_t body_limit = 8 * 1024 * 1024;  ///< larger request bodies get 413
  std::chrono::seconds idle_timeout{60};     ///< a connection silent this long is closed
  bool handle_signals = true;                ///< stop on SIGINT / SIGTERM
};

/// The address could not be listened on (in use, not local, ...).
class ListenError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Server {
 public:
  /// Binds and listens at once. `app` and `clock` must outlive the Server.
  /// @throws ListenError; std::invalid_argument for a bad host or thread count.
  Server(App& app, const Clock& clock, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound port (useful with port 0).
  std::uint16_t port() const;

  /// Serves on options.threads threads (the caller's included) until stop() or a signal.
  /// Connections still open then (e.g. streams) are closed.
  void run();
  /// Thread-safe; may be called before or during run().
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit::sim
