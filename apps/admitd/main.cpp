// admitd: admission control over HTTP. Loads a YAML config into a Limiter backed by the
// in-memory store and serves /healthz, /v1/decide, /v1/acquire and /v1/limits.
// Prints "listening on http://HOST:PORT" as the first line on stdout; logs on stderr.
// Exit codes: 0 after a clean shutdown, 1 if the address cannot be listened on, 2 on bad
// flags or config.
#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/version.hpp"
#include "common/http/server.hpp"
#include "common/http/startup.hpp"
#include "service/api.hpp"
#include "service/config.hpp"
#include "service/http_handler.hpp"

namespace {

constexpr const char* kDefaultConfig = "config/sample.yaml";

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.starts_with("127.") || host == "[::1]";
}

}  // namespace

int main(int argc, char** argv) {
  namespace http = admit::http;
  http::Startup startup("admitd");  // holds stop signals until the server handles them
  CLI::App app{"admitd: admission control / rate limiting for LLM API traffic (HTTP/1.1)"};
  std::string config_path;
  std::string listen = "127.0.0.1:8787";
  int threads = 1;
  std::size_t max_connections = http::ServerOptions{}.max_connections;
  bool verbose = false;
  auto* config_opt =
      app.add_option("--config", config_path,
                     "YAML config file (default: config/sample.yaml if it exists here)")
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // scripts/run passes one
  app.add_option("--listen", listen, "HOST:PORT to listen on (IPv6: [::1]:8787)")
      ->capture_default_str();
  app.add_option("--threads", threads, "io threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--max-connections", max_connections,
                 "open connections at most; more get 503 (lowered to fit the fd limit)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_flag("-v,--verbose", verbose, "log one JSON line per request to stderr");
  app.set_version_flag("--version", "admitd " + std::string(admit::version_string));
  if (const auto rc = startup.parse(app, argc, argv)) return *rc;

  if (config_opt->count() == 0) {
    if (!std::filesystem::exists(kDefaultConfig)) {
      return startup.fail("--config is required (no config/sample.yaml in the current directory)",
                          http::kExitUsage);
    }
    config_path = kDefaultConfig;
  }
  http::ServerOptions options;  // the defaults: 64 KiB bodies, 30 s idle, 5 s to stop
  options.name = "admitd";
  if (!http::split_listen(listen, options.host, options.port)) {
    return startup.fail(
        "invalid --listen '" + listen + "': expected HOST:PORT, e.g. 127.0.0.1:8787",
        http::kExitUsage);
  }
  try {
    http::check_host(options.host);
  } catch (const std::invalid_argument& e) {
    return startup.fail(std::string("invalid --listen: ") + e.what(), http::kExitUsage);
  }
  options.threads = threads;
  options.max_connections = max_connections;
  options.access_log = verbose;

  return startup.run([&] {
    const admit::service::Config config = admit::service::load_config(config_path);
    admit::MemoryStore store;
    admit::SystemClock clock;
    admit::LimiterOptions limiter_options;
    limiter_options.ns = config.ns;
    admit::Limiter limiter(store, clock, limiter_options);
    admit::service::apply_config(config, limiter);

    admit::service::Api api(limiter);
    admit::service::HttpHandler handler(api);
    http::Server server(handler, options);  // installs the signal handlers
    startup.listening(server);
    if (!is_loopback(options.host)) {
      std::fprintf(stderr,
                   "admitd: warning: listening on non-loopback %s; there is no authentication\n",
                   options.host.c_str());
    }
    std::fprintf(stderr,
                 "admitd listening on %s:%u, store=%s, config=%s, namespace=%s, threads=%d, "
                 "max_connections=%zu\n",
                 options.host.c_str(), static_cast<unsigned>(server.port()), store.name().c_str(),
                 config_path.c_str(), config.ns.c_str(), threads, server.max_connections());
    server.run();
    std::fprintf(stderr, "admitd: stopped\n");
    return http::kExitOk;
  });
}
