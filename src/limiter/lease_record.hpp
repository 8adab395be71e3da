// Durable leases (AcquireOptions::durable): the record a lease keeps in the store, so any
// Limiter on the same store and namespace can take it up (Limiter::resume), and the token
// that names it. Both are Limiter-internal formats: a record is only ever read back by this
// code, a token only ever parsed by parse_lease_token.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "lease_key.hpp"

namespace admit::detail {

/// What a lease holds on each of its key's items (Lease::Held), as stored.
struct RecordHeld {
  std::int64_t consumed = 0;
  Micros window_end = 0;
};

/// The record of a lease: its key (resource, entity chain, every limit with its source) and
/// what it holds. Deterministic: the same lease state always gives the same bytes (the store
/// compares records to detect a concurrent change).
std::string encode_lease_record(const LeaseKey& key, std::span<const RecordHeld> held, bool slots);

/// A record read back: the key (its items' `aimd` unset) and holdings.
struct DecodedRecord {
  std::unique_ptr<LeaseKey> key;
  std::vector<RecordHeld> held;
  bool slots = false;
};
/// @return nullopt if `data` is not a record encode_lease_record() wrote.
std::optional<DecodedRecord> decode_lease_record(std::string_view data);

/// A lease's token: "<id as 16 hex digits>.<the group's bytes as hex>": URL-safe, so
/// it can be a path segment.
std::string lease_token(std::uint64_t id, std::string_view group);

struct ParsedToken {
  std::uint64_t id = 0;
  std::string group;
};
/// @return nullopt unless `token` is exactly what lease_token() writes for a valid group.
std::optional<ParsedToken> parse_lease_token(std::string_view token);

}  // namespace admit::detail
