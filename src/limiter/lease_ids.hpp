// Lease ids of leases that hold concurrency slots (the store keys their holds by it).
#pragma once

#include <cstdint>

namespace admit::detail {

// A new lease id, never 0. Each thread takes ids in blocks so the hot path does not contend on
// one counter; the blocks start at a random point of the 64-bit space, so processes sharing a
// store (SQLite, Redis) hold distinct ids: two processes' ranges overlap with probability about
// (their leases) / 2^54.
std::uint64_t next_lease_id();

// A durable lease's id (AcquireOptions::durable): 64 bits from the system's entropy source
// (getrandom), never 0, so that a client holding one lease token cannot guess another's.
std::uint64_t random_lease_id();

}  // namespace admit::detail
