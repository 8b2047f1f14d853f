#!/usr/bin/env bash
# gsq's llama-quantize presets against llama-quantize's own files of the bundled model, side by
# side, at the same tensors, types and bytes:
#   - llama.cpp's files as a user makes them (bench/llama_cpp_model.sh: llama.cpp's converter to
#     BF16, llama-imatrix on calib.txt, llama-quantize with that importance matrix; run first when
#     BUILD_DIR/llama-cpp-model is missing);
#   - gsq's: quantize_model --format PRESET --method gptq,gsq --export gguf on the same calib.txt
#     (kept in BUILD_DIR/ggml-mixes and reused: delete it to redo them).
# Every file is scored on eval.txt (windows of 256, second halves scored) by llama.cpp itself
# (llama-perplexity --kl-divergence against the BF16 file: mean KL, same top token, perplexity) and
# by gsq's evaluate_model --reference (exact mean KL over the whole vocabulary, same top, bits per
# token). Prints one markdown table (docs/k_quants.md). About 25 minutes on 2 cores the first time
# (most of it GSQ), 5 once the files exist.
#
# Usage: bench/ggml_mixes.sh [BUILD_DIR] [PRESET...]   (defaults: build, Q2_K Q3_K_M Q4_K_M)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
presets=("$@")
((${#presets[@]})) || presets=(Q2_K Q3_K_M Q4_K_M)
model=data/llama-bytes-3m
for program in quantize_model evaluate_model; do
  [ -x "$build/$program" ] || { echo "ggml_mixes.sh: $build/$program is missing: run scripts/build.sh" >&2; exit 2; }
done
llama="$build/llama-cpp-model"
[ -f "$llama/tensors.json" ] || bench/llama_cpp_model.sh "$build"
work="$build/ggml-mixes"
mkdir -p "$work"

# The reference pass: the BF16 file's log-probabilities on eval.txt, once.
"$build/llama.cpp/build/bin/llama-perplexity" -m "$llama/model-BF16.gguf" -f "$model/eval.txt" --ctx-size 256 --batch-size 256 \
    -t "$(nproc)" --kl-divergence-base "$work/base.kld" > "$work/base.log" 2>&1 || { tail -20 "$work/base.log"; exit 1; }

files=()
for preset in "${presets[@]}"; do
  [ -f "$llama/model-$preset-imatrix-mix.gguf" ] || { echo "ggml_mixes.sh: no llama.cpp $preset file in $llama" >&2; exit 2; }
  files+=("llama.cpp $preset imatrix:$llama/model-$preset-imatrix-mix.gguf")
  out="$work/$preset"
  [ -f "$out/gsq/model.gguf" ] || "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" \
      --format "$preset" --method gptq,gsq --export gguf --out "$out" --quiet > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  files+=("gsq $preset GPTQ:$out/gptq/model.gguf" "gsq $preset GSQ:$out/gsq/model.gguf")
done

echo "| file | tensor bytes | llama.cpp mean KL | same top | PPL | gsq mean KL | same top | bits per token |"
echo "|---|---|---|---|---|---|---|---|"
for entry in "${files[@]}"; do
  bench/score_gguf.sh "${entry%%:*}" "${entry#*:}" "$work/base.kld" "$model" "$model/eval.txt" "$build" --byte-tokens
done
echo "(each preset's three files hold the same tensors in the same types: equal tensor bytes; files in $work; $SECONDS s)"
