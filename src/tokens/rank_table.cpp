// Rank loading: the embedded table's layout (cmake/tiktoken_ranks.py documents it) and the hash
// index over it.
#include "tokens/rank_table.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "admit/core/error.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace admit::detail {

namespace {

constexpr std::string_view kMagic = "ADMTBPE1";
constexpr std::size_t kHeaderBytes = 8 + 4 * 4;

std::uint32_t read_u32(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

[[noreturn]] void corrupt(const std::string& why) {
  throw Error("admit tokens: the embedded rank table is corrupt: " + why);
}

std::uint64_t hash_bytes(std::string_view bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

}  // namespace

std::uint32_t RankTable::offset(std::uint32_t i) const noexcept {
  return read_u32(offsets_ + std::size_t{4} * i);
}

RankTable::RankTable(std::span<const unsigned char> table) {
  if (table.size() < kHeaderBytes || std::memcmp(table.data(), kMagic.data(), kMagic.size()) != 0) {
    corrupt("no ADMTBPE1 header");
  }
  const unsigned char* p = table.data() + kMagic.size();
  const std::uint32_t n = read_u32(p);
  const std::uint32_t max_len = read_u32(p + 4);
  const std::uint32_t bytes_size = read_u32(p + 8);
  const std::uint32_t pattern_size = read_u32(p + 12);
  const std::size_t expected = kHeaderBytes + std::size_t{4} * (std::size_t{n} + 1) +
                               std::size_t{bytes_size} + std::size_t{pattern_size};
  if (n == 0 || n >= kNoRank || expected != table.size()) corrupt("sizes do not add up");
  offsets_ = table.data() + kHeaderBytes;
  bytes_ = reinterpret_cast<const char*>(offsets_ + std::size_t{4} * (std::size_t{n} + 1));
  size_ = n;
  max_token_bytes_ = max_len;
  pattern_ = std::string_view(bytes_ + bytes_size, pattern_size);

  std::size_t longest = 0;
  for (std::uint32_t r = 0; r < n; ++r) {
    const std::uint32_t begin = offset(r);
    const std::uint32_t end = offset(r + 1);
    if (end <= begin || end > bytes_size) corrupt("offsets out of order");
    longest = std::max<std::size_t>(longest, end - begin);
  }
  if (offset(0) != 0 || offset(n) != bytes_size || longest != max_len) {
    corrupt("offsets do not cover the token bytes");
  }

  // At most half full: a miss (most lookups of the BPE merge are) ends within ~2.5 slots.
  const std::size_t capacity = std::bit_ceil(std::max<std::size_t>(16, std::size_t{2} * n));
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (std::uint32_t r = 0; r < n; ++r) {
    const std::string_view bytes = token(r);
    const std::uint64_t h = hash_bytes(bytes);
    std::size_t i = h & mask_;
    while (slots_[i].rank != kNoRank) {
      if (token(slots_[i].rank) == bytes) corrupt("a token listed twice");
      i = (i + 1) & mask_;
    }
    slots_[i] = Slot{static_cast<std::uint32_t>(h >> 32), r};
  }
  // Byte-level BPE: every byte is a token, so every piece can be encoded.
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    if (find(std::string_view(&c, 1)) == kNoRank)
      corrupt("byte " + std::to_string(b) + " is no token");
  }
}

std::uint32_t RankTable::find(std::string_view bytes) const noexcept {
  if (bytes.empty() || bytes.size() > max_token_bytes_) return kNoRank;
  const std::uint64_t h = hash_bytes(bytes);
  const auto tag = static_cast<std::uint32_t>(h >> 32);
  for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot s = slots_[i];
    if (s.rank == kNoRank) return kNoRank;
    if (s.tag == tag && token(s.rank) == bytes) return s.rank;
  }
}

}  // namespace admit::detail
