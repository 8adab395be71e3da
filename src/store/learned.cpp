// Learned entries (admit/store/learned.hpp): their bounds and the merge every store applies;
// and the Store's defaults for a store that keeps none.
#include "admit/store/learned.hpp"

#include <algorithm>
#include <string>

#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/store/store.hpp"

namespace admit {

namespace {

constexpr std::size_t kMaxIdBytes = 256;

void number(const char* field, std::int64_t v, std::int64_t lo) {
  if (v < lo || v > kLearnedMaxNumber) {
    throw ValidationError(field, std::to_string(v),
                          "must be " + std::to_string(lo) + " to 2^53 - 1");
  }
}

}  // namespace

std::string_view to_string(LearnedKind k) {
  switch (k) {
    case LearnedKind::limits:
      return "limits";
    case LearnedKind::rate:
      return "rate";
  }
  return "unknown";
}

void validate_learned_key(const LearnedKey& key) {
  if (key.kind > LearnedKind::rate) {
    throw ValidationError("learned kind", std::to_string(static_cast<int>(key.kind)),
                          "is not a LearnedKind");
  }
  if (key.entity.size() > kMaxIdBytes) {
    throw ValidationError("entity", std::string(key.entity), "must be at most 256 bytes");
  }
  if (key.resource.empty() || key.resource.size() > kMaxIdBytes) {
    throw ValidationError("resource", std::string(key.resource), "must be 1 to 256 bytes");
  }
  if (key.kind == LearnedKind::rate) {
    validate_name("limit", key.limit);
  } else if (!key.limit.empty()) {
    throw ValidationError("limit", std::string(key.limit), "must be empty for learned limits");
  }
}

void validate_learned_value(const LearnedValue& value, Micros now) {
  number("version", value.version, 0);
  number("rank", value.rank, 0);
  number("expires_at", value.expires_at, 1);
  if (value.expires_at <= now) {
    throw ValidationError("expires_at", std::to_string(value.expires_at),
                          "must be after now (" + std::to_string(now) + ")");
  }
  if (value.value.size() > kLearnedMaxValueBytes) {
    throw ValidationError("value", std::to_string(value.value.size()) + " bytes",
                          "must be at most 64 KiB");
  }
}

LearnedValue merge_learned(const std::optional<LearnedValue>& stored, const LearnedValue& incoming,
                           Micros now) {
  if (!stored || stored->expires_at <= now || learned_precedes(incoming, *stored)) return incoming;
  LearnedValue out = *stored;
  if (!learned_precedes(*stored, incoming)) {
    out.expires_at = std::max(stored->expires_at, incoming.expires_at);
  }
  return out;
}

LearnedValue Store::put_learned(const Namespace& ns, const LearnedKey& key,
                                const LearnedValue& value, Micros now) {
  (void)ns;
  validate_learned_key(key);
  validate_learned_value(value, now);
  throw StoreUnavailable("store '" + name() + "' keeps no learned state");
}

std::vector<LearnedEntry> Store::list_learned(const Namespace& ns, Micros now) {
  (void)ns;
  (void)now;
  return {};
}

}  // namespace admit
