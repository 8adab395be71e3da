// admitd's `gateway:` section: the OpenAI-compatible routes (docs/proxy.md). Who the callers
// are (API keys or a trusted header -> entities), where requests go (upstreams: a base URL,
// an API key, the provider dialect of its rate-limit headers, its models), and how long a
// request may queue for capacity.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "admit/adapt/headers.hpp"

namespace admit::service {

/// A caller's key and the entity it acts as.
struct GatewayCaller {
  std::string key;     ///< what the client sends as `Authorization: Bearer KEY`
  std::string entity;  ///< whose limits (and parents') the request spends
  friend bool operator==(const GatewayCaller&, const GatewayCaller&) = default;
};

/// One provider endpoint requests are forwarded to.
struct GatewayUpstream {
  std::string name;      ///< also the Limiter entity whose limits pace it (learned ones too)
  std::string base_url;  ///< e.g. https://api.openai.com/v1 (checked by http::parse_base_url)
  std::string api_key;   ///< sent as `Authorization: Bearer`; "" sends none
  Provider dialect = Provider::openai;  ///< how its rate-limit headers are read
  std::vector<std::string> models;      ///< served here; empty: any model
  std::string ca_file;                  ///< PEM CAs for an https upstream; "": the system's
  std::size_t max_concurrent = 64;      ///< requests in flight to it at once
  int max_attempts = 3;                 ///< 1 + retries of its 429s and 5xx
  friend bool operator==(const GatewayUpstream&, const GatewayUpstream&) = default;
};

struct GatewayConfig {
  bool enabled = false;  ///< a `gateway:` section is present
  std::string ns;        ///< the namespace whose Limiter decides ("": the first)
  std::vector<GatewayCaller> callers;
  /// Without callers: a header naming the caller's entity (a trusted network only); "": none.
  /// Without callers and without this header every request is the entity `anonymous`.
  std::string entity_header;
  /// From arrival to the upstream's answer, queueing and retries included.
  std::chrono::milliseconds deadline{30'000};
  /// The output estimate when a request names no max_tokens (reconciled by the real usage).
  std::int64_t default_max_tokens = 1024;
  std::size_t max_body_bytes = 8 * 1024 * 1024;  ///< request bodies of the gateway routes
  std::vector<GatewayUpstream> upstreams;
  friend bool operator==(const GatewayConfig&, const GatewayConfig&) = default;
};

/// Reads a `gateway:` value. `source` names the file in messages.
/// @throws ValidationError naming the YAML path and file:line:col.
GatewayConfig parse_gateway_config(const YAML::Node& node, const std::string& source);

}  // namespace admit::service
