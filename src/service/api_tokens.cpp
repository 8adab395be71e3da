// POST /v1/tokens: counts tokens offline (admit/tokens.hpp), for a text or a chat request's
// messages, so a client can estimate the tokens to acquire before calling a model.
#include <string>
#include <vector>

#include "admit/tokens.hpp"
#include "service/api_impl.hpp"

namespace admit::service {

namespace {

std::string string_field(const json::value& v, const std::string& field) {
  const json::string* s = v.if_string();
  if (s == nullptr) throw BadRequest{"must be a string", field, "invalid_type"};
  return std::string(*s);
}

}  // namespace

Response Api::Impl::tokens(const ApiRequest& r) {
  JsonScratch scratch;
  const json::object o = body_of(r, false, scratch.sp);
  only_fields(o, {"model", "encoding", "text", "messages"});
  const json::value* model = o.if_contains("model");
  const json::value* encoding = o.if_contains("encoding");
  if ((model == nullptr) == (encoding == nullptr)) {
    throw BadRequest{"give exactly one of model and encoding", model ? "encoding" : "model",
                     model ? "invalid_request" : "missing_field"};
  }
  const json::value* text = o.if_contains("text");
  const json::value* messages = o.if_contains("messages");
  if ((text == nullptr) == (messages == nullptr)) {
    throw BadRequest{"give exactly one of text and messages", text ? "messages" : "text",
                     text ? "invalid_request" : "missing_field"};
  }
  std::optional<Encoding> enc;
  std::string model_name;
  if (encoding != nullptr) {
    enc = parse_encoding(string_field(*encoding, "encoding"));
    if (!enc)
      throw BadRequest{"expected o200k_base or cl100k_base", "encoding", "invalid_argument"};
  } else {
    model_name = string_field(*model, "model");
    if (model_name.empty() || model_name.size() > 256) {
      throw BadRequest{"must be 1 to 256 bytes", "model", "invalid_argument"};
    }
  }
  TokenCount count;
  if (text != nullptr) {
    const std::string t = string_field(*text, "text");
    count = enc ? TokenCount{count_tokens(t, *enc), *enc, false} : count_tokens(t, model_name);
  } else {
    const json::array* list = messages->if_array();
    if (list == nullptr) {
      throw BadRequest{"must be an array of {role, content, name}", "messages", "invalid_type"};
    }
    // The strings stay in `o`; the messages view them.
    std::vector<ChatMessage> chat;
    chat.reserve(list->size());
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string f = "messages[" + std::to_string(i) + "]";
      const json::object* m = (*list)[i].if_object();
      if (m == nullptr) throw BadRequest{"must be an object", f, "invalid_type"};
      only_fields(*m, {"role", "content", "name"});
      ChatMessage c;
      for (const auto& [key, value] : *m) {
        const json::string* s = value.if_string();
        if (s == nullptr) {
          throw BadRequest{"must be a string", f + "." + std::string(key), "invalid_type"};
        }
        const std::string_view sv(s->data(), s->size());
        if (key == "role") c.role = sv;
        if (key == "content") c.content = sv;
        if (key == "name") c.name = sv;
      }
      if (!m->contains("role")) throw BadRequest{"missing field", f + ".role", "missing_field"};
      chat.push_back(c);
    }
    count = enc ? TokenCount{count_chat_tokens(chat, *enc), *enc, false}
                : count_chat_tokens(chat, model_name);
  }
  return reply(200, json::object{{"tokens", count.tokens},
                                 {"encoding", std::string(to_string(count.encoding))},
                                 {"estimate", count.estimate}});
}

}  // namespace admit::service
