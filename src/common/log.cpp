#include "common/log.hpp"

#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace admit::log {

namespace {

constexpr const char* kLevels[] = {"debug", "info", "warn", "error"};

/// RFC 3339 in UTC with microseconds: 2026-12-07T01:12:00.123456Z.
std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // ample: GCC sizes every field at its int range
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(us % 1'000'000));
  return buf;
}

}  // namespace

void json_line(Level level, const boost::json::object& fields) noexcept {
  try {
    boost::json::object line;
    line.reserve(fields.size() + 2);
    line["ts"] = timestamp();
    line["level"] = kLevels[static_cast<int>(level)];
    for (const auto& kv : fields) {
      if (kv.key() != "ts" && kv.key() != "level") line[kv.key()] = kv.value();
    }
    std::string text = boost::json::serialize(line);
    text += '\n';
    for (std::size_t done = 0; done < text.size();) {  // one write() for a line of < PIPE_BUF
      const ssize_t n = ::write(STDERR_FILENO, text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
  } catch (...) {  // out of memory: a log line is not worth dying for
  }
}

}  // namespace admit::log
