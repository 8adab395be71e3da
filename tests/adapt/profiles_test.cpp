// Provider profiles: the shipped profiles/<provider>.yaml files, the loader's validation, and
// add_provider() on a real Limiter driven by a ManualClock.
#include "admit/adapt/profiles.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"

namespace admit {
namespace {

namespace fs = std::filesystem;

constexpr Micros kStart = 1'700'000'000'000'000;  // 2023-11-14T22:13:20Z

/// try_acquire + commit (a dropped Lease would refund what it took).
Decision take(Limiter& limiter, std::string_view resource, const Amounts& amounts) {
  Lease l = limiter.try_acquire("app", resource, amounts);
  Decision d = l.decision();
  l.commit();
  return d;
}

/// A fresh directory per test (ctest runs test cases in parallel processes).
class ProfilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("admit_profiles_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

  /// A valid file around one model's quota line, e.g. "{rpm: 5}".
  fs::path with_quota(const std::string& quota) const {
    return write("p.yaml",
                 "provider: demo\nsource: test\nretrieved: 2026-11-24\n"
                 "tiers:\n  tier-1:\n    m: " +
                     quota + "\n");
  }

  /// Loads `file` expecting a ValidationError; checks its field, value and that the message
  /// names the file, the path and the value.
  static void expect_error(const fs::path& file, const std::string& field, const std::string& value,
                           const std::string& why_part = "") {
    try {
      (void)load_profile(file, "tier-1");
      ADD_FAILURE() << "no error for " << file;
    } catch (const ValidationError& e) {
      const std::string what = e.what();
      EXPECT_EQ(e.field(), field) << what;
      EXPECT_EQ(e.value(), value) << what;
      EXPECT_NE(what.find(file.filename().string()), std::string::npos) << what;
      EXPECT_NE(what.find(field), std::string::npos) << what;
      EXPECT_NE(what.find("'" + value + "'"), std::string::npos) << what;
      if (!why_part.empty()) {
        EXPECT_NE(what.find(why_part), std::string::npos) << what;
      }
    }
  }

  fs::path dir_;
};

// ----------------------------------------------------------------- shipped profiles

// Verifies every shipped profile loads for every tier it lists, names its provider, source and
// date, and that every model converts to valid limits that a real Limiter accepts.
TEST_F(ProfilesTest, ShippedProfilesLoadForEveryTierAndConvert) {
  const std::vector<std::string> providers = profile_providers(default_profiles_dir());
  for (const char* expected : {"anthropic", "gemini", "groq", "mistral", "openai"}) {
    EXPECT_NE(std::find(providers.begin(), providers.end(), expected), providers.end())
        << expected << " missing from " << default_profiles_dir();
  }
  const std::set<std::string> names{"rpm", "tpm", "rpd", "itpm", "otpm"};
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
  for (const std::string& provider : providers) {
    const fs::path file = default_profiles_dir() / (provider + ".yaml");
    const std::vector<std::string> tiers = profile_tiers(file);
    ASSERT_FALSE(tiers.empty()) << provider;
    for (const std::string& tier : tiers) {
      SCOPED_TRACE(provider + " / " + tier);
      const ProviderProfile p = load_profile_by_name(provider, tier, default_profiles_dir());
      EXPECT_EQ(p.provider, provider);
      EXPECT_EQ(p.tier, tier);
      EXPECT_FALSE(p.source.empty());
      EXPECT_EQ(p.retrieved.size(), 10u);
      EXPECT_FALSE(p.day_time_zone.empty());
      ASSERT_FALSE(p.models.empty());
      for (const auto& [model, quota] : p.models) {
        const std::vector<Limit> limits = to_limits(quota, p.day_time_zone);
        EXPECT_FALSE(limits.empty()) << model << " has no limit at all";
        for (const Limit& l : limits) {
          EXPECT_TRUE(names.count(l.name())) << model << ": " << l.name();
          EXPECT_FALSE(l.unlimited()) << model << ": " << l.describe();
          if (l.name() == "rpd") {
            EXPECT_EQ(l.kind(), LimitKind::window);
            EXPECT_EQ(l.window_spec().time_zone, p.day_time_zone);
          } else {
            EXPECT_EQ(l.kind(), LimitKind::rate);
            EXPECT_EQ(l.refill_period(), kMicrosPerMinute);
          }
        }
      }
      EXPECT_NO_THROW(add_provider(limiter, p));
    }
  }
}

// Verifies known published numbers survive the file -> ProviderProfile -> Limit round trip
// (Gemini free gemini-2.5-pro 5 RPM / 250,000 TPM / 100 RPD reset in Pacific time; OpenAI
// tier-1 gpt-4o; Anthropic tier-1 Sonnet input/output token limits).
TEST_F(ProfilesTest, KnownValuesRoundTrip) {
  const ProviderProfile g = load_profile_by_name("gemini", "free", default_profiles_dir());
  EXPECT_EQ(g.day_time_zone, "America/Los_Angeles");
  ASSERT_TRUE(g.models.count("gemini-2.5-pro"));
  EXPECT_EQ(g.models.at("gemini-2.5-pro"), (ModelQuota{.rpm = 5, .tpm = 250000, .rpd = 100}));
  const std::vector<Limit> gl = to_limits(g.models.at("gemini-2.5-pro"), g.day_time_zone);
  ASSERT_EQ(gl.size(), 3u);
  EXPECT_EQ(gl[0], Limit::per_minute("rpm", 5));
  EXPECT_EQ(gl[1], Limit::per_minute("tpm", 250000));
  EXPECT_EQ(gl[2], Limit::daily("rpd", 100, "00:00", "America/Los_Angeles"));

  const ProviderProfile o = load_profile(default_profiles_dir() / "openai.yaml", "tier-1");
  EXPECT_EQ(o.models.at("gpt-4o"), (ModelQuota{.rpm = 500, .tpm = 30000}));

  const ProviderProfile a = load_profile_by_name("anthropic", "tier-1", default_profiles_dir());
  EXPECT_EQ(a.models.at("claude-sonnet-4"), (ModelQuota{.rpm = 50, .itpm = 30000, .otpm = 8000}));
}

// ----------------------------------------------------------------- to_limits

// Verifies to_limits names each limit after its field, skips zeros (0 = unlimited) or keeps
// them as unlimited limits on request, makes rpd a calendar day in the given zone, and rejects
// negative counts and unknown zones.
TEST_F(ProfilesTest, ToLimitsSkipsZerosAndValidates) {
  EXPECT_TRUE(to_limits(ModelQuota{}).empty());
  const std::vector<Limit> l =
      to_limits(ModelQuota{.rpm = 10, .rpd = 5, .otpm = 7}, "Europe/Paris");
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0], Limit::per_minute("rpm", 10));
  EXPECT_EQ(l[1], Limit::daily("rpd", 5, "00:00", "Europe/Paris"));
  EXPECT_EQ(l[2], Limit::per_minute("otpm", 7));
  EXPECT_EQ(to_limits(ModelQuota{.rpd = 5})[0].window_spec().time_zone, "UTC");

  const std::vector<Limit> all =
      to_limits(ModelQuota{.rpm = 10}, "Europe/Paris", ZeroQuota::unlimited);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[0], Limit::per_minute("rpm", 10));
  EXPECT_EQ(all[1], Limit::per_minute("tpm", 0));
  EXPECT_EQ(all[2], Limit::daily("rpd", 0, "00:00", "Europe/Paris"));
  EXPECT_EQ(all[3], Limit::per_minute("itpm", 0));
  EXPECT_EQ(all[4], Limit::per_minute("otpm", 0));
  for (std::size_t i = 1; i < all.size(); ++i) EXPECT_TRUE(all[i].unlimited()) << i;

  try {
    (void)to_limits(ModelQuota{.tpm = -1});
    ADD_FAILURE() << "negative tpm accepted";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "tpm");
    EXPECT_EQ(e.value(), "-1");
  }
  EXPECT_THROW((void)to_limits(ModelQuota{.rpd = 1}, "Mars/Olympus"), ValidationError);
  EXPECT_NO_THROW((void)to_limits(ModelQuota{.rpm = 1}, "Mars/Olympus"));  // zone unused
}

// ----------------------------------------------------------------- add_provider

// Verifies add_provider on a real Limiter (MemoryStore + ManualClock) enforces a model's RPM:
// the (rpm+1)-th request within the minute is denied by "rpm", one more is admitted one
// emission interval (60 s / rpm) later, and TPM is enforced on another model.
TEST_F(ProfilesTest, AddProviderDeniesRequestBeyondRpm) {
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
  const ProviderProfile p = load_profile_by_name("gemini", "free", default_profiles_dir());
  add_provider(limiter, p);

  const ModelQuota q = p.models.at("gemini-2.5-pro");
  const Amounts one{{"rpm", 1}, {"rpd", 1}, {"tpm", 100}};
  for (std::int64_t i = 0; i < q.rpm; ++i) {
    ASSERT_TRUE(take(limiter, "gemini-2.5-pro", one).allowed) << i;
  }
  const Decision d = take(limiter, "gemini-2.5-pro", one);
  EXPECT_FALSE(d.allowed);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].limit, "rpm");
  EXPECT_EQ(d.retry_after, kMicrosPerMinute / q.rpm);

  clock.advance(kMicrosPerMinute / q.rpm);
  EXPECT_TRUE(take(limiter, "gemini-2.5-pro", one).allowed);
  EXPECT_FALSE(take(limiter, "gemini-2.5-pro", one).allowed);

  // Another model of the same profile has its own buckets; its TPM bounds one request's tokens.
  const ModelQuota f = p.models.at("gemini-2.5-flash");
  EXPECT_TRUE(take(limiter, "gemini-2.5-flash", {{"rpm", 1}, {"tpm", f.tpm}}).allowed);
  const Decision t = take(limiter, "gemini-2.5-flash", {{"rpm", 1}, {"tpm", 1}});
  EXPECT_FALSE(t.allowed);
  ASSERT_EQ(t.violations.size(), 1u);
  EXPECT_EQ(t.violations[0].limit, "tpm");
}

// Verifies add_provider replaces a model's earlier set_limits wholesale (no leftover limit),
// leaves models outside the profile alone, gives unpublished fields unlimited limits so one
// Amounts shape fits every model, and makes an all-zero quota fully unlimited.
TEST_F(ProfilesTest, AddProviderOverwritesEarlierLimits) {
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
  limiter.set_limits("gpt-4o", {Limit::per_minute("rpm", 1), Limit::per_minute("custom", 3)});
  limiter.set_limits("my-model", {Limit::per_minute("rpm", 2)});

  add_provider(limiter, load_profile_by_name("openai", "tier-1", default_profiles_dir()));
  const auto r = limiter.resolve("app", "gpt-4o");
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r[0].first, Limit::per_minute("rpm", 500));
  EXPECT_EQ(r[1].first, Limit::per_minute("tpm", 30000));
  for (std::size_t i = 2; i < r.size(); ++i) {
    EXPECT_TRUE(r[i].first.unlimited()) << r[i].first.describe();
    EXPECT_NE(r[i].first.name(), "custom");
  }
  const Amounts all{{"rpm", 1}, {"rpd", 1}, {"tpm", 10}, {"itpm", 5}, {"otpm", 5}};
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(take(limiter, "gpt-4o", all).allowed);  // old rpm was 1
  EXPECT_EQ(take(limiter, "gpt-4o", {{"custom", 1}}).code, Code::unknown_limit);

  ASSERT_EQ(limiter.resolve("app", "my-model").size(), 1u);
  EXPECT_EQ(limiter.resolve("app", "my-model")[0].first, Limit::per_minute("rpm", 2));

  ProviderProfile open;
  open.provider = "local";
  open.models["llama"] = ModelQuota{};
  limiter.set_limits("llama", {Limit::per_minute("rpm", 1)});
  add_provider(limiter, open);
  for (const auto& [limit, source] : limiter.resolve("app", "llama")) {
    EXPECT_TRUE(limit.unlimited()) << limit.describe();
  }
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(take(limiter, "llama", all).allowed);
}

// Verifies add_provider validates every model before changing any: a bad model name leaves the
// earlier limits in place.
TEST_F(ProfilesTest, AddProviderIsAllOrNothingOnInvalidInput) {
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
  limiter.set_limits("a", {Limit::per_minute("rpm", 1)});
  ProviderProfile p;
  p.models["a"] = ModelQuota{.rpm = 9};
  p.models["b c"] = ModelQuota{.rpm = 9};
  EXPECT_THROW(add_provider(limiter, p), ValidationError);
  EXPECT_EQ(limiter.resolve("app", "a")[0].first, Limit::per_minute("rpm", 1));
}

// ----------------------------------------------------------------- bad files

// Verifies bad counts give a ValidationError naming the file, the YAML path and the value:
// negative, fractional, textual, null, octal-looking, out of range and beyond 2^53.
TEST_F(ProfilesTest, BadCountsNamePathAndValue) {
  expect_error(with_quota("{rpm: -5}"), "tiers.tier-1.m.rpm", "-5", "negative");
  expect_error(with_quota("{rpm: 1.5}"), "tiers.tier-1.m.rpm", "1.5", "integer");
  expect_error(with_quota("{tpm: lots}"), "tiers.tier-1.m.tpm", "lots", "integer");
  expect_error(with_quota("{rpd: ~}"), "tiers.tier-1.m.rpd", "null", "integer");
  expect_error(with_quota("{rpm: 0500}"), "tiers.tier-1.m.rpm", "0500", "leading zeros");
  expect_error(with_quota("{rpm: 99999999999999999999}"), "tiers.tier-1.m.rpm",
               "99999999999999999999", "too large");
  expect_error(with_quota("{otpm: 9007199254740993}"), "tiers.tier-1.m.otpm", "9007199254740993");
  expect_error(with_quota("{rpm: -1e3}"), "tiers.tier-1.m.rpm", "-1e3");
}

// Verifies unknown keys and wrong shapes are errors at their path: an unknown quota key, an
// unknown top-level key, a quota that is not a mapping, a tier without models.
TEST_F(ProfilesTest, UnknownKeysAndShapesAreErrors) {
  expect_error(with_quota("{rpm: 5, rpmm: 5}"), "tiers.tier-1.m.rpmm", "rpmm", "unknown key");
  expect_error(with_quota("5"), "tiers.tier-1.m", "5", "mapping");
  expect_error(write("top.yaml",
                     "provider: demo\nsource: s\nretrieved: 2026-11-24\nextra: 1\n"
                     "tiers:\n  tier-1:\n    m: {rpm: 1}\n"),
               "extra", "extra", "unknown key");
  expect_error(write("empty_tier.yaml",
                     "provider: demo\nsource: s\nretrieved: 2026-11-24\ntiers:\n  tier-1: {}\n"),
               "tiers.tier-1", "{...}", "at least one model");
  expect_error(write("dup.yaml",
                     "provider: demo\nsource: s\nretrieved: 2026-11-24\n"
                     "tiers:\n  tier-1:\n    m: {rpm: 1}\n    m: {rpm: 2}\n"),
               "tiers.tier-1.m", "m", "duplicate");
  expect_error(write("name.yaml",
                     "provider: demo\nsource: s\nretrieved: 2026-11-24\n"
                     "tiers:\n  tier-1:\n    \"gpt 4o\": {rpm: 1}\n"),
               "tiers.tier-1.gpt 4o", "gpt 4o", "printable");
}

// Verifies the header fields are checked: missing provider, bad date, unknown time zone,
// malformed provider name, and a YAML syntax error reported with the file.
TEST_F(ProfilesTest, BadHeaderFieldsAreErrors) {
  const std::string tiers = "tiers:\n  tier-1:\n    m: {rpm: 1}\n";
  expect_error(write("noprov.yaml", "source: s\nretrieved: 2026-11-24\n" + tiers), "provider", "",
               "missing");
  expect_error(write("date.yaml", "provider: d\nsource: s\nretrieved: 2026-13-01\n" + tiers),
               "retrieved", "2026-13-01", "YYYY-MM-DD");
  expect_error(write("tz.yaml",
                     "provider: d\nsource: s\nretrieved: 2026-11-24\n"
                     "day_time_zone: Mars/Olympus\n" +
                         tiers),
               "day_time_zone", "Mars/Olympus", "time zone");
  expect_error(write("prov.yaml", "provider: Open AI\nsource: s\nretrieved: 2026-11-24\n" + tiers),
               "provider", "Open AI");
  const fs::path syntax = write("syntax.yaml", "provider: [unclosed\n");
  try {
    (void)load_profile(syntax, "tier-1");
    ADD_FAILURE() << "syntax error accepted";
  } catch (const ValidationError& e) {
    EXPECT_NE(std::string(e.what()).find("syntax.yaml"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("YAML syntax error"), std::string::npos) << e.what();
  }
}

// Verifies a missing file is a ValidationError naming the path.
TEST_F(ProfilesTest, MissingFileIsAnError) {
  try {
    (void)load_profile(dir_ / "absent.yaml", "tier-1");
    ADD_FAILURE() << "missing file accepted";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.value(), (dir_ / "absent.yaml").string());
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos) << e.what();
  }
}

// ----------------------------------------------------------------- unknown provider / tier

// Verifies an unknown tier is a ValidationError (field "tier") listing the file's tiers.
TEST_F(ProfilesTest, UnknownTierListsKnownTiers) {
  try {
    (void)load_profile_by_name("openai", "tier-9", default_profiles_dir());
    ADD_FAILURE() << "unknown tier accepted";
  } catch (const ValidationError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.field(), "tier");
    EXPECT_EQ(e.value(), "tier-9");
    EXPECT_NE(what.find("openai.yaml"), std::string::npos) << what;
    EXPECT_NE(what.find("free, tier-1, tier-2, tier-3, tier-4, tier-5"), std::string::npos) << what;
  }
}

// Verifies an unknown or malformed provider is a ValidationError (field "provider") listing the
// providers found, and that a file naming another provider is refused.
TEST_F(ProfilesTest, UnknownProviderListsKnownProviders) {
  try {
    (void)load_profile_by_name("nope", "free", default_profiles_dir());
    ADD_FAILURE() << "unknown provider accepted";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "provider");
    EXPECT_EQ(e.value(), "nope");
    EXPECT_NE(std::string(e.what()).find("anthropic, gemini, groq, mistral, openai"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)load_profile_by_name("../profiles/openai", "free", default_profiles_dir()),
               ValidationError);
  EXPECT_THROW((void)load_profile_by_name("", "free", default_profiles_dir()), ValidationError);

  write("foo.yaml",
        "provider: bar\nsource: s\nretrieved: 2026-11-24\ntiers:\n  free:\n    m: {rpm: 1}\n");
  try {
    (void)load_profile_by_name("foo", "free", dir_);
    ADD_FAILURE() << "mismatched provider accepted";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "provider");
    EXPECT_EQ(e.value(), "bar");
  }
  EXPECT_EQ(profile_providers(dir_), std::vector<std::string>{"foo"});
  EXPECT_TRUE(profile_providers(dir_ / "absent").empty());
}

// Verifies default_profiles_dir() prefers a non-empty $ADMIT_PROFILES_DIR and otherwise points
// at the shipped profiles.
TEST_F(ProfilesTest, DefaultProfilesDirHonoursEnvironment) {
  const char* old = std::getenv("ADMIT_PROFILES_DIR");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;

  ::setenv("ADMIT_PROFILES_DIR", dir_.c_str(), 1);
  EXPECT_EQ(default_profiles_dir(), dir_);
  ::setenv("ADMIT_PROFILES_DIR", "", 1);
  EXPECT_TRUE(fs::is_regular_file(default_profiles_dir() / "openai.yaml"));
  ::unsetenv("ADMIT_PROFILES_DIR");
  EXPECT_TRUE(fs::is_regular_file(default_profiles_dir() / "openai.yaml"));

  if (saved) ::setenv("ADMIT_PROFILES_DIR", saved->c_str(), 1);
}

}  // namespace
}  // namespace admit
