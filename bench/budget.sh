#!/usr/bin/env bash
# gsq's size budget (quantize_model --target-size) side by side with llama-quantize's files and
# gsq's own presets of the same bytes, on the bundled model. For each preset the budget is the
# tensor bytes of llama-quantize's file of it (bench/llama_cpp_model.sh, with an importance
# matrix); gsq measures each tensor's sensitivity once (kept in BUILD_DIR/budget/sensitivity.json),
# plans every tensor's type, quantizes by GPTQ and GSQ and writes GGUF. Every file is scored on
# eval.txt by llama-perplexity --kl-divergence and by evaluate_model --reference
# (bench/score_gguf.sh), the presets' rows being bench/ggml_mixes.sh's (made when missing). Prints
# one markdown table, then each budget's plan: its bytes, the types it chose and its predicted KL
# beside the measured one.
#
# Usage: bench/budget.sh [BUILD_DIR] [PRESET...]   (defaults: build, Q2_K Q3_K_M Q4_K_M)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
presets=("$@")
((${#presets[@]})) || presets=(Q2_K Q3_K_M Q4_K_M)
model=data/llama-bytes-3m
for program in quantize_model evaluate_model; do
  [ -x "$build/$program" ] || { echo "budget.sh: $build/$program is missing: run scripts/build.sh" >&2; exit 2; }
done
llama="$build/llama-cpp-model"
work="$build/budget"
mkdir -p "$work"
# llama-quantize's files and gsq's presets, scored (and the BF16 file's reference pass, base.kld).
bench/ggml_mixes.sh "$build" "${presets[@]}" > "$work/presets.md"
base="$build/ggml-mixes/base.kld"

rows=() plans=()
for preset in "${presets[@]}"; do
  reference="$llama/model-$preset-imatrix-mix.gguf"
  size=$(python3 - "$reference" <<'PY'
import sys
sys.path.insert(0, "scripts")
from gguf_tensors import tensor_bytes, tensors
print(sum(tensor_bytes(kind, shape) for _, kind, shape in tensors(sys.argv[1])))
PY
)
  out="$work/$preset"
  [ -f "$out/gsq/model.gguf" ] || "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" \
      --target-size "$size" --sensitivity "$work/sensitivity.json" --method gptq,gsq --export gguf --out "$out" --quiet \
      > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  for method in gptq gsq; do
    label="gsq budget $preset size $(echo "$method" | tr a-z A-Z)"
    rows+=("$(bench/score_gguf.sh "$label" "$out/$method/model.gguf" "$base" "$model" "$model/eval.txt" "$build" --byte-tokens)")
  done
  plans+=("$(python3 - "$preset" "$out" "${rows[-2]}" "${rows[-1]}" <<'PY'
import collections, json, sys
preset, out, gptq_row, gsq_row = sys.argv[1:]
plan = json.load(open(f"{out}/gsq/manifest.json"))["budget"]
types = collections.Counter(t["type"] for t in plan["tensors"])
measured = lambda row: float(row.split("|")[6].split("±")[0])
print(f"| {preset} | {plan['budget_bytes']:,} | {plan['bytes']:,} | {plan['bits_per_weight']:.4f} | "
      + ", ".join(f"{n} {t}" for t, n in sorted(types.items())) +
      f" | {plan['predicted_kl']:.5f} | {measured(gptq_row):.5f} | {measured(gsq_row):.5f} |")
PY
)")
done

echo "| file | tensor bytes | llama.cpp mean KL | same top | PPL | gsq mean KL | same top | bits per token |"
echo "|---|---|---|---|---|---|---|---|"
grep -E '^\| (llama\.cpp Q|gsq )' "$work/presets.md"
printf '%s\n' "${rows[@]}"
echo
echo "| budget of | budget bytes | plan bytes | bits per weight | types chosen | predicted KL | GPTQ measured | GSQ measured |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${plans[@]}"
echo "(files in $work; $SECONDS s)"
