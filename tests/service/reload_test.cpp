// Reloading the config (service/reload.hpp): what a new file no longer has is removed, what it
// changes is applied, and a bad file or one that needs a restart changes nothing.
#include "service/reload.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
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

}  // namespace
}  // namespace admit::service
