#include "service/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <initializer_list>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "admit/core/decision.hpp"
#include "admit/limiter.hpp"
#include "admit/store/guarded_store.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/store.hpp"
#include "admit/version.hpp"

namespace admit::service {

namespace prom = prometheus;

namespace {

/// Seconds; decisions on the memory store take microseconds, on Redis about a round trip.
const prom::Histogram::BucketBoundaries kLatencyBuckets = {
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005,    0.01,    0.025,  0.05,    0.1,    0.25,  1.0};
/// Seconds; a provider answers in tens of milliseconds to tens of seconds, a request may queue
/// up to the gateway's deadline.
const prom::Histogram::BucketBoundaries kUpstreamBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0};

/// An HTTP status as a label value, without a string of its own.
class StatusLabel {
 public:
  explicit StatusLabel(unsigned status) noexcept
      : end_(std::to_chars(digits_, digits_ + sizeof digits_, status).ptr) {}
  std::string_view view() const noexcept {
    return {digits_, static_cast<std::size_t>(end_ - digits_)};
  }

 private:
  char digits_[12];
  char* end_;
};

prom::MetricFamily family(std::string name, std::string help, prom::MetricType type) {
  prom::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

/// A family of one sample without labels.
prom::MetricFamily single(std::string name, std::string help, prom::MetricType type, double value) {
  prom::MetricFamily f = family(std::move(name), std::move(help), type);
  prom::ClientMetric m;
  if (type == prom::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

/// A process-wide id for each Children object (its thread-local cache entries name it).
std::uint64_t next_children_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

/// The children of a labelled family by their label values: prometheus-cpp's Family::Add
/// builds and hashes a std::map of the labels on every call, which costs more than the rest of
/// a decision's accounting; this finds a child by its values joined, under a shared lock, and
/// first in a small per-thread cache of the children it found last (a request usually counts
/// in the same few children as the one before: no hash, no lock). Children are never removed
/// from their family, so a child found once stays valid as long as the family.
template <class T>
class Children {
 public:
  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  /// The child with `labels`; `args` are Family::Add's after the labels (a histogram's
  /// buckets), used the first time only.
  template <class... Args>
  T& get(prom::Family<T>& family, Labels labels, const Args&... args) {
    thread_local std::string key;
    key.clear();
    for (const auto& l : labels) key.append(l.second).push_back('\x1f');
    // Entries name their Children by id, not address: a cache outlives the Metrics it served.
    thread_local std::array<Recent, kRecent> recent{};
    thread_local std::size_t next_slot = 0;
    for (const Recent& r : recent) {
      if (r.owner == id_ && r.key == key) return *r.child;
    }
    T* child = nullptr;
    {
      std::shared_lock g(mu_);
      if (const auto it = map_.find(std::string_view(key)); it != map_.end()) child = it->second;
    }
    if (child == nullptr) {
      std::map<std::string, std::string> m;
      for (const auto& [name, value] : labels) m.emplace(name, value);
      child = &family.Add(m, args...);  // the same child for the same labels, thread-safe
      std::lock_guard g(mu_);
      map_.emplace(key, child);
    }
    Recent& slot = recent[next_slot++ % kRecent];
    slot.owner = id_;
    slot.key.assign(key);
    slot.child = child;
    return *child;
  }

 private:
  static constexpr std::size_t kRecent = 8;
  struct Recent {
    std::uint64_t owner = 0;  // a Children id (0: empty)
    std::string key;
    T* child = nullptr;
  };
  const std::uint64_t id_ = next_children_id();
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::shared_mutex mu_;
  std::unordered_map<std::string, T*, Hash, std::equal_to<>> map_;
};

}  // namespace

struct Metrics::Impl {
  Impl(const Limiter& l, const std::vector<std::string>& names)
      : limiter(l), resources(names.begin(), names.end()) {}

  const Limiter& limiter;
  mutable std::shared_mutex resources_mu;
  std::set<std::string, std::less<>> resources;  // guarded by resources_mu
  const GuardedStore* guard = nullptr;
  const MemoryStore* memory = nullptr;
  const Store* leases = nullptr;
  std::function<std::size_t()> connections;
  std::size_t max_connections = 0;

  prom::Registry registry;
  prom::Family<prom::Counter>& decisions =
      prom::BuildCounter()
          .Name("admit_decisions_total")
          .Help("Decisions taken, by route (/v1/decide: dry runs), resource and code")
          .Register(registry);
  prom::Family<prom::Counter>& denials =
      prom::BuildCounter()
          .Name("admit_denials_total")
          .Help(
              "Denied decisions, once per limit name that refused them, by route, resource, "
              "limit and code")
          .Register(registry);
  prom::Family<prom::Counter>& shadow_denials =
      prom::BuildCounter()
          .Name("admit_shadow_denials_total")
          .Help(
              "Decisions a shadow limit would have denied (it only reports), allowed or denied, "
              "once per limit name, by route, resource and limit")
          .Register(registry);
  prom::Family<prom::Counter>& near_limit =
      prom::BuildCounter()
          .Name("admit_near_limit_total")
          .Help("Allowed decisions that left some limit with less than 10% of its capacity")
          .Register(registry);
  prom::Counter& store_errors =
      prom::BuildCounter()
          .Name("admit_store_errors_total")
          .Help("Decisions answered store_unavailable (the store could not be reached)")
          .Register(registry)
          .Add({});
  prom::Gauge& in_flight = prom::BuildGauge()
                               .Name("admit_decisions_in_flight")
                               .Help("Decide and acquire calls being decided now")
                               .Register(registry)
                               .Add({});
  prom::Family<prom::Counter>& requests =
      prom::BuildCounter()
          .Name("admit_http_requests_total")
          .Help("Requests answered by the API, by route (other: an unknown path) and status")
          .Register(registry);
  prom::Family<prom::Histogram>& latency =
      prom::BuildHistogram()
          .Name("admit_request_duration_seconds")
          .Help(
              "Time the API took to answer a request (parsing, the decision, rendering), by "
              "route")
          .Register(registry);

  prom::Family<prom::Counter>& upstream_responses =
      prom::BuildCounter()
          .Name("admit_gateway_upstream_responses_total")
          .Help("Attempts the gateway sent upstream, by upstream and status (0: no answer)")
          .Register(registry);
  prom::Family<prom::Histogram>& upstream_latency =
      prom::BuildHistogram()
          .Name("admit_gateway_upstream_seconds")
          .Help("Time from sending an attempt upstream to its answer's head, by upstream")
          .Register(registry);
  prom::Family<prom::Histogram>& upstream_queue =
      prom::BuildHistogram()
          .Name("admit_gateway_queue_seconds")
          .Help(
              "Time a gateway request waited at an upstream's scheduler before its first attempt "
              "there, by upstream")
          .Register(registry);
  prom::Family<prom::Counter>& upstream_fallbacks =
      prom::BuildCounter()
          .Name("admit_gateway_fallbacks_total")
          .Help("Requests moved on to another deployment after this upstream refused them")
          .Register(registry);

  Children<prom::Counter> decisions_by, denials_by, shadow_denials_by, near_limit_by, requests_by,
      upstream_responses_by, upstream_fallbacks_by;
  Children<prom::Histogram> latency_by, upstream_latency_by, upstream_queue_by;

  std::string resource_label(std::string_view resource) const {
    std::shared_lock g(resources_mu);
    return std::string(resources.count(resource) != 0 ? resource : kOtherResource);
  }

  /// What the Limiter learned and where its AIMD laws stand, summed per resource and limit
  /// (the entities, often a provider's accounts, are not labels).
  void collect_adaptation(std::vector<prom::MetricFamily>& out) const {
    const Limiter::Adaptation a = limiter.adaptation();
    std::map<std::pair<std::string, std::string>, double> learned;
    std::map<std::pair<std::string, std::string>, double> rates;
    for (const auto& d : a.discovered) {
      for (const Limit& l : d.limits) {
        learned[{resource_label(d.resource), l.name()}] += static_cast<double>(l.capacity());
      }
    }
    for (const auto& r : a.aimd) rates[{resource_label(r.resource), r.limit}] += r.rate;
    const auto family_of = [](std::string name, std::string help,
                              const std::map<std::pair<std::string, std::string>, double>& v) {
      prom::MetricFamily f = family(std::move(name), std::move(help), prom::MetricType::Gauge);
      for (const auto& [key, value] : v) {
        prom::ClientMetric m;
        m.label.push_back({"resource", key.first});
        m.label.push_back({"limit", key.second});
        m.gauge.value = value;
        f.metric.push_back(std::move(m));
      }
      return f;
    };
    out.push_back(family_of("admit_discovered_limit",
                            "Limits learned from providers' responses (POST /v1/observe): the "
                            "capacity they reported, summed over entities",
                            learned));
    out.push_back(family_of("admit_aimd_rate",
                            "Adaptive limits: the AIMD rate now (units per second), summed over "
                            "entities",
                            rates));
  }

  /// The families read at scrape time, after the registry's.
  void collect_sources(std::vector<prom::MetricFamily>& out) const {
    constexpr auto counter = prom::MetricType::Counter;
    constexpr auto gauge = prom::MetricType::Gauge;
    {
      prom::MetricFamily f = family("admit_build_info", "admitd's version", gauge);
      prom::ClientMetric m;
      m.label.push_back({"version", std::string(version_string)});
      m.gauge.value = 1;
      f.metric.push_back(std::move(m));
      out.push_back(std::move(f));
    }
    collect_adaptation(out);
    const CacheStats c = limiter.cache_stats();
    out.push_back(single("admit_config_cache_hits_total",
                         "Limit resolutions answered from the configuration cache (limits: store)",
                         counter, static_cast<double>(c.hits)));
    out.push_back(single("admit_config_cache_misses_total",
                         "Limit resolutions that read the store (limits: store)", counter,
                         static_cast<double>(c.misses)));
    out.push_back(single("admit_config_cache_stale_total",
                         "Expired cache entries used because the store could not be read", counter,
                         static_cast<double>(c.stale)));
    out.push_back(single("admit_config_cache_entries", "Configuration entries cached now", gauge,
                         static_cast<double>(c.entries)));
    if (guard != nullptr) {
      const GuardedStoreStats s = guard->stats();
      out.push_back(single("admit_store_primary_failures_total",
                           "Store operations the primary store failed (unreachable)", counter,
                           static_cast<double>(s.primary_failures)));
      out.push_back(single("admit_store_fail_open_allowed_total",
                           "fail_open: operations allowed unchecked while the store was down",
                           counter, static_cast<double>(s.fail_open_allowed)));
      out.push_back(single("admit_store_fallback_ops_total",
                           "local_fallback: operations applied to the local store instead", counter,
                           static_cast<double>(s.fallback_ops)));
      out.push_back(single("admit_store_recoveries_total",
                           "Transitions of the store from degraded back to healthy", counter,
                           static_cast<double>(s.recoveries)));
      out.push_back(single("admit_store_degraded",
                           "1 while the primary store is unreachable (the policy applies), else 0",
                           gauge, guard->degraded() ? 1.0 : 0.0));
    }
    if (memory != nullptr) {
      out.push_back(single("admit_store_keys",
                           "Live keys in the in-memory store (usage state, leases, config)", gauge,
                           static_cast<double>(memory->size())));
      out.push_back(single("admit_store_key_cap_refusals_total",
                           "New keys the in-memory store refused at its max_keys cap (503)",
                           counter, static_cast<double>(memory->key_cap_refusals())));
    }
    if (leases != nullptr) {
      if (const std::optional<std::uint64_t> n = leases->expired_leases()) {
        out.push_back(single("admit_leases_expired_total",
                             "Leases whose TTL passed before a commit or rollback (orphaned), "
                             "counted as their records are pruned",
                             counter, static_cast<double>(*n)));
      }
    }
    if (connections) {
      out.push_back(single("admit_http_connections", "Open HTTP connections", gauge,
                           static_cast<double>(connections())));
      out.push_back(single("admit_http_max_connections",
                           "The connection cap in force (more get 503)", gauge,
                           static_cast<double>(max_connections)));
    }
  }
};

Metrics::Metrics(const Limiter& limiter, const std::vector<std::string>& resources)
    : impl_(std::make_unique<Impl>(limiter, resources)) {}

Metrics::~Metrics() = default;

void Metrics::set_resources(const std::vector<std::string>& resources) {
  std::set<std::string, std::less<>> names(resources.begin(), resources.end());
  std::lock_guard g(impl_->resources_mu);
  impl_->resources.swap(names);
}

void Metrics::watch_store(const GuardedStore* guard) { impl_->guard = guard; }

void Metrics::watch_memory_store(const MemoryStore* store) { impl_->memory = store; }

void Metrics::watch_leases(const Store* store) { impl_->leases = store; }

void Metrics::watch_connections(std::function<std::size_t()> open, std::size_t max) {
  impl_->connections = std::move(open);
  impl_->max_connections = max;
}

void Metrics::decision(std::string_view route, std::string_view resource, const Decision& d) {
  Impl& im = *impl_;
  const std::string_view r = route;
  const std::string res = im.resource_label(resource);
  const std::string_view code = to_string(d.code);
  im.decisions_by.get(im.decisions, {{"route", r}, {"resource", res}, {"code", code}}).Increment();
  if (d.code == Code::store_unavailable) im.store_errors.Increment();
  // Shadow limits that would have refused (an entity and its parent on one name count once).
  std::set<std::string_view> shadow;
  for (const Violation& v : d.shadow_violations) {
    if (shadow.insert(v.limit).second) {
      im.shadow_denials_by
          .get(im.shadow_denials, {{"route", r}, {"resource", res}, {"limit", v.limit}})
          .Increment();
    }
  }
  if (d.allowed) {
    const bool near = std::any_of(d.stats.begin(), d.stats.end(), [](const LimitStatus& s) {
      return s.capacity > 0 && static_cast<double>(s.available) <
                                   kNearLimitFraction * static_cast<double>(s.capacity);
    });
    if (near) im.near_limit_by.get(im.near_limit, {{"route", r}, {"resource", res}}).Increment();
    return;
  }
  // An entity and its parent refusing on their own "tpm" count once.
  std::set<std::string_view> limits;
  for (const Violation& v : d.violations) {
    if (limits.insert(v.limit).second) {
      im.denials_by
          .get(im.denials, {{"route", r}, {"resource", res}, {"limit", v.limit}, {"code", code}})
          .Increment();
    }
  }
}

void Metrics::request(std::string_view route, unsigned status, std::chrono::nanoseconds elapsed) {
  Impl& im = *impl_;
  const StatusLabel code(status);
  im.requests_by.get(im.requests, {{"route", route}, {"status", code.view()}}).Increment();
  im.latency_by.get(im.latency, {{"route", route}}, kLatencyBuckets)
      .Observe(std::chrono::duration<double>(elapsed).count());
}

void Metrics::upstream_attempt(std::string_view upstream, unsigned status,
                               std::chrono::nanoseconds elapsed) {
  Impl& im = *impl_;
  const StatusLabel code(status);
  im.upstream_responses_by
      .get(im.upstream_responses, {{"upstream", upstream}, {"status", code.view()}})
      .Increment();
  im.upstream_latency_by.get(im.upstream_latency, {{"upstream", upstream}}, kUpstreamBuckets)
      .Observe(std::chrono::duration<double>(elapsed).count());
}

void Metrics::upstream_queued(std::string_view upstream, std::chrono::nanoseconds waited) {
  Impl& im = *impl_;
  im.upstream_queue_by.get(im.upstream_queue, {{"upstream", upstream}}, kUpstreamBuckets)
      .Observe(std::chrono::duration<double>(waited).count());
}

void Metrics::upstream_fallback(std::string_view upstream) {
  Impl& im = *impl_;
  im.upstream_fallbacks_by.get(im.upstream_fallbacks, {{"upstream", upstream}}).Increment();
}

Metrics::InFlight::InFlight(Metrics* m) : m_(m) {
  if (m_ != nullptr) m_->impl_->in_flight.Increment();
}

Metrics::InFlight::~InFlight() {
  if (m_ != nullptr) m_->impl_->in_flight.Decrement();
}

std::string Metrics::render() const {
  std::vector<prom::MetricFamily> families = impl_->registry.Collect();
  impl_->collect_sources(families);
  std::ostringstream out;
  prom::TextSerializer().Serialize(out, families);
  return std::move(out).str();
}

}  // namespace admit::service
