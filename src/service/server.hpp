// admitd's HTTP/1.1 server (Boost.Beast over Asio): keep-alive, a request body limit, idle
// timeouts, N io threads, and a graceful stop on SIGINT / SIGTERM or stop().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace admit::service {

class Api;

struct ServerOptions {
  std::string host = "127.0.0.1";  ///< an IPv4 or IPv6 address, or "localhost"
  std::uint16_t port = 8787;       ///< 0: any free port (see Server::port())
  int threads = 1;                 ///< io_context threads, >= 1
  std::size_t body_limit = 64 * 1024;  ///< larger request bodies get 413
  std::chrono::seconds idle_timeout{30};  ///< a connection silent this long is closed
  bool verbose = false;            ///< one JSON line per request on stderr
  bool handle_signals = true;      ///< stop on SIGINT / SIGTERM
};

/// The address could not be listened on (in use, not local, ...).
class ListenError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Server {
 public:
  /// Binds and listens at once. @throws ListenError; std::invalid_argument for a bad host.
  Server(Api& api, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound port (useful with port 0).
  std::uint16_t port() const;

  /// Serves on options.threads threads (the caller's included) until stop() or a signal;
  /// then stops accepting, lets in-flight responses finish and closes every connection.
  void run();
  /// Thread-safe; may be called before or during run() (not after the Server is destroyed).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit::service
