// One JSON line per log event on stderr, as admitd and the provider simulator write them:
// {"ts":"2026-12-07T01:12:00.123456Z","level":"info", then the event's own fields}.
#pragma once

namespace boost::json {
class object;
}  // namespace boost::json

namespace admit::log {

enum class Level { debug, info, warn, error };

/// Writes `fields` after "ts" (UTC, microseconds) and "level" as one line on stderr, in one
/// write, so that the lines of concurrent threads do not interleave. Never throws (a line that
/// cannot be built, out of memory, is dropped).
void json_line(Level level, const boost::json::object& fields) noexcept;

}  // namespace admit::log
