// admitd: admission control over HTTP. Loads a YAML config into a Limiter backed by the
// configured store (`store:`: memory, SQLite or Redis) and serves /healthz, /v1/decide,
// /v1/acquire, /v1/limits and /metrics (Prometheus).
// Prints "listening on http://HOST:PORT" as the first line on stdout; logs on stderr.
// Exit codes: 0 after a clean shutdown, 1 if the address cannot be listened on, 2 on bad
// flags or config.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/version.hpp"
#include "common/http/server.hpp"
#include "common/http/startup.hpp"
#include "common/log.hpp"
#include "service/api.hpp"
#include "service/auth.hpp"
#include "service/config.hpp"
#include "service/http_handler.hpp"
#include "service/metrics.hpp"
#include "service/proxy/gateway.hpp"
#include "service/pruner.hpp"
#include "service/reload.hpp"

namespace {

constexpr const char* kDefaultConfig = "config/sample.yaml";

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
  bool insecure = false;
  admit::service::ApiOptions api_options;
  std::string token_file;
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
  app.add_flag("-v,--verbose", verbose, "log one JSON line per request (an access log)");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error: lines below are dropped")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  admit::log::Options log_options;
  app.add_option("--log-file", log_options.file,
                 "write the JSON log lines to this file (rotated at 100 MiB, 5 kept) instead "
                 "of stderr");
  app.add_option("--token-file", token_file,
                 "bearer tokens, one a line: TOKEN [decide|admin [NAMESPACE,...]]");
  app.add_flag("--openai-headers", api_options.openai_headers,
               "also answer OpenAI-style x-ratelimit-* headers (docs/api.md)");
  app.add_flag("--insecure", insecure,
               "allow a non-loopback --listen without bearer tokens (no authentication)");
  app.set_version_flag("--version", "admitd " + std::string(admit::version_string));
  if (const auto rc = startup.parse(app, argc, argv)) return *rc;
  log_options.level = admit::log::parse_level(log_level).value_or(admit::log::Level::info);
  try {
    admit::log::configure(log_options);
  } catch (const std::runtime_error& e) {
    return startup.fail(e.what(), http::kExitUsage);
  }

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
    std::vector<admit::service::TokenConfig> tokens = config.tokens;
    if (!token_file.empty()) {
      for (auto& t : admit::service::load_token_file(token_file)) tokens.push_back(std::move(t));
    }
    admit::service::Auth auth(tokens);  // std::invalid_argument: exit 2
    if (const auto refusal = admit::service::bind_refusal(options.host, auth.enabled(), insecure)) {
      throw std::invalid_argument(*refusal);
    }
    const admit::service::OpenStore store(config.store);
    admit::SystemClock clock;
    // A Limiter per namespace, on the one store; the first serves requests naming none.
    std::deque<admit::Limiter> limiter_storage;
    std::vector<admit::Limiter*> limiters;
    for (const admit::service::NamespaceConfig* ns : config.namespaces()) {
      admit::LimiterOptions limiter_options;
      limiter_options.ns = ns->ns;
      limiter_options.config = config.store.config;
      limiter_options.config_ttl = config.store.config_ttl;
      limiter_options.adaptation = config.store.adaptation;
      limiter_options.adaptation_refresh = config.store.adaptation_refresh;
      limiter_options.adaptation_ttl = config.store.adaptation_ttl;
      limiters.push_back(&limiter_storage.emplace_back(store.store(), clock, limiter_options));
      admit::service::apply_config(*ns, *limiters.back());
    }

    // The resources with a metrics label of their own: those the config names.
    const auto resources_of = [](const admit::service::Config& c) {
      std::vector<std::string> names;
      for (const admit::service::NamespaceConfig* ns : c.namespaces()) {
        for (const auto& r : ns->resources) names.push_back(r.first);
      }
      return names;
    };
    admit::service::Metrics metrics(*limiters.front(), resources_of(config));
    metrics.watch_store(store.guard());
    metrics.watch_memory_store(store.memory());
    metrics.watch_leases(&store.store());
    // Idle keys and orphaned lease records leave a memory or SQLite store on a timer.
    const admit::service::Pruner pruner(store.store(), clock,
                                        config.store.kind == admit::service::StoreKind::redis
                                            ? std::chrono::milliseconds(0)
                                            : config.store.prune_interval);
    // SIGHUP reads the file again; a bad file, or one that changes what needs a restart, is
    // refused and the config in force keeps serving (service/reload.hpp).
    admit::service::Reloader reloader(
        config_path, config, limiters,
        [&](const admit::service::Config& next) { metrics.set_resources(resources_of(next)); });
    options.on_hangup = [&reloader] { (void)reloader.reload(); };
    api_options.reload = [&reloader](std::string_view principal) {
      const admit::service::ReloadResult r = reloader.reload(principal);
      return std::pair(r.applied, r.message);
    };
    admit::service::Api api(limiters, &metrics, api_options);
    // The OpenAI-compatible routes (docs/proxy.md), on the limiter of the namespace they name.
    admit::Limiter* gateway_limiter = nullptr;
    if (config.gateway.enabled) {
      gateway_limiter = limiters.front();
      const auto names = config.namespaces();
      for (std::size_t i = 0; i < names.size(); ++i) {
        if (names[i]->ns == config.gateway.ns) gateway_limiter = limiters[i];
      }
      if (!config.gateway.ns.empty() && gateway_limiter->options().ns != config.gateway.ns) {
        throw std::invalid_argument("gateway.namespace '" + config.gateway.ns +
                                    "' is not a namespace of the config");
      }
      options.body_limit = std::max(options.body_limit, config.gateway.max_body_bytes);
    }
    admit::service::HttpHandler handler(api, auth, admit::service::RequestGuard(config.http),
                                        config.ns);
    http::Server server(handler, options);  // installs the signal handlers
    // On the server's io_context: a request is forwarded and answered on the thread that
    // took it. Declared after the server: destroyed first, once run() has returned.
    std::unique_ptr<admit::service::Gateway> gateway;
    if (gateway_limiter != nullptr) {
      gateway = std::make_unique<admit::service::Gateway>(config.gateway, *gateway_limiter,
                                                          &metrics, server.io_context());
      handler.set_gateway(gateway.get());
    }
    metrics.watch_connections([&server] { return server.connections(); }, server.max_connections());
    startup.listening(server);
    if (!auth.enabled() && !admit::service::is_loopback(options.host)) {
      std::fprintf(stderr,
                   "admitd: warning: --insecure: listening on non-loopback %s without "
                   "authentication\n",
                   options.host.c_str());
    }
    std::string namespaces;
    for (const admit::service::NamespaceConfig* ns : config.namespaces()) {
      namespaces += (namespaces.empty() ? "" : ",") + ns->ns;
    }
    std::fprintf(stderr,
                 "admitd listening on %s:%u, store=%s, config=%s, namespaces=%s, threads=%d, "
                 "max_connections=%zu\n",
                 options.host.c_str(), static_cast<unsigned>(server.port()),
                 store.describe().c_str(), config_path.c_str(), namespaces.c_str(), threads,
                 server.max_connections());
    server.run();
    std::fprintf(stderr, "admitd: stopped\n");
    return http::kExitOk;
  });
}
