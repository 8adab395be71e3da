#include "error_body.hpp"

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "providers.hpp"
#include "text.hpp"

namespace admit::headers_detail {

namespace {

std::optional<std::string_view> str_field(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  if (!v) return std::nullopt;
  const boost::json::string* s = v->if_string();
  if (!s) return std::nullopt;
  return std::string_view(s->data(), s->size());
}

const boost::json::object* obj_field(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v ? v->if_object() : nullptr;
}

// "Please try again in 6s." / "Please retry in 10.689924287s." / "retry after 2 seconds".
std::optional<Micros> retry_hint_from_message(std::string_view msg) {
  for (std::string_view phrase : {"try again in ", "retry in ", "retry after "}) {
    const std::size_t at = ifind(msg, phrase);
    if (at == std::string_view::npos) continue;
    std::string_view rest = msg.substr(at + phrase.size());
    std::size_t n = 0;
    while (n < rest.size() && (is_digit(rest[n]) || rest[n] == '.' || is_alpha(rest[n]) ||
                               static_cast<unsigned char>(rest[n]) >= 0x80)) {
      ++n;
    }
    std::string_view token = rest.substr(0, n);
    while (!token.empty() && token.back() == '.') token.remove_suffix(1);
    if (token.empty()) continue;
    bool plain = true;
    for (char c : token) plain = plain && (is_digit(c) || c == '.');
    if (plain) {
      const std::string_view after = rest.substr(n);
      if (ifind(after, " second") == 0 || ifind(after, " sec") == 0) {
        if (auto p = dialect::parse_delta_seconds(token); p.ok()) return p.value;
      } else if (ifind(after, " millisecond") == 0 || ifind(after, " ms") == 0) {
        if (auto p = dialect::parse_delta_millis(token); p.ok()) return p.value;
      }
      continue;
    }
    if (auto p = dialect::parse_go_duration(token); p.ok()) return p.value;
  }
  return std::nullopt;
}

struct GeminiQuota {
  LimitObservation* slot = nullptr;
  Micros window = 0;
};

// Maps a Gemini quotaId ("GenerateRequestsPerDayPerProjectPerModel-FreeTier") to a slot.
GeminiQuota classify_quota(std::string_view id, Observation& o) {
  GeminiQuota q;
  if (id.find("InputTokens") != std::string_view::npos) {
    q.slot = &o.input_tokens;
  } else if (id.find("OutputTokens") != std::string_view::npos) {
    q.slot = &o.output_tokens;
  } else if (id.find("Tokens") != std::string_view::npos) {
    q.slot = &o.tokens;
  } else if (id.find("Requests") != std::string_view::npos) {
    q.slot = &o.requests;
  }
  if (id.find("PerDay") != std::string_view::npos) {
    q.window = kDay;
  } else if (id.find("PerHour") != std::string_view::npos) {
    q.window = kHour;
  } else if (id.find("PerMinute") != std::string_view::npos) {
    q.window = kMinute;
  } else if (id.find("PerSecond") != std::string_view::npos) {
    q.window = kSecond;
  }
  return q;
}

void read_gemini_details(const boost::json::array& details, Observation& o, BodyFindings& f,
                         Reader& r) {
  for (const boost::json::value& d : details) {
    const boost::json::object* detail = d.if_object();
    if (!detail) continue;
    const auto type = str_field(*detail, "@type");
    if (!type) continue;
    if (ends_with(*type, "google.rpc.RetryInfo")) {
      if (const boost::json::value* delay = detail->if_contains("retryDelay")) {
        if (const boost::json::string* s = delay->if_string()) {
          const std::string_view text(s->data(), s->size());
          auto p = dialect::parse_go_duration(text);
          if (p.malformed()) r.warn("body error.details[].retryDelay", text, p.error);
          if (p.ok() && !f.retry_delay) f.retry_delay = p.value;
        } else {
          r.warn("body error.details[].retryDelay", "<non-string>", "not a duration string");
        }
      }
    } else if (ends_with(*type, "google.rpc.QuotaFailure")) {
      const boost::json::value* vs = detail->if_contains("violations");
      const boost::json::array* violations = vs ? vs->if_array() : nullptr;
      if (!violations) continue;
      for (const boost::json::value& vv : *violations) {
        const boost::json::object* v = vv.if_object();
        if (!v) continue;
        const auto id = str_field(*v, "quotaId");
        const boost::json::value* qv = v->if_contains("quotaValue");
        if (!id || !qv) continue;
        const GeminiQuota q = classify_quota(*id, o);
        std::optional<std::int64_t> limit;
        if (const boost::json::string* s = qv->if_string()) {
          const std::string_view text(s->data(), s->size());
          auto p = dialect::parse_count(text);
          if (p.malformed()) r.warn("body error.details[].quotaValue", text, p.error);
          limit = p.value;
        } else if (const std::int64_t* i = qv->if_int64()) {
          if (*i >= 0 && *i <= kMaxExact) {
            limit = *i;
          } else {
            r.warn("body error.details[].quotaValue", boost::json::serialize(*qv), "out of range");
          }
        } else if (const std::uint64_t* u = qv->if_uint64()) {
          if (*u <= static_cast<std::uint64_t>(kMaxExact)) {
            limit = static_cast<std::int64_t>(*u);
          } else {
            r.warn("body error.details[].quotaValue", boost::json::serialize(*qv), "out of range");
          }
        } else {
          r.warn("body error.details[].quotaValue", boost::json::serialize(*qv), "not an integer");
        }
        if (limit && *limit == 0) limit.reset();
        if (!limit || !q.slot || q.window == 0) continue;
        LimitObservation lo;
        lo.limit = limit;
        lo.window = q.window;
        if (!q.slot->has_data()) {
          *q.slot = lo;
        } else {
          o.extra.push_back(ExtraLimit{std::string(*id), lo});
        }
      }
    }
  }
}

}  // namespace

void read_body(Provider p, std::string_view body, Reader& r, BodyFindings& f) {
  Observation& o = r.obs();
  std::error_code ec;
  boost::json::parse_options opts;
  opts.max_depth = 64;
  const boost::json::value root = boost::json::parse(body, ec, {}, opts);
  if (ec) {
    std::string w = "body: ignored malformed JSON (";
    w += ec.message();
    w += ")";
    o.warnings.push_back(std::move(w));
    return;
  }
  // Gemini's streaming endpoints wrap the error envelope in an array.
  const boost::json::object* top = root.if_object();
  if (!top) {
    if (const boost::json::array* a = root.if_array(); a && !a->empty()) top = (*a)[0].if_object();
  }
  if (!top) return;
  const boost::json::object* err = obj_field(*top, "error");
  if (!err) return;

  const auto code = str_field(*err, "code");
  const auto type = str_field(*err, "type");
  if ((code && *code == "insufficient_quota") || (type && *type == "insufficient_quota")) {
    o.quota_exhausted = true;
  }
  if (const auto status = str_field(*err, "status"); status && *status == "RESOURCE_EXHAUSTED") {
    o.rate_limited = true;
  }
  const auto message = str_field(*err, "message");
  if (message) f.message_hint = retry_hint_from_message(*message);

  if (const boost::json::value* d = err->if_contains("details")) {
    if (const boost::json::array* details = d->if_array()) {
      read_gemini_details(*details, o, f, r);
    }
  }

  if (p == Provider::openrouter) {
    // OpenRouter repeats the upstream limit headers in error.metadata.headers.
    if (!o.requests.has_data()) {
      if (const boost::json::object* meta = obj_field(*err, "metadata")) {
        if (const boost::json::object* hdrs = obj_field(*meta, "headers")) {
          Headers body_headers;
          for (const auto& kv : *hdrs) {
            const std::string_view key(kv.key().data(), kv.key().size());
            if (const boost::json::string* s = kv.value().if_string()) {
              body_headers.add(key, std::string_view(s->data(), s->size()));
            } else if (kv.value().is_number()) {
              body_headers.add(key, boost::json::serialize(kv.value()));
            }
          }
          Reader br(body_headers, r.now(), o, "body error.metadata.headers.");
          br.read_family(kPlainXRateLimit, o.requests, 0);
        }
      }
    }
    // "Rate limit exceeded: free-models-per-day" names the window.
    if (message && o.requests.has_data() && o.requests.window == 0) {
      if (message->find("per-day") != std::string_view::npos) {
        o.requests.window = kDay;
      } else if (message->find("per-min") != std::string_view::npos) {
        o.requests.window = kMinute;
      }
    }
  }
}

}  // namespace admit::headers_detail
