// libFuzzer target for the token counter (src/tokens/). The input is any bytes, counted with
// both encodings. Nothing may crash, hang or throw (but std::bad_alloc); count_tokens() must
// equal encode().size(); every id must be a token and the tokens' bytes, concatenated, must be
// the input with invalid UTF-8 replaced by U+FFFD (nothing lost, nothing invented); on short
// inputs the heap merge must equal tiktoken's scan over the whole input as one piece; and the
// model table and chat counting must take any string.
#include <admit/tokens.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tokens/bpe.hpp"
#include "tokens/tokenizer.hpp"
#include "tokens/utf8.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string text = admit::detail::replace_invalid_utf8(input);
  check(admit::detail::is_valid_utf8(text));
  check(admit::detail::is_valid_utf8(input) == (text == input));
  for (const admit::Encoding e : {admit::Encoding::o200k_base, admit::Encoding::cl100k_base}) {
    const admit::detail::Tokenizer& t = admit::detail::tokenizer(e);
    const auto ids = admit::encode(input, e);
    check(admit::count_tokens(input, e) == ids.size());
    for (const std::uint32_t id : ids) check(id < t.ranks().size());
    check(t.decode(ids) == text);
    if (input.size() >= 2 && input.size() <= 256) {
      check(admit::detail::merge_by_heap(input, t.ranks()) ==
            admit::detail::merge_by_scan(input, t.ranks()));
    }
  }
  (void)admit::encoding_for_model(input);
  const std::size_t third = size / 3;
  const admit::ChatMessage message{.role = input.substr(0, third),
                                   .content = input.substr(third, third),
                                   .name = input.substr(2 * third)};
  const admit::TokenCount chat = admit::count_chat_tokens({&message, 1}, input);
  check(chat.tokens >= admit::ChatOverhead::per_message + admit::ChatOverhead::per_name +
                           admit::ChatOverhead::reply);
  return 0;
}
