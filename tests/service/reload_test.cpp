// Reloading the config (service/reload.hpp): what a new file no longer has is removed, what it
// changes is applied, and a bad file or one that needs a restart changes nothing.
#include "service/reload.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/audit.hpp"
#include "admit/store/memory_store.hpp"
#include "support/temp_dir.hpp"

namespace admit::service {
namespace {

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

std::vector<std::string> names(const Limiter& limiter, std::string_view entity,
                               std::string_view resource) {
  std::vector<std::string> out;
  for (const auto& [limit, source] : limiter.resolve(entity, resource)) {
    out.push_back(limit.name() + ":" + std::to_string(limit.capacity()) + ":" +
                  std::string(to_string(source)));
  }
  return out;
}

constexpr const char* kFirst = R"(
resources:
  gpt-4o: [{name: rpm, per: minute, limit: 500}]
  old-model: [{name: rpm, per: minute, limit: 5}]
entities:
  team-a:
    defaults: [{name: rpm, per: minute, limit: 50}]
    limits:
      gpt-4o: [{name: rpm, per: minute, limit: 1000}]
  user-1:
    parent: team-a
)";

constexpr const char* kSecond = R"(
resources:
  gpt-4o: [{name: rpm, per: minute, limit: 600}]
entities:
  team-a: {}
  user-1: {}
)";

struct Fixture {
  Fixture() {
    write(file, kFirst);
    Config c = load_config(file);
    apply_config(c, limiter);
    reloader.emplace(file, std::move(c), limiter);
  }
  test::TempDir dir{"reload"};
  std::string file = dir.file("admitd.yaml");
  ManualClock clock;
  MemoryStore store;
  Limiter limiter{store, clock};
  std::optional<Reloader> reloader;
};

TEST(Reload, RemovesWhatTheNewFileNoLongerHasAndAppliesTheRest) {
  Fixture f;
  EXPECT_EQ(names(f.limiter, "team-a", "gpt-4o"), std::vector<std::string>{"rpm:1000:entity"});
  EXPECT_EQ(names(f.limiter, "team-a", "other"), std::vector<std::string>{"rpm:50:entity_default"});
  EXPECT_EQ(f.limiter.stats("user-1", "gpt-4o").limits.size(), 2U) << "user-1 and team-a";

  write(f.file, kSecond);
  const ReloadResult r = f.reloader->reload();
  EXPECT_TRUE(r.applied) << r.message;
  EXPECT_EQ(names(f.limiter, "team-a", "gpt-4o"), std::vector<std::string>{"rpm:600:resource"});
  EXPECT_TRUE(names(f.limiter, "team-a", "other").empty()) << "entity defaults removed";
  EXPECT_TRUE(names(f.limiter, "x", "old-model").empty()) << "resource removed";
  EXPECT_EQ(f.limiter.stats("user-1", "gpt-4o").limits.size(), 1U) << "parent link removed";
  EXPECT_EQ(f.reloader->current().resources.size(), 1U);
}

TEST(Reload, ABadFileChangesNothing) {
  Fixture f;
  write(f.file, "resources:\n  gpt-4o: [{name: rpm, per: fortnight, limit: 1}]\n");
  const ReloadResult r = f.reloader->reload();
  EXPECT_FALSE(r.applied);
  EXPECT_NE(r.message.find("fortnight"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("still serving the previous config"), std::string::npos);
  EXPECT_EQ(names(f.limiter, "team-a", "gpt-4o"), std::vector<std::string>{"rpm:1000:entity"});
  EXPECT_EQ(f.reloader->current().resources.size(), 2U);
}

TEST(Reload, StoreNamespaceAndAccessChangesNeedARestart) {
  Fixture f;
  for (const std::string& extra :
       {std::string("namespace: other\n"), "store: \"sqlite:" + f.dir.file("x.db") + "\"\n",
        std::string("auth:\n  tokens:\n    - {token: 0123456789abcdef}\n"),
        std::string("http:\n  allowed_hosts: [admit.internal]\n")}) {
    write(f.file, extra + kSecond);
    const ReloadResult r = f.reloader->reload();
    EXPECT_FALSE(r.applied) << extra;
    EXPECT_NE(r.message.find("restart admitd"), std::string::npos) << r.message;
    EXPECT_EQ(names(f.limiter, "team-a", "gpt-4o"), std::vector<std::string>{"rpm:1000:entity"});
  }
}

TEST(Reload, EachNamespaceFollowsItsPart) {
  test::TempDir dir{"reload-ns"};
  const std::string file = dir.file("admitd.yaml");
  const auto two = [](int a, int b) {
    return "namespaces:\n  team-a:\n    resources: {m: [{name: rpm, per: minute, limit: " +
           std::to_string(a) + "}]}\n  team-b:\n    resources: {m: [{name: rpm, per: minute, " +
           "limit: " + std::to_string(b) + "}]}\n";
  };
  write(file, two(1, 2));
  Config c = load_config(file);
  ManualClock clock;
  MemoryStore store;
  LimiterOptions oa;
  oa.ns = "team-a";
  LimiterOptions ob;
  ob.ns = "team-b";
  Limiter a(store, clock, oa);
  Limiter b(store, clock, ob);
  apply_config(*c.namespaces()[0], a);
  apply_config(*c.namespaces()[1], b);
  Reloader reloader(file, std::move(c), std::vector<Limiter*>{&a, &b});

  write(file, two(3, 4));
  ReloadResult r = reloader.reload();
  EXPECT_TRUE(r.applied) << r.message;
  EXPECT_EQ(r.message, "2 resources, 0 entities in 2 namespaces");
  EXPECT_EQ(names(a, "x", "m"), std::vector<std::string>{"rpm:3:resource"});
  EXPECT_EQ(names(b, "x", "m"), std::vector<std::string>{"rpm:4:resource"});
  // One config_reloaded event in each namespace's audit log, by the file (a SIGHUP).
  for (Limiter* l : {&a, &b}) {
    const std::vector<AuditEvent> log = l->audit_log();
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0].action, "config_reloaded");
    EXPECT_EQ(log[0].principal, "config:" + file);
    EXPECT_NE(log[0].before.find("\"capacity\":" + std::string(l == &a ? "1" : "2")),
              std::string::npos)
        << log[0].before;
    EXPECT_NE(log[0].after.find("\"capacity\":" + std::string(l == &a ? "3" : "4")),
              std::string::npos)
        << log[0].after;
  }
  write(file, two(3, 5));
  EXPECT_TRUE(reloader.reload("ops").applied);
  EXPECT_EQ(b.audit_log({.newest_first = true}).at(0).principal, "ops");

  // Adding, removing or renaming a namespace needs a restart.
  for (const std::string& text :
       {two(5, 6) + "  team-c: {}\n", std::string("namespaces:\n  team-a: {}\n"),
        std::string("resources: {m: [{name: rpm, per: minute, limit: 5}]}\n")}) {
    write(file, text);
    r = reloader.reload();
    EXPECT_FALSE(r.applied) << text;
    EXPECT_NE(r.message.find("the namespaces changed"), std::string::npos) << r.message;
    EXPECT_EQ(names(a, "x", "m"), std::vector<std::string>{"rpm:3:resource"});
  }
}

// The entities of `entity`'s chain on gpt-4o, itself first.
std::vector<std::string> chain_of(Limiter& limiter, std::string_view entity) {
  std::vector<std::string> out;
  for (const LimitStatus& s : limiter.stats(entity, "gpt-4o").limits) out.push_back(s.entity);
  return out;
}

using Names = std::vector<std::string>;

// Verifies a reload applies changed parent rules: new rules, a new default parent, and none.
TEST(Reload, AppliesChangedParentRules) {
  Fixture f;
  EXPECT_EQ(chain_of(f.limiter, "user-7"), (Names{"user-7"}));
  const std::string teams =
      "resources:\n  gpt-4o: [{name: rpm, per: minute, limit: 600}]\n"
      "entities:\n  team-a: {}\n  team-b: {}\n  user-1: {parent: team-a}\n";
  write(f.file, teams + "parent_rules:\n  - {match: \"user-*\", parent: team-a}\n");
  ReloadResult r = f.reloader->reload();
  ASSERT_TRUE(r.applied) << r.message;
  EXPECT_EQ(chain_of(f.limiter, "user-7"), (Names{"user-7", "team-a"}));
  EXPECT_EQ(chain_of(f.limiter, "bot-1"), (Names{"bot-1"}));

  write(f.file, teams + "default_parent: team-b\n");
  r = f.reloader->reload();
  ASSERT_TRUE(r.applied) << r.message;
  EXPECT_EQ(chain_of(f.limiter, "user-7"), (Names{"user-7", "team-b"}));
  EXPECT_EQ(chain_of(f.limiter, "bot-1"), (Names{"bot-1", "team-b"}));
  EXPECT_EQ(chain_of(f.limiter, "user-1"), (Names{"user-1", "team-a"}));  // declared: its own
  EXPECT_EQ(chain_of(f.limiter, "team-a"), (Names{"team-a"}));

  write(f.file, kSecond);
  r = f.reloader->reload();
  ASSERT_TRUE(r.applied) << r.message;
  EXPECT_TRUE(f.limiter.parent_rules().empty());
  EXPECT_EQ(chain_of(f.limiter, "user-7"), (Names{"user-7"}));
}

// Verifies links move under parent rules without a refused step: the new rules come before the
// new links, so x -> p is not checked with p still under the old default parent r (which the
// new file puts below x: r -> x -> p -> r would be a cycle), and an unlinked entity declared in
// the old file gets no parent from the old rules.
TEST(Reload, RelinksUnderParentRules) {
  Fixture f;
  const std::string gpt = "resources:\n  gpt-4o: [{name: rpm, per: minute, limit: 600}]\n";
  write(f.file, gpt + "entities:\n  r: {}\n  x: {}\ndefault_parent: r\n");
  ReloadResult r = f.reloader->reload();
  ASSERT_TRUE(r.applied) << r.message;
  EXPECT_EQ(chain_of(f.limiter, "p"), (Names{"p", "r"}));

  write(f.file,
        gpt + "entities:\n  p: {}\n  x: {parent: p}\n  r: {parent: x}\ndefault_parent: r\n");
  r = f.reloader->reload();
  ASSERT_TRUE(r.applied) << r.message;
  EXPECT_EQ(chain_of(f.limiter, "u"), (Names{"u", "r", "x", "p"}));
  EXPECT_EQ(chain_of(f.limiter, "p"), (Names{"p"}));

  // x loses its parent: under the old rules it is declared, so it gets none (not r: a cycle).
  write(f.file, gpt + "entities:\n  p: {}\n  x: {}\n  r: {parent: x}\ndefault_parent: r\n");
  r = f.reloader->reload();
  ASSERT_TRUE(r.applied) << r.message;
  EXPECT_EQ(chain_of(f.limiter, "u"), (Names{"u", "r", "x"}));
}

}  // namespace
}  // namespace admit::service
