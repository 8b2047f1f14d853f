#!/usr/bin/env bash
# gsq's size budget for compressed-tensors (quantize_model --target-size --export compressed-tensors)
# against the uniform checkpoint of the same bytes, on the bundled model. For each uniform scheme
# (int2, int3, int4 with groups of 128) gsq writes the uniform checkpoint by GPTQ and GSQ; its
# tensor bytes are the budget, which gsq plans from one measurement of every unit's sensitivity
# (kept in BUILD_DIR/budget-ct/sensitivity.json; candidates int2/int3/int4/int8-g128) and quantizes
# by GPTQ and GSQ. Every checkpoint is scored by quantize_model's own --eval on eval.txt, which no
# method saw: exact mean KL to the original and perplexity. Prints one markdown table.
#
# Usage: bench/budget_compressed_tensors.sh [BUILD_DIR] [BITS...]   (defaults: build, 2 3 4)
#        METHODS=gptq bench/budget_compressed_tensors.sh ...          (default gptq,gsq)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
widths=("$@")
((${#widths[@]})) || widths=(2 3 4)
model=data/llama-bytes-3m
methods=${METHODS:-gptq,gsq}
first=${methods%%,*}/  # the output whose checkpoint gives the bytes (a single method's is --out itself)
[ "$methods" = "${first%/}" ] && first=""
[ -x "$build/quantize_model" ] || { echo "budget_compressed_tensors.sh: $build/quantize_model is missing: run scripts/build.sh" >&2; exit 2; }
work="$build/budget-ct"
mkdir -p "$work"
run() {  # run OUT FLAGS...: quantize_model by GPTQ and GSQ into OUT unless it is there
  local out=$1
  shift
  [ -f "$out/${first}compressed-tensors/model.safetensors" ] || "$build/quantize_model" --model "$model" --byte-tokens \
      --calib "$model/calib.txt" --eval "$model/eval.txt" --method "$methods" --export compressed-tensors --out "$out" \
      --json "$out.json" --quiet "$@" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
}
bytes() {  # the tensor bytes of a safetensors file
  python3 -c 'import json, struct, sys
data = open(sys.argv[1], "rb").read(8 + struct.unpack("<Q", open(sys.argv[1], "rb").read(8))[0])
header = json.loads(data[8:])
print(sum(t["data_offsets"][1] - t["data_offsets"][0] for name, t in header.items() if name != "__metadata__"))' "$1"
}
rows() {  # rows LABEL OUT: a table row per method from OUT.json
  python3 - "$1" "$2" "$(bytes "$2/${first}compressed-tensors/model.safetensors")" <<'PY'
import json, sys
label, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
for run in json.load(open(out + ".json"))["runs"]:
    kl = run["comparison"]["kl"]
    plan = run.get("budget")
    chosen = ""
    if plan:
        counts = {}
        for unit in plan["tensors"]:
            counts[unit["type"]] = counts.get(unit["type"], 0) + 1
        chosen = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    print(f"| {label} {run['method'].upper()} | {size:,} | {kl['mean']:.5f} ± {kl['error']:.5f} | "
          f"{100 * run['comparison']['same_top']['value']:.2f} % | {run['evaluation']['ppl']:.4f} | {chosen} |")
PY
}

table=()
for bits in "${widths[@]}"; do
  uniform="$work/int$bits-g128"
  run "$uniform" --bits "$bits" --group 128
  size=$(bytes "$uniform/${first}compressed-tensors/model.safetensors")
  budget="$work/budget-int$bits-size"
  run "$budget" --target-size "$size" --sensitivity "$work/sensitivity.json"
  table+=("$(rows "uniform int$bits-g128" "$uniform")" "$(rows "budget of int$bits-g128's size" "$budget")")
done
echo "| checkpoint | tensor bytes | mean KL | same top | PPL | schemes chosen (units) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
echo "(files in $work; $SECONDS s)"
