# shellcheck shell=bash
# A throwaway nginx terminating TLS, the upstream of the HTTP client's TLS test
# (tests/common/http_client_tls_test.cpp), on free loopback ports, as the current user.
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
# Works under `set -euo pipefail`. nginx_stop stops only the nginx started here.

# shellcheck source=scripts/lib/certs.sh
source "$(dirname "${BASH_SOURCE[0]}")/certs.sh"

_ADMIT_NGINX_PID=""

_nginx_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# _nginx_config DIR PORT PORT2: writes DIR/nginx.conf.
_nginx_config() {
  local d=$1 port=$2 port2=$3
  cat >"$d/nginx.conf" <<CONF
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

nginx_start_tls() {
  local parent=${1:?usage: nginx_start_tls DIR} d attempt port port2 pid i code
  mkdir -p "$parent"
  parent=$(cd "$parent" && pwd)
  d=$(mktemp -d "$parent/nginx-XXXXXX")
  certs_make "$d/certs" || return 1
  mkdir -p "$d/tmp" "$d/www"
  printf 'begin;<!--# set var="part" value="middle" --><!--# echo var="part" -->;end\n' \
    >"$d/www/stream.html"
  for ((attempt = 0; attempt < 5; attempt++)); do
    port=$(_nginx_free_port)
    port2=$(_nginx_free_port)
    _nginx_config "$d" "$port" "$port2"
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" </dev/null >>"$d/nginx.out" 2>&1 &
    pid=$!
    for ((i = 0; i < 200; i++)); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$d/certs/ca.crt" \
        "https://127.0.0.1:$port/v1/models" 2>/dev/null || true)
      if [ "$code" = "200" ]; then
        _ADMIT_NGINX_PID=$pid
        export ADMIT_TEST_TLS_URL="https://127.0.0.1:$port"
        export ADMIT_TEST_TLS_LOCALHOST_URL="https://127.0.0.1:$port2"
        export ADMIT_TEST_TLS_CA="$d/certs/ca.crt" ADMIT_TEST_TLS_OTHER_CA="$d/certs/other-ca.crt"
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

nginx_stop() {
  if [ -n "$_ADMIT_NGINX_PID" ]; then
    kill "$_ADMIT_NGINX_PID" 2>/dev/null || true
    wait "$_ADMIT_NGINX_PID" 2>/dev/null || true
    _ADMIT_NGINX_PID=""
  fi
}
