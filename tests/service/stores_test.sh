#!/usr/bin/env bash
# admitd on the stores its config names (`store:`), end to end:
#   - a SQLite admitd killed with SIGKILL and restarted keeps what it counted;
#   - two admitd on one redis-server are one fleet: 8 concurrent clients spread over both
#     admit at most burst + rate * t, and every token is either admitted or still in the
#     bucket at the end (so the fleet admits all it may, not N times the limit);
#   - an unreachable Redis: `unavailable: fail_open` admits, the default fail_closed says 503;
#   - Redis over TLS (`store: rediss://...?ca=...&cert=...&key=...`): acquires count on the
#     server; a server certificate the configured CA did not sign makes the store unavailable.
# The Redis parts need ADMIT_TEST_REDIS_URL and ADMIT_TEST_REDIS_TLS_URL (scripts/test starts
# the servers and sets them); without them the parts are skipped, unless ADMIT_REQUIRE_REDIS=1.
# Usage: bash tests/service/stores_test.sh path/to/admitd
BIN=${1:?usage: stores_test.sh ADMITD_BINARY}
NAME=admitd
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../support/http_test.sh
source "$ROOT/tests/support/http_test.sh"

# ---------------------------------------------------------------- SQLite: SIGKILL, restart
cat >"$TMP/sqlite.yaml" <<EOF
store:
  url: sqlite:$TMP/admit.db
  durability: per_op
resources:
  gpt-4o:
    - {name: rpd, limit: 100, per: day}
EOF
acquire='{"entity":"u1","resource":"gpt-4o","amounts":{"rpd":7}}'
decide='{"entity":"u1","resource":"gpt-4o","amounts":{"rpd":1}}'
if start_server --config "$TMP/sqlite.yaml" --listen 127.0.0.1:0; then
  check "startup log names the sqlite store" grep -q "store=sqlite:$TMP/admit.db (per_op, fail_closed)" "$LOG"
  n=0
  for _ in 1 2 3; do req POST /v1/acquire "$acquire"; is 200 && n=$((n + 1)); done
  [ "$n" -eq 3 ] && ok "3 acquires of 7 on sqlite" || ko "3 acquires of 7 on sqlite" "$n"
  kill -KILL "$PID"
  wait "$PID" 2>/dev/null
  PID=""
  if start_server --config "$TMP/sqlite.yaml" --listen 127.0.0.1:0; then
    req POST /v1/decide "$decide"
    check "after SIGKILL and restart: 100 - 21 left" has '"available":79'
    stop_server
  fi
fi

# ---------------------------------------------------------------- memory: the live-key cap
# max_keys 64 over 64 shards: one live key per shard. New entities fill the shards; one that
# needs a key in a full shard gets 503 store_unavailable naming max_keys, while an entity
# already admitted keeps being served.
cat >"$TMP/capped.yaml" <<EOF
store: {url: memory, max_keys: 64}
resources:
  m: [{name: rpd, window: day, limit: 1000}]
EOF
if start_server --config "$TMP/capped.yaml" --listen 127.0.0.1:0; then
  n200=0 n503=0 first=""
  for i in $(seq 200); do
    req POST /v1/acquire "{\"entity\":\"e$i\",\"resource\":\"m\",\"amounts\":{\"rpd\":1},\"lease\":false}"
    if is 200; then n200=$((n200 + 1)); [ -z "$first" ] && first=e$i; fi
    if is 503 && has max_keys; then n503=$((n503 + 1)); fi
  done
  [ "$n200" -le 64 ] && [ "$n503" -gt 0 ] && [ $((n200 + n503)) -eq 200 ] &&
    ok "max_keys 64: $n200 new keys admitted, $n503 refused with 503" ||
    ko "max_keys 64: at most 64 admitted, the rest 503" "200: $n200, 503: $n503"
  req POST /v1/acquire "{\"entity\":\"$first\",\"resource\":\"m\",\"amounts\":{\"rpd\":1},\"lease\":false}"
  check "a live key keeps working at the cap" is 200
  check "startup log names the cap" grep -q "store=memory (max_keys 64)" "$LOG"
  req GET /metrics
  check "metrics count the refusals" has "admit_store_key_cap_refusals_total $n503"
  check "metrics show the live keys" grep -qE '^admit_store_keys [1-9]' <<<"$BODY"
  stop_server
fi

# ---------------------------------------------------------------- config errors
cat >"$TMP/bad.yaml" <<EOF
store:
  url: sqlite:$TMP/x.db
  prefix: nope
EOF
"$BIN" --config "$TMP/bad.yaml" --listen 127.0.0.1:0 >"$TMP/bad.out" 2>&1
rc=$?
[ "$rc" -eq 2 ] && ok "a redis-only key on sqlite: exit 2" || ko "a redis-only key on sqlite: exit 2" "rc=$rc"
check "the error names store.prefix and file:line" grep -q "store.prefix.*bad.yaml:3" "$TMP/bad.out"

# ---------------------------------------------------------------- Redis down: fail_open
cat >"$TMP/down.yaml" <<EOF
store:
  url: redis://127.0.0.1:1
  connect_timeout_ms: 200
  unavailable: fail_open
resources:
  gpt-4o:
    - {name: rpm, limit: 1, per: minute}
EOF
if start_server --config "$TMP/down.yaml" --listen 127.0.0.1:0; then
  req POST /v1/acquire '{"entity":"u","resource":"gpt-4o","amounts":{"rpm":1}}'
  check "redis unreachable, fail_open: allowed" is 200
  cat >"$TMP/closed.yaml" <<EOF
store: redis://127.0.0.1:1
resources:
  gpt-4o:
    - {name: rpm, limit: 1, per: minute}
EOF
  stop_server
  if start_server --config "$TMP/closed.yaml" --listen 127.0.0.1:0; then
    req POST /v1/acquire '{"entity":"u","resource":"gpt-4o","amounts":{"rpm":1}}'
    check "redis unreachable, fail_closed: 503" is 503
    check "code store_unavailable" has '"code":"store_unavailable"'
    stop_server
  fi
fi

# ---------------------------------------------------------------- Redis over TLS (rediss://)
# The TLS-only server of redis_start_tls (client certificates required): one admitd whose
# `store:` is that rediss:// URL (CA, client certificate and key as URL parameters) counts on
# it; one whose CA did not sign the server's certificate cannot reach its store (503).
if [ -n "${ADMIT_TEST_REDIS_TLS_URL:-}" ]; then
  cat >"$TMP/tls.yaml" <<EOF
store:
  url: "$ADMIT_TEST_REDIS_TLS_URL"
  prefix: tls$$
resources:
  gpt-4o:
    - {name: rpm, limit: 2, per: minute}
EOF
  acquire='{"entity":"u","resource":"gpt-4o","amounts":{"rpm":1}}'
  if start_server --config "$TMP/tls.yaml" --listen 127.0.0.1:0; then
    check "startup log names the rediss store" \
      grep -q "store=rediss://127.0.0.1:[0-9]*/0 (standalone, fail_closed)" "$LOG"
    req POST /v1/acquire "$acquire"
    check "acquire over TLS: 200" is 200
    req POST /v1/acquire "$acquire"
    check "second acquire over TLS: 200" is 200
    req POST /v1/acquire "$acquire"
    check "third acquire over TLS: 429 (counted on the server)" is 429
    stop_server
  fi
  # The same server, another CA: the handshake fails, the store is unavailable.
  sed "s|ca=[^&]*|ca=$ADMIT_TEST_REDIS_TLS_OTHER_CA|" "$TMP/tls.yaml" >"$TMP/tls-other-ca.yaml"
  if start_server --config "$TMP/tls-other-ca.yaml" --listen 127.0.0.1:0; then
    req POST /v1/acquire "$acquire"
    check "a server certificate of another CA: 503" is 503
    check "code store_unavailable" has '"code":"store_unavailable"'
    check "the reason names the certificate check" has 'certificate verify failed'
    stop_server
  fi
elif [ "${ADMIT_REQUIRE_REDIS:-0}" = 1 ]; then
  ko "redis TLS part" "ADMIT_REQUIRE_REDIS=1 but ADMIT_TEST_REDIS_TLS_URL is not set"
else
  echo "skip - redis TLS part (ADMIT_TEST_REDIS_TLS_URL not set)"
fi

# ---------------------------------------------------------------- Redis: a fleet of two
if [ -z "${ADMIT_TEST_REDIS_URL:-}" ]; then
  if [ "${ADMIT_REQUIRE_REDIS:-0}" = 1 ]; then
    ko "redis part" "ADMIT_REQUIRE_REDIS=1 but ADMIT_TEST_REDIS_URL is not set"
  else
    echo "skip - redis part (ADMIT_TEST_REDIS_URL not set)"
  fi
  summary
  exit
fi

prefix="fleet$$"
cat >"$TMP/fleet.yaml" <<EOF
store:
  url: $ADMIT_TEST_REDIS_URL
  prefix: $prefix
resources:
  gpt-4o:
    - {name: rps, limit: 100, per: second, burst: 1000}
  leased:
    - {name: tpd, window: day, limit: 6000}
    - {name: slots, concurrency: 1}
EOF
# The second admitd: started by hand (start_server tracks one process).
"$BIN" --config "$TMP/fleet.yaml" --listen 127.0.0.1:0 >"$TMP/b.out" 2>"$TMP/b.log" &
PID_B=$!
trap 'kill $PID_B 2>/dev/null; http_test_cleanup' EXIT
URL_B=""
for _ in $(seq 100); do
  URL_B=$(head -1 "$TMP/b.out" 2>/dev/null | sed -n 's|^listening on \(http://.*\)$|\1|p')
  [ -n "$URL_B" ] && break
  sleep 0.1
done
if [ -n "$URL_B" ] && start_server --config "$TMP/fleet.yaml" --listen 127.0.0.1:0; then
  ok "two admitd on one redis ($URL and $URL_B)"
  # 8 clients, half on each process, for 3 s of real time. The bucket is drained first (one
  # acquire of the whole burst), so that it stays below its capacity for the whole run and
  # no refill is lost however the clients are scheduled: then admitted + what the bucket has
  # at the end is exactly what refilled since the drain, and admitted alone never exceeds
  # burst + rate * t.
  python3 - "$URL" "$URL_B" >"$TMP/fleet.out" 2>&1 <<'PY'
import http.client, json, sys, threading, time, urllib.parse

urls = sys.argv[1:3]
def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)
def post(c, path, body):
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read())

req = {"entity": "fleet-user", "resource": "gpt-4o", "amounts": {"rps": 1}}
c0 = conn(urls[0])
t0 = time.monotonic()
status, _ = post(c0, "/v1/acquire", dict(req, amounts={"rps": 1000}))
assert status == 200, status
t_drained = time.monotonic()
admitted = [0] * 8
stop = t_drained + 3.0
def client(i):
    c = conn(urls[i % 2])
    while time.monotonic() < stop:
        s, _ = post(c, "/v1/acquire", req)
        if s == 200:
            admitted[i] += 1
        elif s != 429:
            raise SystemExit("unexpected status %d" % s)
threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
s, d = post(c0, "/v1/decide", req)
t1 = time.monotonic()
left = [x["available"] for x in d["stats"] if x["limit"] == "rps"][0]
n = sum(admitted)
upper = 1000 + 100 * (t1 - t0)   # burst + rate * t (t from before the drain)
print("admitted %d (per client %s), left %d, upper bound %.1f, refill since the drain %.1f..%.1f"
      % (n, admitted, left, upper, 100 * (t1 - t_drained), 100 * (t1 - t0)))
ok = True
if 1000 + n > upper + 1:
    print("FAIL: admitted more than burst + rate * t"); ok = False
if n + left < 0.99 * 100 * (t1 - t_drained) - 1:
    print("FAIL: tokens lost: admitted + left below 99%% of the refill"); ok = False
if n + left > 100 * (t1 - t0) + 1:
    print("FAIL: admitted + left above the refill"); ok = False
if min(admitted) == 0:
    print("FAIL: a client was never admitted"); ok = False
sys.exit(0 if ok else 1)
PY
  rc=$?
  cat "$TMP/fleet.out"
  [ "$rc" -eq 0 ] && ok "fleet of two: exact across processes" || ko "fleet of two: exact across processes" "$(cat "$TMP/fleet.out")"
  check "startup log names the redis store" grep -q "store=redis://.* (standalone, fail_closed)" "$LOG"

  # A lease taken on one admitd is adjusted, extended and committed on the other (a load
  # balancer may send them anywhere); its slot is held across the fleet until then; a second
  # end, on either process, is a 404 and refunds nothing.
  python3 - "$URL" "$URL_B" >"$TMP/lease.out" 2>&1 <<'PY'
import http.client, json, sys, urllib.parse

a, b = sys.argv[1:3]
def call(url, method, path, body=None):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request(method, path, None if body is None else json.dumps(body),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read())
def tpm(d):
    return [s["available"] for s in d["stats"] if s["limit"] == "tpd"][0]
fails = []
def expect(what, cond, got=None):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else " (got %r)" % (got,)))
    if not cond: fails.append(what)

s, d = call(a, "POST", "/v1/acquire", {"entity": "u", "resource": "leased", "amounts": {"tpd": 3000}})
expect("acquire on A", s == 200 and "lease" in d, (s, d))
lease = d["lease"]["id"]
s, d = call(b, "POST", "/v1/acquire", {"entity": "u", "resource": "leased", "amounts": {"tpd": 1}})
expect("the slot is held fleet-wide: B refuses a second lease", s == 429 and d["code"] == "concurrency_exceeded", (s, d))
s, d = call(b, "POST", "/v1/leases/%s/adjust" % lease, {"amounts": {"tpd": -2000}})
expect("adjust on B", s == 200 and tpm(d) == 5000, (s, d))
s, d = call(b, "POST", "/v1/leases/%s/extend" % lease, {"ttl_ms": 600000})
expect("extend on B", s == 200 and d["lease"]["expires_in_ms"] == 600000, (s, d))
s, d = call(a, "GET", "/v1/leases/%s" % lease)
expect("A sees the extended lease", s == 200 and d["expires_in_ms"] > 590000, (s, d))
s, d = call(b, "POST", "/v1/leases/%s/commit" % lease, {})
expect("commit on B", s == 200 and d["lease"]["ended"] == "committed", (s, d))
s, d = call(a, "POST", "/v1/leases/%s/rollback" % lease, {})
expect("rollback after the commit, on A: 404", s == 404 and d["code"] == "lease_not_found", (s, d))
s, d = call(a, "POST", "/v1/decide", {"entity": "u", "resource": "leased", "amounts": {"tpd": 1}})
expect("usage kept once: 5000 tpd left", tpm(d) == 5000, d)
s, d = call(a, "POST", "/v1/acquire", {"entity": "u", "resource": "leased", "amounts": {"tpd": 1}, "lease": False})
expect("the slot is free again", s == 200, (s, d))
sys.exit(1 if fails else 0)
PY
  rc=$?
  cat "$TMP/lease.out"
  [ "$rc" -eq 0 ] && ok "a lease moves across the fleet" || ko "a lease moves across the fleet" "$(cat "$TMP/lease.out")"
  stop_server
fi
kill "$PID_B" 2>/dev/null
wait "$PID_B" 2>/dev/null

summary
