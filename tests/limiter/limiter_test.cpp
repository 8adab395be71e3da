// Limiter behaviour through the public API, driven by a ManualClock (no sleeps). Every
// expected number below is computed by hand from the limits' emission interval
// T = refill_period / refill_amount.
#include "admit/limiter.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "admit/core/aimd.hpp"
#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/store/memory_store.hpp"
#include "support/fault_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using namespace std::chrono_literals;
using test::available;
using test::BackgroundAcquire;
using test::kStart;
using test::take;

constexpr Micros kSec = kMicrosPerSecond;
constexpr Micros kMs = 1000;

class LimiterTest : public ::testing::Test {
 protected:
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
};

// ------------------------------------------------------------------- basics

// Verifies per_minute without burst admits exactly n at once, then one per T = 60 s / n with
// an exact retry_after, and that the denial carries a complete violation and stats.
TEST_F(LimiterTest, PerMinuteAdmitsCapacityThenOnePerInterval) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60)});  // T = 1 s, burst 60
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}}).allowed) << i;
  }
  const Decision d = take(limiter, "alice", "gpt", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 1 * kSec);
  EXPECT_EQ(d.now, kStart);
  EXPECT_FALSE(d.reason.empty());
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "alice");
  EXPECT_EQ(d.violations[0].limit, "rpm");
  EXPECT_EQ(d.violations[0].kind, LimitKind::rate);
  EXPECT_EQ(d.violations[0].requested, 1);
  EXPECT_EQ(d.violations[0].available, 0);
  EXPECT_EQ(d.violations[0].retry_after, 1 * kSec);
  ASSERT_EQ(d.stats.size(), 1u);
  EXPECT_EQ(d.stats[0].capacity, 60);
  EXPECT_EQ(d.stats[0].available, 0);
  EXPECT_EQ(d.stats[0].reset_after, 60 * kSec);
  EXPECT_EQ(d.stats[0].source, ConfigSource::resource);
  // 3 units need 3 intervals.
  EXPECT_EQ(limiter.decide("alice", "gpt", {{"rpm", 3}}).retry_after, 3 * kSec);

  clock.advance(kSec - 1);
  const Decision early = take(limiter, "alice", "gpt", {{"rpm", 1}});
  EXPECT_FALSE(early.allowed);
  EXPECT_EQ(early.retry_after, 1);
  clock.advance(1);
  EXPECT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}}).allowed);
  EXPECT_FALSE(take(limiter, "alice", "gpt", {{"rpm", 1}}).allowed);
}

// Verifies a burst smaller than the rate: burst admitted at once, then the refill rate.
TEST_F(LimiterTest, BurstCapsTheBucketAndRateRefillsIt) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60, 10)});  // T = 1 s, burst 10
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
  const Decision d = take(limiter, "a", "gpt", {{"rpm", 1}});
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, kSec);
  EXPECT_EQ(d.stats.at(0).capacity, 10);

  clock.advance(5 * kSec);  // 5 units back
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
  EXPECT_FALSE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);

  clock.advance(3600 * kSec);  // long idle: full, never above burst
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 10);
  EXPECT_EQ(take(limiter, "a", "gpt", {{"rpm", 11}}).code, Code::exceeds_capacity);
  EXPECT_TRUE(take(limiter, "a", "gpt", {{"rpm", 10}}).allowed);
}

// Verifies that when one of several limits is short, nothing is consumed from any of them.
TEST_F(LimiterTest, MultiLimitIsAllOrNothing) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 10),      // T = 6 s
                             Limit::per_minute("tpm", 1000)});  // T = 60 ms
  ASSERT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}, {"tpm", 900}}).allowed);
  EXPECT_EQ(available(limiter, "alice", "gpt", "rpm"), 9);
  EXPECT_EQ(available(limiter, "alice", "gpt", "tpm"), 100);

  const Decision d = take(limiter, "alice", "gpt", {{"rpm", 1}, {"tpm", 200}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::rate_exceeded);
  // 100 more tokens at 60 ms each.
  EXPECT_EQ(d.retry_after, 6 * kSec);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].limit, "tpm");
  EXPECT_EQ(d.violations[0].requested, 200);
  EXPECT_EQ(d.violations[0].available, 100);
  EXPECT_EQ(d.stats.size(), 2u);
  // rpm untouched by the denied call.
  EXPECT_EQ(available(limiter, "alice", "gpt", "rpm"), 9);
  EXPECT_EQ(available(limiter, "alice", "gpt", "tpm"), 100);

  // Both short: both named, retry_after is the longer one.
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}}).allowed);
  const Decision both = take(limiter, "alice", "gpt", {{"rpm", 1}, {"tpm", 200}});
  EXPECT_EQ(both.violations.size(), 2u);
  EXPECT_EQ(both.retry_after, 6 * kSec);  // rpm: TAT 60 s ahead, needs 6 s; tpm: 6 s
  clock.advance(6 * kSec - 1);
  EXPECT_FALSE(limiter.decide("alice", "gpt", {{"rpm", 1}, {"tpm", 200}}).allowed);
  clock.advance(1);
  EXPECT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}, {"tpm", 200}}).allowed);
  EXPECT_EQ(available(limiter, "alice", "gpt", "rpm"), 0);
  EXPECT_EQ(available(limiter, "alice", "gpt", "tpm"), 0);
}

// ------------------------------------------------------------------- parents

// Verifies a child's acquire consumes from the child and its parent, and that an exhausted
// parent denies the child with a violation naming the parent entity (child untouched).
TEST_F(LimiterTest, ParentIsConsumedAndExhaustedParentDeniesChild) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  limiter.set_entity_limits("org", "gpt", {Limit::per_minute("rpm", 5)});  // T = 12 s
  limiter.set_parent("alice", "org");
  limiter.set_parent("bob", "org");

  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}}).allowed);
  const ResourceStats st = limiter.stats("alice", "gpt");
  EXPECT_EQ(st.entity, "alice");
  EXPECT_EQ(st.resource, "gpt");
  ASSERT_EQ(st.limits.size(), 2u);
  EXPECT_EQ(st.limits[0].entity, "alice");
  EXPECT_EQ(st.limits[0].source, ConfigSource::resource);
  EXPECT_EQ(st.limits[0].available, 97);
  EXPECT_EQ(st.limits[1].entity, "org");
  EXPECT_EQ(st.limits[1].source, ConfigSource::entity);
  EXPECT_EQ(st.limits[1].available, 2);

  ASSERT_TRUE(take(limiter, "bob", "gpt", {{"rpm", 2}}).allowed);
  EXPECT_EQ(available(limiter, "bob", "gpt", "rpm"), 98);
  EXPECT_EQ(available(limiter, "org", "gpt", "rpm"), 0);

  const Decision d = take(limiter, "alice", "gpt", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::rate_exceeded);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "org");
  EXPECT_EQ(d.violations[0].limit, "rpm");
  EXPECT_EQ(d.violations[0].available, 0);
  EXPECT_EQ(d.retry_after, 12 * kSec);
  EXPECT_NE(d.reason.find("org"), std::string::npos) << d.reason;
  EXPECT_EQ(available(limiter, "alice", "gpt", "rpm"), 97);  // child not consumed

  // Unlinking the parent lifts its limit from alice.
  limiter.set_parent("alice", "");
  EXPECT_TRUE(take(limiter, "alice", "gpt", {{"rpm", 1}}).allowed);
  EXPECT_EQ(limiter.stats("alice", "gpt").limits.size(), 1u);
}

// Verifies a lease lists what it holds on each limit of its chain, requester first, net of
// adjust(), and nothing once it ended.
TEST_F(LimiterTest, LeaseHoldingsNameEachLimitOfTheChain) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100), Limit::per_minute("tpm", 10000)});
  limiter.set_entity_limits("org", "gpt", {Limit::per_minute("tpm", 50000)});
  limiter.set_parent("alice", "org");
  Lease lease = limiter.try_acquire("alice", "gpt", {{"rpm", 1}, {"tpm", 1200}});
  ASSERT_TRUE(lease.active());
  auto holdings = lease.holdings();
  ASSERT_EQ(holdings.size(), 3u);
  EXPECT_EQ(holdings[0].entity, "alice");
  EXPECT_EQ(holdings[0].limit, "rpm");
  EXPECT_EQ(holdings[0].amount, 1);
  EXPECT_EQ(holdings[1].entity, "alice");
  EXPECT_EQ(holdings[1].limit, "tpm");
  EXPECT_EQ(holdings[1].amount, 1200);
  EXPECT_EQ(holdings[2].entity, "org");
  EXPECT_EQ(holdings[2].limit, "tpm");
  EXPECT_EQ(holdings[2].amount, 1200);
  ASSERT_TRUE(lease.adjust({{"tpm", -450}}).allowed);
  holdings = lease.holdings();
  EXPECT_EQ(holdings[1].amount, 750);
  EXPECT_EQ(holdings[2].amount, 750);
  lease.commit();
  EXPECT_TRUE(lease.holdings().empty());
}

// Verifies the whole ancestor chain is consumed and a grandparent can deny.
TEST_F(LimiterTest, GrandparentIsConsumedToo) {
  limiter.set_default_limits({Limit::per_hour("rph", 10)});
  limiter.set_entity_default_limits("root", {Limit::per_hour("rph", 4)});
  limiter.set_parent("team", "root");
  limiter.set_parent("dev", "team");
  ASSERT_TRUE(take(limiter, "dev", "any", {{"rph", 4}}).allowed);
  const ResourceStats st = limiter.stats("dev", "any");
  ASSERT_EQ(st.limits.size(), 3u);
  EXPECT_EQ(st.limits[0].entity, "dev");
  EXPECT_EQ(st.limits[1].entity, "team");
  EXPECT_EQ(st.limits[2].entity, "root");
  EXPECT_EQ(st.limits[2].source, ConfigSource::entity_default);
  for (const auto& s : st.limits) EXPECT_EQ(s.available, s.capacity - 4) << s.entity;
  const Decision d = take(limiter, "dev", "any", {{"rph", 1}});
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "root");
  EXPECT_EQ(d.retry_after, 15 * 60 * kSec);  // T = 1 h / 4
}

// Verifies set_parent refuses cycles (including self-parenting) and leaves the configuration
// unchanged when it throws.
TEST_F(LimiterTest, SetParentRejectsCycles) {
  limiter.set_default_limits({Limit::per_minute("rpm", 10)});
  limiter.set_parent("a", "b");
  limiter.set_parent("b", "c");
  EXPECT_THROW(limiter.set_parent("c", "a"), ValidationError);
  EXPECT_THROW(limiter.set_parent("c", "b"), ValidationError);
  EXPECT_THROW(limiter.set_parent("a", "a"), ValidationError);
  try {
    limiter.set_parent("c", "a");
    FAIL() << "expected ValidationError";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "parent");
    EXPECT_EQ(e.value(), "a");
  }
  // Unchanged: c has no parent, a's chain is a, b, c.
  EXPECT_EQ(limiter.stats("c", "r").limits.size(), 1u);
  EXPECT_EQ(limiter.stats("a", "r").limits.size(), 3u);
  EXPECT_TRUE(take(limiter, "c", "r", {{"rpm", 1}}).allowed);
}

// Verifies max_parent_depth is enforced whichever end of the chain the new link is added at
// (a chain built leaf-first must be refused too, not silently truncated).
TEST_F(LimiterTest, SetParentEnforcesMaxDepthFromBothEnds) {
  Limiter l(store, clock, LimiterOptions{.ns = "depth", .max_parent_depth = 2});
  // Root-first: c -> d, then b -> c, then a -> b would give a three ancestors.
  l.set_parent("c", "d");
  l.set_parent("b", "c");
  EXPECT_THROW(l.set_parent("a", "b"), ValidationError);
  // Leaf-first: p -> q, q -> r (p has 2 ancestors), then r -> s would give p three.
  l.set_parent("p", "q");
  l.set_parent("q", "r");
  EXPECT_THROW(l.set_parent("r", "s"), ValidationError);
  // The refused link was not added: p's chain is p, q, r and every member is consumed.
  l.set_default_limits({Limit::per_minute("rpm", 10)});
  EXPECT_EQ(l.stats("p", "x").limits.size(), 3u);
  EXPECT_TRUE(take(l, "p", "x", {{"rpm", 10}}).allowed);
  EXPECT_EQ(available(l, "r", "x", "rpm"), 0);
  EXPECT_EQ(available(l, "s", "x", "rpm"), 10);
}

// ------------------------------------------------------------------- parent rules

// The entities of `entity`'s chain on resource "r", itself first (each has the default limit).
std::vector<std::string> chain_of(Limiter& l, std::string_view entity) {
  std::vector<std::string> out;
  for (const LimitStatus& s : l.stats(entity, "r").limits) out.push_back(s.entity);
  return out;
}

using Names = std::vector<std::string>;

// Verifies the first rule matching an entity gives its parent, rules naming the entity itself
// are skipped ("*" does not make shared its own parent), an empty parent gives none, and the
// rule parents get parents by the rules too.
TEST_F(LimiterTest, ParentRulesMatchInOrder) {
  limiter.set_default_limits({Limit::per_minute("rpm", 100)});
  const std::vector<ParentRule> rules{
      {"user-?", "team-a"}, {"user-*", "team-b"}, {"admin", ""}, {"*", "shared"}};
  limiter.set_parent_rules(rules);
  EXPECT_EQ(limiter.parent_rules(), rules);
  EXPECT_EQ(chain_of(limiter, "user-1"), (Names{"user-1", "team-a", "shared"}));
  EXPECT_EQ(chain_of(limiter, "user-12"), (Names{"user-12", "team-b", "shared"}));
  EXPECT_EQ(chain_of(limiter, "bot"), (Names{"bot", "shared"}));
  EXPECT_EQ(chain_of(limiter, "team-a"), (Names{"team-a", "shared"}));
  EXPECT_EQ(chain_of(limiter, "shared"), (Names{"shared"}));
  EXPECT_EQ(chain_of(limiter, "admin"), (Names{"admin"}));
  EXPECT_EQ(chain_of(limiter, ""), (Names{""}));  // the empty name matches no rule

  // Replacing the rules replaces them all; {} removes them.
  limiter.set_parent_rules({{"bot*", "bots"}});
  EXPECT_EQ(chain_of(limiter, "user-1"), (Names{"user-1"}));
  EXPECT_EQ(chain_of(limiter, "bot-7"), (Names{"bot-7", "bots"}));
  limiter.set_parent_rules({});
  EXPECT_TRUE(limiter.parent_rules().empty());
  EXPECT_EQ(chain_of(limiter, "bot-7"), (Names{"bot-7"}));
}

// Verifies the glob: '*' any run (also empty), '?' one byte, '\' escapes, case matters.
TEST_F(LimiterTest, ParentRulePatterns) {
  limiter.set_default_limits({Limit::per_minute("rpm", 100)});
  struct Case {
    const char* pattern;
    const char* name;
    bool matches;
  };
  const Case cases[] = {
      {"*", "x", true},
      {"user-*", "user-", true},
      {"user-*", "user", false},
      {"*-bot", "a-b-bot", true},
      {"*-bot", "a-bot-x", false},
      {"a?c", "abc", true},
      {"a?c", "ac", false},
      {"a?c", "abbc", false},
      {"*a*b*", "xaxxbx", true},
      {"*a*b*", "xbxa", false},
      {"a*b*c", "abcbc", true},
      {"a*b*c", "abcb", false},
      {"User-*", "user-1", false},
      {"a\\*", "a*", true},
      {"a\\*", "ab", false},
      {"a\\?", "a?", true},
      {"a\\\\b", "a\\b", true},
      {"??", "ab", true},
      {"??", "abc", false},
      {"literal", "literal", true},
      {"literal", "literals", false},
  };
  for (const Case& c : cases) {
    limiter.set_parent_rules({{c.pattern, "p"}});
    const Names want = c.matches ? Names{c.name, "p"} : Names{c.name};
    EXPECT_EQ(chain_of(limiter, c.name), want) << c.pattern << " vs " << c.name;
  }
}

// Verifies an explicit parent always wins over the rules, and removing it gives the entity
// its rule parent again.
TEST_F(LimiterTest, ExplicitParentWinsOverParentRules) {
  limiter.set_default_limits({Limit::per_minute("rpm", 100)});
  limiter.set_parent_rules({{"user-*", "team-a"}});
  limiter.set_parent("user-1", "vip");
  EXPECT_EQ(chain_of(limiter, "user-1"), (Names{"user-1", "vip"}));
  EXPECT_EQ(chain_of(limiter, "user-2"), (Names{"user-2", "team-a"}));
  limiter.set_parent("user-1", "");
  EXPECT_EQ(chain_of(limiter, "user-1"), (Names{"user-1", "team-a"}));
  // An explicit parent that a rule matches still gets its rule parent.
  limiter.set_parent_rules({{"user-*", "team-a"}, {"vip", "org"}});
  limiter.set_parent("user-1", "vip");
  EXPECT_EQ(chain_of(limiter, "user-1"), (Names{"user-1", "vip", "org"}));
}

// Verifies two entities nobody registered share the rule parent's budget: each consumes from
// its own limits and from the parent's, all or nothing, and the exhausted parent denies.
TEST_F(LimiterTest, DefaultParentBudgetIsSharedByDynamicEntities) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  limiter.set_entity_limits("team-shared", "gpt", {Limit::per_minute("rpm", 5)});  // T = 12 s
  limiter.set_parent_rules({{"*", "team-shared"}});

  ASSERT_TRUE(take(limiter, "user-1", "gpt", {{"rpm", 3}}).allowed);
  ASSERT_TRUE(take(limiter, "user-2", "gpt", {{"rpm", 2}}).allowed);
  EXPECT_EQ(available(limiter, "user-1", "gpt", "rpm"), 97);
  EXPECT_EQ(available(limiter, "user-2", "gpt", "rpm"), 98);
  EXPECT_EQ(available(limiter, "team-shared", "gpt", "rpm"), 0);

  const Decision d = take(limiter, "user-3", "gpt", {{"rpm", 1}});
  EXPECT_EQ(d.code, Code::rate_exceeded);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "team-shared");
  EXPECT_EQ(d.retry_after, 12 * kSec);
  EXPECT_EQ(available(limiter, "user-3", "gpt", "rpm"), 100);  // all or nothing
  clock.advance(12 * kSec);
  EXPECT_TRUE(take(limiter, "user-3", "gpt", {{"rpm", 1}}).allowed);
}

// Verifies no rule makes a cycle: a rule naming the entity itself is skipped for it (later
// rules still apply), rules naming each other's parents and rules closing a loop of explicit
// links are refused, whichever is set first, and a refused change leaves everything as it was.
TEST_F(LimiterTest, ParentRulesNeverMakeCycles) {
  limiter.set_default_limits({Limit::per_minute("rpm", 100)});
  limiter.set_parent_rules({{"team-*", "team-shared"}, {"*", "org"}});
  EXPECT_EQ(chain_of(limiter, "team-shared"), (Names{"team-shared", "org"}));
  EXPECT_EQ(chain_of(limiter, "team-a"), (Names{"team-a", "team-shared", "org"}));
  EXPECT_EQ(chain_of(limiter, "org"), (Names{"org"}));

  // Two rules whose parents match each other: ax -> bx -> ax.
  const std::vector<ParentRule> before = limiter.parent_rules();
  try {
    limiter.set_parent_rules({{"a*", "bx"}, {"b*", "ax"}});
    FAIL() << "expected ValidationError";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "parent rule");
    EXPECT_EQ(e.value(), "a*");
    EXPECT_NE(std::string(e.what()).find("make a cycle: bx -> ax -> bx"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(limiter.parent_rules(), before);

  // An explicit link under the default parent closes a loop: org -> team-shared -> org.
  try {
    limiter.set_parent("org", "team-shared");
    FAIL() << "expected ValidationError";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "parent");
    EXPECT_EQ(e.value(), "team-shared");
  }
  EXPECT_EQ(chain_of(limiter, "org"), (Names{"org"}));

  // The other order: the explicit links first, then the rule that would close the loop.
  limiter.set_parent_rules({});
  limiter.set_parent("org", "team");
  EXPECT_THROW(limiter.set_parent_rules({{"*", "org"}}), ValidationError);  // team -> org -> team
  EXPECT_TRUE(limiter.parent_rules().empty());
  // Exempting team keeps its chain acyclic.
  limiter.set_parent_rules({{"team", ""}, {"*", "org"}});
  EXPECT_EQ(chain_of(limiter, "org"), (Names{"org", "team"}));
  EXPECT_EQ(chain_of(limiter, "user-1"), (Names{"user-1", "org", "team"}));
  // Removing the explicit link of org hands it to the rules: "*" names org itself, so none.
  limiter.set_parent("org", "");
  EXPECT_EQ(chain_of(limiter, "org"), (Names{"org"}));
}

// Verifies the chains rules make count against max_parent_depth: an entity a rule matches has
// 1 + the rule parent's ancestors, whether the rules or the explicit links come last.
TEST_F(LimiterTest, ParentRulesRespectMaxParentDepth) {
  Limiter l(store, clock, LimiterOptions{.ns = "rule-depth", .max_parent_depth = 2});
  l.set_default_limits({Limit::per_minute("rpm", 10)});
  l.set_parent("team", "org");
  l.set_parent_rules({{"user-*", "team"}});
  EXPECT_EQ(chain_of(l, "user-1"), (Names{"user-1", "team", "org"}));
  try {
    l.set_parent("org", "root");  // user-* would have team, org, root
    FAIL() << "expected ValidationError";
  } catch (const ValidationError& e) {
    EXPECT_NE(
        std::string(e.what()).find(
            "the chain of an entity matching 'user-*' would be deeper than max_parent_depth 2"),
        std::string::npos)
        << e.what();
  }
  // Rule links count too: u-1 -> t-1 -> o-1 -> r would be three ancestors.
  l.set_parent_rules({});
  l.set_parent("team", "");
  EXPECT_THROW(l.set_parent_rules({{"u-*", "t-1"}, {"t-*", "o-1"}, {"o-*", "r"}}), ValidationError);
  l.set_parent_rules({{"u-*", "t-1"}, {"t-*", "o-1"}});
  EXPECT_EQ(chain_of(l, "u-1"), (Names{"u-1", "t-1", "o-1"}));

  Limiter flat(store, clock, LimiterOptions{.ns = "rule-flat", .max_parent_depth = 0});
  EXPECT_THROW(flat.set_parent_rules({{"*", "p"}}), ValidationError);
  flat.set_parent_rules({{"*", ""}});  // gives no parent: allowed
}

// Verifies malformed rules are refused with the field and value named, and nothing changes.
TEST_F(LimiterTest, ParentRulesAreValidated) {
  limiter.set_parent_rules({{"ok-*", "p"}});
  struct Case {
    ParentRule rule;
    const char* field;
  };
  const Case cases[] = {
      {{"", "p"}, "parent rule"},
      {{"a b", "p"}, "parent rule"},
      {{"a\\", "p"}, "parent rule"},
      {{std::string(257, 'a'), "p"}, "parent rule"},
      {{"user-*", "team a"}, "parent"},
      {{"shared", "shared"}, "parent rule"},
      {{"sh\\ared", "shared"}, "parent rule"},
  };
  for (const Case& c : cases) {
    EXPECT_THROW(validate_parent_rule(c.rule), ValidationError) << c.rule.pattern;
    try {
      limiter.set_parent_rules({{"x-*", "q"}, c.rule});
      ADD_FAILURE() << "accepted '" << c.rule.pattern << "' -> '" << c.rule.parent << "'";
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), c.field) << e.what();
    }
  }
  EXPECT_EQ(limiter.parent_rules(), (std::vector<ParentRule>{{"ok-*", "p"}}));
  validate_parent_rule({"a\\\\", "p"});         // an escaped backslash is complete
  validate_parent_rule({"shared*", "shared"});  // skipped for shared itself
}

// ------------------------------------------------------------------- resolution

// Verifies resolution order entity(resource) > entity default > resource > system, with the
// ConfigSource reported by resolve() and stats(), and that removing limits falls back.
TEST_F(LimiterTest, ResolutionOrderAndConfigSource) {
  limiter.set_default_limits({Limit::per_minute("rpm", 1000)});
  auto check = [&](std::string_view e, std::string_view r, std::int64_t cap, ConfigSource src) {
    SCOPED_TRACE(std::string(e) + "/" + std::string(r));
    const auto res = limiter.resolve(e, r);
    ASSERT_EQ(res.size(), 1u);
    EXPECT_EQ(res[0].first.capacity(), cap);
    EXPECT_EQ(res[0].second, src);
    const ResourceStats st = limiter.stats(e, r);
    ASSERT_EQ(st.limits.size(), 1u);
    EXPECT_EQ(st.limits[0].capacity, cap);
    EXPECT_EQ(st.limits[0].source, src);
  };
  check("x", "gpt", 1000, ConfigSource::system);
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  check("x", "gpt", 100, ConfigSource::resource);
  check("x", "other", 1000, ConfigSource::system);
  limiter.set_entity_default_limits("x", {Limit::per_minute("rpm", 10)});
  check("x", "gpt", 10, ConfigSource::entity_default);
  check("x", "other", 10, ConfigSource::entity_default);
  check("y", "gpt", 100, ConfigSource::resource);
  limiter.set_entity_limits("x", "gpt", {Limit::per_minute("rpm", 1)});
  check("x", "gpt", 1, ConfigSource::entity);
  check("x", "other", 10, ConfigSource::entity_default);
  check("y", "gpt", 100, ConfigSource::resource);

  // The resolved limit is the one enforced.
  EXPECT_TRUE(take(limiter, "x", "gpt", {{"rpm", 1}}).allowed);
  EXPECT_FALSE(take(limiter, "x", "gpt", {{"rpm", 1}}).allowed);

  limiter.remove_entity_limits("x", "gpt");
  check("x", "gpt", 10, ConfigSource::entity_default);
  limiter.remove_limits("gpt");
  check("y", "gpt", 1000, ConfigSource::system);
  EXPECT_TRUE(limiter.resolve("y", "gpt").size() == 1);
}

// Verifies an amount naming no limit of the chain is refused with unknown_limit and a
// negative amount with invalid_argument, by every entry point, consuming nothing.
TEST_F(LimiterTest, UnknownLimitAndNegativeAmount) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 10)});
  const Decision u = take(limiter, "a", "gpt", {{"rpm", 1}, {"tpm", 5}});
  EXPECT_FALSE(u.allowed);
  EXPECT_EQ(u.code, Code::unknown_limit);
  EXPECT_NE(u.reason.find("tpm"), std::string::npos) << u.reason;
  EXPECT_EQ(limiter.decide("a", "gpt", {{"tpm", 5}}).code, Code::unknown_limit);
  EXPECT_EQ(limiter.record_usage("a", "gpt", {{"tpm", 5}}).code, Code::unknown_limit);

  const Decision n = take(limiter, "a", "gpt", {{"rpm", -1}});
  EXPECT_FALSE(n.allowed);
  EXPECT_EQ(n.code, Code::invalid_argument);
  EXPECT_EQ(limiter.decide("a", "gpt", {{"rpm", -1}}).code, Code::invalid_argument);
  EXPECT_EQ(limiter.record_usage("a", "gpt", {{"rpm", -3}}).code, Code::invalid_argument);
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 10);
}

// Verifies an amount above a limit's capacity is refused at once with exceeds_capacity:
// try_acquire returns it, acquire throws it without ever sleeping on the clock.
TEST_F(LimiterTest, ExceedsCapacityIsImmediate) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60, 10), Limit::daily("rpd", 100),
                             Limit::concurrency("inflight", 2)});
  const Decision d = take(limiter, "a", "gpt", {{"rpm", 11}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::exceeds_capacity);
  EXPECT_EQ(d.retry_after, 0);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].limit, "rpm");
  EXPECT_EQ(d.violations[0].requested, 11);
  EXPECT_NE(d.reason.find("capacity"), std::string::npos) << d.reason;
  EXPECT_EQ(take(limiter, "a", "gpt", {{"rpd", 101}}).code, Code::exceeds_capacity);
  EXPECT_EQ(take(limiter, "a", "gpt", {{"inflight", 3}}).code, Code::exceeds_capacity);
  // Even when another limit is merely short at the moment.
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 10}, {"rpd", 10}}).allowed);
  EXPECT_EQ(take(limiter, "a", "gpt", {{"rpm", 1}, {"rpd", 101}}).code, Code::exceeds_capacity);

  BackgroundAcquire w(limiter, "a", "gpt", {{"rpm", 11}}, 1h);
  ASSERT_TRUE(w.join());
  EXPECT_EQ(clock.sleepers(), 0u);
  EXPECT_EQ(clock.now(), kStart);
  ASSERT_TRUE(w.denial().has_value()) << w.other_error();
  EXPECT_EQ(w.denial()->code, Code::exceeds_capacity);
  EXPECT_EQ(limiter.waiting("a", "gpt"), 0u);
  EXPECT_EQ(available(limiter, "a", "gpt", "rpd"), 90);
}

// Verifies decide() reports what try_acquire would do without consuming anything, concurrency
// slots included.
TEST_F(LimiterTest, DecideConsumesNothing) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 3), Limit::concurrency("inflight", 1)});
  for (int i = 0; i < 5; ++i) {
    const Decision d = limiter.decide("a", "gpt", {{"rpm", 3}});
    ASSERT_TRUE(d.allowed);
    EXPECT_EQ(d.code, Code::ok);
    EXPECT_EQ(d.stats.size(), 2u);
  }
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 3);
  EXPECT_EQ(available(limiter, "a", "gpt", "inflight"), 1);
  Lease l = limiter.try_acquire("a", "gpt", {{"rpm", 3}});
  ASSERT_TRUE(l);
  const Decision d = limiter.decide("a", "gpt", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  ASSERT_EQ(d.violations.size(), 2u);
  // rpm alone needs T = 20 s; the slot comes back when the lease expires (TTL 5 min), and the
  // decision waits for the later of the two.
  EXPECT_EQ(d.violations[0].limit, "rpm");
  EXPECT_EQ(d.violations[0].retry_after, 20 * kSec);
  EXPECT_EQ(d.violations[1].limit, "inflight");
  EXPECT_EQ(d.violations[1].retry_after, limiter.options().lease_ttl);
  EXPECT_EQ(d.retry_after, limiter.options().lease_ttl);
  EXPECT_EQ(d.code, Code::concurrency_exceeded);
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 0);
  EXPECT_EQ(available(limiter, "a", "gpt", "inflight"), 0);
}

// Verifies decide() agrees with try_acquire when a limit the request does not name is in
// debt: the untouched limit cannot deny the request.
TEST_F(LimiterTest, DecideIgnoresLimitsTheRequestDoesNotTouch) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 10), Limit::per_minute("tpm", 10)});
  (void)limiter.record_usage("a", "gpt", {{"rpm", 30}});  // rpm 20 in debt
  const Decision d = limiter.decide("a", "gpt", {{"tpm", 1}});
  EXPECT_TRUE(d.allowed) << d.reason;
  EXPECT_EQ(d.code, Code::ok);
  EXPECT_TRUE(limiter.try_acquire("a", "gpt", {{"tpm", 1}}).allowed());
  const Decision both = limiter.decide("a", "gpt", {{"rpm", 1}, {"tpm", 1}});
  EXPECT_EQ(both.code, Code::rate_exceeded);
  EXPECT_EQ(both.retry_after, 126 * kSec);  // 21 units of rpm at 6 s
}

// ------------------------------------------------------------------- debt

// Verifies record_usage consumes unconditionally (debt), and try_acquire's retry_after then
// covers the debt exactly.
TEST_F(LimiterTest, RecordUsageDebtIsCoveredExactlyByRetryAfter) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60)});  // T = 1 s
  const Decision r = limiter.record_usage("a", "gpt", {{"rpm", 90}});
  EXPECT_TRUE(r.allowed);
  ASSERT_EQ(r.stats.size(), 1u);
  EXPECT_EQ(r.stats[0].available, 0);
  EXPECT_EQ(r.stats[0].reset_after, 90 * kSec);
  // 30 units of debt plus the unit asked for: 31 s.
  const Decision d = take(limiter, "a", "gpt", {{"rpm", 1}});
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 31 * kSec);
  clock.advance(31 * kSec - 1);
  EXPECT_EQ(take(limiter, "a", "gpt", {{"rpm", 1}}).retry_after, 1);
  clock.advance(1);
  EXPECT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
}

// ------------------------------------------------------------------- leases

// Verifies a positive adjust puts the bucket into debt and the next caller waits exactly for
// it to be repaid.
TEST_F(LimiterTest, LeaseAdjustPositiveCreatesDebt) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60),      // T = 1 s
                             Limit::per_minute("tpm", 6000)});  // T = 10 ms
  Lease l = limiter.try_acquire("a", "gpt", {{"rpm", 1}, {"tpm", 1000}});
  ASSERT_TRUE(l);
  EXPECT_TRUE(l.active());
  const Decision adj = l.adjust({{"tpm", 6000}});
  EXPECT_TRUE(adj.allowed);
  const LimitStatus* tpm = test::find_status(adj.stats, "a", "tpm");
  ASSERT_NE(tpm, nullptr);
  EXPECT_EQ(tpm->available, 0);
  EXPECT_EQ(tpm->reset_after, 70 * kSec);  // 7000 tokens * 10 ms
  l.commit();
  EXPECT_FALSE(l.active());
  // 1000 tokens of debt + 100 asked = 1100 * 10 ms.
  const Decision d = take(limiter, "a", "gpt", {{"rpm", 1}, {"tpm", 100}});
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 11 * kSec);
  clock.advance(11 * kSec - 1);
  EXPECT_FALSE(limiter.decide("a", "gpt", {{"rpm", 1}, {"tpm", 100}}).allowed);
  clock.advance(1);
  EXPECT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}, {"tpm", 100}}).allowed);
}

// Verifies a negative adjust refunds at most what the lease consumed, and a refund never
// fills the bucket above capacity.
TEST_F(LimiterTest, LeaseAdjustNegativeRefundIsCapped) {
  limiter.set_limits("gpt", {Limit::per_minute("tpm", 1000)});     // T = 60 ms
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"tpm", 500}}).allowed);  // someone else's usage
  Lease l = limiter.try_acquire("a", "gpt", {{"tpm", 100}});
  ASSERT_TRUE(l);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 400);
  const Decision d = l.adjust({{"tpm", -1000}});  // 10x what it consumed
  EXPECT_EQ(d.stats.at(0).available, 500);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 500);
  EXPECT_TRUE(l.adjust({{"tpm", -1}}).allowed);  // nothing left to refund
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 500);
  EXPECT_TRUE(l.adjust({{"tpm", 50}}).allowed);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 450);
  EXPECT_TRUE(l.adjust({{"tpm", -1000}}).allowed);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 500);
  l.rollback();  // consumed is 0 now: nothing more comes back
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 500);

  // Never above capacity: refund into a bucket that refilled meanwhile.
  limiter.reset("a", "gpt");
  Lease m = limiter.try_acquire("a", "gpt", {{"tpm", 100}});
  ASSERT_TRUE(m);
  clock.advance(60 * kSec);  // full again
  EXPECT_TRUE(m.adjust({{"tpm", -100}}).allowed);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 1000);
  m.commit();
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"tpm", 1000}}).allowed);
  const Decision after = take(limiter, "a", "gpt", {{"tpm", 1}});
  EXPECT_EQ(after.code, Code::rate_exceeded);
  EXPECT_EQ(after.retry_after, 60 * kMs);  // exactly empty, not 100 tokens of extra credit
}

// Verifies a window lease's refund is limited to what it counted in the current window: usage
// that rolled over into a new window can only refund the new window's part.
TEST_F(LimiterTest, LeaseWindowRefundOnlyWithinTheSameWindow) {
  limiter.set_limits("gpt", {Limit::daily("tpd", 100)});
  Lease l = limiter.try_acquire("a", "gpt", {{"tpd", 5}});
  ASSERT_TRUE(l);
  clock.advance(6400 * kSec);  // next UTC day: the 5 stay in yesterday's window
  EXPECT_EQ(available(limiter, "a", "gpt", "tpd"), 100);
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"tpd", 10}}).allowed);  // someone else today
  EXPECT_TRUE(l.adjust({{"tpd", 1}}).allowed);                    // the lease adds 1 today
  EXPECT_EQ(available(limiter, "a", "gpt", "tpd"), 89);
  EXPECT_TRUE(l.adjust({{"tpd", -6}}).allowed);  // only the 1 counted today can come back
  EXPECT_EQ(available(limiter, "a", "gpt", "tpd"), 90);
  l.rollback();
  EXPECT_EQ(available(limiter, "a", "gpt", "tpd"), 90);
}

// Verifies an un-ended lease commits when its scope ends normally, rollback gives the usage
// back, moves transfer ownership without double ends, and commit/rollback are idempotent
// (scope exits by exception: lease_scope_test.cpp).
TEST_F(LimiterTest, LeaseScopeEndCommitsRollbackRefunds) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  {
    Lease l = limiter.try_acquire("a", "gpt", {{"rpm", 10}});
    ASSERT_TRUE(l);
    EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 90);
  }  // committed
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 90);
  {
    Lease l = limiter.try_acquire("a", "gpt", {{"rpm", 10}});
    l.rollback();
    l.rollback();
    l.commit();  // no-op after rollback
  }
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 90);
  {
    Lease l = limiter.try_acquire("a", "gpt", {{"rpm", 10}});
    l.commit();
    l.commit();
    l.rollback();  // no-op after commit
  }
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 80);
  {
    Lease a = limiter.try_acquire("a", "gpt", {{"rpm", 5}});
    Lease b = std::move(a);
    EXPECT_FALSE(a.active());  // NOLINT(bugprone-use-after-move): moved-from is inactive
    EXPECT_TRUE(b.active());
    EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 75);
    Lease c = limiter.try_acquire("a", "gpt", {{"rpm", 7}});
    EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 68);
    c = std::move(b);  // c's own 7 are committed, b's 5 now belong to c
    EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 68);
    c.rollback();
    c.rollback();
    EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 73);
  }
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 73);
}

// Verifies a lease of more than two limits (its holdings beyond the inline two) keeps what it
// took on each through moves, adjusts one and refunds each exactly on rollback.
TEST_F(LimiterTest, LeaseOfThreeLimitsSurvivesMovesAndRefundsEach) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100), Limit::per_minute("tpm", 10000),
                             Limit::per_hour("rph", 1000)});
  Lease a = limiter.try_acquire("a", "gpt", {{"rpm", 2}, {"tpm", 300}, {"rph", 4}});
  ASSERT_TRUE(a);
  Lease b = std::move(a);
  Lease c = limiter.try_acquire("a", "gpt", {{"rpm", 1}});
  c = std::move(b);  // the 1 rpm of c is committed
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 97);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 9700);
  EXPECT_EQ(available(limiter, "a", "gpt", "rph"), 996);
  EXPECT_TRUE(c.adjust({{"tpm", 200}}).allowed);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 9500);
  c.rollback();
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 99);
  EXPECT_EQ(available(limiter, "a", "gpt", "tpm"), 10000);
  EXPECT_EQ(available(limiter, "a", "gpt", "rph"), 1000);
}

// Verifies adjust throws LeaseError once the lease ended (commit, rollback) or was denied, and
// ValidationError for a limit the lease does not have.
TEST_F(LimiterTest, LeaseAdjustAfterEndThrows) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 2), Limit::concurrency("inflight", 5)});
  Lease c = limiter.try_acquire("a", "gpt", {{"rpm", 1}});
  EXPECT_THROW((void)c.adjust({{"nope", 1}}), ValidationError);
  EXPECT_THROW((void)c.adjust({{"inflight", 1}}), ValidationError);
  c.commit();
  EXPECT_THROW((void)c.adjust({{"rpm", 1}}), LeaseError);
  Lease r = limiter.try_acquire("a", "gpt", {{"rpm", 1}});
  r.rollback();
  EXPECT_THROW((void)r.adjust({{"rpm", -1}}), LeaseError);
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
  Lease denied = limiter.try_acquire("a", "gpt", {{"rpm", 1}});
  EXPECT_FALSE(denied);
  EXPECT_FALSE(denied.active());
  EXPECT_EQ(denied.id(), 0u);
  EXPECT_THROW((void)denied.adjust({{"rpm", 1}}), LeaseError);
  Lease empty;
  EXPECT_THROW((void)empty.adjust({{"rpm", 1}}), LeaseError);
}

// ------------------------------------------------------------------- concurrency limits

// Verifies concurrency slots are held until commit/rollback, and a full limit reports the
// time until the earliest lease expiry.
TEST_F(LimiterTest, ConcurrencySlotsHeldUntilLeaseEnds) {
  limiter.set_limits("gpt", {Limit::concurrency("inflight", 2)});
  Lease a = limiter.try_acquire("u", "gpt", {});
  Lease b = limiter.try_acquire("u", "gpt", {});
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_EQ(a.expires_at(), kStart + limiter.options().lease_ttl);
  EXPECT_NE(a.id(), 0u);  // slot holders are told apart by id
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 0);
  const Decision d = take(limiter, "u", "gpt", {});
  EXPECT_EQ(d.code, Code::concurrency_exceeded);
  EXPECT_EQ(d.retry_after, limiter.options().lease_ttl);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].kind, LimitKind::concurrency);
  EXPECT_EQ(d.violations[0].requested, 1);
  a.commit();  // commit frees the slot too
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 1);
  Lease c = limiter.try_acquire("u", "gpt", {});
  ASSERT_TRUE(c);
  EXPECT_FALSE(limiter.try_acquire("u", "gpt", {}));
  b.rollback();
  c.rollback();
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 2);
  Lease two = limiter.try_acquire("u", "gpt", {{"inflight", 2}});
  ASSERT_TRUE(two);
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 0);
}

// Verifies a lease past its TTL frees its slot even though the Lease object lives on; the
// retry_after of a full limit is exact (1 µs earlier still denied); ending the expired lease
// later does not free anybody else's slot.
TEST_F(LimiterTest, ExpiredLeaseFreesSlotRetryAfterExact) {
  limiter.set_limits("gpt", {Limit::concurrency("inflight", 2)});
  AcquireOptions ten_s;
  ten_s.lease_ttl = 10 * kSec;
  AcquireOptions twenty_s;
  twenty_s.lease_ttl = 20 * kSec;
  Lease a = limiter.try_acquire("u", "gpt", {}, ten_s);  // expires at +10 s
  clock.advance(3 * kSec);
  Lease b = limiter.try_acquire("u", "gpt", {}, twenty_s);  // expires at +23 s
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_EQ(a.expires_at(), kStart + 10 * kSec);
  const Decision d = take(limiter, "u", "gpt", {});
  EXPECT_EQ(d.code, Code::concurrency_exceeded);
  EXPECT_EQ(d.retry_after, 7 * kSec);
  clock.advance(7 * kSec - 1);
  const Decision early = take(limiter, "u", "gpt", {});
  EXPECT_FALSE(early.allowed);
  EXPECT_EQ(early.retry_after, 1);
  clock.advance(1);
  Lease c = limiter.try_acquire("u", "gpt", {});
  ASSERT_TRUE(c) << c.decision().reason;
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 0);
  a.rollback();  // expired: must not free b's or c's slot
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 0);
  EXPECT_FALSE(limiter.try_acquire("u", "gpt", {}));
  b.commit();
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 1);
}

// Verifies a multi-slot request waits for as many expiries as it needs (the second-earliest
// here), exactly.
TEST_F(LimiterTest, ConcurrencyRetryAfterCountsSlotsNeeded) {
  limiter.set_limits("gpt", {Limit::concurrency("inflight", 3)});
  std::vector<Lease> held;
  for (Micros ttl : {30 * kSec, 10 * kSec, 20 * kSec}) {
    AcquireOptions o;
    o.lease_ttl = ttl;
    held.push_back(limiter.try_acquire("u", "gpt", {}, o));
    ASSERT_TRUE(held.back());
  }
  EXPECT_EQ(take(limiter, "u", "gpt", {{"inflight", 1}}).retry_after, 10 * kSec);
  EXPECT_EQ(take(limiter, "u", "gpt", {{"inflight", 2}}).retry_after, 20 * kSec);
  EXPECT_EQ(take(limiter, "u", "gpt", {{"inflight", 3}}).retry_after, 30 * kSec);
  clock.advance(20 * kSec - 1);
  EXPECT_FALSE(limiter.decide("u", "gpt", {{"inflight", 2}}).allowed);
  clock.advance(1);
  EXPECT_TRUE(limiter.decide("u", "gpt", {{"inflight", 2}}).allowed);
  EXPECT_FALSE(limiter.decide("u", "gpt", {{"inflight", 3}}).allowed);
}

// ------------------------------------------------------------------- windows

// Verifies a daily window exhausts, reports retry_after = time to the window end (exact), and
// admits again from the window end on.
TEST_F(LimiterTest, DailyWindowExhaustsUntilWindowEnd) {
  limiter.set_limits("gpt", {Limit::daily("rpd", 3)});
  const Micros day_end = (kStart / kMicrosPerDay + 1) * kMicrosPerDay;  // next UTC midnight
  ASSERT_EQ(day_end - kStart, 6400 * kSec);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpd", 1}}).allowed);
  const Decision d = take(limiter, "a", "gpt", {{"rpd", 1}});
  EXPECT_EQ(d.code, Code::window_exceeded);
  EXPECT_EQ(d.retry_after, day_end - kStart);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].kind, LimitKind::window);
  EXPECT_EQ(d.stats.at(0).reset_after, day_end - kStart);
  clock.set(day_end - 1);
  const Decision early = take(limiter, "a", "gpt", {{"rpd", 1}});
  EXPECT_EQ(early.code, Code::window_exceeded);
  EXPECT_EQ(early.retry_after, 1);
  clock.advance(1);
  EXPECT_EQ(available(limiter, "a", "gpt", "rpd"), 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpd", 1}}).allowed);
  EXPECT_EQ(take(limiter, "a", "gpt", {{"rpd", 1}}).retry_after, kMicrosPerDay);
}

// ------------------------------------------------------------------- shadow limits

// Verifies a shadow limit (Limit::shadow) past its capacity: try_acquire (without stats),
// acquire (no wait), decide and an amount it can never fit are all allowed with code ok,
// retry_after 0 and the would-be denial in shadow_violations; the shadow limit is charged only
// for what it would have admitted (its retry_after stays the enforced limit's), the others
// for everything; record_usage and a lease's positive adjust count on it like on any limit.
TEST_F(LimiterTest, ShadowLimitReportsWouldDenyWithoutDenying) {
  // rpm: T = 1 s, shadow; tpm: T = 10 ms.
  limiter.set_limits("gpt",
                     {Limit::per_minute("rpm", 60).with_shadow(), Limit::per_minute("tpm", 6000)});
  for (int i = 0; i < 60; ++i) {
    const Decision d = take(limiter, "alice", "gpt", {{"rpm", 1}});
    ASSERT_TRUE(d.allowed) << i;
    ASSERT_TRUE(d.shadow_violations.empty()) << i;
  }
  Decision d = take(limiter, "alice", "gpt", {{"rpm", 1}, {"tpm", 100}});
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, Code::ok);
  EXPECT_EQ(d.retry_after, 0);
  EXPECT_TRUE(d.reason.empty());
  EXPECT_TRUE(d.violations.empty());
  EXPECT_TRUE(d.stats.empty());  // with_stats is off; the report is there regardless
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].entity, "alice");
  EXPECT_EQ(d.shadow_violations[0].limit, "rpm");
  EXPECT_EQ(d.shadow_violations[0].requested, 1);
  EXPECT_EQ(d.shadow_violations[0].available, 0);
  EXPECT_EQ(d.shadow_violations[0].retry_after, kSec);

  // acquire() never waits for a shadow limit.
  Lease waited = limiter.acquire("alice", "gpt", {{"rpm", 1}}, std::chrono::seconds(10));
  EXPECT_TRUE(waited.allowed());
  EXPECT_EQ(clock.now(), kStart);
  EXPECT_EQ(waited.decision().shadow_violations.size(), 1u);
  waited.commit();
  // An amount it can never fit: reported (retry_after 0), not exceeds_capacity.
  d = take(limiter, "alice", "gpt", {{"rpm", 61}});
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, Code::ok);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].requested, 61);
  EXPECT_EQ(d.shadow_violations[0].retry_after, 0);
  // None of the three was charged on rpm.
  d = limiter.decide("alice", "gpt", {{"rpm", 1}});
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].retry_after, kSec);
  EXPECT_EQ(available(limiter, "alice", "gpt", "tpm"), 5900);

  // record_usage counts (into debt) and reports nothing: it refuses nothing.
  d = limiter.record_usage("alice", "gpt", {{"rpm", 10}});
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.shadow_violations.empty());
  EXPECT_EQ(limiter.decide("alice", "gpt", {{"rpm", 1}}).shadow_violations.at(0).retry_after,
            11 * kSec);

  // A lease admitted past rpm holds none of it: a positive adjust counts, a refund gives back
  // at most that, and rollback refunds only tpm.
  Lease l = limiter.try_acquire("alice", "gpt", {{"rpm", 1}, {"tpm", 100}});
  ASSERT_TRUE(l.allowed());
  EXPECT_EQ(l.decision().shadow_violations.at(0).retry_after, 11 * kSec);
  EXPECT_EQ(available(limiter, "alice", "gpt", "tpm"), 5800);
  EXPECT_TRUE(l.adjust({{"rpm", 2}}).allowed);
  EXPECT_EQ(limiter.decide("alice", "gpt", {{"rpm", 1}}).shadow_violations.at(0).retry_after,
            13 * kSec);
  EXPECT_TRUE(l.adjust({{"rpm", -5}}).allowed);
  EXPECT_EQ(limiter.decide("alice", "gpt", {{"rpm", 1}}).shadow_violations.at(0).retry_after,
            11 * kSec);
  l.rollback();
  EXPECT_EQ(available(limiter, "alice", "gpt", "tpm"), 5900);
  EXPECT_EQ(limiter.decide("alice", "gpt", {{"rpm", 1}}).shadow_violations.at(0).retry_after,
            11 * kSec);
}

// Verifies a shadow limit of a parent: members pass it, the report names the parent, their own
// limits are charged and the parent's shadow budget only with what it would have admitted.
TEST_F(LimiterTest, ShadowLimitOnAParent) {
  limiter.set_limits("gpt", {Limit::per_minute("tpm", 6000)});
  limiter.set_entity_limits("team", "gpt", {Limit::per_minute("tpm", 150).with_shadow()});
  limiter.set_parent("bob", "team");
  limiter.set_parent("carol", "team");
  EXPECT_TRUE(take(limiter, "bob", "gpt", {{"tpm", 100}}).shadow_violations.empty());
  const Decision d = take(limiter, "carol", "gpt", {{"tpm", 100}});
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].entity, "team");
  EXPECT_EQ(d.shadow_violations[0].available, 50);
  EXPECT_EQ(d.shadow_violations[0].retry_after, 20 * kSec);  // 50 more at 400 ms each
  EXPECT_EQ(available(limiter, "carol", "gpt", "tpm"), 5900);
  EXPECT_EQ(available(limiter, "carol", "gpt", "tpm", "team"), 50);
  // The parent's enforced limit next to it still denies, and the shadow one is listed too.
  limiter.set_entity_limits(
      "team", "gpt", {Limit::per_minute("tpm", 150).with_shadow(), Limit::per_minute("rpm", 1)});
  ASSERT_TRUE(take(limiter, "bob", "gpt", {{"rpm", 1}}).allowed);
  const Decision denied = take(limiter, "carol", "gpt", {{"rpm", 1}, {"tpm", 100}});
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.code, Code::rate_exceeded);
  ASSERT_EQ(denied.violations.size(), 1u);
  EXPECT_EQ(denied.violations[0].limit, "rpm");
  EXPECT_EQ(denied.retry_after, 60 * kSec);
  ASSERT_EQ(denied.shadow_violations.size(), 1u);
  EXPECT_EQ(denied.shadow_violations[0].entity, "team");
  EXPECT_EQ(available(limiter, "carol", "gpt", "tpm"), 5900);  // a denial charges nothing
}

// ------------------------------------------------------------------- reset, namespaces, ids

// Verifies reset(entity, resource) refills only that key and reset_all refills the namespace.
TEST_F(LimiterTest, ResetAndResetAll) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 2)});
  limiter.set_limits("img", {Limit::per_minute("rpm", 2)});
  for (const char* e : {"alice", "bob"}) {
    for (const char* r : {"gpt", "img"}) ASSERT_TRUE(take(limiter, e, r, {{"rpm", 2}}).allowed);
  }
  limiter.reset("alice", "gpt");
  EXPECT_EQ(available(limiter, "alice", "gpt", "rpm"), 2);
  EXPECT_EQ(available(limiter, "alice", "img", "rpm"), 0);
  EXPECT_EQ(available(limiter, "bob", "gpt", "rpm"), 0);
  limiter.reset_all();
  for (const char* e : {"alice", "bob"}) {
    for (const char* r : {"gpt", "img"}) EXPECT_EQ(available(limiter, e, r, "rpm"), 2) << e << r;
  }
}

// Verifies two Limiters with different namespaces on one MemoryStore never share state (and
// that the same namespace does, so the test can tell).
TEST_F(LimiterTest, NamespacesAreIsolated) {
  Limiter a(store, clock, LimiterOptions{.ns = "tenant-a"});
  Limiter b(store, clock, LimiterOptions{.ns = "tenant-b"});
  Limiter a2(store, clock, LimiterOptions{.ns = "tenant-a"});
  for (Limiter* l : {&a, &b, &a2}) {
    l->set_limits("gpt", {Limit::per_minute("rpm", 5), Limit::concurrency("inflight", 1)});
  }
  ASSERT_TRUE(take(a, "alice", "gpt", {{"rpm", 5}}).allowed);
  Lease held = a.try_acquire("alice", "gpt", {{"rpm", 0}});
  ASSERT_TRUE(held);
  EXPECT_EQ(available(b, "alice", "gpt", "rpm"), 5);
  EXPECT_EQ(available(b, "alice", "gpt", "inflight"), 1);
  EXPECT_TRUE(take(b, "alice", "gpt", {{"rpm", 5}}).allowed);
  EXPECT_EQ(available(a2, "alice", "gpt", "rpm"), 0);  // same namespace: shared
  EXPECT_EQ(available(a2, "alice", "gpt", "inflight"), 0);
  b.reset_all();
  EXPECT_EQ(available(b, "alice", "gpt", "rpm"), 5);
  EXPECT_EQ(available(a, "alice", "gpt", "rpm"), 0);
  EXPECT_EQ(available(a, "alice", "gpt", "inflight"), 0);
  a.reset_all();
  EXPECT_EQ(available(a, "alice", "gpt", "rpm"), 5);
  EXPECT_EQ(available(b, "alice", "gpt", "rpm"), 5);
}

// Verifies crafted ids whose naive concatenations coincide keep separate state: separators
// inside ids, length shifts between entity and resource, and embedded NUL bytes.
TEST_F(LimiterTest, CraftedIdsDoNotCollide) {
  limiter.set_default_limits({Limit::per_minute("rpm", 1)});
  using namespace std::string_literals;
  const std::vector<std::pair<std::string, std::string>> keys = {
      {"a", "b:c"},        {"a:b", "c"},      {"ab", "c"},     {"a", "bc"},
      {"x\0y"s, "r"},      {"x"s, "y\0r"s},   {"x"s, "\0yr"s}, {"x\0"s, "yr"},
      {"x\0y\0r"s, "\0"s}, {""s, "x\0y\0r"s}, {"x"s, "y"s},
  };
  for (const auto& [e, r] : keys) {
    SCOPED_TRACE(::testing::PrintToString(e) + " / " + ::testing::PrintToString(r));
    EXPECT_EQ(available(limiter, e, r, "rpm"), 1);
    EXPECT_TRUE(take(limiter, e, r, {{"rpm", 1}}).allowed);
    EXPECT_FALSE(take(limiter, e, r, {{"rpm", 1}}).allowed);
  }
  for (const auto& [e, r] : keys) EXPECT_EQ(available(limiter, e, r, "rpm"), 0);
}

// ------------------------------------------------------------------- the audit log

// Verifies audit() appends to the store's log of the Limiter's namespace, filling a time of 0
// from the Limiter's clock and keeping a given one; audit_log() reads that namespace only; the
// Limiter's own configuration calls write no event; bad events and queries are refused.
TEST_F(LimiterTest, AuditAppendsToTheNamespacesLogWithTheClocksTime) {
  Limiter other(store, clock, LimiterOptions{.ns = "tenant-b"});
  AuditEvent e;
  e.principal = "library";
  e.action = std::string(to_string(AuditAction::limits_set));
  e.resource = "gpt";
  e.after = R"([{"name":"rpm","rate":{"limit":5,"period_us":60000000}}])";
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 5)});
  limiter.set_parent("alice", "team");
  EXPECT_TRUE(limiter.audit_log().empty());  // the Limiter writes none by itself

  clock.advance(kSec);
  EXPECT_EQ(limiter.audit(e), 1u);
  AuditEvent timed = e;
  timed.time = kStart - kSec;
  timed.action = std::string(to_string(AuditAction::parent_set));
  timed.entity = "alice";
  timed.after = R"("team")";
  EXPECT_EQ(limiter.audit(timed), 2u);
  EXPECT_EQ(other.audit(e), 1u);  // its own namespace, its own ids

  const std::vector<AuditEvent> log = limiter.audit_log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].id, 1u);
  EXPECT_EQ(log[0].time, kStart + kSec);
  EXPECT_EQ(log[0].after, e.after);
  timed.id = 2;
  EXPECT_EQ(log[1], timed);
  EXPECT_EQ(limiter.audit_log({.entity = "alice"}), std::vector<AuditEvent>{timed});
  EXPECT_EQ(limiter.audit_log({.limit = 1, .newest_first = true}), std::vector<AuditEvent>{timed});
  EXPECT_EQ(store.read_audit(store.open_namespace("default"), {}), log);
  ASSERT_EQ(other.audit_log().size(), 1u);
  EXPECT_EQ(other.audit_log()[0].time, kStart + kSec);

  AuditEvent bad = e;
  bad.action = "Limits Set";
  EXPECT_THROW((void)limiter.audit(bad), ValidationError);
  EXPECT_THROW((void)limiter.audit_log({.limit = 0}), ValidationError);
  EXPECT_EQ(limiter.audit_log().size(), 2u);
}

// Verifies a store that cannot be reached makes audit() and audit_log() throw
// StoreUnavailable (an event is never dropped silently), and appending goes on afterwards.
TEST(LimiterAudit, StoreUnavailableReachesTheCaller) {
  test::FaultStore store;
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  AuditEvent e;
  e.principal = "token:ops";
  e.action = "limits_deleted";
  e.resource = "gpt";
  e.before = "[]";
  store.down = true;
  EXPECT_THROW((void)limiter.audit(e), StoreUnavailable);
  EXPECT_THROW((void)limiter.audit_log(), StoreUnavailable);
  store.down = false;
  EXPECT_EQ(limiter.audit(e), 1u);
  EXPECT_EQ(limiter.audit_log().size(), 1u);
}

// ------------------------------------------------------------------- stats

// Verifies all_stats lists every configured resource sorted by name with exact values, and
// stats() of one resource matches.
TEST_F(LimiterTest, StatsAndAllStatsSortedByResource) {
  limiter.set_limits("zeta", {Limit::per_minute("rpm", 10)});
  limiter.set_limits("alpha", {Limit::per_minute("rpm", 20), Limit::per_minute("tpm", 500)});
  limiter.set_entity_limits("alice", "mid", {Limit::daily("rpd", 7)});
  ASSERT_TRUE(take(limiter, "alice", "zeta", {{"rpm", 4}}).allowed);
  ASSERT_TRUE(take(limiter, "alice", "alpha", {{"rpm", 1}, {"tpm", 100}}).allowed);
  ASSERT_TRUE(take(limiter, "alice", "mid", {{"rpd", 2}}).allowed);

  EXPECT_EQ(limiter.resources(), (std::vector<std::string>{"alpha", "mid", "zeta"}));
  const auto all = limiter.all_stats("alice");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].resource, "alpha");
  EXPECT_EQ(all[1].resource, "mid");
  EXPECT_EQ(all[2].resource, "zeta");
  for (const auto& s : all) EXPECT_EQ(s.entity, "alice");
  ASSERT_EQ(all[0].limits.size(), 2u);
  EXPECT_EQ(all[0].limits[0].limit, "rpm");
  EXPECT_EQ(all[0].limits[0].available, 19);
  EXPECT_EQ(all[0].limits[0].reset_after, 3 * kSec);  // T = 3 s
  EXPECT_EQ(all[0].limits[1].limit, "tpm");
  EXPECT_EQ(all[0].limits[1].available, 400);
  EXPECT_EQ(all[0].limits[1].reset_after, 12 * kSec);  // 100 * 120 ms
  ASSERT_EQ(all[1].limits.size(), 1u);
  EXPECT_EQ(all[1].limits[0].kind, LimitKind::window);
  EXPECT_EQ(all[1].limits[0].available, 5);
  EXPECT_EQ(all[1].limits[0].reset_after, 6400 * kSec);
  EXPECT_EQ(all[1].limits[0].source, ConfigSource::entity);
  ASSERT_EQ(all[2].limits.size(), 1u);
  EXPECT_EQ(all[2].limits[0].available, 6);
  EXPECT_EQ(all[2].limits[0].capacity, 10);
  EXPECT_EQ(all[2].limits[0].reset_after, 24 * kSec);  // 4 * 6 s

  const ResourceStats one = limiter.stats("alice", "alpha");
  ASSERT_EQ(one.limits.size(), 2u);
  EXPECT_EQ(one.limits[1].available, 400);
  // Another entity: untouched buckets; "mid" has no limits for bob.
  const auto bob = limiter.all_stats("bob");
  ASSERT_EQ(bob.size(), 3u);
  EXPECT_EQ(bob[0].limits[0].available, 20);
  EXPECT_TRUE(bob[1].limits.empty());
  EXPECT_EQ(bob[2].limits[0].reset_after, 0);
}

// ------------------------------------------------------------------- waiting

// Verifies acquire() blocks until exactly retry_after has passed: nothing wakes 1 µs early,
// and the clock advancing by the last µs admits it.
TEST_F(LimiterTest, AcquireWaitsExactlyRetryAfter) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60)});  // T = 1 s
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 60}}).allowed);
  BackgroundAcquire w(limiter, "a", "gpt", {{"rpm", 1}}, 1min);
  ASSERT_TRUE(test::wait_for_blocked(limiter, clock, "a", "gpt", 1, 1));
  EXPECT_EQ(clock.next_wakeup(), kStart + kSec);
  EXPECT_EQ(limiter.try_acquire("a", "gpt", {{"rpm", 1}}).decision().code, Code::queue_ahead);
  EXPECT_EQ(clock.advance(kSec - 1), 0u);
  EXPECT_FALSE(w.done());
  clock.advance(1);  // due now
  ASSERT_TRUE(w.join());
  ASSERT_TRUE(w.admitted()) << w.other_error();
  EXPECT_EQ(w.lease().decision().now, kStart + kSec);
  w.lease().commit();
  EXPECT_EQ(limiter.waiting("a", "gpt"), 0u);
  EXPECT_EQ(available(limiter, "a", "gpt", "rpm"), 0);
  EXPECT_EQ(take(limiter, "a", "gpt", {{"rpm", 1}}).code, Code::rate_exceeded);
}

// Verifies acquire() with an effectively infinite timeout (microseconds::max()) waits instead
// of overflowing its deadline.
TEST_F(LimiterTest, AcquireWithMaximalTimeoutWaits) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60)});
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 60}}).allowed);
  BackgroundAcquire w(limiter, "a", "gpt", {{"rpm", 1}}, std::chrono::microseconds::max());
  ASSERT_TRUE(test::wait_for_wakeup_at(clock, 1, kStart + kSec));
  clock.advance(kSec);
  ASSERT_TRUE(w.join());
  ASSERT_TRUE(w.admitted()) << (w.denial() ? w.denial()->reason : w.other_error());
}

// Verifies acquire() gives up with code timeout when its deadline comes before the capacity,
// consuming nothing; a zero timeout fails at once.
TEST_F(LimiterTest, AcquireTimesOut) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 60)});  // T = 1 s
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 60}}).allowed);
  {
    BackgroundAcquire w(limiter, "a", "gpt", {{"rpm", 1}}, 500ms);
    ASSERT_TRUE(test::wait_for_wakeup_at(clock, 1, kStart + 500 * kMs));
    clock.advance(500 * kMs);  // due now
    ASSERT_TRUE(w.join());
    ASSERT_TRUE(w.denial().has_value()) << w.other_error();
    EXPECT_EQ(w.denial()->code, Code::timeout);
    EXPECT_FALSE(w.denial()->allowed);
    EXPECT_EQ(w.denial()->now, kStart + 500 * kMs);
    ASSERT_EQ(w.denial()->violations.size(), 1u);  // the last attempt's reasons
    EXPECT_EQ(w.denial()->violations[0].limit, "rpm");
  }
  EXPECT_EQ(limiter.waiting("a", "gpt"), 0u);
  {
    BackgroundAcquire w(limiter, "a", "gpt", {{"rpm", 1}}, 0us);
    ASSERT_TRUE(w.join());
    ASSERT_TRUE(w.denial().has_value());
    EXPECT_EQ(w.denial()->code, Code::timeout);
  }
  EXPECT_EQ(clock.sleepers(), 0u);
  clock.advance(500 * kMs);  // at +1 s exactly one unit is back: nothing was consumed
  EXPECT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
  EXPECT_FALSE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
}

// Verifies a stop request cancels a blocked acquire() promptly (no clock advance needed) with
// code cancelled.
TEST_F(LimiterTest, AcquireCancelledByStopToken) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 1)});
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"rpm", 1}}).allowed);
  BackgroundAcquire w(limiter, "a", "gpt", {{"rpm", 1}}, 1h);
  ASSERT_TRUE(test::wait_for_blocked(limiter, clock, "a", "gpt", 1, 1));
  w.request_stop();
  ASSERT_TRUE(w.join());
  ASSERT_TRUE(w.denial().has_value()) << w.other_error();
  EXPECT_EQ(w.denial()->code, Code::cancelled);
  EXPECT_EQ(clock.now(), kStart);
  EXPECT_EQ(clock.sleepers(), 0u);
  EXPECT_EQ(limiter.waiting("a", "gpt"), 0u);
  // Stopped before or right after it starts: cancelled either way, without a clock advance.
  BackgroundAcquire early(limiter, "a", "gpt", {{"rpm", 1}}, 1h);
  early.request_stop();
  ASSERT_TRUE(early.join());
  ASSERT_TRUE(early.denial().has_value()) << early.other_error();
  EXPECT_EQ(early.denial()->code, Code::cancelled);
  EXPECT_EQ(clock.now(), kStart);
}

// Verifies FIFO: a large waiter at the head is admitted before a small waiter queued after
// it, even though capacity for the small one comes back first; try_acquire meanwhile gets
// queue_ahead.
TEST_F(LimiterTest, FifoLargeHeadWaiterIsNotStarved) {
  limiter.set_limits("gpt", {Limit::per_second("tps", 10)});  // T = 100 ms, burst 10
  ASSERT_TRUE(take(limiter, "a", "gpt", {{"tps", 10}}).allowed);

  BackgroundAcquire big(limiter, "a", "gpt", {{"tps", 8}}, 1min);
  ASSERT_TRUE(test::wait_for_wakeup_at(clock, 1, kStart + 800 * kMs));
  BackgroundAcquire small(limiter, "a", "gpt", {{"tps", 1}}, 1min);
  ASSERT_TRUE(test::wait_for_blocked(limiter, clock, "a", "gpt", 2, 2));

  const Decision q = limiter.try_acquire("a", "gpt", {{"tps", 1}}).decision();
  EXPECT_EQ(q.code, Code::queue_ahead);
  EXPECT_FALSE(q.allowed);
  // One unit is back at +100 ms: neither the small waiter nor try_acquire may take it.
  EXPECT_EQ(clock.advance(100 * kMs), 0u);
  EXPECT_EQ(limiter.try_acquire("a", "gpt", {{"tps", 1}}).decision().code, Code::queue_ahead);
  EXPECT_FALSE(small.done());
  clock.advance(700 * kMs);  // +800 ms: the big one fits
  ASSERT_TRUE(big.join());
  ASSERT_TRUE(big.admitted());
  EXPECT_EQ(big.lease().decision().now, kStart + 800 * kMs);
  big.lease().commit();
  // The small one is now at the head and needs one more interval.
  ASSERT_TRUE(test::wait_for_wakeup_at(clock, 1, kStart + 900 * kMs));
  EXPECT_EQ(limiter.waiting("a", "gpt"), 1u);
  EXPECT_FALSE(small.done());
  clock.advance(100 * kMs);
  ASSERT_TRUE(small.join());
  ASSERT_TRUE(small.admitted());
  small.lease().commit();
  EXPECT_EQ(limiter.waiting("a", "gpt"), 0u);
  EXPECT_EQ(limiter.try_acquire("a", "gpt", {{"tps", 1}}).decision().code, Code::rate_exceeded);
}

// Verifies ending a concurrency lease (rollback or commit) wakes the waiter at once, with no
// clock advance.
TEST_F(LimiterTest, EndingConcurrencyLeaseWakesWaiter) {
  limiter.set_limits("gpt", {Limit::concurrency("inflight", 1)});
  for (const bool commit : {false, true}) {
    SCOPED_TRACE(commit ? "commit" : "rollback");
    Lease holder = limiter.try_acquire("u", "gpt", {});
    ASSERT_TRUE(holder);
    BackgroundAcquire w(limiter, "u", "gpt", {}, 1h);
    ASSERT_TRUE(test::wait_for_wakeup_at(clock, 1, holder.expires_at()));
    if (commit) {
      holder.commit();
    } else {
      holder.rollback();
    }
    ASSERT_TRUE(w.join());
    ASSERT_TRUE(w.admitted()) << (w.denial() ? w.denial()->reason : w.other_error());
    EXPECT_EQ(w.lease().decision().now, kStart);
    EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 0);
    w.lease().rollback();
    EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 1);
  }
  EXPECT_EQ(clock.now(), kStart);
}

// Verifies a waiter blocked on a full concurrency limit is admitted when the holder's TTL
// passes (the clock wakes it at the expiry instant).
TEST_F(LimiterTest, WaiterAdmittedWhenHolderExpires) {
  limiter.set_limits("gpt", {Limit::concurrency("inflight", 1)});
  AcquireOptions o;
  o.lease_ttl = 30 * kSec;
  Lease holder = limiter.try_acquire("u", "gpt", {}, o);
  ASSERT_TRUE(holder);
  BackgroundAcquire w(limiter, "u", "gpt", {}, 1h);
  ASSERT_TRUE(test::wait_for_wakeup_at(clock, 1, kStart + 30 * kSec));
  EXPECT_EQ(clock.advance(30 * kSec - 1), 0u);
  clock.advance(1);  // due now
  ASSERT_TRUE(w.join());
  ASSERT_TRUE(w.admitted());
  EXPECT_EQ(w.lease().decision().now, kStart + 30 * kSec);
  holder.rollback();  // expired: frees nothing of the waiter's
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 0);
}

}  // namespace
}  // namespace admit

namespace admit {
namespace {

/// A MemoryStore that can be switched off: while `down`, its ops throw StoreUnavailable.
test::FaultStoreOptions switchable_options() {
  return {.name = "switchable", .down_reason = "test store is down"};
}

// Verifies an unreachable store gives decisions with code store_unavailable (fail closed), a
// waiting acquire throws with that code, and ending a lease while the store is down neither
// throws nor crashes.
TEST(LimiterStoreUnavailable, FailsClosedWithACode) {
  test::FaultStore store(switchable_options());
  ManualClock clock(kStart);
  Limiter lim(store, clock);
  lim.set_limits("m", {Limit::per_minute("rpm", 10), Limit::concurrency("slots", 2)});
  Lease held = lim.try_acquire("u", "m", {{"rpm", 1}});
  ASSERT_TRUE(held.allowed());
  store.down = true;
  const Lease l = lim.try_acquire("u", "m", {{"rpm", 1}});
  EXPECT_FALSE(l.allowed());
  EXPECT_EQ(l.decision().code, Code::store_unavailable);
  EXPECT_EQ(l.decision().reason, "test store is down");
  EXPECT_EQ(lim.decide("u", "m", {{"rpm", 1}}).code, Code::store_unavailable);
  EXPECT_EQ(lim.record_usage("u", "m", {{"rpm", 1}}).code, Code::store_unavailable);
  try {
    (void)lim.acquire("u", "m", {{"rpm", 1}}, std::chrono::seconds(1));
    ADD_FAILURE() << "acquire should throw";
  } catch (const RateLimitExceeded& e) {
    EXPECT_EQ(e.decision().code, Code::store_unavailable);
  }
  EXPECT_EQ(held.adjust({{"rpm", 2}}).code, Code::store_unavailable);
  held.rollback();  // nothing to refund into: no throw
  EXPECT_THROW((void)lim.stats("u", "m"), StoreUnavailable);
  store.down = false;
  EXPECT_TRUE(lim.try_acquire("u", "m", {{"rpm", 1}}).allowed());
}

// ------------------------------------------------------------------ limits kept in the store

LimiterOptions store_config(Micros ttl) {
  LimiterOptions o;
  o.config = ConfigMode::store;
  o.config_ttl = ttl;
  return o;
}

// Verifies that while the store cannot be read, a Limiter keeping its limits there uses what
// it cached however old (counted as stale), that a key with nothing cached gets a decision
// with code store_unavailable (acquire throws it), and that it reads the store again after.
TEST(LimiterStoreConfig, ServesStaleEntriesWhileTheStoreIsDown) {
  test::FaultStore store(switchable_options());
  ManualClock clock(kStart);
  Limiter lim(store, clock, store_config(kMicrosPerSecond));
  lim.set_limits("m", {Limit::per_minute("rpm", 3)});
  ASSERT_TRUE(take(lim, "u", "m", {{"rpm", 1}}).allowed);
  EXPECT_EQ(lim.cache_stats().misses, 1u);
  clock.advance(2 * kMicrosPerSecond);  // cached entries are now expired
  store.down = true;
  EXPECT_EQ(lim.resolve("u", "m").size(), 1u);
  EXPECT_GE(lim.cache_stats().stale, 5u);  // system, resource, entity, default, parent
  EXPECT_EQ(lim.try_acquire("u", "m", {{"rpm", 1}}).decision().code, Code::store_unavailable);
  const Lease other = lim.try_acquire("v", "m", {{"rpm", 1}});  // v: nothing cached
  EXPECT_EQ(other.decision().code, Code::store_unavailable);
  EXPECT_EQ(other.decision().reason, "test store is down");
  try {
    (void)lim.acquire("v", "m", {{"rpm", 1}}, std::chrono::seconds(1));
    ADD_FAILURE() << "acquire should throw";
  } catch (const RateLimitExceeded& e) {
    EXPECT_EQ(e.decision().code, Code::store_unavailable);
  }
  EXPECT_THROW(lim.set_limits("m", {}), StoreUnavailable);
  store.down = false;
  EXPECT_TRUE(lim.try_acquire("v", "m", {{"rpm", 3}}).allowed());
  EXPECT_EQ(lim.try_acquire("u", "m", {{"rpm", 3}}).decision().code, Code::rate_exceeded);
}

// Verifies shadow limits kept in the store (ConfigMode::store) keep their flag: another Limiter
// on the store resolves them as shadow and is not denied by them.
TEST(LimiterStoreConfig, ShadowFlagIsStoredWithTheLimits) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter writer(store, clock, store_config(kMicrosPerSecond));
  Limiter reader(store, clock, store_config(kMicrosPerSecond));
  writer.set_limits("m", {Limit::per_minute("rpm", 1).with_shadow(), Limit::per_minute("tpm", 10)});
  const auto resolved = reader.resolve("u", "m");
  ASSERT_EQ(resolved.size(), 2u);
  EXPECT_TRUE(resolved[0].first.shadow());
  EXPECT_FALSE(resolved[1].first.shadow());
  ASSERT_TRUE(take(reader, "u", "m", {{"rpm", 1}}).allowed);
  const Decision d = take(reader, "u", "m", {{"rpm", 1}});
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(take(reader, "u", "m", {{"tpm", 11}}).code, Code::exceeds_capacity);
}

// Verifies stored entries that cannot be used give clear invalid_argument decisions: text
// that does not decode, and parents (written by another process) that make a cycle; and that
// set_parent checks the links already stored.
TEST(LimiterStoreConfig, BadStoredEntriesAreClearErrors) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter lim(store, clock, store_config(kMicrosPerSecond));
  const Namespace ns = store.open_namespace("default");
  store.put_config(ns, {ConfigKind::resource, {}, "m"}, R"([{"name":"rpm","kind":"rate"}])");
  Decision d = lim.try_acquire("u", "m", {{"rpm", 1}}).decision();
  EXPECT_EQ(d.code, Code::invalid_argument);
  EXPECT_NE(d.reason.find("stored resource limits of 'm' do not decode"), std::string::npos)
      << d.reason;
  EXPECT_THROW((void)lim.resolve("u", "m"), ValidationError);

  lim.set_limits("m", {Limit::per_minute("rpm", 3)});
  store.put_config(ns, {ConfigKind::parent, "a", {}}, "b");
  store.put_config(ns, {ConfigKind::parent, "b", {}}, "a");
  d = lim.try_acquire("a", "m", {{"rpm", 1}}).decision();
  EXPECT_EQ(d.code, Code::invalid_argument);
  EXPECT_NE(d.reason.find("make a cycle"), std::string::npos) << d.reason;
  EXPECT_THROW(lim.set_parent("c", "a"), ValidationError);  // would join the cycle's chain
  store.put_config(ns, {ConfigKind::parent, "b", {}}, "");
  lim.set_parent("c", "a");
  EXPECT_THROW(lim.set_parent("b", "c"), ValidationError);  // c -> a -> b -> c
  EXPECT_TRUE(lim.try_acquire("c", "m", {{"rpm", 1}}).allowed());
  EXPECT_EQ(lim.stats("c", "m").limits.size(), 3u);  // c, a and b each have rpm
}

// Verifies parent rules in ConfigMode::store: they stay in each Limiter (one without them gives
// no parent), the budget of the parent they name is in the store (two Limiters with the same
// rules draw on one), a stored explicit parent wins, and set_parent and set_parent_rules check
// the stored links together with the rules.
TEST(LimiterStoreConfig, ParentRulesAreLocalAndTheirBudgetShared) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter a(store, clock, store_config(kMicrosPerSecond));
  Limiter b(store, clock, store_config(kMicrosPerSecond));
  Limiter plain(store, clock, store_config(kMicrosPerSecond));
  a.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  a.set_entity_limits("team-shared", "gpt", {Limit::per_minute("rpm", 5)});
  for (Limiter* l : {&a, &b}) l->set_parent_rules({{"user-*", "team-shared"}});
  EXPECT_EQ(b.parent_rules(), (std::vector<ParentRule>{{"user-*", "team-shared"}}));

  ASSERT_TRUE(take(a, "user-1", "gpt", {{"rpm", 3}}).allowed);
  ASSERT_TRUE(take(b, "user-2", "gpt", {{"rpm", 2}}).allowed);
  const Decision d = take(b, "user-3", "gpt", {{"rpm", 1}});
  EXPECT_EQ(d.code, Code::rate_exceeded);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "team-shared");
  EXPECT_TRUE(plain.parent_rules().empty());
  EXPECT_TRUE(take(plain, "user-3", "gpt", {{"rpm", 1}}).allowed);  // no rules: no parent
  EXPECT_EQ(plain.stats("user-3", "gpt").limits.size(), 1u);

  // A stored explicit parent wins, in every process.
  a.set_parent("user-4", "vip");
  EXPECT_EQ(b.stats("user-4", "gpt").limits.back().entity, "vip");
  // team-shared -> user-9 -> (user-*) team-shared.
  EXPECT_THROW(a.set_parent("team-shared", "user-9"), ValidationError);
  // boss -> user-8 stored; then team-* -> boss would close boss -> user-8 -> team-shared -> boss.
  a.set_parent("boss", "user-8");
  EXPECT_THROW(a.set_parent_rules({{"user-*", "team-shared"}, {"team-*", "boss"}}),
               ValidationError);
  EXPECT_EQ(a.parent_rules(), b.parent_rules());
}

// Verifies config_ttl 0 reads the store on every resolution, invalidate_config() forgets the
// cache, a negative TTL is refused, and local mode reports no cache at all.
TEST(LimiterStoreConfig, TtlZeroAndInvalidate) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter lim(store, clock, store_config(0));
  lim.set_limits("m", {Limit::per_minute("rpm", 100)});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take(lim, "u", "m", {{"rpm", 1}}).allowed);
  EXPECT_EQ(lim.cache_stats().misses, 3u);
  EXPECT_EQ(lim.cache_stats().hits, 0u);

  Limiter cached(store, clock, store_config(kMicrosPerMinute));
  ASSERT_TRUE(take(cached, "u", "m", {{"rpm", 1}}).allowed);
  ASSERT_TRUE(take(cached, "u", "m", {{"rpm", 1}}).allowed);
  EXPECT_EQ(cached.cache_stats().misses, 1u);
  EXPECT_GT(cached.cache_stats().entries, 0u);
  lim.set_limits("m", {Limit::per_minute("rpm", 1)});  // another Limiter writes
  cached.invalidate_config();
  EXPECT_EQ(cached.cache_stats().entries, 0u);
  EXPECT_EQ(cached.try_acquire("u", "m", {{"rpm", 1}}).decision().code, Code::rate_exceeded);
  EXPECT_EQ(cached.cache_stats().misses, 2u);

  EXPECT_THROW(Limiter(store, clock, store_config(-1)), ValidationError);
  Limiter local(store, clock);
  local.set_limits("m", {Limit::per_minute("rpm", 1)});
  (void)local.try_acquire("u", "m", {{"rpm", 1}});
  EXPECT_EQ(local.cache_stats().misses + local.cache_stats().hits, 0u);
}

// Verifies limits learned from a provider (set_discovered_limits, local to this Limiter) merge
// with the limits read from the store, and follow a change made there.
TEST(LimiterStoreConfig, DiscoveredLimitsMergeWithStoredOnes) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter lim(store, clock, store_config(kMicrosPerSecond));
  Limiter other(store, clock, store_config(kMicrosPerSecond));
  lim.set_limits("m", {Limit::per_minute("rpm", 100), Limit::per_minute("tpm", 1000)});
  lim.set_discovered_limits("u", "m", {Limit::per_minute("tpm", 500)});
  using Resolved = std::vector<std::pair<Limit, ConfigSource>>;
  EXPECT_EQ(lim.resolve("u", "m"),
            (Resolved{{Limit::per_minute("rpm", 100), ConfigSource::resource},
                      {Limit::per_minute("tpm", 500), ConfigSource::discovered}}));
  other.set_limits("m", {Limit::per_minute("rpm", 7), Limit::per_minute("tpm", 1000)});
  clock.advance(kMicrosPerSecond);
  EXPECT_EQ(lim.resolve("u", "m"),
            (Resolved{{Limit::per_minute("rpm", 7), ConfigSource::resource},
                      {Limit::per_minute("tpm", 500), ConfigSource::discovered}}));
  EXPECT_EQ(other.resolve("u", "m")[1].second, ConfigSource::resource);
}

}  // namespace
}  // namespace admit

// ------------------------------------------------------------------ try_acquire_async

namespace admit {
namespace {

using test::FaultStore;

/// Every field of two decisions, with `what` in the failure messages.
void expect_same(const Decision& sync, const Decision& async, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(sync.allowed, async.allowed);
  EXPECT_EQ(sync.code, async.code);
  EXPECT_EQ(sync.reason, async.reason);
  EXPECT_EQ(sync.retry_after, async.retry_after);
  EXPECT_EQ(sync.now, async.now);
  ASSERT_EQ(sync.violations.size(), async.violations.size());
  for (std::size_t i = 0; i < sync.violations.size(); ++i) {
    const Violation& a = sync.violations[i];
    const Violation& b = async.violations[i];
    EXPECT_EQ(a.entity, b.entity) << i;
    EXPECT_EQ(a.limit, b.limit) << i;
    EXPECT_EQ(a.kind, b.kind) << i;
    EXPECT_EQ(a.requested, b.requested) << i;
    EXPECT_EQ(a.available, b.available) << i;
    EXPECT_EQ(a.retry_after, b.retry_after) << i;
  }
  ASSERT_EQ(sync.shadow_violations.size(), async.shadow_violations.size());
  for (std::size_t i = 0; i < sync.shadow_violations.size(); ++i) {
    const Violation& a = sync.shadow_violations[i];
    const Violation& b = async.shadow_violations[i];
    EXPECT_EQ(a.entity, b.entity) << i;
    EXPECT_EQ(a.limit, b.limit) << i;
    EXPECT_EQ(a.requested, b.requested) << i;
    EXPECT_EQ(a.available, b.available) << i;
    EXPECT_EQ(a.retry_after, b.retry_after) << i;
  }
  ASSERT_EQ(sync.stats.size(), async.stats.size());
  for (std::size_t i = 0; i < sync.stats.size(); ++i) {
    const LimitStatus& a = sync.stats[i];
    const LimitStatus& b = async.stats[i];
    EXPECT_EQ(a.entity, b.entity) << i;
    EXPECT_EQ(a.limit, b.limit) << i;
    EXPECT_EQ(a.kind, b.kind) << i;
    EXPECT_EQ(a.source, b.source) << i;
    EXPECT_EQ(a.capacity, b.capacity) << i;
    EXPECT_EQ(a.available, b.available) << i;
    EXPECT_EQ(a.reset_after, b.reset_after) << i;
  }
}

/// try_acquire_async on a store that answers at once (MemoryStore's default apply_async):
/// `done` must have run exactly once before the call returned.
Lease acquire_async_now(Limiter& limiter, std::string_view entity, std::string_view resource,
                        const Amounts& amounts, const AcquireOptions& options = {}) {
  int calls = 0;
  std::optional<Lease> got;
  limiter.try_acquire_async(
      entity, resource, amounts,
      [&](Lease lease) {
        ++calls;
        got.emplace(std::move(lease));
      },
      options);
  EXPECT_EQ(calls, 1);
  return got ? std::move(*got) : Lease{};
}

/// The same configuration on two Limiters over two MemoryStores and one clock: `sync` is
/// driven by try_acquire, `async` by try_acquire_async; their answers must be identical.
class AsyncAcquireTest : public ::testing::Test {
 protected:
  ManualClock clock{kStart};
  MemoryStore sync_store;
  MemoryStore async_store;
  Limiter sync{sync_store, clock};
  Limiter async{async_store, clock};

  void configure(const std::function<void(Limiter&)>& f) {
    f(sync);
    f(async);
  }

  /// Both acquires; expects equal decisions and lease shapes; returns both leases.
  std::pair<Lease, Lease> both(std::string_view entity, std::string_view resource,
                               const Amounts& amounts, const AcquireOptions& options = {}) {
    Lease s = sync.try_acquire(entity, resource, amounts, options);
    Lease a = acquire_async_now(async, entity, resource, amounts, options);
    expect_same(s.decision(), a.decision(),
                test::cat(entity, "/", resource, " at +", clock.now() - kStart, " us"));
    EXPECT_EQ(s.active(), a.active());
    EXPECT_EQ(s.expires_at(), a.expires_at());
    EXPECT_EQ(s.id() != 0, a.id() != 0);  // ids are random; holding slots is not
    EXPECT_EQ(s.entity(), a.entity());
    EXPECT_EQ(s.resource(), a.resource());
    return {std::move(s), std::move(a)};
  }
  /// both() and commit both; returns the async decision.
  Decision take_both(std::string_view entity, std::string_view resource, const Amounts& amounts,
                     const AcquireOptions& options = {}) {
    auto [s, a] = both(entity, resource, amounts, options);
    Decision d = a.decision();
    s.commit();
    a.commit();
    return d;
  }
};

// Verifies try_acquire_async decides exactly like try_acquire: allowed (with and without
// stats), rate denial with retry_after, exceeds_capacity, parents, windows, unknown limits
// and bad amounts, and that time passing admits both alike.
TEST_F(AsyncAcquireTest, SameDecisionsAsTryAcquire) {
  configure([](Limiter& l) {
    l.set_limits("m", {Limit::per_minute("rpm", 3), Limit::per_minute("tpm", 1000)});
    l.set_entity_limits("team", "m", {Limit::per_minute("tpm", 1500)});
    l.set_parent("alice", "team");
    l.set_parent("bob", "team");
    l.set_limits("d", {Limit::daily("rpd", 2, "00:00", "America/Los_Angeles")});
  });
  AcquireOptions stats;
  stats.with_stats = true;
  EXPECT_TRUE(take_both("alice", "m", {{"rpm", 1}, {"tpm", 400}}).allowed);
  const Decision with_stats = take_both("alice", "m", {{"rpm", 1}, {"tpm", 400}}, stats);
  EXPECT_TRUE(with_stats.allowed);
  EXPECT_EQ(with_stats.stats.size(), 3u);  // alice rpm, tpm; team tpm
  // The team's tpm (1500) runs out before alice's: bob is denied by the parent.
  const Decision parent = take_both("bob", "m", {{"rpm", 1}, {"tpm", 800}});
  EXPECT_EQ(parent.code, Code::rate_exceeded);
  ASSERT_EQ(parent.violations.size(), 1u);
  EXPECT_EQ(parent.violations[0].entity, "team");
  EXPECT_GT(parent.retry_after, 0);
  EXPECT_TRUE(take_both("alice", "m", {{"rpm", 1}}).allowed);
  const Decision rate = take_both("alice", "m", {{"rpm", 1}});
  EXPECT_EQ(rate.code, Code::rate_exceeded);
  EXPECT_EQ(rate.retry_after, 20 * kSec);  // T = 60 s / 3
  EXPECT_EQ(take_both("alice", "m", {{"tpm", 2000}}).code, Code::exceeds_capacity);
  EXPECT_EQ(take_both("alice", "m", {{"nope", 1}}).code, Code::unknown_limit);
  EXPECT_EQ(take_both("alice", "m", {{"rpm", -1}}).code, Code::invalid_argument);
  EXPECT_EQ(take_both("alice", "", {{"rpm", 1}}).code, Code::invalid_argument);
  EXPECT_TRUE(take_both("carol", "d", {{"rpd", 2}}).allowed);
  const Decision window = take_both("carol", "d", {{"rpd", 1}}, stats);
  EXPECT_EQ(window.code, Code::window_exceeded);
  clock.advance(20 * kSec - 1);
  EXPECT_EQ(take_both("alice", "m", {{"rpm", 1}}).retry_after, 1);
  clock.advance(1);
  EXPECT_TRUE(take_both("alice", "m", {{"rpm", 1}}).allowed);
}

// Verifies concurrency limits through try_acquire_async: slots held by the leases the
// callback received, the next one denied, a rollback frees a slot, a commit frees the other.
TEST_F(AsyncAcquireTest, ConcurrencyLeasesHoldAndReleaseSlots) {
  configure([](Limiter& l) { l.set_limits("m", {Limit::concurrency("inflight", 2)}); });
  auto [s1, a1] = both("u", "m", {});
  auto [s2, a2] = both("u", "m", {});
  ASSERT_TRUE(a1.allowed() && a2.allowed());
  EXPECT_NE(a1.id(), 0u);
  EXPECT_NE(a1.id(), a2.id());
  EXPECT_EQ(take_both("u", "m", {}).code, Code::concurrency_exceeded);
  s1.rollback();
  a1.rollback();
  EXPECT_EQ(test::available(async, "u", "m", "inflight"), 1);
  EXPECT_TRUE(take_both("u", "m", {}).allowed);  // committed: its slot is free again
  s2.commit();
  a2.commit();
  EXPECT_EQ(test::available(async, "u", "m", "inflight"), 2);
  EXPECT_EQ(test::available(sync, "u", "m", "inflight"), 2);
}

// Verifies try_acquire_async reports shadow limits exactly like try_acquire: allowed past them
// with the same shadow_violations (with and without stats), denied by an enforced limit with
// them listed too, and a shadow concurrency limit holding only free slots.
TEST_F(AsyncAcquireTest, ShadowLimitsLikeTryAcquire) {
  configure([](Limiter& l) {
    l.set_limits("m", {Limit::per_minute("rpm", 2).with_shadow(), Limit::per_minute("tpm", 1000),
                       Limit::concurrency("inflight", 1).with_shadow()});
  });
  AcquireOptions stats;
  stats.with_stats = true;
  auto [s1, a1] = both("u", "m", {{"rpm", 2}, {"tpm", 100}});
  EXPECT_TRUE(a1.decision().shadow_violations.empty());
  auto [s2, a2] = both("u", "m", {{"rpm", 1}, {"tpm", 100}}, stats);
  ASSERT_TRUE(a2.allowed());
  EXPECT_EQ(a2.decision().shadow_violations.size(), 2u);  // rpm and inflight
  EXPECT_EQ(a2.decision().stats.size(), 3u);
  const Decision denied = take_both("u", "m", {{"rpm", 1}, {"tpm", 900}});
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.violations.size(), 1u);
  EXPECT_EQ(denied.shadow_violations.size(), 2u);
  s2.commit();
  a2.commit();
  EXPECT_EQ(test::available(async, "u", "m", "inflight"), 0);  // a2 took no slot to free
  s1.commit();
  a1.commit();
  EXPECT_EQ(test::available(async, "u", "m", "inflight"), 1);
  EXPECT_EQ(test::available(sync, "u", "m", "inflight"), 1);
}

// Verifies adaptive limits: paced at the controller's rate, and the lease from the callback
// carries the controller's epoch (a failure mark halves the rate once per congestion event).
TEST_F(AsyncAcquireTest, AdaptiveLimitPacesAndMarks) {
  configure([](Limiter& l) {
    l.set_limits(
        "m",
        {Limit::adaptive(
            "aimd", AimdOptions{.max_rate = 100, .initial_rate = 4, .slow_start_threshold = 4})});
  });
  auto [s1, a1] = both("acct", "m", {});
  ASSERT_TRUE(a1.allowed());
  const Decision paced = take_both("acct", "m", {});
  EXPECT_EQ(paced.code, Code::rate_exceeded);
  EXPECT_EQ(paced.retry_after, 250 * kMs);
  clock.advance(250 * kMs);
  auto [s2, a2] = both("acct", "m", {});
  ASSERT_TRUE(a2.allowed());
  EXPECT_TRUE(s1.mark_failure());
  EXPECT_TRUE(a1.mark_failure());
  EXPECT_TRUE(s2.mark_failure());  // same epoch: no second decrease
  EXPECT_TRUE(a2.mark_failure());
  EXPECT_DOUBLE_EQ(test::find_status(async.stats("acct", "m").limits, "acct", "aimd")->rate, 2.0);
  EXPECT_DOUBLE_EQ(test::find_status(sync.stats("acct", "m").limits, "acct", "aimd")->rate, 2.0);
  s1.commit();
  a1.commit();
  s2.commit();
  a2.commit();
  clock.advance(250 * kMs - 1);  // a2's slot + its T (250 ms): the new T applies after it
  EXPECT_EQ(take_both("acct", "m", {}).retry_after, 1);
}

// Verifies the lease handed to the callback is a full lease: adjust, rollback (refunds
// rate and window usage), commit (keeps it), and its scope ending normally commits.
TEST_F(AsyncAcquireTest, LeaseFromCallbackAdjustsCommitsAndRollsBack) {
  async.set_limits("m", {Limit::per_minute("tpm", 1000), Limit::daily("rpd", 10)});
  {
    Lease l = acquire_async_now(async, "u", "m", {{"tpm", 600}, {"rpd", 1}});
    ASSERT_TRUE(l.active());
    EXPECT_EQ(test::available(async, "u", "m", "tpm"), 400);
    const Decision adj = l.adjust({{"tpm", -200}});
    EXPECT_TRUE(adj.allowed);
    EXPECT_EQ(test::available(async, "u", "m", "tpm"), 600);
    l.rollback();
    EXPECT_FALSE(l.active());
  }
  EXPECT_EQ(test::available(async, "u", "m", "tpm"), 1000);
  EXPECT_EQ(test::available(async, "u", "m", "rpd"), 10);
  {
    Lease l = acquire_async_now(async, "u", "m", {{"tpm", 600}, {"rpd", 1}});
    ASSERT_TRUE(l.active());
    l.commit();
  }
  EXPECT_EQ(test::available(async, "u", "m", "tpm"), 400);
  EXPECT_EQ(test::available(async, "u", "m", "rpd"), 9);
  {
    Lease dropped = acquire_async_now(async, "u", "m", {{"tpm", 400}});
    ASSERT_TRUE(dropped.allowed());
  }  // its scope ended normally: committed
  EXPECT_EQ(test::available(async, "u", "m", "tpm"), 0);
  // A request touching no limit is allowed without the store, like try_acquire's.
  Lease none = acquire_async_now(async, "u", "m", {{"tpm", 0}, {"rpd", 0}});
  EXPECT_TRUE(none.allowed());
  EXPECT_EQ(none.decision().code, Code::ok);
  none.commit();
}

// Verifies try_acquire_async answers queue_ahead at once while acquire() callers wait on the
// key, like try_acquire.
TEST_F(AsyncAcquireTest, QueueAheadLikeTryAcquire) {
  async.set_limits("m", {Limit::per_minute("rpm", 60)});  // T = 1 s
  Lease all = acquire_async_now(async, "a", "m", {{"rpm", 60}});
  ASSERT_TRUE(all.allowed());
  all.commit();
  BackgroundAcquire w(async, "a", "m", {{"rpm", 1}}, 1min);
  ASSERT_TRUE(test::wait_for_blocked(async, clock, "a", "m", 1, 1));
  const Lease q = acquire_async_now(async, "a", "m", {{"rpm", 1}});
  EXPECT_EQ(q.decision().code, Code::queue_ahead);
  EXPECT_EQ(q.decision().reason, async.try_acquire("a", "m", {{"rpm", 1}}).decision().reason);
  EXPECT_EQ(acquire_async_now(async, "b", "m", {{"rpm", 1}}).decision().code, Code::ok);
  clock.advance(kSec);
  ASSERT_TRUE(w.join());
  ASSERT_TRUE(w.admitted());
}

// Verifies a completion that comes later, on another thread, after this thread resolved
// other keys (overwriting its plan cache) and the configuration changed (freeing the
// snapshot the request was planned from), still gives the decision and lease of the
// configuration the request was planned with. Run under ASan: nothing may dangle.
TEST(AsyncAcquireDeferred, CompletionOutlivesPlanCacheAndSnapshot) {
  FaultStore store({.name = "deferred", .defer_async = true});
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  // Long names: heap strings, so a stale view of a reused buffer would show.
  const std::string user = "alice-has-a-name-longer-than-any-small-string-buffer";
  const std::string team = "team-of-alice-with-a-long-name-as-well";
  const std::string model = "model-with-a-long-resource-name-too";
  limiter.set_limits(model, {Limit::per_minute("rpm", 2), Limit::concurrency("inflight", 1)});
  limiter.set_entity_limits(team, model, {Limit::per_minute("rpm", 3)});
  limiter.set_parent(user, team);

  AcquireOptions stats;
  stats.with_stats = true;
  std::vector<Lease> got;
  std::vector<std::thread::id> threads;
  auto collect = [&](Lease l) {
    threads.push_back(std::this_thread::get_id());
    got.push_back(std::move(l));
  };
  limiter.try_acquire_async(user, model, {{"rpm", 1}}, collect, stats);  // allowed
  limiter.try_acquire_async(user, model, {{"rpm", 1}}, collect);         // denied: slot held by #1
  EXPECT_EQ(store.pending(), 2u);
  EXPECT_TRUE(got.empty());

  // Everything changes before the store answers.
  limiter.set_limits(model, {Limit::per_minute("other", 5)});
  limiter.set_parent(user, "");
  limiter.set_entity_limits(team, model, {});
  for (int i = 0; i < 20; ++i) {
    const std::string e = "someone-else-" + std::to_string(i) + "-with-a-long-name";
    (void)limiter.try_acquire(e, "another-resource-name", {});
    (void)limiter.decide(e, model, {{"other", 1}});
    limiter.try_acquire_async(e, model, {{"other", 1}}, [](Lease l) { l.commit(); });
  }
  (void)limiter.stats(user, model);
  ASSERT_EQ(store.run_all_on_other_thread(), 22u);

  ASSERT_EQ(got.size(), 2u);
  EXPECT_NE(threads[0], std::this_thread::get_id());
  Lease& first = got[0];
  ASSERT_TRUE(first.allowed()) << first.decision().reason;
  EXPECT_TRUE(first.active());
  EXPECT_EQ(first.entity(), user);
  EXPECT_EQ(first.resource(), model);
  EXPECT_NE(first.id(), 0u);
  EXPECT_EQ(first.decision().now, kStart);
  const auto& st = first.decision().stats;
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[0].entity, user);
  EXPECT_EQ(st[0].limit, "rpm");
  EXPECT_EQ(st[0].capacity, 2);
  EXPECT_EQ(st[0].available, 1);
  EXPECT_EQ(st[1].limit, "inflight");
  EXPECT_EQ(st[1].available, 0);
  EXPECT_EQ(st[2].entity, team);
  EXPECT_EQ(st[2].limit, "rpm");
  EXPECT_EQ(st[2].source, ConfigSource::entity);
  EXPECT_EQ(st[2].available, 2);

  const Decision& second = got[1].decision();
  EXPECT_FALSE(got[1].active());
  EXPECT_EQ(second.code, Code::concurrency_exceeded);
  ASSERT_EQ(second.violations.size(), 1u);
  EXPECT_EQ(second.violations[0].entity, user);
  EXPECT_EQ(second.violations[0].limit, "inflight");
  EXPECT_EQ(second.reason.find("'inflight' of " + user + " on " + model), 0u) << second.reason;
  ASSERT_EQ(second.stats.size(), 3u);
  EXPECT_EQ(second.stats[2].entity, team);

  // The lease ends against the limits it was taken with: its slot and units come back.
  first.rollback();
  EXPECT_EQ(store.pending(), 0u);
  limiter.set_limits(model, {Limit::per_minute("rpm", 2), Limit::concurrency("inflight", 1)});
  EXPECT_EQ(test::available(limiter, user, model, "inflight"), 1);
  EXPECT_EQ(test::available(limiter, user, model, "rpm"), 2);
}

// Verifies a failing store gives a decision, never an exception on its thread: code
// store_unavailable with the StoreUnavailable's reason, and with what() of any other
// exception; an apply_async that throws before taking the callback gets the same.
TEST(AsyncAcquireDeferred, StoreFailuresBecomeDecisions) {
  FaultStore store({.name = "deferred", .defer_async = true});
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
  std::vector<Lease> got;
  auto collect = [&](Lease l) { got.push_back(std::move(l)); };
  limiter.try_acquire_async("u", "m", {{"rpm", 1}}, collect);
  limiter.try_acquire_async("u", "m", {{"rpm", 1}}, collect);
  EXPECT_TRUE(store.run_one(std::make_exception_ptr(StoreUnavailable("deferred: down"))));
  EXPECT_TRUE(store.run_one(std::make_exception_ptr(std::runtime_error("boom"))));
  store.throw_from_apply_async = std::make_exception_ptr(StoreUnavailable("refused at once"));
  limiter.try_acquire_async("u", "m", {{"rpm", 1}}, collect);
  store.throw_from_apply_async = nullptr;
  ASSERT_EQ(got.size(), 3u);
  const char* reasons[] = {"deferred: down", "boom", "refused at once"};
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_FALSE(got[i].allowed()) << i;
    EXPECT_FALSE(got[i].active()) << i;
    EXPECT_EQ(got[i].decision().code, Code::store_unavailable) << i;
    EXPECT_EQ(got[i].decision().reason, reasons[i]) << i;
    EXPECT_TRUE(got[i].decision().stats.empty()) << i;
  }
  EXPECT_EQ(test::available(limiter, "u", "m", "rpm"), 10);  // nothing was consumed
}

// The example of README.md ("Acquiring without blocking"), on a MemoryStore: every `done` has
// run when try_acquire_async returns, so the worker loop runs on this thread. The third user
// is denied by the team's tpm.
TEST(AsyncAcquireDeferred, ReadmeExample) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter limiter(store, clock);
  limiter.set_limits("gpt-4o", {Limit::per_minute("rpm", 500), Limit::per_minute("tpm", 30'000)});
  limiter.set_entity_limits("team", "gpt-4o", {Limit::per_minute("tpm", 2400)});
  for (const char* u : {"user-1", "user-2", "user-3"}) limiter.set_parent(u, "team");
  testing::internal::CaptureStdout();
  // --- README.md ---
  std::mutex mu;
  std::condition_variable ready_cv;
  std::deque<admit::Lease> ready;  // filled by `done`, emptied by a worker

  for (std::string_view user : {"user-1", "user-2", "user-3"}) {
    limiter.try_acquire_async(user, "gpt-4o", {{"rpm", 1}, {"tpm", 1200}},
                              [&](admit::Lease lease) {  // any thread: quick, no blocking
                                std::lock_guard g(mu);
                                ready.push_back(std::move(lease));
                                ready_cv.notify_one();
                              });
  }

  // A worker thread: call the model for each allowed lease, then reconcile and commit.
  for (int answered = 0; answered < 3; ++answered) {
    std::unique_lock lk(mu);
    ready_cv.wait(lk, [&] { return !ready.empty(); });
    admit::Lease lease = std::move(ready.front());
    ready.pop_front();
    lk.unlock();
    if (!lease) {
      std::cout << lease.decision().reason << "\n";  // denied: code, retry_after, violations
      continue;
    }
    // ... call the model ...
    (void)lease.adjust({{"tpm", 800 - 1200}});
    lease.commit();
  }
  // --- end ---
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(out.find("'tpm' of team on gpt-4o"), 0u) << out;
  EXPECT_EQ(test::available(limiter, "user-1", "gpt-4o", "tpm"), 30'000 - 800);
  EXPECT_EQ(test::available(limiter, "user-1", "gpt-4o", "tpm", "team"), 2400 - 1600);
}

}  // namespace
}  // namespace admit
