// The Redis servers of the tests: scripts/test (scripts/lib/redis.sh) starts them and names
// them in ADMIT_TEST_REDIS_URL (standalone), ADMIT_TEST_REDIS_AUTH_URL (with a password) and
// ADMIT_TEST_REDIS_CLUSTER (seed list of a 3-master cluster). A missing variable skips a test,
// or fails it when ADMIT_REQUIRE_REDIS=1.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

#include "admit/store/redis_client.hpp"
#include "admit/store/redis_store.hpp"

namespace admit::test {

inline std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

inline bool redis_required() { return env("ADMIT_REQUIRE_REDIS").value_or("") == "1"; }

/// Client options for the standalone server (cluster = false) or the cluster; nullopt with
/// `why` set when the variable is unset.
inline std::optional<redis::ClientOptions> redis_options(bool cluster, std::string& why) {
  const char* var = cluster ? "ADMIT_TEST_REDIS_CLUSTER" : "ADMIT_TEST_REDIS_URL";
  const auto v = env(var);
  if (!v) {
    why = std::string(var) + " is not set (scripts/test starts the servers)";
    return std::nullopt;
  }
  if (!cluster) return redis::parse_url(*v);
  redis::ClientOptions o;
  o.seeds = redis::parse_endpoints(*v);
  o.cluster = true;
  return o;
}

}  // namespace admit::test
