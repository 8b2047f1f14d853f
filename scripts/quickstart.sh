#!/usr/bin/env bash
# The main job on its built-in default: installs what is missing, builds, then quantizes the
# bundled byte-level Llama (data/llama-bytes-3m) to 2 bits with groups of 128, calibrating on
# calib.txt, and prints bits-per-byte on eval.txt for the original model, RTN, GPTQ and GSQ.
# Extra flags go to quantize_model (see build/quantize_model --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_dependencies.sh
scripts/build.sh
model=data/llama-bytes-3m
build/quantize_model --model "$model" --byte-tokens --calib "$model/calib.txt" --eval "$model/eval.txt" \
  --method rtn,gptq,gsq --out build/llama-bytes-3m-int2 --json build/llama-bytes-3m-int2.json "$@"
