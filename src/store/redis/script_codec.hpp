// RedisStore's script codec: what admit.lua is sent (its ops, KEYS and ARGV; the layout is in
// the script's header comment) and how its replies are read back into ItemResults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../kernel.hpp"
#include "admit/core/error.hpp"
#include "admit/store/redis_client.hpp"
#include "admit/store/store.hpp"
#include "group_commit.hpp"

namespace admit::redis_store {

// The script's ops are the OpKinds' numbers (0 acquire .. 8 extend), and its own: acquires
// and decides on its fast path, one or many (group commit); drop idle fields (or expired
// lease records).
static_assert(static_cast<int>(OpKind::extend) == 8, "admit.lua numbers the OpKinds");
inline constexpr int kOpFast = 9;
inline constexpr int kOpPrune = 10;

// What a general op does with its lease record (ARGV 6; the record key is the last of KEYS).
enum class RecordMode : std::uint8_t {
  none = 0,     // no record
  write = 1,    // an acquire: writes Op::lease_record if admitted
  guarded = 2,  // adjust, release, extend (Op::lease_guard): compare, then replace or delete
};
inline RecordMode record_mode(const Op& op) noexcept {
  if (detail::guards_record(op)) return RecordMode::guarded;
  if (op.kind == OpKind::acquire && !op.lease_record.empty()) return RecordMode::write;
  return RecordMode::none;
}

// Whether the script's fast path runs `op`: an acquire or decide of rate and adaptive items
// only, none of a negative amount (an acquire would refund it), no two of them on one limit
// of one hash (`keys`: the op's Redis keys), and no lease record to write (a durable acquire
// takes the general path).
inline bool fast_path(const Op& op, const std::vector<std::string>& keys) {
  if (op.kind != OpKind::acquire && op.kind != OpKind::decide) return false;
  if (record_mode(op) != RecordMode::none) return false;
  for (std::size_t i = 0; i < op.items.size(); ++i) {
    const OpItem& it = op.items[i];
    if (!detail::is_rate(it.limit->kind()) || it.amount < 0) return false;
    for (std::size_t j = 0; j < i; ++j) {
      const OpItem& other = op.items[j];
      if (other.limit->name() == it.limit->name() &&
          (other.key == it.key || keys[other.key] == keys[it.key])) {
        return false;
      }
    }
  }
  return true;
}

// The script's op 9 for `batch`: each distinct limit's parameters once, then the ops, each
// op's keys after the previous ones', all the numbers in one JSON array. `server_time`:
// the script reads TIME (else each op's `now`).
void encode_fast(const std::vector<Pending*>& batch, bool server_time,
                 std::vector<std::string>& keys, std::vector<std::string>& argv);

// The ARGV of any other op (one script run of its own). Window items carry the window around
// `estimate` (the estimated server time, minus a margin) and the end of the next one; the
// script checks its clock against them. With a lease record (record_mode()), the op's KEYS
// end with its lease_key().
std::vector<std::string> encode_general(const Op& op, bool server_time, Micros caller_now,
                                        Micros estimate);

// The ARGV of a prune at `when` (0: the server's clock) of usage hashes, or (`records`) of
// lease records (each deleted if expired at `when`).
std::vector<std::string> encode_prune(Micros when, bool records = false);

// The server's clock in an "ADMIT_CLOCK now <µs> ..." error, or -1.
Micros clock_error_now(const std::string& msg);

// The error reply of a guarded op whose record did not match: "ADMIT_LEASE <why>".
inline constexpr std::string_view kLeaseErrorTag = "ADMIT_LEASE ";
// Throws LeaseNotFound for an ADMIT_LEASE error reply; returns for any other.
void throw_if_lease_error(const std::string& msg);

// A full reply, {all_ok, now, 7 per item}, into `results`; `server_now` receives its now.
// @return all_ok. @throws StoreUnavailable for a reply of another shape.
inline bool decode_items(const redis::Reply& reply, std::span<ItemResult> results,
                         Micros& server_now) {
  const std::size_t n = results.size();
  if (!reply.is_array() || reply.elements.size() != 2 + 7 * n) {
    throw StoreUnavailable("redis script: unexpected reply " + redis::to_string(reply));
  }
  server_now = reply.elements[1].integer;
  for (std::size_t i = 0; i < n; ++i) {
    const redis::Reply* e = &reply.elements[2 + 7 * i];
    ItemResult& r = results[i];
    r.ok = e[0].integer != 0;
    r.never = e[1].integer != 0;
    r.available = e[2].integer;
    r.retry_after = e[3].integer;
    r.reset_after = e[4].integer;
    r.window_end = e[5].integer;
    r.held = e[6].integer;
  }
  return reply.elements[0].integer != 0;
}

}  // namespace admit::redis_store
