// Choosing among several deployments of a model (src/service/proxy/deployments.hpp): the
// capacity their known limits give, how full their load makes them, and the order of choice.
#include <gtest/gtest.h>

#include <chrono>
#include <utility>
#include <vector>

#include "service/proxy/deployments.hpp"

namespace admit::service {
namespace {

using Resolved = std::vector<std::pair<Limit, ConfigSource>>;

TEST(DeploymentCapacity, PerMinuteRatesOfTheRequestAndTokenLimits) {
  const Resolved limits = {
      {Limit::per_minute("rpm", 500), ConfigSource::discovered},
      {Limit::per_second("rps", 20), ConfigSource::resource},  // 1200 per minute: rpm is smaller
      {Limit::per_minute("tpm", 90'000), ConfigSource::discovered},
      {Limit::per_day("tpd", 1'440'000), ConfigSource::entity},  // 1000 per minute
      {Limit::concurrency("slots", 8), ConfigSource::resource},
      {Limit::per_minute("other", 1), ConfigSource::resource},  // neither requests nor tokens
  };
  const DeploymentCapacity c = deployment_capacity(limits);
  EXPECT_DOUBLE_EQ(c.requests_per_minute, 500);
  EXPECT_DOUBLE_EQ(c.tokens_per_minute, 1000);
  EXPECT_EQ(c.slots, 8);
}

TEST(DeploymentCapacity, NothingKnownIsZero) {
  const Resolved limits = {
      {Limit::per_minute("rpm", 0), ConfigSource::resource},  // unlimited
      {Limit::adaptive("tpm", AimdOptions{.max_rate = 100}), ConfigSource::resource},
  };
  const DeploymentCapacity c = deployment_capacity(limits);
  EXPECT_EQ(c.requests_per_minute, 0);
  EXPECT_EQ(c.tokens_per_minute, 0);
  EXPECT_EQ(c.slots, 0);
}

TEST(DeploymentLoad, CountsWhatIsOutstandingAndTheLatestHold) {
  DeploymentLoad load;
  load.add(100);
  load.add(50);
  load.remove(100);
  EXPECT_EQ(load.requests(), 1);
  EXPECT_EQ(load.tokens(), 50);
  load.hold_until(2'000);
  load.hold_until(1'000);  // an earlier hold does not shorten it
  EXPECT_EQ(load.held_until(), 2'000);
}

TEST(DeploymentFill, TheFullestOfItsKnownCapacities) {
  DeploymentLoad load;
  for (int i = 0; i < 3; ++i) load.add(1000);
  // Nothing known but max_concurrent: 4 requests (with this one) of 8.
  EXPECT_DOUBLE_EQ(deployment_fill(load, {}, 8, 500), 0.5);
  // 3500 tokens of 7000 per minute, 4 requests of 100 per minute.
  EXPECT_DOUBLE_EQ(deployment_fill(load, {100, 7000, 0}, 1000, 500), 0.5);
  // 4 of 5 slots.
  EXPECT_DOUBLE_EQ(deployment_fill(load, {100, 7000, 5}, 1000, 500), 0.8);
  // 4 requests of 2 per minute.
  EXPECT_DOUBLE_EQ(deployment_fill(load, {2, 7000, 0}, 1000, 500), 2.0);
}

TEST(PickDeployment, BreakerThenHoldThenFillThenOrder) {
  EXPECT_EQ(pick_deployment(std::vector<DeploymentView>{{0.5}, {0.2}, {0.2}}), 1U);
  EXPECT_EQ(pick_deployment(std::vector<DeploymentView>{{0.1, true}, {0.9}}), 1U)
      << "a held one after one with room, however full";
  EXPECT_EQ(pick_deployment(std::vector<DeploymentView>{{0.1, false, true}, {0.9, true}}), 1U)
      << "an open breaker last";
  EXPECT_EQ(pick_deployment(std::vector<DeploymentView>{{0.3, true}, {0.2, true}}), 1U)
      << "all held: the least full";
  EXPECT_EQ(pick_deployment(std::vector<DeploymentView>{{0.7}}), 0U);
}

}  // namespace
}  // namespace admit::service
