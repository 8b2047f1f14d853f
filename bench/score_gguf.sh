#!/usr/bin/env bash
# One markdown table row for a GGUF file scored against its reference model by both tools, on the
# same tokens: llama.cpp's llama-perplexity --kl-divergence (against BASE.kld, the reference GGUF's
# --kl-divergence-base pass: mean KL, same top token, perplexity) and gsq's evaluate_model
# --reference (exact mean KL over the whole vocabulary, same top, bits per token; second halves of
# the windows, as llama-perplexity scores them), with the file's tensor bytes.
#
# Usage: bench/score_gguf.sh NAME FILE.gguf BASE.kld REFERENCE_MODEL EVAL BUILD_DIR [evaluate_model flags...]
#   (EVAL: the tokens BASE.kld holds, in a form evaluate_model reads with those flags)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 6 ] || { echo "usage: bench/score_gguf.sh NAME FILE.gguf BASE.kld REFERENCE_MODEL EVAL BUILD_DIR [flags...]" >&2; exit 2; }
name=$1 file=$2 base=$3 reference=$4 eval=$5 build=$6
shift 6
read -r llama_kl llama_top llama_ppl <<< "$(scripts/llama_cpp_kl.sh "$file" "$base" "$build")"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
evaluation="$scratch/evaluation.json"
"$build/evaluate_model" --model "$file" --reference "$reference" --eval "$eval" --second-half --quiet --json "$evaluation" "$@" > /dev/null
python3 - "$file" "$evaluation" "$name" "$llama_kl" "$llama_top" "$llama_ppl" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from gguf_tensors import tensor_bytes, tensors
path, evaluation, name, llama_kl, llama_top, llama_ppl = sys.argv[1:]
size = sum(tensor_bytes(kind, shape) for _, kind, shape in tensors(path))
record = json.load(open(evaluation))
c = record["comparison"]
print(f"| {name} | {size:,} | {float(llama_kl):.5f} | {float(llama_top):.2f} % | {float(llama_ppl):.4f} "
      f"| {c['kl']['mean']:.5f} ± {c['kl']['error']:.5f} | {100 * c['same_top']['value']:.2f} % | {record['bits_per_token']:.5f} |")
PY
