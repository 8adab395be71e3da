// UTF-8 validation and U+FFFD replacement (WHATWG's decoder, byte for byte).
#include "tokens/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace admit::detail {

namespace {

struct Sequence {
  std::size_t length;  // valid: the sequence's length; invalid: the maximal subpart's (>= 1)
  bool valid;
};

// The sequence starting at p[0] (n > 0 bytes left), by the WHATWG UTF-8 decoder: a byte that
// cannot start a sequence is one invalid byte; a sequence cut short by a byte out of range (or
// by the end) is invalid up to that byte, which is read again as the start of the next.
Sequence next_sequence(const unsigned char* p, std::size_t n) noexcept {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return {1, true};
  std::size_t need = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong 3-byte form
    if (b0 == 0xED) hi = 0x9F;  // no surrogate
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;  // no overlong 4-byte form
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {1, false};
  }
  for (std::size_t k = 1; k <= need; ++k) {
    if (k >= n || p[k] < lo || p[k] > hi) return {k, false};
    lo = 0x80;
    hi = 0xBF;
  }
  return {need + 1, true};
}

// The length of the ASCII run at the start of p[0, n), eight bytes at a time.
std::size_t ascii_prefix(const unsigned char* p, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, p + i, 8);
    if ((word & 0x8080808080808080ULL) != 0) break;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

}  // namespace

bool is_valid_utf8(std::string_view bytes) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  while (i < n) {
    i += ascii_prefix(p + i, n - i);
    if (i == n) break;
    const Sequence s = next_sequence(p + i, n - i);
    if (!s.valid) return false;
    i += s.length;
  }
  return true;
}

std::string replace_invalid_utf8(std::string_view bytes) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::string out;
  out.reserve(n + n / 2);
  std::size_t i = 0;
  while (i < n) {
    const std::size_t ascii = ascii_prefix(p + i, n - i);
    out.append(bytes.substr(i, ascii));
    i += ascii;
    if (i == n) break;
    const Sequence s = next_sequence(p + i, n - i);
    if (s.valid) {
      out.append(bytes.substr(i, s.length));
    } else {
      out.append(kReplacement);
    }
    i += s.length;
  }
  return out;
}

}  // namespace admit::detail
