#include "admit/core/decision.hpp"

namespace admit {

std::string_view to_string(Code c) {
  switch (c) {
    case Code::ok:
      return "ok";
    case Code::rate_exceeded:
      return "rate_exceeded";
    case Code::window_exceeded:
      return "window_exceeded";
    case Code::concurrency_exceeded:
      return "concurrency_exceeded";
    case Code::exceeds_capacity:
      return "exceeds_capacity";
    case Code::queue_ahead:
      return "queue_ahead";
    case Code::unknown_limit:
      return "unknown_limit";
    case Code::invalid_argument:
      return "invalid_argument";
    case Code::store_unavailable:
      return "store_unavailable";
    case Code::timeout:
      return "timeout";
    case Code::cancelled:
      return "cancelled";
    case Code::lease_not_found:
      return "lease_not_found";
  }
  return "unknown";
}

std::string_view to_string(ConfigSource s) {
  switch (s) {
    case ConfigSource::discovered:
      return "discovered";
    case ConfigSource::entity:
      return "entity";
    case ConfigSource::entity_default:
      return "entity_default";
    case ConfigSource::resource:
      return "resource";
    case ConfigSource::system:
      return "system";
  }
  return "unknown";
}

std::int64_t Decision::retry_after_header() const {
  switch (code) {  // retrying cannot help these: no Retry-After
    case Code::ok:
    case Code::exceeds_capacity:
    case Code::unknown_limit:
    case Code::invalid_argument:
      return 0;
    default:
      break;
  }
  if (allowed) return 0;
  const std::int64_t s = (retry_after + kMicrosPerSecond - 1) / kMicrosPerSecond;
  return s < 1 ? 1 : s;
}

}  // namespace admit
