// admit-provider-sim: an OpenAI-compatible server (chat completions, completions, responses,
// embeddings) with hidden per-key rate limits (see docs/provider-sim.md). Prints "listening on
// http://HOST:PORT" as the first line on stdout; logs one JSON line per event on stderr.
// Exit codes: 0 after SIGINT / SIGTERM, 1 if the address cannot be listened on, 2 on bad flags.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cstdint>
#include <string>

#include "admit/core/clock.hpp"
#include "admit/sim/provider.hpp"
#include "common/http/server.hpp"
#include "common/http/startup.hpp"
#include "src/app.hpp"
#include "src/http_handler.hpp"

int main(int argc, char** argv) {
  namespace http = admit::http;
  http::Startup startup("admit-provider-sim");  // holds SIGINT / SIGTERM until the server does
  CLI::App cli{"admit-provider-sim: an OpenAI-compatible LLM API with hidden rate limits"};
  http::ServerOptions server_options = admit::sim::server_options();
  admit::sim::AppOptions app_options;
  admit::sim::SimLimits limits;
  std::string dialect = "openai";
  std::int64_t latency_ms = 0;
  cli.add_option("--host", server_options.host, "address to listen on")->capture_default_str();
  cli.add_option("--port", server_options.port, "port; 0 picks a free one")->capture_default_str();
  cli.add_option("--rpm", limits.rpm, "requests per minute per API key; 0 = unlimited")
      ->capture_default_str();
  cli.add_option("--tpm", limits.tpm,
                 "tokens (prompt + max_tokens) per minute per API key; 0 = unlimited")
      ->capture_default_str();
  cli.add_option("--dialect", dialect, "rate-limit headers to send")
      ->check(CLI::IsMember({"openai", "anthropic"}))
      ->capture_default_str();
  cli.add_option("--latency-ms", latency_ms, "time to first byte of an admitted completion")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{3'600'000}))
      ->capture_default_str();
  cli.add_option("--tokens-per-second", app_options.tokens_per_second,
                 "completion speed; 0 = as fast as possible")
      ->capture_default_str();
  cli.add_option("--seed", app_options.seed, "seed of completion lengths and texts")
      ->capture_default_str();
  cli.add_option("--admin-token", app_options.admin_token,
                 "if set, /sim/* need 'Authorization: Bearer TOKEN'");
  cli.add_option("--threads", server_options.threads, "io threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cli.add_flag("-v,--verbose", app_options.verbose, "log one JSON line per request to stderr");
  if (const auto rc = startup.parse(cli, argc, argv)) return *rc;
  app_options.latency = latency_ms * 1'000;

  return startup.run([&] {
    admit::sim::ProviderModel model(limits, *admit::sim::dialect_from_string(dialect));
    admit::sim::App app(model, app_options);
    admit::SystemClock clock;
    admit::sim::HttpHandler handler(app, clock);
    http::Server server(handler, server_options);  // installs the signal handlers
    const std::string url = startup.listening(server);
    // Boost.JSON writes doubles as "5E1": an integral speed is logged as an integer.
    const double tps = app_options.tokens_per_second;
    const boost::json::value tps_json = tps == static_cast<double>(static_cast<std::int64_t>(tps))
                                            ? boost::json::value(static_cast<std::int64_t>(tps))
                                            : boost::json::value(tps);
    admit::sim::log_json({{"msg", "started"},
                          {"url", url},
                          {"rpm", limits.rpm},
                          {"tpm", limits.tpm},
                          {"dialect", dialect},
                          {"latency_ms", latency_ms},
                          {"tokens_per_second", tps_json},
                          {"seed", app_options.seed},
                          {"threads", server_options.threads},
                          {"admin_token", !app_options.admin_token.empty()}});
    server.run();
    admit::sim::log_json({{"msg", "stopped"}});
    return http::kExitOk;
  });
}
