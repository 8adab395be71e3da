#include "service/json_body.hpp"

#include <algorithm>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value_stack.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"

namespace admit::service {

namespace json = boost::json;

namespace {

JsonError make_error(JsonErrc code, std::string field, std::string message) {
  return JsonError{code, std::move(field), std::move(message)};
}

/// A basic_parser handler that builds nothing: it finds duplicate keys (at any depth) and
/// remembers where they are. Boost.JSON checks the syntax, the UTF-8 and the depth;
/// json::parse() then builds the value of a body that passed, refusing trailing bytes.
class DuplicateKeyFinder {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  std::optional<JsonError> error;

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }
  bool on_array_begin(boost::system::error_code&) {
    value_begins();
    frames_.push_back(Frame{false, {}, {}, {}, 0});
    return true;
  }
  bool on_array_end(std::size_t, boost::system::error_code&) {
    frames_.pop_back();
    return true;
  }
  bool on_object_begin(boost::system::error_code&) {
    value_begins();
    frames_.push_back(Frame{true, {}, {}, {}, 0});
    return true;
  }
  bool on_object_end(std::size_t, boost::system::error_code&) {
    frames_.pop_back();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, boost::system::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, boost::system::error_code&) {
    value_begins();
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, boost::system::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, boost::system::error_code& ec) {
    key_.append(s.data(), s.size());
    Frame& f = frames_.back();
    if (!f.insert(key_)) {
      error = make_error(JsonErrc::duplicate_key, path(key_),
                         "duplicate key '" + printable(key_) + "'");
      ec = json::error::syntax;  // stops the parser; `error` says why
      return false;
    }
    f.key = std::move(key_);
    key_.clear();
    return true;
  }
  bool on_number_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, boost::system::error_code&) {
    value_begins();
    return true;
  }
  bool on_uint64(std::uint64_t, json::string_view, boost::system::error_code&) {
    value_begins();
    return true;
  }
  bool on_double(double d, json::string_view, boost::system::error_code& ec) {
    value_begins();
    if (!std::isfinite(d)) {  // 1e999, and 0e30337 which Boost.JSON 1.81 reads as infinite
      error = make_error(JsonErrc::out_of_range, prefix(frames_.size()),
                         "number out of range (not a finite double)");
      ec = json::error::syntax;
      return false;
    }
    return true;
  }
  bool on_bool(bool, boost::system::error_code&) {
    value_begins();
    return true;
  }
  bool on_null(boost::system::error_code&) {
    value_begins();
    return true;
  }
  bool on_comment_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_comment(json::string_view, boost::system::error_code&) { return true; }

 private:
  struct Frame {
    bool object;
    std::vector<std::string> few;          // an object's first keys (most objects stop there)
    std::unordered_set<std::string> keys;  // its keys once there are more than kFewKeys
    std::string key;                       // an object's current key
    std::size_t next_index;                // an array's next element

    static constexpr std::size_t kFewKeys = 16;
    /// Adds `k`; false if the object has it already.
    bool insert(const std::string& k) {
      if (!keys.empty()) return keys.insert(k).second;
      if (std::find(few.begin(), few.end(), k) != few.end()) return false;
      if (few.size() < kFewKeys) {
        if (few.empty()) few.reserve(kFewKeys / 2);
        few.push_back(k);
        return true;
      }
      keys.insert(few.begin(), few.end());  // linear search stops here: a set from now on
      few.clear();
      return keys.insert(k).second;
    }
  };

  void value_begins() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().next_index;
  }

  /// The dotted path of `key` in the innermost object.
  std::string path(std::string_view key) const {
    return field_path(prefix(frames_.size() - 1), printable(key));
  }

  /// The path of the current value of the first `n` frames ("body" for none).
  std::string prefix(std::size_t n) const {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
      const Frame& f = frames_[i];
      if (f.object) {
        out = field_path(out, printable(f.key));
      } else {
        out += '[';
        out += std::to_string(f.next_index - 1);
        out += ']';
      }
    }
    return out.empty() && n == frames_.size() ? "body" : out;
  }

  std::vector<Frame> frames_;
  std::string key_;  // the key being read (keys may come in parts)
};

json::parse_options options(const JsonLimits& limits) {
  json::parse_options o;
  o.max_depth = limits.max_depth;
  o.allow_comments = false;
  o.allow_trailing_commas = false;
  o.allow_invalid_utf8 = false;
  return o;
}

JsonError syntax_error(const boost::system::error_code& ec) {
  if (ec == json::error::too_deep) {
    return make_error(JsonErrc::too_deep, "body", "nested too deeply");
  }
  return make_error(JsonErrc::invalid_json, "body", "invalid JSON: " + ec.message());
}

const char* kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a bool";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

JsonError wrong_type(const json::value& v, std::string field, std::string_view expected) {
  return make_error(JsonErrc::invalid_type, std::move(field),
                    "must be " + std::string(expected) + ", not " + kind_name(v));
}

JsonError missing(std::string field) {
  return make_error(JsonErrc::missing_field, std::move(field), "missing field");
}

}  // namespace

std::string_view to_string(JsonErrc c) noexcept {
  switch (c) {
    case JsonErrc::invalid_json:
      return "invalid_json";
    case JsonErrc::duplicate_key:
      return "duplicate_key";
    case JsonErrc::too_deep:
      return "too_deep";
    case JsonErrc::not_an_object:
      return "not_an_object";
    case JsonErrc::missing_field:
      return "missing_field";
    case JsonErrc::unknown_field:
      return "unknown_field";
    case JsonErrc::invalid_type:
      return "invalid_type";
    case JsonErrc::out_of_range:
      return "out_of_range";
  }
  return "invalid_json";
}

json::object JsonError::to_json() const {
  json::object o;
  o["error"] = message;
  o["code"] = to_string(code);
  o["field"] = field;
  return o;
}

std::string field_path(std::string_view path, std::string_view key) {
  std::string out(path);
  if (!out.empty()) out += '.';
  out += key.empty() ? std::string_view(R"("")") : key;  // the empty key, visibly
  return out;
}

namespace {

/// The body's first error, found in two passes: DuplicateKeyFinder (syntax, UTF-8, depth,
/// duplicate keys and non-finite numbers, in the order they come), then json::parse (trailing
/// bytes) and the top level's type. The object itself when there is none.
JsonResult<json::object> parse_checked(std::string_view body, const json::parse_options& opts,
                                       json::storage_ptr sp) {
  {
    json::basic_parser<DuplicateKeyFinder> p(opts);
    boost::system::error_code ec;
    p.write_some(false, body.data(), body.size(), ec);
    if (p.handler().error) return *p.handler().error;
    if (ec) return syntax_error(ec);
  }
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec, std::move(sp), opts);
  if (ec) return syntax_error(ec);  // bytes after the value (the first pass stops before them)
  json::object* o = v.if_object();
  if (o == nullptr) {
    return make_error(JsonErrc::not_an_object, "body",
                      std::string("the body must be a JSON object, not ") + kind_name(v));
  }
  return std::move(*o);
}

/// A basic_parser handler that builds the value (as json::parser does, on a value_stack) and
/// counts the keys it reads: a duplicate key leaves fewer keys in the built value than were
/// read (json::object keeps the last of them), which finds it without a set of keys per
/// object. A non-finite number stops it. It only tells whether the body is fine: the error
/// of a body that is not comes from parse_checked.
class ValueBuilder {
 public:
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  ValueBuilder(unsigned char* temp, std::size_t size) : st(json::storage_ptr(), temp, size) {}

  json::value_stack st;
  std::size_t keys = 0;

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }
  bool on_object_begin(boost::system::error_code&) { return true; }
  bool on_object_end(std::size_t n, boost::system::error_code&) {
    st.push_object(n);
    return true;
  }
  bool on_array_begin(boost::system::error_code&) { return true; }
  bool on_array_end(std::size_t n, boost::system::error_code&) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, boost::system::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t, boost::system::error_code&) {
    st.push_key(s);
    ++keys;
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, boost::system::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t, boost::system::error_code&) {
    st.push_string(s);
    return true;
  }
  bool on_number_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_int64(std::int64_t i, json::string_view, boost::system::error_code&) {
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, boost::system::error_code&) {
    st.push_uint64(u);
    return true;
  }
  bool on_double(double d, json::string_view, boost::system::error_code& ec) {
    if (!std::isfinite(d)) {
      ec = json::error::syntax;
      return false;
    }
    st.push_double(d);
    return true;
  }
  bool on_bool(bool b, boost::system::error_code&) {
    st.push_bool(b);
    return true;
  }
  bool on_null(boost::system::error_code&) {
    st.push_null();
    return true;
  }
  bool on_comment_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_comment(json::string_view, boost::system::error_code&) { return true; }
};

/// The keys of every object in `v`, nested ones included.
std::size_t count_keys(const json::value& v) {
  std::size_t n = 0;
  if (const json::object* o = v.if_object()) {
    n += o->size();
    for (const auto& kv : *o) n += count_keys(kv.value());
  } else if (const json::array* a = v.if_array()) {
    for (const json::value& e : *a) n += count_keys(e);
  }
  return n;
}

}  // namespace

JsonResult<json::object> parse_json_object(std::string_view body, const JsonLimits& limits,
                                           json::storage_ptr sp) {
  const json::parse_options opts = options(limits);
  // One pass for a valid body (the common case); a body that is not gets its error from
  // parse_checked, which reads it again.
  {
    unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
    json::basic_parser<ValueBuilder> p(opts, temp, sizeof temp);
    p.handler().st.reset(sp);
    boost::system::error_code ec;
    const std::size_t n = p.write_some(false, body.data(), body.size(), ec);
    if (!ec && n == body.size()) {
      json::value v = p.handler().st.release();
      if (json::object* o = v.if_object(); o != nullptr && count_keys(v) == p.handler().keys) {
        return std::move(*o);
      }
    }
  }
  return parse_checked(body, opts, std::move(sp));
}

JsonResult<std::int64_t> to_int(const json::value& v, std::string_view field, std::int64_t min,
                                std::int64_t max) {
  auto range = [&] {
    return make_error(
        JsonErrc::out_of_range, std::string(field),
        "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  };
  std::int64_t n = 0;
  if (v.is_int64()) {
    n = v.get_int64();
  } else if (v.is_uint64()) {
    return range();  // above INT64_MAX
  } else if (v.is_double()) {
    // An integer literal beyond 64 bits parses as a double; so do 1.5 and 1e3.
    const double d = v.get_double();
    if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) >= 0x1p63) return range();
    return make_error(JsonErrc::invalid_type, std::string(field),
                      "must be an integer (no fraction or exponent)");
  } else {
    return wrong_type(v, std::string(field), "an integer");
  }
  if (n < min || n > max) return range();
  return n;
}

JsonResult<std::int64_t> get_int(const json::object& obj, std::string_view key, std::int64_t min,
                                 std::int64_t max, std::string_view path) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr) return missing(field_path(path, key));
  return to_int(*v, field_path(path, key), min, max);
}

JsonResult<std::optional<std::int64_t>> get_optional_int(const json::object& obj,
                                                         std::string_view key, std::int64_t min,
                                                         std::int64_t max, std::string_view path) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr) return std::optional<std::int64_t>();
  auto r = to_int(*v, field_path(path, key), min, max);
  if (auto* e = std::get_if<JsonError>(&r)) return std::move(*e);
  return std::optional<std::int64_t>(std::get<std::int64_t>(r));
}

JsonResult<std::string_view> get_string(const json::object& obj, std::string_view key,
                                        std::size_t max_size, std::string_view path) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr) return missing(field_path(path, key));
  const json::string* s = v->if_string();
  if (s == nullptr) return wrong_type(*v, field_path(path, key), "a string");
  if (s->size() > max_size) {
    return make_error(JsonErrc::out_of_range, field_path(path, key),
                      "longer than " + std::to_string(max_size) + " bytes");
  }
  return std::string_view(s->data(), s->size());
}

JsonResult<bool> get_bool(const json::object& obj, std::string_view key, std::string_view path) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr) return missing(field_path(path, key));
  if (!v->is_bool()) return wrong_type(*v, field_path(path, key), "a bool");
  return v->get_bool();
}

JsonResult<const json::object*> get_object(const json::object& obj, std::string_view key,
                                           std::string_view path) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr) return missing(field_path(path, key));
  const json::object* o = v->if_object();
  if (o == nullptr) return wrong_type(*v, field_path(path, key), "an object");
  return o;
}

char* write_json_string(char* p, std::string_view s) noexcept {
  static constexpr char kHex[] = "0123456789abcdef";
  *p++ = '"';
  // Byte by byte: the strings of a response are short (names, codes), shorter than a call
  // to memcpy is worth.
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != '"' && c != '\\') {
      *p++ = ch;
      continue;
    }
    *p++ = '\\';
    switch (c) {
      case '"':
        *p++ = '"';
        break;
      case '\\':
        *p++ = '\\';
        break;
      case '\b':
        *p++ = 'b';
        break;
      case '\f':
        *p++ = 'f';
        break;
      case '\n':
        *p++ = 'n';
        break;
      case '\r':
        *p++ = 'r';
        break;
      case '\t':
        *p++ = 't';
        break;
      default:
        *p++ = 'u';
        *p++ = '0';
        *p++ = '0';
        *p++ = kHex[c >> 4];
        *p++ = kHex[c & 15];
    }
  }
  *p++ = '"';
  return p;
}

void append_json_string(std::string& out, std::string_view s) {
  const std::size_t at = out.size();
  out.resize(at + json_string_bound(s));
  out.resize(static_cast<std::size_t>(write_json_string(out.data() + at, s) - out.data()));
}

char* write_json_int(char* p, std::int64_t n) noexcept {
  // Digits from the last, into a buffer, then copied: std::to_chars's general code costs
  // several times this for the 10-15 digit counters of a decision.
  std::uint64_t u = static_cast<std::uint64_t>(n);
  if (n < 0) {
    *p++ = '-';
    u = ~u + 1;  // |n|, INT64_MIN included
  }
  static constexpr char kPairs[] =
      "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
      "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
      "8081828384858687888990919293949596979899";
  char digits[kMaxJsonInt];
  char* d = digits + sizeof digits;
  while (u >= 100) {  // two digits at a time
    const std::size_t pair = 2 * static_cast<std::size_t>(u % 100);
    u /= 100;
    *--d = kPairs[pair + 1];
    *--d = kPairs[pair];
  }
  if (u >= 10) {
    *--d = kPairs[2 * u + 1];
    *--d = kPairs[2 * u];
  } else {
    *--d = static_cast<char>('0' + u);
  }
  while (d != digits + sizeof digits) *p++ = *d++;
  return p;
}

void append_json_int(std::string& out, std::int64_t n) {
  char buf[kMaxJsonInt];
  out.append(buf, write_json_int(buf, n));
}

std::optional<JsonError> check_fields(const json::object& obj,
                                      std::initializer_list<std::string_view> allowed,
                                      std::string_view path) {
  for (const auto& kv : obj) {
    bool known = false;
    for (const std::string_view a : allowed) known = known || a == kv.key();
    if (!known) {
      return make_error(JsonErrc::unknown_field, field_path(path, printable(kv.key())),
                        "unknown field");
    }
  }
  return std::nullopt;
}

}  // namespace admit::service
