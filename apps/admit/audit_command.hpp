// `admit audit`: prints a namespace's audit log from a SQLite or Redis store, one JSON object
// per line (Store::read_audit, admit::to_json; docs/design.md, "Audit log").
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "admit/store/audit.hpp"

namespace admit::cli {

struct AuditOptions {
  std::string store;             // --store: sqlite:PATH or a Redis URL
  std::string prefix = "admit";  // --prefix: a Redis store's key prefix
  std::string ns = "default";    // --namespace
  AuditQuery query;              // --entity, --resource, --limit, --after, --before, --newest-first
};

/// Adds the `audit` subcommand to `app`, filling `options` when it is parsed.
CLI::App* add_audit_command(CLI::App& app, AuditOptions& options);

/// Runs `admit audit`: prints the events the query selects on stdout, one JSON line each.
/// @return 0 done (also when there are none); 1 the store could not be opened or read; 2 a bad
///         command line (a bad query, an unknown store kind, a SQLite file that does not exist).
int run_audit(const AuditOptions& options);

}  // namespace admit::cli
