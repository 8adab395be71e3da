# Shared by the black-box HTTP tests of admitd and admit-provider-sim (sourced, not run):
# start the server on a free port, talk to it with curl, count checks, print the summary.
#
#   BIN=path/to/server; NAME=admitd           # NAME prefixes the start / stop check names
#   source "$(dirname "${BASH_SOURCE[0]}")/../support/http_test.sh"
#   if start_server --port 0 ...; then req GET /healthz; check "healthz 200" is 200; stop_server; fi
#   summary                                   # "N passed, N failed"; fails if any failed
#
# Both servers print "listening on http://HOST:PORT" as their first stdout line: start_server
# reads URL and PORT from it. req sets STATUS, BODY and HEADERS for the checks.
set -uo pipefail

NAME=${NAME:-server}
TMP=$(mktemp -d)
PID=""
pass=0
fail=0

http_test_cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  rm -rf "$TMP"
}
trap http_test_cleanup EXIT

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && echo "       $2"; }
# check NAME COMMAND...: passes if the command succeeds.
check() {
  local name=$1; shift
  if "$@"; then ok "$name"; else ko "$name" "status=$STATUS body=$(head -c 600 <<<"$BODY")"; fi
}

# start_server ARGS...: starts "$BIN" ARGS... (which should ask for port 0) in the background
# and reads URL and PORT from its first stdout line (bounded: 10 s). Its stderr goes to $LOG.
start_server() {
  OUT="$TMP/server.out"
  LOG="$TMP/server.log"
  "$BIN" "$@" >"$OUT" 2>"$LOG" &
  PID=$!
  URL=""
  for _ in $(seq 100); do
    URL=$(head -1 "$OUT" 2>/dev/null | sed -n 's|^listening on \(http://.*\)$|\1|p')
    [ -n "$URL" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$URL" ]; then
    ko "$NAME starts with $*" "$(cat "$OUT" "$LOG")"
    return 1
  fi
  PORT=${URL##*:}
  ok "$NAME starts with $* ($URL)"
}

# listening_url FILE: the URL a server started in the background printed as its first stdout
# line (`listening on http://HOST:PORT`) into FILE; waits up to 10 s, "" if none came.
listening_url() {
  local u=""
  for _ in $(seq 100); do
    u=$(head -1 "$1" 2>/dev/null | sed -n 's|^listening on \(http://.*\)$|\1|p')
    [ -n "$u" ] && break
    sleep 0.1
  done
  echo "$u"
}

# stop_server [SIGNAL]: sends SIGNAL (default TERM), expects exit 0 within 5 s and the port
# closed.
stop_server() {
  local sig=${1:-TERM}
  kill "-$sig" "$PID"
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    ko "$NAME exits on SIG$sig" "still running"
    kill -KILL "$PID"
  else
    wait "$PID"; local rc=$?
    if [ "$rc" -eq 0 ]; then ok "$NAME exits 0 on SIG$sig"; else ko "$NAME exits 0 on SIG$sig" "rc=$rc"; fi
  fi
  PID=""
  if curl -s -o /dev/null --max-time 1 "$URL/healthz"; then ko "port closed after exit"; else ok "port closed after exit"; fi
}

# req METHOD PATH [BODY [CURL ARGS...]]: sets STATUS, BODY and HEADERS (a file). A BODY of
# "@FILE" sends the file.
req() {
  local method=$1 path=$2; shift 2
  local args=(-sS -N -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" --max-time 10)
  if [ $# -ge 1 ]; then args+=(-H 'Content-Type: application/json' --data-binary "$1"); shift; fi
  STATUS=$(curl "${args[@]}" "$@" "$URL$path" 2>"$TMP/curl.err") || STATUS="000 $(cat "$TMP/curl.err")"
  BODY=$(cat "$TMP/body" 2>/dev/null)
  HEADERS="$TMP/headers"
}
is() { [ "$STATUS" = "$1" ]; }
has() { grep -qF -- "$1" <<<"$BODY"; }
header() { grep -i "^$1:" "$HEADERS" | head -1 | cut -d: -f2- | tr -d ' \r'; }
header_is() { [ "$(header "$1")" = "$2" ]; }
header_matches() { [[ "$(header "$1")" =~ $2 ]]; }
no_header() { ! grep -qi "^$1:" "$HEADERS"; }

# summary: the closing line; returns non-zero if any check failed.
summary() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
