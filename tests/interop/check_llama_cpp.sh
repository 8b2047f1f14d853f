#!/usr/bin/env bash
# llama.cpp itself runs gsq's GGUF exports of the bundled model (4-bit Q4_0, 2-bit TQ2_0, Q2_K):
# scripts/llama_cpp_perplexity.sh builds llama-perplexity from llama-cpp-python's source package
# and scores the first 32 KiB of eval.txt (128 windows); its figure must agree with transformers' on the same file under the same
# rule to 1e-3 relative (llama.cpp rounds activations to 8 bits for its quantized products).
# And ggml's own decoder (its to_float, through bench/ggml/llama_cpp_k_quants.cpp) reads gsq's
# Q2_K, Q3_K and Q4_K blocks of a layer to exactly gsq's weights.
# Usage: tests/interop/check_llama_cpp.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
# transformers, from the interop readers, gives the figure llama.cpp's must agree with; without
# them: 77, which ctest reports as skipped.
[ -x "$build/interop-venv/bin/python" ] || { echo "SKIP: the interop readers are not installed in $build/interop-venv: run scripts/install_interop.sh $build (scripts/test.sh does)"; exit 77; }
model=data/llama-bytes-3m
work="$build/interop-llama-cpp"
rm -rf "$work" && mkdir -p "$work"
text="$work/eval.txt"
head -c 32768 "$model/eval.txt" > "$text"
failures=0
for run in "--bits 4 --group 128" "--bits 2 --group 256" "--format q2_k"; do
  out="$work/$(echo "$run" | tr -d ' -')"
  # shellcheck disable=SC2086  # the flags of the run
  "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --method gptq $run \
      --export gguf --out "$out" --quiet > /dev/null
  # (llama_cpp_perplexity.sh reruns llama-perplexity when its last log lines are lost.)
  if ! scripts/llama_cpp_perplexity.sh "$out/model.gguf" "$text" "$build" > "$out/report.txt" 2>&1; then
    cat "$out/report.txt"
    echo "FAIL: llama.cpp failed on $run"
    failures=$((failures + 1))
    continue
  fi
  report=$(cat "$out/report.txt")
  echo "$report"
  llama=$(echo "$report" | sed -n 's/^llama.cpp.*, \([0-9.]*\) bits per token.*/\1/p')
  transformers=$(echo "$report" | sed -n 's/^transformers.*: \([0-9.]*\) bits per token.*/\1/p')
  if python3 -c "import sys; a, b = float('$llama'), float('$transformers'); sys.exit(abs(a - b) / b > 1e-3)"; then
    echo "ok:   $run: llama.cpp $llama, transformers $transformers bits per token"
  else
    echo "FAIL: $run: llama.cpp '$llama' and transformers '$transformers' disagree"
    failures=$((failures + 1))
  fi
done
layer="$work/synthetic.safetensors"
"$build/quantize_layer" --rows 64 --cols 512 --save-layer "$layer" --method rtn --quiet > /dev/null
if "$(bench/ggml/build.sh "$build")" --input "$layer"; then echo "ok:   ggml decodes gsq's K-quant blocks exactly"
else echo "FAIL: ggml decodes gsq's K-quant blocks differently"; failures=$((failures + 1)); fi
[ "$failures" -eq 0 ]
