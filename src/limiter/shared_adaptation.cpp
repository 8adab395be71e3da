#include "shared_adaptation.hpp"

#include <algorithm>
#include <exception>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"
#include "pair_key.hpp"

namespace admit::detail {

namespace {

// The rank of a learned set: its text hashed (FNV-1a, 53 bits), so two sets of one version
// (two processes learning at the same µs) are ordered the same way everywhere.
std::int64_t text_rank(std::string_view text) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return static_cast<std::int64_t>(h & static_cast<std::uint64_t>(kLearnedMaxNumber));
}

std::optional<std::vector<Limit>> decoded(const std::string& text) {
  if (text.empty()) return std::vector<Limit>{};
  try {
    return decode_limits(text);
  } catch (const ValidationError&) {
    return std::nullopt;  // written by another version, or not by admit: not used
  }
}

}  // namespace

bool SharedAdaptation::owns(const std::string& key, const Own& o) const {
  auto s = stored_.find(key);
  return s == stored_.end() || !s->second.limits || !learned_precedes(s->second.value, o.set.value);
}

const SharedAdaptation::Learned* SharedAdaptation::winner(const std::string& key) const {
  auto o = own_.find(key);
  if (o != own_.end() && owns(key, o->second)) return &o->second.set;
  auto s = stored_.find(key);
  return s != stored_.end() && s->second.limits ? &s->second : nullptr;
}

void SharedAdaptation::write_own(const std::string& key, Own& o, Micros now) {
  LearnedValue v = o.set.value;
  v.expires_at = now + opt_.adaptation_ttl;
  const LearnedKey k{LearnedKind::limits, o.set.entity, o.set.resource, {}};
  LearnedValue got = store_.put_learned(ns_, k, v, now);
  o.dirty = false;
  o.written_at = now;
  std::optional<std::vector<Limit>> limits = decoded(got.value);
  stored_.insert_or_assign(
      key, Learned{o.set.entity, o.set.resource, std::move(got), std::move(limits)});
}

void SharedAdaptation::set_learned(std::string entity, std::string resource,
                                   std::vector<Limit> limits, Micros now) {
  std::string key = pair_key(entity, resource);
  std::string text = limits.empty() ? std::string() : encode_limits(limits);
  std::lock_guard g(mu_);
  auto o = own_.find(key);
  if (o != own_.end() && o->second.set.value.value == text && owns(key, o->second)) {
    return;  // nothing new
  }
  const Learned* in_use = winner(key);
  if (in_use == nullptr ? text.empty() : in_use->value.value == text) {
    // The fleet already uses it: make it this Limiter's own too (renewed from here on), at
    // the precedence it has, without a write.
    if (in_use != nullptr) {
      Own mine{*in_use, false, in_use->value.expires_at - opt_.adaptation_ttl};
      mine.set.limits = std::move(limits);
      own_.insert_or_assign(std::move(key), std::move(mine));
    } else if (o != own_.end()) {
      own_.erase(o);
    }
    return;
  }
  // A new observation: newer than every one known here, whatever the clocks say.
  std::int64_t version = now;
  if (o != own_.end()) version = std::max(version, o->second.set.value.version + 1);
  if (auto s = stored_.find(key); s != stored_.end()) {
    version = std::max(version, s->second.value.version + 1);
  }
  version = std::min(version, kLearnedMaxNumber);
  Own mine{Learned{std::move(entity), std::move(resource),
                   LearnedValue{version, text_rank(text), 0, text}, std::move(limits)},
           true, 0};
  Own& own = own_.insert_or_assign(key, std::move(mine)).first->second;
  try {
    write_own(key, own, now);
  } catch (const std::exception&) {
    // Kept dirty: written at the next refresh. It applies here meanwhile.
  }
  apply();
}

Micros SharedAdaptation::refreshed_at() const {
  std::lock_guard g(mu_);
  return refreshed_at_;
}

void SharedAdaptation::refresh(Micros now) {
  Micros due = due_.load(std::memory_order_relaxed);
  if (now < due) return;
  // One thread refreshes per interval: the one that moves the due time.
  if (!due_.compare_exchange_strong(due, now + opt_.adaptation_refresh,
                                    std::memory_order_relaxed)) {
    return;
  }
  std::lock_guard g(mu_);
  const Micros renew_after = opt_.adaptation_ttl / 2;
  const Micros expires_at = now + opt_.adaptation_ttl;
  try {
    // 1. The AIMD laws that changed here (or whose entry would expire): written first, so a
    //    decrease here is in the store before this Limiter takes over what the fleet wrote.
    for (const AimdRegistry::Write& w : aimd_.changes(now, renew_after, expires_at)) {
      LearnedValue stored;
      try {
        stored = store_.put_learned(ns_, {LearnedKind::rate, w.entity, w.resource, w.limit},
                                    w.value, now);
      } catch (const ValidationError&) {
        continue;  // a key the store cannot name (never made by a valid acquire)
      }
      aimd_.written(w, stored, now);
    }
    // 2. What the fleet wrote.
    std::vector<LearnedEntry> all = store_.list_learned(ns_, now);
    std::vector<LearnedEntry> rates;
    stored_.clear();
    for (LearnedEntry& e : all) {
      if (e.kind == LearnedKind::rate) {
        rates.push_back(std::move(e));
        continue;
      }
      std::optional<std::vector<Limit>> limits = decoded(e.value.value);
      std::string key = pair_key(e.entity, e.resource);
      stored_.insert_or_assign(std::move(key), Learned{std::move(e.entity), std::move(e.resource),
                                                       std::move(e.value), std::move(limits)});
    }
    aimd_.shared(rates, now);
    refreshed_at_ = now;
    // 3. This Limiter's learned sets in use (no newer one in the store): those not written
    //    yet, not in the store (expired there), or whose entry would expire.
    for (auto& [key, o] : own_) {
      if (!owns(key, o)) continue;
      auto st = stored_.find(key);
      const bool in_store = st != stored_.end() &&
                            st->second.value.version == o.set.value.version &&
                            st->second.value.rank == o.set.value.rank;
      if (!o.dirty && in_store && now - o.written_at < renew_after) continue;
      write_own(key, o, now);
    }
  } catch (const std::exception&) {
    // The store cannot be reached (or refuses a synchronous call on its I/O thread): what
    // was read last stays in use; the next refresh tries again.
  }
  apply();
}

void SharedAdaptation::apply() {
  absl::flat_hash_map<std::string, Snapshot::Discovered> next;
  const auto add = [&](const std::string& key) {
    if (next.contains(key)) return;
    const Learned* w = winner(key);
    if (w == nullptr || !w->limits || w->limits->empty()) return;
    Snapshot::Discovered d;
    d.entity = w->entity;
    d.resource = w->resource;
    d.learned = *w->limits;
    next.emplace(key, std::move(d));
  };
  for (const auto& [key, o] : own_) add(key);
  for (const auto& [key, s] : stored_) add(key);
  const Snapshot& cur = config_.current();
  bool same = cur.discovered.size() == next.size();
  for (auto it = next.begin(); same && it != next.end(); ++it) {
    auto c = cur.discovered.find(it->first);
    same = c != cur.discovered.end() && c->second.learned == it->second.learned;
  }
  if (same) return;  // cached plans stay valid
  config_.update([&](Snapshot& s) { s.discovered = std::move(next); });
}

}  // namespace admit::detail
