#!/usr/bin/env bash
# Peak memory (maximum resident set size) of quantize_model against a model's depth: random models
# of SmolLM2-135M's shape (bench/random_model: hidden 576, intermediate 1536, 9/3 heads, vocabulary
# 49152) with 4, 16 and 32 decoder layers, quantized by GPTQ at 2 bits on 8192 calibration tokens
# (the bundled calibration text as bytes), one process of 2 threads.
# Streamed, the peak should not grow with the depth: one decoder layer is in memory at a time.
# Prints one markdown row per depth; everything goes to BUILD_DIR/model-memory.
#
# Usage: bench/model_memory.sh [BUILD_DIR] [QUANTIZE_MODEL]   (default: build, BUILD_DIR/quantize_model)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
quantize_model=${2:-$build/quantize_model}
work="$build/model-memory"
rm -rf "$work" && mkdir -p "$work"
text=data/llama-bytes-3m/calib.txt
for program in "$build/random_model" "$quantize_model"; do
  [ -x "$program" ] || { echo "bench/model_memory.sh: $program is not built (cmake --build $build)" >&2; exit 2; }
done

echo "| decoder layers | model (F32 MB) | peak RSS (MB) | seconds |"
echo "|---|---|---|---|"
for layers in 4 16 32; do
  "$build/random_model" --out "$work/model-$layers" --layers "$layers" > /dev/null
  /usr/bin/time -f "%M %e" -o "$work/time-$layers" "$quantize_model" --model "$work/model-$layers" \
    --out "$work/out-$layers" --byte-tokens --calib "$text" --calib-tokens 8192 --method gptq \
    --bits 2 --group 64 --threads 2 --quiet > /dev/null
  read -r kilobytes seconds < "$work/time-$layers"
  model_mb=$(du -m "$work/model-$layers"/*.safetensors | awk '{ sum += $1 } END { print sum * 2 }')  # BF16 -> F32
  echo "| $layers | $model_mb | $((kilobytes / 1024)) | $seconds |"
  rm -rf "$work/model-$layers" "$work/out-$layers"
done
