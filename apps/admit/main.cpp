// admit: the command-line tool. `admit migrate --from A --to B` moves one namespace's limits
// and usage state between a YAML state file and a SqliteStore file, the direction chosen by the
// file extensions (docs/migrate.md). Progress, warnings and the summary go to stderr.
// `admit tokens [--model M | --encoding E] [FILE|-]` counts tokens offline (tokens_command.cpp,
// docs/tokens.md).
// `admit audit --store URL` prints a namespace's audit log, one JSON object per line
// (audit_command.cpp).
// Exit codes: 0 done; 1 the migration failed (a bad input file, a database error, an existing
// YAML file without --force), the input to count could not be read or the audit log's store
// could not be opened or read; 2 a bad command line.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "admit/core/error.hpp"
#include "admit/version.hpp"
#include "audit_command.hpp"
#include "cli_common.hpp"
#include "service/migrate.hpp"
#include "tokens_command.hpp"

namespace {

using admit::cli::kExitFailure;
using admit::cli::kExitOk;
using admit::cli::kExitUsage;

enum class FileKind { yaml, sqlite, unknown };

FileKind kind_of(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".yaml" || ext == ".yml") return FileKind::yaml;
  if (ext == ".db" || ext == ".sqlite" || ext == ".sqlite3") return FileKind::sqlite;
  return FileKind::unknown;
}

void say(const std::string& line) { admit::cli::say("migrate", line); }

int usage(const std::string& message) {
  say("error: " + message + " (see admit migrate --help)");
  return kExitUsage;
}

std::string counts(const admit::service::MigrationSummary& s) {
  auto n = [](std::size_t v, const char* one, const char* many) {
    return std::to_string(v) + " " + (v == 1 ? one : many);
  };
  return n(s.limit_sets, "limit set", "limit sets") + ", " + n(s.parents, "parent", "parents") +
         ", " + n(s.state_rows, "state row", "state rows") + ", " + n(s.holds, "hold", "holds");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"admit: admission control / rate limiting for LLM API traffic"};
  app.set_version_flag("--version", "admit " + std::string(admit::version_string));
  app.require_subcommand(1);
  CLI::App* migrate = app.add_subcommand(
      "migrate",
      "Import a YAML state file (limits + usage state) into a SQLite store, or export one "
      "namespace of a SQLite store to YAML; the direction follows the extensions "
      "(.yaml/.yml, .db/.sqlite/.sqlite3)");
  std::string from;
  std::string to;
  std::string ns = "default";
  bool force = false;
  migrate->add_option("--from", from, "the file to read (state.yaml or admit.db)")->required();
  migrate->add_option("--to", to, "the file to write (admit.db, created if missing, or state.yaml)")
      ->required();
  CLI::Option* ns_opt =
      migrate->add_option("--namespace", ns, "export only: the namespace to export")
          ->capture_default_str();
  migrate->add_flag("--force", force, "export only: overwrite an existing YAML file");
  admit::cli::TokensOptions tokens_options;
  CLI::App* tokens = admit::cli::add_tokens_command(app, tokens_options);
  admit::cli::AuditOptions audit_options;
  CLI::App* audit = admit::cli::add_audit_command(app, audit_options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (tokens->parsed()) return admit::cli::run_tokens(tokens_options);
  if (audit->parsed()) return admit::cli::run_audit(audit_options);

  const FileKind source = kind_of(from);
  const FileKind target = kind_of(to);
  const bool import = source == FileKind::yaml && target == FileKind::sqlite;
  const bool export_ = source == FileKind::sqlite && target == FileKind::yaml;
  if (!import && !export_) {
    return usage("cannot tell the direction from '" + from + "' to '" + to +
                 "': one file must be .yaml/.yml and the other .db/.sqlite/.sqlite3");
  }
  if (import && ns_opt->count() > 0) {
    return usage("--namespace is for export; an import takes the namespace the YAML file names");
  }
  if (import && force)
    return usage("--force is for export (an import never overwrites a YAML file)");

  try {
    if (import) {
      const auto s = admit::service::migrate_yaml_to_sqlite(from, to, say);
      say("imported " + counts(s) + " into " + to + " (namespace " + s.ns + ")");
    } else {
      const auto s = admit::service::migrate_sqlite_to_yaml(
          from, to, admit::service::ExportOptions{.ns = ns, .force = force}, say);
      say("exported " + counts(s) + " from " + from + " (namespace " + s.ns + ") to " + to +
          (s.skipped > 0 ? "; skipped " + std::to_string(s.skipped) + " state rows" : ""));
    }
    return kExitOk;
  } catch (const admit::Error& e) {
    say(std::string("error: ") + e.what());
  } catch (const std::exception& e) {
    say(std::string("fatal: ") + e.what());
  }
  return kExitFailure;
}
