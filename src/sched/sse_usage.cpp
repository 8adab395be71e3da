// SSE usage extraction: see admit/sched/sse_usage.hpp.
#include "admit/sched/sse_usage.hpp"

#include <boost/json.hpp>
#include <string>
#include <utility>

namespace admit::sched {
namespace {

namespace json = boost::json;

SseEvent invalid(std::string why) {
  SseEvent e;
  e.kind = SseEvent::Kind::invalid;
  e.error = std::move(why);
  return e;
}

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// A token count: an integer (not a double, even 5.0) in [0, kMaxUsageTokens].
std::optional<std::int64_t> read_count(const json::object& o, std::string_view name,
                                       std::string& why) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr) {
    why = "usage." + std::string(name) + " is missing";
    return std::nullopt;
  }
  if (const std::int64_t* i = v->if_int64()) {
    if (*i >= 0 && *i <= kMaxUsageTokens) return *i;
    why = "usage." + std::string(name) + " is out of range";
    return std::nullopt;
  }
  if (const std::uint64_t* u = v->if_uint64()) {  // only above INT64_MAX: out of range
    if (*u <= static_cast<std::uint64_t>(kMaxUsageTokens)) return static_cast<std::int64_t>(*u);
    why = "usage." + std::string(name) + " is out of range";
    return std::nullopt;
  }
  why = "usage." + std::string(name) + (v->is_double() ? " is not an integer" : " is not a number");
  return std::nullopt;
}

// Chat and completions name the parts prompt_tokens and completion_tokens; the Responses API
// input_tokens and output_tokens.
std::optional<Usage> read_usage(const json::object& o, std::string& why,
                                std::string_view prompt_name = "prompt_tokens",
                                std::string_view completion_name = "completion_tokens") {
  Usage u;
  const auto prompt = read_count(o, prompt_name, why);
  if (!prompt) return std::nullopt;
  const auto completion = read_count(o, completion_name, why);
  if (!completion) return std::nullopt;
  u.prompt_tokens = *prompt;
  u.completion_tokens = *completion;
  if (o.contains("total_tokens")) {
    const auto total = read_count(o, "total_tokens", why);
    if (!total) return std::nullopt;
    if (*total < u.prompt_tokens || *total < u.completion_tokens) {
      why = "usage.total_tokens is smaller than one of its parts";
      return std::nullopt;
    }
    u.total_tokens = *total;
  } else {
    u.total_tokens = u.prompt_tokens + u.completion_tokens;  // each <= 10^12: no overflow
  }
  return u;
}

// An event of a streamed Responses API answer ({"type": ...}): output text deltas count as
// content chunks; response.completed (or .incomplete, .failed) carries the final usage in its
// response object, as input_tokens and output_tokens.
SseEvent responses_event(const json::object& o, std::string_view type) {
  SseEvent e;
  e.kind = SseEvent::Kind::chunk;
  if (type == "response.output_text.delta") {
    const json::value* d = o.if_contains("delta");
    if (d != nullptr && d->is_string() && !d->get_string().empty()) e.content_chunks = 1;
    return e;
  }
  if (type != "response.completed" && type != "response.incomplete" && type != "response.failed") {
    return e;
  }
  const json::value* r = o.if_contains("response");
  if (r == nullptr || !r->is_object()) return invalid("response is not an object");
  const json::value* u = r->get_object().if_contains("usage");
  if (u == nullptr || u->is_null()) return e;
  const json::object* uo = u->if_object();
  if (uo == nullptr) return invalid("usage is not an object");
  std::string why;
  e.usage = read_usage(*uo, why, "input_tokens", "output_tokens");
  if (!e.usage) return invalid(std::move(why));
  return e;
}

}  // namespace

SseEvent parse_sse_data(std::string_view data) {
  const std::string_view text = trim(data);
  if (text == "[DONE]") {
    SseEvent e;
    e.kind = SseEvent::Kind::done;
    return e;
  }
  boost::system::error_code ec;
  const json::value v = json::parse(text, ec);
  if (ec) return invalid("malformed JSON: " + ec.message());
  const json::object* o = v.if_object();
  if (o == nullptr) return invalid("not a JSON object");
  if (const json::value* err = o->if_contains("error"); err != nullptr && !err->is_null()) {
    const json::value* msg = err->is_object() ? err->as_object().if_contains("message") : nullptr;
    return invalid("error event: " + (msg != nullptr && msg->is_string()
                                          ? std::string(msg->as_string())
                                          : json::serialize(*err)));
  }
  SseEvent e;
  e.kind = SseEvent::Kind::chunk;
  if (const json::value* t = o->if_contains("type"); t != nullptr && t->is_string()) {
    return responses_event(*o, t->get_string());
  }
  if (const json::value* c = o->if_contains("choices"); c != nullptr && !c->is_null()) {
    const json::array* choices = c->if_array();
    if (choices == nullptr) return invalid("choices is not an array");
    for (const json::value& choice : *choices) {
      const json::object* co = choice.if_object();
      if (co == nullptr) return invalid("a choice is not an object");
      const json::value* delta = co->if_contains("delta");
      if (delta == nullptr || !delta->is_object()) continue;
      const json::value* content = delta->as_object().if_contains("content");
      if (content != nullptr && content->is_string() && !content->as_string().empty()) {
        ++e.content_chunks;
      }
    }
  }
  if (const json::value* u = o->if_contains("usage"); u != nullptr && !u->is_null()) {
    const json::object* uo = u->if_object();
    if (uo == nullptr) return invalid("usage is not an object");
    std::string why;
    e.usage = read_usage(*uo, why);
    if (!e.usage) return invalid(std::move(why));
  }
  return e;
}

std::int64_t SseUsageParser::feed(std::string_view bytes) {
  const std::int64_t before = content_chunks_;
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (after_cr_) {  // "\r\n" is one line end
      after_cr_ = false;
      if (bytes[i] == '\n') {
        ++i;
        continue;
      }
    }
    const std::size_t end = bytes.find_first_of("\r\n", i);
    const std::string_view part =
        bytes.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i);
    if (!skipping_) {
      if (pending_.size() + part.size() > max_event_bytes_) {
        skipping_ = true;  // drop the rest of this line, and the event it belongs to
        event_bad_ = true;
        std::string().swap(pending_);
      } else {
        pending_.append(part);
      }
    }
    if (end == std::string_view::npos) break;
    after_cr_ = bytes[end] == '\r';
    i = end + 1;
    if (skipping_) {
      skipping_ = false;
    } else {
      line(pending_);
    }
    pending_.clear();
  }
  return content_chunks_ - before;
}

void SseUsageParser::line(std::string_view l) {
  if (l.empty()) {
    dispatch();
    return;
  }
  if (l.front() == ':') return;  // a comment
  const std::size_t colon = l.find(':');
  const std::string_view field = l.substr(0, colon);
  if (field != "data") return;  // event, id, retry: nothing to count
  std::string_view value =
      colon == std::string_view::npos ? std::string_view{} : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (event_bad_) return;
  if (data_.size() + value.size() + 1 > max_event_bytes_) {
    event_bad_ = true;
    std::string().swap(data_);
    return;
  }
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
}

void SseUsageParser::dispatch() {
  const bool bad = event_bad_;
  const bool had_data = has_data_;
  event_bad_ = false;
  has_data_ = false;
  std::string data = std::move(data_);
  data_.clear();
  if (!bad && !had_data) return;  // a blank line with no event before it
  if (done_) return;              // nothing counts after [DONE]
  ++events_;
  if (bad) {
    reject("event longer than " + std::to_string(max_event_bytes_) + " bytes");
    return;
  }
  SseEvent e = parse_sse_data(data);
  switch (e.kind) {
    case SseEvent::Kind::done:
      done_ = true;
      break;
    case SseEvent::Kind::chunk:
      content_chunks_ += e.content_chunks;
      if (e.usage) usage_ = e.usage;
      break;
    case SseEvent::Kind::invalid:
      reject(std::move(e.error));
      break;
  }
}

void SseUsageParser::reject(std::string why) {
  ++rejected_;
  last_error_ = std::move(why);
}

}  // namespace admit::sched
