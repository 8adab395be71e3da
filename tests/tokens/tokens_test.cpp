// admit/tokens.hpp: known ids and counts (each checked against js-tiktoken 1.0.21 under node),
// the model table, chat overhead, invalid UTF-8, long runs, and the lazy load under threads.
// tests/tokens/differential_test.js compares with js-tiktoken on many more texts.
#include <gtest/gtest.h>

#include <admit/tokens.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

using admit::ChatMessage;
using admit::Encoding;
using Ids = std::vector<std::uint32_t>;

constexpr Encoding kO200k = Encoding::o200k_base;
constexpr Encoding kCl100k = Encoding::cl100k_base;

struct Known {
  std::string text;
  Ids o200k;
  Ids cl100k;
};

// Verifies the ids (and counts) of a few texts, as js-tiktoken's encode(text, [], []) gives them.
TEST(Tokens, KnownTexts) {
  const std::vector<Known> known = {
      {"hello world", {24912, 2375}, {15339, 1917}},
      {"Hello, world! It's 2024 and I'll test 12345678 tokens.",
       {13225, 11, 2375, 0, 7744, 220, 1323, 19, 326, 17291, 1746, 220, 7633, 19354, 4388, 20290,
        13},
       {9906, 11, 1917, 0, 1102, 596, 220, 2366, 19, 323, 358, 3358, 1296, 220, 4513, 10961, 2495,
        11460, 13}},
      {"The quick brown fox jumps over the lazy dog.",
       {976, 4853, 19705, 68347, 65613, 1072, 290, 29082, 6446, 13},
       {791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13}},
      {"def add(a, b):\n    return a + b\n",
       {1314, 1147, 6271, 11, 287, 1883, 271, 622, 261, 659, 287, 198},
       {755, 923, 2948, 11, 293, 997, 262, 471, 264, 489, 293, 198}},
      {"日本語のテキストです。",
       {9048, 40909, 3385, 16056, 18368, 38236, 15121, 788},
       {9080, 22656, 45918, 252, 16144, 57933, 62903, 71634, 38641, 1811}},
      {"emoji 😀👍🏽 family 👨‍👩‍👧",
       {75339, 88038, 82514, 52622, 121, 3502, 61138, 101, 2524, 28823, 102, 2524, 28823, 100},
       {38623, 91416, 9468, 239, 235, 9468, 237, 121,  3070, 62904, 101,
        378,   235,   9468, 239, 102, 378,  235, 9468, 239,  100}},
      {"   leading and trailing   ", {256, 8117, 326, 57985, 271}, {256, 6522, 323, 28848, 262}},
      {"\n\n\n", {2499}, {1432}},
      {std::string(300, ' '), {72056, 72056, 32392}, {58040, 58040, 15791}},
  };
  for (const Known& k : known) {
    SCOPED_TRACE(k.text);
    EXPECT_EQ(admit::encode(k.text, kO200k), k.o200k);
    EXPECT_EQ(admit::encode(k.text, kCl100k), k.cl100k);
    EXPECT_EQ(admit::count_tokens(k.text, kO200k), k.o200k.size());
    EXPECT_EQ(admit::count_tokens(k.text, kCl100k), k.cl100k.size());
  }
}

// Verifies that a 300-byte piece (merged with the heap, not the scan) gives js-tiktoken's ids.
TEST(Tokens, LongPieceMatchesJsTiktoken) {
  const std::string text(300, 'x');
  Ids o200k(37, 92984);
  o200k.push_back(30950);
  Ids cl100k(37, 45202);
  cl100k.push_back(19023);
  EXPECT_EQ(admit::encode(text, kO200k), o200k);
  EXPECT_EQ(admit::encode(text, kCl100k), cl100k);
}

// Verifies that special tokens are ordinary text (tiktoken's encode_ordinary).
TEST(Tokens, SpecialTokensAreText) {
  EXPECT_EQ(admit::encode("<|endoftext|>", kO200k), (Ids{27, 91, 419, 1440, 919, 91, 29}));
  EXPECT_EQ(admit::encode("<|endoftext|>", kCl100k), (Ids{27, 91, 8862, 728, 428, 91, 29}));
}

// Verifies that empty text has no tokens.
TEST(Tokens, Empty) {
  for (const Encoding e : {kO200k, kCl100k}) {
    EXPECT_EQ(admit::count_tokens("", e), 0u);
    EXPECT_TRUE(admit::encode("", e).empty());
  }
  EXPECT_EQ(admit::count_tokens("", "gpt-4o").tokens, 0u);
}

// Verifies that invalid UTF-8 counts as the text with U+FFFD for each maximal invalid
// subsequence (what TextDecoder gives js-tiktoken), and never fails.
TEST(Tokens, InvalidUtf8IsReplaced) {
  // U+FFFD is 3251 (o200k_base), 5809 (cl100k_base): js-tiktoken's encode("\uFFFD").
  EXPECT_EQ(admit::encode("\xFF", kO200k), (Ids{3251}));
  EXPECT_EQ(admit::encode("a\xFF"
                          "b",
                          kO200k),
            (Ids{64, 3251, 65}));
  EXPECT_EQ(admit::encode("a\xFF"
                          "b",
                          kCl100k),
            (Ids{64, 5809, 65}));
  const std::vector<std::pair<std::string, std::string>> same = {
      {"\xC3", "\xEF\xBF\xBD"},                                  // truncated 2-byte sequence
      {"\xE2\x82", "\xEF\xBF\xBD"},                              // truncated 3-byte: one U+FFFD
      {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // a surrogate: three
      {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                  // overlong '/'
      {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // > U+10FFFF
      {"x\xE2\x82y \xF0\x9F\x98", "x\xEF\xBF\xBDy \xEF\xBF\xBD"},
  };
  for (const auto& [bytes, replaced] : same) {
    SCOPED_TRACE(bytes);
    for (const Encoding e : {kO200k, kCl100k}) {
      EXPECT_EQ(admit::encode(bytes, e), admit::encode(replaced, e));
      EXPECT_EQ(admit::count_tokens(bytes, e), admit::encode(replaced, e).size());
    }
  }
  // Every byte value, alone and in a row.
  std::string all;
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    EXPECT_GE(admit::count_tokens(one, kO200k), 1u);
    all += one;
  }
  EXPECT_EQ(admit::count_tokens(all, kO200k), admit::encode(all, kO200k).size());
  EXPECT_EQ(admit::count_tokens(all, kCl100k), admit::encode(all, kCl100k).size());
}

// Verifies that a megabyte of one character (one piece of the pre-split) finishes quickly: the
// merge of long pieces is O(n log n), not tiktoken's O(n^2).
TEST(Tokens, LongRunsFinishQuickly) {
  const std::size_t mb = std::size_t{1} << 20;
  const auto start = std::chrono::steady_clock::now();
  // 8 letters and 128 spaces are the longest such tokens of o200k_base.
  EXPECT_EQ(admit::count_tokens(std::string(mb, 'a'), kO200k), mb / 8);
  EXPECT_EQ(admit::count_tokens(std::string(mb, ' '), kO200k), mb / 128);
  EXPECT_EQ(admit::count_tokens(std::string(mb, '1'), kO200k), (mb + 2) / 3);  // \p{N}{1,3}
  std::string mixed;
  while (mixed.size() < mb) mixed += "\xE6\x97\xA5";  // 日, one \p{Lo} run
  EXPECT_EQ(admit::count_tokens(mixed, kCl100k), admit::encode(mixed, kCl100k).size());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 60.0);  // ~2 s in a Release build; generous for the sanitizers
}

// Verifies tiktoken's model table: exact names, prefixes in order, and unknown models.
TEST(Tokens, ModelTable) {
  const std::vector<std::pair<std::string, Encoding>> known = {
      {"gpt-4o", kO200k},
      {"gpt-4o-mini", kO200k},
      {"gpt-4o-2024-08-06", kO200k},
      {"chatgpt-4o-latest", kO200k},
      {"gpt-4.1", kO200k},
      {"gpt-4.1-nano-2025-04-14", kO200k},
      {"gpt-4.5-preview", kO200k},
      {"gpt-5", kO200k},
      {"gpt-5-mini", kO200k},
      {"gpt-5.1", kO200k},  // tiktoken's prefix is "gpt-5", without a dash
      {"o1", kO200k},
      {"o1-mini", kO200k},
      {"o3", kO200k},
      {"o3-mini-2025-01-31", kO200k},
      {"o4-mini", kO200k},
      {"o4-mini-2025-04-16", kO200k},
      {"gpt-oss-120b", kO200k},
      {"ft:gpt-4o-mini:org::abc", kO200k},
      {"gpt-4", kCl100k},
      {"gpt-4-0613", kCl100k},
      {"gpt-4-turbo", kCl100k},
      {"gpt-4-32k", kCl100k},
      {"gpt-3.5-turbo", kCl100k},
      {"gpt-3.5-turbo-instruct", kCl100k},
      {"gpt-3.5", kCl100k},
      {"gpt-35-turbo", kCl100k},
      {"gpt-35-turbo-16k", kCl100k},
      {"text-embedding-3-small", kCl100k},
      {"text-embedding-3-large", kCl100k},
      {"text-embedding-ada-002", kCl100k},
      {"davinci-002", kCl100k},
      {"ft:gpt-4-0613:org::abc", kCl100k},
      {"ft:gpt-3.5-turbo:org::abc", kCl100k},
  };
  for (const auto& [model, encoding] : known) {
    SCOPED_TRACE(model);
    ASSERT_TRUE(admit::encoding_for_model(model).has_value());
    EXPECT_EQ(*admit::encoding_for_model(model), encoding);
  }
  for (const char* model :
       {"claude-3-5-sonnet-20241022", "gemini-1.5-pro", "llama-3.1-70b", "text-davinci-003",
        "davinci", "gpt2", "GPT-4O", "o2", "o4", "", "openai/gpt-4o"}) {
    EXPECT_FALSE(admit::encoding_for_model(model).has_value()) << model;
  }
}

// Verifies the encoding names.
TEST(Tokens, EncodingNames) {
  EXPECT_EQ(admit::to_string(kO200k), "o200k_base");
  EXPECT_EQ(admit::to_string(kCl100k), "cl100k_base");
  EXPECT_EQ(admit::parse_encoding("o200k_base"), kO200k);
  EXPECT_EQ(admit::parse_encoding("cl100k_base"), kCl100k);
  EXPECT_FALSE(admit::parse_encoding("p50k_base").has_value());
  EXPECT_FALSE(admit::parse_encoding("").has_value());
}

// Verifies counting for a model: exact with its encoding, an o200k_base estimate otherwise.
TEST(Tokens, CountForModel) {
  const std::string text = "Hello, world! It's 2024 and I'll test 12345678 tokens.";
  const admit::TokenCount gpt4 = admit::count_tokens(text, "gpt-4");
  EXPECT_EQ(gpt4.tokens, 19u);
  EXPECT_EQ(gpt4.encoding, kCl100k);
  EXPECT_FALSE(gpt4.estimate);
  const admit::TokenCount gpt4o = admit::count_tokens(text, "gpt-4o");
  EXPECT_EQ(gpt4o.tokens, 17u);
  EXPECT_EQ(gpt4o.encoding, kO200k);
  EXPECT_FALSE(gpt4o.estimate);
  const admit::TokenCount claude = admit::count_tokens(text, "claude-sonnet-4");
  EXPECT_EQ(claude.tokens, 17u);
  EXPECT_EQ(claude.encoding, kO200k);
  EXPECT_TRUE(claude.estimate);
}

// Verifies OpenAI's chat overhead on the cookbook's example ("How to count tokens with tiktoken":
// 81 prompt tokens for gpt-4 and gpt-3.5-turbo, 79 for gpt-4o; js-tiktoken gives the same).
TEST(Tokens, ChatOverheadCookbookExample) {
  const std::vector<ChatMessage> messages = {
      {.role = "system",
       .content = "You are a helpful, pattern-following assistant that translates corporate "
                  "jargon into plain English."},
      {.role = "system",
       .content = "New synergies will help drive top-line growth.",
       .name = "example_user"},
      {.role = "system",
       .content = "Things working well together will increase revenue.",
       .name = "example_assistant"},
      {.role = "user",
       .content = "This late pivot means we don't have time to boil the ocean for the client "
                  "deliverable."},
  };
  EXPECT_EQ(admit::count_chat_tokens(messages, kCl100k), 81u);
  EXPECT_EQ(admit::count_chat_tokens(messages, kO200k), 79u);
  const admit::TokenCount gpt4 = admit::count_chat_tokens(messages, "gpt-4-0613");
  EXPECT_EQ(gpt4.tokens, 81u);
  EXPECT_FALSE(gpt4.estimate);
  const admit::TokenCount mini = admit::count_chat_tokens(messages, "gpt-4o-mini");
  EXPECT_EQ(mini.tokens, 79u);
  EXPECT_EQ(mini.encoding, kO200k);
  const admit::TokenCount other = admit::count_chat_tokens(messages, "mistral-large");
  EXPECT_EQ(other.tokens, 79u);
  EXPECT_TRUE(other.estimate);
}

// Verifies the overhead's parts: 3 per message, the role and content, 1 + the name's tokens
// per name, 3 for the reply.
TEST(Tokens, ChatOverheadParts) {
  EXPECT_EQ(admit::count_chat_tokens(std::span<const ChatMessage>{}, kO200k), 3u);
  const std::vector<ChatMessage> one = {{.role = "user", .content = "hello world"}};
  EXPECT_EQ(admit::count_chat_tokens(one, kO200k), 3u + 3u + 1u + 2u);
  const std::vector<ChatMessage> named = {
      {.role = "user", .content = "hello world", .name = "hello world"}};
  EXPECT_EQ(admit::count_chat_tokens(named, kO200k), 3u + 3u + 1u + 2u + 1u + 2u);
  const std::vector<ChatMessage> empty_name = {{.role = "user", .content = "", .name = ""}};
  EXPECT_EQ(admit::count_chat_tokens(empty_name, kO200k), 3u + 3u + 1u + 0u + 1u + 0u);
  EXPECT_EQ(admit::ChatOverhead::per_message, 3u);
  EXPECT_EQ(admit::ChatOverhead::per_name, 1u);
  EXPECT_EQ(admit::ChatOverhead::reply, 3u);
}

// Verifies that threads racing for the first use of an encoding (the lazy load) all get the
// same counts. ctest runs each test case in its own process, so the tables load here.
TEST(Tokens, LazyLoadIsThreadSafe) {
  const std::string text = "Hello, world! It's 2024 and I'll test 12345678 tokens. 日本語";
  constexpr int kThreads = 8;
  std::atomic<int> ready{0};
  std::vector<std::size_t> o200k(kThreads);
  std::vector<std::size_t> cl100k(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      const auto i = static_cast<std::size_t>(t);
      o200k[i] =
          (t % 2 == 0) ? admit::count_tokens(text, kO200k) : admit::encode(text, kO200k).size();
      cl100k[i] = admit::count_tokens(text, kCl100k);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    const auto i = static_cast<std::size_t>(t);
    EXPECT_EQ(o200k[i], admit::count_tokens(text, kO200k));
    EXPECT_EQ(cl100k[i], admit::count_tokens(text, kCl100k));
  }
}

}  // namespace
