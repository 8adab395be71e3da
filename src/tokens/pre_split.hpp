// The pre-split: an encoding's pattern cuts text into pieces (words with their leading space,
// runs of digits, punctuation, whitespace) that BPE then encodes one by one. The patterns come
// from js-tiktoken's rank files (JavaScript syntax) and run on PCRE2 with JIT.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct pcre2_real_code_8;

namespace admit::detail {

/// What JavaScript's \s matches (ECMA-262 WhiteSpace and LineTerminator), as the members of a
/// PCRE2 character class. PCRE2's own \s differs: it adds U+0085 and U+180E, lacks U+FEFF.
inline constexpr std::string_view kJsWhitespaceClass =
    R"(\t\n\x{0B}\f\r\p{Zs}\x{2028}\x{2029}\x{FEFF})";

/**
 * A JavaScript regular expression (the syntax of the `u` flag, no other flag) rewritten for
 * PCRE2 with PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, so that it matches the same strings:
 * \s, \S, \d, \D, \w, \W and `.` become the classes JavaScript means, \v and \u{...} their code
 * points; everything else is copied. Throws admit::Error on what it cannot rewrite faithfully
 * (\b, back references, \S inside a class, an empty class, ...), naming it.
 */
std::string js_pattern_to_pcre2(std::string_view js_pattern);

/// One encoding's compiled pre-split pattern. Thread-safe (each thread matches with its own
/// match data).
class PreSplitter {
 public:
  /// Rewrites `js_pattern` (js_pattern_to_pcre2) and compiles it, with JIT where the machine
  /// allows; throws admit::Error if PCRE2 refuses it.
  explicit PreSplitter(std::string_view js_pattern);
  ~PreSplitter();
  PreSplitter(const PreSplitter&) = delete;
  PreSplitter& operator=(const PreSplitter&) = delete;

  /**
   * The next piece of `text`, which must be valid UTF-8 (is_valid_utf8): the first non-empty
   * match at or after byte `from`, as JavaScript's matchAll finds them.
   * @return false when no piece is left; else true with the piece in [begin, end).
   */
  bool next(std::string_view text, std::size_t from, std::size_t& begin, std::size_t& end) const;

  /// The PCRE2 pattern compiled.
  const std::string& pattern() const noexcept { return pattern_; }
  /// True if PCRE2 compiled the pattern to machine code.
  bool jit() const noexcept { return jit_; }

 private:
  std::string pattern_;
  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
};

}  // namespace admit::detail
