#!/usr/bin/env bash
# Installs every Debian package culvert's build, daemon and tests need (only those that
# are missing) and mounts bpffs when it is missing. Idempotent; run as root on Debian 12.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config git
  # (protobuf, yaml-cpp, RE2, nghttp2, c-ares and mbedTLS link from the -dev packages' static
  # archives: packaging/cmake/CulvertDependencies.cmake)
  libuv1-dev libnghttp2-dev node-llhttp libmbedtls-dev libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev libyaml-cpp-dev nlohmann-json3-dev libre2-dev libc-ares-dev
  # BPF: programs are built with clang against the kernel's BTF, skeletons by bpftool
  libbpf-dev bpftool clang llvm libelf-dev zlib1g-dev
  # tests
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  iproute2 curl python3 procps openssl
  # benchmarks (tests/bench): the proxies culvert is measured against, and load generators
  haproxy nginx-light nghttp2-proxy nghttp2-client wrk
  # instructions per request (tests/bench/instructions_per_request.py): callgrind
  valgrind
  # HTTP/2 integration tests: nghttpd as an HTTP/2 upstream that echoes uploads
  nghttp2-server
  # packaging tests (tests/packaging): chroot roots, YAML, unit verification
  debootstrap python3-yaml systemd dpkg-dev
  # CNI chain tests: bridge + host-local as the primary plugin (in /usr/lib/cni)
  containernetworking-plugins
  # xDS integration tests: a real gRPC control plane on another stack
  python3-grpcio python3-protobuf
  # HTTP/2-upstream retry tests: a controllable HTTP/2 upstream (fault_upstream_h2.py)
  python3-h2
  # the TLS code's mbedTLS 3.6 build (fetch-mbedtls3.sh): verify and unpack Debian 13's debs
  gpgv xz-utils debian-archive-keyring
)

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: run as root (it installs packages and mounts bpffs)" >&2
  exit 1
fi

missing=()
# npm fetches the canonical xDS .proto files (below). NodeSource's nodejs bundles npm and
# conflicts with Debian's npm package, so Debian's is installed only when none is there.
command -v npm >/dev/null || missing+=(npm)
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  # Server packages (nginx, haproxy) must not start their services on install: the
  # benchmarks run their own instances on loopback.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The container image's build stage (packaging/Dockerfile) wants the packages only.
if [[ ${CULVERT_SETUP_PACKAGES_ONLY:-0} == 1 ]]; then exit 0; fi

# The canonical xDS v3 .proto files the project's subset is checked against (a ctest):
# a pinned npm tarball, verified against its recorded integrity hash.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../xds/proto/canonical.env
. "$repo/xds/proto/canonical.env"
cache=${CULVERT_CACHE_DIR:-/var/cache/culvert/npm}
mkdir -p "$cache"
integrity_of() { echo "sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"; }
if [[ ! -f $cache/$CANONICAL_NPM_TARBALL || $(integrity_of "$cache/$CANONICAL_NPM_TARBALL") != "$CANONICAL_NPM_INTEGRITY" ]]; then
  echo "setup.sh: fetching $CANONICAL_NPM_PACKAGE@$CANONICAL_NPM_VERSION into $cache"
  (cd "$cache" && npm pack --silent "$CANONICAL_NPM_PACKAGE@$CANONICAL_NPM_VERSION" >/dev/null)
  got=$(integrity_of "$cache/$CANONICAL_NPM_TARBALL")
  if [[ $got != "$CANONICAL_NPM_INTEGRITY" ]]; then
    rm -f "$cache/$CANONICAL_NPM_TARBALL"
    echo "setup.sh: $CANONICAL_NPM_TARBALL integrity $got, expected $CANONICAL_NPM_INTEGRITY" >&2
    exit 1
  fi
fi

# mbedTLS 3.6 for proxy_tls_mbedtls3_test: Debian 13's packages under a private prefix,
# verified with Debian's archive keys (a keyring from before Debian 13 lacks its keys).
if [[ ! -f /usr/share/keyrings/debian-archive-trixie-stable.gpg ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debian-archive-keyring
fi
"$repo/packaging/fetch-mbedtls3.sh"

if ! mountpoint -q /sys/fs/bpf; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
  echo "setup.sh: mounted bpffs at /sys/fs/bpf"
fi

if ! grep -q ' cgroup2 ' /proc/self/mountinfo; then
  echo "setup.sh: no cgroup v2 hierarchy is mounted; culvert attaches its capture programs to one" >&2
  exit 1
fi
