#!/usr/bin/env bash
# Installs gsq from a build tree into a scratch prefix and builds a downstream project against
# it with find_package(gsq): once with Thrust from the CUDA toolkit (when present) and once with
# Debian's libthrust-dev alone, as a CPU-only user would.
# Usage: tests/package/check.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cmake --install "$build" --prefix "$scratch/prefix" > /dev/null
configure_and_run() {  # $1: label, then extra cmake arguments
  local label=$1; shift
  cmake -S "$here" -B "$scratch/$label" -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=Release "$@" > "$scratch/$label.log" 2>&1 \
    || { cat "$scratch/$label.log"; exit 1; }
  cmake --build "$scratch/$label" > "$scratch/$label.build.log" 2>&1 || { cat "$scratch/$label.build.log"; exit 1; }
  echo "package ($label):"
  "$scratch/$label/consumer"
}
configure_and_run default
if [ -f /usr/include/thrust/version.h ]; then
  configure_and_run debian-thrust -DGSQ_THRUST_INCLUDE_DIR=/usr/include
fi
