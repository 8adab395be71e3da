#!/usr/bin/env bash
# Black-box security test of admitd (docs/admitd.md, "Security") over real sockets: a web
# page's cross-site requests (Origin, Content-Type, Host), bearer tokens (missing, wrong, the
# scope of a route, the namespaces of a token), CORS for an allowed origin, and the bind rule
# (a non-loopback --listen needs tokens or --insecure). After each hostile request the process
# must still serve /healthz.
# Usage: bash tests/service/security_test.sh path/to/admitd
BIN=${1:?usage: security_test.sh ADMITD_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"

raw() { python3 "$ROOT/tests/support/raw_http.py" "$@"; }
# creq METHOD PATH BODY CURL_ARGS...: like req, but sends only the headers given (no
# Content-Type of its own; curl -d would add a form type, so the body goes as binary with
# the given or no type).
creq() {
  local method=$1 path=$2 body=$3; shift 3
  STATUS=$(curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" --max-time 10 \
    -H 'Content-Type:' --data-binary "$body" "$@" "$URL$path" 2>"$TMP/curl.err") ||
    STATUS="000 $(cat "$TMP/curl.err")"
  BODY=$(cat "$TMP/body" 2>/dev/null)
  HEADERS="$TMP/headers"
}
# alive NAME: the server still answers /healthz after a hostile request.
alive() {
  local s
  s=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/healthz")
  [ "$s" = 200 ] && ok "alive after: $1" || ko "alive after: $1" "healthz $s"
}
# expect_exit NAME CODE TEXT ARGS...: admitd ARGS exits with CODE (within 10 s) printing TEXT.
expect_exit() {
  local name=$1 code=$2 text=$3; shift 3
  timeout 10 "$BIN" "$@" >"$TMP/exit.out" 2>"$TMP/exit.log"
  local rc=$?
  [ "$rc" -eq "$code" ] && grep -qF -- "$text" "$TMP/exit.log" && ok "$name" ||
    ko "$name" "rc=$rc $(cat "$TMP/exit.out" "$TMP/exit.log")"
}

# rpd: a calendar window of the sample's gpt-4o, which does not refill within the test.
acquire='{"entity":"victim","resource":"gpt-4o","amounts":{"rpm":1,"rpd":1}}'

# ---------------------------------------------------------------- cross-site, no tokens
if start_server --config "$ROOT/config/sample.yaml" --listen 127.0.0.1:0; then
  # The request of issue 15: a page on evil.example posting text/plain (no preflight).
  creq POST /v1/acquire "$acquire" -H 'Content-Type: text/plain' -H 'Origin: http://evil.example'
  check "cross-site text/plain POST with Origin: 403" is 403
  check "cross-site POST: code forbidden_origin" has '"code":"forbidden_origin"'
  alive "cross-site POST"
  creq POST /v1/acquire "$acquire" -H 'Content-Type: application/json' -H 'Origin: http://evil.example'
  check "foreign Origin with application/json: 403" is 403
  creq GET /v1/limits "" -H 'Origin: http://evil.example'
  check "foreign Origin on a GET: 403" is 403
  creq POST /v1/acquire "$acquire" -H 'Origin: null'
  check "Origin null: 403" is 403
  creq POST /v1/acquire "$acquire" -H 'Content-Type: text/plain'
  check "text/plain without Origin: 415" is 415
  check "415: code unsupported_media_type" has '"code":"unsupported_media_type"'
  creq POST /v1/acquire "$acquire" -H 'Content-Type: application/x-www-form-urlencoded'
  check "form type: 415" is 415
  creq POST /v1/acquire "$acquire"
  check "no Content-Type: 415" is 415
  creq POST /v1/acquire "" -H 'Content-Type: text/plain'
  check "empty text/plain POST: 415" is 415
  alive "415s"
  # DNS rebinding: a name that resolves to 127.0.0.1 reaches the port with its own Host.
  creq GET /v1/limits "" -H "Host: evil.example:$PORT"
  check "rebound Host name: 421" is 421
  check "421: code misdirected_host" has '"code":"misdirected_host"'
  creq POST /v1/acquire "$acquire" -H "Host: 127.0.0.1.nip.io:$PORT" -H 'Content-Type: application/json'
  check "rebound Host on a POST: 421" is 421
  alive "421s"
  # None of them consumed anything: victim's rpm is whole.
  req POST /v1/decide "$acquire"
  check "refused requests consumed nothing" has '"limit":"rpd","kind":"window","source":"resource","capacity":10000,"available":10000,'
  # What a local client sends passes.
  creq POST /v1/acquire "$acquire" -H 'Content-Type: Application/JSON; charset=utf-8'
  check "application/json; charset=utf-8: 200" is 200
  creq GET /v1/limits "" -H "Host: localhost:$PORT"
  check "Host localhost:PORT: 200" is 200
  req GET /healthz
  check "no tokens on loopback: no auth" is 200
  # Raw bytes: an Origin of invalid UTF-8 is refused and quoted escaped; HTTP/1.0 without Host.
  printf 'POST /v1/acquire HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://\xff\xfe.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' |
    raw send "$PORT" >"$TMP/raw"
  grep -q "^HTTP/1.1 403 " "$TMP/raw" && grep -qF 'http://\\xff\\xfe.example' "$TMP/raw" &&
    ok "raw: invalid UTF-8 Origin 403, escaped" || ko "raw: invalid UTF-8 Origin" "$(cat "$TMP/raw")"
  printf 'POST /v1/decide HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' |
    raw send "$PORT" >"$TMP/raw"
  grep -q "^HTTP/1.[01] 400 " "$TMP/raw" && grep -qF '"field":"entity"' "$TMP/raw" &&
    ok "raw: HTTP/1.0 without Host reaches the API" || ko "raw: HTTP/1.0 without Host" "$(cat "$TMP/raw")"
  alive "raw requests"
  stop_server TERM
fi

# ---------------------------------------------------------------- bearer tokens
export ADMIT_SEC_DECIDE="decide-0123456789abcdef"
export ADMIT_SEC_ADMIN="admin-0123456789abcdef"
export ADMIT_SEC_OTHER="other-ns-0123456789abcdef"
cat >"$TMP/tokens.yaml" <<'EOF'
resources:
  gpt-4o:
    - {name: rpm, per: minute, limit: 500}
    - {name: rpd, window: day, limit: 1000}
auth:
  tokens:
    - {token: "${ADMIT_SEC_DECIDE}", scope: decide, name: app}
    - {token: "${ADMIT_SEC_ADMIN}", scope: admin, name: ops}
    - {token: "${ADMIT_SEC_OTHER}", scope: decide, namespaces: [other], name: other-team}
http:
  allowed_origins: ["https://app.example"]
  allowed_hosts: [admit.internal]
EOF
bearer() { printf 'Authorization: Bearer %s' "$1"; }
if start_server --config "$TMP/tokens.yaml" --listen 127.0.0.1:0; then
  req POST /v1/decide "$acquire"
  check "no token: 401" is 401
  check "no token: WWW-Authenticate Bearer" header_is www-authenticate 'Bearerrealm="admitd"'
  check "401: code unauthorized" has '"code":"unauthorized"'
  req POST /v1/decide "$acquire" -H "$(bearer wrong-0123456789abcdef)"
  check "wrong token: 401" is 401
  check "wrong token: error=invalid_token" header_matches www-authenticate 'error="invalid_token"'
  req POST /v1/decide "$acquire" -H "$(bearer "${ADMIT_SEC_DECIDE}x")"
  check "token with a byte more: 401" is 401
  req POST /v1/decide "$acquire" -H "Authorization: Basic $(printf 'u:%s' "$ADMIT_SEC_DECIDE" | base64 -w0)"
  check "Basic scheme: 401" is 401
  req POST "/v1/decide?access_token=$ADMIT_SEC_DECIDE" "$acquire"
  check "token in the query string: 401" is 401
  alive "401s"
  req GET /healthz
  check "healthz needs no token" is 200
  req POST /v1/decide "$acquire" -H "$(bearer "$ADMIT_SEC_DECIDE")"
  check "decide token on decide: 200" is 200
  req POST /v1/acquire "$acquire" -H "authorization: bearer $ADMIT_SEC_DECIDE"
  check "scheme and header name in any case: 200" is 200
  req GET /v1/limits "" -H "$(bearer "$ADMIT_SEC_DECIDE")"
  check "decide token reads limits: 200" is 200
  # Admin routes: limit writes, reload, audit.
  for route in "PUT /v1/limits/gpt-4o" "DELETE /v1/limits/gpt-4o" "POST /v1/admin/reload" "GET /v1/audit"; do
    req ${route% *} "${route#* }" '{}' -H "$(bearer "$ADMIT_SEC_DECIDE")"
    check "decide token on $route: 403" is 403
  done
  check "403: error=insufficient_scope" header_matches www-authenticate 'error="insufficient_scope"'
  check "403: names the scope" has 'has scope decide; this route needs admin'
  req POST /v1/admin/reload '{}' -H "$(bearer "$ADMIT_SEC_ADMIN")"
  [ "$STATUS" != 401 ] && [ "$STATUS" != 403 ] && ok "admin token passes on an admin route ($STATUS)" ||
    ko "admin token passes on an admin route" "$STATUS $BODY"
  req POST /v1/acquire "$acquire" -H "$(bearer "$ADMIT_SEC_ADMIN")"
  check "admin token on a decision route: 200" is 200
  alive "403s"
  # A token of namespace `other` on this admitd's namespace (default), with crafted bodies.
  req POST /v1/acquire "$acquire" -H "$(bearer "$ADMIT_SEC_OTHER")"
  check "namespace token elsewhere: 403" is 403
  check "403 names the namespace" has "is not allowed in namespace 'default'"
  req GET /v1/limits "" -H "$(bearer "$ADMIT_SEC_OTHER")"
  check "namespace token reads no limits elsewhere: 403" is 403
  req POST /v1/acquire '{"namespace":"default","entity":"victim","resource":"gpt-4o","amounts":{"rpd":1}}' \
    -H "$(bearer "$ADMIT_SEC_OTHER")"
  check "namespace token naming default: 403" is 403
  for body in '{"namespace":"other","namespace":"default","entity":"victim","resource":"gpt-4o","amounts":{"rpd":1}}' \
              '{"namespace":"default","namespace":"other","entity":"victim","resource":"gpt-4o","amounts":{"rpd":1}}' \
              '{"namespace":"other","entity":"victim","resource":"gpt-4o","amounts":{"rpd":1}}'; do
    req POST /v1/acquire "$body" -H "$(bearer "$ADMIT_SEC_OTHER")"
    [ "$STATUS" != 200 ] && ok "crafted namespace body refused ($STATUS): $body" ||
      ko "crafted namespace body refused" "$STATUS $BODY"
  done
  req POST /v1/decide "$acquire" -H "$(bearer "$ADMIT_SEC_ADMIN")"
  # Two acquires were allowed above (the decide token's, the admin token's); nothing else.
  check "crafted requests consumed nothing" has '"limit":"rpd","kind":"window","source":"resource","capacity":1000,"available":998,'
  alive "namespace attempts"
  # An allowed origin: preflight, then the request, with CORS headers; other origins still 403.
  creq OPTIONS /v1/acquire "" -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST' \
    -H 'Access-Control-Request-Headers: authorization, content-type'
  check "preflight from the allowed origin: 204" is 204
  check "preflight: Allow-Origin" header_is access-control-allow-origin https://app.example
  check "preflight: Allow-Headers" header_matches access-control-allow-headers Authorization
  req POST /v1/decide "$acquire" -H 'Origin: https://app.example' -H "$(bearer "$ADMIT_SEC_DECIDE")"
  check "allowed origin with a token: 200" is 200
  check "allowed origin: Access-Control-Allow-Origin" header_is access-control-allow-origin https://app.example
  req POST /v1/decide "$acquire" -H 'Origin: https://app.example'
  check "allowed origin without a token: 401" is 401
  creq OPTIONS /v1/acquire "" -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST'
  check "preflight from another origin: 403" is 403
  req GET /v1/limits "" -H "Host: admit.internal:$PORT" -H "$(bearer "$ADMIT_SEC_DECIDE")"
  check "configured Host name: 200" is 200
  req GET /v1/limits "" -H "Host: other.internal:$PORT" -H "$(bearer "$ADMIT_SEC_DECIDE")"
  check "other Host name: 421" is 421
  alive "CORS and Host"
  stop_server TERM
fi

# ---------------------------------------------------------------- several namespaces
# One admitd serving team-a (the first: requests naming none) and team-b on one store, a
# token for each. Every way of reaching the other team's counts or leases fails.
export ADMIT_SEC_A="team-a-0123456789abcdef" ADMIT_SEC_B="team-b-0123456789abcdef"
cat >"$TMP/namespaces.yaml" <<'EOF'
namespaces:
  team-a:
    resources:
      gpt-4o: [{name: slots, concurrency: 1}, {name: rpd, window: day, limit: 100}]
  team-b:
    resources:
      gpt-4o: [{name: slots, concurrency: 1}, {name: rpd, window: day, limit: 100}]
auth:
  tokens:
    - {token: "${ADMIT_SEC_A}", scope: decide, namespaces: [team-a], name: a}
    - {token: "${ADMIT_SEC_B}", scope: decide, namespaces: [team-b], name: b}
    - {token: "${ADMIT_SEC_ADMIN}", scope: admin, name: ops}
EOF
one='"entity":"u","resource":"gpt-4o","amounts":{"slots":1,"rpd":1}'
lease_of() { sed -n 's/.*"lease":{"id":"\([0-9a-f.]*\)".*/\1/p' <<<"$BODY"; }
if start_server --config "$TMP/namespaces.yaml" --listen 127.0.0.1:0; then
  grep -q "namespaces=team-a,team-b" "$LOG" && ok "startup line names both namespaces" ||
    ko "startup line names both namespaces" "$(cat "$LOG")"
  req POST /v1/acquire "{$one}" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a token, no namespace named: 200" is 200
  lease_a=$(lease_of)
  req POST /v1/acquire "{\"namespace\":\"team-b\",$one}" -H "$(bearer "$ADMIT_SEC_B")"
  check "team-b token in team-b (body): 200" is 200
  lease_b=$(lease_of)
  [ -n "$lease_a" ] && [ -n "$lease_b" ] && ok "two lease ids" || ko "two lease ids" "$lease_a $lease_b"
  req POST /v1/acquire "{$one}" -H "$(bearer "$ADMIT_SEC_B")"
  check "team-b token on the first namespace: 403" is 403
  req POST "/v1/acquire?namespace=team-a" "{$one}" -H "$(bearer "$ADMIT_SEC_B")"
  check "team-b token naming team-a in the query: 403" is 403
  req POST /v1/acquire "{\"namespace\":\"team-b\",$one}" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a token naming team-b in the body: 403" is 403
  req POST "/v1/acquire?namespace=team-a" "{\"namespace\":\"team-b\",$one}" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a token, body team-b, query team-a: 403" is 403
  req POST "/v1/acquire?namespace=team-b" "{\"namespace\":\"team-a\",$one}" -H "$(bearer "$ADMIT_SEC_A")"
  check "body team-a, query team-b: 400 (they must agree)" is 400
  req GET "/v1/limits?namespace=team-b" "" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a token reads no limits of team-b: 403" is 403
  req GET "/v1/stats?entity=u&namespace=team-b" "" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a token reads no stats of team-b: 403" is 403
  # team-b's token with team-a's lease id (and crafted ids) in team-b: not found there.
  for id in "$lease_a" "0000000000000001.${lease_a#*.}" "ffffffffffffffff.${lease_a#*.}"; do
    for route in "GET /v1/leases/$id" "POST /v1/leases/$id/commit" "POST /v1/leases/$id/rollback" \
                 "POST /v1/leases/$id/extend" "POST /v1/leases/$id/adjust"; do
      case $route in
        */extend) body='{"namespace":"team-b","ttl_ms":1000}' ;;
        */adjust) body='{"namespace":"team-b","amounts":{"rpd":-1}}' ;;
        GET*) body="" ;;
        *) body='{"namespace":"team-b"}' ;;
      esac
      if [ -z "$body" ]; then
        req GET "${route#GET }?namespace=team-b" "" -H "$(bearer "$ADMIT_SEC_B")"
      else
        req POST "${route#POST }" "$body" -H "$(bearer "$ADMIT_SEC_B")"
      fi
      [ "$STATUS" = 404 ] && has '"code":"lease_not_found"' && ok "$route in team-b: 404" ||
        ko "$route in team-b: 404" "$STATUS $BODY"
    done
  done
  # team-a's token may not touch team-b's lease at all, and does not find it in team-a.
  req POST "/v1/leases/$lease_b/commit?namespace=team-b" "" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a token on team-b's lease: 403" is 403
  req POST "/v1/leases/$lease_b/commit" "" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-b's lease in team-a: 404" is 404
  alive "cross-namespace attempts"
  # Nothing above consumed or freed anything: each team holds its one slot and one rpd.
  req POST /v1/decide "{\"namespace\":\"team-a\",$one}" -H "$(bearer "$ADMIT_SEC_ADMIN")"
  check "team-a: 1 rpd used" has '"limit":"rpd","kind":"window","source":"resource","capacity":100,"available":99,'
  check "team-a: its slot is held" has '"violations":[{"entity":"u","limit":"slots"'
  req POST /v1/decide "{\"namespace\":\"team-b\",$one}" -H "$(bearer "$ADMIT_SEC_ADMIN")"
  check "team-b: 1 rpd used" has '"limit":"rpd","kind":"window","source":"resource","capacity":100,"available":99,'
  req POST "/v1/leases/$lease_a/commit" "" -H "$(bearer "$ADMIT_SEC_A")"
  check "team-a commits its own lease: 200" is 200
  req POST "/v1/leases/$lease_b/commit?namespace=team-b" "" -H "$(bearer "$ADMIT_SEC_B")"
  check "team-b commits its own lease: 200" is 200
  stop_server TERM
fi

# ---------------------------------------------------------------- the bind rule
expect_exit "0.0.0.0 without tokens: exit 2" 2 "--insecure" \
  --config "$ROOT/config/sample.yaml" --listen 0.0.0.0:0
expect_exit "[::] without tokens: exit 2" 2 "refusing to listen on non-loopback address [::]" \
  --config "$ROOT/config/sample.yaml" --listen '[::]:0'
expect_exit "a short token: exit 2" 2 "shorter than 16 bytes" \
  --config "$ROOT/config/sample.yaml" --token-file <(echo short)
expect_exit "a bad token-file line: exit 2" 2 "expected decide or admin" \
  --config "$ROOT/config/sample.yaml" --token-file <(echo "0123456789abcdef root")
ADMIT_SEC_DECIDE= expect_exit "an empty \${ENV} token: exit 2" 2 "auth.tokens[0].token '(hidden)'" \
  --config "$TMP/tokens.yaml" --listen 127.0.0.1:0
(unset ADMIT_SEC_ADMIN; expect_exit "an unset \${ENV}: exit 2" 2 "environment variable ADMIT_SEC_ADMIN is not set" \
  --config "$TMP/tokens.yaml" --listen 127.0.0.1:0) | tee "$TMP/sub.out"
grep -q "^ok" "$TMP/sub.out" && pass=$((pass + 1)) || fail=$((fail + 1))

if start_server --config "$ROOT/config/sample.yaml" --listen 0.0.0.0:0 --insecure; then
  grep -q "insecure: listening on non-loopback 0.0.0.0 without authentication" "$LOG" &&
    ok "--insecure: warned" || ko "--insecure: warned" "$(cat "$LOG")"
  URL="http://127.0.0.1:$PORT"
  req POST /v1/decide "$acquire"
  check "--insecure on 0.0.0.0: serves without a token" is 200
  stop_server TERM
fi
printf '# admitd tokens\n%s admin\n' "$ADMIT_SEC_ADMIN" >"$TMP/token-file"
if start_server --config "$ROOT/config/sample.yaml" --listen 0.0.0.0:0 --token-file "$TMP/token-file"; then
  URL="http://127.0.0.1:$PORT"
  req POST /v1/decide "$acquire"
  check "0.0.0.0 with --token-file: 401 without a token" is 401
  req POST /v1/decide "$acquire" -H "$(bearer "$ADMIT_SEC_ADMIN")"
  check "0.0.0.0 with --token-file: 200 with it" is 200
  stop_server TERM
fi
for listen in '127.0.0.2:0' '[::1]:0' '[::ffff:127.0.0.1]:0' 'localhost:0'; do
  case $listen in *::1*) [ -e /proc/net/if_inet6 ] || { ok "skipped $listen (no IPv6)"; continue; } ;; esac
  if start_server --config "$ROOT/config/sample.yaml" --listen "$listen"; then
    req GET /healthz
    check "loopback $listen without tokens: serves" is 200
    stop_server TERM
  fi
done

summary
