// admit-provider-sim's HTTP API without the networking: routes one request to the
// ProviderModel and renders an OpenAI-compatible response (JSON or a paced SSE stream).
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
  Micros latency = 0;            ///< before the first byte of an admitted chat completion, <= 1 h
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

/// A streamed chat completion, rendered one server-sent event at a time (a long completion
/// is never held in memory whole). Immutable; thread-safe.
class Stream {
 public:
  /// Everything a chunk needs; `words` content chunks follow the role chunk.
  struct Spec {
    std::string id;
    std::int64_t created = 0;  ///< Unix seconds
    std::string model;
    std::int64_t prompt_tokens = 0;
    std::int64_t words = 0;        ///< completion tokens, one per content chunk
    std::uint64_t first_word = 0;  ///< offset into the lorem word list
    bool truncated = false;        ///< finish_reason "length" instead of "stop"
    bool include_usage = false;    ///< stream_options.include_usage
    Micros interval = 0;           ///< before each content chunk
  };

  explicit Stream(Spec spec) : spec_(std::move(spec)) {}

  /// Number of events: role, one per word, finish, [usage], [DONE].
  std::size_t size() const noexcept;
  /// µs to wait before event `i` < size(): `interval` before a content chunk, else 0.
  Micros delay(std::size_t i) const noexcept;
  /// Event `i` < size(): "data: {...}\n\n".
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
  Reply route(const HttpRequest& req, Micros now);
  Reply chat(const HttpRequest& req, Micros now);
  Reply embeddings(const HttpRequest& req, Micros now);
  Reply post_limits(std::string_view body, Micros now);

  ProviderModel& model_;
  const AppOptions options_;
  std::atomic<std::uint64_t> requests_{0};  ///< chat requests seen (completion ids)
  std::atomic<std::uint64_t> admitted_{0};  ///< chat requests admitted (completion lengths)
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
