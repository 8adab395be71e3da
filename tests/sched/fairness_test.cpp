// Fairness, measured: Jain's index across equal-weight tenants under saturation, shares in
// proportion to weights, and a light tenant's latency next to a heavy one. The bucket is a
// token limit, so fairness is by tokens whatever the request sizes.
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "admit/sched/scheduler.hpp"
#include "sched_support.hpp"

namespace admit::sched {
namespace {

using test::Done;
using test::kMs;
using test::kSec;

class Fairness : public test::SchedFixture {
 protected:
  void SetUp() override {
    // 1000 tokens per second, a burst of one second's worth.
    limiter.set_limits("gpt", {Limit::custom("tpm", 1000, 1000, std::chrono::seconds(1))});
  }
  static double jain(const std::vector<double>& x) {
    const double sum = std::accumulate(x.begin(), x.end(), 0.0);
    double sq = 0;
    for (double v : x) sq += v * v;
    return sum * sum / (static_cast<double>(x.size()) * sq);
  }
};

TEST_F(Fairness, EqualWeightTenantsGetEqualTokensJainAtLeast095) {
  Scheduler s(io.get_executor(), limiter, {.max_queue_size = 10'000, .request_timeout = 0});
  // Four tenants of very different request sizes, submitted one tenant after the other (FIFO
  // would serve the first tenant alone for a long while).
  const std::map<std::string, std::int64_t> sizes{{"a", 50}, {"b", 100}, {"c", 200}, {"d", 400}};
  std::vector<Done> done(800);
  std::size_t n = 0;
  for (const auto& [tenant, size] : sizes) {
    for (int i = 0; i < 200; ++i, ++n) {
      submit(s, meta(test::id(tenant, i), tenant, "gpt", size), fixed(200), done[n]);
    }
  }
  run_for(20 * kSec);  // ~20,000 tokens served; every tenant asked for 10,000 or more
  std::map<std::string, double> served;
  for (const auto& c : calls) served[c.tenant] += static_cast<double>(sizes.at(c.tenant));
  std::vector<double> x;
  for (const auto& [tenant, size] : sizes) {
    ASSERT_LT(served[tenant], 200.0 * static_cast<double>(size)) << tenant << " ran dry";
    x.push_back(served[tenant]);
  }
  const double j = jain(x);
  std::printf("tokens served a=%.0f b=%.0f c=%.0f d=%.0f  Jain=%.4f\n", x[0], x[1], x[2], x[3], j);
  EXPECT_GE(j, 0.95);
}

TEST_F(Fairness, SharesFollowTheWeights) {
  Scheduler s(io.get_executor(), limiter,
              {.max_queue_size = 10'000, .request_timeout = 0, .tenant_weights = {{"gold", 3.0}}});
  std::vector<Done> done(600);
  for (std::size_t i = 0; i < 300; ++i) {
    submit(s, meta(test::id("g", i), "gold", "gpt", 100), fixed(200), done[i]);
    submit(s, meta(test::id("b", i), "bronze", "gpt", 100), fixed(200), done[300 + i]);
  }
  run_for(20 * kSec);
  double gold = 0, bronze = 0;
  for (const auto& c : calls) (c.tenant == "gold" ? gold : bronze) += 100;
  ASSERT_GT(bronze, 0);
  std::printf("gold=%.0f bronze=%.0f ratio=%.3f\n", gold, bronze, gold / bronze);
  EXPECT_NEAR(gold / bronze, 3.0, 0.3);
}

TEST_F(Fairness, ALightTenantsLatencyStaysBoundedNextToAHeavyOne) {
  Scheduler s(io.get_executor(), limiter, {.max_queue_size = 10'000, .request_timeout = 0});
  // The heavy tenant queues 500 requests (50 s of the bucket) at once; the light one sends
  // one request a second, a tenth of the bucket.
  std::vector<Done> heavy(500);
  for (std::size_t i = 0; i < heavy.size(); ++i) {
    submit(s, meta(test::id("h", i), "heavy", "gpt", 100), fixed(200), heavy[i]);
  }
  std::vector<Done> light(20);
  std::vector<Micros> sent(20);
  Micros worst = 0;
  for (std::size_t k = 0; k < light.size(); ++k) {
    sent[k] = clock.now();
    submit(s, meta(test::id("l", k), "light", "gpt", 100), fixed(200), light[k]);
    run_for(kSec);
    ASSERT_TRUE(light[k].finished) << k;
    worst = std::max(worst, light[k].at - sent[k]);
  }
  std::printf("light tenant's worst latency: %lld us (FIFO: ~50 s)\n",
              static_cast<long long>(worst));
  // One bucket slot is 100 ms; the light request waits at most for the one in progress.
  EXPECT_LE(worst, 200 * kMs);
  EXPECT_FALSE(heavy.back().finished) << "the heavy tenant is still backlogged";
}

}  // namespace
}  // namespace admit::sched
