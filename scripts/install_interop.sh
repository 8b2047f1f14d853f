#!/usr/bin/env bash
# The independent readers the interop tests check gsq's exports with, in a virtual environment
# inside the build tree (pinned in tests/interop/requirements.txt; PyPI): gguf-py (llama.cpp's
# GGUF reader), transformers with compressed-tensors, GPTQModel/optimum and its GGUF loader, and
# torch under them. The first install downloads about 4 GB (torch and its CUDA libraries, unused
# here) and takes a minute or two; it is kept in the build tree and reused while the pins stay.
# Usage: scripts/install_interop.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-build}/interop-venv"
requirements=tests/interop/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
  echo "installing the interop readers into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
