// The BPE ranks of one encoding: token bytes -> rank, over a table compiled into the library
// (cmake/tiktoken_ranks.py writes it, the generated tokens_data.cpp embeds it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "admit/tokens.hpp"

namespace admit::detail {

/// The table of `encoding` embedded in the library (defined in the generated tokens_data.cpp).
std::span<const unsigned char> embedded_rank_table(Encoding encoding);

/// Token bytes -> rank, read-only once built: a static open-addressing hash index over the
/// embedded table (no copy of the token bytes). Thread-safe to read.
class RankTable {
 public:
  static constexpr std::uint32_t kNoRank = 0xFFFFFFFFu;

  /// Checks the table's layout and builds the index; throws admit::Error if the table is not
  /// one cmake/tiktoken_ranks.py wrote.
  explicit RankTable(std::span<const unsigned char> table);

  /// The rank of the token whose bytes are `bytes`, or kNoRank.
  std::uint32_t find(std::string_view bytes) const noexcept;

  /// The bytes of the token of rank `rank` (< size()).
  std::string_view token(std::uint32_t rank) const noexcept {
    const std::uint32_t begin = offset(rank);
    return {bytes_ + begin, offset(rank + 1) - begin};
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t max_token_bytes() const noexcept { return max_token_bytes_; }
  /// The pre-split pattern as js-tiktoken ships it (JavaScript syntax).
  std::string_view js_pattern() const noexcept { return pattern_; }

 private:
  struct Slot {
    std::uint32_t tag = 0;
    std::uint32_t rank = kNoRank;
  };
  std::uint32_t offset(std::uint32_t i) const noexcept;

  const unsigned char* offsets_ = nullptr;  // u32 little-endian [size_ + 1]
  const char* bytes_ = nullptr;
  std::size_t size_ = 0;
  std::size_t max_token_bytes_ = 0;
  std::string_view pattern_;
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

}  // namespace admit::detail
