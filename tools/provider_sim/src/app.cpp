#include "app.hpp"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <vector>

#include "common/log.hpp"

namespace admit::sim {
namespace json = boost::json;

namespace {

constexpr std::int64_t kDefaultMaxTokens = 256;
constexpr std::int64_t kDefaultCompletionsMaxTokens = 16;  // legacy completions: OpenAI's default
constexpr std::int64_t kMaxMaxTokens = 1'000'000;          // larger max_tokens: 400
constexpr std::int64_t kDefaultDimensions = 16;            // embeddings: small vectors unless asked
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

/// A chat completion, completion or response request, validated: what its charge and its
/// completion need.
struct Generation {
  std::string model;
  std::int64_t prompt_tokens = 0;
  std::int64_t max_tokens = kDefaultMaxTokens;
  bool max_given = false;  ///< a max tokens field was set (responses echo it, else null)
  bool stream = false;
  bool include_usage = false;
};

/// The required, non-empty "model" string.
std::string model_name(const json::object& o) {
  const json::value* model = o.if_contains("model");
  if (!model || model->is_null()) {
    throw BadRequest("you must provide a model parameter", "model", "missing_required_parameter");
  }
  const auto* model_s = model->if_string();
  if (!model_s) bad_type("model", "a string", *model);
  if (model_s->empty()) throw BadRequest("Invalid 'model': empty string.", "model", "empty_string");
  return std::string(model_s->data(), model_s->size());
}

/// The completion limit: the last of `names` that is set wins (list the newer name last).
void parse_max_tokens(const json::object& o, std::initializer_list<const char*> names,
                      Generation& g) {
  for (const char* name : names) {
    const json::value* v = o.if_contains(name);
    if (v && !v->is_null()) {
      g.max_tokens = integer(*v, name, 1, kMaxMaxTokens);
      g.max_given = true;
    }
  }
}

/// "stream", and with `options` (chat and completions) "stream_options.include_usage".
void parse_stream(const json::object& o, bool options, Generation& g) {
  if (const json::value* v = o.if_contains("stream")) g.stream = boolean(*v, "stream");
  if (!options) return;
  if (const json::value* v = o.if_contains("stream_options"); v && !v->is_null()) {
    const auto* so = v->if_object();
    if (!so) bad_type("stream_options", "an object", *v);
    if (!g.stream) {
      throw BadRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                       "stream_options", "invalid_value");
    }
    if (const json::value* u = so->if_contains("include_usage")) {
      g.include_usage = boolean(*u, "stream_options.include_usage");
    }
  }
}

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

/// The required field `param` of an embeddings or legacy completions request: a string, an
/// array of token ids (one input), or an array of strings or of such arrays (one input
/// each). Returns the tokens of all inputs (input_tokens) and sets `inputs` to their number.
std::int64_t inputs_tokens(const json::object& o, const std::string& param, std::size_t& inputs) {
  const json::value* input = o.if_contains(param);
  if (!input) {
    throw BadRequest("Missing required parameter: '" + param + "'.", param,
                     "missing_required_parameter");
  }
  const auto* list = input->if_array();
  if (list && !list->empty() && !(*list)[0].is_int64()) {
    std::int64_t tokens = 0;
    for (std::size_t i = 0; i < list->size(); ++i) {
      tokens += input_tokens((*list)[i], param + "[" + std::to_string(i) + "]");
    }
    inputs = list->size();
    return tokens;
  }
  inputs = 1;
  return input_tokens(*input, param);
}

Embed parse_embeddings(std::string_view body) {
  const json::value root = parse_json(body);
  const json::object& o = root.get_object();
  Embed e;
  e.model = model_name(o);
  e.prompt_tokens = inputs_tokens(o, "input", e.inputs);
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

Generation parse_chat(std::string_view body) {
  const json::value root = parse_json(body);
  const json::object& o = root.get_object();
  Generation c;
  c.model = model_name(o);

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
  parse_max_tokens(o, {"max_tokens", "max_completion_tokens"}, c);
  parse_stream(o, true, c);
  return c;
}

/// A legacy completion: `prompt` counted as embeddings count their input (several prompts are
/// answered as one, their tokens summed), max_tokens 16 unless given.
Generation parse_completions(std::string_view body) {
  const json::value root = parse_json(body);
  const json::object& o = root.get_object();
  Generation c;
  c.model = model_name(o);
  std::size_t prompts = 0;
  c.prompt_tokens = inputs_tokens(o, "prompt", prompts);
  c.max_tokens = kDefaultCompletionsMaxTokens;
  parse_max_tokens(o, {"max_tokens"}, c);
  parse_stream(o, true, c);
  return c;
}

/// A Responses API request: `input` a string (one user message) or an array of items, each
/// a message whose content counts as a chat message's (an item without content counts its
/// "output" string, e.g. a function_call_output), plus `instructions` as one more message.
Generation parse_responses(std::string_view body) {
  const json::value root = parse_json(body);
  const json::object& o = root.get_object();
  Generation c;
  c.model = model_name(o);
  const json::value* input = o.if_contains("input");
  if (!input || input->is_null()) {
    throw BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter");
  }
  if (const auto* s = input->if_string()) {
    c.prompt_tokens = message_tokens(*s);
  } else if (const auto* items = input->if_array()) {
    if (items->empty()) {
      throw BadRequest(
          "Invalid 'input': empty array. Expected an array with minimum length 1, but got an "
          "empty array instead.",
          "input", "empty_array");
    }
    for (std::size_t i = 0; i < items->size(); ++i) {
      const std::string at = "input[" + std::to_string(i) + "]";
      const auto* item = (*items)[i].if_object();
      if (!item) bad_type(at, "an object", (*items)[i]);
      std::string joined;
      std::string_view text;
      if (const json::value* content = item->if_contains("content")) {
        text = content_text(*content, at + ".content", joined);
      } else if (const json::value* out = item->if_contains("output"); out && out->is_string()) {
        text = out->get_string();
      }
      c.prompt_tokens += message_tokens(text);
    }
  } else {
    bad_type("input", "a string or an array of input items", *input);
  }
  if (const json::value* v = o.if_contains("instructions"); v && !v->is_null()) {
    const auto* s = v->if_string();
    if (!s) bad_type("instructions", "a string", *v);
    c.prompt_tokens += message_tokens(*s);
  }
  parse_max_tokens(o, {"max_output_tokens"}, c);
  parse_stream(o, false, c);
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

/// The `words` lorem words from `first`, space-separated.
std::string completion_text(std::uint64_t first, std::int64_t words) {
  std::string text;
  for (std::int64_t i = 0; i < words; ++i) {
    if (i > 0) text += ' ';
    text += word(first + static_cast<std::uint64_t>(i));
  }
  return text;
}

/// Word `k` (0-based) of a stream, with the space before it.
std::string stream_word(const Stream::Spec& spec, std::size_t k) {
  std::string text = k == 0 ? "" : " ";
  text += word(spec.first_word + k);
  return text;
}

/// Chat and completions' usage: prompt_tokens, completion_tokens, total_tokens.
json::object usage_json(const Stream::Spec& spec) {
  return {{"prompt_tokens", spec.prompt_tokens},
          {"completion_tokens", spec.words},
          {"total_tokens", spec.prompt_tokens + spec.words}};
}

/// One "data: {chat.completion.chunk | text_completion}" event with the choice `choice`;
/// null: the usage chunk (no choices).
std::string chunk(const Stream::Spec& spec, json::value choice) {
  json::object o{{"id", spec.id},
                 {"object", spec.api == Api::chat ? "chat.completion.chunk" : "text_completion"},
                 {"created", spec.created},
                 {"model", spec.model},
                 {"system_fingerprint", "fp_sim"}};
  json::array choices;
  const bool usage = choice.is_null();
  if (!usage) choices.push_back(std::move(choice));
  o["choices"] = std::move(choices);
  if (spec.include_usage) {
    // null on every chunk before the usage chunk, as OpenAI sends it
    o["usage"] = usage ? json::value(usage_json(spec)) : json::value(nullptr);
  }
  return "data: " + json::serialize(o) + "\n\n";
}

std::string_view finish_reason(const Stream::Spec& spec) {
  return spec.truncated ? "length" : "stop";
}

/// A chat chunk's choice.
json::object chat_choice(json::object delta, std::string_view finish = {}) {
  return {{"index", 0},
          {"delta", std::move(delta)},
          {"logprobs", nullptr},
          {"finish_reason", null_or(finish)}};
}

/// A text_completion's choice (whole or streamed).
json::object text_choice(std::string_view text, std::string_view finish = {}) {
  return {{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", null_or(finish)}};
}

// ---- the Responses API ----

/// "msg_sim_N" for the response "resp_sim_N".
std::string item_id(const Stream::Spec& spec) {
  return "msg" + spec.id.substr(std::min<std::size_t>(4, spec.id.size()));
}

json::object output_text(std::string text) {
  return {{"type", "output_text"}, {"text", std::move(text)}, {"annotations", json::array{}}};
}

/// The assistant's message: in progress (no content yet) or done (its whole text).
json::object message_item(const Stream::Spec& spec, bool done) {
  json::array content;
  if (done) content.push_back(output_text(completion_text(spec.first_word, spec.words)));
  return {{"id", item_id(spec)},
          {"type", "message"},
          {"status", !done            ? "in_progress"
                     : spec.truncated ? "incomplete"
                                      : "completed"},
          {"content", std::move(content)},
          {"role", "assistant"}};
}

/// The response object: in progress (no output, usage null) or done (completed, or
/// incomplete when max_output_tokens cut it).
json::object response_json(const Stream::Spec& spec, bool done) {
  json::array output;
  if (done) output.push_back(message_item(spec, true));
  json::value usage = nullptr;
  if (done) {
    usage = json::object{{"input_tokens", spec.prompt_tokens},
                         {"input_tokens_details", json::object{{"cached_tokens", 0}}},
                         {"output_tokens", spec.words},
                         {"output_tokens_details", json::object{{"reasoning_tokens", 0}}},
                         {"total_tokens", spec.prompt_tokens + spec.words}};
  }
  const bool incomplete = done && spec.truncated;
  return {
      {"id", spec.id},
      {"object", "response"},
      {"created_at", spec.created},
      {"status", !done        ? "in_progress"
                 : incomplete ? "incomplete"
                              : "completed"},
      {"error", nullptr},
      {"incomplete_details", incomplete ? json::value(json::object{{"reason", "max_output_tokens"}})
                                        : json::value(nullptr)},
      {"instructions", nullptr},
      {"max_output_tokens",
       spec.max_output_tokens > 0 ? json::value(spec.max_output_tokens) : json::value(nullptr)},
      {"model", spec.model},
      {"output", std::move(output)},
      {"parallel_tool_calls", true},
      {"previous_response_id", nullptr},
      {"tool_choice", "auto"},
      {"tools", json::array{}},
      {"usage", std::move(usage)},
      {"metadata", json::object{}}};
}

/// "event: TYPE\ndata: {"type":TYPE,"sequence_number":seq,...fields}\n\n".
std::string typed_event(std::string_view type, std::size_t seq, const json::object& fields) {
  json::object o{{"type", type}, {"sequence_number", seq}};
  for (const auto& kv : fields) o.emplace(kv.key(), kv.value());
  return "event: " + std::string(type) + "\ndata: " + json::serialize(o) + "\n\n";
}

/// Event `i` of a streamed response (see Stream::size()).
std::string response_event(const Stream::Spec& spec, std::size_t i) {
  const auto words = static_cast<std::size_t>(spec.words);
  const json::object at{{"item_id", item_id(spec)}, {"output_index", 0}, {"content_index", 0}};
  const auto with = [&at](const json::object& more) {
    json::object o = at;
    for (const auto& kv : more) o.emplace(kv.key(), kv.value());
    return o;
  };
  switch (i) {
    case 0:
      return typed_event("response.created", i, {{"response", response_json(spec, false)}});
    case 1:
      return typed_event("response.in_progress", i, {{"response", response_json(spec, false)}});
    case 2:
      return typed_event("response.output_item.added", i,
                         {{"output_index", 0}, {"item", message_item(spec, false)}});
    case 3:
      return typed_event("response.content_part.added", i, with({{"part", output_text("")}}));
    default:
      break;
  }
  if (i < 4 + words) {
    return typed_event("response.output_text.delta", i,
                       with({{"delta", stream_word(spec, i - 4)}, {"logprobs", json::array{}}}));
  }
  const std::size_t k = i - 4 - words;
  if (k == 0) {
    return typed_event("response.output_text.done", i,
                       with({{"text", completion_text(spec.first_word, spec.words)},
                             {"logprobs", json::array{}}}));
  }
  if (k == 1) {
    return typed_event("response.content_part.done", i,
                       with({{"part", output_text(completion_text(spec.first_word, spec.words))}}));
  }
  if (k == 2) {
    return typed_event("response.output_item.done", i,
                       {{"output_index", 0}, {"item", message_item(spec, true)}});
  }
  return typed_event(spec.truncated ? "response.incomplete" : "response.completed", i,
                     {{"response", response_json(spec, true)}});
}

/// Events before the first content event: chat's role chunk, the Responses API's four.
std::size_t head_events(Api api) noexcept {
  return api == Api::chat ? 1 : api == Api::responses ? 4 : 0;
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
  const auto words = static_cast<std::size_t>(spec_.words);
  const std::size_t usage = spec_.include_usage ? 1 : 0;
  switch (spec_.api) {
    case Api::chat:
      return words + 3 + usage;  // role + words + finish + [usage] + [DONE]
    case Api::completions:
      return words + 2 + usage;  // words + finish + [usage] + [DONE]
    case Api::responses:
      return words + 8;  // 4 before the deltas, 4 after
  }
  return 0;
}

Micros Stream::delay(std::size_t i) const noexcept {
  const std::size_t head = head_events(spec_.api);
  return i >= head && i < head + static_cast<std::size_t>(spec_.words) ? spec_.interval : 0;
}

std::string Stream::event(std::size_t i) const {
  if (spec_.api == Api::responses) return response_event(spec_, i);
  const auto words = static_cast<std::size_t>(spec_.words);
  const std::size_t head = head_events(spec_.api);
  const bool chat = spec_.api == Api::chat;
  if (i < head) {
    return chunk(spec_,
                 chat_choice({{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}));
  }
  if (i < head + words) {
    const std::string text = stream_word(spec_, i - head);
    return chunk(spec_, chat ? chat_choice({{"content", text}}) : text_choice(text));
  }
  if (i == head + words) {
    return chunk(spec_, chat ? chat_choice({}, finish_reason(spec_))
                             : text_choice("", finish_reason(spec_)));
  }
  if (spec_.include_usage && i == head + words + 1) return chunk(spec_, nullptr);
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
    return m == "POST" ? generate(req, Api::chat, now) : method_not_allowed(m, path, "POST");
  }
  if (path == "/v1/completions") {
    return m == "POST" ? generate(req, Api::completions, now) : method_not_allowed(m, path, "POST");
  }
  if (path == "/v1/responses") {
    return m == "POST" ? generate(req, Api::responses, now) : method_not_allowed(m, path, "POST");
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

App::Charged App::charge(const HttpRequest& req, const std::string& model,
                         std::int64_t prompt_tokens, std::int64_t max_tokens, Micros now) {
  Charged c;
  c.id = ++requests_;
  SimRequest sr;
  sr.key = api_key(req);
  sr.model = model;
  sr.prompt_tokens = prompt_tokens;
  sr.max_tokens = max_tokens;
  SimResponse verdict = model_.handle(sr, now);
  Reply& r = c.reply;
  r.status = static_cast<unsigned>(verdict.status);
  r.headers = std::move(verdict.headers);
  r.headers.emplace_back("x-request-id", "req_sim_" + std::to_string(c.id));
  c.admitted = verdict.status == 200;
  if (!c.admitted) {
    r.headers.emplace_back("content-type", "application/json");
    r.body = std::move(verdict.body);
    r.body += '\n';
  }
  return c;
}

Reply App::generate(const HttpRequest& req, Api api, Micros now) {
  const Generation g = api == Api::chat          ? parse_chat(req.body)
                       : api == Api::completions ? parse_completions(req.body)
                                                 : parse_responses(req.body);
  Charged charged = charge(req, g.model, g.prompt_tokens, g.max_tokens, now);
  Reply r = std::move(charged.reply);
  if (!charged.admitted) return r;

  const std::uint64_t n = admitted_++;
  const std::int64_t words = completion_tokens(options_.seed, n, g.max_tokens);
  const Micros interval = options_.tokens_per_second > 0
                              ? static_cast<Micros>(std::llround(1e6 / options_.tokens_per_second))
                              : 0;
  const std::string number = std::to_string(charged.id);
  Stream::Spec spec;
  spec.api = api;
  spec.id = api == Api::chat          ? "chatcmpl-sim-" + number
            : api == Api::completions ? "cmpl-sim-" + number
                                      : "resp_sim_" + number;
  spec.created = now / kMicrosPerSecond;
  spec.model = g.model;
  spec.prompt_tokens = g.prompt_tokens;
  spec.words = words;
  spec.first_word = splitmix64(options_.seed ^ n);
  spec.truncated = words == g.max_tokens;
  spec.include_usage = g.include_usage;
  spec.interval = interval;
  spec.max_output_tokens = g.max_given ? g.max_tokens : 0;

  r.delay = options_.latency;
  if (g.stream) {
    r.headers.emplace_back("content-type", "text/event-stream; charset=utf-8");
    r.headers.emplace_back("cache-control", "no-cache");
    r.stream = std::make_shared<const Stream>(std::move(spec));
    return r;
  }
  r.delay += interval * words;  // the whole completion is generated before the reply
  json::object whole;
  switch (api) {
    case Api::chat:
      whole = {{"id", spec.id},
               {"object", "chat.completion"},
               {"created", spec.created},
               {"model", spec.model},
               {"choices",
                json::array{json::object{
                    {"index", 0},
                    {"message", json::object{{"role", "assistant"},
                                             {"content", completion_text(spec.first_word, words)},
                                             {"refusal", nullptr}}},
                    {"logprobs", nullptr},
                    {"finish_reason", finish_reason(spec)}}}},
               {"usage", usage_json(spec)},
               {"system_fingerprint", "fp_sim"}};
      break;
    case Api::completions:
      whole = {{"id", spec.id},
               {"object", "text_completion"},
               {"created", spec.created},
               {"model", spec.model},
               {"choices", json::array{text_choice(completion_text(spec.first_word, words),
                                                   finish_reason(spec))}},
               {"usage", usage_json(spec)},
               {"system_fingerprint", "fp_sim"}};
      break;
    case Api::responses:
      whole = response_json(spec, true);
      break;
  }
  r.headers.emplace_back("content-type", "application/json");
  r.body = json_reply(200, whole).body;
  return r;
}

Reply App::embeddings(const HttpRequest& req, Micros now) {
  const Embed e = parse_embeddings(req.body);
  Charged charged = charge(req, e.model, e.prompt_tokens, 0, now);  // nothing is generated
  Reply r = std::move(charged.reply);
  if (!charged.admitted) return r;
  r.headers.emplace_back("content-type", "application/json");
  const std::uint64_t id = charged.id;
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
