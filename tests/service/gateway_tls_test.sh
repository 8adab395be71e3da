#!/usr/bin/env bash
# admitd's gateway over TLS (docs/proxy.md): admit-provider-sim behind nginx terminating TLS
# with a throwaway test CA (scripts/lib/nginx.sh), admitd forwarding to it with that CA as the
# upstream's ca_file. Checks a completion, a stream and embeddings through the verified
# connection, and that an upstream whose certificate the configured CA did not sign is refused
# (502 naming the verification), with admitd still serving.
# Usage: bash tests/service/gateway_tls_test.sh path/to/admitd path/to/admit-provider-sim
BIN=${1:?usage: gateway_tls_test.sh ADMITD_BINARY SIM_BINARY}
SIM_BIN=${2:?usage: gateway_tls_test.sh ADMITD_BINARY SIM_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"
# shellcheck source=../../scripts/lib/nginx.sh
source "$ROOT/scripts/lib/nginx.sh"

if ! command -v nginx >/dev/null || ! command -v openssl >/dev/null; then
  echo "skip - nginx or openssl is not installed (scripts/setup installs them)"
  [ "${ADMIT_REQUIRE_TLS:-0}" = 1 ] && exit 1  # scripts/test: a missing server is a failure
  exit 77
fi

SIM_PID=""
trap '[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; nginx_stop; http_test_cleanup' EXIT
"$SIM_BIN" --seed 11 >"$TMP/sim.out" 2>"$TMP/sim.log" &
SIM_PID=$!
SIM=$(listening_url "$TMP/sim.out")
[ -n "$SIM" ] || { echo "FAIL - admit-provider-sim did not start: $(cat "$TMP/sim.log")"; exit 1; }
nginx_start_tls_proxy "$TMP/nginx" "$SIM" || { echo "FAIL - nginx did not start"; exit 1; }
echo "# upstream $ADMIT_TEST_TLS_PROXY_URL -> $SIM"

json() { python3 -c "import json,sys; b=json.load(sys.stdin); print($1)" <<<"$BODY" 2>/dev/null; }

cat >"$TMP/gateway.yaml" <<EOF
gateway:
  upstreams:
    - name: sim-tls
      base_url: "$ADMIT_TEST_TLS_PROXY_URL/v1"
      ca_file: "$ADMIT_TEST_TLS_CA"
      models: [gpt-4o-mini]
    - name: wrong-ca
      base_url: "$ADMIT_TEST_TLS_PROXY_URL/v1"
      ca_file: "$ADMIT_TEST_TLS_OTHER_CA"
      models: [other-model]
      max_attempts: 1
EOF

if start_server --config "$TMP/gateway.yaml" --listen 127.0.0.1:0; then
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":10}'
  check "completion over verified TLS: 200" is 200
  check "completion over verified TLS: the upstream's answer" test "$(json "b['object']")" = chat.completion
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":6,"stream":true}'
  check "stream over verified TLS: 200" is 200
  check "stream over verified TLS: ends with [DONE]" test "$(grep '^data: ' <<<"$BODY" | tail -1)" = "data: [DONE]"
  check "stream over verified TLS: the usage chunk" has '"usage":{"prompt_tokens"'
  req POST /v1/embeddings '{"model":"gpt-4o-mini","input":["alpha beta","gamma"],"dimensions":3}'
  check "embeddings over verified TLS: 200" is 200
  check "embeddings: two vectors of 3" test "$(json "[len(d['embedding']) for d in b['data']]")" = "[3, 3]"
  check "embeddings: usage" test "$(json "b['usage']['total_tokens'] > 0")" = True
  req POST /v1/chat/completions '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"again"}],"max_tokens":4}'
  check "a second completion on the same upstream: 200" is 200
  req POST /v1/chat/completions '{"model":"other-model","messages":[{"role":"user","content":"Hello"}]}'
  check "a certificate the CA did not sign: 502" is 502
  check "502 names the verification" has 'certificate verif'
  req GET /healthz
  check "still serving" is 200
  stop_server
fi

summary
