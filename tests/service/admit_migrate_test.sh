#!/usr/bin/env bash
# Black-box test of `admit migrate`: config/sample-state.yaml into a SQLite file and back
# (the re-exported text identical), the summary lines on stderr, --force, and the exit codes of
# a bad state file (1), a bad command line (2) and a missing database (1).
# Usage: bash tests/service/admit_migrate_test.sh path/to/admit
set -uo pipefail
BIN=${1:?usage: admit_migrate_test.sh ADMIT_BINARY}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SAMPLE=$ROOT/config/sample-state.yaml
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && echo "       $2"; }

# run ARGS...: runs admit, setting RC, OUT (its stdout) and ERR (its stderr).
run() {
  "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
  RC=$?
  OUT=$(cat "$TMP/out")
  ERR=$(cat "$TMP/err")
}
# expect NAME CODE [TEXT]: the last run exited with CODE and its stderr contains TEXT.
expect() {
  if [ "$RC" -eq "$2" ] && { [ -z "${3:-}" ] || grep -qF -- "$3" <<<"$ERR"; }; then
    ok "$1"
  else
    ko "$1" "exit $RC (want $2), stderr: $ERR"
  fi
}

# ---------------------------------------------------------------- both directions
run migrate --from "$SAMPLE" --to "$TMP/admit.db"
expect "import exits 0" 0 \
  "admit migrate: imported 4 limit sets, 1 parent, 5 state rows, 1 hold into $TMP/admit.db (namespace default)"
expect "import reports progress" 0 "admit migrate: reading $SAMPLE"
[ -z "$OUT" ] && ok "import prints nothing on stdout" || ko "import prints nothing on stdout" "$OUT"

run migrate --from "$TMP/admit.db" --to "$TMP/state.yaml"
expect "export exits 0" 0 \
  "exported 4 limit sets, 1 parent, 5 state rows, 1 hold from $TMP/admit.db (namespace default) to $TMP/state.yaml"
grep -qF -- "- {name: rpd, window: day, limit: 10000, reset_at: \"00:00\", time_zone: America/Los_Angeles}" \
  "$TMP/state.yaml" && ok "export writes limits in the schema's form" ||
  ko "export writes limits in the schema's form" "$(cat "$TMP/state.yaml")"
grep -qF -- "- {entity: user-1, resource: gpt-4o, limit: rpd, kind: window, window_end_us: 1764748800000000, used: 9999}" \
  "$TMP/state.yaml" && ok "export writes the state records" ||
  ko "export writes the state records" "$(cat "$TMP/state.yaml")"

run migrate --from "$TMP/state.yaml" --to "$TMP/again.sqlite3"
expect "re-import exits 0" 0 "imported 4 limit sets, 1 parent, 5 state rows, 1 hold"
run migrate --from "$TMP/again.sqlite3" --to "$TMP/again.yml"
expect "re-export exits 0" 0
cmp -s "$TMP/state.yaml" "$TMP/again.yml" && ok "YAML -> db -> YAML -> db -> YAML is stable" ||
  ko "YAML -> db -> YAML -> db -> YAML is stable" "$(diff "$TMP/state.yaml" "$TMP/again.yml")"

# ---------------------------------------------------------------- --force
before=$(cat "$TMP/state.yaml")
echo "# mine" >"$TMP/state.yaml"
run migrate --from "$TMP/admit.db" --to "$TMP/state.yaml"
expect "existing YAML refused: exit 1" 1 "already exists (force / --force overwrites it)"
[ "$(cat "$TMP/state.yaml")" = "# mine" ] && ok "refused export left the file alone" ||
  ko "refused export left the file alone"
run migrate --from "$TMP/admit.db" --to "$TMP/state.yaml" --force
expect "--force overwrites: exit 0" 0
[ "$(cat "$TMP/state.yaml")" = "$before" ] && ok "--force wrote the export" ||
  ko "--force wrote the export"

# ---------------------------------------------------------------- errors
printf 'resources:\n  m: [{name: rpm, per: minute, limit: 5}]\nstate:\n  - {entity: u, resource: m, limit: rpd, kind: rate, tat_us: 1}\n' \
  >"$TMP/bad.yaml"
run migrate --from "$TMP/bad.yaml" --to "$TMP/bad.db"
expect "unknown limit in a record: exit 1, file:line:col" 1 \
  "error: invalid state[0].limit 'rpd': no limit of that name applies to entity 'u' on resource 'm' (its limits: rpm) ($TMP/bad.yaml:4:37)"
[ ! -e "$TMP/bad.db" ] && ok "a bad file creates no database" || ko "a bad file creates no database"

run migrate --from "$TMP/nope.db" --to "$TMP/nope.yaml"
expect "missing database: exit 1" 1 "invalid database '$TMP/nope.db'"
run migrate --from "$TMP/admit.db" --to "$TMP/other.yaml" --namespace prod
expect "unknown namespace: exit 1" 1 "invalid namespace 'prod': is not in $TMP/admit.db (its namespaces: default)"

run migrate --from "$SAMPLE" --to "$TMP/x.json"
expect "unknown extension: exit 2" 2 "cannot tell the direction"
run migrate --from "$SAMPLE" --to "$TMP/x.db" --namespace prod
expect "--namespace on import: exit 2" 2 "--namespace is for export"
run migrate --to "$TMP/x.db"
expect "missing --from: exit 2" 2 "--from is required"
run
expect "no subcommand: exit 2" 2 "A subcommand is required"
run migrate --help
expect "--help: exit 0" 0
grep -qF -- "--force" <<<"$OUT" && ok "--help lists --force" || ko "--help lists --force" "$OUT"
[ -e "$TMP/x.db" ] && ko "usage errors create nothing" || ok "usage errors create nothing"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
