#!/usr/bin/env bash
# The independent readers the interop tests check gsq's exports with, in a virtual environment
# inside the build tree (pinned versions; PyPI): gguf-py, llama.cpp's own GGUF reader.
# Usage: scripts/install_interop.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-build}/interop-venv"
if ! "$venv/bin/python" -c "import gguf" 2>/dev/null; then
  echo "installing the interop readers into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check gguf==0.19.0 numpy==2.4.6
fi
