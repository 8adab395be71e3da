// Offline token counting: exact byte-level BPE as OpenAI's tiktoken does it, for the encodings
// o200k_base and cl100k_base, with tiktoken's model -> encoding table, OpenAI's chat message
// overhead, and an estimate for models of other families (docs/tokens.md). The rank tables are
// compiled into the library: nothing is read from files or fetched at run time.
//
// Every function here is thread-safe. The first call that needs an encoding builds its lookup
// table (o200k_base: ~200,000 tokens, a few ms), once per process, whatever the number of
// threads calling at that moment; later calls only read it. Any input is valid: the functions
// throw only std::bad_alloc, or admit::Error should PCRE2 report an error (a resource limit).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace admit {

/// A tiktoken encoding: its pre-split pattern and its BPE ranks, as OpenAI publishes them.
enum class Encoding {
  o200k_base,   ///< GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1, o3, o4-mini
  cl100k_base,  ///< GPT-4, GPT-3.5 Turbo, text-embedding-3-*, text-embedding-ada-002
};

/// "o200k_base" or "cl100k_base".
std::string_view to_string(Encoding encoding);

/// The encoding named `name` ("o200k_base", "cl100k_base"), or nullopt.
std::optional<Encoding> parse_encoding(std::string_view name);

/**
 * tiktoken's encoding for a model name: its exact names first ("gpt-4o", "gpt-4", "o1",
 * "text-embedding-3-small", ...), then its prefixes in its order ("gpt-4o-", "gpt-4-",
 * "gpt-5", "o3-", "ft:gpt-4o", ...). Case-sensitive, as tiktoken is. docs/tokens.md lists the
 * table.
 * @return the encoding, or nullopt for a model of another family (Claude, Gemini, Llama, ...)
 *         or of one of OpenAI's retired encodings (r50k_base, p50k_base: davinci, ...).
 */
std::optional<Encoding> encoding_for_model(std::string_view model);

/**
 * The token ids of `utf8_text`, as tiktoken's `encode_ordinary` gives them: special tokens
 * such as "<|endoftext|>" are ordinary text here (several tokens, never the special id).
 *
 * Bytes that are not valid UTF-8 are first replaced by U+FFFD, one per maximal invalid
 * subsequence (what a WHATWG TextDecoder, Python's `decode(errors="replace")` or a lenient
 * JSON reader gives the model): the ids are those of that text.
 * @note Linear in the input in practice: a long piece that is not a token (a run of one
 * character, say) is merged with a heap, O(n log n), not tiktoken's O(n^2).
 */
std::vector<std::uint32_t> encode(std::string_view utf8_text, Encoding encoding);

/// `encode(utf8_text, encoding).size()`, without building the ids.
std::size_t count_tokens(std::string_view utf8_text, Encoding encoding);

/// A count for a model, and how it was made.
struct TokenCount {
  std::size_t tokens = 0;
  /// The encoding counted with: the model's, or o200k_base for an estimate.
  Encoding encoding = Encoding::o200k_base;
  /// True when the model has no known encoding: `tokens` is then o200k_base's count, an
  /// estimate of what the model's own tokenizer gives (docs/tokens.md#estimates). A caller that
  /// reserves tokens with it should reconcile with the usage the provider reports.
  bool estimate = false;
};

/// The tokens of `utf8_text` for `model`: exact with the model's encoding
/// (encoding_for_model()), else an estimate (TokenCount::estimate).
TokenCount count_tokens(std::string_view utf8_text, std::string_view model);

/// One message of a chat completion request's `messages` array. The views must stay valid
/// during the call only.
struct ChatMessage {
  std::string_view role{};     ///< "system", "user", "assistant", "tool", ...
  std::string_view content{};  ///< the text (for an array of parts: the caller's text parts)
  std::optional<std::string_view> name{};  ///< the optional `name` field
};

/// The overhead OpenAI documents for chat messages (the cookbook "How to count tokens with
/// tiktoken", `num_tokens_from_messages`; docs/tokens.md#chat). It counts for every model.
struct ChatOverhead {
  /// Each message is wrapped as <|start|>{role/name}\n{content}<|end|>\n.
  static constexpr std::size_t per_message = 3;
  /// A message with a `name` adds one token besides the name's own.
  static constexpr std::size_t per_name = 1;
  /// Every reply is primed with <|start|>assistant<|message|>.
  static constexpr std::size_t reply = 3;
};

/**
 * The prompt tokens of a chat completion request, as OpenAI's cookbook counts them: for each
 * message ChatOverhead::per_message plus the tokens of its role and content, plus those of its
 * name and ChatOverhead::per_name if it has one; then ChatOverhead::reply once.
 * @note Tool definitions, tool calls, images and response formats are not counted: they add
 * tokens the cookbook does not specify.
 */
std::size_t count_chat_tokens(std::span<const ChatMessage> messages, Encoding encoding);

/// count_chat_tokens() with the model's encoding, or an estimate (TokenCount::estimate) with
/// o200k_base and the same overhead for a model without a known encoding.
TokenCount count_chat_tokens(std::span<const ChatMessage> messages, std::string_view model);

}  // namespace admit
