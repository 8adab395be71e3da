# shellcheck shell=bash
# Throwaway Redis servers for tests, on free loopback ports. Source it, then:
#   trap redis_stop_all EXIT
#   redis_start_standalone DIR  -> ADMIT_TEST_REDIS_URL=redis://127.0.0.1:P
#   redis_start_auth DIR        -> ADMIT_TEST_REDIS_AUTH_URL=redis://:secret@127.0.0.1:P
#   redis_start_cluster DIR     -> ADMIT_TEST_REDIS_CLUSTER=127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#   redis_start_tls DIR         -> ADMIT_TEST_REDIS_TLS_URL=rediss://127.0.0.1:P?ca=..&cert=..&key=..
#                                  (TLS only, client certificates required; see the function)
#   redis_start_tls_cluster DIR -> ADMIT_TEST_REDIS_TLS_CLUSTER_URL=rediss+cluster://127.0.0.1:P1,..?ca=..
# Each server gets its own fresh directory under DIR (data, log, cluster config). Works under
# `set -euo pipefail`. redis_stop_all stops only the servers started here; safe to call twice.

_ADMIT_REDIS_PIDS=()

# Prints a port the kernel just handed out on 127.0.0.1 (free at that moment).
_redis_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# _redis_cli ARGS...: redis-cli; over TLS with the test client certificate when
# _REDIS_TLS_DIR is set (see _redis_launch).
_redis_cli() {
  if [ -n "${_REDIS_TLS_DIR:-}" ]; then
    redis-cli --tls --cacert "$_REDIS_TLS_DIR/ca.crt" --cert "$_REDIS_TLS_DIR/client.crt" \
      --key "$_REDIS_TLS_DIR/client.key" "$@"
  else
    redis-cli "$@"
  fi
}

# _redis_wait_ping PORT PID [PASSWORD]: waits up to 10 s for PONG; fails if PID exits.
_redis_wait_ping() {
  local port=$1 pid=$2 pass=${3:-} i out
  for ((i = 0; i < 200; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    out=$(REDISCLI_AUTH="$pass" _redis_cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)
    if [ "$out" = "PONG" ]; then return 0; fi
    sleep 0.05
  done
  return 1
}

# _redis_launch DIR PASSWORD EXTRA_ARGS...: starts one server on a free port (retrying on a
# port collision) and sets _REDIS_PORT. An EXTRA_ARG "@FREE_PORT@" becomes another free port
# (each attempt). The server runs in the background of this shell. With _REDIS_TLS_DIR set
# (a directory made by _redis_make_certs) the port is a TLS port and there is no plain one.
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
    if [ -n "${_REDIS_TLS_DIR:-}" ]; then
      args=(--port 0 --tls-port "$port" "${args[@]:2}"
        --tls-cert-file "$_REDIS_TLS_DIR/server.crt" --tls-key-file "$_REDIS_TLS_DIR/server.key"
        --tls-ca-cert-file "$_REDIS_TLS_DIR/ca.crt")
    fi
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
  _redis_cluster "${1:?usage: redis_start_cluster DIR}" || return 1
  export ADMIT_TEST_REDIS_CLUSTER=$_REDIS_CLUSTER
}

# _redis_cluster DIR [EXTRA_ARGS...]: three masters; sets _REDIS_CLUSTER to their seed list.
# Over TLS (client port and cluster bus) when _REDIS_TLS_DIR is set.
_redis_cluster() {
  local parent=$1 ports=() i port ok
  shift
  for _ in 1 2 3; do
    _redis_launch "$parent" "" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-port @FREE_PORT@ --cluster-node-timeout 5000 "$@" || return 1
    ports+=("$_REDIS_PORT")
  done
  local addrs=()
  for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
  if ! _redis_cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
    >"$parent/cluster-create.log" 2>&1; then
    cat "$parent/cluster-create.log" >&2
    return 1
  fi
  # Every node must report cluster_state:ok and know all three masters.
  for ((i = 0; i < 400; i++)); do
    ok=1
    for port in "${ports[@]}"; do
      if ! _redis_cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null |
        grep -q '^cluster_state:ok'; then
        ok=0
      elif [ "$(_redis_cli -h 127.0.0.1 -p "$port" cluster nodes 2>/dev/null |
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
  _REDIS_CLUSTER="${addrs[*]}"
}

# shellcheck source=scripts/lib/certs.sh
source "$(dirname "${BASH_SOURCE[0]}")/certs.sh"

# _redis_make_certs DIR: the test PKI of certs_make (scripts/lib/certs.sh) in DIR: ca.crt,
# server.crt/.key (127.0.0.1 and localhost; also a client certificate), client.crt/.key,
# client-encrypted.key, other-ca.crt.
_redis_make_certs() { certs_make "$@"; }

# A TLS-only server (--port 0 --tls-port P) that requires client certificates (redis-server's
# default tls-auth-clients yes), with a fresh test PKI in DIR/tls-XXXXXX. Exports
#   ADMIT_TEST_REDIS_TLS_URL       rediss://127.0.0.1:P?ca=CA&cert=CERT&key=KEY
#   ADMIT_TEST_REDIS_TLS_CA        the CA that signed the server's and the client's certificates
#   ADMIT_TEST_REDIS_TLS_CERT      the client certificate
#   ADMIT_TEST_REDIS_TLS_KEY       its key
#   ADMIT_TEST_REDIS_TLS_OTHER_CA  a CA that signed neither
# The server's certificate names 127.0.0.1 and localhost. Needs openssl and a redis-server
# built with TLS (Debian's is). The paths go into the URL as they are: DIR must not contain
# '?', '&', '#' or '%'.
redis_start_tls() {
  local parent=${1:?usage: redis_start_tls DIR} certs
  mkdir -p "$parent"
  parent=$(cd "$parent" && pwd)
  certs=$(mktemp -d "$parent/tls-XXXXXX")
  _redis_make_certs "$certs" || return 1
  local _REDIS_TLS_DIR=$certs # seen by _redis_launch and _redis_wait_ping
  _redis_launch "$parent" "" || return 1
  export ADMIT_TEST_REDIS_TLS_CA="$certs/ca.crt" ADMIT_TEST_REDIS_TLS_CERT="$certs/client.crt" \
    ADMIT_TEST_REDIS_TLS_KEY="$certs/client.key" ADMIT_TEST_REDIS_TLS_OTHER_CA="$certs/other-ca.crt"
  export ADMIT_TEST_REDIS_TLS_URL="rediss://127.0.0.1:$_REDIS_PORT?ca=$ADMIT_TEST_REDIS_TLS_CA&cert=$ADMIT_TEST_REDIS_TLS_CERT&key=$ADMIT_TEST_REDIS_TLS_KEY"
}

# The cluster of redis_start_cluster over TLS: TLS-only nodes, the cluster bus over TLS too
# (--tls-cluster yes), client certificates required, a fresh test PKI in DIR/tls-XXXXXX (as
# redis_start_tls's). Exports ADMIT_TEST_REDIS_TLS_CLUSTER_URL:
#   rediss+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3?ca=CA&cert=CERT&key=KEY
redis_start_tls_cluster() {
  local parent=${1:?usage: redis_start_tls_cluster DIR} certs
  mkdir -p "$parent"
  parent=$(cd "$parent" && pwd)
  certs=$(mktemp -d "$parent/tls-XXXXXX")
  _redis_make_certs "$certs" || return 1
  local _REDIS_TLS_DIR=$certs
  _redis_cluster "$parent" --tls-cluster yes || return 1
  export ADMIT_TEST_REDIS_TLS_CLUSTER_URL="rediss+cluster://$_REDIS_CLUSTER?ca=$certs/ca.crt&cert=$certs/client.crt&key=$certs/client.key"
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
