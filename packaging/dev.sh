#!/usr/bin/env bash
# The two things a new user does on a fresh Debian 12 machine (see README):
#   packaging/dev.sh run    set up, build, run culvertd in the foreground (embedded default config)
#   packaging/dev.sh test   set up, build, run every test but the `bench` label
# Environment: BUILD_DIR (default build), CULVERT_SANITIZE=ON for an ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}

packaging/setup.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCULVERT_SANITIZE="${CULVERT_SANITIZE:-OFF}" >/dev/null
cmake --build "$BUILD_DIR"

case "${1:-}" in
  run)
    shift
    exec "$BUILD_DIR/agent/culvertd" "$@"
    ;;
  test)
    cd "$BUILD_DIR"
    exec ctest --output-on-failure -LE bench -j2
    ;;
  *)
    echo "usage: packaging/dev.sh run|test" >&2
    exit 2
    ;;
esac
