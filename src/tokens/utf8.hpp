// UTF-8 checks for the token counter: the pre-split runs PCRE2 on valid UTF-8 only (without its
// own check, which would cost a pass over the rest of the text per piece).
#pragma once

#include <string>
#include <string_view>

namespace admit::detail {

/// True if `bytes` is well-formed UTF-8 (Unicode 3.9, table 3-7): no overlong form, no
/// surrogate, nothing above U+10FFFF. The same rule PCRE2 checks with PCRE2_UTF.
bool is_valid_utf8(std::string_view bytes) noexcept;

/// `bytes` with each maximal subpart of an ill-formed sequence replaced by U+FFFD, as the
/// WHATWG Encoding Standard's UTF-8 decoder does (TextDecoder, Python's errors="replace"); valid
/// sequences are kept as they are. The result is valid UTF-8.
std::string replace_invalid_utf8(std::string_view bytes);

}  // namespace admit::detail
