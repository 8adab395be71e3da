// The audit log's events (admit/store/audit.hpp): the standard actions, the bounds, the JSON
// line form, and what Store does for a store that keeps no audit log. What every store does
// with events is in the conformance suite (conformance_test.cpp, AuditLog*).
#include "admit/store/audit.hpp"

#include <gtest/gtest.h>

#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/store.hpp"

namespace admit {
namespace {

constexpr AuditAction kAll[] = {AuditAction::limits_set,       AuditAction::limits_deleted,
                                AuditAction::parent_set,       AuditAction::parent_deleted,
                                AuditAction::parent_rules_set, AuditAction::config_reloaded,
                                AuditAction::state_reset};

// Verifies every action's name parses back to it and is a valid action, and other text is
// no action (actions are case sensitive).
TEST(AuditEvent, ActionsRoundTrip) {
  EXPECT_EQ(to_string(AuditAction::limits_set), "limits_set");
  EXPECT_EQ(to_string(AuditAction::config_reloaded), "config_reloaded");
  for (const AuditAction a : kAll) {
    EXPECT_EQ(parse_audit_action(to_string(a)), a) << to_string(a);
    AuditEvent e{.principal = "p", .action = std::string(to_string(a))};
    EXPECT_NO_THROW(validate_audit_event(e)) << to_string(a);
  }
  EXPECT_EQ(parse_audit_action("LIMITS_SET"), std::nullopt);
  EXPECT_EQ(parse_audit_action(""), std::nullopt);
  EXPECT_EQ(parse_audit_action("token_created"), std::nullopt);
  EXPECT_NO_THROW(validate_audit_event(AuditEvent{.principal = "p", .action = "token_created"}));
  EXPECT_NO_THROW(validate_audit_event(AuditEvent{.principal = "p", .action = "x.y-z_9"}));
}

// Verifies the JSON line: every field, ids and times as numbers, before and after as the JSON
// they hold (null when empty, a string for text that is not JSON), strings escaped.
TEST(AuditEvent, JsonLine) {
  AuditEvent e;
  e.id = 42;
  e.time = 1'700'000'000'000'000;
  e.principal = "config:/etc/admit/caf\xc3\xa9 \"x\".yaml";
  e.action = "limits_set";
  e.resource = "gpt-4o";
  e.after = R"( [ {"name": "rpm"} ] )";
  EXPECT_EQ(
      to_json(e),
      R"({"id":42,"time_us":1700000000000000,"principal":"config:/etc/admit/café \"x\".yaml",)"
      R"("action":"limits_set","entity":"","resource":"gpt-4o","before":null,)"
      R"("after":[{"name":"rpm"}]})");
  e.before = "not json";
  e.after.clear();
  e.entity = "team-*";
  EXPECT_EQ(
      to_json(e),
      R"({"id":42,"time_us":1700000000000000,"principal":"config:/etc/admit/café \"x\".yaml",)"
      R"("action":"limits_set","entity":"team-*","resource":"gpt-4o","before":"not json",)"
      R"("after":null})");
}

// Verifies a query's bounds, and that audit_matches applies its ids and filters.
TEST(AuditEvent, QueriesAndMatches) {
  EXPECT_NO_THROW(validate_audit_query({}));
  EXPECT_NO_THROW(validate_audit_query({.limit = 1}));
  EXPECT_NO_THROW(validate_audit_query({.limit = kAuditMaxReadLimit}));
  EXPECT_THROW(validate_audit_query({.limit = 0}), ValidationError);
  EXPECT_THROW(validate_audit_query({.limit = kAuditMaxReadLimit + 1}), ValidationError);
  EXPECT_THROW(validate_audit_query({.entity = "a b"}), ValidationError);
  EXPECT_THROW(validate_audit_query({.resource = "\x7f"}), ValidationError);
  EXPECT_THROW(validate_audit_retention(0), ValidationError);
  EXPECT_NO_THROW(validate_audit_retention(1));

  const AuditEvent e{.id = 5, .principal = "p", .action = "a", .entity = "u", .resource = "m"};
  EXPECT_TRUE(audit_matches(e, {}));
  EXPECT_TRUE(audit_matches(e, {.after_id = 4, .before_id = 6, .entity = "u", .resource = "m"}));
  EXPECT_FALSE(audit_matches(e, {.after_id = 5}));
  EXPECT_FALSE(audit_matches(e, {.before_id = 5}));
  EXPECT_FALSE(audit_matches(e, {.entity = "v"}));
  EXPECT_FALSE(audit_matches(e, {.resource = "n"}));
}

// A store written without an audit log: Store's defaults.
class NoAuditStore final : public Store {
 public:
  bool apply(const Op& op, std::span<ItemResult> results) override {
    return inner_.apply(op, results);
  }
  Namespace open_namespace(std::string_view name) override { return inner_.open_namespace(name); }
  void reset_namespace(const Namespace& ns) override { inner_.reset_namespace(ns); }
  std::size_t prune(Micros now) override { return inner_.prune(now); }
  std::size_t size() const override { return inner_.size(); }
  StoreCapabilities capabilities() const override { return {}; }
  std::string name() const override { return "plain"; }
  void put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) override {
    inner_.put_config(ns, key, value);
  }
  void get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                  std::span<std::optional<std::string>> values) override {
    inner_.get_config(ns, keys, values);
  }
  std::vector<ConfigEntry> list_config(const Namespace& ns) override {
    return inner_.list_config(ns);
  }

 private:
  MemoryStore inner_;
};

// Verifies a store without an audit log says so (capabilities().audit false), refuses an
// append with StoreUnavailable naming the store (after checking the event), and reads nothing
// (after checking the query).
TEST(AuditEvent, StoreWithoutAnAuditLog) {
  NoAuditStore store;
  const Namespace ns = store.open_namespace("default");
  EXPECT_FALSE(store.capabilities().audit);
  const AuditEvent e{.principal = "p", .action = "limits_set"};
  try {
    (void)store.append_audit(ns, e);
    ADD_FAILURE() << "appended to a store without an audit log";
  } catch (const StoreUnavailable& err) {
    EXPECT_NE(std::string(err.what()).find("'plain' keeps no audit log"), std::string::npos)
        << err.what();
  }
  EXPECT_THROW((void)store.append_audit(ns, AuditEvent{}), ValidationError);
  EXPECT_TRUE(store.read_audit(ns, {}).empty());
  EXPECT_THROW((void)store.read_audit(ns, {.limit = 0}), ValidationError);
  EXPECT_TRUE(MemoryStore().capabilities().audit);
  EXPECT_THROW(MemoryStore(MemoryStoreOptions{.audit_retention = 0}), ValidationError);
}

}  // namespace
}  // namespace admit
