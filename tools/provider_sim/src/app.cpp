#include "app.hpp"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>
#include <vector>

#include "common/log.hpp"

namespace admit::sim {
namespace json = boost::json;

namespace {

constexpr std::int64_t kDefaultMaxTokens = 256;
constexpr std::int64_t kMaxMaxTokens = 1'000'000;  // larger max_tokens: 400
constexpr std::int64_t kDefaultDimensions = 16;    // embeddings: small vectors unless asked
constexpr std::int64_t kMaxDimensions = 4096;

constexpr std::array<std::string_view, 19> kWords{
    "lorem",  "ipsum", "dolor",  "sit",     "amet",   "consectetur", "adipiscing",
    "elit",   "sed",   "do",     "eiusmod", "tempor", "incididunt",  "ut",
    "labore", "et",    "dolore", "magna",   "aliqua"};

std::string_view word(std::uint64_t i) { return kWords[i % kWords.size()]; }

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// A 4xx the client caused: rendered as an OpenAI error envelope.
class BadRequest : public std::runtime_error {
 public:
  BadRequest(const std::string& message, std::string param, std::string code)
      : std::runtime_error(message), param_(std::move(param)), code_(std::move(code)) {}
  const std::string& param() const noexcept { return param_; }
  const std::string& code() const noexcept { return code_; }

 private:
  std::string param_;  // empty: null
  std::string code_;   // empty: null
};

Reply json_reply(unsigned status, const json::value& v) {
  Reply r;
  r.status = status;
  r.headers.emplace_back("content-type", "application/json");
  r.body = json::serialize(v);
  r.body += '\n';
  return r;
}

json::value null_or(std::string_view s) {
  return s.empty() ? json::value(nullptr) : json::value(json::string(s));
}

/// OpenAI's error envelope: {"error":{"message","type","param","code"}}.
Reply error_reply(unsigned status, std::string_view message, std::string_view type,
                  std::string_view param = {}, std::string_view code = {}) {
  return json_reply(status, json::object{{"error", json::object{{"message", message},
                                                                {"type", type},
                                                                {"param", null_or(param)},
                                                                {"code", null_or(code)}}}});
}

std::string_view type_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "an integer";
    case json::kind::double_:
      return "a decimal";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

[[noreturn]] void bad_type(const std::string& param, std::string_view expected,
                           const json::value& got) {
  throw BadRequest("Invalid type for '" + param + "': expected " + std::string(expected) +
                       ", but got " + std::string(type_name(got)) + " instead.",
                   param, "invalid_type");
}

json::value parse_json(std::string_view body) {
  std::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) {
    throw BadRequest("We could not parse the JSON body of your request (" + ec.message() +
                         "). The OpenAI API expects a JSON payload.",
                     "", "");
  }
  if (!v.is_object()) bad_type("body", "an object", v);
  return v;
}

/// An integer in [min, max], or a BadRequest naming `param`.
std::int64_t integer(const json::value& v, const std::string& param, std::int64_t min,
                     std::int64_t max) {
  std::int64_t n = 0;
  if (const auto* i = v.if_int64()) {
    n = *i;
  } else if (const auto* u = v.if_uint64()) {
    n = *u > static_cast<std::uint64_t>(max) ? max + 1 : static_cast<std::int64_t>(*u);
  } else {
    bad_type(param, "an integer", v);
  }
  if (n < min) {
    throw BadRequest("Invalid '" + param + "': integer below minimum value. Expected a value >= " +
                         std::to_string(min) + ", but got " + std::to_string(n) + " instead.",
                     param, "integer_below_min_value");
  }
  if (n > max) {
    throw BadRequest("Invalid '" + param + "': integer above maximum value. Expected a value <= " +
                         std::to_string(max) + ".",
                     param, "integer_above_max_value");
  }
  return n;
}

bool boolean(const json::value& v, const std::string& param) {
  if (const bool* b = v.if_bool()) return *b;
  if (v.is_null()) return false;
  bad_type(param, "a boolean", v);
}

std::int64_t code_points(std::string_view s) noexcept {
  std::int64_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

/// A chat completion request, validated.
struct Chat {
  std::string model;
  std::int64_t prompt_tokens = 0;
  std::int64_t max_tokens = kDefaultMaxTokens;
  bool stream = false;
  bool include_usage = false;
};

/// The text of one message's content: a string, null, or an array of parts whose "text"
/// parts count (images and other parts are free).
std::string_view content_text(const json::value& content, const std::string& param,
                              std::string& joined) {
  if (const auto* s = content.if_string()) return {s->data(), s->size()};
  if (content.is_null()) return {};
  const auto* parts = content.if_array();
  if (!parts) bad_type(param, "a string or an array of content parts", content);
  for (std::size_t i = 0; i < parts->size(); ++i) {
    const auto* part = (*parts)[i].if_object();
    if (!part) bad_type(param + "[" + std::to_string(i) + "]", "an object", (*parts)[i]);
    if (const auto* text = part->if_contains("text")) {
      const auto* s = text->if_string();
      if (!s) bad_type(param + "[" + std::to_string(i) + "].text", "a string", *text);
      joined.append(s->data(), s->size());
    }
  }
  return joined;
}

/// An embeddings request, validated.
struct Embed {
  std::string model;
  std::int64_t prompt_tokens = 0;
  std::size_t inputs = 0;
  std::int64_t dimensions = kDefaultDimensions;
  bool base64 = false;
};

/// The tokens of one embedding input: a text as message_tokens counts it without the
/// message's overhead (at least 1), or an array of token ids, one each.
std::int64_t input_tokens(const json::value& v, const std::string& param) {
  if (const auto* s = v.if_string()) return std::max<std::int64_t>(1, (code_points(*s) + 3) / 4);
  const auto* ids = v.if_array();
  if (!ids || ids->empty()) bad_type(param, "a string or a non-empty array of token ids", v);
  for (std::size_t i = 0; i < ids->size(); ++i) {
    if (!(*ids)[i].is_int64()) bad_type(param + "[" + std::to_string(i) + "]", "an integer", v);
  }
  return static_cast<std::int64_t>(ids->size());
}

Embed parse_embeddings(std::string_view body) {
  const json::value root = parse_json(body);
  const json::object& o = root.get_object();
  Embed e;
  const json::value* model = o.if_contains("model");
  if (!model || model->is_null()) {
    throw BadRequest("you must provide a model parameter", "model", "missing_required_parameter");
  }
  const auto* model_s = model->if_string();
  if (!model_s) bad_type("model", "a string", *model);
  if (model_s->empty()) throw BadRequest("Invalid 'model': empty string.", "model", "empty_string");
  e.model = std::string(model_s->data(), model_s->size());
  const json::value* input = o.if_contains("input");
  if (!input) {
    throw BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter");
  }
  // A string, an array of token ids: one input; an array of strings or of arrays: one each.
  const auto* list = input->if_array();
  if (list && !list->empty() && !(*list)[0].is_int64()) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      e.prompt_tokens += input_tokens((*list)[i], "input[" + std::to_string(i) + "]");
    }
    e.inputs = list->size();
  } else {
    e.prompt_tokens = input_tokens(*input, "input");
    e.inputs = 1;
  }
  if (const json::value* v = o.if_contains("dimensions"); v && !v->is_null()) {
    e.dimensions = integer(*v, "dimensions", 1, kMaxDimensions);
  }
  if (const json::value* v = o.if_contains("encoding_format"); v && !v->is_null()) {
    const auto* f = v->if_string();
    if (!f || (*f != "float" && *f != "base64")) {
      throw BadRequest("Invalid 'encoding_format': expected 'float' or 'base64'.",
                       "encoding_format", "invalid_value");
    }
    e.base64 = *f == "base64";
  }
  return e;
}

/// RFC 4648 base64 of `bytes` (what OpenAI's encoding_format "base64" sends: the
/// little-endian float32 values).
std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      v = (v << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0U);
    }
    for (std::size_t k = 0; k < 4; ++k) {
      out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=';
    }
  }
  return out;
}

Chat parse_chat(std::string_view body) {
  const json::value root = parse_json(body);
  const json::object& o = root.get_object();
  Chat c;

  const json::value* model = o.if_contains("model");
  if (!model || model->is_null()) {
    throw BadRequest("you must provide a model parameter", "model", "missing_required_parameter");
  }
  const auto* model_s = model->if_string();
  if (!model_s) bad_type("model", "a string", *model);
  if (model_s->empty()) {
    throw BadRequest("Invalid 'model': empty string.", "model", "empty_string");
  }
  c.model = std::string(model_s->data(), model_s->size());

  const json::value* messages = o.if_contains("messages");
  if (!messages) {
    throw BadRequest("Missing required parameter: 'messages'.", "messages",
                     "missing_required_parameter");
  }
  const auto* list = messages->if_array();
  if (!list) bad_type("messages", "an array", *messages);
  if (list->empty()) {
    throw BadRequest(
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
        "empty array instead.",
        "messages", "empty_array");
  }
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string at = "messages[" + std::to_string(i) + "]";
    const auto* m = (*list)[i].if_object();
    if (!m) bad_type(at, "an object", (*list)[i]);
    const json::value* role = m->if_contains("role");
    if (!role) {
      throw BadRequest("Missing required parameter: '" + at + ".role'.", at + ".role",
                       "missing_required_parameter");
    }
    if (!role->is_string()) bad_type(at + ".role", "a string", *role);
    std::string joined;
    const json::value* content = m->if_contains("content");
    const std::string_view text =
        content ? content_text(*content, at + ".content", joined) : std::string_view{};
    c.prompt_tokens += message_tokens(text);
  }

  // max_completion_tokens is the newer name; it wins when both are given.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    const json::value* v = o.if_contains(name);
    if (v && !v->is_null()) c.max_tokens = integer(*v, name, 1, kMaxMaxTokens);
  }
  if (const json::value* v = o.if_contains("stream")) c.stream = boolean(*v, "stream");
  if (const json::value* v = o.if_contains("stream_options"); v && !v->is_null()) {
    const auto* so = v->if_object();
    if (!so) bad_type("stream_options", "an object", *v);
    if (!c.stream) {
      throw BadRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                       "stream_options", "invalid_value");
    }
    if (const json::value* u = so->if_contains("include_usage")) {
      c.include_usage = boolean(*u, "stream_options.include_usage");
    }
  }
  return c;
}

/// The API key from "Authorization: Bearer KEY", else x-api-key, else "default".
std::string api_key(const HttpRequest& req) {
  std::string_view a = req.authorization;
  while (!a.empty() && a.front() == ' ') a.remove_prefix(1);
  if (a.size() > 7 && (a.substr(0, 7) == "Bearer " || a.substr(0, 7) == "bearer ")) {
    a.remove_prefix(7);
    while (!a.empty() && a.front() == ' ') a.remove_prefix(1);
    while (!a.empty() && a.back() == ' ') a.remove_suffix(1);
    if (!a.empty()) return std::string(a);
  }
  if (!req.x_api_key.empty()) return std::string(req.x_api_key);
  return "default";
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
bool same_secret(std::string_view a, std::string_view b) noexcept {
  unsigned diff = a.size() == b.size() ? 0U : 1U;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

Reply method_not_allowed(std::string_view method, std::string_view path, std::string_view allow) {
  Reply r = error_reply(405,
                        "Method " + std::string(method) + " is not allowed for " +
                            std::string(path) + ". Allowed: " + std::string(allow) + ".",
                        "invalid_request_error", "", "method_not_allowed");
  r.headers.emplace_back("allow", allow);
  return r;
}

json::object limits_json(const SimLimits& l) { return {{"rpm", l.rpm}, {"tpm", l.tpm}}; }

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// The value of the query parameter `name` in `target` ("/p?a=1&key=x%2Fy"), percent- and
/// '+'-decoded; std::nullopt if it is absent.
std::optional<std::string> query_param(std::string_view target, std::string_view name) {
  const std::size_t q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const std::size_t amp = std::min(rest.find('&'), rest.size());
    const std::string_view pair = rest.substr(0, amp);
    rest.remove_prefix(std::min(amp + 1, rest.size()));
    const std::size_t eq = std::min(pair.find('='), pair.size());
    if (pair.substr(0, eq) != name) continue;
    const std::string_view raw = pair.substr(std::min(eq + 1, pair.size()));
    std::string out;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size() && hex_digit(raw[i + 1]) >= 0 &&
          hex_digit(raw[i + 2]) >= 0) {
        out += static_cast<char>(hex_digit(raw[i + 1]) * 16 + hex_digit(raw[i + 2]));
        i += 2;
      } else {
        out += raw[i] == '+' ? ' ' : raw[i];
      }
    }
    return out;
  }
  return std::nullopt;
}

json::value level_json(const std::optional<std::int64_t>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

/// One "data: {chat.completion.chunk}" event. `delta` null: the usage chunk (no choices).
std::string chunk(const Stream::Spec& spec, const json::value& delta,
                  std::string_view finish = {}) {
  json::object o{{"id", spec.id},
                 {"object", "chat.completion.chunk"},
                 {"created", spec.created},
                 {"model", spec.model},
                 {"system_fingerprint", "fp_sim"}};
  json::array choices;
  if (!delta.is_null()) {
    choices.push_back(json::object{
        {"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", null_or(finish)}});
  }
  o["choices"] = std::move(choices);
  if (spec.include_usage) {
    if (delta.is_null()) {
      o["usage"] = json::object{{"prompt_tokens", spec.prompt_tokens},
                                {"completion_tokens", spec.words},
                                {"total_tokens", spec.prompt_tokens + spec.words}};
    } else {
      o["usage"] = nullptr;  // as OpenAI sends it on every chunk before the usage chunk
    }
  }
  return "data: " + json::serialize(o) + "\n\n";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void log_json(const json::object& o) noexcept { admit::log::json_line(admit::log::Level::info, o); }

std::int64_t message_tokens(std::string_view text) noexcept {
  return (code_points(text) + 3) / 4 + 4;
}

std::int64_t completion_tokens(std::uint64_t seed, std::uint64_t n,
                               std::int64_t max_tokens) noexcept {
  if (max_tokens <= 1) return 1;
  const std::uint64_t h = splitmix64(splitmix64(seed) ^ n);
  return 1 + static_cast<std::int64_t>(h % static_cast<std::uint64_t>(max_tokens));
}

std::string_view Reply::header(std::string_view name) const noexcept {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return {};
}

std::size_t Stream::size() const noexcept {
  // role + words + finish + [usage] + [DONE]
  return static_cast<std::size_t>(spec_.words) + 3 + (spec_.include_usage ? 1 : 0);
}

Micros Stream::delay(std::size_t i) const noexcept {
  return i >= 1 && i <= static_cast<std::size_t>(spec_.words) ? spec_.interval : 0;
}

std::string Stream::event(std::size_t i) const {
  const auto words = static_cast<std::size_t>(spec_.words);
  if (i == 0) {
    return chunk(spec_, json::object{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}});
  }
  if (i <= words) {
    std::string text = i == 1 ? "" : " ";
    text += word(spec_.first_word + i - 1);
    return chunk(spec_, json::object{{"content", text}});
  }
  if (i == words + 1) return chunk(spec_, json::object{}, spec_.truncated ? "length" : "stop");
  if (spec_.include_usage && i == words + 2) return chunk(spec_, nullptr);
  return "data: [DONE]\n\n";
}

// ---------------------------------------------------------------------------------------------

App::App(ProviderModel& model, AppOptions options) : model_(model), options_(std::move(options)) {
  const double tps = options_.tokens_per_second;
  if (!std::isfinite(tps) || (tps != 0 && !(tps >= 0.01 && tps <= 1e9))) {
    throw std::invalid_argument(
        "tokens per second must be 0 (as fast as possible) or between 0.01 and 1e9, got " +
        std::to_string(tps));
  }
  if (options_.latency < 0 || options_.latency > kMicrosPerHour) {
    throw std::invalid_argument("latency must be between 0 and 1 h, got " +
                                std::to_string(options_.latency) + " us");
  }
}

Reply App::handle(const HttpRequest& req, Micros now) noexcept {
  Reply r;
  try {
    try {
      r = route(req, now);
    } catch (const BadRequest& e) {
      r = error_reply(400, e.what(), "invalid_request_error", e.param(), e.code());
    } catch (const std::exception& e) {
      r = error_reply(500, std::string("internal error: ") + e.what(), "server_error");
    }
    if (options_.verbose) {
      const std::string_view path = req.target.substr(0, req.target.find('?'));
      log_json({{"msg", "request"},
                {"method", req.method},
                {"path", path},
                {"status", r.status},
                {"stream", r.stream != nullptr}});
    }
  } catch (...) {  // out of memory while rendering an error
    r = Reply{};
    r.status = 500;
  }
  return r;
}

Reply App::route(const HttpRequest& req, Micros now) {
  const std::string_view path = req.target.substr(0, req.target.find('?'));
  const std::string_view m = req.method;
  if (path == "/v1/chat/completions") {
    return m == "POST" ? chat(req, now) : method_not_allowed(m, path, "POST");
  }
  if (path == "/v1/embeddings") {
    return m == "POST" ? embeddings(req, now) : method_not_allowed(m, path, "POST");
  }
  if (path == "/healthz") {
    return m == "GET" ? json_reply(200, json::object{{"status", "ok"}})
                      : method_not_allowed(m, path, "GET");
  }
  if (path.starts_with("/sim/")) {
    if (!options_.admin_token.empty()) {
      std::string_view a = req.authorization;
      const bool ok = a.size() > 7 && (a.starts_with("Bearer ") || a.starts_with("bearer ")) &&
                      same_secret(a.substr(7), options_.admin_token);
      if (!ok) {
        Reply r =
            error_reply(401, "The /sim/ endpoints need 'Authorization: Bearer <admin token>'.",
                        "invalid_request_error", "", "invalid_admin_token");
        r.headers.emplace_back("www-authenticate", "Bearer");
        return r;
      }
    }
    if (path == "/sim/limits") {
      if (m == "GET") return json_reply(200, limits_json(model_.limits()));
      if (m == "POST") return post_limits(req.body, now);
      return method_not_allowed(m, path, "GET, POST");
    }
    if (path == "/sim/stats") {
      if (m != "GET") return method_not_allowed(m, path, "GET");
      const SimStats s = model_.stats();
      return json_reply(200, json::object{{"accepted", s.accepted},
                                          {"rejected", s.rejected},
                                          {"accepted_tokens", s.accepted_tokens},
                                          {"rejected_tokens", s.rejected_tokens}});
    }
    if (path == "/sim/buckets") {
      if (m != "GET") return method_not_allowed(m, path, "GET");
      const std::string key = query_param(req.target, "key").value_or("default");
      const SimLevels l = model_.levels(key, now);
      return json_reply(200, json::object{{"key", key},
                                          {"requests", level_json(l.requests)},
                                          {"tokens", level_json(l.tokens)}});
    }
    if (path == "/sim/stats/reset") {
      if (m != "POST") return method_not_allowed(m, path, "POST");
      model_.reset_stats();
      return json_reply(200, json::object{{"status", "ok"}});
    }
  }
  return error_reply(404, "Unknown request URL: " + std::string(m) + " " + std::string(path) + ".",
                     "invalid_request_error", "", "unknown_url");
}

Reply App::post_limits(std::string_view body, Micros now) {
  const json::value root = parse_json(body);
  SimLimits next = model_.limits();
  bool any = false;
  for (const auto& kv : root.get_object()) {
    const std::string key(kv.key());
    if (key == "rpm") {
      next.rpm = integer(kv.value(), key, 0, kMaxExact);
    } else if (key == "tpm") {
      next.tpm = integer(kv.value(), key, 0, kMaxExact);
    } else {
      throw BadRequest("Unknown field '" + key + "': expected rpm and/or tpm.", key,
                       "unknown_parameter");
    }
    any = true;
  }
  if (!any) {
    throw BadRequest("Expected {\"rpm\": N, \"tpm\": N} (either may be left out, not both).", "",
                     "missing_required_parameter");
  }
  // Not atomic with a concurrent POST /sim/limits; the last one wins, which is all a test needs.
  const SimLimits old = model_.limits();
  model_.set_limits(next, now);
  log_json({{"msg", "limits changed"},
            {"rpm", next.rpm},
            {"tpm", next.tpm},
            {"old_rpm", old.rpm},
            {"old_tpm", old.tpm}});
  return json_reply(200, limits_json(next));
}

Reply App::chat(const HttpRequest& req, Micros now) {
  const Chat c = parse_chat(req.body);
  const std::uint64_t id = ++requests_;

  SimRequest sr;
  sr.key = api_key(req);
  sr.model = c.model;
  sr.prompt_tokens = c.prompt_tokens;
  sr.max_tokens = c.max_tokens;
  SimResponse verdict = model_.handle(sr, now);

  Reply r;
  r.status = static_cast<unsigned>(verdict.status);
  r.headers = std::move(verdict.headers);
  r.headers.emplace_back("x-request-id", "req_sim_" + std::to_string(id));
  if (verdict.status != 200) {
    r.headers.emplace_back("content-type", "application/json");
    r.body = std::move(verdict.body);
    r.body += '\n';
    return r;
  }

  const std::uint64_t n = admitted_++;
  const std::int64_t words = completion_tokens(options_.seed, n, c.max_tokens);
  const Micros interval = options_.tokens_per_second > 0
                              ? static_cast<Micros>(std::llround(1e6 / options_.tokens_per_second))
                              : 0;
  Stream::Spec spec;
  spec.id = "chatcmpl-sim-" + std::to_string(id);
  spec.created = now / kMicrosPerSecond;
  spec.model = c.model;
  spec.prompt_tokens = c.prompt_tokens;
  spec.words = words;
  spec.first_word = splitmix64(options_.seed ^ n);
  spec.truncated = words == c.max_tokens;
  spec.include_usage = c.include_usage;
  spec.interval = interval;

  r.delay = options_.latency;
  if (c.stream) {
    r.headers.emplace_back("content-type", "text/event-stream; charset=utf-8");
    r.headers.emplace_back("cache-control", "no-cache");
    r.stream = std::make_shared<const Stream>(std::move(spec));
    return r;
  }
  std::string content;
  for (std::int64_t i = 0; i < words; ++i) {
    if (i > 0) content += ' ';
    content += word(spec.first_word + static_cast<std::uint64_t>(i));
  }
  r.delay += interval * words;  // the whole completion is generated before the reply
  const json::object completion{
      {"id", spec.id},
      {"object", "chat.completion"},
      {"created", spec.created},
      {"model", c.model},
      {"choices", json::array{json::object{{"index", 0},
                                           {"message", json::object{{"role", "assistant"},
                                                                    {"content", content},
                                                                    {"refusal", nullptr}}},
                                           {"logprobs", nullptr},
                                           {"finish_reason", spec.truncated ? "length" : "stop"}}}},
      {"usage", json::object{{"prompt_tokens", c.prompt_tokens},
                             {"completion_tokens", words},
                             {"total_tokens", c.prompt_tokens + words}}},
      {"system_fingerprint", "fp_sim"}};
  Reply body = json_reply(200, completion);
  r.headers.emplace_back("content-type", "application/json");
  r.body = std::move(body.body);
  return r;
}

Reply App::embeddings(const HttpRequest& req, Micros now) {
  const Embed e = parse_embeddings(req.body);
  const std::uint64_t id = ++requests_;
  SimRequest sr;
  sr.key = api_key(req);
  sr.model = e.model;
  sr.prompt_tokens = e.prompt_tokens;
  sr.max_tokens = 0;  // nothing is generated
  SimResponse verdict = model_.handle(sr, now);
  Reply r;
  r.status = static_cast<unsigned>(verdict.status);
  r.headers = std::move(verdict.headers);
  r.headers.emplace_back("x-request-id", "req_sim_" + std::to_string(id));
  r.headers.emplace_back("content-type", "application/json");
  if (verdict.status != 200) {
    r.body = std::move(verdict.body);
    r.body += '\n';
    return r;
  }
  ++admitted_;
  // Deterministic vectors: component j of input i from the seed, in [-1, 1).
  json::array data;
  for (std::size_t i = 0; i < e.inputs; ++i) {
    std::vector<float> v(static_cast<std::size_t>(e.dimensions));
    for (std::size_t j = 0; j < v.size(); ++j) {
      const std::uint64_t h = splitmix64(options_.seed ^ (id << 32) ^ (i << 16) ^ j);
      v[j] = static_cast<float>(static_cast<double>(h % 2000) / 1000.0 - 1.0);
    }
    json::value embedding;
    if (e.base64) {
      std::string bytes(v.size() * sizeof(float), '\0');
      std::memcpy(bytes.data(), v.data(), bytes.size());  // little-endian, as x86-64 and arm64
      embedding = base64(bytes);
    } else {
      json::array a;
      for (const float f : v) a.push_back(static_cast<double>(f));
      embedding = std::move(a);
    }
    data.push_back(
        json::object{{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
  }
  const json::object reply{{"object", "list"},
                           {"data", std::move(data)},
                           {"model", e.model},
                           {"usage", json::object{{"prompt_tokens", e.prompt_tokens},
                                                  {"total_tokens", e.prompt_tokens}}}};
  r.body = json_reply(200, reply).body;
  return r;
}

}  // namespace admit::sim
