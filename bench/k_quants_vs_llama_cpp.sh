#!/usr/bin/env bash
# gsq's K-quant quantizers against llama.cpp's own (ggml's Q2_K, Q3_K, Q4_K, with the importance
# matrix diag(H) and without) on the same layers, by the same measure: the relative Hessian error
# tr(dW H dW^T) / tr(W H W^T). The layers are quantize_layer's synthetic one and four of the
# bundled model's layer 1. Prints one markdown table; about 7 minutes on 2 cores (most of it
# GSQ), plus llama.cpp's build the first time. Intermediate files stay in BUILD_DIR/k-quants-bench.
#
# Usage: bench/k_quants_vs_llama_cpp.sh [BUILD_DIR]   (default: build, with gsq's drivers built)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
for program in quantize_layer quantize_model; do
  [ -x "$build/$program" ] || { echo "k_quants_vs_llama_cpp.sh: $build/$program is missing: run scripts/build.sh" >&2; exit 2; }
done
work="$build/k-quants-bench"
mkdir -p "$work/layers" "$work/gsq"

bench=$(bench/ggml/build.sh "$build")
echo "writing the layers"
"$build/quantize_layer" --save-layer "$work/layers/synthetic.safetensors" --method rtn --quiet > /dev/null
"$build/quantize_model" --model data/llama-bytes-3m --byte-tokens --calib data/llama-bytes-3m/calib.txt \
    --eval data/llama-bytes-3m/eval.txt --method rtn --dump-layers "$work/model-layers" --out "$work/model-rtn" \
    --quiet > /dev/null
layers=("$work/layers/synthetic.safetensors")
for tensor in self_attn.q_proj self_attn.v_proj mlp.gate_proj mlp.down_proj; do
  layers+=("$work/model-layers/model.layers.1.$tensor.weight.safetensors")
done

"$bench" --input "${layers[@]}" --json "$work/llama_cpp.json"
formats=(q2_k q3_k q4_k)
for layer in "${layers[@]}"; do
  stem=$(basename "$layer" .safetensors)
  for format in "${formats[@]}"; do
    echo "gsq: $stem $format"
    # Named <layer file stem>.<format>.json: the table below finds them so.
    "$build/quantize_layer" --input "$layer" --weight W --hessian H --format "$format" --method rtn,gptq,gsq --quiet \
        --json "$work/gsq/$stem.$format.json" > /dev/null
  done
done

python3 - "$work" <<'EOF'
import json, os, sys
work = sys.argv[1]
print("| layer | format | llama.cpp (no imatrix) | llama.cpp imatrix | gsq fit | gsq GPTQ | gsq GSQ |")
print("|---|---|---|---|---|---|---|")
for r in json.load(open(os.path.join(work, "llama_cpp.json")))["records"]:
    stem = os.path.basename(r["layer"])[: -len(".safetensors")]
    gsq = {g["method"]: g["rel_error"] for g in json.load(open(os.path.join(work, "gsq", f"{stem}.{r['format']}.json")))["records"]}
    # Both programs fit with fit_k_quant and measure with HessianObjective: a gap means they differ.
    if abs(gsq["rtn"] - r["gsq_fit_rel_error"]) > 1e-6 * gsq["rtn"]:
        sys.exit(f"{stem} {r['format']}: quantize_layer's fit has error {gsq['rtn']}, the bench's {r['gsq_fit_rel_error']}")
    name = stem.removeprefix("model.").removesuffix(".weight")
    errors = [r["llama_cpp_rel_error"], r["llama_cpp_imatrix_rel_error"], gsq["rtn"], gsq["gptq"], gsq["gsq"]]
    print(f"| {name} {r['rows']}x{r['cols']} | {r['format']} | " + " | ".join(f"{e:.4g}" for e in errors) + " |")
EOF
echo "ggml decodes gsq's blocks of every layer and format to exactly gsq's weights; $SECONDS s"
