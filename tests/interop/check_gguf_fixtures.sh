#!/usr/bin/env bash
# GGUF files of every architecture gsq reads, as llama.cpp's own converter writes them: each tiny
# fixture of tests/data (llama3, mixtral, qwen2, qwen3, qwen2-moe, qwen3-moe, deepseek-v3)
# converted to F32 by convert_hf_to_gguf.py (tests/interop/convert_fixture.py; it says where a
# fixture's twin differs from the fixture), and gsq's evaluation of the GGUF (evaluate_model
# --model FILE.gguf --reference TWIN) must give the NLL of the checkpoint it was converted from to
# 1e-6 relative. About ten seconds; check_llama_cpp.sh runs it (ctest interop_llama_cpp).
# Usage: tests/interop/check_gguf_fixtures.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
[ -x "$build/interop-venv/bin/python" ] || { echo "SKIP: the interop readers are not installed in $build/interop-venv: run scripts/install_interop.sh $build (scripts/test.sh does)"; exit 77; }
scripts/build_llama_cpp.sh "$build" llama-quantize > /dev/null  # fetches llama.cpp's sources (the converter) once
converter=$(echo "$build"/llama.cpp/llama_cpp_python-*/vendor/llama.cpp)
work="$build/interop-gguf-fixtures"
rm -rf "$work" && mkdir -p "$work"
failures=0
"$build/interop-venv/bin/python" tests/interop/convert_fixture.py "$converter" "$work" tests/data/tiny-*/ > "$work/convert.log" 2>&1 ||
  { tail -20 "$work/convert.log"; echo "FAIL: llama.cpp's converter"; failures=$((failures + 1)); }
for fixture in tests/data/tiny-*/; do
  name=$(basename "$fixture")
  out="$work/$name"
  if ! "$build/evaluate_model" --model "$out/model.gguf" --reference "$out/twin" --eval "$out/tokens.u32" --window 40 --quiet \
       --json "$out/evaluation.json" > "$out/evaluation.log" 2>&1; then
    tail -5 "$out/evaluation.log"; echo "FAIL: $name: gsq does not read llama.cpp's GGUF"; failures=$((failures + 1)); continue
  fi
  read -r nll difference kl <<< "$(python3 -c "import json, sys; r = json.load(open(sys.argv[1])); c = r['comparison']; \
print(r['nll'], c['ln_ppl_ratio']['value'], c['kl']['max'])" "$out/evaluation.json")"
  if python3 -c "import sys; sys.exit(not abs($difference) <= 1e-6 * $nll)"; then
    echo "ok:   $name: NLL $nll nats from llama.cpp's GGUF, $difference more than from its checkpoint (max KL $kl)"
  else
    echo "FAIL: $name: NLL $nll nats from llama.cpp's GGUF, $difference more than from its checkpoint (max KL $kl)"
    failures=$((failures + 1))
  fi
done
[ "$failures" -eq 0 ]
