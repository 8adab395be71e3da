# shellcheck shell=bash
# Throwaway Redis servers for tests, on free loopback ports. Source it, then:
#   trap redis_stop_all EXIT
#   redis_start_standalone DIR  -> ADMIT_TEST_REDIS_URL=redis://127.0.0.1:P
#   redis_start_auth DIR        -> ADMIT_TEST_REDIS_AUTH_URL=redis://:secret@127.0.0.1:P
#   redis_start_cluster DIR     -> ADMIT_TEST_REDIS_CLUSTER=127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
# Each server gets its own fresh directory under DIR (data, log, cluster config). Works under
# `set -euo pipefail`. redis_stop_all stops only the servers started here; safe to call twice.

_ADMIT_REDIS_PIDS=()

# Prints a port the kernel just handed out on 127.0.0.1 (free at that moment).
_redis_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# _redis_wait_ping PORT PID [PASSWORD]: waits up to 10 s for PONG; fails if PID exits.
_redis_wait_ping() {
  local port=$1 pid=$2 pass=${3:-} i out
  for ((i = 0; i < 200; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    out=$(REDISCLI_AUTH="$pass" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)
    if [ "$out" = "PONG" ]; then return 0; fi
    sleep 0.05
  done
  return 1
}

# _redis_launch DIR PASSWORD EXTRA_ARGS...: starts one server on a free port (retrying on a
# port collision) and sets _REDIS_PORT. An EXTRA_ARG "@FREE_PORT@" becomes another free port
# (each attempt). The server runs in the background of this shell.
_redis_launch() {
  local parent=$1 pass=$2
  shift 2
  local attempt port dir pid a
  mkdir -p "$parent"
  parent=$(cd "$parent" && pwd)  # absolute: redis-server opens --logfile after chdir to --dir
  for ((attempt = 0; attempt < 5; attempt++)); do
    port=$(_redis_free_port)
    dir=$(mktemp -d "$parent/redis-$port.XXXXXX")
    local args=(--port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no
      --dir "$dir" --logfile "$dir/redis.log")
    if [ -n "$pass" ]; then args+=(--requirepass "$pass"); fi
    for a in "$@"; do
      if [ "$a" = "@FREE_PORT@" ]; then a=$(_redis_free_port); fi
      args+=("$a")
    done
    redis-server "${args[@]}" </dev/null >/dev/null 2>&1 &
    pid=$!
    if _redis_wait_ping "$port" "$pid" "$pass"; then
      _ADMIT_REDIS_PIDS+=("$pid")
      _REDIS_PORT=$port
      _REDIS_DIR=$dir
      return 0
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "redis.sh: redis-server on port $port did not start; retrying" >&2
    tail -5 "$dir/redis.log" >&2 2>/dev/null || true
  done
  echo "redis.sh: could not start redis-server" >&2
  return 1
}

redis_start_standalone() {
  _redis_launch "${1:?usage: redis_start_standalone DIR}" "" || return 1
  export ADMIT_TEST_REDIS_URL="redis://127.0.0.1:$_REDIS_PORT"
}

redis_start_auth() {
  _redis_launch "${1:?usage: redis_start_auth DIR}" secret || return 1
  export ADMIT_TEST_REDIS_AUTH_URL="redis://:secret@127.0.0.1:$_REDIS_PORT"
}

# Three masters, no replicas. The cluster bus port is another free port (--cluster-port).
redis_start_cluster() {
  local parent=${1:?usage: redis_start_cluster DIR} ports=() i port ok
  for _ in 1 2 3; do
    _redis_launch "$parent" "" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-port @FREE_PORT@ --cluster-node-timeout 5000 || return 1
    ports+=("$_REDIS_PORT")
  done
  local addrs=()
  for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
    >"$parent/cluster-create.log" 2>&1; then
    cat "$parent/cluster-create.log" >&2
    return 1
  fi
  # Every node must report cluster_state:ok and know all three masters.
  for ((i = 0; i < 400; i++)); do
    ok=1
    for port in "${ports[@]}"; do
      if ! redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null |
        grep -q '^cluster_state:ok'; then
        ok=0
      elif [ "$(redis-cli -h 127.0.0.1 -p "$port" cluster nodes 2>/dev/null |
        grep -c master)" -ne 3 ]; then
        ok=0
      fi
    done
    if [ $ok -eq 1 ]; then break; fi
    sleep 0.05
  done
  if [ $ok -ne 1 ]; then
    echo "redis.sh: the cluster did not reach cluster_state:ok" >&2
    return 1
  fi
  local IFS=,
  export ADMIT_TEST_REDIS_CLUSTER="${addrs[*]}"
}

redis_stop_all() {
  local pid
  for pid in "${_ADMIT_REDIS_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${_ADMIT_REDIS_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  _ADMIT_REDIS_PIDS=()
}
