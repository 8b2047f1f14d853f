#!/usr/bin/env bash
# Quantized models compared as their users compare them: the bundled model quantized by RTN, GPTQ
# and GSQ at 2, 3 and 4 bits (groups of 128) and in llama.cpp's K-quant formats (GSQ), each judged
# against the original by evaluate_model --reference on eval.txt: bits per byte, KL divergence
# (mean, 99th percentile), same top token, RMS of Δp. Prints a Markdown table (docs/evaluation.md).
# Also times one evaluation alone and one with the reference run beside it.
#
# Usage: bench/compare_quants.sh [BUILD_DIR] [WORK_DIR]   (defaults: build, BUILD_DIR/compare-quants)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
work=${2:-$build/compare-quants}
model=data/llama-bytes-3m
mkdir -p "$work"
quantize() {  # quantize OUT FLAGS...: quantize_model into OUT unless it is there
  [ -f "$1/manifest.json" ] || "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" \
      --out "$1" --quiet "${@:2}" > /dev/null
}
for bits in 2 3 4; do quantize "$work/int$bits" --bits "$bits" --method rtn,gptq,gsq; done
for format in q2_k q3_k q4_k; do quantize "$work/$format" --format "$format" --method gsq; done

echo "| model | bits/weight | bits/byte | KL mean (nats) | KL p99 | same top | RMS Δp |"
echo "|---|---|---|---|---|---|---|"
for out in "$work"/int2/{rtn,gptq,gsq} "$work"/int3/{rtn,gptq,gsq} "$work"/int4/{rtn,gptq,gsq} "$work"/q2_k "$work"/q3_k "$work"/q4_k; do
  "$build/evaluate_model" --model "$out" --reference "$model" --eval "$model/eval.txt" --byte-tokens --quiet \
      --json "$out-comparison.json" > /dev/null
  python3 - "$out" <<'PYTHON'
import json, sys
out = sys.argv[1]
manifest, record = json.load(open(f"{out}/manifest.json")), json.load(open(f"{out}-comparison.json"))
c = record["comparison"]
name = out.split("compare-quants/")[-1] if "compare-quants/" in out else out
print(f"| {name} | {manifest['bpp']:.3f} | {record['bits_per_token']:.5f} | {c['kl']['mean']:.5f} ± {c['kl']['error']:.5f} "
      f"| {c['kl']['p99']:.4f} | {100 * c['same_top']['value']:.2f} ± {100 * c['same_top']['error']:.2f} % "
      f"| {100 * c['delta_p']['rms']:.3f} % |")
PYTHON
done

# The reference's cost: one evaluation alone, then with the reference run beside it (medians of 3).
seconds() { python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['seconds']:.2f}\")" "$1"; }
median() { sort -g | sed -n 2p; }
alone=$(for _ in 1 2 3; do "$build/evaluate_model" --model "$work/int2/gsq" --eval "$model/eval.txt" --byte-tokens --quiet \
    --json "$work/alone.json" > /dev/null; seconds "$work/alone.json"; done | median)
beside=$(for _ in 1 2 3; do "$build/evaluate_model" --model "$work/int2/gsq" --reference "$model" --eval "$model/eval.txt" \
    --byte-tokens --quiet --json "$work/beside.json" > /dev/null; seconds "$work/beside.json"; done | median)
echo
echo "evaluation alone: ${alone} s; with the reference beside it: ${beside} s (median of 3, $(nproc) cores)"
