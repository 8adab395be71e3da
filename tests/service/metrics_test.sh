#!/usr/bin/env bash
# admitd's /metrics end to end: starts the binary with tests/service/test_config.yaml
# (small-model: rpm 5), makes a scripted sequence of requests with curl, then reads GET
# /metrics: `promtool check metrics` (Debian's prometheus; skipped, and said so, when it is not
# installed) and the exact values of the counters. Then with a bearer token: /metrics needs a
# decide token.
# Usage: bash tests/service/metrics_test.sh path/to/admitd
BIN=${1:?usage: metrics_test.sh ADMITD_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"

# value NAME 'k="v",...': the value of the sample NAME with exactly these labels (any order),
# read from $TMP/metrics; "none" if there is none, "twice" if there are more.
value() {
  python3 - "$TMP/metrics" "$1" "${2:-}" <<'EOF'
import re, sys
path, name, want = sys.argv[1:4]
pair = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
want = dict(pair.findall(want))
found = []
for line in open(path):
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\n?', line)
    if not m or m.group(1) != name:
        continue
    if dict(pair.findall(m.group(2) or "")) == want:
        found.append(m.group(3))
print(found[0] if len(found) == 1 else "none" if not found else "twice")
EOF
}
# expect NAME LABELS VALUE
expect() {
  local got
  got=$(value "$1" "$2")
  if [ "$got" = "$3" ]; then ok "$1{$2} = $3"; else ko "$1{$2} = $3" "got $got"; fi
}

acquire='{"entity":"svc","resource":"small-model","amounts":{"rpm":1}}'
version=$("$BIN" --version | sed -n 's/^admitd //p')

if start_server --config "$HERE/test_config.yaml" --listen 127.0.0.1:0; then
  for _ in 1 2 3 4 5 6 7; do req POST /v1/acquire "$acquire"; done  # rpm 5: 5 ok, 2 denied
  check "7th acquire 429" is 429
  req POST /v1/decide "$acquire"
  check "decide 200" is 200
  req POST /v1/acquire '{"entity":"svc","resource":"unlisted-model-123","amounts":{"rpm":1}}'
  check "an unlisted resource (system defaults) 200" is 200
  req GET /nope
  check "unknown path 404" is 404

  req GET /metrics
  check "metrics 200" is 200
  check "metrics content-type 0.0.4" header_is content-type 'text/plain;version=0.0.4;charset=utf-8'
  printf '%s\n' "$BODY" >"$TMP/metrics"
  if command -v promtool >/dev/null; then
    if out=$(promtool check metrics <"$TMP/metrics" 2>&1); then
      ok "promtool check metrics"
    else
      ko "promtool check metrics" "$out"
    fi
  else
    echo "skip - promtool check metrics: promtool is not installed (Debian: prometheus)"
  fi

  expect admit_decisions_total 'route="/v1/acquire",resource="small-model",code="ok"' 5
  expect admit_decisions_total 'route="/v1/acquire",resource="small-model",code="rate_exceeded"' 2
  expect admit_decisions_total 'route="/v1/decide",resource="small-model",code="rate_exceeded"' 1
  expect admit_decisions_total 'route="/v1/acquire",resource="_other",code="ok"' 1
  expect admit_denials_total 'route="/v1/acquire",resource="small-model",limit="rpm",code="rate_exceeded"' 2
  expect admit_near_limit_total 'route="/v1/acquire",resource="small-model"' 1
  expect admit_http_requests_total 'route="/v1/acquire",status="200"' 6
  expect admit_http_requests_total 'route="/v1/acquire",status="429"' 2
  expect admit_http_requests_total 'route="other",status="404"' 1
  expect admit_request_duration_seconds_count 'route="/v1/acquire"' 8
  expect admit_request_duration_seconds_bucket 'route="/v1/acquire",le="+Inf"' 8
  expect admit_store_errors_total '' 0
  expect admit_decisions_in_flight '' 0
  expect admit_build_info "version=\"$version\"" 1
  expect admit_leases_expired_total '' 0
  expect admit_http_connections '' 1  # this curl's
  if grep -q 'unlisted-model-123\|entity=\|svc' "$TMP/metrics"; then
    ko "no entity and no unlisted resource in any label" "$(grep 'unlisted-model-123\|entity=\|svc' "$TMP/metrics")"
  else
    ok "no entity and no unlisted resource in any label"
  fi
  stop_server
fi

# ---------------------------------------------------------------- with a token, on SQLite
token=metrics-test-token-0123456789
printf '%s decide\n' "$token" >"$TMP/tokens"
cat >"$TMP/sqlite.yaml" <<EOF
store: {url: "sqlite:$TMP/admit.db", prune_interval_ms: 50}
resources:
  small-model:
    - {name: rpm, per: minute, limit: 5}
EOF
if start_server --config "$TMP/sqlite.yaml" --token-file "$TMP/tokens" --listen 127.0.0.1:0; then
  req GET /metrics
  check "metrics without a token: 401" is 401
  STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' --max-time 10 \
    -H "Authorization: Bearer $token" "$URL/metrics")
  BODY=$(cat "$TMP/body")
  check "metrics with a decide token: 200" is 200
  printf '%s\n' "$BODY" >"$TMP/metrics"
  expect admit_store_degraded '' 0
  expect admit_store_primary_failures_total '' 0
  # A lease nobody ends: once its 1 ms TTL passes, the pruner removes its record and counts it.
  STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d '{"entity":"svc","resource":"small-model","amounts":{"rpm":1},"ttl_ms":1}' "$URL/v1/acquire")
  BODY=$(cat "$TMP/body")
  check "an acquired lease, left to expire" is 200
  for _ in $(seq 200); do  # waits for the pruner (every 50 ms), at most ~20 s
    curl -sS -o "$TMP/metrics" --max-time 10 -H "Authorization: Bearer $token" "$URL/metrics"
    [ "$(value admit_leases_expired_total '')" = 1 ] && break
    sleep 0.1
  done
  expect admit_leases_expired_total '' 1
  stop_server
fi

summary
