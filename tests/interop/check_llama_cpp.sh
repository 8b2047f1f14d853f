#!/usr/bin/env bash
# llama.cpp itself runs gsq's GGUF exports of the bundled model (4-bit Q4_0, 2-bit TQ2_0):
# scripts/llama_cpp_perplexity.sh builds llama-perplexity from llama-cpp-python's source package
# and scores eval.txt; its figure must agree with transformers' on the same file under the same
# rule to 1e-3 relative (llama.cpp rounds activations to 8 bits for its quantized products).
# Usage: tests/interop/check_llama_cpp.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
model=data/llama-bytes-3m
work="$build/interop-llama-cpp"
rm -rf "$work" && mkdir -p "$work"
failures=0
for run in "4 128" "2 256"; do
  read -r bits group <<< "$run"
  out="$work/int$bits-g$group"
  "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --method gptq --bits "$bits" \
      --group "$group" --export gguf --out "$out" --quiet > /dev/null
  # Once, a llama-perplexity of this build died on its last chunk under a loaded CI machine and
  # could not be made to fail again: a failed run is shown, then tried once more.
  if ! scripts/llama_cpp_perplexity.sh "$out/model.gguf" "$model/eval.txt" "$build" > "$out/report.txt" 2>&1; then
    cat "$out/report.txt"
    echo "llama.cpp failed on --bits $bits --group $group; once more"
    scripts/llama_cpp_perplexity.sh "$out/model.gguf" "$model/eval.txt" "$build" > "$out/report.txt" 2>&1 ||
      { cat "$out/report.txt"; echo "FAIL: llama.cpp failed twice"; failures=$((failures + 1)); continue; }
  fi
  report=$(cat "$out/report.txt")
  echo "$report"
  llama=$(echo "$report" | sed -n 's/^llama.cpp.*, \([0-9.]*\) bits per token.*/\1/p')
  transformers=$(echo "$report" | sed -n 's/^transformers.*: \([0-9.]*\) bits per token.*/\1/p')
  if python3 -c "import sys; a, b = float('$llama'), float('$transformers'); sys.exit(abs(a - b) / b > 1e-3)"; then
    echo "ok:   --bits $bits --group $group: llama.cpp $llama, transformers $transformers bits per token"
  else
    echo "FAIL: --bits $bits --group $group: llama.cpp '$llama' and transformers '$transformers' disagree"
    failures=$((failures + 1))
  fi
done
[ "$failures" -eq 0 ]
