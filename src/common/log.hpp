// One JSON line per log event, as admitd and the provider simulator write them:
// {"ts":"2026-12-07T01:12:00.123456Z","level":"info", then the event's own fields}.
// The fields are Boost.JSON (escaped as JSON requires); spdlog carries the lines: the level
// filter, and the sink (stderr, or a size-rotated file), written one whole line at a time so
// the lines of concurrent threads never interleave.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace boost::json {
class object;
}  // namespace boost::json

namespace admit::log {

enum class Level { debug, info, warn, error };

/// "debug", "info", "warn" or "error"; nullopt for anything else.
std::optional<Level> parse_level(std::string_view name);

struct Options {
  Level level = Level::info;  ///< events below it are not written (nor built)
  /// Empty: stderr. Else a file, rotated when it reaches max_file_bytes: PATH.1 ... PATH.N
  /// keep the older lines (N = max_files).
  std::string file;
  std::size_t max_file_bytes = 100 * 1024 * 1024;
  std::size_t max_files = 5;
};

/// Replaces where and what is logged (the default: info and above, on stderr). Call before
/// the threads that log start. @throws std::runtime_error if the file cannot be opened.
void configure(const Options& options);

/// True if an event of `level` would be written.
bool enabled(Level level) noexcept;

/// Writes `fields` after "ts" (UTC, microseconds) and "level" as one line. Never throws (a
/// line that cannot be built or written, out of memory or a full disk, is dropped).
void json_line(Level level, const boost::json::object& fields) noexcept;

}  // namespace admit::log
