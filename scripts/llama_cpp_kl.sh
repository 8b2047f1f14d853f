#!/usr/bin/env bash
# llama-perplexity --kl-divergence of MODEL.gguf against a base pass saved in BASE.kld (its
# --kl-divergence-base file, which holds the text's tokens): prints llama.cpp's mean KL divergence,
# same-top rate (%) and the model's perplexity, one line, "KL TOP PPL". llama-perplexity is built by scripts/build_llama_cpp.sh.
# Its last log lines, these among them, can be lost although it exits 0 (llama.cpp's logger thread
# is not joined at exit; scripts/llama_cpp_perplexity.sh says more): that loss, and only that, is
# retried, up to 8 runs.
#
# Usage: scripts/llama_cpp_kl.sh MODEL.gguf BASE.kld [BUILD_DIR] [CTX]   (defaults: build, 256)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] && [ $# -le 4 ] || { echo "usage: scripts/llama_cpp_kl.sh MODEL.gguf BASE.kld [BUILD_DIR] [CTX]" >&2; exit 2; }
model=$1 base=$2 build=${3:-build} ctx=${4:-256}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for attempt in 1 2 3 4 5 6 7 8; do
  "$build/llama.cpp/build/bin/llama-perplexity" -m "$model" --ctx-size "$ctx" --batch-size "$ctx" -t "$(nproc)" \
      --kl-divergence-base "$base" --kl-divergence > "$log" 2>&1 || true
  grep -q "^Same top p" "$log" && break
done
grep -q "^Same top p" "$log" || { tail -20 "$log"; echo "llama-perplexity --kl-divergence printed no summary in 8 runs" >&2; exit 1; }
echo "$(sed -n 's/^Mean    KLD: *\([0-9.e-]*\).*/\1/p' "$log") $(sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p' "$log")" \
     "$(sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p' "$log")"
