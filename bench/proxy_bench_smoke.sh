#!/usr/bin/env bash
# The proxy benchmark's smoke run for CI (ctest proxy_bench_smoke): scripts/bench-proxy --quick
# (~30 s) with the binaries of this build. Checks that the simulators and admitd start, every
# phase runs, and the last line is a JSON object with the documented keys in sane ranges. No
# performance assertion: the figures of a 10 s run on a shared machine mean nothing.
# Usage: bash bench/proxy_bench_smoke.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: proxy_bench_smoke.sh BUILD_DIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if ! out=$("$root/scripts/bench-proxy" --quick --json --bin-dir "$build" 2>"$err"); then
  echo "FAIL - scripts/bench-proxy --quick failed:"
  cat "$err"
  echo "$out"
  exit 1
fi
echo "$out" | head -n -1
python3 - "$(tail -1 <<<"$out")" <<'PY'
import json, math, sys

d = json.loads(sys.argv[1])
fails = []


def need(key, ok, what):
    v = d.get(key)
    good = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)
    print(("ok   - " if good else "FAIL - ") + f"{key} = {v!r} ({what})")
    if not good:
        fails.append(key)


half = d.get("duration_s", 0) / 2
need("goodput", lambda v: 0 < v < 100, "served tokens / hidden capacity, > 0")
need("share_429", lambda v: 0 <= v <= 1, "a share")
need("upstream_429", lambda v: v >= 0 and v == int(v), "a count")
need("added_p50_us", lambda v: abs(v) < 1e6, "a latency difference in us")
need("added_p99_us", lambda v: abs(v) < 1e6, "a latency difference in us")
need("shared_goodput_of_left", lambda v: 0 < v < 100, "served tokens / what is left, > 0")
need("shared_share_429", lambda v: 0 <= v <= 1, "a share")
need("shared_settle_s", lambda v: 0 <= v <= half, "seconds within the second half")
need("direct_n", lambda v: v > 0, "requests measured straight to the simulator")
need("proxy_n", lambda v: v > 0, "requests measured through admitd")
need("responses", lambda v: v > 0, "answers to admitd's clients, alone")
need("shared_responses", lambda v: v > 0, "answers to admitd's clients, shared")
need("latency_errors", lambda v: v == 0, "no answer but 200 in the latency phase")
need("errors", lambda v: v == 0, "no answer but 200 or 429, alone")
need("shared_errors", lambda v: v == 0, "no answer but 200 or 429, shared")
print(f"{15 - len(fails)} passed, {len(fails)} failed")
sys.exit(1 if fails else 0)
PY
