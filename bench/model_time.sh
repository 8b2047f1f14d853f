#!/usr/bin/env bash
# Where a whole-model GSQ run's time goes, per decoder layer, for each objective (layer: each
# linear on its Hessian objective; block; layer-output) and bit width:
# quantize_model on a random model of SmolLM2-135M's shape (bench/random_model: hidden 576,
# intermediate 1536, 9/3 heads; 2 of its 30 layers) with the driver's defaults (8192 calibration
# tokens of the bundled text as bytes, 640 steps, 64 batches), groups of 64, 2 threads. Beside each,
# step_bench's step on the same objective, shape and batch, and its floor (the step's matrix
# products), so a driver step that costs more than the bench's shows at once (the layer objective's
# seven runs are not split out: "-").
# Columns: seconds per layer; of them the GSQ training (its median step) and the rest (calibration
# passes, the GPTQ starts, the errors kept in the manifest); the bench's median step and floor;
# the projection to SmolLM2-135M's 30 layers. Everything goes to BUILD_DIR/model-time.
#
# Usage: bench/model_time.sh [BUILD_DIR] [BITS...]   (default: build, 2 3)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
bits_list=${*:-2 3}
work="$build/model-time"
rm -rf "$work" && mkdir -p "$work"
for program in random_model quantize_model step_bench; do
  [ -x "$build/$program" ] || { echo "bench/model_time.sh: $build/$program is not built (cmake --build $build)" >&2; exit 2; }
done
"$build/random_model" --out "$work/model" --layers 2 > /dev/null

grids=$(for bits in $bits_list; do printf "int%s," "$bits"; done)
"$build/step_bench" --grids "${grids%,}" --sizes "" --block-steps 128 --layer-steps 64 --threads 2 \
  --json "$work/step_bench.json" > "$work/step_bench.txt"

for objective in layer block layer-output; do
  for bits in $bits_list; do
    "$build/quantize_model" --model "$work/model" --out "$work/out-$objective-$bits" --byte-tokens \
      --calib data/llama-bytes-3m/calib.txt --method gsq --objective "$objective" --bits "$bits" --group 64 \
      --threads 2 --quiet > /dev/null
  done
done

python3 - "$work" $bits_list <<'PY'
import json, sys
work, bits_list = sys.argv[1], sys.argv[2:]
bench = {(row["objective"], row["grid"]): row for row in json.load(open(f"{work}/step_bench.json"))}
print("| objective | bits | s / layer | training | median step | rest | bench step | bench floor | 30 layers (min) |")
print("|---|---|---|---|---|---|---|---|---|")
for objective, bench_name in (("layer", None), ("block", "swiglu block"), ("layer-output", "layer output")):
    for bits in bits_list:
        layers = json.load(open(f"{work}/out-{objective}-{bits}/manifest.json"))["layers"]
        seconds = sum(layer["seconds"] for layer in layers) / len(layers)
        cells = ["-"] * 5
        blocks = [block for layer in layers for block in layer.get("blocks", [])]
        if bench_name:
            training = sum(block["train_seconds"] for block in blocks) / len(layers)
            step = sorted(block["step_seconds_median"] for block in blocks)[len(blocks) // 2]
            row = bench[(bench_name, f"int{bits}")]
            cells = [f"{training:.1f}", f"{step * 1e3:.1f} ms", f"{seconds - training:.1f}",
                     f"{row['median_seconds'] * 1e3:.1f} ms", f"{row['floor_seconds'] * 1e3:.1f} ms"]
        print(f"| {objective} | {bits} | {seconds:.1f} | " + " | ".join(cells) + f" | {30 * seconds / 60:.1f} |")
PY
