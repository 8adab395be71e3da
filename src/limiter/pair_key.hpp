// (entity, resource) as one map key, and heterogeneous lookups in Abseil maps: shared by the
// configuration snapshot (discovered limits), its store cache, the AIMD registry and the wait
// queues.
#pragma once

#include <absl/strings/string_view.h>

#include <charconv>
#include <string>
#include <string_view>

namespace admit::detail {

// Debian's Abseil has its own string_view type; heterogeneous lookups go through it.
inline absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// (entity, resource) as one map key: length-prefixed, so no two pairs share a key.
inline void append_pair_key(std::string& out, std::string_view entity, std::string_view resource) {
  char len[24];
  const auto r = std::to_chars(len, len + sizeof len, entity.size());
  out.append(len, r.ptr).append(1, ':').append(entity).append(resource);
}
inline std::string pair_key(std::string_view entity, std::string_view resource) {
  std::string k;
  append_pair_key(k, entity, resource);
  return k;
}

}  // namespace admit::detail
