// Pre-split: js-tiktoken's patterns rewritten for PCRE2, compiled with JIT, matched piece by
// piece.
#include "tokens/pre_split.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cctype>
#include <memory>
#include <new>
#include <string>

#include "admit/core/error.hpp"

namespace admit::detail {

namespace {

[[noreturn]] void refuse(std::string_view js, std::size_t at, const std::string& why) {
  throw Error("admit tokens: cannot rewrite the pre-split pattern for PCRE2 at offset " +
              std::to_string(at) + " (" + why + "): " + printable(js, 400));
}

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buf{};
  if (pcre2_get_error_message(code, buf.data(), buf.size()) < 0) {
    return "PCRE2 error " + std::to_string(code);
  }
  return std::string(reinterpret_cast<const char*>(buf.data()));
}

// What JavaScript's class escapes mean under the `u` flag without `i`: ASCII only.
constexpr std::string_view kJsDigitClass = "0-9";
constexpr std::string_view kJsWordClass = "A-Za-z0-9_";

// The length of a \p{...} / \P{...} escape at js[i] ('\\'), or 0 if there is none.
std::size_t property_escape(std::string_view js, std::size_t i) {
  if (i + 3 >= js.size() || js[i + 2] != '{') return 0;
  const std::size_t close = js.find('}', i + 3);
  if (close == std::string_view::npos || close == i + 3) return 0;
  for (std::size_t k = i + 3; k < close; ++k) {
    const auto c = static_cast<unsigned char>(js[k]);
    if (std::isalnum(c) == 0 && c != '_' && c != '=') return 0;
  }
  return close + 1 - i;
}

// The code point of a \u{X...} or \uXXXX escape at js[i] ('\\') as "\x{X...}", and its length.
std::size_t unicode_escape(std::string_view js, std::size_t i, std::string& out) {
  std::size_t begin = i + 2;
  std::size_t end = 0;
  std::size_t length = 0;
  if (begin < js.size() && js[begin] == '{') {
    end = js.find('}', begin);
    if (end == std::string_view::npos) return 0;
    ++begin;
    length = end + 1 - i;
  } else {
    end = begin + 4;
    length = 6;
  }
  if (end > js.size() || end == begin || end - begin > 6) return 0;
  for (std::size_t k = begin; k < end; ++k) {
    if (std::isxdigit(static_cast<unsigned char>(js[k])) == 0) return 0;
  }
  out += "\\x{";
  out += js.substr(begin, end - begin);
  out += '}';
  return length;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const noexcept { pcre2_match_data_free(m); }
};

// Each thread's match data (room for 16 groups; the patterns have at most 2). Only ovector[0..1]
// is read, which PCRE2 sets even when the groups do not fit.
pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create(16, nullptr));
  if (data == nullptr) throw std::bad_alloc();
  return data.get();
}

}  // namespace

std::string js_pattern_to_pcre2(std::string_view js) {
  std::string out;
  out.reserve(js.size() * 2);
  bool in_class = false;
  for (std::size_t i = 0; i < js.size(); ++i) {
    const char c = js[i];
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < js.size() && js[i + 1] == '^') out += js[++i];
      // JavaScript's [] matches nothing and [^] anything; in PCRE2 a leading ] is a literal.
      if (i + 1 < js.size() && js[i + 1] == ']') refuse(js, i, "an empty class");
      continue;
    }
    if (c == ']' && in_class) {
      in_class = false;
      out += c;
      continue;
    }
    if (c == '.' && !in_class) {  // no `s` flag: anything but a line terminator
      out += "[^\\n\\r\\x{2028}\\x{2029}]";
      continue;
    }
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i + 1 >= js.size()) refuse(js, i, "a trailing backslash");
    const char e = js[i + 1];
    std::string_view members;  // the escape's class members, if it is a class escape
    bool negated = false;
    switch (e) {
      case 's':
      case 'S':
        members = kJsWhitespaceClass;
        negated = e == 'S';
        break;
      case 'd':
      case 'D':
        members = kJsDigitClass;
        negated = e == 'D';
        break;
      case 'w':
      case 'W':
        members = kJsWordClass;
        negated = e == 'W';
        break;
      case 'p':
      case 'P': {
        const std::size_t n = property_escape(js, i);
        if (n == 0) refuse(js, i, "a malformed \\p{...}");
        out += js.substr(i, n);
        i += n - 1;
        continue;
      }
      case 'u': {
        const std::size_t n = unicode_escape(js, i, out);
        if (n == 0) refuse(js, i, "a malformed \\u escape");
        i += n - 1;
        continue;
      }
      case 'v':  // JavaScript: U+000B; PCRE2: any vertical space
        out += "\\x{0B}";
        ++i;
        continue;
      case 't':
      case 'n':
      case 'r':
      case 'f':
        out += '\\';
        out += e;
        ++i;
        continue;
      default:
        // Syntax characters (and '-' in a class) escaped to stand for themselves mean the same
        // in PCRE2; any other escape (\b, \B, back references, \c, \k, \0, ...) is refused.
        if (std::string_view("^$\\.*+?()[]{}|/").find(e) != std::string_view::npos ||
            (e == '-' && in_class)) {
          out += '\\';
          out += e;
          ++i;
          continue;
        }
        refuse(js, i, std::string("the escape \\") + e);
    }
    if (in_class) {
      if (negated) refuse(js, i, std::string("\\") + e + " inside a class");
      out += members;
    } else {
      out += negated ? "[^" : "[";
      out += members;
      out += ']';
    }
    ++i;
  }
  if (in_class) refuse(js, js.size(), "an unclosed class");
  return out;
}

PreSplitter::PreSplitter(std::string_view js_pattern) : pattern_(js_pattern_to_pcre2(js_pattern)) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_BACKSLASH_C,
                        &error, &offset, nullptr);
  if (code_ == nullptr) {
    throw Error("admit tokens: PCRE2 cannot compile the pre-split pattern at offset " +
                std::to_string(offset) + ": " + pcre2_message(error) + ": " +
                printable(pattern_, 400));
  }
  // Without JIT (a machine that forbids executable memory) PCRE2 interprets: slower, the same.
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

PreSplitter::~PreSplitter() { pcre2_code_free(code_); }

bool PreSplitter::next(std::string_view text, std::size_t from, std::size_t& begin,
                       std::size_t& end) const {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  pcre2_match_data* md = thread_match_data();
  while (from < text.size()) {
    int rc = jit_ ? pcre2_jit_match(code_, subject, text.size(), from, 0, md, nullptr)
                  : pcre2_match(code_, subject, text.size(), from, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && jit_) {
      // The JIT's stack ran out (it has 32 KiB); the interpreter keeps its backtracking on the
      // heap.
      rc = pcre2_match(code_, subject, text.size(), from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) {
      throw Error("admit tokens: the pre-split failed at byte " + std::to_string(from) + ": " +
                  pcre2_message(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
    begin = ovector[0];
    end = ovector[1];
    if (end > begin) return true;
    // An empty match (none of tiktoken's patterns has one): JavaScript moves on by one code
    // point and the empty piece encodes to nothing.
    from = begin + 1;
    while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;
  }
  return false;
}

}  // namespace admit::detail
