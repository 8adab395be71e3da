// RedisStore beyond the conformance suite: key layout and escaping, cluster placement, the
// server's clock, the local over-limit cache, leases reclaimed after their holder process is
// killed, durable leases taken up and ended across stores, and fleet exactness (4 processes x 2
// threads on one limit). Real redis-servers from scripts/test (ADMIT_TEST_REDIS_URL,
// ADMIT_TEST_REDIS_CLUSTER); other processes are tests/store/redis_worker.cpp.
#include "admit/store/redis_store.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <future>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "support/redis_env.hpp"
#include "support/test_support.hpp"

extern char** environ;

namespace admit {
namespace {

using test::cat;
using test::kStart;
constexpr Micros kSec = kMicrosPerSecond;

/// A worker process (tests/store/redis_worker.cpp) whose stdout the test reads; killed with
/// SIGKILL when the guard goes out of scope, unless it already ended.
class Worker {
 public:
  explicit Worker(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> all = {ADMIT_REDIS_WORKER};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
      close(fds[0]);
      throw std::runtime_error(cat("posix_spawn ", ADMIT_REDIS_WORKER, " failed: ", rc));
    }
    out_ = fdopen(fds[0], "r");
  }
  ~Worker() {
    kill_now();
    if (out_ != nullptr) fclose(out_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// The next line the worker printed ("" at end of output).
  std::string line() {
    char buf[256];
    if (fgets(buf, sizeof buf, out_) == nullptr) return "";
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  void kill_now() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  /// Waits for the worker to exit; @return its exit status.
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

/// Unique per test and process: parallel ctest processes share the servers.
std::string unique_prefix() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return cat("admit-test/", info->name(), "/", ::getpid());
}

class RedisStoreTest : public ::testing::TestWithParam<bool> {  // param: cluster
 protected:
  void SetUp() override {
    std::string why;
    auto c = test::redis_options(GetParam(), why);
    if (!c) {
      if (test::redis_required()) FAIL() << why << " and ADMIT_REQUIRE_REDIS=1";
      GTEST_SKIP() << why;
    }
    client_ = *c;
    server_ =
        GetParam() ? *test::env("ADMIT_TEST_REDIS_CLUSTER") : *test::env("ADMIT_TEST_REDIS_URL");
    prefix_ = unique_prefix();
  }
  void TearDown() override {
    for (auto& s : stores_) s->reset_namespace(s->open_namespace("workers"));
    for (auto& s : stores_) s->reset_namespace(s->open_namespace("t"));
  }

  RedisStore& make(bool server_time, bool deny_cache = true) {
    RedisStoreOptions o;
    o.client = client_;
    o.prefix = prefix_;
    o.server_time = server_time;
    o.deny_cache = deny_cache;
    return *stores_.emplace_back(std::make_unique<RedisStore>(o));
  }

  redis::ClientOptions client_;
  std::string server_;
  std::string prefix_;
  std::vector<std::unique_ptr<RedisStore>> stores_;
};

// Verifies the key layout: parts percent-encoded (crafted ids cannot collide or break out of
// the hash tag), the tag exactly "{namespace:group}".
TEST_P(RedisStoreTest, KeysAreEscapedAndTaggedByNamespaceAndGroup) {
  RedisStore& s = make(false);
  EXPECT_EQ(s.key_of("ns", "org", KeyParts{"user-1", "gpt-4o"}),
            prefix_ + ":{ns:org}:gpt-4o:user-1");
  EXPECT_EQ(s.key_of("n:s", "o}{g", KeyParts{"a b", "r*?"}),
            prefix_ + ":{n%3As:o%7D%7Bg}:r%2A%3F:a%20b");
  EXPECT_NE(s.key_of("a", "g", KeyParts{"b:c", "r"}), s.key_of("a:b", "g", KeyParts{"c", "r"}));
  EXPECT_NE(s.key_of("a", "g", KeyParts{"x", "r:y"}), s.key_of("a", "g", KeyParts{"y", "r:x"}));
  // Same group: same slot, whatever the entity and resource; groups spread over slots.
  const auto slot = redis::key_slot(s.key_of("ns", "org", KeyParts{"u1", "m1"}));
  EXPECT_EQ(redis::key_slot(s.key_of("ns", "org", KeyParts{"u2", "m2"})), slot);
  std::set<std::uint16_t> slots;
  for (int i = 0; i < 64; ++i) {
    slots.insert(redis::key_slot(s.key_of("ns", cat("org-", i), KeyParts{"u", "m"})));
  }
  EXPECT_GT(slots.size(), 50u);
  // A durable lease's record: the same slot as its group's usage; no usage key can name it
  // ('#' is encoded in every part), and the usage-key pattern of prune and size skips it.
  EXPECT_EQ(s.lease_key_of("ns", "org", 42), prefix_ + ":{ns:org}#lease:42");
  EXPECT_EQ(redis::key_slot(s.lease_key_of("ns", "org", 42)), slot);
  EXPECT_EQ(s.key_of("ns", "org}#lease:42", KeyParts{"#lease:42", "#"}),
            prefix_ + ":{ns:org%7D%23lease%3A42}:%23:%23lease%3A42");
  EXPECT_EQ(s.lease_key_of("n:s", "o}#g", 7), prefix_ + ":{n%3As:o%7D%23g}#lease:7");
}

// The key-part encoder of versions before Boost.URL encoded the parts (kept verbatim as the
// reference): every byte but [A-Za-z0-9._~@/+=-] as "%XX", upper-case hex.
std::string old_encode_part(std::string_view part) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : part) {
    const auto c = static_cast<unsigned char>(ch);
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '~' || c == '@' || c == '/' || c == '+' ||
                      c == '=' || c == '-';
    if (safe) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string old_key_of(const std::string& prefix, std::string_view ns, std::string_view group,
                       std::string_view entity, std::string_view resource) {
  return prefix + ":{" + old_encode_part(ns) + ":" + old_encode_part(group) +
         "}:" + old_encode_part(resource) + ":" + old_encode_part(entity);
}

// Verifies that key names are byte for byte those of earlier versions (whose stored state and
// configuration must be found again): every byte value, all of them at once, strings
// captured from the earlier encoder, and random strings. Needs no server.
TEST(RedisStoreKeys, EncodingIsUnchangedFromEarlierVersions) {
  RedisStoreOptions o;
  o.client.seeds = {redis::Endpoint{"127.0.0.1", 1}};  // nothing connects
  o.prefix = "p";
  RedisStore s(o);
  std::string all;
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    all += one;
    ASSERT_EQ(s.key_of(one, one, KeyParts{one, one}), old_key_of("p", one, one, one, one))
        << "byte " << b;
    ASSERT_EQ(s.config_key_of(one), "p:{" + old_encode_part(one) + "}") << "byte " << b;
  }
  // Captured from the earlier encoder.
  EXPECT_EQ(
      s.config_key_of(all),
      "p:{%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14%15%16%17%18%19%1A%1B"
      "%1C%1D%1E%1F%20%21%22%23%24%25%26%27%28%29%2A+%2C-./0123456789%3A%3B%3C=%3E%3F@ABCDEFGHI"
      "JKLMNOPQRSTUVWXYZ%5B%5C%5D%5E_%60abcdefghijklmnopqrstuvwxyz%7B%7C%7D~%7F%80%81%82%83%84"
      "%85%86%87%88%89%8A%8B%8C%8D%8E%8F%90%91%92%93%94%95%96%97%98%99%9A%9B%9C%9D%9E%9F%A0%A1"
      "%A2%A3%A4%A5%A6%A7%A8%A9%AA%AB%AC%AD%AE%AF%B0%B1%B2%B3%B4%B5%B6%B7%B8%B9%BA%BB%BC%BD%BE"
      "%BF%C0%C1%C2%C3%C4%C5%C6%C7%C8%C9%CA%CB%CC%CD%CE%CF%D0%D1%D2%D3%D4%D5%D6%D7%D8%D9%DA%DB"
      "%DC%DD%DE%DF%E0%E1%E2%E3%E4%E5%E6%E7%E8%E9%EA%EB%EC%ED%EE%EF%F0%F1%F2%F3%F4%F5%F6%F7%F8"
      "%F9%FA%FB%FC%FD%FE%FF}");
  EXPECT_EQ(s.key_of("\xC3\x9Cn\xC3\xAF"
                     "c\xC3\xB8"
                     "d\xC3\xA9 \xE2\x82\xAC",
                     "a%2Fb%", KeyParts{"user@example.com/+=-_.~", " \t\r\n:{}[]*?\\\"'"}),
            "p:{%C3%9Cn%C3%AFc%C3%B8d%C3%A9%20%E2%82%AC:a%252Fb%25}:"
            "%20%09%0D%0A%3A%7B%7D%5B%5D%2A%3F%5C%22%27:user@example.com/+=-_.~");
  EXPECT_EQ(s.key_of("", "", KeyParts{"", ""}), "p:{:}::");
  // Random strings: every byte value, and mostly-safe text.
  constexpr unsigned seed = 13;  // fixed: a failure can be replayed
  std::printf("EncodingIsUnchangedFromEarlierVersions: seed %u\n", seed);
  std::mt19937 rng(seed);
  const std::string_view text = "abcXYZ019._~@/+=-:{}% *?";
  for (int i = 0; i < 2000; ++i) {
    std::string part[4];
    for (auto& p : part) {
      const std::size_t n = rng() % 24;
      for (std::size_t j = 0; j < n; ++j) {
        p += i % 2 == 0 ? static_cast<char>(rng() % 256) : text[rng() % text.size()];
      }
    }
    ASSERT_EQ(s.key_of(part[0], part[1], KeyParts{part[2], part[3]}),
              old_key_of("p", part[0], part[1], part[2], part[3]))
        << "seed " << seed << ", string " << i;
  }
}

// Verifies a Limiter over RedisStore keeps a parent chain atomic across entities (one slot per
// organisation, on the cluster too) and that organisations are independent.
TEST_P(RedisStoreTest, ParentChainsAcrossOrganisationsThroughTheLimiter) {
  RedisStore& s = make(true);
  SystemClock clock;
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("m", {Limit::per_day("rpd", 3)});
  for (int org = 0; org < 8; ++org) {
    lim.set_parent(cat("user-a-", org), cat("org-", org));
    lim.set_parent(cat("user-b-", org), cat("org-", org));
  }
  for (int org = 0; org < 8; ++org) {
    const std::string a = cat("user-a-", org);
    const std::string b = cat("user-b-", org);
    EXPECT_TRUE(test::take(lim, a, "m", {{"rpd", 1}}).allowed);
    EXPECT_TRUE(test::take(lim, b, "m", {{"rpd", 2}}).allowed);
    const Decision d = test::take(lim, a, "m", {{"rpd", 1}});  // the org has none left
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(test::available(lim, a, "m", "rpd"), 2);
    EXPECT_EQ(test::available(lim, a, "m", "rpd", cat("org-", org)), 0);
  }
}

// Verifies decisions use the server's clock: a caller whose clock is years off still gets exact
// windows (the store corrects its estimate once and retries) and keys that expire when idle.
TEST_P(RedisStoreTest, ServerTimeIgnoresTheCallersClock) {
  RedisStore& s = make(true);
  ManualClock far_past(kStart - 400 * kMicrosPerDay);  // ~2022
  Limiter lim(s, far_past, LimiterOptions{.ns = "t"});
  lim.set_limits("m", {Limit::per_minute("rpm", 2), Limit::daily("rpd", 5)});
  EXPECT_TRUE(test::take(lim, "u", "m", {{"rpm", 1}, {"rpd", 1}}).allowed);
  EXPECT_TRUE(test::take(lim, "u", "m", {{"rpm", 1}, {"rpd", 1}}).allowed);
  const Decision d = test::take(lim, "u", "m", {{"rpm", 1}, {"rpd", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_GT(d.retry_after, 0);
  EXPECT_LE(d.retry_after, 30 * kSec);     // rpm: 30 s per unit, by the server's clock
  EXPECT_GE(s.stats().clock_retries, 1u);  // the window bounds were re-aimed once
  EXPECT_EQ(test::available(lim, "u", "m", "rpd"), 3);
  // The hash expires by itself (PEXPIREAT at its latest idle instant).
  const std::string key = s.key_of("t", "u", KeyParts{"u", "m"});
  const redis::Reply ttl = s.client().command_for_key(key, {"PTTL", key});
  ASSERT_TRUE(ttl.is_integer()) << redis::to_string(ttl);
  EXPECT_GT(ttl.integer, 0);
  EXPECT_LE(ttl.integer, 2 * kMicrosPerDay / 1000);
  EXPECT_TRUE(s.capabilities().server_time);
  EXPECT_TRUE(s.capabilities().distributed);
}

// Verifies the script's fast path (an acquire of rate items only) keeps a hash's expiry by the
// server's clock: set on a new hash, moved later by a field that goes idle later, never moved
// earlier by a field that goes idle sooner.
TEST_P(RedisStoreTest, FastPathAcquiresKeepTheHashExpiry) {
  RedisStore& s = make(true);
  const Namespace ns = s.open_namespace("t");
  const std::vector<KeyParts> keys = {{"u", "m"}};
  const std::string key = s.key_of("t", "u", keys[0]);
  const Limit hourly = Limit::per_hour("rph", 1);  // one unit: idle an hour later
  const Limit daily = Limit::per_day("rpdy", 1);   // idle a day later
  auto acquire = [&](const Limit& l, std::int64_t amount) {
    const OpItem items[] = {{0, &l, amount, 0, nullptr, 0}};
    const Op op{.kind = OpKind::acquire,
                .ns = &ns,
                .group = "u",
                .now = kStart,
                .keys = keys,
                .items = items,
                .handles = {},
                .lease_id = 0,
                .lease_expiry = 0,
                .report = false,
                .lease_record = {},
                .lease_record_next = {},
                .lease_guard = false};
    ItemResult r[1];
    return s.apply(op, r);
  };
  auto pttl_s = [&] {
    const redis::Reply r = s.client().command_for_key(key, {"PTTL", key});
    EXPECT_TRUE(r.is_integer()) << redis::to_string(r);
    return r.integer / 1000;
  };
  ASSERT_TRUE(acquire(hourly, 1));
  EXPECT_GT(pttl_s(), 3500);  // the next whole second after the hour, plus one
  EXPECT_LE(pttl_s(), 3602);
  ASSERT_TRUE(acquire(daily, 1));
  EXPECT_GT(pttl_s(), 86'000);
  ASSERT_TRUE(acquire(hourly, 0));  // rewrites the hourly field; the day stays
  EXPECT_GT(pttl_s(), 86'000);
  EXPECT_FALSE(acquire(hourly, 1));
  EXPECT_EQ(s.size(), 2u);
}

// Verifies a state in the decimal form earlier versions wrote ("tat rem") is read by both the
// fast path (acquire) and the general path (read), and replaced by the binary form on write:
// an upgrade loses no usage.
TEST_P(RedisStoreTest, StatesOfEarlierVersionsAreRead) {
  RedisStore& s = make(false, false);  // the caller's clock (kStart), every op to the server
  const Namespace ns = s.open_namespace("t");
  const Limit rpm = Limit::per_minute("rpm", 2);  // 30 s a unit, a burst of 2
  const std::vector<KeyParts> keys = {{"u", "m"}};
  const std::string key = s.key_of("t", "u", keys[0]);
  auto field = [&] {
    const redis::Reply r = s.client().command_for_key(key, {"HGET", key, "srpm"});
    EXPECT_TRUE(r.is_string()) << redis::to_string(r);
    return r.str;
  };
  auto write_decimal = [&](Micros tat) {  // one unit of the burst used
    const redis::Reply r = s.client().command_for_key(key, {"HSET", key, "srpm", cat(tat, " 0")});
    ASSERT_TRUE(r.is_integer()) << redis::to_string(r);
  };
  auto apply = [&](OpKind kind, std::int64_t amount, ItemResult& r) {
    const OpItem items[] = {{0, &rpm, amount, 0, nullptr, 0}};
    const Op op{.kind = kind,
                .ns = &ns,
                .group = "u",
                .now = kStart,
                .keys = keys,
                .items = items,
                .handles = {},
                .lease_id = 0,
                .lease_expiry = 0,
                .report = true,
                .lease_record = {},
                .lease_record_next = {},
                .lease_guard = false};
    return s.apply(op, std::span<ItemResult>(&r, 1));
  };
  ItemResult r;
  write_decimal(kStart + 30 * kSec);
  ASSERT_TRUE(apply(OpKind::read, 0, r));  // the general path
  EXPECT_EQ(r.available, 1);
  EXPECT_EQ(r.reset_after, 30 * kSec);
  ASSERT_TRUE(apply(OpKind::acquire, 1, r));  // the fast path: the last unit
  EXPECT_EQ(r.available, 0);
  EXPECT_EQ(field().size(), 16u);  // written back in the binary form
  EXPECT_FALSE(apply(OpKind::acquire, 1, r));
  EXPECT_EQ(r.retry_after, 30 * kSec);
  write_decimal(kStart + 60 * kSec);  // the whole burst used
  EXPECT_FALSE(apply(OpKind::acquire, 1, r));
  EXPECT_EQ(r.retry_after, 30 * kSec);
  EXPECT_EQ(r.reset_after, 60 * kSec);
  ASSERT_TRUE(apply(OpKind::read, 0, r));
  EXPECT_EQ(r.available, 0);
}

// Verifies the deny cache answers a known denial locally, never admits more than the server,
// lets smaller amounts through to the server, and forgets an entry when capacity returns.
TEST_P(RedisStoreTest, DenyCacheAnswersKnownDenialsLocally) {
  RedisStore& s = make(false);
  ManualClock clock(kStart);
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("m", {Limit::per_minute("tpm", 100)});
  EXPECT_TRUE(test::take(lim, "u", "m", {{"tpm", 95}}).allowed);
  const Decision d1 = test::take(lim, "u", "m", {{"tpm", 10}});
  ASSERT_FALSE(d1.allowed);
  const auto scripts = s.stats().scripts;
  const Decision d2 = test::take(lim, "u", "m", {{"tpm", 10}});  // the same: answered here
  EXPECT_FALSE(d2.allowed);
  EXPECT_EQ(d2.retry_after, d1.retry_after);
  EXPECT_EQ(s.stats().scripts, scripts);
  EXPECT_EQ(s.stats().local_denials, 1u);
  EXPECT_FALSE(test::take(lim, "u", "m", {{"tpm", 50}}).allowed);  // more: denied here too
  EXPECT_EQ(s.stats().local_denials, 2u);
  EXPECT_TRUE(test::take(lim, "u", "m", {{"tpm", 5}}).allowed);  // less: the server decides
  EXPECT_EQ(s.stats().scripts, scripts + 1);
  // Half-way to the retry time the cache still answers; at it, the server does again.
  clock.advance(d1.retry_after / 2);
  EXPECT_FALSE(test::take(lim, "u", "m", {{"tpm", 10}}).allowed);
  EXPECT_EQ(s.stats().scripts, scripts + 1);
  clock.advance(d1.retry_after * 3 / 2);  // the 5 taken meanwhile pushed it back by as much
  EXPECT_TRUE(test::take(lim, "u", "m", {{"tpm", 10}}).allowed);
  EXPECT_EQ(s.stats().scripts, scripts + 2);
  // A refund from this process drops the entry.
  clock.advance(60 * kSec);  // a full bucket again
  Lease big = lim.try_acquire("u", "m", {{"tpm", 80}});
  ASSERT_TRUE(big.allowed());
  ASSERT_FALSE(test::take(lim, "u", "m", {{"tpm", 30}}).allowed);  // cached
  big.rollback();
  const auto before = s.stats().local_denials;
  EXPECT_TRUE(test::take(lim, "u", "m", {{"tpm", 30}}).allowed);  // the server, not the cache
  EXPECT_EQ(s.stats().local_denials, before);
}

// Verifies the deny cache with a shadow limit: a denial the server gave on it is cached but
// never refuses an acquire by itself (the server answers, admitting it), and it is reported
// with an enforced limit's known denial that the cache answers locally.
TEST_P(RedisStoreTest, DenyCacheNeverRefusesForAShadowLimit) {
  RedisStore& s = make(false);
  ManualClock clock(kStart);
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("m", {Limit::per_minute("rpm", 1).with_shadow(), Limit::per_minute("tpm", 100)});
  EXPECT_TRUE(test::take(lim, "u", "m", {{"rpm", 1}, {"tpm", 95}}).allowed);
  const Decision d1 = test::take(lim, "u", "m", {{"rpm", 1}, {"tpm", 10}});  // both refuse
  ASSERT_FALSE(d1.allowed);
  EXPECT_EQ(d1.shadow_violations.size(), 1u);
  const auto scripts = s.stats().scripts;
  const Decision d2 = test::take(lim, "u", "m", {{"rpm", 1}});  // rpm's denial is cached
  EXPECT_TRUE(d2.allowed);
  EXPECT_EQ(d2.shadow_violations.size(), 1u);
  EXPECT_EQ(s.stats().scripts, scripts + 1);  // the server admitted it
  EXPECT_EQ(s.stats().local_denials, 0u);
  const Decision d3 = test::take(lim, "u", "m", {{"rpm", 1}, {"tpm", 10}});  // answered here
  EXPECT_FALSE(d3.allowed);
  EXPECT_EQ(d3.code, Code::rate_exceeded);
  EXPECT_EQ(d3.retry_after, d1.retry_after);
  EXPECT_EQ(d3.shadow_violations.size(), 1u);
  EXPECT_EQ(s.stats().local_denials, 1u);
}

// Verifies the group commit is exact: 8 threads acquire one unit of one limit of one key at
// an instant that never moves (caller's time), so their acquires share script runs (batches
// of the fast path); exactly the burst is admitted, and every later one is denied. The deny
// cache is off so every acquire reaches the server.
TEST_P(RedisStoreTest, GroupCommitAdmitsExactlyTheBurst) {
  RedisStore& s = make(false, /*deny_cache=*/false);
  ManualClock clock(kStart);
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  constexpr std::int64_t kBurst = 300;
  lim.set_limits("m", {Limit::per_minute("rpm", 60, kBurst), Limit::per_minute("tpm", 1'000'000)});
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100;
  std::atomic<int> admitted{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        try {
          Lease l = lim.try_acquire("u", "m", {{"rpm", 1}, {"tpm", 10}});
          if (l.allowed()) admitted.fetch_add(1);
          l.commit();
        } catch (const std::exception&) {
          failed.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(admitted.load(), kBurst);
  EXPECT_FALSE(test::take(lim, "u", "m", {{"rpm", 1}}).allowed);
}

// Verifies apply_async: 400 acquires put in flight at once from one thread, on 40 entities
// each with a burst of 7, complete on the client's I/O thread (sharing script runs, as many
// as the timing allows) and admit exactly 7 per entity, with each op's own results; denials
// carry their retry_after.
TEST_P(RedisStoreTest, AsyncAcquiresShareRunsAndAdmitExactly) {
  RedisStore& s = make(false, /*deny_cache=*/false);
  const Namespace ns = s.open_namespace("t");
  const Limit rpm = Limit::per_minute("rpm", 60, 7);  // 1 per second, burst 7
  const Limit tpm = Limit::per_minute("tpm", 1'000'000);
  constexpr int kEntities = 40;
  constexpr int kOps = 400;
  struct Slot {
    std::vector<KeyParts> keys;
    std::string entity;
    OpItem items[2];
    ItemResult results[2];
  };
  std::vector<Slot> slots(kOps);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, allowed = 0, io_thread = 0;
  std::vector<int> per_entity(kEntities);
  std::vector<std::string> failures;
  for (int i = 0; i < kOps; ++i) {
    Slot& sl = slots[static_cast<std::size_t>(i)];
    sl.entity = cat("u", i % kEntities);
    sl.keys = {{sl.entity, "m"}};
    sl.items[0] = {0, &rpm, 1, 0, nullptr, 0};
    sl.items[1] = {0, &tpm, 10, 0, nullptr, 0};
    const Op op{.kind = OpKind::acquire,
                .ns = &ns,
                .group = sl.entity,
                .now = kStart,
                .keys = sl.keys,
                .items = sl.items,
                .handles = {},
                .lease_id = 0,
                .lease_expiry = 0,
                .report = false,
                .lease_record = {},
                .lease_record_next = {},
                .lease_guard = false};
    s.apply_async(op, sl.results, [&, i](bool ok, std::exception_ptr error) {
      std::lock_guard g(mu);
      ++done;
      io_thread += s.client().on_io_thread() ? 1 : 0;
      if (error) {
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          failures.push_back(e.what());
        }
      } else if (ok) {
        ++allowed;
        ++per_entity[static_cast<std::size_t>(i % kEntities)];
      } else if (slots[static_cast<std::size_t>(i)].results[0].retry_after <= 0) {
        failures.push_back(cat("denial ", i, " without retry_after"));
      }
      cv.notify_all();
    });
  }
  std::unique_lock g(mu);
  cv.wait(g, [&] { return done == kOps; });
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_EQ(allowed, kEntities * 7);
  for (const int n : per_entity) EXPECT_EQ(n, 7);
  EXPECT_EQ(io_thread, kOps);  // every completion on the I/O thread
}

// Verifies Limiter::try_acquire_async over Redis: 300 acquires in flight at once from one
// thread on one entity with a burst of 50 admit exactly 50; every denial says why and when.
TEST_P(RedisStoreTest, LimiterAsyncAcquiresAdmitExactlyTheBurst) {
  RedisStore& s = make(false, /*deny_cache=*/true);
  ManualClock clock(kStart);
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("m", {Limit::per_minute("rpm", 60, 50), Limit::per_minute("tpm", 1'000'000)});
  constexpr int kOps = 300;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, allowed = 0;
  std::vector<std::string> bad;
  for (int i = 0; i < kOps; ++i) {
    lim.try_acquire_async("u", "m", {{"rpm", 1}, {"tpm", 10}}, [&](Lease l) {
      const bool ok = l.allowed();
      const Decision d = l.decision();
      l.commit();  // rate limits only: no store call
      std::lock_guard g(mu);
      ++done;
      if (ok) {
        ++allowed;
      } else if (d.code != Code::rate_exceeded || d.retry_after <= 0) {
        bad.push_back(cat(to_string(d.code), ": ", d.reason));
      }
      cv.notify_all();
    });
  }
  std::unique_lock g(mu);
  cv.wait(g, [&] { return done == kOps; });
  EXPECT_TRUE(bad.empty()) << bad.front();
  EXPECT_EQ(allowed, 50);
}

/// What apply_async() reported: apply()'s value, the error ("unavailable: <what>" for
/// StoreUnavailable, "lease_not_found: <what>" for LeaseNotFound, "other: <what>" else, ""
/// without one), and whether `done` ran on the client's I/O thread.
struct AsyncOutcome {
  bool ok = false;
  std::string error;
  bool io_thread = false;
};

AsyncOutcome outcome_of(RedisStore& s, bool ok, const std::exception_ptr& error) {
  AsyncOutcome out{ok, "", s.client().on_io_thread()};
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const StoreUnavailable& e) {
      out.error = cat("unavailable: ", e.what());
    } catch (const LeaseNotFound& e) {
      out.error = cat("lease_not_found: ", e.what());
    } catch (const std::exception& e) {
      out.error = cat("other: ", e.what());
    }
  }
  return out;
}

/// apply_async(), waited for.
AsyncOutcome apply_async_and_wait(RedisStore& s, const Op& op, std::span<ItemResult> results) {
  auto p = std::make_shared<std::promise<AsyncOutcome>>();
  std::future<AsyncOutcome> f = p->get_future();
  s.apply_async(op, results, [&s, p](bool ok, std::exception_ptr error) {
    p->set_value(outcome_of(s, ok, error));
  });
  return f.get();
}

std::string show(const ItemResult& r) {
  return cat("ok ", r.ok, " never ", r.never, " available ", r.available, " retry_after ",
             r.retry_after, " reset_after ", r.reset_after, " window_end ", r.window_end, " held ",
             r.held);
}

/// One Op over one key {entity, "m"} of namespace `ns` (group = entity), at `now`.
struct OneKeyOp {
  OneKeyOp(const Namespace& ns, std::string entity, OpKind kind, std::vector<OpItem> its,
           Micros now, std::uint64_t lease = 0)
      : name(std::move(entity)), keys{{name, "m"}}, items(std::move(its)) {
    op = Op{.kind = kind,
            .ns = &ns,
            .group = name,
            .now = now,
            .keys = keys,
            .items = items,
            .handles = {},
            .lease_id = lease,
            .lease_expiry = now + 60 * kSec,
            .report = true,
            .lease_record = {},
            .lease_record_next = {},
            .lease_guard = false};
  }
  OneKeyOp(const OneKeyOp&) = delete;
  OneKeyOp& operator=(const OneKeyOp&) = delete;

  std::string name;
  std::vector<KeyParts> keys;
  std::vector<OpItem> items;
  Op op;
};

// Verifies that apply_async gives what apply gives for ops off the fast path (windows,
// concurrency slots, adjust, record, release, read, clamp, reset, a denied decide): each op
// runs asynchronously on one entity and synchronously on another, from the same state, and
// must report the same; every asynchronous answer comes on the client's I/O thread. A denial
// answered asynchronously is cached like a synchronous one.
TEST_P(RedisStoreTest, AsyncGeneralOpsGiveWhatApplyGives) {
  RedisStore& s = make(false);  // the caller's clock: exact instants
  const Namespace ns = s.open_namespace("t");
  const Limit rpd = Limit::daily("rpd", 5);
  const Limit slots = Limit::concurrency("slots", 3);
  const Limit rpm = Limit::per_minute("rpm", 60, 10);
  int step = 0;
  auto both = [&](OpKind kind, const std::vector<OpItem>& items, std::uint64_t lease = 0) {
    ++step;
    const OneKeyOp a(ns, "a", kind, items, kStart + step, lease);
    const OneKeyOp b(ns, "b", kind, items, kStart + step, lease);
    std::vector<ItemResult> ra(items.size()), rb(items.size());
    const AsyncOutcome out = apply_async_and_wait(s, a.op, ra);
    const bool ok = s.apply(b.op, rb);
    EXPECT_EQ(out.error, "") << "step " << step;
    EXPECT_TRUE(out.io_thread) << "step " << step;
    EXPECT_EQ(out.ok, ok) << "step " << step;
    for (std::size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(show(ra[i]), show(rb[i])) << "step " << step << ", item " << i;
    }
    return std::make_pair(ok, ra);
  };
  const auto scripts = s.stats().scripts;
  const auto [ok1, r1] = both(
      OpKind::acquire,
      {{0, &rpd, 2, 0, nullptr, 0}, {0, &slots, 2, 0, nullptr, 0}, {0, &rpm, 1, 0, nullptr, 0}}, 1);
  ASSERT_TRUE(ok1);
  EXPECT_EQ(r1[1].held, 2);
  const Micros window = r1[0].window_end;
  EXPECT_GT(window, kStart);
  EXPECT_FALSE(
      both(OpKind::acquire, {{0, &rpd, 2, 0, nullptr, 0}, {0, &slots, 2, 0, nullptr, 0}}, 2)
          .first);                                                          // slots
  EXPECT_FALSE(both(OpKind::decide, {{0, &rpd, 4, 0, nullptr, 0}}).first);  // 3 left in the window
  // Both denials were cached: the same decide is answered here, without a script run.
  const auto local = s.stats().local_denials;
  {
    const OneKeyOp again(ns, "a", OpKind::decide, {{0, &rpd, 4, 0, nullptr, 0}}, kStart + step);
    ItemResult r[1];
    const AsyncOutcome out = apply_async_and_wait(s, again.op, r);
    EXPECT_FALSE(out.ok);
    EXPECT_FALSE(out.io_thread);
    EXPECT_EQ(s.stats().local_denials, local + 1);
  }
  EXPECT_TRUE(
      both(OpKind::adjust, {{0, &rpd, 1, window, nullptr, 0}, {0, &rpm, 2, 0, nullptr, 0}}, 1)
          .first);
  EXPECT_TRUE(
      both(OpKind::record, {{0, &rpm, 5, 0, nullptr, 0}, {0, &rpd, 1, 0, nullptr, 0}}).first);
  EXPECT_TRUE(both(OpKind::release,
                   {{0, &rpd, 2, window, nullptr, 0},
                    {0, &slots, 2, 0, nullptr, 0},
                    {0, &rpm, 1, 0, nullptr, 0}},
                   1)
                  .first);
  const auto r7 = both(OpKind::read, {{0, &rpd, 0, 0, nullptr, 0},
                                      {0, &slots, 0, 0, nullptr, 0},
                                      {0, &rpm, 0, 0, nullptr, 0}})
                      .second;
  EXPECT_EQ(r7[0].available, 5 - 2 - 1 - 1 + 2);
  EXPECT_EQ(r7[1].held, 0);
  EXPECT_TRUE(both(OpKind::clamp, {{0, &rpm, 0, 0, nullptr, kStart + 10 * kSec}}).first);
  EXPECT_TRUE(both(OpKind::reset, {{0, &rpd, 0, 0, nullptr, 0}}).first);
  const auto r10 =
      both(OpKind::read, {{0, &rpd, 0, 0, nullptr, 0}, {0, &rpm, 0, 0, nullptr, 0}}).second;
  EXPECT_EQ(r10[0].available, 5);
  EXPECT_EQ(r10[1].available, 0);  // clamped
  EXPECT_EQ(s.stats().scripts, scripts + 2 * 10);
}

// Verifies apply_async off the fast path runs without blocking, from callbacks too: an op
// issued from a callback on the client's I/O thread (a fast-path acquire's) takes concurrency
// slots, and one issued from its callback releases them; each answers on the I/O thread. A
// synchronous call from a callback (which would wait for the I/O thread it runs on) still
// throws std::logic_error instead of hanging.
TEST_P(RedisStoreTest, AsyncOffTheFastPathAndSyncCallsFromCallbacks) {
  RedisStore& s = make(false);
  const Namespace ns = s.open_namespace("t");
  const Limit slots = Limit::concurrency("slots", 2);
  const Limit rpm = Limit::per_minute("rpm", 600);
  const OneKeyOp fast(ns, "u", OpKind::acquire, {{0, &rpm, 1, 0, nullptr, 0}}, kStart);
  ItemResult r0[1], r3[1];
  struct Chain {  // what the callbacks saw, in order
    std::vector<AsyncOutcome> outcomes;
    std::vector<std::int64_t> held;
    std::string sync_call;
  };
  auto done = std::make_shared<std::promise<Chain>>();
  auto chain = std::make_shared<Chain>();
  s.apply_async(
      fast.op, r0, [&s, &ns, &slots, &fast, &r3, chain, done](bool ok, std::exception_ptr error) {
        chain->outcomes.push_back(outcome_of(s, ok, error));
        // On the I/O thread: the op and its results live on the heap until the last callback.
        auto hold = std::make_shared<OneKeyOp>(ns, "u", OpKind::acquire,
                                               std::vector<OpItem>{{0, &slots, 2, 0, nullptr, 0}},
                                               kStart, 9);
        auto results = std::make_shared<std::vector<ItemResult>>(1);
        s.apply_async(hold->op, *results,
                      [&s, &ns, &slots, &fast, &r3, chain, done, hold, results](
                          bool ok2, std::exception_ptr error2) {
                        chain->outcomes.push_back(outcome_of(s, ok2, error2));
                        chain->held.push_back((*results)[0].held);
                        auto release = std::make_shared<OneKeyOp>(
                            ns, "u", OpKind::release,
                            std::vector<OpItem>{{0, &slots, 2, 0, nullptr, 0}}, kStart, 9);
                        s.apply_async(release->op, *results,
                                      [&s, &fast, &r3, chain, done, release, results](
                                          bool ok3, std::exception_ptr error3) {
                                        chain->outcomes.push_back(outcome_of(s, ok3, error3));
                                        chain->held.push_back((*results)[0].held);
                                        try {
                                          s.apply(fast.op, r3);
                                          chain->sync_call = "no error";
                                        } catch (const std::logic_error& e) {
                                          chain->sync_call = e.what();
                                        }
                                        done->set_value(*chain);
                                      });
                      });
      });
  const Chain c = done->get_future().get();
  ASSERT_EQ(c.outcomes.size(), 3u);
  for (const AsyncOutcome& o : c.outcomes) {
    EXPECT_TRUE(o.ok);
    EXPECT_EQ(o.error, "");
    EXPECT_TRUE(o.io_thread);
  }
  EXPECT_EQ(c.held, (std::vector<std::int64_t>{2, 0}));
  EXPECT_NE(c.sync_call.find("would wait for itself"), std::string::npos) << c.sync_call;
  ItemResult r[1];
  const OneKeyOp read(ns, "u", OpKind::read, {{0, &slots, 0, 0, nullptr, 0}}, kStart);
  ASSERT_TRUE(s.apply(read.op, r));
  EXPECT_EQ(r[0].available, 2);  // released
}

// Verifies the clock retry of an asynchronous op (server time): a window acquire at a caller
// clock 400 days off is refused by the script (its window bounds miss the server's clock),
// re-aimed and sent again from the I/O thread, and counted in the server's current window;
// the next op uses the offset learned and needs no retry.
TEST_P(RedisStoreTest, AsyncGeneralOpRetriesAfterAClockError) {
  RedisStore& s = make(true);
  const Namespace ns = s.open_namespace("t");
  const Limit rpd = Limit::daily("rpd", 5);
  const Micros far_past = kStart - 400 * kMicrosPerDay;
  const OneKeyOp op(ns, "u", OpKind::acquire, {{0, &rpd, 1, 0, nullptr, 0}}, far_past);
  ItemResult r[1];
  const Micros before = SystemClock().now();
  AsyncOutcome out = apply_async_and_wait(s, op.op, r);
  EXPECT_EQ(out.error, "");
  EXPECT_TRUE(out.ok);
  EXPECT_TRUE(out.io_thread);
  EXPECT_EQ(s.stats().clock_retries, 1u);
  EXPECT_EQ(s.stats().scripts, 2u);
  EXPECT_EQ(r[0].available, 4);
  EXPECT_GT(r[0].window_end, before);  // the server's day, not the caller's
  EXPECT_LE(r[0].window_end, before + kMicrosPerDay + 10 * kSec);
  out = apply_async_and_wait(s, op.op, r);
  EXPECT_TRUE(out.ok);
  EXPECT_EQ(r[0].available, 3);
  EXPECT_EQ(s.stats().clock_retries, 1u);
  EXPECT_EQ(s.stats().scripts, 3u);
}

// Verifies a run that cannot reach the server fails each async op with StoreUnavailable: a
// fast-path acquire, and ops off the fast path (concurrency slots, a release).
TEST_P(RedisStoreTest, AsyncAcquireReportsAnUnreachableServer) {
  RedisStoreOptions o;
  o.client = client_;
  o.client.seeds = {redis::Endpoint{"127.0.0.1", test::free_port()}};
  o.client.connect_timeout = std::chrono::milliseconds(200);
  o.client.command_timeout = std::chrono::milliseconds(200);
  o.prefix = prefix_;
  RedisStore s(o);
  const Namespace ns = s.open_namespace("t");
  const Limit rpm = Limit::per_minute("rpm", 600);
  const Limit slots = Limit::concurrency("slots", 2);
  const OneKeyOp fast(ns, "u", OpKind::acquire, {{0, &rpm, 1, 0, nullptr, 0}}, kStart);
  const OneKeyOp hold(ns, "u", OpKind::acquire, {{0, &slots, 1, 0, nullptr, 0}}, kStart, 5);
  const OneKeyOp release(ns, "u", OpKind::release, {{0, &slots, 1, 0, nullptr, 0}}, kStart, 5);
  for (const OneKeyOp* op : {&fast, &hold, &release}) {
    ItemResult r[1];
    const AsyncOutcome out = apply_async_and_wait(s, op->op, r);
    EXPECT_FALSE(out.ok);
    EXPECT_EQ(out.error.rfind("unavailable: ", 0), 0u) << out.error;
  }
}

// Verifies Limiter::try_acquire_async with window and concurrency limits on Redis (ops off the
// script's fast path): every acquire completes on the client's I/O thread, the window admits
// exactly its quota and the slots exactly their number. Without the deny cache: a denial it
// remembers answers later acquires on the caller's thread (nothing to send), which is right
// but not what this test looks at.
TEST_P(RedisStoreTest, LimiterAsyncWindowsAndSlotsCompleteOnTheIoThread) {
  RedisStore& s = make(false, /*deny_cache=*/false);
  ManualClock clock(kStart);
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("w", {Limit::daily("rpd", 5)});
  lim.set_limits("c", {Limit::concurrency("slots", 3)});
  constexpr int kOps = 10;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, allowed_w = 0, off_io = 0;
  std::vector<std::string> bad;
  std::vector<Lease> held;  // the slots' leases, ended here (not on the I/O thread)
  auto note = [&](const Decision& d, Code denied) {  // under mu
    off_io += s.client().on_io_thread() ? 0 : 1;
    if (!d.allowed && d.code != denied) bad.push_back(cat(to_string(d.code), ": ", d.reason));
  };
  for (int i = 0; i < kOps; ++i) {
    lim.try_acquire_async("u", "w", {{"rpd", 1}}, [&](Lease l) {
      l.commit();  // a window lease: keeps its unit, no store call
      std::lock_guard g(mu);
      note(l.decision(), Code::window_exceeded);
      allowed_w += l.allowed() ? 1 : 0;
      ++done;
      cv.notify_all();
    });
    lim.try_acquire_async("u", "c", {{"slots", 1}}, [&](Lease l) {
      std::lock_guard g(mu);
      note(l.decision(), Code::concurrency_exceeded);
      if (l.allowed()) held.push_back(std::move(l));
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock g(mu);
  cv.wait(g, [&] { return done == 2 * kOps; });
  EXPECT_TRUE(bad.empty()) << bad.front();
  EXPECT_EQ(off_io, 0);
  EXPECT_EQ(allowed_w, 5);
  EXPECT_EQ(held.size(), 3u);
  EXPECT_EQ(test::available(lim, "u", "w", "rpd"), 0);
  EXPECT_EQ(test::available(lim, "u", "c", "slots"), 0);
  for (Lease& l : held) l.commit();  // frees the slots
  EXPECT_EQ(test::available(lim, "u", "c", "slots"), 3);
}

// Verifies a lease ends without blocking from a callback on the I/O thread: each lease of a
// concurrency limit, committed with Lease::commit_async (a release, off the script's fast
// path), frees its slot; an acquire issued from the commit's callback gets it, and that lease
// is committed from the acquire's callback. Every step answers on the I/O thread.
TEST_P(RedisStoreTest, LeasesEndAsynchronouslyFromCallbacks) {
  RedisStore& s = make(false);
  ManualClock clock(kStart);
  Limiter lim(s, clock, LimiterOptions{.ns = "t"});
  lim.set_limits("c", {Limit::concurrency("slots", 3)});
  std::vector<Lease> leases;
  for (int i = 0; i < 3; ++i) {
    leases.push_back(lim.try_acquire("u", "c", {{"slots", 1}}));
    ASSERT_TRUE(leases.back().allowed());
  }
  ASSERT_FALSE(test::take(lim, "u", "c", {{"slots", 1}}).allowed);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, again = 0, off_io = 0;
  std::vector<std::string> bad;
  auto note = [&](const Decision& d) {
    std::lock_guard g(mu);
    off_io += s.client().on_io_thread() ? 0 : 1;
    if (!d.allowed) bad.push_back(cat(to_string(d.code), ": ", d.reason));
  };
  for (Lease& l : leases) {
    l.commit_async([&](Decision d) {
      note(d);
      lim.try_acquire_async("u", "c", {{"slots", 1}}, [&](Lease l2) {
        note(l2.decision());
        {
          std::lock_guard g(mu);
          again += l2.allowed() ? 1 : 0;
        }
        l2.commit_async([&](Decision d2) {
          note(d2);
          std::lock_guard g(mu);
          ++done;
          cv.notify_all();
        });
      });
    });
  }
  {
    std::unique_lock g(mu);
    cv.wait(g, [&] { return done == 3; });
  }
  EXPECT_TRUE(bad.empty()) << bad.front();
  EXPECT_EQ(off_io, 0);
  EXPECT_EQ(again, 3);
  EXPECT_EQ(test::available(lim, "u", "c", "slots"), 3);
}

// ------------------------------------------------------------------------ durable leases

/// The (id, group) of a durable lease's token: "<id as 16 hex digits>.<the group as hex>".
std::pair<std::uint64_t, std::string> parse_token(const std::string& token) {
  std::string group;
  for (std::size_t i = 17; i + 1 < token.size(); i += 2) {
    group += static_cast<char>(std::stoi(token.substr(i, 2), nullptr, 16));
  }
  return {std::stoull(token.substr(0, 16), nullptr, 16), group};
}

// Verifies a durable lease acquired through one store ("process") is taken up through another
// store on the same server: the record is one hash in the slot of its usage (no Redis expiry
// in the caller's time), the other store adjusts and commits it, and afterwards neither can
// take it up again.
TEST_P(RedisStoreTest, DurableLeasesMoveBetweenStores) {
  RedisStore& s1 = make(false);
  RedisStore& s2 = make(false);
  ManualClock clock(kStart);
  Limiter a(s1, clock, LimiterOptions{.ns = "t"});
  Limiter b(s2, clock, LimiterOptions{.ns = "t"});
  for (Limiter* lim : {&a, &b}) {
    lim->set_limits("m", {Limit::per_minute("tpm", 1000), Limit::concurrency("slots", 1)});
  }
  EXPECT_TRUE(s1.capabilities().leases);
  AcquireOptions durable;
  durable.durable = true;
  durable.lease_ttl = 60 * kSec;
  Lease l = a.try_acquire("u", "m", {{"tpm", 600}}, durable);
  ASSERT_TRUE(l.allowed()) << l.decision().reason;
  const std::string token = l.detach();
  const auto [id, group] = parse_token(token);
  const std::string key = s1.lease_key_of("t", group, id);
  EXPECT_EQ(redis::key_slot(key), redis::key_slot(s1.key_of("t", group, KeyParts{"u", "m"})));
  const redis::Reply fields = s1.client().command_for_key(key, {"HGET", key, "x"});
  EXPECT_EQ(fields.str, std::to_string(kStart + 60 * kSec)) << redis::to_string(fields);
  EXPECT_EQ(s1.client().command_for_key(key, {"PTTL", key}).integer, -1);  // prune's
  EXPECT_EQ(s1.size(), 2u);  // the usage hash's fields only: tpm and slots

  clock.advance(kSec);
  Lease on_b = b.resume(token);
  ASSERT_TRUE(on_b.active());
  EXPECT_EQ(on_b.expires_at(), kStart + 60 * kSec);
  const Decision adj = on_b.adjust({{"tpm", -200}});
  EXPECT_TRUE(adj.allowed) << adj.reason;
  on_b.commit();  // keeps 400 tpm, frees the slot, deletes the record
  EXPECT_EQ(test::available(a, "u", "m", "tpm"), 600 + 16);  // 1 s of refill at 1000/min
  EXPECT_EQ(test::available(a, "u", "m", "slots"), 1);
  EXPECT_EQ(s1.client().command_for_key(key, {"EXISTS", key}).integer, 0);
  EXPECT_THROW((void)a.resume(token), LeaseNotFound);
  EXPECT_THROW((void)b.resume(token), LeaseNotFound);

  // An unended lease is gone at its expiry; prune then deletes its record (caller's time).
  Lease l2 = a.try_acquire("u", "m", {{"tpm", 1}}, durable);
  ASSERT_TRUE(l2.allowed());
  const std::string t2 = l2.detach();
  const std::string key2 = s1.lease_key_of("t", group, parse_token(t2).first);
  clock.advance(60 * kSec);
  EXPECT_THROW((void)b.resume(t2), LeaseNotFound);
  EXPECT_EQ(s1.client().command_for_key(key2, {"EXISTS", key2}).integer, 1);
  EXPECT_GE(s2.prune(clock.now()), 1u);
  EXPECT_EQ(s1.client().command_for_key(key2, {"EXISTS", key2}).integer, 0);
}

// Verifies exactly one of many processes ending one durable lease at once wins (server time):
// 8 threads, each through a store of its own, take the lease up, then all roll it back at
// once; one rollback refunds, the other 7 find no lease (lease_not_found) and change nothing.
// In server time the record key expires by itself, a minute after the lease.
TEST_P(RedisStoreTest, RacingEndsOfOneDurableLeaseRefundExactlyOnce) {
  constexpr int kThreads = 8;
  SystemClock clock;
  std::vector<std::unique_ptr<Limiter>> lims;
  for (int i = 0; i <= kThreads; ++i) {
    lims.push_back(std::make_unique<Limiter>(make(true), clock, LimiterOptions{.ns = "t"}));
    lims.back()->set_limits("m", {Limit::daily("rpd", 10), Limit::concurrency("slots", 1)});
  }
  Limiter& first = *lims[0];
  AcquireOptions durable;
  durable.durable = true;
  durable.lease_ttl = 60 * kSec;
  Lease l = first.try_acquire("u", "m", {{"rpd", 4}}, durable);
  ASSERT_TRUE(l.allowed()) << l.decision().reason;
  const std::string token = l.detach();
  ASSERT_TRUE(first.record_usage("u", "m", {{"rpd", 3}}).allowed);  // (its slot is held)
  EXPECT_EQ(test::available(first, "u", "m", "rpd"), 3);
  const auto [id, group] = parse_token(token);
  RedisStore& s = *stores_.front();
  const std::string key = s.lease_key_of("t", group, id);
  const redis::Reply pttl = s.client().command_for_key(key, {"PTTL", key});
  EXPECT_GT(pttl.integer, 60'000) << redis::to_string(pttl);
  EXPECT_LE(pttl.integer, 121'000);

  std::mutex mu;
  std::condition_variable cv;
  int resumed = 0;
  std::vector<std::promise<Decision>> ends(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Lease mine;
      try {
        mine = lims[static_cast<std::size_t>(i) + 1]->resume(token);
      } catch (const std::exception& e) {
        Decision d;
        d.reason = cat("resume: ", e.what());
        ends[static_cast<std::size_t>(i)].set_value(d);
      }
      {
        std::unique_lock g(mu);
        ++resumed;
        cv.notify_all();
        cv.wait(g, [&] { return resumed == kThreads; });
      }
      if (!mine.active()) return;
      mine.rollback_async(
          [&ends, i](Decision d) { ends[static_cast<std::size_t>(i)].set_value(std::move(d)); });
    });
  }
  int won = 0, lost = 0;
  for (auto& e : ends) {
    const Decision d = e.get_future().get();
    if (d.allowed) {
      ++won;
    } else if (d.code == Code::lease_not_found) {
      ++lost;
    } else {
      ADD_FAILURE() << to_string(d.code) << ": " << d.reason;
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(won, 1);
  EXPECT_EQ(lost, kThreads - 1);
  EXPECT_EQ(test::available(first, "u", "m", "rpd"), 7);  // refunded once: 3 used
  EXPECT_EQ(test::available(first, "u", "m", "slots"), 1);
  EXPECT_FALSE(s.get_lease(s.open_namespace("t"), group, id, clock.now()).has_value());
  EXPECT_THROW((void)first.resume(token), LeaseNotFound);
}

// Verifies a guarded op through apply_async (a script run of its own) reports a guard that
// does not match (a stale record, a lease without one) as LeaseNotFound through its callback,
// on the I/O thread, with nothing changed; the matching guard then releases the lease and
// deletes its record, after which apply throws LeaseNotFound.
TEST_P(RedisStoreTest, AsyncGuardedOpsReportLeaseNotFound) {
  RedisStore& s = make(false);
  const Namespace ns = s.open_namespace("t");
  const Limit slots = Limit::concurrency("slots", 2);
  const Limit rpm = Limit::per_minute("rpm", 60);
  const std::vector<OpItem> items = {{0, &slots, 1, 0, nullptr, 0}, {0, &rpm, 5, 0, nullptr, 0}};
  OneKeyOp acquire(ns, "u", OpKind::acquire, items, kStart, 7);
  acquire.op.lease_record = "r1";
  std::vector<ItemResult> r(2);
  ASSERT_TRUE(s.apply(acquire.op, r));
  auto release = [&](std::string_view record, std::uint64_t lease) {
    auto op = std::make_unique<OneKeyOp>(ns, "u", OpKind::release, items, kStart + 1, lease);
    op->op.lease_record = record;
    op->op.lease_guard = true;
    return op;
  };
  auto held = [&] {
    const OneKeyOp read(ns, "u", OpKind::read, items, kStart + 1);
    std::vector<ItemResult> out(2);
    EXPECT_TRUE(s.apply(read.op, out));
    return std::make_pair(out[0].held, out[1].available);
  };
  for (const auto& [record, lease] : {std::pair<std::string_view, std::uint64_t>{"r0", 7},
                                      std::pair<std::string_view, std::uint64_t>{"r1", 8}}) {
    const auto op = release(record, lease);
    const AsyncOutcome out = apply_async_and_wait(s, op->op, r);
    EXPECT_FALSE(out.ok);
    EXPECT_EQ(out.error.rfind("lease_not_found: lease ", 0), 0u) << out.error;
    EXPECT_TRUE(out.io_thread);
    EXPECT_EQ(held(), std::make_pair(std::int64_t{1}, std::int64_t{55}));
    const auto rec = s.get_lease(ns, "u", 7, kStart + 1);
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->data, "r1");
  }
  const auto ok = release("r1", 7);
  const AsyncOutcome out = apply_async_and_wait(s, ok->op, r);
  EXPECT_TRUE(out.ok);
  EXPECT_EQ(out.error, "");
  EXPECT_EQ(held(), std::make_pair(std::int64_t{0}, std::int64_t{60}));
  EXPECT_FALSE(s.get_lease(ns, "u", 7, kStart + 1).has_value());
  EXPECT_THROW(s.apply(ok->op, r), LeaseNotFound);
}

// Verifies leases survive their owner: a process that holds concurrency slots is killed; other
// processes see the slots held until the lease TTL and free after it (the caller's time here,
// so the instant is exact).
TEST_P(RedisStoreTest, LeasesOfAKilledProcessAreReclaimedAfterTheirTtl) {
  RedisStore& s = make(false);
  Worker w({"hold", server_, prefix_, std::to_string(kStart), std::to_string(30 * kSec), "5"});
  ASSERT_EQ(w.line(), "held 5");
  w.kill_now();
  ManualClock clock(kStart + 1);
  Limiter lim(s, clock, LimiterOptions{.ns = "workers"});
  lim.set_limits("m", {Limit::concurrency("slots", 8)});
  EXPECT_EQ(test::available(lim, "holder", "m", "slots"), 3);
  Lease l = lim.try_acquire("holder", "m", {{"slots", 4}});
  EXPECT_FALSE(l.allowed());
  EXPECT_EQ(l.decision().retry_after, 30 * kSec - 1);  // when the dead leases expire
  clock.set(kStart + 30 * kSec);
  EXPECT_EQ(test::available(lim, "holder", "m", "slots"), 8);
  EXPECT_TRUE(lim.try_acquire("holder", "m", {{"slots", 8}}).allowed());
}

// The same by the server's clock: a short TTL, then the slots come back by themselves.
TEST_P(RedisStoreTest, LeasesOfAKilledProcessAreReclaimedByServerTime) {
  RedisStore& s = make(true);
  Worker w({"hold", server_, prefix_, "0", std::to_string(300 * 1000), "8"});
  ASSERT_EQ(w.line(), "held 8");
  w.kill_now();
  SystemClock clock;
  Limiter lim(s, clock, LimiterOptions{.ns = "workers"});
  lim.set_limits("m", {Limit::concurrency("slots", 8)});
  bool reclaimed = false;
  for (int i = 0; i < 2000 && !reclaimed; ++i) {  // bounded: up to ~20 s on a stalled machine
    reclaimed = test::available(lim, "holder", "m", "slots") == 8;
    if (!reclaimed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(reclaimed);
}

// Fleet exactness: 4 processes x 2 threads acquire on one shared rate limit through Redis for
// a bounded time. The bucket is clamped empty until `start` (one unit then), so units accrue
// from `start` on: admitted <= 1 + rate * (last - start) (exact GCRA over the server's clock),
// and >= 99% of 1 + rate * (end - start): demand far exceeds the limit, and the burst (half a
// second of refill) absorbs late starters and stalls (sanitizer builds, shared cores).
TEST_P(RedisStoreTest, FleetOfProcessesAdmitsExactlyTheLimit) {
  RedisStore& s = make(true);
  constexpr Micros kRate = 200;  // per second
  constexpr Micros kBurst = 100;
  const redis::Reply t = s.client().command({"TIME"});
  const Micros server_now =
      std::stoll(t.elements.at(0).str) * kSec + std::stoll(t.elements.at(1).str);
  const Micros start = server_now + 500 * 1000;  // every worker connected by then
  const Micros end = start + 2 * kSec;
  {
    SystemClock clock;
    Limiter lim(s, clock, LimiterOptions{.ns = "workers"});
    lim.set_limits("m", {Limit::per_second("shared", kRate, kBurst)});
    const StateClamp empty_until_start{"shared", 0, start};
    ASSERT_EQ(lim.clamp("fleet", "m", {&empty_until_start, 1}).size(), 1u);
  }
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 4; ++i) {
    workers.push_back(std::make_unique<Worker>(std::vector<std::string>{
        "fleet", server_, prefix_, "2", std::to_string(start), std::to_string(end),
        std::to_string(kRate), std::to_string(kBurst)}));
  }
  long long admitted = 0;
  long long attempts = 0;
  Micros first = end;
  Micros last = 0;
  for (auto& w : workers) {
    const std::string line = w->line();
    long long a = 0, n = 0, f = 0, l = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "admitted %lld attempts %lld first %lld last %lld", &a, &n,
                          &f, &l),
              4)
        << line;
    EXPECT_EQ(w->wait(), 0);
    admitted += a;
    attempts += n;
    first = std::min<Micros>(first, f);
    last = std::max<Micros>(last, l);
  }
  ASSERT_GE(first, start);
  // One unit at `start`, then `rate` per second; everything was attempted before `last`.
  const double most = 1.0 + static_cast<double>(kRate) * static_cast<double>(last - start) / 1e6;
  const double least = 1.0 + static_cast<double>(kRate) * static_cast<double>(end - start) / 1e6;
  std::printf(
      "fleet: admitted %lld of %lld attempts; bounds [%.1f, %.1f]; first attempt "
      "%.1f ms after start\n",
      admitted, attempts, 0.99 * least, most, static_cast<double>(first - start) / 1e3);
  EXPECT_GT(attempts, 2 * admitted) << "demand must exceed the limit";
  EXPECT_LE(static_cast<double>(admitted), most);
  EXPECT_GE(static_cast<double>(admitted), 0.99 * least);
}

// Verifies limits kept in Redis (ConfigMode::store) are shared across processes: a change
// written by another process is seen here once this Limiter's cached entries are config_ttl
// old, not before, and then governs admission.
TEST_P(RedisStoreTest, LimitsWrittenByAnotherProcessAreSeenWithinTheTtl) {
  RedisStore& s = make(false);
  ManualClock clock(kStart);
  LimiterOptions o{.ns = "workers", .config = ConfigMode::store, .config_ttl = 5 * kSec};
  Limiter limiter(s, clock, o);
  limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
  ASSERT_TRUE(test::take(limiter, "u", "m", {{"rpm", 1}}).allowed);

  Worker w({"config", server_, prefix_, "3"});
  EXPECT_EQ(w.line(), "set");
  EXPECT_EQ(w.wait(), 0);
  clock.advance(5 * kSec - 1);
  EXPECT_EQ(limiter.resolve("u", "m").at(0).first, Limit::per_minute("rpm", 10));
  clock.advance(1);
  EXPECT_EQ(limiter.resolve("u", "m").at(0).first, Limit::per_minute("rpm", 3));
  EXPECT_TRUE(test::take(limiter, "u", "m", {{"rpm", 2}}).allowed);  // 1 taken, 3 in all
  EXPECT_EQ(test::take(limiter, "u", "m", {{"rpm", 1}}).code, Code::rate_exceeded);
  const std::string key = s.config_key_of("workers");
  EXPECT_EQ(s.client().command_for_key(key, {"DEL", key}).integer, 1);
}

// ------------------------------------------------------------------------ the audit log

AuditEvent audit_event(std::uint64_t n, std::string entity) {
  AuditEvent e;
  e.time = kStart + static_cast<Micros>(n);
  e.principal = "token:ops";
  e.action = "limits_set";
  e.entity = std::move(entity);
  e.resource = "gpt-4o";
  e.after = cat("[", n, "]");
  return e;
}

std::vector<std::uint64_t> audit_ids(const std::vector<AuditEvent>& events) {
  std::vector<std::uint64_t> ids;
  for (const AuditEvent& e : events) ids.push_back(e.id);
  return ids;
}

// Verifies two RedisStores (two clients, as two processes would have) appending from 8
// threads at once make one sequence: ids unique, increasing in each thread's order, 1..200 in
// all; the layout (a stream in the namespace's slot, entry "n-0" per event, the counter next
// to it); the log is not usage state; and each append trims to its own store's retention.
TEST_P(RedisStoreTest, AuditLogIsOneSequenceAcrossStores) {
  RedisStore& s1 = make(false);
  RedisStore& s2 = make(true);
  const Namespace n1 = s1.open_namespace("audit");
  const Namespace n2 = s2.open_namespace("audit");
  const std::string key = s1.audit_key_of("audit");
  EXPECT_EQ(key, prefix_ + ":{audit}#audit");
  EXPECT_EQ(s1.audit_key_of("n:s}#"), prefix_ + ":{n%3As%7D%23}#audit");
  EXPECT_EQ(redis::key_slot(key), redis::key_slot(s1.config_key_of("audit")));
  EXPECT_TRUE(s1.capabilities().audit);

  constexpr std::size_t kThreads = 8;
  constexpr std::size_t kEach = 25;
  std::vector<std::vector<std::uint64_t>> ids(kThreads);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < kEach; ++i) {
        const AuditEvent e = audit_event(t * 100 + i, cat("t", t));
        ids[t].push_back(t % 2 == 0 ? s1.append_audit(n1, e) : s2.append_audit(n2, e));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::vector<std::uint64_t> every;
  for (std::size_t t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(std::is_sorted(ids[t].begin(), ids[t].end())) << "thread " << t;
    every.insert(every.end(), ids[t].begin(), ids[t].end());
  }
  std::sort(every.begin(), every.end());
  std::vector<std::uint64_t> want(kThreads * kEach);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(every, want);
  const std::vector<AuditEvent> all = s1.read_audit(n1, {.limit = 1000});
  EXPECT_EQ(audit_ids(all), want);
  EXPECT_EQ(s2.read_audit(n2, {.limit = 1000}), all);
  for (std::size_t t = 0; t < kThreads; ++t) {
    EXPECT_EQ(audit_ids(s2.read_audit(n2, {.entity = cat("t", t)})), ids[t]) << "thread " << t;
  }

  auto cmd = [&](std::vector<std::string> args) {
    return s1.client().command_for_key(args.at(1), args);
  };
  EXPECT_EQ(cmd({"TYPE", key}).str, "stream");
  EXPECT_EQ(cmd({"XLEN", key}).integer, 200);
  EXPECT_EQ(cmd({"GET", key + ":seq"}).str, "200");
  const redis::Reply first = cmd({"XRANGE", key, "-", "+", "COUNT", "1"});
  ASSERT_TRUE(first.is_array() && first.elements.size() == 1) << redis::to_string(first);
  EXPECT_EQ(first.elements[0].elements.at(0).str, "1-0");
  EXPECT_EQ(s1.size(), 0u);
  s1.reset_namespace(n1);
  (void)s1.prune(kStart);
  EXPECT_EQ(cmd({"XLEN", key}).integer, 200);

  // A store with a retention of 50 trims to 50; one with the default keeps what it finds.
  RedisStoreOptions small = s1.options();
  small.audit_retention = 50;
  RedisStore s3(small);
  EXPECT_EQ(s3.append_audit(s3.open_namespace("audit"), audit_event(1, "")), 201u);
  EXPECT_EQ(cmd({"XLEN", key}).integer, 50);
  EXPECT_EQ(audit_ids(s1.read_audit(n1, {.limit = 1})), std::vector<std::uint64_t>{152});
  EXPECT_EQ(s1.append_audit(n1, audit_event(2, "")), 202u);
  EXPECT_EQ(cmd({"XLEN", key}).integer, 51);
  EXPECT_EQ(cmd({"DEL", key, key + ":seq"}).integer, 2);
}

// Verifies entries the store did not write as events (an id other than "n-0", a field
// missing, a time that is not a number) are skipped and pages stay full; a well-formed one
// written by hand is an event (extra fields ignored, a field given twice read as its last
// value, by the filter as by the parser); the counter, deleted or left behind the stream,
// goes on after the stream's last id; a counter or stream that cannot be used (not a number,
// at 2^53, the wrong type) makes the call throw StoreUnavailable having appended nothing.
TEST_P(RedisStoreTest, AuditLogSkipsForeignEntriesAndRecoversItsCounter) {
  RedisStore& s = make(false);
  const Namespace ns = s.open_namespace("audit");
  const std::string key = s.audit_key_of("audit");
  const std::string seq = key + ":seq";
  auto cmd = [&](std::vector<std::string> args) {
    const redis::Reply r = s.client().command_for_key(args.at(1), args);
    EXPECT_FALSE(r.is_error()) << redis::to_string(r);
    return r;
  };
  EXPECT_EQ(s.append_audit(ns, audit_event(1, "e1")), 1u);
  EXPECT_EQ(s.append_audit(ns, audit_event(2, "e2")), 2u);
  const std::vector<std::string> fields = {"t", "5", "p", "hand", "a", "parent_set", "e",
                                           "",  "r", "",  "b",    "",  "f",          ""};
  auto xadd = [&](const std::string& id, std::vector<std::string> f) {
    std::vector<std::string> args = {"XADD", key, id};
    args.insert(args.end(), f.begin(), f.end());
    return cmd(args);
  };
  (void)xadd("3-0", {"p", "only"});  // fields missing
  (void)xadd("4-1", fields);         // not an id this store gives
  std::vector<std::string> bad_time = fields;
  bad_time[1] = "soon";
  (void)xadd("5-0", bad_time);
  std::vector<std::string> extra = fields;
  extra[7] = "e6";
  extra.insert(extra.end(), {"x", "extra"});
  (void)xadd("6-0", extra);  // an event: id 6, entity e6
  std::vector<std::string> twice = fields;
  twice[7] = "first";
  twice.insert(twice.end(), {"e", "second"});
  (void)xadd("7-0", twice);  // an event: id 7, entity second
  std::vector<std::string> bad_json = fields;
  bad_json[13] = "{";
  (void)xadd("7-1", bad_json);

  // The counter (2) is behind the stream (7-1): the append goes on after it.
  EXPECT_EQ(s.append_audit(ns, audit_event(8, "e8")), 8u);
  EXPECT_EQ(cmd({"GET", seq}).str, "8");
  const std::vector<std::uint64_t> want = {1, 2, 6, 7, 8};
  EXPECT_EQ(audit_ids(s.read_audit(ns, {})), want);
  std::vector<std::uint64_t> paged;
  for (AuditQuery q{.limit = 2};;) {
    const auto page = s.read_audit(ns, q);
    for (const AuditEvent& e : page) paged.push_back(e.id);
    if (page.size() < q.limit) break;
    q.after_id = page.back().id;
  }
  EXPECT_EQ(paged, want);
  EXPECT_EQ(audit_ids(s.read_audit(ns, {.limit = 2, .newest_first = true})),
            (std::vector<std::uint64_t>{8, 7}));
  EXPECT_EQ(audit_ids(s.read_audit(ns, {.before_id = 7, .limit = 1, .newest_first = true})),
            std::vector<std::uint64_t>{6});
  const std::vector<AuditEvent> second = s.read_audit(ns, {.entity = "second"});
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0], (AuditEvent{7, 5, "hand", "parent_set", "second", "", "", ""}));
  EXPECT_TRUE(s.read_audit(ns, {.entity = "first"}).empty());
  EXPECT_EQ(audit_ids(s.read_audit(ns, {.entity = "e6"})), std::vector<std::uint64_t>{6});

  // The counter deleted: the next append still follows the stream.
  EXPECT_EQ(cmd({"DEL", seq}).integer, 1);
  EXPECT_EQ(s.append_audit(ns, audit_event(9, "")), 9u);

  // Unusable counters: refused, nothing appended.
  for (const std::vector<std::string>& spoil :
       {std::vector<std::string>{"SET", seq, "abc"},
        std::vector<std::string>{"SET", seq, "9007199254740991"},
        std::vector<std::string>{"HSET", seq, "f", "v"}}) {
    SCOPED_TRACE(spoil[0] + " " + spoil.back());
    (void)cmd({"DEL", seq});
    (void)cmd(spoil);
    EXPECT_THROW((void)s.append_audit(ns, audit_event(10, "")), StoreUnavailable);
    EXPECT_EQ(cmd({"XLEN", key}).integer, 10);
  }
  (void)cmd({"SET", seq, "9"});
  EXPECT_EQ(s.append_audit(ns, audit_event(10, "")), 10u);

  // A stream key of another type: appends and reads fail, loudly.
  const Namespace other = s.open_namespace("audit-other");
  const std::string other_key = s.audit_key_of("audit-other");
  (void)cmd({"SET", other_key, "not a stream"});
  EXPECT_THROW((void)s.append_audit(other, audit_event(1, "")), StoreUnavailable);
  EXPECT_THROW((void)s.read_audit(other, {}), StoreUnavailable);
  (void)cmd({"DEL", other_key, other_key + ":seq"});
  (void)cmd({"DEL", key, seq});
}

INSTANTIATE_TEST_SUITE_P(Servers, RedisStoreTest, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "cluster" : "standalone"; });

}  // namespace
}  // namespace admit
