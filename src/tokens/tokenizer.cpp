// The encodings: lazy construction, text -> pieces -> tokens, and the public encode/count.
#include "tokens/tokenizer.hpp"

#include <string>

#include "tokens/bpe.hpp"
#include "tokens/utf8.hpp"

namespace admit::detail {

Tokenizer::Tokenizer(std::span<const unsigned char> table)
    : ranks_(table), pre_split_(ranks_.js_pattern()) {}

template <class PieceFn>
void Tokenizer::for_each_piece(std::string_view utf8_text, PieceFn&& piece) const {
  std::string replaced;
  if (!is_valid_utf8(utf8_text)) {
    replaced = replace_invalid_utf8(utf8_text);
    utf8_text = replaced;
  }
  std::size_t begin = 0;
  std::size_t end = 0;
  for (std::size_t from = 0; pre_split_.next(utf8_text, from, begin, end); from = end) {
    piece(utf8_text.substr(begin, end - begin));
  }
}

void Tokenizer::encode(std::string_view utf8_text, std::vector<std::uint32_t>& out) const {
  for_each_piece(utf8_text, [&](std::string_view piece) { byte_pair_encode(piece, ranks_, out); });
}

std::size_t Tokenizer::count(std::string_view utf8_text) const {
  std::size_t n = 0;
  for_each_piece(utf8_text, [&](std::string_view piece) { n += byte_pair_count(piece, ranks_); });
  return n;
}

std::string Tokenizer::decode(std::span<const std::uint32_t> ids) const {
  std::string out;
  for (const std::uint32_t id : ids) {
    if (id < ranks_.size()) out += ranks_.token(id);
  }
  return out;
}

const Tokenizer& tokenizer(Encoding encoding) {
  // Function-local statics: built by the first caller, the others wait for it (C++11).
  switch (encoding) {
    case Encoding::cl100k_base: {
      static const Tokenizer cl100k(embedded_rank_table(Encoding::cl100k_base));
      return cl100k;
    }
    case Encoding::o200k_base:
      break;
  }
  static const Tokenizer o200k(embedded_rank_table(Encoding::o200k_base));
  return o200k;
}

}  // namespace admit::detail

namespace admit {

std::string_view to_string(Encoding encoding) {
  switch (encoding) {
    case Encoding::o200k_base:
      return "o200k_base";
    case Encoding::cl100k_base:
      return "cl100k_base";
  }
  return "unknown";
}

std::optional<Encoding> parse_encoding(std::string_view name) {
  for (const Encoding e : {Encoding::o200k_base, Encoding::cl100k_base}) {
    if (name == to_string(e)) return e;
  }
  return std::nullopt;
}

std::vector<std::uint32_t> encode(std::string_view utf8_text, Encoding encoding) {
  std::vector<std::uint32_t> ids;
  ids.reserve(utf8_text.size() / 4 + 1);
  detail::tokenizer(encoding).encode(utf8_text, ids);
  return ids;
}

std::size_t count_tokens(std::string_view utf8_text, Encoding encoding) {
  return detail::tokenizer(encoding).count(utf8_text);
}

}  // namespace admit
