// admit migrate in process (src/service/migrate.hpp): config/sample-state.yaml into a
// SqliteStore and back, the store entries and rows checked value by value, the imported state
// deciding as it implies (a Limiter at the file's instant, on a ManualClock), the YAML forms
// of every limit kind and of crafted names, and each bad input's error.
#include "service/migrate.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"
#include "admit/limiter.hpp"
#include "admit/store/sqlite_store.hpp"
#include "service/config.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace admit::service {
namespace {

using test::available;
using test::TempDir;

const std::string kSample = std::string(ADMIT_SOURCE_DIR) + "/config/sample-state.yaml";
constexpr Micros kT0 = 1'764'662'400'000'000;  // 2025-12-02T08:00:00Z: the sample's instant
constexpr Micros kSec = kMicrosPerSecond;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

struct Db {
  explicit Db(const std::string& path, const std::string& ns = "default")
      : store(SqliteStoreOptions{.path = path}), space(store.open_namespace(ns)) {}
  std::vector<ConfigEntry> config() { return store.list_config(space); }
  UsageState state() { return store.export_state(space); }
  SqliteStore store;
  Namespace space;
};

/// The ValidationError `f` throws (fails the test if it throws none).
template <class F>
ValidationError error_of(F&& f) {
  try {
    f();
  } catch (const ValidationError& e) {
    return e;
  }
  ADD_FAILURE() << "no ValidationError";
  return ValidationError("none", "", "");
}

// ------------------------------------------------------------------------ the sample

// Verifies the sample imports into exactly the store entries the Limiter reads (each value
// encode_limits() of the file's limits, the parent by name) and the state rows and hold it
// lists, with the summary counting them.
TEST(Migrate, ImportWritesTheConfigurationContractAndTheState) {
  TempDir dir;
  const std::string db = dir.file("admit.db");
  std::vector<std::string> lines;
  const MigrationSummary s =
      migrate_yaml_to_sqlite(kSample, db, [&](const std::string& l) { lines.push_back(l); });
  EXPECT_EQ(s.ns, "default");
  EXPECT_EQ(s.limit_sets, 4u);
  EXPECT_EQ(s.parents, 1u);
  EXPECT_EQ(s.state_rows, 5u);
  EXPECT_EQ(s.holds, 1u);
  EXPECT_EQ(lines, (std::vector<std::string>{"reading " + kSample,
                                             "writing " + db + " (namespace default)"}));

  auto limits = [](std::vector<Limit> l) { return encode_limits(l); };
  Db d(db);
  EXPECT_EQ(d.config(),
            (std::vector<ConfigEntry>{
                {ConfigKind::system, "", "", limits({Limit::per_minute("rpm", 60)})},
                {ConfigKind::resource, "", "claude-sonnet-4",
                 limits({Limit::per_minute("rpm", 50), Limit::per_minute("tpm", 40000)})},
                {ConfigKind::resource, "", "gpt-4o",
                 limits({Limit::per_minute("rpm", 500), Limit::per_minute("tpm", 30000, 30000),
                         Limit::daily("rpd", 10000, "00:00", "America/Los_Angeles"),
                         Limit::concurrency("concurrent", 50)})},
                {ConfigKind::entity, "team-a", "gpt-4o",
                 limits({Limit::per_minute("rpm", 1000), Limit::per_minute("tpm", 100000)})},
                {ConfigKind::parent, "user-1", "", "team-a"},
            }));
  const UsageState st = d.state();
  EXPECT_EQ(st.rows, (std::vector<StateRow>{
                         {"team-a", "claude-sonnet-4", "tpm", LimitKind::rate, kT0, 0},
                         {"team-a", "gpt-4o", "rpm", LimitKind::rate, kT0 + 30 * kSec, 0},
                         {"user-1", "gpt-4o", "rpd", LimitKind::window, kT0 + 86400 * kSec, 9999},
                         {"user-1", "gpt-4o", "rpm", LimitKind::rate, kT0 + 60 * kSec, 0},
                         {"user-1", "gpt-4o", "tpm", LimitKind::rate, kT0 + 30 * kSec, 0},
                     }));
  EXPECT_EQ(st.holds,
            (std::vector<HoldRow>{{"user-1", "gpt-4o", "concurrent", 42, 1, kT0 + 300 * kSec}}));
}

// Verifies the imported state decides as the file says, on a Limiter over the imported store
// at the file's instant (limits from the file through apply_config): user-1's rpm is empty and
// its next request fits exactly one interval (120 ms) later, tpm is half full, one daily request
// and 49 slots are left, and team-a has half of its rpm 1000.
TEST(Migrate, ImportedStateDecidesAsTheFileSays) {
  TempDir dir;
  const std::string db = dir.file("admit.db");
  migrate_yaml_to_sqlite(kSample, db);
  const Config config = load_state_file(kSample);
  SqliteStore store(SqliteStoreOptions{.path = db});
  ManualClock clock(kT0);
  Limiter limiter(store, clock, LimiterOptions{.ns = config.ns});
  apply_config(config, limiter);

  EXPECT_EQ(available(limiter, "user-1", "gpt-4o", "rpm"), 0);
  EXPECT_EQ(available(limiter, "user-1", "gpt-4o", "tpm"), 15000);
  EXPECT_EQ(available(limiter, "user-1", "gpt-4o", "rpd"), 1);
  EXPECT_EQ(available(limiter, "user-1", "gpt-4o", "concurrent"), 49);
  EXPECT_EQ(available(limiter, "user-1", "gpt-4o", "rpm", "team-a"), 500);
  EXPECT_EQ(available(limiter, "user-2", "gpt-4o", "rpm"), 500);  // no state: a full bucket

  const Decision denied = limiter.decide("user-1", "gpt-4o", {{"rpm", 1}});
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.code, Code::rate_exceeded);
  EXPECT_EQ(denied.retry_after, 120'000);
  clock.advance(120'000 - 1);
  EXPECT_FALSE(limiter.decide("user-1", "gpt-4o", {{"rpm", 1}}).allowed);
  clock.advance(1);
  Lease lease = limiter.try_acquire("user-1", "gpt-4o", {{"rpm", 1}, {"rpd", 1}, {"tpm", 15000}});
  ASSERT_TRUE(lease.allowed()) << lease.decision().reason;
  lease.commit();
  clock.advance(60 * kSec);  // rpm and tpm refill; the day's quota does not
  const Decision quota = limiter.decide("user-1", "gpt-4o", {{"rpd", 1}});
  EXPECT_FALSE(quota.allowed);
  EXPECT_EQ(quota.code, Code::window_exceeded);
  EXPECT_EQ(quota.retry_after, kT0 + 86400 * kSec - clock.now());  // the next LA midnight
}

// Verifies the imported configuration is what a Limiter keeping its limits in the store
// (ConfigMode::store, no apply_config) reads: every key resolves to the limits and sources a
// Limiter configured from the file through apply_config resolves, and decides alike.
TEST(Migrate, StoreModeLimiterReadsTheImportedConfiguration) {
  TempDir dir;
  const std::string db = dir.file("admit.db");
  migrate_yaml_to_sqlite(kSample, db);
  const Config config = load_state_file(kSample);
  SqliteStore store(SqliteStoreOptions{.path = db});
  ManualClock clock(kT0);
  Limiter local(store, clock, LimiterOptions{.ns = config.ns});
  apply_config(config, local);
  Limiter shared(store, clock, LimiterOptions{.ns = config.ns, .config = ConfigMode::store});
  for (const char* entity : {"user-1", "team-a", "user-2"}) {
    for (const char* resource : {"gpt-4o", "claude-sonnet-4", "other-model"}) {
      SCOPED_TRACE(std::string(entity) + " on " + resource);
      EXPECT_EQ(shared.resolve(entity, resource), local.resolve(entity, resource));
      const Amounts amounts = {{"rpm", 1}};
      const Decision a = local.decide(entity, resource, amounts);
      const Decision b = shared.decide(entity, resource, amounts);
      EXPECT_EQ(b.allowed, a.allowed);
      EXPECT_EQ(b.retry_after, a.retry_after);
      EXPECT_EQ(b.stats.size(), a.stats.size());
    }
  }
  EXPECT_FALSE(shared.decide("user-1", "gpt-4o", {{"rpm", 1}}).allowed);
  EXPECT_EQ(shared.resources(), (std::vector<std::string>{"claude-sonnet-4", "gpt-4o"}));
}

// Verifies YAML -> SQLite -> YAML -> SQLite keeps every configuration entry and state row, and
// that the exported text is stable (exporting the second database writes the same text).
TEST(Migrate, RoundTripKeepsEntriesAndState) {
  TempDir dir;
  const std::string db1 = dir.file("one.db");
  const std::string yaml = dir.file("one.yaml");
  const std::string db2 = dir.file("two.sqlite");
  const std::string yaml2 = dir.file("two.yml");
  migrate_yaml_to_sqlite(kSample, db1);
  const MigrationSummary out = migrate_sqlite_to_yaml(db1, yaml);
  EXPECT_EQ(out.limit_sets, 4u);
  EXPECT_EQ(out.parents, 1u);
  EXPECT_EQ(out.state_rows, 5u);
  EXPECT_EQ(out.holds, 1u);
  EXPECT_EQ(out.skipped, 0u);
  migrate_yaml_to_sqlite(yaml, db2);
  Db one(db1);
  Db two(db2);
  EXPECT_EQ(one.config(), two.config());
  EXPECT_EQ(one.state(), two.state());
  EXPECT_EQ(one.config().size(), 5u);
  migrate_sqlite_to_yaml(db2, yaml2);
  EXPECT_EQ(read(yaml), read(yaml2));
  EXPECT_NE(read(yaml).find("- {name: tpm, per: minute, limit: 30000}"), std::string::npos)
      << read(yaml);
}

// ------------------------------------------------------------------------ the YAML forms

// Verifies every limit form and crafted names (YAML indicators, "null", "~", "true", a colon)
// survive format_state_file -> parse_state_file exactly, and that the limits the schema cannot
// express (adaptive, a refill period in µs) are refused naming their path.
TEST(Migrate, FormatStateFileRoundTripsEveryForm) {
  Config c;
  c.ns = "tenant:1";
  c.defaults = {Limit::per_second("rps", 0)};  // unlimited
  c.resources = {
      {"gpt-4o",
       {Limit::per_second("a", 5), Limit::per_minute("b", 7, 3), Limit::per_hour("c", 100),
        Limit::per_day("d", 1, 9), Limit::custom("e", 3, 2, std::chrono::milliseconds(1500)),
        Limit::window("f", 10, WindowSpec{WindowUnit::week, "06:30", "Europe/Berlin"}),
        Limit::window("g", 0, WindowSpec{WindowUnit::minute, "00:00", "UTC"}),
        Limit::concurrency("h", 4)}},
      {"null", {}},
  };
  const std::vector<std::string> names = {"~",  "true", "a:b", "#x", "-",  "[y]", "'q\"",
                                          "&a", "*b",   "!c",  "%d", "@e", "x,y", "{z}"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    EntityConfig e;
    e.name = names[i];
    e.parent = i == 0 ? "" : names[i - 1];
    if (i % 2 == 0) e.defaults = LimitList{};
    e.limits = {{"null", {Limit::per_minute("rpm", static_cast<std::int64_t>(i) + 1)}}};
    c.entities.push_back(e);
  }
  // Entities of odd index have no defaults: gpt-4o's limits apply to them.
  c.state.rows = {{"~", "null", "rpm", LimitKind::rate, kT0, 7},
                  {"true", "gpt-4o", "f", LimitKind::window, kT0, 3}};
  c.state.holds = {{"&a", "gpt-4o", "h", ~std::uint64_t{0}, 2, kT0}};
  const std::string text = format_state_file(c);
  const Config back = parse_state_file(text, "formatted");
  EXPECT_EQ(back.ns, c.ns);
  EXPECT_EQ(config_entries(back), config_entries(c)) << text;
  EXPECT_EQ(back.state, c.state) << text;
  EXPECT_EQ(format_state_file(back), text);

  Config adaptive;  // an adaptive limit has a form: its AIMD options and burst
  adaptive.resources = {
      {"m", {Limit::per_second("ok", 1), Limit::adaptive("aimd", {.max_rate = 5}, 2)}}};
  EXPECT_EQ(parse_state_file(format_state_file(adaptive), "formatted").resources,
            adaptive.resources);
  Config micro;
  micro.defaults = {Limit::custom("us", 5, 3, std::chrono::microseconds(1001))};
  ValidationError e = error_of([&] { format_state_file(micro); });
  EXPECT_EQ(e.field(), "defaults[0]");
  EXPECT_NE(e.reason().find("milliseconds"), std::string::npos) << e.what();
}

// ------------------------------------------------------------------------ bad input

// Verifies each bad state file fails with a ValidationError naming the YAML path and
// file:line:col, before any database is created.
TEST(Migrate, BadStateFilesNameTheRecord) {
  TempDir dir;
  const std::string head =
      "resources:\n"
      "  m: [{name: rpm, per: minute, limit: 5}, {name: slots, concurrency: 2}]\n"
      "entities:\n"
      "  vip: {defaults: []}\n"
      "state:\n";
  struct Case {
    std::string records;
    std::string field;
    std::string reason;
    std::string at = {};  // the end of the reason: "/bad.yaml:LINE:COL)"; empty: any line
  };
  const std::vector<Case> cases = {
      {"  - {entity: u, resource: m, limit: rpd, kind: rate, tat_us: 1}\n", "state[0].limit",
       "no limit of that name applies to entity 'u' on resource 'm' (its limits: rpm, slots)",
       "/bad.yaml:6:37)"},
      {"  - {entity: vip, resource: m, limit: rpm, kind: rate, tat_us: 1}\n", "state[0].limit",
       "(it has no limits)"},
      {"  - {entity: u, resource: m, limit: rpm, kind: window, window_end_us: 1, used: 1}\n",
       "state[0].kind", "limit 'rpm' of entity 'u' on resource 'm' is a rate limit",
       "/bad.yaml:6:48)"},
      {"  - {entity: u, resource: m, limit: rpm, kind: rate, tat_us: 1}\n"
       "  - {entity: u, resource: m, limit: rpm, kind: rate, tat_us: 2}\n",
       "state[1]", "duplicate state record (also at state[0])", "/bad.yaml:7:5)"},
      {"  - {entity: u, resource: m, limit: rpm, kind: rate}\n", "state[0].tat_us", "missing"},
      {"  - {entity: u, resource: m, limit: rpm, kind: rate, tat_us: 1, used: 3}\n",
       "state[0].used", "not allowed with kind rate"},
      {"  - {entity: u, resource: m, limit: rpm, kind: rate, tat_us: 1, color: red}\n",
       "state[0].color", "unknown key"},
      {"  - {entity: u, resource: m, limit: rpm, kind: adaptive, tat_us: 1}\n", "state[0].kind",
       "expected rate, window or concurrency"},
      {"  - {entity: u, resource: m, limit: rpm, kind: rate, tat_us: -5}\n", "state[0].tat_us",
       "expected a non-negative integer"},
      {"  - {entity: u, resource: m, limit: slots, kind: concurrency, lease: 1, amount: 0, "
       "expiry_us: 1}\n",
       "state[0].amount", "must be >= 1"},
      {"  - {entity: u, resource: m, limit: slots, kind: concurrency, lease: 18446744073709551616, "
       "amount: 1, expiry_us: 1}\n",
       "state[0].lease", "expected a lease id"},
      {"  - {entity: bad name, resource: m, limit: rpm, kind: rate, tat_us: 1}\n",
       "state[0].entity", "printable ASCII"},
      {"  {entity: u}\n", "state", "expected a list of state records"},
  };
  const std::string yaml = dir.file("bad.yaml");
  const std::string db = dir.file("never.db");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.records);
    write(yaml, head + c.records);
    const ValidationError e = error_of([&] { migrate_yaml_to_sqlite(yaml, db); });
    EXPECT_EQ(e.field(), c.field) << e.what();
    EXPECT_NE(e.reason().find(c.reason), std::string::npos) << e.what();
    EXPECT_NE(e.reason().find(c.at.empty() ? "/bad.yaml:" : c.at), std::string::npos) << e.what();
    EXPECT_FALSE(std::filesystem::exists(db));
  }
  // The config part is admitd's loader, with its own messages.
  write(yaml, "resources:\n  m: [{name: rpm, per: fortnight, limit: 5}]\n");
  ValidationError e = error_of([&] { migrate_yaml_to_sqlite(yaml, db); });
  EXPECT_EQ(e.field(), "resources.m[0].per");
  EXPECT_NE(e.reason().find("/bad.yaml:2:24)"), std::string::npos) << e.what();
  write(yaml, "state: [\n");
  e = error_of([&] { migrate_yaml_to_sqlite(yaml, db); });
  EXPECT_NE(e.reason().find("YAML syntax error"), std::string::npos) << e.what();
  e = error_of([&] { migrate_yaml_to_sqlite(dir.file("missing.yaml"), db); });
  EXPECT_EQ(e.value(), dir.file("missing.yaml"));
  EXPECT_FALSE(std::filesystem::exists(db));
  // admitd's config files stay without state.
  e = error_of([&] { parse_config("state: []\n", "admitd.yaml"); });
  EXPECT_EQ(e.field(), "state");
  EXPECT_NE(e.reason().find("unknown key"), std::string::npos) << e.what();
}

// Verifies an import replaces the namespace's earlier configuration and state (and only that
// namespace's), and that a database of a newer schema is refused (IncompatibleSchema).
TEST(Migrate, ImportReplacesTheNamespaceOnly) {
  TempDir dir;
  const std::string db = dir.file("admit.db");
  {
    Db d(db);
    d.store.put_config(d.space, {ConfigKind::resource, "", "old-model"}, "[]");
    d.store.import_state(d.space, {{{"x", "old-model", "rpm", LimitKind::rate, kT0, 0}}, {}});
    Db other(db, "other");
    other.store.put_config(other.space, {ConfigKind::parent, "a", ""}, "b");
  }
  std::vector<std::string> lines;
  migrate_yaml_to_sqlite(kSample, db, [&](const std::string& l) { lines.push_back(l); });
  EXPECT_EQ(lines.back(), "erased 1 earlier configuration entry not in the file");
  Db d(db);
  EXPECT_EQ(d.config().size(), 5u);
  EXPECT_EQ(d.state().rows.size(), 5u);
  Db other(db, "other");
  EXPECT_EQ(other.config(), (std::vector<ConfigEntry>{{ConfigKind::parent, "a", "", "b"}}));

  const std::string newer = dir.file("newer.db");
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(newer.c_str(), &raw), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(raw, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(raw);
  EXPECT_THROW(migrate_yaml_to_sqlite(kSample, newer), IncompatibleSchema);
  EXPECT_THROW(migrate_sqlite_to_yaml(newer, dir.file("newer.yaml")), IncompatibleSchema);
  EXPECT_FALSE(std::filesystem::exists(dir.file("newer.yaml")));
}

// Verifies the export's refusals: a missing database (not created), an unknown namespace
// (naming the known ones), an existing YAML file without force (left as it was; overwritten
// with force), and a stored limit the schema cannot express (nothing written). State of limits
// the configuration does not give its key is skipped with a warning.
TEST(Migrate, ExportRefusalsAndSkippedRows) {
  TempDir dir;
  const std::string db = dir.file("admit.db");
  const std::string yaml = dir.file("out.yaml");
  ValidationError e = error_of([&] { migrate_sqlite_to_yaml(db, yaml); });
  EXPECT_EQ(e.field(), "database");
  EXPECT_FALSE(std::filesystem::exists(db));

  migrate_yaml_to_sqlite(kSample, db);
  e = error_of([&] { migrate_sqlite_to_yaml(db, yaml, {.ns = "prod"}); });
  EXPECT_EQ(e.field(), "namespace");
  EXPECT_NE(e.reason().find("(its namespaces: default)"), std::string::npos) << e.what();

  write(yaml, "mine\n");
  e = error_of([&] { migrate_sqlite_to_yaml(db, yaml); });
  EXPECT_EQ(e.field(), "output file");
  EXPECT_NE(e.reason().find("--force"), std::string::npos) << e.what();
  EXPECT_EQ(read(yaml), "mine\n");
  migrate_sqlite_to_yaml(db, yaml, {.force = true});
  EXPECT_EQ(load_state_file(yaml).state, Db(db).state());

  {
    Db d(db);
    UsageState st = d.state();
    st.rows.push_back({"user-1", "gpt-4o", "learned", LimitKind::rate, kT0, 0});
    st.rows.push_back({"user-1", "gpt-4o", "rpm", LimitKind::adaptive, kT0, 0});
    d.store.import_state(d.space, st);
  }
  std::vector<std::string> lines;
  const MigrationSummary s = migrate_sqlite_to_yaml(
      db, yaml, {.force = true}, [&](const std::string& l) { lines.push_back(l); });
  EXPECT_EQ(s.skipped, 2u);
  EXPECT_EQ(s.state_rows, 5u);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[1].find("skipped the rate state of user-1 on gpt-4o: no configured limit "
                          "'learned'"),
            std::string::npos)
      << lines[1];
  EXPECT_EQ(lines[2],
            "warning: skipped the adaptive state of user-1 on gpt-4o: no configured limit 'rpm' "
            "of that kind applies to it");

  {
    Db d(db);
    d.store.put_config(d.space, {ConfigKind::entity, "user-1", "gpt-4o"},
                       encode_limits(std::vector<Limit>{
                           Limit::custom("us", 5, 3, std::chrono::microseconds(1001))}));
  }
  const std::string before = read(yaml);
  e = error_of([&] { migrate_sqlite_to_yaml(db, yaml, {.force = true}); });
  EXPECT_EQ(e.field(), "entities.user-1.limits.gpt-4o[0]");
  EXPECT_EQ(read(yaml), before);
  {
    Db d(db);
    d.store.put_config(d.space, {ConfigKind::resource, "", "broken"}, "not json");
  }
  e = error_of([&] { migrate_sqlite_to_yaml(db, yaml, {.force = true}); });
  EXPECT_EQ(e.field(), "config entry resource broken");
  EXPECT_NE(e.reason().find(db), std::string::npos) << e.what();
}

}  // namespace
}  // namespace admit::service
