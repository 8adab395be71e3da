#!/usr/bin/env bash
# Black-box HTTP test of admitd: starts the binary on a free loopback port and checks the
# routes with curl. Usage: bash tests/service/admitd_test.sh path/to/admitd
set -uo pipefail

BIN=${1:?usage: admitd_test.sh ADMITD_BINARY}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d)
PID=""
pass=0
fail=0

cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && echo "       $2"; }
# check NAME COMMAND...: passes if the command succeeds.
check() {
  local name=$1; shift
  if "$@"; then ok "$name"; else ko "$name" "status=$STATUS body=$BODY"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start CONFIG: starts admitd, waits until /healthz answers (bounded).
start() {
  PORT=$(free_port)
  URL="http://127.0.0.1:$PORT"
  LOG="$TMP/admitd-$PORT.log"
  "$BIN" --config "$1" --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null --max-time 1 "$URL/healthz" 2>/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  ko "admitd starts with $1" "$(cat "$LOG")"
  return 1
}

# stop SIGNAL: signals admitd, expects a clean exit (0) within 5 s and the port closed.
stop() {
  kill "-$1" "$PID"
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    ko "admitd exits on SIG$1" "still running"
    kill -KILL "$PID"
  else
    wait "$PID"; local rc=$?
    if [ "$rc" -eq 0 ]; then ok "admitd exits 0 on SIG$1"; else ko "admitd exits 0 on SIG$1" "rc=$rc"; fi
  fi
  PID=""
  if curl -s -o /dev/null --max-time 1 "$URL/healthz"; then ko "port closed after exit"; else ok "port closed after exit"; fi
}

# req METHOD PATH [BODY]: sets STATUS, BODY and HEADERS (a file).
req() {
  local args=(-sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$1" --max-time 5)
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  STATUS=$(curl "${args[@]}" "$URL$2" 2>"$TMP/curl.err") || STATUS="000 $(cat "$TMP/curl.err")"
  BODY=$(cat "$TMP/body" 2>/dev/null)
  HEADERS="$TMP/headers"
}
is() { [ "$STATUS" = "$1" ]; }
has() { grep -qF -- "$1" <<<"$BODY"; }
header() { grep -i "^$1:" "$HEADERS" | head -1 | cut -d: -f2- | tr -d ' \r'; }
json_ct() { [ "$(header content-type)" = "application/json" ]; }

# ---------------------------------------------------------------- sample config
if start "$ROOT/config/sample.yaml"; then
  req GET /healthz
  check "healthz 200" is 200
  check "healthz body" has '{"status":"ok"}'
  check "content-type json" json_ct

  req POST /v1/decide '{"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":1200}}'
  check "decide 200" is 200
  check "decide allowed" has '"allowed":true'
  check "decide code ok" has '"code":"ok"'
  check "decide stats include the parent team-a" has '"entity":"team-a"'

  req GET /v1/limits
  check "limits 200" is 200
  check "limits list gpt-4o" has '"resource":"gpt-4o"'
  check "limits describe" has '"description":"tpm: 30000 per 1m (burst 30000)"'

  # tpm 30000 per minute: three acquires of 10000 fit, the fourth is refused.
  body='{"entity":"svc-test","resource":"gpt-4o","amounts":{"rpm":1,"tpm":10000},"timeout_ms":0}'
  n200=0
  for _ in 1 2 3; do req POST /v1/acquire "$body"; is 200 && has '"allowed":true' && n200=$((n200 + 1)); done
  [ "$n200" -eq 3 ] && ok "3 acquires of tpm 10000 allowed" || ko "3 acquires of tpm 10000 allowed" "$n200"
  req POST /v1/acquire "$body"
  check "4th acquire 429" is 429
  check "4th acquire rate_exceeded on tpm" has '"code":"rate_exceeded"'
  ra=$(header retry-after)
  [[ "$ra" =~ ^[0-9]+$ ]] && [ "$ra" -ge 1 ] && [ "$ra" -le 20 ] &&
    ok "Retry-After $ra" || ko "Retry-After header (1..20)" "'$ra'"

  req POST /v1/decide '{"entity":"user-1","resource":"gpt-4o",'
  check "bad JSON 400" is 400
  check "bad JSON names the field" has '"field":"body"'
  req POST /v1/decide '{"resource":"gpt-4o","amounts":{}}'
  check "missing entity 400" is 400
  check "missing entity named" has '"field":"entity"'
  req POST /v1/decide '{"entity":"u","resource":"gpt-4o","amounts":{"rpm":"one"}}'
  check "wrong type 400" is 400
  check "wrong type names amounts.rpm" has '"field":"amounts.rpm"'
  req POST /v1/decide '{"entity":"u","resource":"gpt-4o","amounts":{"rpm":-1}}'
  check "negative amount 400" is 400
  req POST /v1/decide '{"entity":"bad entity","resource":"gpt-4o","amounts":{}}'
  check "invalid entity name 400 (ValidationError)" is 400
  req POST /v1/acquire '{"entity":"u","resource":"gpt-4o","amounts":{"rpm":1},"timeout_ms":500}'
  check "timeout_ms != 0 is 400" has '"field":"timeout_ms"'

  req POST /v1/decide '{"entity":"u","resource":"gpt-4o","amounts":{"tokens":5}}'
  check "unknown limit: decide 200" is 200
  check "unknown limit: code unknown_limit" has '"code":"unknown_limit"'
  req POST /v1/acquire '{"entity":"u","resource":"gpt-4o","amounts":{"tokens":5}}'
  check "unknown limit: acquire 400" is 400
  check "unknown limit: acquire code" has '"code":"unknown_limit"'

  req GET /nope
  check "unknown route 404" is 404
  req POST /healthz '{}'
  check "wrong method 405" is 405
  check "405 has Allow: GET" test "$(header allow)" = "GET"

  head -c 70000 /dev/zero | tr '\0' x >"$TMP/big"
  req POST /v1/decide "@$TMP/big"
  check "body over 64 KiB is 413" is 413

  # A second instance on the same port fails with exit code 1 and says why.
  "$BIN" --config "$ROOT/config/sample.yaml" --listen "127.0.0.1:$PORT" >"$TMP/second.log" 2>&1
  rc=$?
  [ "$rc" -eq 1 ] && grep -q "in use" "$TMP/second.log" &&
    ok "port in use: exit 1" || ko "port in use: exit 1" "rc=$rc $(cat "$TMP/second.log")"

  req GET /healthz
  check "still healthy after bad input" is 200
  stop TERM
fi

# ---------------------------------------------------------------- small limits: rpm 5
if start "$HERE/test_config.yaml"; then
  body='{"entity":"user-1","resource":"small-model","amounts":{"rpm":1,"tpm":10}}'
  for _ in 1 2 3; do req POST /v1/decide "$body"; done
  check "decide does not consume" has '"limit":"rpm","kind":"rate","source":"resource","capacity":5,"available":5,'
  n200=0
  for _ in 1 2 3 4 5; do req POST /v1/acquire "$body"; is 200 && n200=$((n200 + 1)); done
  [ "$n200" -eq 5 ] && ok "rpm 5: 5 acquires allowed" || ko "rpm 5: 5 acquires allowed" "$n200"
  req POST /v1/acquire "$body"
  check "rpm 5: 6th acquire 429" is 429
  check "rpm 5: code rate_exceeded" has '"code":"rate_exceeded"'
  check "rpm 5: violation names rpm" has '"limit":"rpm","kind":"rate"'
  ra=$(header retry-after)
  [[ "$ra" =~ ^[0-9]+$ ]] && [ "$ra" -ge 11 ] && [ "$ra" -le 12 ] &&
    ok "rpm 5: Retry-After $ra (12 s per request)" || ko "rpm 5: Retry-After 11..12" "'$ra'"
  req POST /v1/acquire '{"entity":"user-2","resource":"small-model","amounts":{"rpm":1}}'
  check "other entity unaffected" is 200
  stop INT
fi

# ---------------------------------------------------------------- bad flags and config
printf 'resources:\n  m:\n    - {name: rpm, per: fortnight, limit: 5}\n' >"$TMP/bad.yaml"
"$BIN" --config "$TMP/bad.yaml" --listen 127.0.0.1:0 >"$TMP/bad.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -qF "resources.m[0].per 'fortnight'" "$TMP/bad.log" && grep -qF "bad.yaml:3:" "$TMP/bad.log" &&
  ok "bad config: exit 2 naming path, value and file" || ko "bad config: exit 2" "rc=$rc $(cat "$TMP/bad.log")"
"$BIN" --no-such-flag >"$TMP/flag.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && ok "bad flag: exit 2" || ko "bad flag: exit 2" "rc=$rc"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
