#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest), which includes the
# CUDA build (compiled wherever nvcc is), the installed-package check, the fuzzer, quantize_model
# under mpirun against one process (Open MPI from Debian's packages), and the interop checks with
# independent readers (scripts/install_interop.sh puts them in build/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_dependencies.sh
scripts/build.sh
scripts/install_interop.sh build
cd build
ctest --output-on-failure -j"$(nproc)"
