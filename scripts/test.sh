#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest), which includes the
# CUDA build (compiled wherever nvcc is), the installed-package check and the fuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_dependencies.sh
scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc)"
