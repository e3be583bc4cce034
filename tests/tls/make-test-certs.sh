#!/bin/sh
# tests/tls/make-test-certs.sh OUTDIR: certificates for tern's migration TLS tests, made
# with openssl exactly as README.md's "Migration over mutual TLS" recipe makes them.
#   OUTDIR/dest/    ca.pem cert.pem key.pem   destination host (SAN IP:127.0.0.1, DNS:localhost)
#   OUTDIR/source/  ca.pem cert.pem key.pem   source host, same CA
#   OUTDIR/rogue/   ca.pem cert.pem key.pem   a host of ANOTHER CA (must be refused)
#   OUTDIR/node1/, node2/, node3/             the cluster e2e's hosts, same CA
#                                             (SAN IP:10.0.2.1N, DNS:nodeN)
# Idempotent: an OUTDIR that is complete is left as it is.
set -eu
out=${1:?usage: make-test-certs.sh OUTDIR}
[ -f "$out/rogue/key.pem" ] && [ -f "$out/node3/key.pem" ] && exit 0
command -v openssl >/dev/null || { echo "make-test-certs: openssl is missing (resources/install-host-packages.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d "$out/.make.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# new_ca DIR NAME: a CA key and self-signed certificate.
new_ca() {
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$2" -keyout "$1/ca.key" -out "$1/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
# new_host CADIR HOSTDIR CN SAN: a host key and certificate signed by the CA, usable as
# TLS server (destination) and client (source); HOSTDIR gets ca.pem, cert.pem, key.pem.
new_host() {
    mkdir -p "$2"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3" \
        -keyout "$2/key.pem" -out "$tmp/host.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$4" >"$tmp/host.ext"
    openssl x509 -req -in "$tmp/host.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
        -days 825 -extfile "$tmp/host.ext" -out "$2/cert.pem" 2>/dev/null
    cp "$1/ca.pem" "$2/ca.pem"
    chmod 600 "$2/key.pem"
}

new_ca "$tmp/ca" "tern test CA"
new_ca "$tmp/other-ca" "another CA"
new_host "$tmp/ca" "$tmp/out/dest" dest "IP:127.0.0.1,DNS:localhost"
new_host "$tmp/ca" "$tmp/out/source" source "IP:127.0.0.1,DNS:localhost"
new_host "$tmp/other-ca" "$tmp/out/rogue" rogue "IP:127.0.0.1,DNS:localhost"
for n in 1 2 3; do
    new_host "$tmp/ca" "$tmp/out/node$n" "node$n" "IP:10.0.2.1$n,DNS:node$n"
done
for d in dest source rogue node1 node2 node3; do
    rm -rf "${out:?}/$d"
    mv "$tmp/out/$d" "$out/$d"
done
