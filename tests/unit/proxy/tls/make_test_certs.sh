#!/bin/sh
# Writes a throw-away PKI for TLS tests into $1 (EC P-256, valid one day):
#   ca.{crt,key}        the trusted CA
#   server.{crt,key}    CN=xds.test, SANs DNS:xds.test, IP:127.0.0.1, IP:::1, URI:spiffe://culvert.test/ns/cp/sa/xds
#   wrong.{crt,key}     same CA, SANs DNS:other.test, IP:127.0.0.2, URI:spiffe://culvert.test/ns/cp/sa/other
#   client.{crt,key}    CN=culvertd, SAN URI:spiffe://culvert.test/ns/culvert/sa/culvertd (clientAuth)
#   rogue-ca.{crt,key}, rogue.{crt,key}   a CA nobody trusts and a server cert (SANs as server) it signed
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1.key" 2>/dev/null; }
ca() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 1 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() {  # name cn issuer extensions
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
    -out "$1.crt" -days 1 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
server_sans='subjectAltName=DNS:xds.test,IP:127.0.0.1,IP:::1,URI:spiffe://culvert.test/ns/cp/sa/xds'
ca ca culvert-test-ca
ca rogue-ca culvert-rogue-ca
leaf server xds.test ca "$server_sans
extendedKeyUsage=serverAuth"
leaf wrong other.test ca "subjectAltName=DNS:other.test,IP:127.0.0.2,URI:spiffe://culvert.test/ns/cp/sa/other
extendedKeyUsage=serverAuth"
leaf client culvertd ca "subjectAltName=URI:spiffe://culvert.test/ns/culvert/sa/culvertd
extendedKeyUsage=clientAuth"
leaf rogue xds.test rogue-ca "$server_sans
extendedKeyUsage=serverAuth"
