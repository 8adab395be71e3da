// `admit audit` end to end: events appended through a SqliteStore (and a RedisStore, with
// ADMIT_TEST_REDIS_URL) are printed by the CLI as JSON lines, to_json's form, with the
// query's filters, bounds, order and limit; bad command lines exit 2, unreachable stores 1.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "admit/store/audit.hpp"
#include "admit/store/redis_store.hpp"
#include "admit/store/sqlite_store.hpp"
#include "support/redis_env.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using test::cat;

struct CliRun {
  int status = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs `admit <args>` (arguments as the shell reads them), capturing stdout and stderr.
CliRun admit_cli(const test::TempDir& dir, const std::string& args) {
  const std::string out = dir.file("out.txt");
  const std::string err = dir.file("err.txt");
  const std::string cmd = cat(ADMIT_CLI, " ", args, " >", out, " 2>", err);
  const int rc = std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe): one thread
  CliRun r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

AuditEvent event(int n, std::string entity) {
  AuditEvent e;
  e.time = 1'700'000'000'000'000 + n;
  e.principal = "token:ops \"admin\"";
  e.action = n % 2 == 0 ? "limits_set" : "parent_set";
  e.entity = std::move(entity);
  e.resource = "gpt-4o";
  e.before = n == 1 ? "" : cat("[", n - 1, "]");
  e.after = cat("[", n, "]");
  return e;
}

std::vector<AuditEvent> append(Store& store, const Namespace& ns, int n) {
  std::vector<AuditEvent> out;
  for (int i = 1; i <= n; ++i) {
    AuditEvent e = event(i, i % 2 == 0 ? "team-a" : "user-1");
    e.id = store.append_audit(ns, e);
    out.push_back(e);
  }
  return out;
}

std::string lines(const std::vector<AuditEvent>& events, std::vector<std::size_t> which) {
  std::string s;
  for (const std::size_t i : which) s += cat(to_json(events.at(i)), "\n");
  return s;
}

// Verifies the CLI prints a SQLite store's log: one namespace, filters, bounds, order, limit,
// each line exactly to_json's; nothing (exit 0) for an empty log; exit 2 for a bad limit, a
// store kind it cannot read or a file that does not exist (which it does not create).
TEST(AdmitAuditCli, PrintsASqliteStoresLog) {
  test::TempDir dir;
  const std::string path = dir.file("admit.db");
  SqliteStore store(SqliteStoreOptions{.path = path});
  const std::vector<AuditEvent> events = append(store, store.open_namespace("tenant"), 5);
  (void)append(store, store.open_namespace("other"), 2);
  const std::string at = cat("audit --store sqlite:", path, " --namespace tenant");

  CliRun r = admit_cli(dir, at);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, lines(events, {0, 1, 2, 3, 4}));
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(admit_cli(dir, cat(at, " --limit 2 --after 2")).out, lines(events, {2, 3}));
  EXPECT_EQ(admit_cli(dir, cat(at, " --entity team-a")).out, lines(events, {1, 3}));
  EXPECT_EQ(admit_cli(dir, cat(at, " --resource gpt-4o --limit 1 --newest-first")).out,
            lines(events, {4}));
  EXPECT_EQ(admit_cli(dir, cat(at, " --before 3 --newest-first")).out, lines(events, {1, 0}));
  r = admit_cli(dir, cat("audit --store sqlite:", path));  // the default namespace: empty
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");

  r = admit_cli(dir, cat(at, " --limit 0"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("admit audit: error: invalid limit '0'"), std::string::npos) << r.err;
  r = admit_cli(dir, cat("audit --store sqlite:", dir.file("missing.db")));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("no such file"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("missing.db")));
  r = admit_cli(dir, "audit --store memory");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--store must be"), std::string::npos) << r.err;
  EXPECT_EQ(admit_cli(dir, "audit").status, 2);  // --store is required
  EXPECT_EQ(admit_cli(dir, cat(at, " --limit many")).status, 2);
}

// Verifies the CLI reads a Redis store's log under the prefix given, and an unreachable server
// exits 1 with the error on stderr.
TEST(AdmitAuditCli, PrintsARedisStoresLog) {
  test::TempDir dir;
  CliRun r = admit_cli(dir, "audit --store redis://127.0.0.1:1");  // nothing listens
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("admit audit: error:"), std::string::npos) << r.err;

  const auto url = test::env("ADMIT_TEST_REDIS_URL");
  if (!url) {
    if (test::redis_required()) FAIL() << "ADMIT_TEST_REDIS_URL is not set";
    GTEST_SKIP() << "ADMIT_TEST_REDIS_URL is not set (scripts/test starts the servers)";
  }
  RedisStoreOptions o;
  o.client = redis::parse_url(*url);
  o.prefix = cat("admit-audit-cli/", ::getpid());
  RedisStore store(o);
  const Namespace ns = store.open_namespace("tenant");
  const std::vector<AuditEvent> events = append(store, ns, 3);
  r = admit_cli(dir, cat("audit --store ", *url, " --prefix ", o.prefix, " --namespace tenant"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, lines(events, {0, 1, 2}));
  r = admit_cli(dir, cat("audit --store ", *url, " --namespace tenant"));  // another prefix
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  const std::string k = store.audit_key_of("tenant");
  (void)store.client().command_for_key(k, {"DEL", k, cat(k, ":seq")});
}

}  // namespace
}  // namespace admit
