// Reader: reads the header values of one response into an Observation, turning each malformed
// value into a warning that names the header and quotes the value. Used by the provider tables
// (providers.cpp), the error bodies (error_body.cpp) and parse_response (headers.cpp).
// Internal header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "admit/adapt/headers.hpp"

namespace admit::headers_detail {

using dialect::Parsed;

// Quotes a value for a warning: at most 80 bytes, non-printables as \xNN.
inline std::string quote(std::string_view v) {
  constexpr std::size_t kMax = 80;
  std::string out = "\"";
  for (std::size_t i = 0; i < v.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      constexpr std::string_view kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  out += '"';
  if (v.size() > kMax) out += "...";
  return out;
}

// Alternative header names for one field; the first present wins.
struct Names {
  std::string_view first;
  std::string_view second{};
};

// The headers of one limit.
struct Family {
  Names limit;
  Names remaining;
  Names reset;
};

inline constexpr Micros kSecond = kMicrosPerSecond;
inline constexpr Micros kMinute = kMicrosPerMinute;
inline constexpr Micros kHour = kMicrosPerHour;
inline constexpr Micros kDay = kMicrosPerDay;

// Reads header values of one response into an Observation, recording warnings.
class Reader {
 public:
  Reader(const Headers& h, Micros now, Observation& obs, std::string_view label_prefix = {})
      : h_(h), now_(now), obs_(obs), prefix_(label_prefix) {}

  struct Found {
    std::string_view name;
    std::string_view value;
  };

  std::optional<Found> lookup(const Names& names) const {
    for (std::string_view n : {names.first, names.second}) {
      if (n.empty()) continue;
      if (auto v = h_.find(n)) return Found{n, *v};
    }
    return std::nullopt;
  }

  void warn(std::string_view name, std::string_view value, std::string_view why) {
    std::string w(prefix_);
    w += name;
    w += ": ignored ";
    w += quote(value);
    w += ": ";
    w += why;
    obs_.warnings.push_back(std::move(w));
  }

  template <class T>
  std::optional<T> take(const Found& f, const Parsed<T>& p) {
    if (p.malformed()) warn(f.name, f.value, p.error);
    return p.value;
  }

  // Count header; for a limit, 0 means unknown. True if the header is present.
  bool read_count(const Names& names, std::optional<std::int64_t>& out, bool is_limit,
                  std::string_view (*pre)(std::string_view) = nullptr) {
    const auto f = lookup(names);
    if (!f) return false;
    const std::string_view text = pre ? pre(f->value) : f->value;
    auto v = take(*f, dialect::parse_count(text));
    if (v && is_limit && *v == 0) v.reset();
    out = v;
    return true;
  }

  bool read_reset(const Names& names, std::optional<Micros>& out) {
    const auto f = lookup(names);
    if (!f) return false;
    out = take(*f, dialect::parse_reset(f->value, now_));
    return true;
  }

  // Reads one family into dst (overwriting); sets `window` when anything was read.
  // True if any of its headers is present, even malformed.
  bool read_family(const Family& fam, LimitObservation& dst, Micros window) {
    bool present = read_count(fam.limit, dst.limit, true);
    present = read_count(fam.remaining, dst.remaining, false) || present;
    present = read_reset(fam.reset, dst.reset_after) || present;
    if (dst.has_data()) dst.window = window;
    return present;
  }

  void read_extra(const Family& fam, std::string name, Micros window) {
    LimitObservation lo;
    read_family(fam, lo, window);
    if (lo.has_data()) obs_.extra.push_back(ExtraLimit{std::move(name), lo});
  }

  Micros now() const { return now_; }
  Observation& obs() { return obs_; }

 private:
  const Headers& h_;
  Micros now_;
  Observation& obs_;
  std::string_view prefix_;
};

}  // namespace admit::headers_detail
