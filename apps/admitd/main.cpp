// admitd: admission control over HTTP. Loads a YAML config into a Limiter backed by the
// in-memory store and serves /healthz, /v1/decide, /v1/acquire and /v1/limits.
// Exit codes: 0 after a clean shutdown, 1 if the address cannot be listened on, 2 on bad
// flags or config.
#include <CLI/CLI.hpp>

#include <charconv>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "service/api.hpp"
#include "service/config.hpp"
#include "service/server.hpp"

namespace {

constexpr const char* kDefaultConfig = "config/sample.yaml";

/// Splits "HOST:PORT" ("[::1]:8787" for IPv6); false if malformed.
bool split_listen(const std::string& s, std::string& host, std::uint16_t& port) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  host = s.substr(0, colon);
  if (host.find(':') != std::string::npos && (host.front() != '[' || host.back() != ']')) {
    return false;  // a bare IPv6 address needs brackets
  }
  const char* first = s.data() + colon + 1;
  const char* last = s.data() + s.size();
  const auto [p, ec] = std::from_chars(first, last, port);
  return ec == std::errc() && p == last;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.starts_with("127.") || host == "[::1]";
}

/// Holds SIGINT / SIGTERM pending from startup until the server's handlers are installed, so
/// that a stop request during startup is neither lost (a background job inherits SIGINT
/// ignored) nor fatal halfway through; it is then handled as a clean shutdown.
class DeferStopSignals {
 public:
  DeferStopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  ~DeferStopSignals() { release(); }
  void release() { pthread_sigmask(SIG_UNBLOCK, &set_, nullptr); }
  DeferStopSignals(const DeferStopSignals&) = delete;
  DeferStopSignals& operator=(const DeferStopSignals&) = delete;

 private:
  sigset_t set_{};
};

int fail(const std::string& message, int code) {
  std::fprintf(stderr, "admitd: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  DeferStopSignals defer_signals;
  CLI::App app{"admitd: admission control / rate limiting for LLM API traffic (HTTP/1.1)"};
  std::string config_path;
  std::string listen = "127.0.0.1:8787";
  int threads = 1;
  bool verbose = false;
  auto* config_opt =
      app.add_option("--config", config_path,
                     "YAML config file (default: config/sample.yaml if it exists here)")
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // scripts/run passes one
  app.add_option("--listen", listen, "HOST:PORT to listen on (IPv6: [::1]:8787)")
      ->capture_default_str();
  app.add_option("--threads", threads, "io threads")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_flag("-v,--verbose", verbose, "log one JSON line per request to stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, or the error and a hint
    return code == 0 ? 0 : 2;
  }

  if (config_opt->count() == 0) {
    if (!std::filesystem::exists(kDefaultConfig)) {
      return fail("--config is required (no config/sample.yaml in the current directory)", 2);
    }
    config_path = kDefaultConfig;
  }
  admit::service::ServerOptions options;
  if (!split_listen(listen, options.host, options.port)) {
    return fail("invalid --listen '" + listen + "': expected HOST:PORT, e.g. 127.0.0.1:8787", 2);
  }
  options.threads = threads;
  options.verbose = verbose;

  try {
    const admit::service::Config config = admit::service::load_config(config_path);
    admit::MemoryStore store;
    admit::SystemClock clock;
    admit::LimiterOptions limiter_options;
    limiter_options.ns = config.ns;
    admit::Limiter limiter(store, clock, limiter_options);
    admit::service::apply_config(config, limiter);

    admit::service::Api api(limiter);
    admit::service::Server server(api, options);  // installs the SIGINT / SIGTERM handlers
    defer_signals.release();
    if (!is_loopback(options.host)) {
      std::fprintf(stderr,
                   "admitd: warning: listening on non-loopback %s; there is no authentication\n",
                   options.host.c_str());
    }
    std::fprintf(stderr, "admitd listening on %s:%u, store=%s, config=%s, namespace=%s, threads=%d\n",
                 options.host.c_str(), static_cast<unsigned>(server.port()), store.name().c_str(),
                 config_path.c_str(), config.ns.c_str(), threads);
    server.run();
    std::fprintf(stderr, "admitd: stopped\n");
    return 0;
  } catch (const admit::ValidationError& e) {
    return fail(e.what(), 2);
  } catch (const std::invalid_argument& e) {
    return fail(std::string("invalid --listen: ") + e.what(), 2);
  } catch (const admit::service::ListenError& e) {
    return fail(e.what(), 1);
  } catch (const std::exception& e) {
    return fail(std::string("fatal: ") + e.what(), 1);
  }
}
