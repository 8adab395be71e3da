// Strict decoding of admitd's JSON request bodies. Boost.JSON alone accepts things a strict
// API must refuse: a duplicate key keeps only the last value (so a filter in front of admitd
// that reads the first `entity` disagrees with admitd), and 1.5 or 1e3 are numbers that a
// caller may silently truncate. parse_json_object() refuses, each with a stable code:
//
//   invalid_json   not JSON: a syntax error, trailing bytes after the value, an empty body,
//                  NaN / Infinity (not JSON), a string or key that is not valid UTF-8
//   duplicate_key  an object with the same key twice, at any depth
//   too_deep       objects / arrays nested deeper than JsonLimits::max_depth
//   not_an_object  the top level is not an object
//
// and the getters below give each field's value or a JsonError naming the field:
//
//   missing_field  a required key is absent
//   unknown_field  a key check_fields() does not allow
//   invalid_type   the wrong JSON type; for integers also any number written with a fraction
//                  or an exponent (1.0, 1e3): an integer field takes integer literals only
//   out_of_range   an integer outside [min, max] (also integers beyond 64 bits), a string
//                  longer than allowed
//
// Usage in a route:
//
//   const auto parsed = parse_json_object(body);
//   if (const JsonError* e = std::get_if<JsonError>(&parsed)) return error(400, *e);
//   const boost::json::object& o = std::get<boost::json::object>(parsed);
//   if (auto e = check_fields(o, {"entity", "resource", "amounts"})) return error(400, *e);
//   const auto tpm = get_int(o, "tpm", 0, kMaxExact, "amounts");  // field "amounts.tpm"
//   if (const JsonError* e = std::get_if<JsonError>(&tpm)) return error(400, *e);
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace admit::service {

enum class JsonErrc {
  invalid_json,
  duplicate_key,
  too_deep,
  not_an_object,
  missing_field,
  unknown_field,
  invalid_type,
  out_of_range,
};

/// The stable code: "invalid_json", "duplicate_key", ... (the enumerator's name).
std::string_view to_string(JsonErrc c) noexcept;

/// Why a body or a field was refused. `field` is the dotted path of the offending value
/// ("amounts.rpm", "items[2].entity"), or "body" for the body as a whole.
struct JsonError {
  JsonErrc code = JsonErrc::invalid_json;
  std::string field;
  std::string message;  ///< human-readable; quotes client bytes printable (admit::printable)

  /// {"error": message, "code": to_string(code), "field": field}: one rendering for the Api.
  boost::json::object to_json() const;
  friend bool operator==(const JsonError&, const JsonError&) = default;
};

struct JsonLimits {
  std::size_t max_depth = 32;  ///< nested objects / arrays at most (the top-level object is 1)
};

/// The value of a getter, or why not.
template <class T>
using JsonResult = std::variant<T, JsonError>;

/**
 * Parses a request body that must be one JSON object and nothing else (whitespace around it
 * is fine). Refuses invalid JSON (with trailing bytes, NaN, Infinity, comments, trailing
 * commas, invalid UTF-8, an unpaired surrogate escape), duplicate keys at any depth, nesting
 * deeper than limits.max_depth and a top level that is not an object. Never throws except
 * std::bad_alloc.
 */
/// The object is allocated from `sp` (a request-scoped monotonic_resource saves the
/// allocations of a small body), which must outlive it.
JsonResult<boost::json::object> parse_json_object(std::string_view body,
                                                  const JsonLimits& limits = {},
                                                  boost::json::storage_ptr sp = {});

/// "path.key" (or "key" for an empty path; the empty key is written ""): the field name
/// getters report.
std::string field_path(std::string_view path, std::string_view key);

/// An integer value in [min, max]; `field` names it in the error. invalid_type for a
/// non-number, a bool, or a number with a fraction or exponent; out_of_range otherwise.
JsonResult<std::int64_t> to_int(const boost::json::value& v, std::string_view field,
                                std::int64_t min, std::int64_t max);

/// obj[key] as to_int(); missing_field if absent. `path` is the object's own path ("" at the
/// top level), so that errors name "path.key".
JsonResult<std::int64_t> get_int(const boost::json::object& obj, std::string_view key,
                                 std::int64_t min, std::int64_t max, std::string_view path = {});

/// obj[key] as to_int(), or std::nullopt if the key is absent (null is a type error).
JsonResult<std::optional<std::int64_t>> get_optional_int(const boost::json::object& obj,
                                                         std::string_view key, std::int64_t min,
                                                         std::int64_t max,
                                                         std::string_view path = {});

/// obj[key] as a string of at most max_size bytes (out_of_range beyond); the view points
/// into `obj`.
JsonResult<std::string_view> get_string(const boost::json::object& obj, std::string_view key,
                                        std::size_t max_size = 4096, std::string_view path = {});

/// obj[key] as a bool.
JsonResult<bool> get_bool(const boost::json::object& obj, std::string_view key,
                          std::string_view path = {});

/// obj[key] as an object; the pointer points into `obj`.
JsonResult<const boost::json::object*> get_object(const boost::json::object& obj,
                                                  std::string_view key, std::string_view path = {});

/// Appends `s` to `out` as a JSON string, quoted and escaped exactly as boost::json::serialize
/// writes it (`"` and `\` escaped, control characters as \b \f \n \r \t or \u00xx, every other
/// byte as it is), so that a response written directly reads the same as one serialised.
void append_json_string(std::string& out, std::string_view s);
/// The same, written at `p`, which must have room for json_string_bound(s) bytes; returns the
/// end of what was written.
char* write_json_string(char* p, std::string_view s) noexcept;
/// The most bytes write_json_string writes for `s` (every byte escaped as \u00xx).
constexpr std::size_t json_string_bound(std::string_view s) noexcept { return 2 + 6 * s.size(); }
/// Appends `n` in decimal, as boost::json::serialize writes an integer.
void append_json_int(std::string& out, std::int64_t n);
/// The same, written at `p`, which must have room for kMaxJsonInt bytes; returns the end of
/// what was written.
char* write_json_int(char* p, std::int64_t n) noexcept;
/// The most bytes write_json_int writes: "-9223372036854775808".
inline constexpr std::size_t kMaxJsonInt = 20;

/// unknown_field naming the first key of `obj` that is not in `allowed`, or std::nullopt.
std::optional<JsonError> check_fields(const boost::json::object& obj,
                                      std::initializer_list<std::string_view> allowed,
                                      std::string_view path = {});

}  // namespace admit::service
