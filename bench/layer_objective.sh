#!/usr/bin/env bash
# GSQ's objectives compared on one model at ternary, 2 and 3 bits (groups of 128): GPTQ (diag(H)-
# weighted scales), GSQ on the SwiGLU block objective (the paper's recipe) and GSQ on the
# decoder-layer objective (--objective layer-output), each quantize_model run evaluated on text the
# model never saw. Prints one markdown table: bits/byte (or, for token models, bits per token),
# the increase over the unquantized model, GSQ's increase as a share of GPTQ's, and seconds.
#
# Usage: bench/layer_objective.sh [BUILD_DIR] [-- extra quantize_model flags]
#   default: the bundled model (data/llama-bytes-3m) with its calib.txt and eval.txt, BITS="ternary 2 3",
#   GROUP=128; another model: MODEL=dir CALIB=file EVAL=file TOKENS="" (TOKENS="" when CALIB/EVAL
#   are token-id files rather than text read as bytes), as bench/smollm2_model.sh does.
# About 6 minutes on 2 cores for the bundled model; runs and JSON in BUILD_DIR/layer-objective-<model>.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
[ "${1:-}" = "--" ] && shift
model=${MODEL:-data/llama-bytes-3m}
calib=${CALIB:-$model/calib.txt}
eval=${EVAL:-$model/eval.txt}
tokens=${TOKENS---byte-tokens}
bits_list=${BITS:-ternary 2 3}
group=${GROUP:-128}
[ -x "$build/quantize_model" ] || { echo "layer_objective.sh: $build/quantize_model is not built (scripts/build.sh)" >&2; exit 2; }
work="$build/layer-objective-$(basename "$model")"
rm -rf "$work" && mkdir -p "$work"

# run NAME FLAGS...: one quantize_model run; its JSON in $work/NAME.json
run() {
  local name=$1
  shift
  echo "== $name: quantize_model $*" >&2
  "$build/quantize_model" --model "$model" $tokens --calib "$calib" --eval "$eval" --group "$group" \
    --out "$work/$name" --json "$work/$name.json" --quiet "$@" "${EXTRA[@]}" >&2
}
EXTRA=("$@")
for bits in $bits_list; do
  run "gptq-$bits" --method gptq --bits "$bits"
  run "block-$bits" --method gsq --bits "$bits" --objective block
  run "layer-output-$bits" --method gsq --bits "$bits" --objective layer-output
done

python3 - "$work" $bits_list <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
def run(name):  # the one method's run of a quantize_model JSON, and the unquantized baseline
    data = json.loads((work / f"{name}.json").read_text())
    return data["runs"][0], data["baseline"]["bits_per_token"]
print("| bits | method | bits/token | increase over unquantized | increase / GPTQ's | seconds |")
print("|---|---|---|---|---|---|")
for bits in sys.argv[2:]:
    gptq_increase = None
    for label, title in [("gptq", "GPTQ"), ("block", "GSQ, block objective (paper)"), ("layer-output", "GSQ, layer-output objective")]:
        result, base = run(f"{label}-{bits}")
        loss = result["evaluation"]["bits_per_token"]
        increase = loss - base
        gptq_increase = gptq_increase or increase
        print(f"| {bits} | {title} | {loss:.5f} | {increase:+.5f} | {increase / gptq_increase:.2f} | {result['quantize_seconds']:.1f} |")
print(f"| - | unquantized | {base:.5f} | | | |")
PY
