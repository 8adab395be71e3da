#include "common/log.hpp"

#include <spdlog/logger.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>

namespace admit::log {

namespace {

constexpr const char* kLevels[] = {"debug", "info", "warn", "error"};

spdlog::level::level_enum to_spdlog(Level l) {
  switch (l) {
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      break;
  }
  return spdlog::level::err;
}

/// The message is the whole line: spdlog adds only the end of line.
std::shared_ptr<spdlog::logger> make_logger(spdlog::sink_ptr sink, Level level) {
  auto logger = std::make_shared<spdlog::logger>("admit", std::move(sink));
  logger->set_pattern("%v");
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::trace);  // every line reaches the file or pipe at once
  return logger;
}

std::shared_ptr<spdlog::logger> current =
    make_logger(std::make_shared<spdlog::sinks::stderr_sink_mt>(), Level::info);
std::atomic<spdlog::logger*> active{current.get()};

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

std::optional<Level> parse_level(std::string_view name) {
  for (int i = 0; i < 4; ++i) {
    if (name == kLevels[i]) return static_cast<Level>(i);
  }
  return std::nullopt;
}

void configure(const Options& options) {
  spdlog::sink_ptr sink;
  if (options.file.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          options.file, options.max_file_bytes, options.max_files);
    } catch (const spdlog::spdlog_ex& e) {
      throw std::runtime_error("cannot log to " + options.file + ": " + e.what());
    }
  }
  // The logger replaced stays alive (a thread may be writing through it): configure() runs
  // once or twice per process.
  static std::vector<std::shared_ptr<spdlog::logger>> retired;
  retired.push_back(current);
  current = make_logger(std::move(sink), options.level);
  active.store(current.get(), std::memory_order_release);
}

bool enabled(Level level) noexcept {
  return active.load(std::memory_order_acquire)->should_log(to_spdlog(level));
}

void json_line(Level level, const boost::json::object& fields) noexcept {
  spdlog::logger* logger = active.load(std::memory_order_acquire);
  if (!logger->should_log(to_spdlog(level))) return;
  try {
    boost::json::object line;
    line.reserve(fields.size() + 2);
    line["ts"] = timestamp();
    line["level"] = kLevels[static_cast<int>(level)];
    for (const auto& kv : fields) {
      if (kv.key() != "ts" && kv.key() != "level") line[kv.key()] = kv.value();
    }
    const std::string text = boost::json::serialize(line);
    logger->log(to_spdlog(level), spdlog::string_view_t(text.data(), text.size()));
  } catch (...) {  // out of memory: a log line is not worth dying for
  }
}

}  // namespace admit::log
