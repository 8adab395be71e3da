#include "lease_ids.hpp"

#include <atomic>
#include <random>

namespace admit::detail {

namespace {

std::uint64_t random_lease_block() {
  std::random_device rd;
  const std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return (r >> 10) | 1;  // block * 1024 stays below 2^64; never 0
}
std::atomic<std::uint64_t> g_next_lease_block{random_lease_block()};
constexpr std::uint64_t kLeaseBlock = 1024;
thread_local std::uint64_t t_lease_next = 0;
thread_local std::uint64_t t_lease_end = 0;

}  // namespace

std::uint64_t random_lease_id() {
  thread_local std::random_device rd;  // /dev/urandom or getrandom: not predictable
  for (;;) {
    const std::uint64_t id = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    if (id != 0) return id;
  }
}

std::uint64_t next_lease_id() {
  if (t_lease_next == t_lease_end) {
    t_lease_next = g_next_lease_block.fetch_add(1, std::memory_order_relaxed) * kLeaseBlock;
    t_lease_end = t_lease_next + kLeaseBlock;
  }
  return t_lease_next++;
}

}  // namespace admit::detail
