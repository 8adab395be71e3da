// The Redis servers of the tests: scripts/test (scripts/lib/redis.sh) starts them and names
// them in ADMIT_TEST_REDIS_URL (standalone), ADMIT_TEST_REDIS_AUTH_URL (with a password) and
// ADMIT_TEST_REDIS_CLUSTER (seed list of a 3-master cluster). A missing variable skips a test,
// or fails it when ADMIT_REQUIRE_REDIS=1.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
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

/// A port the kernel just handed out on 127.0.0.1 (free at that moment: nothing listens).
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace admit::test
