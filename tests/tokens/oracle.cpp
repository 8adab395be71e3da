// The C++ side of tests/tokens/differential_test.js: answers one request per input line, in
// one process, so that thousands of texts take a second.
//   encode <encoding> <base64 bytes>  ->  <count_tokens> <id> <id> ...   (ids of encode())
//   model <name>                      ->  the encoding_for_model() name, or -
//   classes                           ->  "<first> <last> <mask>" (hex) for each run of code
//                                         points with one class mask, then "end"
// The mask's bits are the classes the pre-split patterns use, as PCRE2 (10.42 in Debian 12:
// Unicode 14) sees them: 0 whitespace (JavaScript's \s, kJsWhitespaceClass), 1 \p{L}, 2 \p{N},
// 3 \p{Lu}, 4 \p{Lt}, 5 \p{Lm}, 6 \p{Lo}, 7 \p{Ll}, 8 \p{M}. The JavaScript side computes the
// same with its own tables and leaves out of its random texts the code points whose masks
// differ (characters newer than one side's Unicode version).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <admit/tokens.hpp>
#include <array>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "tokens/pre_split.hpp"

namespace {

std::string base64_decode(std::string_view in) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t bits = 0;
  int n = 0;
  for (const char c : in) {
    const std::size_t v = kAlphabet.find(c);
    if (v == std::string_view::npos) continue;  // '=' padding
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    n += 6;
    if (n >= 8) {
      n -= 8;
      out += static_cast<char>((bits >> n) & 0xFF);
    }
  }
  return out;
}

std::string utf8(std::uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

int classes() {
  const std::string ws = "[" + std::string(admit::detail::kJsWhitespaceClass) + "]";
  const std::array<std::string, 9> patterns = {
      ws, "\\p{L}", "\\p{N}", "\\p{Lu}", "\\p{Lt}", "\\p{Lm}", "\\p{Lo}", "\\p{Ll}", "\\p{M}"};
  std::vector<pcre2_code*> codes;
  for (const std::string& p : patterns) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &error, &offset, nullptr);
    if (code == nullptr) return 1;
    codes.push_back(code);
  }
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  std::uint32_t run_start = 0;
  unsigned run_mask = 0;
  const auto flush = [&](std::uint32_t last) {
    std::array<char, 64> buf{};
    std::snprintf(buf.data(), buf.size(), "%x %x %x\n", run_start, last, run_mask);
    std::cout << buf.data();
  };
  for (std::uint32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c < 0xE000) continue;  // surrogates: not text
    const std::string s = utf8(c);
    unsigned mask = 0;
    for (std::size_t i = 0; i < codes.size(); ++i) {
      if (pcre2_match(codes[i], reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md,
                      nullptr) > 0) {
        mask |= 1u << i;
      }
    }
    if (c == 0) {
      run_mask = mask;
    } else if (mask != run_mask || c == 0xE000) {
      flush(c == 0xE000 ? 0xD7FF : c - 1);
      run_start = c;
      run_mask = mask;
    }
  }
  flush(0x10FFFF);
  std::cout << "end\n";
  pcre2_match_data_free(md);
  for (pcre2_code* code : codes) pcre2_code_free(code);
  return 0;
}

}  // namespace

int main() {
  std::ios::sync_with_stdio(false);
  std::string line;
  std::string out;
  while (std::getline(std::cin, line)) {
    const std::size_t space = line.find(' ');
    const std::string verb = line.substr(0, space);
    const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
    if (verb == "classes") {
      if (classes() != 0) return 1;
      continue;
    }
    out.clear();
    if (verb == "model") {
      const auto e = admit::encoding_for_model(rest);
      out = e ? std::string(admit::to_string(*e)) : "-";
    } else if (verb == "encode") {
      const std::size_t sep = rest.find(' ');
      const auto encoding = admit::parse_encoding(rest.substr(0, sep));
      if (!encoding) {
        std::cerr << "oracle: unknown encoding in: " << line << "\n";
        return 2;
      }
      const std::string text =
          sep == std::string::npos ? std::string() : base64_decode(rest.substr(sep + 1));
      out = std::to_string(admit::count_tokens(text, *encoding));
      for (const std::uint32_t id : admit::encode(text, *encoding)) {
        out += ' ';
        out += std::to_string(id);
      }
    } else {
      std::cerr << "oracle: unknown request: " << line << "\n";
      return 2;
    }
    std::cout << out << '\n';
  }
  return 0;
}
