// admit-provider-sim's HTTP API without the networking: routes one request to the
// ProviderModel and renders an OpenAI-compatible response (JSON or a paced SSE stream) of
// chat completions, legacy completions, the Responses API or embeddings.
// Thread-safe; never throws.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/core/time.hpp"
#include "admit/sim/provider.hpp"

namespace boost::json {
class object;
}

namespace admit::sim {

struct AppOptions {
  Micros latency = 0;            ///< before the first byte of an admitted completion, <= 1 h
  double tokens_per_second = 0;  ///< completion speed; 0 = as fast as possible, else 0.01 to 1e9
  std::uint64_t seed = 1;        ///< completion lengths and texts derive from it
  std::string admin_token;       ///< empty: /sim/* need no Authorization
  bool verbose = false;          ///< one JSON line per request on stderr
};

/// The parts of an HTTP request the API reads.
struct HttpRequest {
  std::string_view method;
  std::string_view target;  ///< path, a query string is ignored
  std::string_view body;
  std::string_view authorization;  ///< the Authorization header; empty if absent
  std::string_view x_api_key;      ///< the x-api-key header (Anthropic style); empty if absent
};

/// The generating APIs: they share the charge, the completion and its pacing, and differ in
/// how they are asked and answered.
enum class Api {
  chat,         ///< POST /v1/chat/completions: chat.completion, chat.completion.chunk
  completions,  ///< POST /v1/completions (legacy): text_completion
  responses,    ///< POST /v1/responses: response, typed events (response.created, ...)
};

/// A streamed completion, rendered one server-sent event at a time (a long completion is
/// never held in memory whole; only the Responses API's closing events repeat its text).
/// Immutable; thread-safe.
class Stream {
 public:
  /// Everything an event needs; `words` content events, one per word.
  struct Spec {
    Api api = Api::chat;
    std::string id;
    std::int64_t created = 0;  ///< Unix seconds
    std::string model;
    std::int64_t prompt_tokens = 0;
    std::int64_t words = 0;              ///< completion tokens, one per content chunk
    std::uint64_t first_word = 0;        ///< offset into the lorem word list
    bool truncated = false;              ///< finish_reason "length" (responses: "incomplete")
    bool include_usage = false;          ///< stream_options.include_usage (responses: always)
    Micros interval = 0;                 ///< before each content chunk
    std::int64_t max_output_tokens = 0;  ///< responses: echoed; 0 = not given (null)
  };

  explicit Stream(Spec spec) : spec_(std::move(spec)) {}

  /// Number of events. chat: role, one per word, finish, [usage], [DONE]. completions: one
  /// per word, finish, [usage], [DONE]. responses: response.created, response.in_progress,
  /// response.output_item.added, response.content_part.added, one response.output_text.delta
  /// per word, response.output_text.done, response.content_part.done,
  /// response.output_item.done, response.completed (or response.incomplete); no [DONE].
  std::size_t size() const noexcept;
  /// µs to wait before event `i` < size(): `interval` before a content chunk, else 0.
  Micros delay(std::size_t i) const noexcept;
  /// Event `i` < size(): "data: {...}\n\n" (responses: "event: TYPE\ndata: {...}\n\n").
  std::string event(std::size_t i) const;

 private:
  Spec spec_;
};

/// What to send back.
struct Reply {
  unsigned status = 200;
  /// Lower-case names; content-type included.
  std::vector<std::pair<std::string, std::string>> headers;
  /// The body when !stream.
  std::string body;
  /// Server-sent events, if set: written in order with chunked encoding instead of `body`.
  std::shared_ptr<const Stream> stream;
  /// µs to wait before the status line: latency, plus the generation time if not streaming.
  Micros delay = 0;

  /// Value of the header `name` (lower case), or "".
  std::string_view header(std::string_view name) const noexcept;
};

class App {
 public:
  /// `model` must outlive the App. @throws std::invalid_argument for out-of-range options.
  App(ProviderModel& model, AppOptions options);

  /// Handles one request arriving at `now` (µs since the Unix epoch). Never throws: a bug
  /// becomes a 500 reply.
  Reply handle(const HttpRequest& req, Micros now) noexcept;

  const AppOptions& options() const noexcept { return options_; }

 private:
  /// A request charged to the hidden buckets: `reply` has the rate-limit headers and
  /// x-request-id, and is complete (429 and the provider's body) unless `admitted`.
  struct Charged {
    Reply reply;
    bool admitted = false;
    std::uint64_t id = 0;  ///< the request's number (x-request-id, completion ids)
  };

  Reply route(const HttpRequest& req, Micros now);
  Charged charge(const HttpRequest& req, const std::string& model, std::int64_t prompt_tokens,
                 std::int64_t max_tokens, Micros now);
  /// Chat completions, completions and responses once parsed: the charge, then the
  /// completion whole or streamed.
  Reply generate(const HttpRequest& req, Api api, Micros now);
  Reply embeddings(const HttpRequest& req, Micros now);
  Reply post_limits(std::string_view body, Micros now);

  ProviderModel& model_;
  const AppOptions options_;
  std::atomic<std::uint64_t> requests_{0};  ///< API requests seen (completion ids)
  std::atomic<std::uint64_t> admitted_{0};  ///< API requests admitted (completion lengths)
};

/// Writes `o` as one JSON line to stderr (a single write: lines of threads do not mix).
void log_json(const boost::json::object& o) noexcept;

/// Prompt tokens one message adds: ceil(code points of its text / 4) + 4 (the text is
/// UTF-8; every byte that does not continue a sequence counts). Exposed for tests.
std::int64_t message_tokens(std::string_view text) noexcept;

/// The completion length of the `n`-th admitted request (0-based): in [1, max_tokens], a
/// deterministic function of (seed, n). Exposed for tests.
std::int64_t completion_tokens(std::uint64_t seed, std::uint64_t n,
                               std::int64_t max_tokens) noexcept;

}  // namespace admit::sim
