// The model table: tiktoken's model -> encoding rules (tiktoken/model.py) for the two
// encodings admit has, and counting for a model (exact, or the documented estimate).
#include <array>
#include <string_view>

#include "admit/tokens.hpp"

namespace admit {

namespace {

struct ModelRule {
  std::string_view name;
  Encoding encoding;
};

constexpr Encoding kO200k = Encoding::o200k_base;
constexpr Encoding kCl100k = Encoding::cl100k_base;

// tiktoken's MODEL_TO_ENCODING, its o200k_base and cl100k_base entries. Every name js-tiktoken's
// getEncodingNameForModel maps to one of the two is covered by these or by the prefixes below
// (the differential test checks it against the installed js-tiktoken).
constexpr std::array kExact = {
    ModelRule{"o1", kO200k},
    ModelRule{"o3", kO200k},
    ModelRule{"o4-mini", kO200k},
    ModelRule{"gpt-5", kO200k},
    ModelRule{"gpt-4.1", kO200k},
    ModelRule{"gpt-4o", kO200k},
    ModelRule{"gpt-4", kCl100k},
    ModelRule{"gpt-3.5-turbo", kCl100k},
    ModelRule{"gpt-3.5", kCl100k},
    ModelRule{"gpt-35-turbo", kCl100k},  // Azure deployment name
    ModelRule{"davinci-002", kCl100k},
    ModelRule{"babbage-002", kCl100k},
    ModelRule{"text-embedding-ada-002", kCl100k},
    ModelRule{"text-embedding-3-small", kCl100k},
    ModelRule{"text-embedding-3-large", kCl100k},
};

// tiktoken's MODEL_PREFIX_TO_ENCODING, in its order (the first match wins: "ft:gpt-4o" before
// "ft:gpt-4").
constexpr std::array kPrefixes = {
    ModelRule{"o1-", kO200k},
    ModelRule{"o3-", kO200k},
    ModelRule{"o4-mini-", kO200k},
    ModelRule{"gpt-5", kO200k},
    ModelRule{"gpt-4.5-", kO200k},
    ModelRule{"gpt-4.1-", kO200k},
    ModelRule{"chatgpt-4o-", kO200k},
    ModelRule{"gpt-4o-", kO200k},  // gpt-4o-2024-05-13, gpt-4o-mini, ...
    ModelRule{"gpt-4-", kCl100k},  // gpt-4-0314, gpt-4-32k, gpt-4-turbo, ...
    ModelRule{"gpt-3.5-turbo-", kCl100k},
    ModelRule{"gpt-35-turbo-", kCl100k},  // Azure deployment name
    // tiktoken: o200k_harmony, which is o200k_base plus special tokens; admit counts special
    // tokens as text, so its counts are o200k_base's.
    ModelRule{"gpt-oss-", kO200k},
    // fine-tuned models
    ModelRule{"ft:gpt-4o", kO200k},
    ModelRule{"ft:gpt-4", kCl100k},
    ModelRule{"ft:gpt-3.5-turbo", kCl100k},
    ModelRule{"ft:davinci-002", kCl100k},
    ModelRule{"ft:babbage-002", kCl100k},
};

}  // namespace

std::optional<Encoding> encoding_for_model(std::string_view model) {
  for (const ModelRule& r : kExact) {
    if (model == r.name) return r.encoding;
  }
  for (const ModelRule& r : kPrefixes) {
    if (model.starts_with(r.name)) return r.encoding;
  }
  return std::nullopt;
}

TokenCount count_tokens(std::string_view utf8_text, std::string_view model) {
  const std::optional<Encoding> known = encoding_for_model(model);
  const Encoding encoding = known.value_or(Encoding::o200k_base);
  return TokenCount{.tokens = count_tokens(utf8_text, encoding),
                    .encoding = encoding,
                    .estimate = !known.has_value()};
}

}  // namespace admit
