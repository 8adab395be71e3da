// Limit sets as text: the form stores keep limit configurations in (Store::put_config) so
// every process of a fleet reads the same limits. A JSON array, one object per limit; the
// round trip is exact for all four kinds (doubles are written with std::to_chars' shortest
// exact form, as strings, and read back with std::from_chars).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/limit.hpp"

namespace admit {

/**
 * E.g. [{"name":"rpm","kind":"rate","capacity":100,"refill_amount":100,
 * "refill_period_us":60000000},{"name":"rpd","kind":"window","capacity":1000,"unit":"day",
 * "reset_at":"00:00","time_zone":"UTC"},{"name":"slots","kind":"concurrency","capacity":8},
 * {"name":"aimd","kind":"adaptive","burst":1,"max_rate":"50","initial_rate":"1",...}].
 * A shadow limit (Limit::shadow) carries "shadow":true; the field is left out otherwise, so
 * a limit that is not shadow encodes as it did before the flag existed.
 */
std::string encode_limits(std::span<const Limit> limits);

/**
 * The limits encode_limits() wrote (decode(encode(x)) == x, limit by limit). An object
 * without "shadow" (any earlier encoding) is not shadow; "shadow" must be a boolean.
 * @throws ValidationError naming what is wrong (not JSON, a missing or mistyped field, a
 *         value a Limit factory refuses, a name twice).
 */
std::vector<Limit> decode_limits(std::string_view text);

}  // namespace admit
