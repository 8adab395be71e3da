#!/usr/bin/env bash
# admitd's OpenAI-compatible gateway end to end (docs/proxy.md): admit-provider-sim as the
# upstream (hidden limit: 4 requests per minute), admitd in front of it with callers' keys,
# per-caller and per-team limits, and curl as the client. Checks the answers, the SSE stream,
# that the callers' limits are charged the usage the upstream reported (month windows: no
# refill during the test), the OpenAI-shaped errors, and that once the upstream's limit is
# learned from its headers admitd stops sending it requests it would refuse. Then, with a
# second simulator (no limits), legacy completions and the Responses API, whole and streamed,
# charged the usage they report. Then, with a third, slow simulator (5 tokens per second), a client that leaves mid-stream: the upstream
# call is cancelled at once and the caller charged the prompt and the chunks streamed.
# Usage: bash tests/service/gateway_test.sh path/to/admitd path/to/admit-provider-sim
BIN=${1:?usage: gateway_test.sh ADMITD_BINARY SIM_BINARY}
SIM_BIN=${2:?usage: gateway_test.sh ADMITD_BINARY SIM_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"

SIM_PID=""
TEXT_PID=""
SLOW_PID=""
trap 'for p in $SIM_PID $TEXT_PID $SLOW_PID; do kill "$p" 2>/dev/null; done; http_test_cleanup' EXIT
"$SIM_BIN" --rpm 4 --seed 7 >"$TMP/sim.out" 2>"$TMP/sim.log" &
SIM_PID=$!
SIM=$(listening_url "$TMP/sim.out")
[ -n "$SIM" ] || { echo "FAIL - admit-provider-sim did not start: $(cat "$TMP/sim.log")"; exit 1; }
# For /v1/completions and /v1/responses: no limits.
"$SIM_BIN" --seed 3 >"$TMP/text.out" 2>"$TMP/text.log" &
TEXT_PID=$!
TEXT=$(listening_url "$TMP/text.out")
[ -n "$TEXT" ] || { echo "FAIL - the second admit-provider-sim did not start: $(cat "$TMP/text.log")"; exit 1; }
# The slow one: seed 1 makes its first completion 159 tokens long for max_tokens 200 (32 s).
"$SIM_BIN" --tokens-per-second 5 --seed 1 >"$TMP/slow.out" 2>"$TMP/slow.log" &
SLOW_PID=$!
SLOW=$(listening_url "$TMP/slow.out")
[ -n "$SLOW" ] || { echo "FAIL - the slow admit-provider-sim did not start: $(cat "$TMP/slow.log")"; exit 1; }

# json FILTER: evaluates a Python expression over the last response's parsed body `b`.
json() { python3 -c "import json,sys; b=json.load(sys.stdin); print($1)" <<<"$BODY" 2>/dev/null; }
# used ENTITY LIMIT: how much of LIMIT (on gpt-4o-mini) ENTITY has spent, from /v1/stats.
used() {
  curl -sS --max-time 10 "$URL/v1/stats?entity=$1&resource=gpt-4o-mini" | python3 -c "
import json, sys
for l in json.load(sys.stdin)['stats'][0]['limits']:
    if l['entity'] == '$1' and l['limit'] == '$2': print(l['capacity'] - l['available'])"
}
sim_stat() { curl -sS --max-time 10 "$SIM/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

cat >"$TMP/gateway.yaml" <<EOF
resources:
  gpt-4o-mini:
    - {name: tokens, window: month, limit: 1000000}
entities:
  team:
    limits:
      gpt-4o-mini: [{name: requests, window: month, limit: 1}]
  bob:
    parent: team
gateway:
  deadline_ms: 1500
  callers:
    - {key: alice-key-0123456789, entity: alice}
    - {key: bob-key-000111222333, entity: bob}
  upstreams:
    - {name: sim, base_url: "$SIM/v1", api_key: sim-key-1, models: [gpt-4o-mini]}
    - {name: nowhere, base_url: "http://127.0.0.1:1/v1", models: [other-model], max_attempts: 1}
EOF
alice=(-H 'Authorization: Bearer alice-key-0123456789')
bob=(-H 'Authorization: Bearer bob-key-000111222333')
chat='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there"}],"max_tokens":40}'

if start_server --config "$TMP/gateway.yaml" --listen 127.0.0.1:0; then
  # ---- a completion, charged what the upstream reports ----
  req POST /v1/chat/completions "$chat" "${alice[@]}"
  check "chat completion: 200" is 200
  check "chat completion: the upstream's answer" has '"object":"chat.completion"'
  total=$(json "b['usage']['total_tokens']")
  check "chat completion: usage reported" test -n "$total"
  check "the caller's RateLimit headers" header_matches ratelimit-policy '"tokens"'
  check "the upstream's rate-limit headers are not passed on" no_header x-ratelimit-limit-requests
  got=$(used alice tokens)
  check "alice charged the usage ($total), not the estimate" test "$got" = "$total"

  # ---- a stream, passed through, charged its final usage chunk ----
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"stream":true}' "${alice[@]}"
  check "stream: 200" is 200
  check "stream: text/event-stream" header_matches content-type 'text/event-stream'
  check "stream: ends with [DONE]" test "$(grep '^data: ' <<<"$BODY" | tail -1)" = "data: [DONE]"
  stream_total=$(grep '"usage":{' <<<"$BODY" | sed 's/.*"total_tokens":\([0-9]*\).*/\1/')
  check "stream: a usage chunk (include_usage was added)" test -n "$stream_total"
  got=$(used alice tokens)
  check "alice charged both usages ($total + $stream_total)" test "$got" = "$((total + stream_total))"

  # ---- a team's limit: bob's second request is refused by its parent, upstream untouched ----
  req POST /v1/chat/completions "$chat" "${bob[@]}"
  check "bob's first request: 200" is 200
  bob_first=$(json "b['usage']['total_tokens']")
  accepted=$(sim_stat accepted)
  req POST /v1/chat/completions "$chat" "${bob[@]}"
  check "bob's second request: 429 (the team's limit)" is 429
  check "429: an OpenAI error body" test "$(json "b['error']['code']")" = rate_limit_exceeded
  check "429: it names the team" has 'team'
  check "429: Retry-After" header_matches retry-after '^[0-9]+$'
  check "429: the upstream was not called" test "$(sim_stat accepted)" = "$accepted"
  check "bob's refused request is not charged" test "$(used bob tokens)" = "$(used alice tokens | sed 's/.*/x/;s/x//')$bob_first"

  # ---- the upstream's hidden limit (4 rpm; 3 spent, the rest is the margin): learned, not hit ----
  req POST /v1/chat/completions "$chat" "${alice[@]}"
  check "past the upstream's limit: 429 within the deadline" is 429
  check "past the upstream's limit: an OpenAI error body" test "$(json "b['error']['type']")" = requests
  check "past the upstream's limit: Retry-After" header_matches retry-after '^[0-9]+$'
  check "the upstream refused nothing: its limit was learned from its headers" test "$(sim_stat rejected)" = 0

  # ---- bad requests ----
  req POST /v1/chat/completions "$chat"
  check "no key: 401" is 401
  check "no key: invalid_api_key" test "$(json "b['error']['code']")" = invalid_api_key
  req POST /v1/chat/completions "$chat" -H 'Authorization: Bearer wrong-key-0123456789'
  check "a wrong key: 401" is 401
  req POST /v1/chat/completions '{"model":' "${alice[@]}"
  check "bad JSON: 400" is 400
  req POST /v1/chat/completions '{"messages":[]}' "${alice[@]}"
  check "no model: 400 naming it" test "$STATUS $(json "b['error']['param']")" = "400 model"
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":"hi"}' "${alice[@]}"
  check "messages not an array: 400" is 400
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[],"max_tokens":-5}' "${alice[@]}"
  check "a negative max_tokens: 400" is 400
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[],"stream":"yes"}' "${alice[@]}"
  check "stream not a boolean: 400" is 400
  deep=$(python3 -c "print('{\"model\":\"gpt-4o-mini\",\"messages\":' + '[' * 5000 + ']' * 5000 + '}')")
  req POST /v1/chat/completions "$deep" "${alice[@]}"
  check "deep nesting: 400" is 400
  req POST /v1/chat/completions '{"model":"no-such-model","messages":[]}' "${alice[@]}"
  check "an unknown model: 404 model_not_found" test "$STATUS $(json "b['error']['code']")" = "404 model_not_found"
  req POST /v1/chat/completions '{"model":"other-model","messages":[]}' "${alice[@]}"
  check "an unreachable upstream: 502" is 502
  req GET /v1/models
  check "models without a key: 401" is 401
  STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' --max-time 10 "${alice[@]}" "$URL/v1/models")
  BODY=$(cat "$TMP/body")
  check "models: 200" is 200
  check "models: the configured ones" test "$(json "sorted(m['id'] for m in b['data'])")" = "['gpt-4o-mini', 'other-model']"
  req GET /healthz
  check "still serving after all that" is 200
  stop_server
fi

# ---- legacy completions and the Responses API, whole and streamed, charged their usage ----
cat >"$TMP/text.yaml" <<EOF
resources:
  gpt-4o-mini:
    - {name: tokens, window: month, limit: 1000000}
gateway:
  callers:
    - {key: dave-key-0123456789, entity: dave}
  upstreams:
    - {name: text, base_url: "$TEXT/v1", models: [gpt-4o-mini]}
EOF
dave=(-H 'Authorization: Bearer dave-key-0123456789')
# last_data_usage FIELD: FIELD of the usage in the last "data: " event that carries one (a
# chunk's usage, or a Responses API event's response.usage).
last_data_usage() {
  grep '^data: {' <<<"$BODY" | python3 -c "
import json, sys
n = ''
for line in sys.stdin:
    e = json.loads(line[6:])
    u = e.get('usage') or (e.get('response') or {}).get('usage')
    if u: n = u['$1']
print(n)"
}
if start_server --config "$TMP/text.yaml" --listen 127.0.0.1:0; then
  req POST /v1/completions '{"model":"gpt-4o-mini","prompt":"Say hello","max_tokens":20}' "${dave[@]}"
  check "completion: 200" is 200
  check "completion: a text_completion" has '"object":"text_completion"'
  spent=$(json "b['usage']['total_tokens']")
  check "completion: usage reported" test -n "$spent"
  check "dave charged the completion's usage ($spent)" test "$(used dave tokens)" = "$spent"

  req POST /v1/completions '{"model":"gpt-4o-mini","prompt":"Say hello","max_tokens":20,"stream":true}' "${dave[@]}"
  check "completion stream: 200" is 200
  check "completion stream: text/event-stream" header_matches content-type 'text/event-stream'
  check "completion stream: ends with [DONE]" test "$(grep '^data: ' <<<"$BODY" | tail -1)" = "data: [DONE]"
  total=$(last_data_usage total_tokens)
  check "completion stream: a usage chunk (include_usage was added)" test -n "$total"
  spent=$((spent + ${total:-0}))
  check "dave charged the stream's usage too ($spent)" test "$(used dave tokens)" = "$spent"

  req POST /v1/responses '{"model":"gpt-4o-mini","input":"Say hello","max_output_tokens":20}' "${dave[@]}"
  check "response: 200" is 200
  check "response: a response" has '"object":"response"'
  total=$(json "b['usage']['input_tokens'] + b['usage']['output_tokens']")
  check "response: usage reported" test -n "$total"
  spent=$((spent + ${total:-0}))
  check "dave charged the response's usage ($spent)" test "$(used dave tokens)" = "$spent"

  req POST /v1/responses '{"model":"gpt-4o-mini","input":[{"role":"user","content":"Say hello"}],"max_output_tokens":20,"stream":true}' "${dave[@]}"
  check "response stream: 200" is 200
  check "response stream: text/event-stream" header_matches content-type 'text/event-stream'
  check "response stream: starts with response.created" test "$(grep '^event: ' <<<"$BODY" | head -1)" = "event: response.created"
  last_event=$(grep '^event: ' <<<"$BODY" | tail -1)
  check "response stream: ends with response.completed (or .incomplete)" \
    test "$last_event" = "event: response.completed" -o "$last_event" = "event: response.incomplete"
  total=$(last_data_usage total_tokens)
  check "response stream: usage in its last event" test -n "$total"
  spent=$((spent + ${total:-0}))
  check "dave charged the stream's usage too ($spent)" test "$(used dave tokens)" = "$spent"
  BODY=$(curl -sS --max-time 10 "$TEXT/sim/stats")
  check "the upstream answered all four" test "$(json "b['accepted']")" = 4
  stop_server
fi

# ---- a client that leaves mid-stream (the slow upstream; one call at a time) ----
cat >"$TMP/slow.yaml" <<EOF
resources:
  gpt-4o-mini:
    - {name: tokens, window: month, limit: 1000000}
gateway:
  callers:
    - {key: carol-key-0123456789, entity: carol}
  upstreams:
    - {name: slow, base_url: "$SLOW/v1", models: [gpt-4o-mini], max_concurrent: 1}
EOF
carol=(-H 'Authorization: Bearer carol-key-0123456789')
if start_server --config "$TMP/slow.yaml" --listen 127.0.0.1:0; then
  # Reads the head and 3 content chunks of a 200-token stream, reads carol's usage while the
  # stream is open (the reservation), then closes the socket. Prints "STATUS CHUNKS HELD".
  left=$(python3 - "$PORT" <<'EOF'
import json, socket, sys, urllib.request
port = int(sys.argv[1])
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}],
                   "max_tokens": 200, "stream": True}).encode()
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
          b"Authorization: Bearer carol-key-0123456789\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n" % len(body) + body)
got = b""
marker = b'"delta":{"content"'
while got.count(marker) < 3 and not (b"\r\n\r\n" in got and b" 200 " not in got[:13]):
    data = s.recv(4096)
    if not data:
        break
    got += data
url = "http://127.0.0.1:%d/v1/stats?entity=carol&resource=gpt-4o-mini" % port
held = ""
for l in json.load(urllib.request.urlopen(url, timeout=10))["stats"][0]["limits"]:
    if l["entity"] == "carol" and l["limit"] == "tokens":
        held = l["capacity"] - l["available"]
s.close()
print(got.split(b" ", 2)[1].decode() if got else "none", got.count(marker), held)
EOF
)
  read -r left_status left_chunks left_held <<<"$left"
  STATUS=$left_status BODY=$left
  check "a slow stream: 200 and 3 content chunks read" test "$left_status $left_chunks" = "200 3"
  check "while it streams, carol holds the reservation (prompt + 200): $left_held" test "${left_held:-0}" -ge 200
  # Once the client is gone the call is cancelled and carol settled. A poll bounded by 20 s:
  # short of the stream's own end (32 s) and of the stall backstop (45 s), which would settle
  # it too without the server reporting the close.
  settled=""
  until_s=$((SECONDS + 20))
  while [ "$SECONDS" -lt "$until_s" ]; do
    got=$(used carol tokens)
    if [ -n "$got" ] && [ "$got" -lt 100 ]; then settled=$got; break; fi
    sleep 0.1
  done
  BODY="last usage: ${got:-none}"
  check "the client left: carol charged the prompt and the chunks streamed ($settled), not 200" test -n "$settled"
  check "what was streamed is charged (> 0)" test "${settled:-0}" -gt 0
  # The upstream's only slot was given back: a completion goes through at once.
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}' "${carol[@]}"
  check "after the client left: the upstream serves the next request" is 200
  req GET /healthz
  check "after the client left: still serving" is 200
  stop_server
fi

summary
