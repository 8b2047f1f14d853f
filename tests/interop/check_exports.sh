#!/usr/bin/env bash
# The exports of the bundled model, checked by the real readers (ctest runs this; the readers are
# installed by scripts/install_interop.sh into BUILD_DIR/interop-venv):
#   - GSQ (40 steps on 2048 calibration tokens: what is checked is the files, not the codes' quality)
#     at 2, 3 and 4 bits and ternary, exported as compressed-tensors and GPTQ, and as GGUF
#     where GGUF holds the codes exactly (4-bit: Q4_0; 2-bit and ternary with groups of 256: TQ2_0;
#     Q2_0, for other groups, is checked by llama.cpp itself in check_llama_cpp.sh);
#     and in llama.cpp's K-quant formats as GGUF (Q2_K by GSQ, 40 steps; Q3_K, Q4_K by GPTQ);
#   - transformers loads each export with its own loader and scores the first 32 KiB of eval.txt
#     (128 windows: enough to tell a wrong export, a sixth of the time): the loss must equal gsq's
#     evaluation of the run on the same text to 1e-4 relative (check_transformers.py);
#   - gguf-py reads each GGUF: metadata, tokenizer, every tensor exact (check_gguf_model.py);
#   - the classic mistakes are caught: a GPTQ export read with the v2 zero convention, and a GGUF
#     whose q/k rows were left in Hugging Face's order, must both fail those checks (tamper.py);
#   - the Mixture-of-Experts fixtures (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3) as compressed-tensors, in
#     the per-expert layout vLLM's fused-MoE loader reads: transformers rebuilds gsq's weights
#     exactly (check_same_weights.py) and scores token ids as gsq does;
#   - size budgets' mixes of grid schemes (--target-bpw --export compressed-tensors), dense and
#     Mixtral, read module by module from their config groups: the same loss, the same weights;
#   - a combination no engine format holds is refused before any work;
#   - evaluate_model --reference's KL divergence and the other statistics equal those torch
#     computes from transformers' logits of the quantized and the original model (check_kl.py).
# Usage: tests/interop/check_exports.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
python="$build/interop-venv/bin/python"
# Without the readers there is nothing to check with: 77, which ctest reports as skipped.
[ -x "$python" ] || { echo "SKIP: the interop readers are not installed in $build/interop-venv: run scripts/install_interop.sh $build (scripts/test.sh does)"; exit 77; }
model=data/llama-bytes-3m
work="$build/interop-exports"
rm -rf "$work" && mkdir -p "$work"
text="$work/eval.txt"
head -c 32768 "$model/eval.txt" > "$text"
failures=0
check() {  # check DESCRIPTION COMMAND...: runs the command, counts a failure
  if "${@:2}" > "$work/last.log" 2>&1; then echo "ok:   $1: $(tail -1 "$work/last.log")"
  else echo "FAIL: $1"; cat "$work/last.log"; failures=$((failures + 1)); fi
}
refuses() {  # refuses DESCRIPTION COMMAND...: the command must fail
  if "${@:2}" > "$work/last.log" 2>&1; then echo "FAIL: $1 was not caught"; failures=$((failures + 1))
  else echo "ok:   $1 caught: $(tail -1 "$work/last.log")"; fi
}

for run in "4 128 compressed-tensors,gptq,gguf" "3 128 compressed-tensors,gptq" "2 128 compressed-tensors,gptq" \
           "2 256 gguf" "ternary 256 compressed-tensors,gptq,gguf"; do
  read -r bits group exports <<< "$run"
  out="$work/int$bits-g$group"
  "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --calib-tokens 2048 --eval "$text" \
      --method gsq --steps 40 --bits "$bits" --group "$group" --export "$exports" --out "$out" --quiet > /dev/null
  for export in ${exports//,/ }; do
    path="$out/$export"
    [ "$export" = gguf ] && path="$out/model.gguf" && check "--bits $bits --group $group, gguf-py" "$python" tests/interop/check_gguf_model.py "$path" "$out"
    check "--bits $bits --group $group, $export, transformers" "$python" tests/interop/check_transformers.py "$path" "$text" "$out/manifest.json"
  done
done

# evaluate_model --reference: the KL divergence, same top token, Δp and perplexity ratio of a
# quantized model against the original, on both scoring rules, as transformers and torch compute them.
for rule in "" "--second-half"; do
  # shellcheck disable=SC2086  # the rule's flag, or none
  "$build/evaluate_model" --model "$work/int2-g128" --reference "$model" --eval "$text" --byte-tokens $rule \
      --json "$work/kl$rule.json" --quiet > /dev/null
  # shellcheck disable=SC2086
  check "evaluate_model --reference $rule, transformers" "$python" tests/interop/check_kl.py "$work/int2-g128" "$model" "$text" "$work/kl$rule.json" $rule
done

for run in "q2_k gsq" "q3_k gptq" "q4_k gptq"; do
  read -r format method <<< "$run"
  out="$work/$format"
  "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --calib-tokens 2048 --eval "$text" \
      --method "$method" --steps 40 --format "$format" --export gguf --out "$out" --quiet > /dev/null
  check "--format $format, gguf-py" "$python" tests/interop/check_gguf_model.py "$out/model.gguf" "$out"
  check "--format $format, gguf, transformers" "$python" tests/interop/check_transformers.py "$out/model.gguf" "$text" "$out/manifest.json"
done

# The Mixture-of-Experts fixtures as compressed-tensors, in their checkpoints' per-expert layout
# (the one vLLM's fused-MoE loader reads), routers left in full precision and listed as ignored:
# transformers, which fuses the experts as it loads them, must rebuild gsq's weights exactly and
# score the tokens as gsq does. GPTQ, not checked for MoE, is refused before any work.
python3 -c "import struct, sys
for name, seed in (('moe-calib', 11), ('moe-eval', 5)):
    ids = [(i * 37 + seed) % 96 for i in range(2048 if name == 'moe-calib' else 1024)]
    open(sys.argv[1] + '/' + name + '.u32', 'wb').write(struct.pack(f'<{len(ids)}I', *ids))" "$work"
for run in "mixtral gsq 2" "qwen2-moe gptq 4" "qwen3-moe gsq 3" "deepseek-v3 gptq 4"; do
  read -r fixture method bits <<< "$run"
  out="$work/tiny-$fixture"
  "$build/quantize_model" --model "tests/data/tiny-$fixture" --calib "$work/moe-calib.u32" --eval "$work/moe-eval.u32" \
      --method "$method" --steps 100 --bits "$bits" --group per-channel --export compressed-tensors --out "$out" --quiet > /dev/null
  check "tiny-$fixture --method $method --bits $bits, compressed-tensors, transformers" \
      "$python" tests/interop/check_transformers.py "$out/compressed-tensors" "$work/moe-eval.u32" "$out/manifest.json"
  check "tiny-$fixture, compressed-tensors, every weight" "$python" tests/interop/check_same_weights.py "$out/compressed-tensors" "$out"
done
# A size budget's mix of grid schemes (q/k/v and gate/up sharing one): config groups naming each
# module, which transformers must read module by module -- GSQ on the bundled model (int2, int3,
# int4 at 3.2 bits per weight; enough steps that GSQ's codes beat GPTQ's and are kept), GPTQ on
# Mixtral's stacked experts (int4 and int8 per channel).
out="$work/budget"
"$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --calib-tokens 2048 --eval "$text" \
    --method gsq --steps 60 --target-bpw 3.2 --sensitivity-windows 1 --export compressed-tensors --out "$out" --quiet > /dev/null
check "--target-bpw 3.2, compressed-tensors, transformers" "$python" tests/interop/check_transformers.py "$out/compressed-tensors" "$text" "$out/manifest.json"
check "--target-bpw 3.2, compressed-tensors, every weight" "$python" tests/interop/check_same_weights.py "$out/compressed-tensors" "$out"
out="$work/budget-mixtral"
"$build/quantize_model" --model tests/data/tiny-mixtral --calib "$work/moe-calib.u32" --eval "$work/moe-eval.u32" --method gptq \
    --target-bpw 9 --candidates int4-per-channel,int8-per-channel --export compressed-tensors --out "$out" --quiet > /dev/null
check "tiny-mixtral --target-bpw 9, compressed-tensors, transformers" \
    "$python" tests/interop/check_transformers.py "$out/compressed-tensors" "$work/moe-eval.u32" "$out/manifest.json"
check "tiny-mixtral --target-bpw 9, compressed-tensors, every weight" "$python" tests/interop/check_same_weights.py "$out/compressed-tensors" "$out"

"$python" tests/interop/tamper.py experts-swapped "$work/tiny-mixtral/compressed-tensors" "$work/experts-swapped"
refuses "compressed-tensors with experts 0 and 1 swapped" "$python" tests/interop/check_same_weights.py "$work/experts-swapped" "$work/tiny-mixtral"
refuses "--export gptq of a Mixture-of-Experts model" "$build/quantize_model" --model tests/data/tiny-mixtral \
    --calib "$work/moe-calib.u32" --bits 4 --group per-channel --export gptq --out "$work/refused"

"$python" tests/interop/tamper.py gptq-v2 "$work/int4-g128/gptq" "$work/gptq-v2"
refuses "GPTQ read with the v2 zero convention" "$python" tests/interop/check_transformers.py "$work/gptq-v2" "$text" "$work/int4-g128/manifest.json"
"$python" tests/interop/tamper.py gguf-unpermuted "$work/int4-g128/model.gguf" "$work/unpermuted.gguf"
refuses "GGUF with q/k in Hugging Face's order (gguf-py)" "$python" tests/interop/check_gguf_model.py "$work/unpermuted.gguf" "$work/int4-g128"
refuses "GGUF with q/k in Hugging Face's order (transformers)" "$python" tests/interop/check_transformers.py "$work/unpermuted.gguf" "$text" "$work/int4-g128/manifest.json"
refuses "--format q2_k --export compressed-tensors" "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --format q2_k --export compressed-tensors --out "$work/refused"
refuses "--export gguf at 3 bits" "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --bits 3 --export gguf --out "$work/refused"
[ ! -e "$work/refused" ] || { echo "FAIL: the refused run left $work/refused"; failures=$((failures + 1)); }

echo "exports checked: $failures failures"
[ "$failures" -eq 0 ]
