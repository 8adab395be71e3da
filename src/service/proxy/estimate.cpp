#include "service/proxy/estimate.hpp"

#include <boost/json.hpp>
#include <deque>
#include <vector>

#include "admit/tokens.hpp"

namespace admit::service {

namespace json = boost::json;

namespace {

/// Tokens an image part is taken to cost: OpenAI's base cost of one image tile at low detail.
/// The usage the upstream reports corrects it.
constexpr std::int64_t kImageTokens = 85;

struct Counter {
  std::string_view model;
  bool exact = true;

  std::int64_t text(std::string_view s) {
    const TokenCount c = count_tokens(s, model);
    exact = exact && !c.estimate;
    return static_cast<std::int64_t>(c.tokens);
  }
  /// A JSON value whose tokens the cookbook does not define (tools, tool calls): its text.
  std::int64_t serialized(const json::value& v) { return text(json::serialize(v)); }

  /// A string, an array of strings, an array of token ids, or an array of such arrays.
  std::int64_t prompt(const json::value& v, const std::string& param) {
    if (const json::string* s = v.if_string()) return text(*s);
    const json::array* a = v.if_array();
    if (a == nullptr) {
      throw GatewayRequestError("must be a string or an array of strings or token ids", param);
    }
    std::int64_t n = 0;
    for (const json::value& item : *a) {
      if (item.is_int64() || item.is_uint64()) {
        ++n;  // one token id
      } else if (item.is_string() || item.is_array()) {
        n += prompt(item, param);
      } else {
        throw GatewayRequestError("must be a string or an array of strings or token ids", param);
      }
    }
    return n;
  }

  /// A message's content: a string, null, or an array of parts ({type: text, text} counted,
  /// images at a fixed cost, anything else by its JSON text).
  void content(const json::value& v, std::deque<std::string>& texts, std::int64_t& extra,
               const std::string& param) {
    if (v.is_null()) {
      texts.emplace_back();
      return;
    }
    if (const json::string* s = v.if_string()) {
      texts.emplace_back(*s);
      return;
    }
    const json::array* parts = v.if_array();
    if (parts == nullptr) throw GatewayRequestError("must be a string, an array or null", param);
    std::string joined;
    for (const json::value& p : *parts) {
      const json::object* o = p.if_object();
      const json::value* t = o != nullptr ? o->if_contains("text") : nullptr;
      if (t != nullptr && t->is_string()) {
        joined += t->get_string();
      } else if (o != nullptr && (o->contains("image_url") || o->contains("input_image"))) {
        extra += kImageTokens;
      } else {
        extra += serialized(p);
      }
    }
    texts.push_back(std::move(joined));
  }

  /// A list of chat messages ({role, content, name, tool_calls}) as count_chat_tokens counts
  /// them, plus what the cookbook leaves out (tool calls, images) estimated.
  std::int64_t messages(const json::array& list, const std::string& param) {
    std::deque<std::string> texts;  // stable addresses: the ChatMessages view them
    std::vector<ChatMessage> chat;
    std::int64_t extra = 0;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string f = param + "[" + std::to_string(i) + "]";
      const json::object* m = list[i].if_object();
      if (m == nullptr) throw GatewayRequestError("must be an object", f);
      ChatMessage c;
      if (const json::value* role = m->if_contains("role")) {
        if (!role->is_string()) throw GatewayRequestError("must be a string", f + ".role");
        c.role = role->get_string();
      }
      if (const json::value* content_v = m->if_contains("content")) {
        content(*content_v, texts, extra, f + ".content");
        c.content = texts.back();
      }
      if (const json::value* name = m->if_contains("name"); name != nullptr && name->is_string()) {
        c.name = std::string_view(name->get_string());
      }
      if (const json::value* calls = m->if_contains("tool_calls")) extra += serialized(*calls);
      chat.push_back(c);
    }
    const TokenCount c = count_chat_tokens(chat, model);
    exact = exact && !c.estimate;
    return static_cast<std::int64_t>(c.tokens) + extra;
  }
};

std::int64_t output_limit(const json::object& body, std::initializer_list<std::string_view> names,
                          std::int64_t fallback) {
  for (std::string_view name : names) {
    const json::value* v = body.if_contains(name);
    if (v == nullptr || v->is_null()) continue;
    const std::int64_t* n = v->if_int64();
    if (n == nullptr || *n < 1 || *n > 100'000'000) {
      throw GatewayRequestError("must be an integer from 1 to 100000000", std::string(name));
    }
    return *n;
  }
  return fallback;
}

}  // namespace

std::string_view gateway_path(GatewayRoute route) {
  switch (route) {
    case GatewayRoute::chat_completions:
      return "/v1/chat/completions";
    case GatewayRoute::completions:
      return "/v1/completions";
    case GatewayRoute::embeddings:
      return "/v1/embeddings";
    case GatewayRoute::responses:
      break;
  }
  return "/v1/responses";
}

std::optional<GatewayRoute> gateway_route(std::string_view path) {
  for (const GatewayRoute r : {GatewayRoute::chat_completions, GatewayRoute::completions,
                               GatewayRoute::embeddings, GatewayRoute::responses}) {
    if (path == gateway_path(r)) return r;
  }
  return std::nullopt;
}

std::string_view upstream_path(GatewayRoute route) {
  return gateway_path(route).substr(std::string_view("/v1").size());
}

bool request_limit(std::string_view n) {
  return n == "rpm" || n == "rps" || n == "rph" || n == "rpd" || n == "requests";
}

bool token_limit(std::string_view n) {
  return n == "tpm" || n == "tps" || n == "tph" || n == "tpd" || n == "tokens";
}

RequestEstimate estimate_request(GatewayRoute route, const json::object& body,
                                 std::int64_t default_max_tokens) {
  RequestEstimate e;
  const json::value* model = body.if_contains("model");
  if (model == nullptr) throw GatewayRequestError("you must provide a model parameter", "model");
  if (!model->is_string() || model->get_string().empty() || model->get_string().size() > 256) {
    throw GatewayRequestError("must be a string of 1 to 256 bytes", "model");
  }
  e.model = std::string(model->get_string());
  if (const json::value* s = body.if_contains("stream"); s != nullptr && !s->is_null()) {
    if (!s->is_bool()) throw GatewayRequestError("must be a boolean", "stream");
    e.stream = s->get_bool();
  }
  Counter count{e.model};
  switch (route) {
    case GatewayRoute::chat_completions: {
      const json::value* m = body.if_contains("messages");
      if (m == nullptr || !m->is_array()) {
        throw GatewayRequestError("must be an array of messages", "messages");
      }
      e.prompt_tokens = count.messages(m->get_array(), "messages");
      if (const json::value* tools = body.if_contains("tools")) {
        e.prompt_tokens += count.serialized(*tools);
      }
      e.max_output =
          output_limit(body, {"max_completion_tokens", "max_tokens"}, default_max_tokens);
      const json::value* n = body.if_contains("n");
      if (n != nullptr && n->is_int64() && n->get_int64() > 1 && n->get_int64() <= 128) {
        e.max_output *= n->get_int64();  // n choices each up to the limit
      }
      break;
    }
    case GatewayRoute::completions: {
      const json::value* p = body.if_contains("prompt");
      if (p == nullptr) throw GatewayRequestError("you must provide a prompt", "prompt");
      e.prompt_tokens = count.prompt(*p, "prompt");
      e.max_output = output_limit(body, {"max_tokens"}, default_max_tokens);
      break;
    }
    case GatewayRoute::embeddings: {
      const json::value* in = body.if_contains("input");
      if (in == nullptr) throw GatewayRequestError("you must provide an input", "input");
      e.prompt_tokens = count.prompt(*in, "input");
      if (e.stream) throw GatewayRequestError("embeddings are not streamed", "stream");
      break;
    }
    case GatewayRoute::responses: {
      if (const json::value* in = body.if_contains("input")) {
        if (in->is_string()) {
          e.prompt_tokens = count.text(in->get_string()) + 3;  // one user message's overhead
        } else if (const json::array* items = in->if_array()) {
          e.prompt_tokens = count.messages(*items, "input");
        } else {
          throw GatewayRequestError("must be a string or an array of input items", "input");
        }
      }
      if (const json::value* ins = body.if_contains("instructions"); ins && ins->is_string()) {
        e.prompt_tokens += count.text(ins->get_string()) + 3;
      }
      if (const json::value* tools = body.if_contains("tools")) {
        e.prompt_tokens += count.serialized(*tools);
      }
      e.max_output = output_limit(body, {"max_output_tokens"}, default_max_tokens);
      break;
    }
  }
  e.exact_encoding = count.exact;
  return e;
}

}  // namespace admit::service
