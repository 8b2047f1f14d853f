#!/usr/bin/env bash
# llama.cpp itself runs gsq's GGUF exports of the bundled model (4-bit Q4_0, 2-bit TQ2_0 and Q2_0, Q2_K,
# and a size budget's mix of K-quants chosen per tensor, --target-bpw):
# scripts/llama_cpp_perplexity.sh builds llama-perplexity from llama-cpp-python's source package
# and scores the first 32 KiB of eval.txt (128 windows); its figure must agree with transformers' on the same file under the same
# rule to 1e-3 relative (llama.cpp rounds activations to 8 bits for its quantized products).
# llama-quantize requantizes the 4-bit file to Q8_0, Q5_1, Q6_K and Q5_K_S, and gsq reads those
# GGUF files (evaluate_model --model FILE.gguf) to llama-perplexity's figure; and gsq's KL
# divergence from the original model (evaluate_model --reference) agrees with llama-perplexity
# --kl-divergence on the same files.
# And ggml's own decoder (its to_float, through bench/ggml/llama_cpp_k_quants.cpp) reads gsq's
# Q2_K, Q3_K and Q4_K blocks of a layer to exactly gsq's weights. And llama.cpp's converter writes
# each tiny fixture of tests/data (llama3, Mixtral, Qwen2, Qwen3, their MoE variants, DeepSeek-V3)
# as a GGUF that gsq scores as the checkpoint it came from (check_gguf_fixtures.sh).
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
for run in "--bits 4 --group 128" "--bits 2 --group 256" "--format q2_k" "--target-bpw 3.2 --sensitivity-windows 2"; do
  out="$work/$(echo "$run" | tr -d ' -')"
  # shellcheck disable=SC2086  # the flags of the run
  "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --calib-tokens 2048 --method gptq $run \
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
# GGUF files llama.cpp itself writes, in types gsq never writes: llama-quantize requantizes the
# 4-bit file, and gsq's evaluate_model --model FILE.gguf (second halves scored, as llama.cpp
# scores them) must give llama-perplexity's figure on each to 1e-3 relative.
scripts/build_llama_cpp.sh "$build" llama-quantize > /dev/null
for type in Q8_0 Q5_1 Q6_K Q5_K_S; do
  file="$work/requantized-$type.gguf"
  if ! "$build/llama.cpp/build/bin/llama-quantize" --allow-requantize "$work/bits4group128/model.gguf" "$file" "$type" > "$work/quantize.log" 2>&1; then
    tail -20 "$work/quantize.log"; echo "FAIL: llama-quantize $type"; failures=$((failures + 1)); continue
  fi
  llama=$(scripts/llama_cpp_perplexity.sh "$file" "$text" "$build" | sed -n 's/^llama.cpp.*, \([0-9.]*\) bits per token.*/\1/p')
  gsq=$("$build/evaluate_model" --model "$file" --eval "$text" --byte-tokens --second-half --quiet --json "$work/$type.json" > /dev/null &&
        python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['bits_per_token'])" "$work/$type.json")
  if python3 -c "import sys; a, b = float('$llama'), float('$gsq'); sys.exit(abs(a - b) / b > 1e-3)"; then
    echo "ok:   llama-quantize $type: llama.cpp $llama, gsq reading the GGUF $gsq bits per token"
  else
    echo "FAIL: llama-quantize $type: llama.cpp '$llama' and gsq '$gsq' disagree"
    failures=$((failures + 1))
  fi
done
# Q2_0: 2-bit codes with groups of 128, which llama.cpp's Q2_0 (blocks of 64) holds exactly. gsq
# reads its own file as the checkpoint beside it (1e-6), and llama-perplexity's figure on the file
# agrees with gsq's evaluation of the checkpoint, second halves, to 1e-3 relative. (transformers'
# GGUF loader, through the gguf-py on PyPI, does not decode Q2_0: gsq's figure stands in.)
out="$work/bits2group128"
"$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --method gptq --bits 2 --group 128 \
    --export gguf --out "$out" --quiet > /dev/null
bits() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['bits_per_token'])" "$1"; }
"$build/evaluate_model" --model "$out" --eval "$text" --byte-tokens --second-half --quiet --json "$work/q2_0-checkpoint.json" > /dev/null
"$build/evaluate_model" --model "$out/model.gguf" --eval "$text" --byte-tokens --second-half --quiet --json "$work/q2_0-gguf.json" > /dev/null
gsq=$(bits "$work/q2_0-checkpoint.json") gsq_gguf=$(bits "$work/q2_0-gguf.json")
llama=$( (scripts/llama_cpp_perplexity.sh "$out/model.gguf" "$text" "$build" || true) | sed -n 's/^llama.cpp.*, \([0-9.]*\) bits per token.*/\1/p')
if python3 -c "import sys; a, b, c = float('$llama'), float('$gsq'), float('$gsq_gguf'); sys.exit(abs(a - b) / b > 1e-3 or abs(c - b) / b > 1e-6)"; then
  echo "ok:   Q2_0 GGUF: llama.cpp $llama, gsq $gsq (checkpoint), $gsq_gguf (the GGUF) bits per token"
else
  echo "FAIL: Q2_0 GGUF: llama.cpp '$llama', gsq $gsq (checkpoint), $gsq_gguf (the GGUF) bits per token"
  failures=$((failures + 1))
fi
# GGUF files of every architecture gsq reads, as llama.cpp's converter writes them: gsq's
# evaluation of each equals that of the checkpoint it was converted from (1e-6 relative).
tests/interop/check_gguf_fixtures.sh "$build" || failures=$((failures + 1))
# gsq's own GGUF of every architecture: the converter's file, and llama.cpp's figures gsq's.
tests/interop/check_gguf_export.sh "$build" || failures=$((failures + 1))
# The KL divergence from the original: llama-perplexity --kl-divergence against the original model
# (an F32 GGUF written by gguf-py, tests/interop/f32_gguf.py) and gsq's evaluate_model --reference
# on the same files and text, second halves scored, gsq's mean summed as llama.cpp sums it (over
# reference log-probabilities above -16, "kl_llama_cpp"). On the F32 twin of a quantized model (its
# weights exactly, so llama.cpp multiplies in float) mean KL must agree to 1e-3 relative and the
# same-top rate to 0.1 points; on the quantized GGUF itself llama.cpp rounds activations to 8 bits
# in its products, which adds a little divergence of its own: 10% there.
perplexity="$build/llama.cpp/build/bin/llama-perplexity"
f32_gguf() { "$build/interop-venv/bin/python" tests/interop/f32_gguf.py "$1" "$2" "$3" 2> /dev/null; }
base="$work/original-f32.gguf"
f32_gguf "$work/bits4group128/model.gguf" "$model" "$base"
"$perplexity" -m "$base" -f "$text" --ctx-size 256 --batch-size 256 -t "$(nproc)" --kl-divergence-base "$work/base.kld" > "$work/base.log" 2>&1 ||
  { tail -20 "$work/base.log"; echo "FAIL: llama-perplexity --kl-divergence-base"; exit 1; }
compare_kl() {  # compare_kl GGUF RELATIVE_TOLERANCE TOP_POINTS
  read -r llama_kl llama_top _ <<< "$(scripts/llama_cpp_kl.sh "$1" "$work/base.kld" "$build" || true)"
  "$build/evaluate_model" --model "$1" --reference "$base" --eval "$text" --byte-tokens --second-half --quiet \
      --json "$work/kl.json" > /dev/null
  read -r gsq_kl gsq_top <<< "$(python3 -c "import json, sys; c = json.load(open(sys.argv[1]))['comparison']; \
print(c['kl_llama_cpp']['mean'], 100 * c['same_top']['value'])" "$work/kl.json")"
  if python3 -c "import sys; sys.exit(not (abs($llama_kl - $gsq_kl) <= $2 * $gsq_kl and abs($llama_top - $gsq_top) <= $3))" 2> /dev/null; then
    echo "ok:   KL divergence of $(basename "$1"): llama.cpp $llama_kl, gsq $gsq_kl nats; same top $llama_top%, gsq $gsq_top%"
  else
    echo "FAIL: KL divergence of $(basename "$1"): llama.cpp '$llama_kl' nats, same top '$llama_top'%; gsq $gsq_kl, $gsq_top%"
    failures=$((failures + 1))
  fi
}
for run in bits4group128 bits2group256; do
  f32_gguf "$work/$run/model.gguf" "$work/$run" "$work/$run-f32.gguf"  # the run's checkpoint holds its weights in F32
  compare_kl "$work/$run-f32.gguf" 1e-3 0.1
  compare_kl "$work/$run/model.gguf" 0.1 0.5
done
layer="$work/synthetic.safetensors"
"$build/quantize_layer" --rows 64 --cols 512 --save-layer "$layer" --method rtn --quiet > /dev/null
if "$(bench/ggml/build.sh "$build")" --input "$layer"; then echo "ok:   ggml decodes gsq's K-quant blocks exactly"
else echo "FAIL: ggml decodes gsq's K-quant blocks differently"; failures=$((failures + 1)); fi
[ "$failures" -eq 0 ]
