#!/usr/bin/env bash
# Adaptation shared by a fleet (docs/design.md, "Shared adaptation"): two admitd on one
# redis-server, each with a gateway in front of the same admit-provider-sim (hidden limits: 600
# requests and 1,000,000 tokens a minute). Requests go through admitd A only. Then admitd B,
# which has sent nothing upstream, reports the limits A learned from the simulator's headers
# (GET /v1/limits/resolve and /metrics); and after the simulator's token limit is cut below
# what one request costs, so that A's next request gets a 429, B reports the rate A's AIMD law
# decreased to on the upstream's adaptive limit, and the new token limit. Both admitd read the
# store every 200 ms (adaptation_refresh_ms); the checks poll with a timeout, nothing sleeps.
# Needs ADMIT_TEST_REDIS_URL (scripts/test starts the server and sets it); skipped (77)
# without it, unless ADMIT_REQUIRE_REDIS=1.
# Usage: bash tests/service/fleet_adapt_test.sh path/to/admitd path/to/admit-provider-sim
BIN=${1:?usage: fleet_adapt_test.sh ADMITD_BINARY SIM_BINARY}
SIM_BIN=${2:?usage: fleet_adapt_test.sh ADMITD_BINARY SIM_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

if [ -z "${ADMIT_TEST_REDIS_URL:-}" ]; then
  if [ "${ADMIT_REQUIRE_REDIS:-0}" = 1 ]; then
    echo "FAIL - ADMIT_REQUIRE_REDIS=1 but ADMIT_TEST_REDIS_URL is not set"
    exit 1
  fi
  echo "skip - ADMIT_TEST_REDIS_URL not set (scripts/test starts a redis-server)"
  exit 77
fi

# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"

SIM_PID=""
PID_B=""
trap 'for p in $SIM_PID $PID_B; do kill "$p" 2>/dev/null; done; http_test_cleanup' EXIT
"$SIM_BIN" --rpm 600 --tpm 1000000 --seed 7 >"$TMP/sim.out" 2>"$TMP/sim.log" &
SIM_PID=$!
SIM=$(listening_url "$TMP/sim.out")
[ -n "$SIM" ] || { echo "FAIL - admit-provider-sim did not start: $(cat "$TMP/sim.log")"; exit 1; }

cat >"$TMP/fleet.yaml" <<EOF
store:
  url: $ADMIT_TEST_REDIS_URL
  prefix: fleet-adapt-$$
  adaptation_refresh_ms: 200
resources:
  gpt-4o-mini:
    - {name: tokens, window: month, limit: 1000000}
entities:
  sim:                         # the upstream: an adaptive limit of its own, and what it learns
    limits:
      gpt-4o-mini: [{name: pace, adaptive: {max_rate: 100, initial_rate: 50}, burst: 100}]
gateway:
  deadline_ms: 3000
  callers:
    - {key: alice-key-0123456789, entity: alice}
  upstreams:
    - {name: sim, base_url: "$SIM/v1", api_key: sim-key-1, models: [gpt-4o-mini], max_attempts: 1}
EOF
alice=(-H 'Authorization: Bearer alice-key-0123456789')
chat='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there"}],"max_tokens":40}'

sim_stat() { curl -sS --max-time 10 "$SIM/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# learned URL: "name=capacity ..." of the upstream's discovered limits on gpt-4o-mini (sorted).
learned() {
  curl -sS --max-time 10 "$1/v1/limits/resolve?entity=sim&resource=gpt-4o-mini" | python3 -c "
import json, sys
ls = json.load(sys.stdin)['limits']
print(' '.join(sorted('%s=%s' % (l['name'], l['capacity']) for l in ls if l['source'] == 'discovered')))"
}
# metric URL NAME LIMIT: the value of NAME{resource="gpt-4o-mini",limit="LIMIT"} on /metrics.
metric() {
  curl -sS --max-time 10 "$1/metrics" | python3 -c "
import re, sys
for line in sys.stdin:
    m = re.match(r'^$2\{(.*)\} (\S+)$', line.strip())
    if m and 'resource=\"gpt-4o-mini\"' in m.group(1) and 'limit=\"$3\"' in m.group(1):
        print(float(m.group(2))); break"
}
# poll SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds or SECONDS pass.
poll() {
  local n=$(($1 * 10)); shift
  for ((i = 0; i < n; i++)); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# B: started by hand (start_server tracks one process); A: the one req talks to.
"$BIN" --config "$TMP/fleet.yaml" --listen 127.0.0.1:0 >"$TMP/b.out" 2>"$TMP/b.log" &
PID_B=$!
URL_B=$(listening_url "$TMP/b.out")
[ -n "$URL_B" ] || { echo "FAIL - admitd B did not start: $(cat "$TMP/b.out" "$TMP/b.log")"; exit 1; }
if start_server --config "$TMP/fleet.yaml" --listen 127.0.0.1:0; then
  ok "two admitd on one redis (A $URL, B $URL_B)"
  check "B knows nothing learned yet" test -z "$(learned "$URL_B")"

  # ---- learned limits: A learns the simulator's limits from its headers ----
  for i in 1 2; do
    req POST /v1/chat/completions "$chat" "${alice[@]}"
    check "request $i through A: 200" is 200
  done
  # learned_is URL WANT: what the admitd at URL learned is WANT.
  learned_is() { [ "$(learned "$1")" = "$2" ]; }
  want="rpm=540 tpm=900000"
  if poll 10 learned_is "$URL" "$want"; then ok "A learned the hidden limits at 90% ($want)"; else ko "A learned the hidden limits at 90% ($want)" "A: $(learned "$URL")"; fi
  b_has() { learned_is "$URL_B" "$want"; }
  if poll 10 b_has; then ok "B resolves the limits A learned: $want"; else ko "B resolves the limits A learned" "B: $(learned "$URL_B")"; fi
  check "B's metrics report them (rpm)" test "$(metric "$URL_B" admit_discovered_limit rpm)" = 540.0
  check "B's metrics report them (tpm)" test "$(metric "$URL_B" admit_discovered_limit tpm)" = 900000.0
  check "only A called the upstream (2 accepted, none refused)" test "$(sim_stat accepted) $(sim_stat rejected)" = "2 0"

  # ---- the AIMD rate: both successes raised A's law (50 -> 52), B takes it over ----
  # rates_are R: A's and B's admit_aimd_rate of the upstream's adaptive limit are both R.
  rates_are() {
    ra=$(metric "$URL" admit_aimd_rate pace)
    rb=$(metric "$URL_B" admit_aimd_rate pace)
    [ "$ra" = "$1" ] && [ "$rb" = "$1" ]
  }
  if poll 10 rates_are 52.0; then
    ok "A's rate grew with its successes (52), and B reports it"
  else
    ko "A's rate grew with its successes (52), and B reports it" "A: $ra, B: $rb"
  fi

  # ---- a 429 at A decreases its rate; B slows down with it ----
  curl -sS --max-time 10 -o /dev/null -d '{"tpm":5}' "$SIM/sim/limits"
  req POST /v1/chat/completions "$chat" "${alice[@]}"
  check "request 3 through A: the upstream's 429" is 429
  check "the upstream refused it (never fits its new tokens per minute)" test "$(sim_stat rejected)" = 1
  if poll 10 rates_are 26.0; then
    ok "A's rate halved once (26), and B reports it"
  else
    ko "A's rate halved once (26), and B reports it" "A: $ra, B: $rb"
  fi
  want="rpm=540 tpm=4"
  if poll 10 learned_is "$URL" "$want"; then ok "A learned the new token limit ($want)"; else ko "A learned the new token limit ($want)" "A: $(learned "$URL")"; fi
  if poll 10 b_has; then ok "B resolves it too: $want"; else ko "B resolves the new token limit" "B: $(learned "$URL_B")"; fi
  check "B never called the upstream" test "$(sim_stat accepted) $(sim_stat rejected)" = "2 1"
  stop_server
fi
kill "$PID_B" 2>/dev/null
wait "$PID_B" 2>/dev/null
PID_B=""
summary
