// One encoding's tokenizer: its ranks and its pre-split, built once per process on first use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "admit/tokens.hpp"
#include "tokens/pre_split.hpp"
#include "tokens/rank_table.hpp"

namespace admit::detail {

class Tokenizer {
 public:
  /// Reads a table cmake/tiktoken_ranks.py wrote; throws admit::Error if it cannot.
  explicit Tokenizer(std::span<const unsigned char> table);

  /// Appends the ids of `utf8_text` to `out` (admit::encode()).
  void encode(std::string_view utf8_text, std::vector<std::uint32_t>& out) const;
  /// admit::count_tokens().
  std::size_t count(std::string_view utf8_text) const;
  /// The bytes of the tokens `ids`, concatenated; ids out of range are skipped.
  std::string decode(std::span<const std::uint32_t> ids) const;

  const RankTable& ranks() const noexcept { return ranks_; }
  const PreSplitter& pre_split() const noexcept { return pre_split_; }

 private:
  template <class PieceFn>
  void for_each_piece(std::string_view utf8_text, PieceFn&& piece) const;

  RankTable ranks_;
  PreSplitter pre_split_;
};

/// The tokenizer of `encoding`, built from the embedded table by the first call (thread-safe).
const Tokenizer& tokenizer(Encoding encoding);

}  // namespace admit::detail
