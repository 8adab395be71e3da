# shellcheck shell=bash
# Throwaway nginx servers terminating TLS, on free loopback ports, as the current user: the
# upstream of the HTTP client's TLS test (tests/common/http_client_tls_test.cpp) and, in front
# of admit-provider-sim, of the gateway's (tests/service/gateway_tls_test.sh).
# Source it, then:
#   trap nginx_stop EXIT
#   nginx_start_tls DIR -> exports
#     ADMIT_TEST_TLS_URL            https://127.0.0.1:P  (certificate for 127.0.0.1 and localhost)
#     ADMIT_TEST_TLS_LOCALHOST_URL  https://127.0.0.1:P2 (certificate for localhost only)
#     ADMIT_TEST_TLS_CA             the CA that signed both certificates
#     ADMIT_TEST_TLS_OTHER_CA       a CA that signed neither
# Both ports answer /v1/... (any method) with 200 and a fixed JSON body (Content-Length), and
# GET /stream.html with an SSI page, which nginx sends chunked. nginx runs as one process
# (master_process off: no workers, no user switch) in the background of this shell; its
# config, certificates, pid file, logs and temp directories are in DIR/nginx-XXXXXX.
#   nginx_start_tls_proxy DIR BACKEND -> exports
#     ADMIT_TEST_TLS_PROXY_URL      https://127.0.0.1:P, proxying every request to BACKEND
#                                   (http://HOST:PORT) unbuffered, so streams pass as they come
#     ADMIT_TEST_TLS_CA, ADMIT_TEST_TLS_OTHER_CA as above
# Works under `set -euo pipefail`. nginx_stop stops every nginx started here.

# shellcheck source=scripts/lib/certs.sh
source "$(dirname "${BASH_SOURCE[0]}")/certs.sh"

_ADMIT_NGINX_PIDS=()

_nginx_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# _nginx_prelude DIR: the start of a config: one process, everything under DIR, TLS 1.2+.
_nginx_prelude() {
  local d=$1
  cat <<CONF
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_timeout 60s;
  ssl_protocols TLSv1.2 TLSv1.3;
CONF
}

# _nginx_config DIR PORT PORT2: writes DIR/nginx.conf.
_nginx_config() {
  local d=$1 port=$2 port2=$3
  { _nginx_prelude "$d"; cat; } >"$d/nginx.conf" <<CONF
  root $d/www;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $d/certs/server.crt;
    ssl_certificate_key $d/certs/server.key;
    location /v1/ {
      default_type application/json;
      return 200 '{"object":"list","data":[{"id":"test-model"}]}';
    }
    location = /stream.html { ssi on; default_type text/html; }
  }
  server {
    listen 127.0.0.1:$port2 ssl;
    ssl_certificate $d/certs/localhost.crt;
    ssl_certificate_key $d/certs/localhost.key;
    location /v1/ {
      default_type application/json;
      return 200 '{"object":"list","data":[{"id":"test-model"}]}';
    }
  }
}
CONF
}

# _nginx_prepare PARENT: a new DIR/nginx-XXXXXX with certificates; prints its path.
_nginx_prepare() {
  local parent=$1 d
  mkdir -p "$parent"
  parent=$(cd "$parent" && pwd)
  d=$(mktemp -d "$parent/nginx-XXXXXX")
  certs_make "$d/certs" >&2 || return 1
  mkdir -p "$d/tmp" "$d/www"
  echo "$d"
}

# _nginx_launch DIR CONFIG_FN PATH: picks two free ports, writes the config with
# CONFIG_FN DIR PORT PORT2, starts nginx and waits until https://127.0.0.1:PORT/PATH answers
# (any status); retries with other ports. Sets _NGINX_PORT and _NGINX_PORT2.
_nginx_launch() {
  local d=$1 config_fn=$2 path=$3 attempt port port2 pid i code
  for ((attempt = 0; attempt < 5; attempt++)); do
    port=$(_nginx_free_port)
    port2=$(_nginx_free_port)
    "$config_fn" "$d" "$port" "$port2"
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" </dev/null >>"$d/nginx.out" 2>&1 &
    pid=$!
    for ((i = 0; i < 200; i++)); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$d/certs/ca.crt" \
        "https://127.0.0.1:$port/$path" 2>/dev/null || true)
      if [ -n "$code" ] && [ "$code" != "000" ]; then
        _ADMIT_NGINX_PIDS+=("$pid")
        _NGINX_PORT=$port
        _NGINX_PORT2=$port2
        return 0
      fi
      sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "nginx.sh: nginx on ports $port, $port2 did not start; retrying" >&2
    tail -5 "$d/error.log" >&2 2>/dev/null || true
  done
  echo "nginx.sh: could not start nginx" >&2
  return 1
}

nginx_start_tls() {
  local d
  d=$(_nginx_prepare "${1:?usage: nginx_start_tls DIR}") || return 1
  printf 'begin;<!--# set var="part" value="middle" --><!--# echo var="part" -->;end\n' \
    >"$d/www/stream.html"
  _nginx_launch "$d" _nginx_config v1/models || return 1
  export ADMIT_TEST_TLS_URL="https://127.0.0.1:$_NGINX_PORT"
  export ADMIT_TEST_TLS_LOCALHOST_URL="https://127.0.0.1:$_NGINX_PORT2"
  export ADMIT_TEST_TLS_CA="$d/certs/ca.crt" ADMIT_TEST_TLS_OTHER_CA="$d/certs/other-ca.crt"
}

# _nginx_proxy_config DIR PORT PORT2: writes DIR/nginx.conf for nginx_start_tls_proxy (PORT2
# unused). The backend comes from $_NGINX_BACKEND.
_nginx_proxy_config() {
  local d=$1 port=$2
  { _nginx_prelude "$d"; cat; } >"$d/nginx.conf" <<CONF
  upstream backend { server $_NGINX_BACKEND; keepalive 16; }
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $d/certs/server.crt;
    ssl_certificate_key $d/certs/server.key;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
}

nginx_start_tls_proxy() {
  local d backend=${2:?usage: nginx_start_tls_proxy DIR http://HOST:PORT}
  d=$(_nginx_prepare "${1:?usage: nginx_start_tls_proxy DIR http://HOST:PORT}") || return 1
  _NGINX_BACKEND=${backend#http://}
  _NGINX_BACKEND=${_NGINX_BACKEND%%/*}
  _nginx_launch "$d" _nginx_proxy_config healthz || return 1
  export ADMIT_TEST_TLS_PROXY_URL="https://127.0.0.1:$_NGINX_PORT"
  export ADMIT_TEST_TLS_CA="$d/certs/ca.crt" ADMIT_TEST_TLS_OTHER_CA="$d/certs/other-ca.crt"
}

nginx_stop() {
  local pid
  for pid in "${_ADMIT_NGINX_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  _ADMIT_NGINX_PIDS=()
}
