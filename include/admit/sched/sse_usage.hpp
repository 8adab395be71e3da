// Token usage read from an OpenAI-style server-sent event stream: a streamed chat completion
// (the running count of content chunks so far, and the final `usage` object that
// `stream_options.include_usage` adds before `data: [DONE]`) or a streamed Responses API answer
// (output text deltas, and the usage of its `response.completed` event). Bytes go in as they
// arrive, split anywhere; hostile input (truncated or malformed JSON, huge, negative or non-integer
// counts, endless lines) is rejected event by event, never a crash or an exception.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace admit::sched {

/// The largest token count accepted in a `usage` object (10^12): anything larger is hostile.
inline constexpr std::int64_t kMaxUsageTokens = 1'000'000'000'000;

/// Token usage as a provider reports it, e.g. a `usage` object:
/// {"prompt_tokens":P,"completion_tokens":C,"total_tokens":T}. The scheduler's outcomes
/// (request.hpp) and the stream reader share it.
struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;  ///< as sent (parse_sse_data: else prompt + completion)
  /// total_tokens, or prompt + completion when it is 0.
  std::int64_t total() const {
    return total_tokens > 0 ? total_tokens : prompt_tokens + completion_tokens;
  }

  friend bool operator==(const Usage&, const Usage&) = default;
};

/// What one `data:` payload holds.
struct SseEvent {
  enum class Kind : std::uint8_t {
    chunk,    ///< a chat.completion.chunk (JSON object) that was read
    done,     ///< `[DONE]`
    invalid,  ///< rejected: `error` says why; nothing of it counts
  };
  Kind kind = Kind::invalid;
  /// Choices of this chunk whose delta.content is a non-empty string, or 1 for a Responses
  /// API `response.output_text.delta` with a non-empty delta (one per token on OpenAI and
  /// admit-provider-sim; a running count, not an exact one, elsewhere).
  std::int64_t content_chunks = 0;
  /// The chunk's `usage` object when it is one (null or absent: none); for a Responses API
  /// `response.completed`, `.incomplete` or `.failed` event its response's usage, whose
  /// input_tokens and output_tokens are read as prompt and completion tokens.
  std::optional<Usage> usage;
  std::string error;
};

/**
 * Reads one event's data (the text after `data:`, lines joined by '\n'). An object with a
 * string `type` is a Responses API event (see SseEvent). A `usage` member is
 * accepted only as an object whose prompt_tokens and completion_tokens are integers in
 * [0, kMaxUsageTokens] and whose total_tokens, if present, is such an integer no smaller than
 * either (absent: their sum); otherwise the whole event is invalid. `choices` must be an array
 * when present. Never throws (except std::bad_alloc).
 */
SseEvent parse_sse_data(std::string_view data);

/**
 * Incremental reader of a text/event-stream body. Not thread-safe (one per stream).
 * Lines end with "\n", "\r\n" or "\r"; `data:` fields (one optional space after the colon)
 * are joined and dispatched at a blank line, as the SSE standard says; other fields and
 * comments are ignored. Events after `[DONE]` are ignored.
 */
class SseUsageParser {
 public:
  /// Events (or lines) longer than this are dropped and counted as rejected.
  static constexpr std::size_t kDefaultMaxEventBytes = 1 << 20;

  explicit SseUsageParser(std::size_t max_event_bytes = kDefaultMaxEventBytes)
      : max_event_bytes_(max_event_bytes) {}

  /// Consumes the next bytes of the body. @return content chunks counted by this call.
  std::int64_t feed(std::string_view bytes);

  /// Content chunks so far (the running count).
  std::int64_t content_chunks() const { return content_chunks_; }
  /// The last valid `usage` object seen (the final one once done()).
  const std::optional<Usage>& usage() const { return usage_; }
  /// True once `data: [DONE]` was read.
  bool done() const { return done_; }
  /// Events that were read (valid or not).
  std::uint64_t events() const { return events_; }
  /// Events rejected (bad JSON, bad usage, too long), and why the last one was.
  std::uint64_t rejected() const { return rejected_; }
  const std::string& last_error() const { return last_error_; }

 private:
  void line(std::string_view l);
  void dispatch();
  void reject(std::string why);

  std::size_t max_event_bytes_;
  std::string pending_;  // a line not ended yet
  std::string data_;     // the current event's data lines
  bool has_data_ = false;
  bool skipping_ = false;   // inside a line that was too long: dropped up to its end
  bool event_bad_ = false;  // the current event overflowed: rejected at its dispatch
  bool after_cr_ = false;   // the last byte was '\r' (a '\n' right after it ends nothing)
  bool done_ = false;
  std::int64_t content_chunks_ = 0;
  std::optional<Usage> usage_;
  std::uint64_t events_ = 0;
  std::uint64_t rejected_ = 0;
  std::string last_error_;
};

}  // namespace admit::sched
