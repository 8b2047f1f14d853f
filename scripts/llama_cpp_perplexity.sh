#!/usr/bin/env bash
# Scores a GGUF export with llama.cpp's own llama-perplexity, built by scripts/build_llama_cpp.sh
# (several minutes on 2 cores the first time, then kept in BUILD_DIR/llama.cpp).
#
# llama-perplexity cuts the text into windows of --ctx-size tokens and scores the second half of
# each (every scored token sees at least half a window of context); gsq scores every prediction
# of its windows. The script prints llama.cpp's figure and, for the same rule, the one
# transformers computes on the same GGUF (tests/interop/check_transformers.py --second-half),
# which equals gsq's own evaluation of the model.
#
# Usage: scripts/llama_cpp_perplexity.sh MODEL.gguf TEXT [BUILD_DIR] [CTX]   (defaults: build, 256)
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/llama_cpp_perplexity.sh MODEL.gguf TEXT [BUILD_DIR] [CTX]"
[ $# -ge 2 ] && [ $# -le 4 ] || { echo "$usage" >&2; exit 2; }
for file in "$1" "$2"; do
  [ -f "$file" ] || { echo "llama_cpp_perplexity.sh: $file is not a file" >&2; exit 2; }
done
[ "$(head -c 4 "$1")" = GGUF ] || { echo "llama_cpp_perplexity.sh: $1 is not a GGUF file" >&2; exit 2; }
model=$(realpath "$1") text=$(realpath "$2") build=${3:-build} ctx=${4:-256}
[[ "$ctx" =~ ^[0-9]+$ ]] && [ "$ctx" -ge 4 ] || { echo "llama_cpp_perplexity.sh: CTX must be a number of tokens, at least 4" >&2; exit 2; }
home="$build/llama.cpp"
binary="$home/build/bin/llama-perplexity"
scripts/build_llama_cpp.sh "$build" llama-perplexity
# llama-perplexity logs through a queue that a thread empties, and exits without waiting for it
# (common/log.cpp leaks its logger on purpose, llama.cpp issue 22142): on a busy machine its last
# lines, "Final estimate" among them, are lost in a quarter to a third of the runs although it
# exits 0. That loss, and only that, is retried, up to 8 runs.
for attempt in 1 2 3 4 5 6 7 8; do
  status=0
  "$binary" -m "$model" -f "$text" --ctx-size "$ctx" --batch-size "$ctx" -t "$(nproc)" > "$home/perplexity.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -c 3000 "$home/perplexity.log"
    echo
    [ "$status" -gt 128 ] && echo "llama-perplexity was killed by signal $((status - 128))" ||
      echo "llama-perplexity exited with status $status"
    exit 1
  fi
  ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$home/perplexity.log")
  [ -z "$ppl" ] || break
  echo "llama-perplexity's last log lines were lost (run $attempt)" >&2
done
[ -n "$ppl" ] || { cat "$home/perplexity.log"; echo "llama-perplexity printed no final estimate in 8 runs"; exit 1; }
echo "llama.cpp llama-perplexity: PPL $ppl, $(python3 -c "import math; print(f'{math.log2($ppl):.5f}')") bits per token (windows of $ctx, second halves scored)"
python="$build/interop-venv/bin/python"
if [ -x "$python" ]; then
  "$python" tests/interop/check_transformers.py "$model" "$text" --window "$ctx" --second-half 2>/dev/null | tail -1
fi
