#!/usr/bin/env bash
# Several deployments of one model through admitd's gateway (docs/proxy.md, "Several
# deployments of a model"), end to end with real servers: admit-provider-sim instances as the
# deployments, a closed port, and a small Python server that answers 503. Checks that
# concurrent requests are spread over the deployments with room, that a deployment whose limit
# was learned from its headers is not sent more than it allows, that a 429, a 503 and a
# transport failure fall back to another deployment at once (the client gets 200), that a
# model whose deployments all fail gets an error, and that /v1/models lists a model once.
# Usage: bash tests/service/gateway_deployments_test.sh path/to/admitd path/to/admit-provider-sim
BIN=${1:?usage: gateway_deployments_test.sh ADMITD_BINARY SIM_BINARY}
SIM_BIN=${2:?usage: gateway_deployments_test.sh ADMITD_BINARY SIM_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; http_test_cleanup' EXIT

# start_sim NAME ARGS...: an admit-provider-sim; sets the variable NAME to its URL.
start_sim() {
  local name=$1
  shift
  "$SIM_BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.log" &
  PIDS+=($!)
  local url
  url=$(listening_url "$TMP/$name.out")
  [ -n "$url" ] || { echo "FAIL - admit-provider-sim $name did not start: $(cat "$TMP/$name.log")"; exit 1; }
  printf -v "$name" '%s' "$url"
}
# stat URL FIELD: a counter of a simulator's /sim/stats.
stat() { curl -sS --max-time 10 "$1/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
json() { python3 -c "import json,sys; b=json.load(sys.stdin); print($1)" <<<"$BODY" 2>/dev/null; }

start_sim SLOW_A --latency-ms 1000 --seed 1  # two deployments that take their time
start_sim SLOW_B --latency-ms 1000 --seed 2
start_sim TIGHT --rpm 2 --seed 3            # a hidden limit of 2 per minute per key
start_sim WIDE --seed 4                     # no limit

# A server that answers every POST with 503 and counts them, one line each.
python3 - "$TMP/down.port" "$TMP/down.hits" <<'EOF' &
import http.server, sys
port_file, hits = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(hits, "a") as f:
            f.write("hit\n")
        body = b'{"error":{"message":"overloaded","type":"server_error"}}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "120")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(port_file + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
s.serve_forever()
EOF
PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/down.port" ] && break; sleep 0.1; done
DOWN="http://127.0.0.1:$(cat "$TMP/down.port" 2>/dev/null)"
hits() { wc -l <"$TMP/down.hits" 2>/dev/null || echo 0; }

cat >"$TMP/deployments.yaml" <<EOF
gateway:
  deadline_ms: 5000
  upstreams:
    # spread: two deployments of one model
    - {name: slow-a, base_url: "$SLOW_A/v1", models: [spread]}
    - {name: slow-b, base_url: "$SLOW_B/v1", models: [spread]}
    # Of equally loaded deployments the first listed is chosen: tight, down and closed go
    # before wide. Learned limits and a 429: tight; a 503: down; a refused connection: closed;
    # a model with nothing that works: broken.
    - {name: tight, base_url: "$TIGHT/v1", api_key: shared-key, models: [learn, fall]}
    - {name: down, base_url: "$DOWN/v1", models: [down, broken], max_attempts: 2}
    - {name: closed, base_url: "http://127.0.0.1:1/v1", models: [gone, broken], max_attempts: 1}
    - {name: wide, base_url: "$WIDE/v1", models: [learn, fall, down, gone]}
EOF
# chat MODEL: a small completion of MODEL.
chat() { req POST /v1/chat/completions "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":5}"; }

if start_server --config "$TMP/deployments.yaml" --listen 127.0.0.1:0; then
  # ---- six at once: spread (each takes a second, so all six are outstanding together) ----
  for i in $(seq 6); do
    curl -sS -o /dev/null -w '%{http_code}\n' --max-time 20 -H 'Content-Type: application/json' \
      -d '{"model":"spread","messages":[{"role":"user","content":"Hi"}],"max_tokens":5}' \
      "$URL/v1/chat/completions" >"$TMP/spread.$i" &
  done
  wait_for=$((SECONDS + 20))
  while [ "$(cat "$TMP"/spread.* 2>/dev/null | wc -l)" -lt 6 ] && [ "$SECONDS" -lt "$wait_for" ]; do sleep 0.1; done
  STATUS="$(sort "$TMP"/spread.* | uniq -c | tr '\n' ' ')" BODY=""
  check "six concurrent requests: all 200" test "$(cat "$TMP"/spread.* | sort -u)" = 200
  a=$(stat "$SLOW_A" accepted) b=$(stat "$SLOW_B" accepted)
  BODY="slow-a $a, slow-b $b"
  check "spread over both deployments ($BODY)" test "$a" -ge 2 -a "$b" -ge 2 -a $((a + b)) -eq 6

  # ---- a deployment's learned limit is not exceeded: the other takes the rest ----
  for i in 1 2 3 4; do
    chat learn
    check "learn: request $i answered 200" is 200
  done
  # (The second may reach tight before the first one's headers are learned: 1 or 2 there.)
  t=$(stat "$TIGHT" accepted) w=$(stat "$WIDE" accepted)
  BODY="tight $t, wide $w"
  check "tight served what its learned limit allows, wide the rest ($BODY)" \
    test "$t" -ge 1 -a "$t" -le 2 -a $((t + w)) = 4
  check "tight was never sent more than it allows: it refused nothing" test "$(stat "$TIGHT" rejected)" = 0

  # ---- a 429 falls back at once ----
  # Another client spends what is left of the shared key's minute at tight directly.
  curl -sS -o /dev/null --max-time 10 -H 'Authorization: Bearer shared-key' -H 'Content-Type: application/json' \
    -d '{"model":"fall","messages":[{"role":"user","content":"Hi"}],"max_tokens":5}' "$TIGHT/v1/chat/completions"
  w=$(stat "$WIDE" accepted) r=$(stat "$TIGHT" rejected)
  chat fall
  check "fall: 200 although tight is spent" is 200
  BODY="tight rejected $(stat "$TIGHT" rejected) (was $r), wide accepted $(stat "$WIDE" accepted) (was $w)"
  check "fall: tight said 429 at most once, wide answered ($BODY)" \
    test "$(stat "$TIGHT" rejected)" -le $((r + 1)) -a "$(stat "$WIDE" accepted)" = $((w + 1))

  # ---- a 503 and a closed port fall back at once ----
  chat down
  check "down: 200 from the other deployment after a 503" is 200
  check "down: the 503 deployment was asked once (no retry there while another has room)" test "$(hits)" = 1
  chat down
  check "down again: 200" is 200
  check "down again: the deployment that failed is held (its Retry-After), not asked" test "$(hits)" = 1
  chat gone
  check "gone: 200 from the other deployment after a refused connection" is 200

  # ---- every deployment fails: an error within the deadline ----
  chat broken
  check "broken: every deployment failed: 502 or 503 ($STATUS)" test "$STATUS" = 502 -o "$STATUS" = 503
  check "broken: an OpenAI error body" test -n "$(json "b['error']['message']")"

  # ---- what the gateway reports ----
  req GET /metrics
  check "metrics: 200" is 200
  metric() { grep -Fxc "$1" <<<"$BODY"; }  # metric 'SAMPLE VALUE': 1 if that line is there
  check "metrics: tight's 429 moved a request on" test "$(metric 'admit_gateway_fallbacks_total{upstream="tight"} 1')" = 1
  check "metrics: down's 503 counted" test "$(grep -c '^admit_gateway_upstream_responses_total{status="503",upstream="down"}' <<<"$BODY")" = 1
  check "metrics: closed's failed connections counted as status 0" \
    test "$(grep -c '^admit_gateway_upstream_responses_total{status="0",upstream="closed"}' <<<"$BODY")" = 1
  check "metrics: time queued at slow-a" test "$(metric 'admit_gateway_queue_seconds_count{upstream="slow-a"} 3')" = 1
  check "metrics: slow-a's answers timed" has 'admit_gateway_upstream_seconds_bucket{upstream="slow-a",le="2.5"} 3'

  # ---- a model of several deployments is listed once ----
  req GET /v1/models
  check "models: 200" is 200
  check "models: each once" test "$(json "','.join(sorted(m['id'] for m in b['data']))")" = "broken,down,fall,gone,learn,spread"
  req GET /healthz
  check "still serving" is 200
  stop_server
fi
summary
