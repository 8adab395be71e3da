// `admit audit --store URL [--namespace NS] [--entity E] [--resource R] [--limit N]
// [--after ID] [--before ID] [--newest-first] [--prefix P]`.
#include "audit_command.hpp"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "admit/core/error.hpp"
#include "admit/store/redis_client.hpp"
#include "admit/store/redis_store.hpp"
#include "admit/store/sqlite_store.hpp"
#include "admit/store/store.hpp"
#include "cli_common.hpp"

namespace admit::cli {

namespace {

void say(const std::string& line) { cli::say("audit", line); }

// The store --store names: sqlite:PATH (an existing file: opening would create an empty store)
// or a Redis URL (redis::parse_url). nullptr, having said why, for anything else.
std::unique_ptr<Store> open_store(const AuditOptions& o) {
  constexpr std::string_view kSqlite = "sqlite:";
  const std::string& url = o.store;
  if (url.starts_with(kSqlite)) {
    SqliteStoreOptions so;
    so.path = url.substr(kSqlite.size());
    if (so.path.empty() || !std::filesystem::exists(so.path)) {
      say("error: no such file '" + so.path + "'");
      return nullptr;
    }
    return std::make_unique<SqliteStore>(so);
  }
  if (url.starts_with("redis://") || url.starts_with("rediss://") ||
      url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")) {
    RedisStoreOptions ro;
    ro.client = redis::parse_url(url);
    ro.prefix = o.prefix;
    return std::make_unique<RedisStore>(ro);
  }
  say("error: --store must be sqlite:PATH or a redis://, rediss://, redis+cluster:// or "
      "rediss+cluster:// URL (a memory store lives in its own process)");
  return nullptr;
}

}  // namespace

CLI::App* add_audit_command(CLI::App& app, AuditOptions& options) {
  CLI::App* audit = app.add_subcommand(
      "audit",
      "Print a namespace's audit log (who changed what, with the state before and after) from "
      "a SQLite or Redis store, one JSON object per line, oldest first");
  audit
      ->add_option("--store", options.store,
                   "sqlite:PATH, redis://[:password@]host:port, redis+cluster://host:port,... "
                   "(rediss:// for TLS)")
      ->required();
  audit->add_option("--prefix", options.prefix, "a Redis store's key prefix")
      ->capture_default_str();
  audit->add_option("--namespace", options.ns, "the namespace")->capture_default_str();
  audit->add_option("--entity", options.query.entity, "only events of this entity");
  audit->add_option("--resource", options.query.resource, "only events of this resource");
  audit->add_option("--limit", options.query.limit, "at most this many events (1-1000)")
      ->capture_default_str();
  audit->add_option("--after", options.query.after_id,
                    "only events with a greater id (to page: the last id printed)");
  audit->add_option("--before", options.query.before_id,
                    "only events with a smaller id (to page with --newest-first)");
  audit->add_flag("--newest-first", options.query.newest_first, "the newest events first");
  return audit;
}

int run_audit(const AuditOptions& options) {
  try {
    validate_audit_query(options.query);
    const std::unique_ptr<Store> store = open_store(options);
    if (store == nullptr) return kExitUsage;
    const Namespace ns = store->open_namespace(options.ns);
    for (const AuditEvent& e : store->read_audit(ns, options.query)) {
      const std::string line = to_json(e) + "\n";
      if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size()) return kExitFailure;
    }
    return std::fflush(stdout) == 0 ? kExitOk : kExitFailure;
  } catch (const ValidationError& e) {
    say(std::string("error: ") + e.what());
    return kExitUsage;
  } catch (const Error& e) {
    say(std::string("error: ") + e.what());
  } catch (const std::exception& e) {
    say(std::string("fatal: ") + e.what());
  }
  return kExitFailure;
}

}  // namespace admit::cli
