#!/usr/bin/env bash
# Unpacks Debian 13's mbedTLS 3.6 (libmbedtls-dev and its three libraries) under a
# private prefix, for the build and tests of the TLS code's mbedTLS 3.6 branch
# (proxy_tls_mbedtls3_test): Debian 12 ships 2.28 only. Nothing is installed into the
# system. The trixie index is verified with Debian's archive keys (debian-archive-keyring)
# and each .deb with the index's SHA256. Idempotent; called by setup.sh.
set -euo pipefail

prefix=${CULVERT_MBEDTLS3_PREFIX:-/opt/culvert-deps/mbedtls-3.6}
mirror=${CULVERT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=trixie
arch=$(dpkg --print-architecture)

if [[ -f $prefix/.complete ]]; then exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { curl -fsS --retry 3 --max-time 300 -o "$2" "$1"; }
fail() { echo "fetch-mbedtls3.sh: $*" >&2; exit 1; }

fetch "$mirror/dists/$suite/InRelease" "$work/InRelease"
# InRelease carries several signatures, some by keys newer than this keyring (apt accepts
# it as well): one valid signature by a Debian archive key and no bad one.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
gpgv --keyring "$keyring" --status-fd 3 --output "$work/Release" "$work/InRelease" \
  3>"$work/gpgv.status" 2>"$work/gpgv.log" || true
if ! grep -q '^\[GNUPG:\] VALIDSIG ' "$work/gpgv.status" || grep -q '^\[GNUPG:\] BADSIG ' "$work/gpgv.status"; then
  fail "the $suite index's signature does not verify against $keyring: $(cat "$work/gpgv.log")"
fi

# SHA256 of main/binary-<arch>/Packages.xz from the verified Release.
index=main/binary-$arch/Packages.xz
want=$(awk -v f="$index" '/^SHA256:/ {in256 = 1; next} /^[A-Za-z]/ {in256 = 0} in256 && $3 == f {print $1}' "$work/Release")
[[ -n $want ]] || fail "$index is not in the $suite Release file"
fetch "$mirror/dists/$suite/$index" "$work/Packages.xz"
[[ $(sha256sum "$work/Packages.xz" | cut -d' ' -f1) == "$want" ]] || fail "$index: SHA256 mismatch"
xz -dc "$work/Packages.xz" > "$work/Packages"

# "Filename SHA256 Version" of a package in the index.
describe() {
  awk -v p="$1" 'BEGIN {RS = ""; FS = "\n"}
    {name = ""; file = ""; sum = ""; ver = ""
     for (i = 1; i <= NF; i++) {
       if ($i ~ /^Package: /) name = substr($i, 10)
       else if ($i ~ /^Filename: /) file = substr($i, 11)
       else if ($i ~ /^SHA256: /) sum = substr($i, 9)
       else if ($i ~ /^Version: /) ver = substr($i, 10)
     }
     if (name == p) print file, sum, ver}' "$work/Packages"
}

staging=$prefix.partial
rm -rf "$staging"
mkdir -p "$staging"
version=
for pkg in libmbedtls-dev libmbedcrypto16 libmbedtls21 libmbedx509-7; do
  read -r file sum ver < <(describe "$pkg") || fail "$pkg is not in the $suite index"
  [[ $ver == 3.6.* ]] || fail "$pkg is $ver in $suite, expected 3.6.x"
  version=$ver
  fetch "$mirror/$file" "$work/$pkg.deb"
  [[ $(sha256sum "$work/$pkg.deb" | cut -d' ' -f1) == "$sum" ]] || fail "$file: SHA256 mismatch"
  dpkg-deb -x "$work/$pkg.deb" "$staging"
done
echo "$version" > "$staging/.complete"
rm -rf "$prefix"
mv "$staging" "$prefix"
echo "fetch-mbedtls3.sh: mbedTLS $version unpacked under $prefix"
