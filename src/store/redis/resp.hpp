// RESP encoding and parsing through hiredis (redisFormatCommandArgv and the reader only;
// hiredis' own networking is not used). Not thread-safe: one reader per connection.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "admit/store/redis_client.hpp"

struct redisReader;

namespace admit::redis::detail {

/// One command encoded as RESP (a multi-bulk array of bulk strings), ready to be written.
class Command {
 public:
  Command() = default;
  /// Encodes `args`. @throws std::length_error above 512 MiB (Redis' proto-max-bulk-len).
  static Command encode(std::span<const std::string_view> args);

  const char* data() const { return data_.get(); }
  std::size_t size() const { return size_; }

  /// An EVALSHA encoded with a placeholder SHA1 (40 bytes): writes `sha1` over it.
  /// @return false (and changes nothing) unless this is such an EVALSHA and `sha1` is 40 bytes.
  bool set_evalsha_sha1(std::string_view sha1);

 private:
  struct Free {
    void operator()(char* p) const noexcept;
  };
  std::unique_ptr<char, Free> data_;
  std::size_t size_ = 0;
};

/// Incremental RESP parser: feed bytes as they arrive, take complete replies out in order.
class ReplyReader {
 public:
  ReplyReader();
  ~ReplyReader();
  ReplyReader(const ReplyReader&) = delete;
  ReplyReader& operator=(const ReplyReader&) = delete;

  /// Drops buffered bytes and any partial reply (for a new connection).
  void reset();
  /// Appends bytes; false on error (see error()).
  bool feed(const char* data, std::size_t size);
  /// The next complete reply, or nullptr when none is complete yet or on error.
  std::unique_ptr<Reply> next();
  /// Non-empty after a protocol error; the reader must then be reset.
  const std::string& error() const { return error_; }

 private:
  redisReader* reader_ = nullptr;
  std::string error_;
};

}  // namespace admit::redis::detail
