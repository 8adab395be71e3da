// Internal: reading YAML files whose errors name the YAML path, the bad value and
// file:line:col (ValidationError). Shared by the service config loader and the provider
// profiles loader.
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"

namespace admit::detail {

/// "file:line:col" of a mark, or the file alone when the mark is unknown.
inline std::string where(const std::string& source, const YAML::Mark& m) {
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

/// Throws ValidationError(path, value, "why (where)").
[[noreturn]] inline void fail_at(const std::string& where, const std::string& path,
                                 const std::string& value, const std::string& why) {
  throw ValidationError(path, value, why + " (" + where + ")");
}

/// "path.key", or "key" at the root.
inline std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

/// A short rendering of a node for messages.
inline std::string show(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  if (n.IsMap()) return "{...}";
  if (n.IsSequence()) return "[...]";
  return "null";
}

/// Base of a file's parser: mapping entries with duplicate-key checks, name checks, and
/// failures located in the file.
class YamlReader {
 public:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
  };

  /// @param source the file name for messages; @param root how the top level is named.
  YamlReader(std::string source, std::string root)
      : source_(std::move(source)), root_(std::move(root)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& value,
                         const std::string& why) const {
    fail_at(where(source_, at.Mark()), path, value, why);
  }

  /// The entries of a mapping, in order; a non-mapping, a non-string key or a duplicate
  /// key fails.
  std::vector<Entry> entries(const YAML::Node& map, const std::string& path) const {
    if (!map.IsMap()) fail(map, path.empty() ? root_ : path, show(map), "expected a mapping");
    std::vector<Entry> out;
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) fail(kv.first, path, show(kv.first), "keys must be strings");
      std::string key = kv.first.Scalar();
      for (const Entry& e : out) {
        if (e.key == key) fail(kv.first, join(path, key), key, "duplicate key");
      }
      out.push_back(Entry{std::move(key), kv.first, kv.second});
    }
    return out;
  }

  /// validate_name(field, value), failing at `at` with `path`.
  void check_name(const YAML::Node& at, const std::string& path, std::string_view field,
                  const std::string& value) const {
    try {
      validate_name(field, value);
    } catch (const ValidationError& e) {
      fail(at, path, value, e.reason());
    }
  }

  /// A string value, ${NAME} substituted (expand_env).
  std::string scalar(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a string");
    return expand_env(n, path);  // secrets such as ${REDIS_PASSWORD}
  }

  // A plain (unquoted) integer in [lo, hi].
  std::int64_t integer(const YAML::Node& n, const std::string& path, std::int64_t lo,
                       std::int64_t hi) const {
    if (!n.IsScalar() || n.Tag() == "!") fail(n, path, show(n), "expected an unquoted integer");
    const std::string& s = n.Scalar();
    std::int64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) fail(n, path, s, "expected an integer");
    if (v < lo || v > hi) {
      fail(n, path, s, "must be within " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    return v;
  }

  /// The scalar with each ${NAME} replaced by the environment variable NAME; $${ is "${".
  std::string expand_env(const YAML::Node& n, const std::string& path) const {
    const std::string& s = n.Scalar();
    if (s.find('$') == std::string::npos) return s;
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
      if (s.compare(i, 3, "$${") == 0) {
        out += "${";
        i += 3;
        continue;
      }
      if (s.compare(i, 2, "${") != 0) {
        out += s[i++];
        continue;
      }
      const std::size_t close = s.find('}', i + 2);
      const std::string var = close == std::string::npos ? "" : s.substr(i + 2, close - i - 2);
      const auto word = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
      };
      if (var.empty() || std::isdigit(static_cast<unsigned char>(var[0])) != 0 ||
          !std::all_of(var.begin(), var.end(), word)) {
        fail(n, path, s, "expected ${NAME}, NAME of letters, digits and _ ($${ for a literal ${)");
      }
      const char* value = std::getenv(var.c_str());
      if (value == nullptr) fail(n, path, s, "environment variable " + var + " is not set");
      out += value;
      i = close + 1;
    }
    return out;
  }

 protected:
  std::string source_;
  std::string root_;
};

}  // namespace admit::detail
