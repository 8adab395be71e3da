// The token counter's parts (src/tokens/): the embedded tables, the pattern rewrite for PCRE2,
// UTF-8 replacement, and the two forms of the BPE merge against each other.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "admit/core/error.hpp"
#include "support/seed.hpp"
#include "tokens/bpe.hpp"
#include "tokens/pre_split.hpp"
#include "tokens/rank_table.hpp"
#include "tokens/tokenizer.hpp"
#include "tokens/utf8.hpp"

namespace {

using admit::Encoding;
using admit::detail::tokenizer;

// Verifies the tables' sizes (OpenAI's: tiktoken's n_vocab less the special tokens) and that
// every token is found at its own rank.
TEST(TokensInternals, RankTables) {
  const auto& o200k = tokenizer(Encoding::o200k_base).ranks();
  const auto& cl100k = tokenizer(Encoding::cl100k_base).ranks();
  EXPECT_EQ(o200k.size(), 199998u);
  EXPECT_EQ(cl100k.size(), 100256u);
  EXPECT_EQ(o200k.max_token_bytes(), 128u);
  EXPECT_EQ(cl100k.max_token_bytes(), 128u);
  for (const auto* table : {&o200k, &cl100k}) {
    for (std::uint32_t r = 0; r < table->size(); ++r) {
      ASSERT_EQ(table->find(table->token(r)), r);
    }
    EXPECT_EQ(table->find(""), admit::detail::RankTable::kNoRank);
    EXPECT_EQ(table->find(std::string(129, 'a')), admit::detail::RankTable::kNoRank);
  }
  EXPECT_EQ(o200k.token(24912), "hello");
  EXPECT_EQ(cl100k.token(1917), " world");
}

// Verifies that a table that is not one tiktoken_ranks.py wrote is refused, not read.
TEST(TokensInternals, CorruptTableIsRefused) {
  const std::vector<unsigned char> junk(64, 0xAB);
  EXPECT_THROW(admit::detail::RankTable{std::span<const unsigned char>(junk)}, admit::Error);
  const auto real = admit::detail::embedded_rank_table(Encoding::cl100k_base);
  EXPECT_THROW(admit::detail::RankTable{real.first(real.size() - 1)}, admit::Error);
}

// Verifies the rewrite of js-tiktoken's patterns: JavaScript's \s (which PCRE2's \s is not),
// everything else as it was.
TEST(TokensInternals, PatternRewrite) {
  using admit::detail::js_pattern_to_pcre2;
  const std::string ws(admit::detail::kJsWhitespaceClass);
  EXPECT_EQ(js_pattern_to_pcre2(R"(\s+(?!\S)|\s+)"),
            "[" + ws + "]+(?![^" + ws + "])|[" + ws + "]+");
  EXPECT_EQ(js_pattern_to_pcre2(R"( ?[^\s\p{L}\p{N}]+[\r\n/]*)"),
            " ?[^" + ws + R"(\p{L}\p{N}]+[\r\n/]*)");
  EXPECT_EQ(js_pattern_to_pcre2(R"('s|'S|\p{N}{1,3})"), R"('s|'S|\p{N}{1,3})");
  EXPECT_EQ(js_pattern_to_pcre2(R"(\d\w.\v\u00e9\u{1F600}\.)"),
            R"([0-9][A-Za-z0-9_][^\n\r\x{2028}\x{2029}]\x{0B}\x{00e9}\x{1F600}\.)");
  for (const char* bad : {R"(\b)", R"(\1)", R"([\S])", "[]", "[abc", R"(\p{L)", "\\"}) {
    EXPECT_THROW(js_pattern_to_pcre2(bad), admit::Error) << bad;
  }
  // The patterns of both tables compile (with JIT here).
  for (const Encoding e : {Encoding::o200k_base, Encoding::cl100k_base}) {
    EXPECT_TRUE(tokenizer(e).pre_split().jit()) << admit::to_string(e);
    EXPECT_NE(tokenizer(e).pre_split().pattern().find(ws), std::string::npos);
  }
}

// Verifies the pre-split's pieces on a text that uses every branch of o200k_base's pattern.
TEST(TokensInternals, PreSplitPieces) {
  const auto& split = tokenizer(Encoding::o200k_base).pre_split();
  const std::string bom = "\xEF\xBB\xBF";  // U+FEFF
  const std::string text = "Hello WORLD's 12345 !!\n\n  x" + bom + "y " + bom + bom + "1  ";
  std::vector<std::string> pieces;
  std::size_t begin = 0;
  std::size_t end = 0;
  for (std::size_t from = 0; split.next(text, from, begin, end); from = end) {
    pieces.push_back(text.substr(begin, end - begin));
  }
  // JavaScript's matchAll gives these. U+FEFF is whitespace to JavaScript (so here), not to
  // PCRE2's own \s, which would make " " + bom + bom one piece of punctuation.
  const std::vector<std::string> expected = {"Hello",   " WORLD's", " ",  "123",     "45",
                                             " !!\n\n", " ",        " x", bom + "y", " " + bom,
                                             bom,       "1",        "  "};
  EXPECT_EQ(pieces, expected);
}

// Verifies UTF-8 validation and U+FFFD replacement (the WHATWG decoder's maximal subparts).
TEST(TokensInternals, Utf8) {
  using admit::detail::is_valid_utf8;
  using admit::detail::replace_invalid_utf8;
  for (const char* ok : {"", "ascii only", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80",
                         "\xEF\xBF\xBF", "\xF4\x8F\xBF\xBF", "\xED\x9F\xBF"}) {
    EXPECT_TRUE(is_valid_utf8(ok)) << ok;
    EXPECT_EQ(replace_invalid_utf8(ok), ok);
  }
  const std::string r = "\xEF\xBF\xBD";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"\x80", r},
      {"\xC1\xBF", r + r},
      {"\xE0\x80\x80", r + r + r},
      {"\xE0\xA0", r},
      {"\xED\xA0\x80", r + r + r},
      {"\xF0\x8F\xBF\xBF", r + r + r + r},
      {"\xF4\x90\x80\x80", r + r + r + r},
      {"\xF5", r},
      {"\xF0\x9F\x98", r},
      {"\xF0\x9F\x98"
       "a",
       r + "a"},
      {"a\xC3(b", "a" + r + "(b"},
      {"12345678\xFF"
       "12345678",
       "12345678" + r + "12345678"},
  };
  for (const auto& [in, out] : bad) {
    EXPECT_FALSE(is_valid_utf8(in)) << in;
    EXPECT_EQ(replace_invalid_utf8(in), out) << in;
    EXPECT_TRUE(is_valid_utf8(replace_invalid_utf8(in)));
  }
}

// Verifies that the heap merge (long pieces) and tiktoken's scan agree, on runs and on random
// bytes drawn from small alphabets (many merges, many equal ranks).
TEST(TokensInternals, HeapMergeEqualsScan) {
  const std::uint64_t seed = admit::test::test_seed();
  SCOPED_TRACE(admit::test::seed_note(seed));
  std::mt19937_64 rng(seed);
  for (const Encoding e : {Encoding::o200k_base, Encoding::cl100k_base}) {
    const auto& ranks = tokenizer(e).ranks();
    for (const std::string unit : {"a", " ", "ab", "=", "\xE6\x97\xA5", "la", "\n", "0"}) {
      for (const std::size_t n : {2u, 3u, 95u, 96u, 97u, 1000u, 4096u}) {
        std::string piece;
        while (piece.size() < n) piece += unit;
        ASSERT_EQ(admit::detail::merge_by_heap(piece, ranks),
                  admit::detail::merge_by_scan(piece, ranks))
            << admit::to_string(e) << " " << n << " x " << unit;
      }
    }
    const std::vector<std::string> alphabets = {"ab", "abc ", "aeiou", "xyz\n", "\xE3\x81\x82\xE3"};
    for (int i = 0; i < 400; ++i) {
      const std::string& alphabet = alphabets[rng() % alphabets.size()];
      std::string piece(2 + rng() % 600, ' ');
      for (char& c : piece) c = alphabet[rng() % alphabet.size()];
      ASSERT_EQ(admit::detail::merge_by_heap(piece, ranks),
                admit::detail::merge_by_scan(piece, ranks))
          << admit::to_string(e) << " " << piece;
    }
  }
}

// Verifies that the concatenated token bytes are the text (with U+FFFD for invalid bytes):
// encoding loses nothing and invents nothing.
TEST(TokensInternals, DecodeRoundTrip) {
  const std::uint64_t seed = admit::test::test_seed();
  SCOPED_TRACE(admit::test::seed_note(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 300; ++i) {
    std::string bytes(rng() % 300, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 256);
    if (i % 2 == 0) bytes = admit::detail::replace_invalid_utf8(bytes);
    for (const Encoding e : {Encoding::o200k_base, Encoding::cl100k_base}) {
      const auto ids = admit::encode(bytes, e);
      ASSERT_EQ(tokenizer(e).decode(ids), admit::detail::replace_invalid_utf8(bytes));
      ASSERT_EQ(admit::count_tokens(bytes, e), ids.size());
    }
  }
}

}  // namespace
