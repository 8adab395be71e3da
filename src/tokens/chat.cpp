// Chat messages: OpenAI's documented overhead around each message and the reply.
#include "admit/tokens.hpp"

namespace admit {

std::size_t count_chat_tokens(std::span<const ChatMessage> messages, Encoding encoding) {
  // The cookbook's num_tokens_from_messages: every field's value is encoded (role, content,
  // name), each message adds tokens_per_message, a name tokens_per_name, and the reply 3.
  std::size_t n = ChatOverhead::reply;
  for (const ChatMessage& m : messages) {
    n += ChatOverhead::per_message + count_tokens(m.role, encoding) +
         count_tokens(m.content, encoding);
    if (m.name.has_value()) n += ChatOverhead::per_name + count_tokens(*m.name, encoding);
  }
  return n;
}

TokenCount count_chat_tokens(std::span<const ChatMessage> messages, std::string_view model) {
  const std::optional<Encoding> known = encoding_for_model(model);
  const Encoding encoding = known.value_or(Encoding::o200k_base);
  return TokenCount{.tokens = count_chat_tokens(messages, encoding),
                    .encoding = encoding,
                    .estimate = !known.has_value()};
}

}  // namespace admit
