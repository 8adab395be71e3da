// What the main() of admitd and admit-provider-sim share: stop signals held pending during
// startup, the command line's exit codes, the "listening on http://HOST:PORT" line, and the
// mapping of startup errors to messages and exit codes. parse() needs CLI11 (header-only),
// which the binaries link.
#pragma once

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace admit::http {

class Server;

inline constexpr int kExitOk = 0;       ///< a clean shutdown (SIGINT / SIGTERM), or --help
inline constexpr int kExitFailure = 1;  ///< the address cannot be listened on, or a fatal error
inline constexpr int kExitUsage = 2;    ///< bad flags or config

/// Usage, first thing in main():
///   admit::http::Startup startup("admitd");
///   ... CLI options ...
///   if (const auto rc = startup.parse(cli, argc, argv)) return *rc;
///   return startup.run([&] { ...; Server server(handler, options); startup.listening(server);
///                            server.run(); return kExitOk; });
class Startup {
 public:
  /// Holds SIGINT / SIGTERM / SIGHUP pending from now until listening(), so that a stop
  /// request during startup is neither lost (a background job inherits SIGINT ignored) nor
  /// fatal halfway through: the server then handles it as a clean shutdown (SIGHUP: see
  /// ServerOptions::on_hangup). Also raises the file-descriptor limit (raise_fd_limit()).
  /// Construct it before any thread.
  explicit Startup(std::string program);
  ~Startup();
  Startup(const Startup&) = delete;
  Startup& operator=(const Startup&) = delete;

  /// Parses the command line: nullopt to go on, else the exit code (0 after --help, 2 on an
  /// error, whose message and a hint CLI11 prints).
  std::optional<int> parse(CLI::App& cli, int argc, char** argv) const {
    try {
      cli.parse(argc, argv);
      return std::nullopt;
    } catch (const CLI::ParseError& e) {
      return cli.exit(e) == 0 ? kExitOk : kExitUsage;
    }
  }

  /// Prints "PROGRAM: MESSAGE" on stderr; returns `code`.
  int fail(const std::string& message, int code) const;

  /// Runs `serve` and returns its exit code; what it throws becomes "PROGRAM: MESSAGE" and
  /// an exit code: ListenError 1, std::invalid_argument and admit::ValidationError 2 (bad
  /// flags or config), anything else 1 ("fatal: ...").
  int run(const std::function<int()>& serve) const;

  /// Call once the server is constructed (its signal handlers installed): releases the held
  /// signals and prints "listening on URL" as the first line on stdout, flushed, so that a
  /// script can read the port it got. Returns the URL (http://HOST:PORT).
  std::string listening(const Server& server);

 private:
  void release_signals();

  std::string program_;
  sigset_t held_{};
  bool holding_ = false;
};

/// Splits "HOST:PORT" ("[::1]:8787" for IPv6); false if malformed.
bool split_listen(const std::string& s, std::string& host, std::uint16_t& port);

}  // namespace admit::http
