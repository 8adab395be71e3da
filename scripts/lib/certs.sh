# shellcheck shell=bash
# A throwaway test PKI for the TLS tests (the Redis servers of scripts/lib/redis.sh, nginx of
# scripts/lib/nginx.sh). Source it, then:
#   certs_make DIR   makes, in DIR (P-256 keys, valid 2 days):
#     ca.crt, ca.key              the test CA
#     server.crt, server.key      for 127.0.0.1 and localhost (subjectAltName), signed by the
#                                 CA; also a client certificate (Redis cluster nodes connect
#                                 to each other)
#     localhost.crt, .key         a server certificate for localhost only (no IP address), for
#                                 "wrong host name" tests
#     client.crt, client.key      a client certificate signed by the CA
#     client-encrypted.key        client.key under a passphrase ("secret")
#     other-ca.crt                another CA, which signed nothing here (for "wrong CA" tests)
# Needs openssl. Returns 1 (with openssl's output on stderr) if a step fails.
certs_make() {
  local d=${1:?usage: certs_make DIR} n
  mkdir -p "$d"
  cat >"$d/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
[localhost]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
  local new=(openssl req -config "$d/openssl.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
    -nodes)
  {
    "${new[@]}" -x509 -extensions ca -days 2 -subj "/CN=admit test CA" \
      -keyout "$d/ca.key" -out "$d/ca.crt" &&
      "${new[@]}" -x509 -extensions ca -days 2 -subj "/CN=admit other test CA" \
        -keyout "$d/other-ca.key" -out "$d/other-ca.crt" &&
      for n in server localhost client; do
        "${new[@]}" -subj "/CN=admit test $n" -keyout "$d/$n.key" -out "$d/$n.csr" &&
          openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
            -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$d/openssl.cnf" \
            -extensions "$n" -out "$d/$n.crt" || return 1
      done &&
      openssl pkey -in "$d/client.key" -aes256 -passout pass:secret -out "$d/client-encrypted.key"
  } >"$d/openssl.log" 2>&1 || {
    cat "$d/openssl.log" >&2
    echo "certs.sh: could not make the test certificates (openssl)" >&2
    return 1
  }
}
