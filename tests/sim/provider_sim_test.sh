#!/usr/bin/env bash
# Black-box HTTP test of admit-provider-sim: starts the binary with --port 0, reads the port
# from its first stdout line and checks the routes with curl.
# Usage: bash tests/sim/provider_sim_test.sh path/to/admit-provider-sim
BIN=${1:?usage: provider_sim_test.sh ADMIT_PROVIDER_SIM_BINARY}
NAME=admit-provider-sim
# shellcheck source=../support/http_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/../support/http_test.sh"

# start ARGS...: starts the simulator on a free port.
start() { start_server --port 0 "$@"; }

chat() {  # chat MAX_TOKENS [EXTRA_JSON [CURL ARGS...]]
  local max=$1 extra=${2:-}; shift; [ $# -ge 1 ] && shift
  req POST /v1/chat/completions \
    "{\"model\":\"sim-model\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello, simulator!\"}],\"max_tokens\":$max$extra}" "$@"
}
# "Hello, simulator!" is 17 code points: ceil(17/4) + 4 = 9 prompt tokens.

# ---------------------------------------------------------------- rpm 3, tpm 10000
if start --rpm 3 --tpm 10000 --seed 7; then
  grep -q '"msg":"started".*"seed":7' "$LOG" && ok "startup log line with the seed" ||
    ko "startup log line with the seed" "$(cat "$LOG")"
  req GET /healthz
  check "healthz 200" is 200
  check "healthz body" has '{"status":"ok"}'

  chat 100 '' -H 'Authorization: Bearer sk-one'
  check "chat 200" is 200
  check "chat content-type json" header_is content-type application/json
  check "chat object" has '"object":"chat.completion"'
  check "chat message" has '"message":{"role":"assistant","content":"'
  check "chat usage prompt_tokens 9" has '"usage":{"prompt_tokens":9,"completion_tokens":'
  check "x-ratelimit-limit-requests 3" header_is x-ratelimit-limit-requests 3
  check "x-ratelimit-remaining-requests 2" header_is x-ratelimit-remaining-requests 2
  check "x-ratelimit-reset-requests 20s" header_is x-ratelimit-reset-requests 20s
  check "x-ratelimit-limit-tokens 10000" header_is x-ratelimit-limit-tokens 10000
  check "x-ratelimit-remaining-tokens 9891 (109 charged)" header_is x-ratelimit-remaining-tokens 9891
  check "x-ratelimit-reset-tokens is a Go duration" header_matches x-ratelimit-reset-tokens '^[0-9.]+m?s$'
  check "no retry-after on 200" no_header retry-after

  chat 100 '' -H 'Authorization: Bearer sk-one'
  chat 100 '' -H 'Authorization: Bearer sk-one'
  check "3rd request 200" is 200
  chat 100 '' -H 'Authorization: Bearer sk-one'
  check "4th request 429" is 429
  check "429 remaining-requests 0" header_is x-ratelimit-remaining-requests 0
  check "429 retry-after 1..20 s (T = 20 s; less as time passes)" header_matches retry-after '^([1-9]|1[0-9]|20)$'
  check "429 retry-after-ms" header_matches retry-after-ms '^[0-9]{1,5}$'
  check "429 body type requests" has '"type":"requests"'
  check "429 body code" has '"code":"rate_limit_exceeded"'
  check "429 body message" has 'Rate limit reached for sim-model in organization org-sim on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in'
  chat 100 '' -H 'Authorization: Bearer sk-two'
  check "another API key has its own buckets" is 200
  req GET '/sim/buckets?key=sk-one'
  check "GET /sim/buckets: sk-one's requests spent" has '{"key":"sk-one","requests":0,"tokens":'
  tokens=$(sed -n 's/.*"tokens":\([0-9]*\).*/\1/p' <<<"$BODY")
  [ -n "$tokens" ] && [ "$tokens" -ge 9673 ] && [ "$tokens" -lt 10000 ] &&
    ok "GET /sim/buckets: sk-one's tokens 9673 (3 x 109 charged) + refill: $tokens" ||
    ko "GET /sim/buckets: sk-one's tokens" "$BODY"

  chat 20000
  check "larger than tpm: 429" is 429
  check "larger than tpm: no retry-after" no_header retry-after
  check "larger than tpm: message" has 'Request too large for sim-model'

  chat 5 ',"stream":true,"stream_options":{"include_usage":true}'
  check "stream 200" is 200
  check "stream content-type" header_is content-type 'text/event-stream;charset=utf-8'
  check "stream is chunked" header_is transfer-encoding chunked
  check "stream rate-limit headers" header_is x-ratelimit-limit-requests 3
  check "stream first chunk has the role" has '"delta":{"role":"assistant","content":"","refusal":null}'
  check "stream chunks" has '"object":"chat.completion.chunk"'
  check "stream usage chunk" has '"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":'
  check "stream ends with [DONE]" test "$(grep -v '^$' <<<"$BODY" | tail -1)" = "data: [DONE]"
  events=$(grep -c '^data: ' <<<"$BODY")
  words=$(sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' <<<"$BODY" | tail -1)
  [ -n "$words" ] && [ "$events" -eq $((words + 4)) ] && ok "stream: $words content chunks + 4" ||
    ko "stream: content chunks + role, finish, usage, [DONE]" "events=$events words=$words"
  chat 5 ',"stream":true' -H 'Authorization: Bearer sk-three'
  check "stream without include_usage has no usage" sh -c '! grep -q usage "$0"' "$TMP/body"

  req GET /sim/limits
  check "GET /sim/limits" has '{"rpm":3,"tpm":10000}'
  req POST /sim/limits '{"rpm":100,"tpm":500}'
  check "POST /sim/limits 200" is 200
  check "POST /sim/limits echoes" has '{"rpm":100,"tpm":500}'
  grep -q '"msg":"limits changed","rpm":100,"tpm":500' "$LOG" && ok "limit change logged" ||
    ko "limit change logged" "$(cat "$LOG")"
  chat 10 '' -H 'Authorization: Bearer sk-four'
  check "new limits: 200" is 200
  check "new limits: limit-requests 100" header_is x-ratelimit-limit-requests 100
  check "new limits: limit-tokens 500" header_is x-ratelimit-limit-tokens 500
  check "new limits: remaining-tokens 481" header_is x-ratelimit-remaining-tokens 481
  chat 1000 '' -H 'Authorization: Bearer sk-four'
  check "new limits: 1009 tokens never fit in 500" is 429
  req POST /sim/limits '{"rpm":-1}'
  check "POST /sim/limits negative 400" is 400
  req POST /sim/limits '{"rpm":"many"}'
  check "POST /sim/limits string 400" is 400
  req GET /sim/limits
  check "bad input changed nothing" has '{"rpm":100,"tpm":500}'

  req GET /sim/stats
  check "GET /sim/stats" has '"accepted":7,"rejected":3,'

  req POST /v1/chat/completions '{"model":"m","messages":['
  check "bad JSON 400" is 400
  check "bad JSON error body" has '"type":"invalid_request_error"'
  req POST /v1/chat/completions '{"model":"m"}'
  check "missing messages 400" is 400
  check "missing messages names the param" has '"param":"messages"'
  req POST /v1/chat/completions '{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}'
  check "max_tokens 0 400" is 400
  req POST /v1/chat/completions 'not json at all'
  check "not JSON 400" is 400
  req GET /v1/chat/completions
  check "GET chat 405" is 405
  req GET /nope
  check "unknown route 404" is 404

  # Keep-alive: several requests over one connection.
  n=$(curl -sS --max-time 10 -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}' \
    "$URL/healthz" "$URL/healthz" "$URL/healthz")
  [ "$n" = "100" ] && ok "keep-alive: 3 requests, 1 connection" || ko "keep-alive" "num_connects=$n"

  req GET /healthz
  check "still healthy after bad input" is 200
  stop_server
fi

# ---------------------------------------------------------------- anthropic, admin token, pacing
if start --rpm 2 --dialect anthropic --admin-token s3cret --tokens-per-second 200 --latency-ms 50; then
  chat 3
  check "anthropic: 200" is 200
  check "anthropic: requests-limit" header_is anthropic-ratelimit-requests-limit 2
  check "anthropic: requests-remaining" header_is anthropic-ratelimit-requests-remaining 1
  check "anthropic: RFC 3339 reset" header_matches anthropic-ratelimit-requests-reset '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'
  check "anthropic: tpm unlimited, no token headers" no_header anthropic-ratelimit-tokens-limit
  chat 3
  chat 3
  check "anthropic: 429" is 429
  check "anthropic: retry-after 1..30 s" header_matches retry-after '^([1-9]|[12][0-9]|30)$'
  check "anthropic: error body" has '{"type":"error","error":{"type":"rate_limit_error","message":'

  req GET /sim/limits
  check "admin token: 401 without" is 401
  req GET /sim/limits '' -H 'Authorization: Bearer wrong'
  check "admin token: 401 with a wrong token" is 401
  req POST /sim/limits '{"rpm":50}' -H 'Authorization: Bearer wrong'
  check "admin token: POST refused" is 401
  req GET /sim/limits '' -H 'Authorization: Bearer s3cret'
  check "admin token: 200 with it" is 200
  check "admin token: limits unchanged" has '{"rpm":2,"tpm":0}'
  req GET /healthz
  check "admin token: healthz open" is 200

  # Two slow streams (max_tokens 2000 at 200 tokens/s: seconds each) run concurrently, not one after
  # the other, and a third request is answered while both are still streaming (no timing
  # thresholds: the order of events is what is checked).
  req POST /sim/limits '{"rpm":0}' -H 'Authorization: Bearer s3cret'
  body='{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":2000,"stream":true}'
  curl -sSN --max-time 60 "$URL/v1/chat/completions" -d "$body" -o "$TMP/s1" &
  c1=$!
  curl -sSN --max-time 60 "$URL/v1/chat/completions" -d "$body" -o "$TMP/s2" &
  c2=$!
  for _ in $(seq 200); do [ -s "$TMP/s1" ] && [ -s "$TMP/s2" ] && break; sleep 0.05; done
  code=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "$URL/healthz")
  if [ "$code" = 200 ] && kill -0 "$c1" 2>/dev/null && kill -0 "$c2" 2>/dev/null; then
    ok "healthz answered while two streams run"
  else
    ko "healthz answered while two streams run" "code $code"
  fi
  wait "$c1" "$c2"
  [ "$(tail -2 "$TMP/s1" | head -1)" = "data: [DONE]" ] && [ "$(tail -2 "$TMP/s2" | head -1)" = "data: [DONE]" ] &&
    ok "two concurrent streams complete ($(grep -c '^data:' "$TMP/s1") and $(grep -c '^data:' "$TMP/s2") events)" ||
    ko "two concurrent streams complete" "$(tail -3 "$TMP/s1")"

  # A 2 MB prompt (500,004 tokens) with "Expect: 100-continue": the server says 100 Continue
  # (else curl would wait the 8 s it is told to and hit --max-time 5). 9 MB is too large: 413.
  big() {  # big BYTES FILE: a chat request whose prompt is BYTES letters
    { printf '{"model":"m","messages":[{"role":"user","content":"'
      head -c "$1" /dev/zero | tr '\0' a
      printf '"}],"max_tokens":1}'; } >"$2"
  }
  big 2000000 "$TMP/big.json"
  req POST /v1/chat/completions "@$TMP/big.json" -H 'Expect: 100-continue' --expect100-timeout 8 --max-time 5
  check "2 MB prompt with Expect: 100-continue: 200" is 200
  check "2 MB prompt: usage" has '"prompt_tokens":500004,'
  big 9000000 "$TMP/huge.json"
  req POST /v1/chat/completions "@$TMP/huge.json"
  check "9 MB body: 413" is 413
  stop_server
fi

# ---------------------------------------------------------------- bad flags
"$BIN" --rpm -5 >"$TMP/bad.out" 2>"$TMP/bad.log"
rc=$?
[ "$rc" -eq 2 ] && grep -q "rpm" "$TMP/bad.log" && ok "negative --rpm: exit 2" ||
  ko "negative --rpm: exit 2" "rc=$rc $(cat "$TMP/bad.log")"
"$BIN" --dialect gemini >/dev/null 2>"$TMP/bad.log"
rc=$?
[ "$rc" -eq 2 ] && ok "unknown --dialect: exit 2" || ko "unknown --dialect: exit 2" "rc=$rc"
"$BIN" --port 0 --tokens-per-second -1 >/dev/null 2>"$TMP/bad.log"
rc=$?
[ "$rc" -eq 2 ] && ok "negative --tokens-per-second: exit 2" || ko "negative --tokens-per-second: exit 2" "rc=$rc $(cat "$TMP/bad.log")"

summary
