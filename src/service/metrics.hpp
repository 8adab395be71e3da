// admitd's Prometheus metrics (GET /metrics, text exposition format 0.0.4), through
// prometheus-cpp's core registry and text serializer (only src/service depends on it: the
// library reports, the service exports). Two sources:
//  * what the Api sees: each decide / acquire decision (resource, code, the limits that
//    refused it) and each request's route, status and latency, counted as they happen;
//  * the library's counters, read at scrape time: the Limiter's configuration cache, the
//    GuardedStore's failures and fallbacks, and the HTTP server's open connections.
// Labels are bounded: routes are admitd's own, codes the Decision's, limit names the
// configuration's, and a resource that is not configured is counted as "_other" (a client
// chooses the resource it names). No per-entity label.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace admit {
class GuardedStore;
class MemoryStore;
class Store;
class Limiter;
struct Decision;
}  // namespace admit

namespace admit::service {

class Metrics {
 public:
  /// The Content-Type of render()'s text.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";
  /// The resource label of a resource that is not configured.
  static constexpr std::string_view kOtherResource = "_other";
  /// An allowed decision is "near the limit" when some limit it touched has less than this
  /// fraction of its capacity left.
  static constexpr double kNearLimitFraction = 0.1;

  /// `limiter`: read at scrape time (cache_stats()); must outlive the Metrics. `resources`:
  /// the configured resource names, which get a label value of their own.
  Metrics(const Limiter& limiter, const std::vector<std::string>& resources);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // ---- sources read at scrape time; set before serving (not thread-safe with render()) ----

  /// The GuardedStore in front of a SQLite or Redis store (null: none, no admit_store_*).
  void watch_store(const GuardedStore* guard);
  /// The in-memory store (null: none): its live keys and key-cap refusals
  /// (admit_store_keys, admit_store_key_cap_refusals_total).
  void watch_memory_store(const MemoryStore* store);
  /// The store whose expired (orphaned) lease records to report (null: none;
  /// admit_leases_expired_total when Store::expired_leases() has a value).
  void watch_leases(const Store* store);
  /// Open HTTP connections, and the cap in force (admit_http_connections).
  void watch_connections(std::function<std::size_t()> open, std::size_t max);

  /// Replaces the configured resource names (after a config reload). Thread-safe.
  void set_resources(const std::vector<std::string>& resources);

  // ---- from the Api (thread-safe) ----

  /// One decision of `route` ("/v1/decide", "/v1/acquire") on `resource`.
  void decision(std::string_view route, std::string_view resource, const Decision& d);
  /// One request answered: its route (or "other" for an unknown path), status and the time
  /// the Api took.
  void request(std::string_view route, unsigned status, std::chrono::nanoseconds elapsed);

  // ---- from the gateway (thread-safe); `upstream` is a configured upstream's name ----

  /// One attempt sent upstream: the status of its answer (0: none came, a transport failure)
  /// and the time from sending to the answer's head (or the failure).
  void upstream_attempt(std::string_view upstream, unsigned status,
                        std::chrono::nanoseconds elapsed);
  /// How long a request waited at an upstream's scheduler (its limits, its max_concurrent,
  /// fair queueing) before its first attempt there.
  void upstream_queued(std::string_view upstream, std::chrono::nanoseconds waited);
  /// A request that `upstream` refused (429, 5xx, a failure) moved on to another deployment.
  void upstream_fallback(std::string_view upstream);

  /// Counts a decision in flight (admit_decisions_in_flight) for its lifetime; does nothing
  /// with a null Metrics.
  class InFlight {
   public:
    explicit InFlight(Metrics* m);
    ~InFlight();
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

   private:
    Metrics* m_;
  };

  /// Every metric in the text exposition format 0.0.4. Thread-safe.
  std::string render() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit::service
