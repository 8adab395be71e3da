#include "key_codec.hpp"

#include "admit/core/error.hpp"

namespace admit::redis_store {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> decode_part(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string kind_field(char kind, std::initializer_list<std::string_view> parts) {
  std::string f(1, kind);
  for (const std::string_view part : parts) {
    f += ':';
    encode_part(f, part);
  }
  return f;
}

std::optional<std::size_t> parse_kind_field(std::string_view field, std::string_view kinds,
                                            std::span<std::string> parts) {
  const std::size_t kind = kinds.find(field.empty() ? '\0' : field[0]);
  if (kind == std::string_view::npos || field.size() < 2 || field[1] != ':') return std::nullopt;
  std::string_view rest = field.substr(2);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const bool last = i + 1 == parts.size();
    const std::size_t colon = last ? rest.size() : rest.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    auto part = decode_part(rest.substr(0, colon));
    if (!part) return std::nullopt;
    parts[i] = std::move(*part);
    rest = last ? std::string_view{} : rest.substr(colon + 1);
  }
  return kind;
}

std::string config_key(std::string_view prefix, std::string_view ns) {
  std::string k(prefix);
  k += ":{";
  encode_part(k, ns);
  k += '}';
  return k;
}

std::string audit_key(std::string_view prefix, std::string_view ns) {
  return config_key(prefix, ns) + "#audit";
}

std::string learned_key(std::string_view prefix, std::string_view ns) {
  return config_key(prefix, ns) + "#learned";
}

std::string namespace_pattern(std::string_view prefix, std::string_view ns) {
  std::string pattern(prefix);
  pattern += ":{";
  encode_part(pattern, ns);
  pattern += ":*";
  return pattern;
}

std::string usage_pattern(std::string_view prefix) {
  std::string pattern(prefix);
  pattern += ":{*}:*";
  return pattern;
}

std::string lease_pattern(std::string_view prefix) {
  std::string pattern(prefix);
  pattern += ":{*}#lease:*";
  return pattern;
}

void validate_prefix(const std::string& prefix) {
  if (prefix.empty()) throw ValidationError("prefix", prefix, "must not be empty");
  for (const char c : prefix) {
    if (c == '{' || c == '}' || c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') {
      throw ValidationError("prefix", prefix, "must not contain '{', '}' or glob characters");
    }
  }
}

}  // namespace admit::redis_store
