#include "aimd_registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "pair_key.hpp"

namespace admit::detail {

std::string AimdRegistry::key_of(std::string_view entity, std::string_view resource,
                                 std::string_view limit) {
  std::string k = pair_key(entity, resource);
  k += '\0';
  k += limit;
  return k;
}

std::shared_ptr<AimdLaw> AimdRegistry::controller(const Limit& l, std::string_view entity,
                                                  std::string_view resource, bool create) {
  std::string k = key_of(entity, resource, l.name());
  std::lock_guard g(mu_);
  auto it = controllers_.find(k);
  if (it != controllers_.end() && it->second.limit == l) return it->second.ctl;
  if (!create) return nullptr;
  auto ctl = std::make_shared<AimdLaw>(l.aimd_options());
  Adaptive a{l, ctl, std::string(entity), std::string(resource)};
  if (auto s = shared_.find(k); s != shared_.end()) take_over(a, s->second.value, 0);
  controllers_.insert_or_assign(std::move(k), std::move(a));
  return ctl;
}

std::vector<AimdRegistry::Rate> AimdRegistry::rates() const {
  std::vector<Rate> out;
  std::lock_guard g(mu_);
  out.reserve(controllers_.size());
  for (const auto& [key, a] : controllers_) {
    out.push_back(Rate{a.entity, a.resource, a.limit.name(), a.ctl->state().rate});
  }
  for (const auto& [key, e] : shared_) {
    if (!controllers_.contains(key)) {
      out.push_back(Rate{e.entity, e.resource, e.limit, rate_of(e.value)});
    }
  }
  return out;
}

LearnedValue AimdRegistry::rate_value(std::uint64_t generation, double rate, Micros expires_at) {
  LearnedValue v;
  v.version = static_cast<std::int64_t>(
      std::min<std::uint64_t>(generation, static_cast<std::uint64_t>(kLearnedMaxNumber)));
  const double micro = std::clamp(rate * 1e6, 0.0, static_cast<double>(kLearnedMaxNumber));
  v.rank = std::isfinite(micro) ? static_cast<std::int64_t>(std::llround(micro)) : 0;
  v.expires_at = expires_at;
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, rate);
  v.value.assign(buf, r.ptr);
  return v;
}

double AimdRegistry::rate_of(const LearnedValue& v) {
  double rate = 0;
  const char* end = v.value.data() + v.value.size();
  const auto [p, ec] = std::from_chars(v.value.data(), end, rate);
  if (ec == std::errc() && p == end && std::isfinite(rate) && rate > 0) return rate;
  return static_cast<double>(v.rank) / 1e6;  // a value this build cannot read: its rank
}

void AimdRegistry::take_over(Adaptive& a, const LearnedValue& v, Micros now) {
  const auto generation = static_cast<std::uint64_t>(v.version);
  const double rate = rate_of(v);
  bool decreased = false;
  if (generation > a.generation) {
    decreased = true;  // the fleet decreased since this law last synced
  } else if (generation != a.generation || !(rate > a.synced_rate)) {
    return;  // nothing this law has not seen
  }
  const std::optional<AimdState> st = a.ctl->adopt(rate, decreased, a.synced_epoch);
  if (!st) return;  // it decreased here meanwhile: the next write tells the fleet first
  a.generation = generation;
  a.synced_epoch = st->epoch;
  // A rate above the fleet's (increases here not written yet) still needs a write.
  a.synced_rate = st->rate > rate ? rate : st->rate;
  a.synced_at = now;
}

std::vector<AimdRegistry::Write> AimdRegistry::changes(Micros now, Micros renew_after,
                                                       Micros expires_at) const {
  std::vector<Write> out;
  std::lock_guard g(mu_);
  for (const auto& [key, a] : controllers_) {
    const AimdState st = a.ctl->state();
    const std::uint64_t decreases = st.epoch - a.synced_epoch;
    if (decreases == 0 && st.rate == a.synced_rate && now - a.synced_at < renew_after) continue;
    out.push_back(Write{a.entity, a.resource, a.limit.name(),
                        rate_value(a.generation + decreases, st.rate, expires_at), a.ctl, st.epoch,
                        st.rate});
  }
  return out;
}

void AimdRegistry::written(const Write& w, const LearnedValue& stored, Micros now) {
  std::string k = key_of(w.entity, w.resource, w.limit);
  std::lock_guard g(mu_);
  shared_.insert_or_assign(k,
                           LearnedEntry{LearnedKind::rate, w.entity, w.resource, w.limit, stored});
  auto it = controllers_.find(k);
  if (it == controllers_.end() || it->second.ctl != w.law) return;  // replaced meanwhile
  Adaptive& a = it->second;
  a.generation = static_cast<std::uint64_t>(w.value.version);
  a.synced_epoch = w.epoch;
  a.synced_rate = w.rate;
  a.synced_at = now;
  take_over(a, stored, now);
}

void AimdRegistry::shared(const std::vector<LearnedEntry>& rates, Micros now) {
  std::lock_guard g(mu_);
  shared_.clear();
  for (const LearnedEntry& e : rates) {
    if (e.kind != LearnedKind::rate) continue;
    std::string k = key_of(e.entity, e.resource, e.limit);
    if (auto it = controllers_.find(k); it != controllers_.end()) {
      take_over(it->second, e.value, now);
    }
    shared_.insert_or_assign(std::move(k), e);
  }
}

}  // namespace admit::detail
