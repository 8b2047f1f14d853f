#!/usr/bin/env bash
# gsq's GGUF export of every architecture it writes, against llama.cpp (check_llama_cpp.sh runs it;
# a few minutes):
#   - each tiny fixture of tests/data (llama3, Mixtral, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE,
#     DeepSeek-V3) given a tokenizer of single characters (char_tokenizer.py), written at full
#     precision by export_gguf: the same metadata and tensors as llama.cpp's converter writes for
#     it, tensor for tensor the same bytes (compare_gguf.py); llama-perplexity on a text of those
#     characters scores it as gsq's evaluation of the checkpoint (1e-4 relative);
#   - the same quantized to 4 bits, a scale a row (RTN; Q4_0, experts stacked, kv_b_proj split)
#     by quantize_model --export gguf (not tiny-qwen2, whose 48 columns no block type holds): gsq
#     reads the file back as its checkpoint (1e-6), gguf-py dequantizes every tensor to the
#     converter's F32 file of the same checkpoint exactly, llama-perplexity scores it as gsq does
#     (5e-3: llama.cpp rounds activations to 8 bits for Q4_0 products, which moves these random
#     tiny models' figures by up to 2e-3);
#   - tokenizer.ggml.pre as the converter finds it (check_gguf_tokenizer.py: its hash table and
#     check text, and each fixture tokenizer's ids on it); and where bench/smollm2_model.sh has put
#     SmolLM2-135M in BUILD_DIR/smollm2-135m, its export equals the converter's file, vocabulary
#     included ("smollm") (and how llama.cpp tokenizes text with it is reported beside transformers).
# Usage: tests/interop/check_gguf_export.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
python="$build/interop-venv/bin/python"
[ -x "$python" ] || { echo "SKIP: the interop readers are not installed in $build/interop-venv: run scripts/install_interop.sh $build"; exit 77; }
scripts/build_llama_cpp.sh "$build" llama-perplexity llama-tokenize > /dev/null
converter=$(echo "$build"/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp)
work="$build/interop-gguf-export"
rm -rf "$work" && mkdir -p "$work/quantized"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
bits() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['bits_per_token'])" "$1"; }
close() { python3 -c "import sys; a, b, r = map(float, sys.argv[1:]); sys.exit(not abs(a - b) <= r * abs(b))" "$@" 2> /dev/null; }
# llama-perplexity loses its last log lines, the final estimate among them, on most runs this
# short (scripts/llama_cpp_perplexity.sh): its running figure after the last chunk it printed is
# compared with gsq's on as many windows (one token a character, no BOS: 128 characters a chunk).
compare_perplexity() {  # compare_perplexity LABEL MODEL.gguf CHECKPOINT TOLERANCE
  local log="$work/$(echo "$1" | tr ' ' -)"
  "$build/llama.cpp/build/bin/llama-perplexity" -m "$2" -f "$work/text.txt" --ctx-size 128 --batch-size 128 -t "$(nproc)" > "$log.ppl.log" 2>&1 ||
    { tail -5 "$log.ppl.log"; fail "$1: llama-perplexity"; return; }
  read -r chunks ppl <<< "$(grep -o '\[[0-9]*\][0-9.]*' "$log.ppl.log" | tail -1 | tr -d '[' | tr ']' ' ')"
  head -c $((128 * chunks)) "$work/text.txt" > "$log.text.txt"
  "$build/evaluate_model" --model "$3" --eval "$log.text.txt" --window 128 --second-half --quiet --json "$log.json" > /dev/null
  local llama gsq
  llama=$(python3 -c "import math, sys; print(math.log2(float(sys.argv[1])))" "$ppl") gsq=$(bits "$log.json")
  if close "$llama" "$gsq" "$4"; then echo "ok:   $1: llama.cpp $llama, gsq $gsq bits per token ($chunks windows)"
  else fail "$1: llama.cpp '$llama' and gsq '$gsq' bits per token disagree ($chunks windows)"; fi
}

"$python" tests/interop/convert_fixture.py "$converter" "$work" tests/data/tiny-*/ > "$work/convert.log" 2>&1 ||
  { tail -20 "$work/convert.log"; echo "FAIL: llama.cpp's converter"; exit 1; }
"$python" tests/interop/char_tokenizer.py "$work/text.txt" 8000 "$work"/tiny-*/twin
for fixture in tests/data/tiny-*/; do
  name=$(basename "$fixture") out="$work/$(basename "$fixture")"
  "$build/export_gguf" --model "$out/twin" --out "$out/gsq.gguf" --quiet 2> "$out/export.log" || { cat "$out/export.log"; fail "$name: export_gguf"; continue; }
  "$python" tests/interop/compare_gguf.py "$out/gsq.gguf" "$out/model.gguf" > "$out/compare.log" || { cat "$out/compare.log"; fail "$name: gsq's GGUF is not the converter's"; }
  echo "ok:   $name: $(tail -1 "$out/compare.log")"
  compare_perplexity "$name" "$out/gsq.gguf" "$out/twin" 1e-4
  [ "$name" = tiny-qwen2 ] && continue
  quantized="$work/quantized/$name"
  "$build/quantize_model" --model "$out/twin" --calib "$work/text.txt" --calib-window 128 --calib-tokens 2048 --method rtn --bits 4 --group per-channel \
      --export gguf --out "$quantized" --quiet > "$out/quantize.log" 2>&1 || { tail -5 "$out/quantize.log"; fail "$name: quantize_model --export gguf"; continue; }
done
# The converter's F32 files of the quantized checkpoints (their linears hold scale * code).
"$python" tests/interop/convert_fixture.py "$converter" "$work/converted" $(dirname "$work"/quantized/*/model.gguf) > "$work/convert-quantized.log" 2>&1 ||
  { tail -20 "$work/convert-quantized.log"; fail "llama.cpp's converter on the quantized checkpoints"; }
for file in "$work"/quantized/*/model.gguf; do
  quantized=$(dirname "$file") name=$(basename "$(dirname "$file")")
  "$python" tests/interop/compare_gguf.py "$file" "$work/converted/$name/model.gguf" > "$quantized/compare.log" ||
    { cat "$quantized/compare.log"; fail "$name Q4_0: gguf-py does not read the converter's weights from gsq's GGUF"; }
  "$build/evaluate_model" --model "$file" --tokenizer "$quantized" --reference "$quantized" --eval "$work/text.txt" --window 128 --quiet --json "$work/$name-read.json" > /dev/null
  difference=$(python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(abs(r['comparison']['ln_ppl_ratio']['value']) / r['nll'])" "$work/$name-read.json")
  python3 -c "import sys; sys.exit(float(sys.argv[1]) > 1e-6)" "$difference" || fail "$name Q4_0: gsq reads its GGUF otherwise than its checkpoint ($difference)"
  echo "ok:   $name Q4_0: $(tail -1 "$quantized/compare.log"); gsq reads it as its checkpoint ($difference)"
  compare_perplexity "$name Q4_0" "$file" "$quantized" 5e-3
done

"$python" tests/interop/check_gguf_tokenizer.py "$converter" "$build/tokenize" $(ls tests/data/tokenizers/*.json | grep -v expected.json) ||
  fail "tokenizer.ggml.pre"
smollm="$build/smollm2-135m"
if [ -f "$smollm/model.safetensors" ]; then
  "$python" tests/interop/convert_fixture.py --vocabulary "$converter" "$work/smollm2" "$smollm" > "$work/smollm2.log" 2>&1 ||
    { tail -20 "$work/smollm2.log"; fail "llama.cpp's converter on SmolLM2-135M"; }
  "$build/export_gguf" --model "$smollm" --out "$work/smollm2/gsq.gguf" --quiet
  if "$python" tests/interop/compare_gguf.py "$work/smollm2/gsq.gguf" "$work/smollm2/smollm2-135m/model.gguf"; then
    echo "ok:   SmolLM2-135M: gsq's GGUF is the converter's, vocabulary and tokenizer.ggml.pre included"
  else fail "SmolLM2-135M: gsq's GGUF is not the converter's"; fi
  # llama.cpp's own tokenization with the file (which is the converter's) against transformers': reported, not
  # required (llama.cpp's "smollm" splitting differs from transformers' around some newlines).
  head -c 20000 "$smollm/eval.txt" > "$work/smollm2/text.txt"
  "$build/llama.cpp/build/bin/llama-tokenize" -m "$work/smollm2/gsq.gguf" -f "$work/smollm2/text.txt" --ids --log-disable 2> /dev/null |
    tail -1 | tr -d '[],' > "$work/smollm2/llama.ids"
  "$build/tokenize" --tokenizer "$smollm" --text "$work/smollm2/text.txt" --print > "$work/smollm2/gsq.ids"
  echo "note: SmolLM2-135M, 20 KB of text: llama.cpp $(wc -w < "$work/smollm2/llama.ids") tokens, transformers (gsq) $(wc -w < "$work/smollm2/gsq.ids")"
else
  echo "(SmolLM2-135M is not in $smollm: bench/smollm2_model.sh puts it there; its check is left out)"
fi
[ "$failures" -eq 0 ]
