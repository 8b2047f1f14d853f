#!/usr/bin/env bash
# The main job on its built-in default: installs what is missing, builds, and quantizes a
# synthetic LLM-like layer to 2 bits (group 128), comparing RTN with GSQ started from RTN.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_dependencies.sh
scripts/build.sh
build/quantize_layer "$@"
